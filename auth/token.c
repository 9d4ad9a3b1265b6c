/* token.c — checking a bearer token presented over SASL (X-OAUTH2,
 * OAUTHBEARER) against the domain's token sources ([domain.NAME] tokens =
 * own and/or jwt): our own tokens are looked up by their SHA-256 in the
 * `tokens` table through pgev (never blocking the loop); a JWT is checked
 * here (jwt.c) and then the account is looked up, or created when the
 * domain says auto_create. Nothing here keeps or logs the token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <nettle/sha2.h>

#include "config.h"
#include "jid.h"
#include "log.h"
#include "pgev.h"
#include "auth-int.h"

int auth_token_sources(const char *domain)
{
    const char *v = domain ? sb_config_str_in("domain", domain, "tokens", "") : "";
    int src = 0;

    while (*v) {
        size_t n = strcspn(v, " ,\t");
        if (n == 3 && !strncasecmp(v, "own", 3))
            src |= AUTH_TOK_OWN;
        else if (n == 3 && !strncasecmp(v, "jwt", 3))
            src |= AUTH_TOK_JWT;
        v += n;
        v += strspn(v, " ,\t");
    }
    return src;
}

int auth_token_auto_create(const char *domain)
{
    return sb_config_bool_in("domain", domain, "auto_create", 0);
}

void auth_token_hash(const char *token, char hex[AUTH_TOKEN_HASH_HEX + 1])
{
    struct sha256_ctx h;
    uint8_t d[SHA256_DIGEST_SIZE];
    static const char digits[] = "0123456789abcdef";

    sha256_init(&h);
    sha256_update(&h, strlen(token), (const uint8_t *)token);
    sha256_digest(&h, sizeof d, d);
    for (size_t i = 0; i < sizeof d; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[AUTH_TOKEN_HASH_HEX] = '\0';
}

/* A JWT is three base64url parts joined by two dots; our own tokens have none. */
static int token_is_jwt(const char *t)
{
    const char *d1 = strchr(t, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    return d2 && !strchr(d2 + 1, '.');
}

/* 1 when the space-separated scope list holds `want`. */
static int token_scope_has(const char *scope, const char *want)
{
    size_t wl = strlen(want);
    while (*scope) {
        size_t n = strcspn(scope, " ");
        if (n == wl && !strncmp(scope, want, n))
            return 1;
        scope += n;
        scope += strspn(scope, " ");
    }
    return 0;
}

struct token_req {
    auth_token_cb cb;
    void *arg;
    char username[JID_PART_MAX + 1];
};

static void token_answer(auth_token_cb cb, void *arg, int ok, const char *reason,
                         const char *user, long long id)
{
    struct auth_token_ans a = {ok, reason, user, id};
    cb(arg, &a);
}

/* ---- our own tokens ------------------------------------------------------- */

/* One statement looks the token up and notes its use (an expired one keeps
 * its last use). */
#define TOKEN_OWN_SQL \
    "UPDATE tokens SET last_used = CASE WHEN expires_at IS NULL OR expires_at > now()" \
    " THEN now() ELSE last_used END WHERE domain=$1 AND hash=$2" \
    " RETURNING id, username, scope, (expires_at IS NOT NULL AND expires_at <= now())"

static void token_own_done(PGresult *res, void *arg)
{
    struct token_req *rq = arg;

    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res)
            log_warn("auth_token_error", "error=%s", sb_log_q(PQresultErrorMessage(res)));
        token_answer(rq->cb, rq->arg, -1, "store-unavailable", NULL, 0);
    } else if (PQntuples(res) != 1 || PQnfields(res) != 4) {
        token_answer(rq->cb, rq->arg, 0, "unknown-or-revoked", NULL, 0);
    } else if (!strcmp(PQgetvalue(res, 0, 3), "t")) {
        token_answer(rq->cb, rq->arg, 0, "expired", NULL, 0);
    } else if (!token_scope_has(PQgetvalue(res, 0, 2), "xmpp")) {
        token_answer(rq->cb, rq->arg, 0, "scope", NULL, 0);
    } else {
        snprintf(rq->username, sizeof rq->username, "%s", PQgetvalue(res, 0, 1));
        token_answer(rq->cb, rq->arg, 1, NULL, rq->username,
                     strtoll(PQgetvalue(res, 0, 0), NULL, 10));
    }
    free(rq);
}

static sb_rc token_own(struct pgev *pg, const char *domain, const char *token,
                       auth_token_cb cb, void *arg)
{
    char hex[AUTH_TOKEN_HASH_HEX + 1];
    struct token_req *rq = calloc(1, sizeof(*rq));

    if (!rq)
        return SB_ERROR;
    rq->cb = cb;
    rq->arg = arg;
    auth_token_hash(token, hex);
    const char *params[2] = {domain, hex};
    if (pgev_query(pg, TOKEN_OWN_SQL, 2, params, token_own_done, rq) != SB_OK) {
        free(rq);
        return SB_ERROR;
    }
    return SB_OK;
}

/* ---- JWT: the account behind a valid token ----------------------------------- */

#define TOKEN_ACCOUNT_SQL "SELECT 1 FROM users WHERE domain=$1 AND username=$2"

static void token_account_done(PGresult *res, void *arg)
{
    struct token_req *rq = arg;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        if (res)
            log_warn("auth_token_error", "error=%s", sb_log_q(PQresultErrorMessage(res)));
        token_answer(rq->cb, rq->arg, -1, "store-unavailable", NULL, 0);
    } else if (st == PGRES_TUPLES_OK && PQntuples(res) != 1) {
        token_answer(rq->cb, rq->arg, 0, "no-account", NULL, 0);
    } else {
        if (st == PGRES_COMMAND_OK && strcmp(PQcmdTuples(res), "1") == 0)
            log_info("account_auto_created", "user=%s", sb_log_q(rq->username));
        token_answer(rq->cb, rq->arg, 1, NULL, rq->username, AUTH_TOKEN_ID_JWT);
    }
    free(rq);
}

static sb_rc token_jwt(struct pgev *pg, const char *domain, const char *token,
                       auth_token_cb cb, void *arg)
{
    char user[JID_PART_MAX + 1];
    const char *reason = auth_jwt_check(domain, token, user);

    if (reason) {
        token_answer(cb, arg, 0, reason, NULL, 0);
        return SB_OK;
    }
    struct token_req *rq = calloc(1, sizeof(*rq));
    if (!rq)
        return SB_ERROR;
    rq->cb = cb;
    rq->arg = arg;
    memcpy(rq->username, user, sizeof user);
    const char *params[2] = {domain, rq->username};
    const char *sql = auth_token_auto_create(domain) ? AUTH_ACCOUNT_CREATE_SQL : TOKEN_ACCOUNT_SQL;
    if (pgev_query(pg, sql, 2, params, token_account_done, rq) != SB_OK) {
        free(rq);
        return SB_ERROR;
    }
    return SB_OK;
}

sb_rc auth_token_check(struct pgev *pg, const char *domain, const char *token,
                       auth_token_cb cb, void *arg)
{
    int src = auth_token_sources(domain);

    if (!token[0] || strlen(token) > AUTH_TOKEN_MAX) {
        token_answer(cb, arg, 0, "malformed", NULL, 0);
        return SB_OK;
    }
    if ((src & AUTH_TOK_JWT) && token_is_jwt(token))
        return pg ? token_jwt(pg, domain, token, cb, arg) : SB_ERROR;
    if (!(src & AUTH_TOK_OWN)) {
        token_answer(cb, arg, 0, src ? "malformed" : "no-token-source", NULL, 0);
        return SB_OK;
    }
    return pg ? token_own(pg, domain, token, cb, arg) : SB_ERROR;
}
