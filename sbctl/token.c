/* token.c — `sbctl token issue|list|revoke`: our own login tokens for
 * SASL X-OAUTH2 / OAUTHBEARER (a domain with `tokens = own`). A token is
 * "sbt_" and 32 random bytes in base64url, printed once; the `tokens`
 * table keeps only its SHA-256 (auth_token_hash, the one the server
 * computes). Revoking deletes the rows and ends the sessions that logged
 * in with them (ADMIN op=kick-token, common/ENVELOPE.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth-int.h"
#include "jid.h"
#include "sbctl.h"

#define TOKEN_PREFIX "sbt_"
#define TOKEN_RANDOM 32

/* USER@DOMAIN → j (prepared). 0 ok, -1 after a message. */
static int token_user(const char *arg, struct jid *j)
{
    if (!arg || jid_parse(j, arg) != SB_OK || !j->node[0] || j->resource[0]) {
        sbctl_err("'%s' is not a valid USER@DOMAIN address", arg ? arg : "");
        return -1;
    }
    return 0;
}

/* prefix + base64url(32 random bytes), no padding. */
static void token_make_with(const char *prefix, char *out, size_t cap)
{
    uint8_t raw[TOKEN_RANDOM];
    char b64[((TOKEN_RANDOM + 2) / 3) * 4 + 1];
    sb_random(raw, sizeof raw);
    auth_b64_encode(raw, sizeof raw, b64);
    for (char *p = b64; *p; p++) {
        if (*p == '+')
            *p = '-';
        else if (*p == '/')
            *p = '_';
        else if (*p == '=')
            *p = '\0';
    }
    snprintf(out, cap, "%s%s", prefix, b64);
    memset(raw, 0, sizeof raw);
}

static void token_make(char *out, size_t cap)
{
    token_make_with(TOKEN_PREFIX, out, cap);
}

static int token_issue(int argc, char **argv)
{
    const char *user = NULL, *scope = "xmpp";
    long ttl = 3600;
    struct jid j;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ttl") && i + 1 < argc) {
            char *end;
            ttl = strtol(argv[++i], &end, 10);
            if (*end || ttl < 0)
                return SBCTL_USAGE;
        } else if (!strcmp(argv[i], "--scope") && i + 1 < argc) {
            scope = argv[++i];
        } else if (argv[i][0] != '-' && !user) {
            user = argv[i];
        } else {
            return SBCTL_USAGE;
        }
    }
    if (!user)
        return SBCTL_USAGE;
    if (token_user(user, &j) < 0)
        return SBCTL_FAIL;
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    char token[sizeof(TOKEN_PREFIX) + ((TOKEN_RANDOM + 2) / 3) * 4 + 1];
    char hash[AUTH_TOKEN_HASH_HEX + 1], ttls[24];
    token_make(token, sizeof token);
    auth_token_hash(token, hash);
    snprintf(ttls, sizeof ttls, "%ld", ttl);
    const char *p[5] = {j.domain, j.node, hash, scope, ttls};
    PGresult *r = PQexecParams(
        c,
        "INSERT INTO tokens (domain, username, hash, scope, expires_at)"
        " SELECT $1, $2, $3, $4, CASE WHEN $5::bigint = 0 THEN NULL"
        " ELSE now() + make_interval(secs => $5::bigint) END"
        " WHERE EXISTS (SELECT 1 FROM users WHERE domain=$1 AND username=$2)"
        " RETURNING id, coalesce(to_char(expires_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF'), '')",
        5, NULL, p, NULL, NULL, 0);
    int rc = SBCTL_FAIL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        sbctl_err("cannot issue a token: %s", sbctl_pg_msg(c, r));
    else if (PQntuples(r) != 1)
        sbctl_err("no such user %s@%s", j.node, j.domain);
    else {
        if (sbctl_json) {
            sj_obj(NULL);
            sj_int("id", atoll(PQgetvalue(r, 0, 0)));
            sj_str("token", token);
            sj_str("expires", *PQgetvalue(r, 0, 1) ? PQgetvalue(r, 0, 1) : NULL);
            sj_str("scope", scope);
            sj_end_obj();
        } else {
            printf("%s\n", token);
            fprintf(stderr, "token %s for %s@%s, expires %s\n", PQgetvalue(r, 0, 0), j.node,
                    j.domain, *PQgetvalue(r, 0, 1) ? PQgetvalue(r, 0, 1) : "never");
        }
        rc = SBCTL_OK;
    }
    memset(token, 0, sizeof token);
    PQclear(r);
    PQfinish(c);
    return rc;
}

static int token_list(int argc, char **argv)
{
    struct jid j;
    if (argc != 1)
        return SBCTL_USAGE;
    if (token_user(argv[0], &j) < 0)
        return SBCTL_FAIL;
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    const char *p[2] = {j.domain, j.node};
#define TS(col) "coalesce(to_char(" col ", 'YYYY-MM-DD\"T\"HH24:MI:SSOF'), '')"
    PGresult *r = PQexecParams(c,
                               "SELECT id, " TS("created_at") ", " TS("expires_at") ", "
                               TS("last_used") ", scope, expires_at <= now()"
                               " FROM tokens WHERE domain=$1 AND username=$2 ORDER BY id",
                               2, NULL, p, NULL, NULL, 0);
#undef TS
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sbctl_err("cannot list tokens: %s", sbctl_pg_msg(c, r));
        PQclear(r);
        PQfinish(c);
        return SBCTL_FAIL;
    }
    if (sbctl_json)
        sj_arr(NULL);
    else
        printf("%-8s %-25s %-25s %-25s %s\n", "ID", "CREATED", "EXPIRES", "LAST USED", "SCOPE");
    for (int i = 0; i < PQntuples(r); i++) {
        const char *exp = PQgetvalue(r, i, 2), *used = PQgetvalue(r, i, 3);
        int expired = !strcmp(PQgetvalue(r, i, 5), "t");
        if (sbctl_json) {
            sj_obj(NULL);
            sj_int("id", atoll(PQgetvalue(r, i, 0)));
            sj_str("created", PQgetvalue(r, i, 1));
            sj_str("expires", *exp ? exp : NULL);
            sj_str("last_used", *used ? used : NULL);
            sj_str("scope", PQgetvalue(r, i, 4));
            sj_bool("expired", expired);
            sj_end_obj();
        } else {
            printf("%-8s %-25s %-25s %-25s %s%s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                   *exp ? exp : "never", *used ? used : "-", PQgetvalue(r, i, 4),
                   expired ? " (expired)" : "");
        }
    }
    if (sbctl_json)
        sj_end_arr();
    else if (PQntuples(r) == 0)
        printf("(no tokens)\n");
    PQclear(r);
    PQfinish(c);
    return SBCTL_OK;
}

/* revoke ID USER@DOMAIN | revoke --all USER@DOMAIN */
static int token_revoke(int argc, char **argv)
{
    struct jid j;
    if (argc != 2)
        return SBCTL_USAGE;
    int all = !strcmp(argv[0], "--all");
    char *end;
    long long id = all ? 0 : strtoll(argv[0], &end, 10);
    if (!all && (*end || id <= 0))
        return SBCTL_USAGE;
    if (token_user(argv[1], &j) < 0)
        return SBCTL_FAIL;
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    const char *p[3] = {j.domain, j.node, argv[0]};
    PGresult *r = PQexecParams(c,
                               all ? "DELETE FROM tokens WHERE domain=$1 AND username=$2"
                                   : "DELETE FROM tokens WHERE domain=$1 AND username=$2"
                                     " AND id=$3::bigint",
                               all ? 2 : 3, NULL, p, NULL, NULL, 0);
    int bad = PQresultStatus(r) != PGRES_COMMAND_OK;
    long removed = bad ? 0 : atol(PQcmdTuples(r));
    if (bad)
        sbctl_err("cannot revoke: %s", sbctl_pg_msg(c, r));
    else if (!all && removed == 0)
        sbctl_err("no token %s of %s@%s", argv[0], j.node, j.domain);
    PQclear(r);
    PQfinish(c);
    if (bad || (!all && removed == 0))
        return SBCTL_FAIL;
    char bare[JID_BARE_MAX + 1];
    jid_bare(&j, bare);
    redisContext *rc = sbctl_redis();
    int kicked = rc ? sbctl_kick_token_sessions(rc, bare, all ? "*" : argv[0], "not-authorized",
                                                "token revoked")
                    : -1;
    if (rc)
        redisFree(rc);
    if (sbctl_json) {
        sj_obj(NULL);
        sj_str("user", bare);
        sj_int("revoked", removed);
        sj_int("sessions_ended", kicked < 0 ? 0 : kicked);
        sj_end_obj();
    } else {
        printf("%ld token%s of %s revoked", removed, removed == 1 ? "" : "s", bare);
        if (kicked > 0)
            printf(" (%d session%s ended)", kicked, kicked == 1 ? "" : "s");
        printf("\n");
    }
    return kicked < 0 ? SBCTL_FAIL : SBCTL_OK;
}

int sbctl_cmd_token(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "issue"))
        return token_issue(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "list"))
        return token_list(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "revoke"))
        return token_revoke(argc - 1, argv + 1);
    return SBCTL_USAGE;
}

/* ---- sbctl invite create DOMAIN [--ttl S] -------------------------------------- */

#define INVITE_PREFIX "sbi_"

/* An invitation for XEP-0077 registration on a `register_invite_only`
 * domain: printed once, stored as its SHA-256 (auth_token_hash, as the
 * server computes it), used up by the registration that presents it. */
static int invite_create(int argc, char **argv)
{
    const char *domain = NULL;
    long ttl = 7 * 86400;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ttl") && i + 1 < argc) {
            char *end;
            ttl = strtol(argv[++i], &end, 10);
            if (*end || ttl < 0)
                return SBCTL_USAGE;
        } else if (argv[i][0] != '-' && !domain) {
            domain = argv[i];
        } else {
            return SBCTL_USAGE;
        }
    }
    char dom[JID_PART_MAX + 1];
    if (!domain)
        return SBCTL_USAGE;
    if (jid_nameprep(domain, dom) != SB_OK) {
        sbctl_err("'%s' is not a valid domain", domain);
        return SBCTL_FAIL;
    }
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    char token[sizeof(INVITE_PREFIX) + ((TOKEN_RANDOM + 2) / 3) * 4 + 1];
    char hash[AUTH_TOKEN_HASH_HEX + 1], ttls[24];
    token_make_with(INVITE_PREFIX, token, sizeof token);
    auth_token_hash(token, hash);
    snprintf(ttls, sizeof ttls, "%ld", ttl);
    const char *p[3] = {dom, hash, ttls};
    PGresult *r = PQexecParams(
        c,
        "INSERT INTO invites (domain, hash, expires_at)"
        " SELECT $1, $2, CASE WHEN $3::bigint = 0 THEN NULL"
        " ELSE now() + make_interval(secs => $3::bigint) END"
        " WHERE EXISTS (SELECT 1 FROM domains WHERE name=$1)"
        " RETURNING id, coalesce(to_char(expires_at, 'YYYY-MM-DD\"T\"HH24:MI:SSOF'), '')",
        3, NULL, p, NULL, NULL, 0);
    int rc = SBCTL_FAIL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        sbctl_err("cannot create an invitation: %s", sbctl_pg_msg(c, r));
    else if (PQntuples(r) != 1)
        sbctl_err("no such domain %s", dom);
    else {
        const char *exp = PQgetvalue(r, 0, 1);
        if (sbctl_json) {
            sj_obj(NULL);
            sj_int("id", atoll(PQgetvalue(r, 0, 0)));
            sj_str("token", token);
            sj_str("expires", *exp ? exp : NULL);
            sj_end_obj();
        } else {
            printf("%s\n", token);
            fprintf(stderr, "invitation %s for %s, expires %s\n", PQgetvalue(r, 0, 0), dom,
                    *exp ? exp : "never");
        }
        rc = SBCTL_OK;
    }
    memset(token, 0, sizeof token);
    PQclear(r);
    PQfinish(c);
    return rc;
}

int sbctl_cmd_invite(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "create"))
        return invite_create(argc - 1, argv + 1);
    return SBCTL_USAGE;
}
