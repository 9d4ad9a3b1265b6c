/* account.c — `sbctl domain …` and `sbctl user …`: domains and accounts
 * in PostgreSQL. Passwords are SASLprepped, then turned into SCRAM-SHA-1
 * and SCRAM-SHA-256 salted keys; the password itself is never stored.
 * bulk-add derives keys in forked workers (PBKDF2 dominates) and loads
 * all rows with one COPY in one transaction. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "jid.h"
#include "account.h"
#include "auth-int.h"
#include "sbctl.h"
#include "upload.h"
#include "pgev.h"

#define SQLSTATE_UNIQUE "23505"
#define SQLSTATE_FK "23503"
#define USER_DEL_WAIT_S 3.0     /* for the sessions it ended to be unbound */

static const char *pg_state(const PGresult *r)
{
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return s ? s : "";
}

/* 1 if the domain exists, 0 if not (message printed), -1 on error. */
static int domain_exists(PGconn *c, const char *domain)
{
    const char *p[1] = {domain};
    PGresult *r = PQexecParams(c, "SELECT 1 FROM domains WHERE name=$1", 1, NULL, p, NULL, NULL, 0);
    int rc = -1;

    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        sbctl_err("database error: %s", sbctl_pg_msg(c, r));
    else if (PQntuples(r) == 0) {
        sbctl_err("domain %s does not exist (add it with: sbctl domain add %s)", domain, domain);
        rc = 0;
    } else
        rc = 1;
    PQclear(r);
    return rc;
}

/* USER@DOMAIN → prepared node and domain. */
static int account_parse(const char *arg, struct jid *j)
{
    if (jid_parse(j, arg) != SB_OK || !j->node[0] || j->resource[0]) {
        sbctl_err("'%s' is not a valid USER@DOMAIN address", arg);
        return -1;
    }
    return 0;
}

/* The password from argv, or one line of stdin; SASLprepped, malloc'd. */
static char *account_password(const char *arg)
{
    char *line = NULL, *prepped;
    size_t cap = 0;

    if (!arg) {
        ssize_t n = getline(&line, &cap, stdin);
        if (n <= 0) {
            free(line);
            sbctl_err("no password given (argument or one line on stdin)");
            return NULL;
        }
        line[strcspn(line, "\r\n")] = '\0';
        arg = line;
    }
    if (!arg[0]) {
        free(line);
        sbctl_err("the password is empty");
        return NULL;
    }
    if (auth_saslprep(arg, &prepped) != SB_OK || !prepped[0]) {
        free(line);
        free(prepped);
        sbctl_err("the password contains characters SASLprep does not allow");
        return NULL;
    }
    free(line);
    return prepped;
}

/* "<what> <name> <done>" for people, {"<what>": name, "result": done} for scripts. */
static void account_done(const char *what, const char *name, const char *done)
{
    if (sbctl_json) {
        sj_obj(NULL);
        sj_str(what, name);
        sj_str("result", done);
        sj_end_obj();
    } else {
        printf("%s %s %s\n", what, name, done);
    }
}

/* Delete the rows of one account (username given) or of a whole domain
 * (username NULL) from every account table; inside the caller's
 * transaction. The ids of its uploaded files are queued in upload_trash
 * first (auth/account.h) and kept in *trash for account_files_remove once
 * committed. 0 ok, -1 after a message. */
static int account_purge(PGconn *c, const char *domain, const char *username, PGresult **trash)
{
    const char *p[2] = {domain, username};
    char sql[160];
    PGresult *t = PQexecParams(c, username ? AUTH_ACCOUNT_TRASH_SQL : AUTH_DOMAIN_TRASH_SQL,
                               username ? 2 : 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(t) != PGRES_TUPLES_OK) {
        sbctl_err("cannot queue the uploaded files: %s", sbctl_pg_msg(c, t));
        PQclear(t);
        return -1;
    }
    if (trash && !*trash)
        *trash = t;
    else
        PQclear(t);
    for (size_t i = 0; i < auth_account_ntables; i++) {
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE domain=$1%s", auth_account_tables[i],
                 username ? " AND username=$2" : "");
        PGresult *r = PQexecParams(c, sql, username ? 2 : 1, NULL, p, NULL, NULL, 0);
        int bad = PQresultStatus(r) != PGRES_COMMAND_OK;
        if (bad)
            sbctl_err("cannot delete from %s: %s", auth_account_tables[i], sbctl_pg_msg(c, r));
        PQclear(r);
        if (bad)
            return -1;
    }
    return 0;
}

/* After the commit: unlink the queued files this host can see ([upload]
 * dir) and take their ids off the queue; the rest stay for sb-bosh. */
static void account_files_remove(PGconn *c, PGresult *trash)
{
    struct upload_cfg cfg;
    int n = trash ? PQntuples(trash) : 0;
    if (!n || upload_cfg_load(&cfg) != SB_OK || !*cfg.dir || access(cfg.dir, W_OK) != 0) {
        PQclear(trash);
        return;
    }
    struct sb_buf ids = SB_BUF_INIT;
    sb_buf_adds(&ids, "{");
    int removed = 0;
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(trash, i, 0);
        if (upload_store_remove(cfg.dir, id) == SB_OK && ++removed)
            pgev_array_add(&ids, id, strlen(id));
    }
    sb_buf_adds(&ids, "}");
    if (removed && ids.data) {
        const char *p[1] = {ids.data};
        PQclear(PQexecParams(c, UPLOAD_TRASH_DONE_SQL, 1, NULL, p, NULL, NULL, 0));
    }
    sb_buf_free(&ids);
    PQclear(trash);
}

/* ---- domain ------------------------------------------------------------------- */

static int domain_add(PGconn *c, const char *name, int anonymous)
{
    char dom[JID_PART_MAX + 1];
    if (jid_nameprep(name, dom) != SB_OK || !dom[0]) {
        sbctl_err("'%s' is not a valid domain name", name);
        return SBCTL_FAIL;
    }
    const char *p[2] = {dom, anonymous ? "true" : "false"};
    PGresult *r = PQexecParams(c, "INSERT INTO domains(name, anonymous) VALUES ($1, $2)", 2, NULL,
                               p, NULL, NULL, 0);
    int rc = SBCTL_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        if (strcmp(pg_state(r), SQLSTATE_UNIQUE) == 0)
            sbctl_err("domain %s already exists", dom);
        else
            sbctl_err("cannot add domain %s: %s", dom, sbctl_pg_msg(c, r));
        rc = SBCTL_FAIL;
    } else {
        char what[JID_PART_MAX + 8];
        snprintf(what, sizeof what, "add %s", dom);
        sbctl_domains_publish(what);
        account_done("domain", dom, "added");
    }
    PQclear(r);
    return rc;
}

static int domain_list(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT d.name, d.anonymous, count(u.username)"
                            " FROM domains d LEFT JOIN users u ON u.domain = d.name"
                            " GROUP BY d.name, d.anonymous ORDER BY d.name");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sbctl_err("database error: %s", sbctl_pg_msg(c, r));
        PQclear(r);
        return SBCTL_FAIL;
    }
    if (sbctl_json)
        sj_arr(NULL);
    else
        printf("%-32s %-9s %s\n", "DOMAIN", "ANONYMOUS", "USERS");
    for (int i = 0; i < PQntuples(r); i++) {
        int anon = PQgetvalue(r, i, 1)[0] == 't';
        if (sbctl_json) {
            sj_obj(NULL);
            sj_str("name", PQgetvalue(r, i, 0));
            sj_bool("anonymous", anon);
            sj_int("users", atoll(PQgetvalue(r, i, 2)));
            sj_end_obj();
        } else {
            printf("%-32s %-9s %s\n", PQgetvalue(r, i, 0), anon ? "yes" : "no",
                   PQgetvalue(r, i, 2));
        }
    }
    if (sbctl_json)
        sj_end_arr();
    PQclear(r);
    return SBCTL_OK;
}

/* Refused while accounts exist, unless force (they go, with their data).
 * The processes stop serving it at once (published) and end its streams
 * with host-unknown (c2s/domains.c). */
static int domain_del(PGconn *c, const char *name, int force)
{
    char dom[JID_PART_MAX + 1];
    if (jid_nameprep(name, dom) != SB_OK || !dom[0]) {
        sbctl_err("'%s' is not a valid domain name", name);
        return SBCTL_FAIL;
    }
    const char *p[1] = {dom};
    PGresult *trash = NULL;
    if (sbctl_db_exec(c, "BEGIN") != 0)
        return SBCTL_FAIL;
    PGresult *r = PQexecParams(c, "SELECT (SELECT count(*) FROM users WHERE domain=$1),"
                                  " EXISTS (SELECT 1 FROM domains WHERE name=$1 FOR UPDATE)",
                               1, NULL, p, NULL, NULL, 0);
    int rc = SBCTL_FAIL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sbctl_err("database error: %s", sbctl_pg_msg(c, r));
        goto out;
    }
    long users = atol(PQgetvalue(r, 0, 0));
    if (PQgetvalue(r, 0, 1)[0] != 't') {
        sbctl_err("no such domain %s", dom);
        goto out;
    }
    if (users > 0 && !force) {
        sbctl_err("domain %s has %ld account(s): delete them first, or use --force", dom, users);
        goto out;
    }
    PQclear(r);
    r = PQexecParams(c, "DELETE FROM domains WHERE name=$1", 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        sbctl_err("cannot delete domain %s: %s", dom, sbctl_pg_msg(c, r));
        goto out;
    }
    if (account_purge(c, dom, NULL, &trash) != 0 || sbctl_db_exec(c, "COMMIT") != 0)
        goto out;
    account_files_remove(c, trash);
    trash = NULL;
    rc = SBCTL_OK;
out:
    PQclear(r);
    PQclear(trash);
    if (rc != SBCTL_OK) {
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    char what[JID_PART_MAX + 8];
    snprintf(what, sizeof what, "del %s", dom);
    sbctl_domains_publish(what);
    if (users)
        sbctl_credentials_forget("*");      /* every account of the domain went */
    account_done("domain", dom, users ? "deleted with its accounts" : "deleted");
    return rc;
}

int sbctl_cmd_domain(int argc, char **argv)
{
    int flag = argc == 3 && ((!strcmp(argv[0], "add") && !strcmp(argv[2], "--anonymous")) ||
                             (!strcmp(argv[0], "del") && !strcmp(argv[2], "--force")));
    int rc;
    if (!flag && !(argc == 2 && (!strcmp(argv[0], "add") || !strcmp(argv[0], "del"))) &&
        !(argc == 1 && !strcmp(argv[0], "list")))
        return SBCTL_USAGE;
    if (argc >= 2 && argv[1][0] == '-')
        return SBCTL_USAGE;
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    if (!strcmp(argv[0], "add"))
        rc = domain_add(c, argv[1], flag);
    else if (!strcmp(argv[0], "del"))
        rc = domain_del(c, argv[1], flag);
    else
        rc = domain_list(c);
    PQfinish(c);
    return rc;
}

/* ---- user add / passwd / del / list ------------------------------------------------ */

static int user_add(PGconn *c, const struct jid *j, const char *password)
{
    struct auth_keys k;
    int ex = domain_exists(c, j->domain);
    if (ex <= 0)
        return SBCTL_FAIL;
    auth_keys_derive(password, auth_scram_iterations(), &k);
    const char *p[10] = {j->domain, j->node, k.v[0], k.v[1], k.v[2], k.v[3],
                         k.v[4], k.v[5], k.v[6], k.v[7]};
    PGresult *r = PQexecParams(c, AUTH_USER_INSERT_SQL, 10, NULL, p, NULL, NULL, 0);
    int rc = SBCTL_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        if (strcmp(pg_state(r), SQLSTATE_UNIQUE) == 0)
            sbctl_err("user %s@%s already exists", j->node, j->domain);
        else if (strcmp(pg_state(r), SQLSTATE_FK) == 0)
            sbctl_err("domain %s does not exist", j->domain);
        else
            sbctl_err("cannot add user %s@%s: %s", j->node, j->domain, sbctl_pg_msg(c, r));
        rc = SBCTL_FAIL;
    } else {
        char bare[JID_BARE_MAX + 1];
        jid_bare(j, bare);
        account_done("user", bare, "added");
    }
    PQclear(r);
    return rc;
}

/* [domain.NAME] passwd_ends_sessions: every session of the account ends
 * with <reset/> (RFC 6120 §4.9.3.16: the credentials the stream was
 * authenticated with no longer hold; authenticate again). The sessions
 * that ended, or -1 (no Redis). */
static int user_passwd_kick(const char *bare)
{
    redisContext *rc = sbctl_redis();
    if (!rc)
        return -1;
    int n = sbctl_kick_sessions(rc, bare, NULL, "reset", "password changed");
    redisFree(rc);
    return n;
}

static int user_passwd(PGconn *c, const struct jid *j, const char *password)
{
    struct auth_keys k;
    auth_keys_derive(password, auth_scram_iterations(), &k);
    const char *p[10] = {j->domain, j->node, k.v[0], k.v[1], k.v[2], k.v[3],
                         k.v[4], k.v[5], k.v[6], k.v[7]};
    PGresult *r = PQexecParams(c, AUTH_USER_PASSWD_SQL, 10, NULL, p, NULL, NULL, 0);
    int rc = SBCTL_FAIL;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        sbctl_err("cannot change password: %s", sbctl_pg_msg(c, r));
    else if (strcmp(PQcmdTuples(r), "0") == 0)
        sbctl_err("no such user %s@%s", j->node, j->domain);
    else {
        char bare[JID_BARE_MAX + 1];
        jid_bare(j, bare);
        rc = SBCTL_OK;
        sbctl_credentials_forget(bare);
        int kicked = 0;
        if (sb_config_bool_in("domain", j->domain, "passwd_ends_sessions", 0))
            kicked = user_passwd_kick(bare);
        if (kicked < 0)
            rc = SBCTL_FAIL;
        if (kicked > 0 && !sbctl_json)
            printf("user %s password changed (%d session%s ended)\n", bare, kicked,
                   kicked == 1 ? "" : "s");
        else
            account_done("user", bare, "password changed");
    }
    PQclear(r);
    return rc;
}

/* Wait (bounded) until the sms have removed the user's bindings. */
static int user_sessions_gone(redisContext *rc, const char *bare)
{
    double deadline = sb_now() + USER_DEL_WAIT_S;
    while (sb_now() < deadline) {
        redisReply *r = sbctl_redis_cmd(rc, "HLEN sess:{%s}", bare);
        long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        if (r)
            freeReplyObject(r);
        if (n <= 0)
            return n == 0;
        usleep(50 * 1000);
    }
    sbctl_err("warning: sessions of %s still bound after %.0f s", bare, USER_DEL_WAIT_S);
    return 1;
}

/* The account and every row it has, in one transaction; then its live
 * sessions end with not-authorized (RFC 6120 §4.9.3.12: the stream's
 * authentication no longer holds — the account is gone — which tells a
 * client not to reconnect with the same credentials, unlike
 * policy-violation or reset). */
static int user_del(PGconn *c, const struct jid *j)
{
    const char *p[2] = {j->domain, j->node};
    char bare[JID_BARE_MAX + 1];
    jid_bare(j, bare);
    if (sbctl_db_exec(c, "BEGIN") != 0)
        return SBCTL_FAIL;
    PGresult *r = PQexecParams(c, "DELETE FROM users WHERE domain=$1 AND username=$2", 2, NULL,
                               p, NULL, NULL, 0);
    int bad = PQresultStatus(r) != PGRES_COMMAND_OK;
    int none = !bad && strcmp(PQcmdTuples(r), "0") == 0;
    if (bad)
        sbctl_err("cannot delete %s: %s", bare, sbctl_pg_msg(c, r));
    else if (none)
        sbctl_err("no such user %s", bare);
    PQclear(r);
    PGresult *trash = NULL;
    if (bad || none || account_purge(c, j->domain, j->node, &trash) != 0 ||
        sbctl_db_exec(c, "COMMIT") != 0) {
        PQclear(trash);
        PQclear(PQexec(c, "ROLLBACK"));
        return SBCTL_FAIL;
    }
    account_files_remove(c, trash);
    sbctl_credentials_forget(bare);
    redisContext *rc = sbctl_redis();
    int kicked = rc ? sbctl_kick_sessions(rc, bare, NULL, "not-authorized", "account deleted") : -1;
    /* The sm writes what an ending session leaves (last activity) as it
     * ends: once the bindings are gone, delete once more. */
    if (kicked > 0 && user_sessions_gone(rc, bare) &&
        (sbctl_db_exec(c, "BEGIN") != 0 || account_purge(c, j->domain, j->node, NULL) != 0 ||
         sbctl_db_exec(c, "COMMIT") != 0))
        PQclear(PQexec(c, "ROLLBACK"));
    if (rc)
        redisFree(rc);
    if (sbctl_json) {
        sj_obj(NULL);
        sj_str("user", bare);
        sj_str("result", "deleted");
        sj_int("sessions_ended", kicked < 0 ? 0 : kicked);
        sj_end_obj();
    } else {
        printf("user %s deleted", bare);
        if (kicked > 0)
            printf(" (%d session%s ended)", kicked, kicked == 1 ? "" : "s");
        printf("\n");
    }
    return kicked < 0 ? SBCTL_FAIL : SBCTL_OK;
}

static int user_list(PGconn *c, const char *name)
{
    char dom[JID_PART_MAX + 1];
    if (jid_nameprep(name, dom) != SB_OK) {
        sbctl_err("'%s' is not a valid domain name", name);
        return SBCTL_FAIL;
    }
    if (domain_exists(c, dom) <= 0)
        return SBCTL_FAIL;
    const char *p[1] = {dom};
    PGresult *r = PQexecParams(c, "SELECT username FROM users WHERE domain=$1 ORDER BY username",
                               1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sbctl_err("database error: %s", sbctl_pg_msg(c, r));
        PQclear(r);
        return SBCTL_FAIL;
    }
    if (sbctl_json)
        sj_arr(NULL);
    for (int i = 0; i < PQntuples(r); i++) {
        char bare[JID_BARE_MAX + 1];
        snprintf(bare, sizeof bare, "%s@%s", PQgetvalue(r, i, 0), dom);
        if (sbctl_json)
            sj_str(NULL, bare);
        else
            printf("%s\n", bare);
    }
    if (sbctl_json)
        sj_end_arr();
    PQclear(r);
    return SBCTL_OK;
}

/* ---- bulk-add ------------------------------------------------------------------------ */

struct bulk {
    char domain[JID_PART_MAX + 1];
    const char *prefix, *passprefix;
    long n;
    unsigned iter;
};

/* COPY text format: escape the few bytes that are special. */
static void copy_field(FILE *f, const char *s, int last)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '\t' || *s == '\n' || *s == '\r')
            fputc('\\', f);
        fputc(*s == '\t' ? 't' : *s == '\n' ? 'n' : *s == '\r' ? 'r' : *s, f);
    }
    fputc(last ? '\n' : '\t', f);
}

/* Rows lo..hi-1 (1-based numbering) as COPY lines into f. 0 ok. */
static int bulk_derive(const struct bulk *b, long lo, long hi, FILE *f)
{
    char raw[JID_PART_MAX + 32], user[JID_PART_MAX + 1], *pw;
    struct auth_keys k;

    for (long i = lo; i < hi; i++) {
        snprintf(raw, sizeof(raw), "%s%ld", b->prefix, i);
        if (jid_nodeprep(raw, user) != SB_OK) {
            sbctl_err("'%s' is not a valid user name", raw);
            return -1;
        }
        snprintf(raw, sizeof(raw), "%s%ld", b->passprefix, i);
        if (auth_saslprep(raw, &pw) != SB_OK) {
            sbctl_err("password prefix contains characters SASLprep does not allow");
            return -1;
        }
        auth_keys_derive(pw, b->iter, &k);
        free(pw);
        copy_field(f, b->domain, 0);
        copy_field(f, user, 0);
        for (int c = 0; c < 8; c++)
            copy_field(f, k.v[c], c == 7);
    }
    return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}

/* Derive all rows with `workers` processes, each into its own temp file. */
static int bulk_derive_all(const struct bulk *b, int workers, FILE **files)
{
    pid_t pids[64];
    int failed = 0;

    for (int w = 0; w < workers; w++) {
        files[w] = tmpfile();
        if (!files[w]) {
            sbctl_err("cannot create a temporary file: %s", strerror(errno));
            return -1;
        }
    }
    if (workers == 1)
        return bulk_derive(b, 1, b->n + 1, files[0]);
    fflush(NULL);
    for (int w = 0; w < workers; w++) {
        long lo = 1 + b->n * w / workers, hi = 1 + b->n * (w + 1) / workers;
        pids[w] = fork();
        if (pids[w] < 0) {
            sbctl_err("fork failed: %s", strerror(errno));
            failed = 1;
            workers = w;
            break;
        }
        if (pids[w] == 0)
            _exit(bulk_derive(b, lo, hi, files[w]) == 0 ? 0 : 1);
    }
    for (int w = 0; w < workers; w++) {
        int st;
        while (waitpid(pids[w], &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed = 1;
    }
    return failed ? -1 : 0;
}

static int bulk_copy(PGconn *c, FILE **files, int workers)
{
    char buf[65536];
    PGresult *r = PQexec(c,
        "COPY bulk_users(domain, username, scram_sha1_salt, scram_sha1_iter,"
        " scram_sha1_stored, scram_sha1_server, scram_sha256_salt, scram_sha256_iter,"
        " scram_sha256_stored, scram_sha256_server) FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        sbctl_err("COPY failed: %s", sbctl_pg_msg(c, r));
        PQclear(r);
        return -1;
    }
    PQclear(r);
    for (int w = 0; w < workers; w++) {
        size_t n;
        rewind(files[w]);
        while ((n = fread(buf, 1, sizeof(buf), files[w])) > 0)
            if (PQputCopyData(c, buf, (int)n) != 1) {
                sbctl_err("COPY failed: %s", sbctl_pg_msg(c, NULL));
                return -1;
            }
    }
    if (PQputCopyEnd(c, NULL) != 1) {
        sbctl_err("COPY failed: %s", sbctl_pg_msg(c, NULL));
        return -1;
    }
    r = PQgetResult(c);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        sbctl_err("COPY failed: %s", sbctl_pg_msg(c, r));
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    return ok ? 0 : -1;
}

/* Load the rows in one transaction; existing accounts are left alone. */
static int bulk_store(PGconn *c, FILE **files, int workers, long *added)
{
    if (sbctl_db_exec(c, "BEGIN") != 0 ||
        sbctl_db_exec(c, "CREATE TEMP TABLE bulk_users (LIKE users INCLUDING DEFAULTS)"
                         " ON COMMIT DROP") != 0 ||
        bulk_copy(c, files, workers) != 0)
        goto fail;
    PGresult *r = PQexec(c,
        "INSERT INTO users SELECT * FROM bulk_users ON CONFLICT (domain, username) DO NOTHING");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        sbctl_err("cannot insert users: %s", sbctl_pg_msg(c, r));
        PQclear(r);
        goto fail;
    }
    *added = atol(PQcmdTuples(r));
    PQclear(r);
    if (sbctl_db_exec(c, "COMMIT") != 0)
        goto fail;
    return 0;
fail:
    PQclear(PQexec(c, "ROLLBACK"));
    return -1;
}

static int user_bulk_add(PGconn *c, char **argv)
{
    struct bulk b = {.prefix = argv[1], .passprefix = argv[3], .iter = auth_scram_iterations()};
    char *end;
    FILE *files[64] = {0};
    long added = 0;
    int rc = SBCTL_FAIL;

    errno = 0;
    b.n = strtol(argv[2], &end, 10);
    if (errno || *end || b.n < 1 || b.n > 10000000) {
        sbctl_err("N must be a number from 1 to 10000000, not '%s'", argv[2]);
        return SBCTL_FAIL;
    }
    if (jid_nameprep(argv[0], b.domain) != SB_OK) {
        sbctl_err("'%s' is not a valid domain name", argv[0]);
        return SBCTL_FAIL;
    }
    if (domain_exists(c, b.domain) <= 0)
        return SBCTL_FAIL;

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int workers = b.n < 64 ? 1 : (int)(cpus < 1 ? 1 : cpus > 64 ? 64 : cpus);
    double t0 = sb_now();
    if (bulk_derive_all(&b, workers, files) != 0)
        goto out;
    double t1 = sb_now();
    if (bulk_store(c, files, workers, &added) != 0)
        goto out;
    double t2 = sb_now();
    if (sbctl_json) {
        sj_obj(NULL);
        sj_str("domain", b.domain);
        sj_int("added", added);
        sj_int("existed", b.n - added);
        sj_num("seconds", t2 - t0);
        sj_end_obj();
    } else {
        printf("added %ld users to %s (%ld already existed) in %.1f s"
               " (keys %.1f s with %d workers, database %.1f s)\n",
               added, b.domain, b.n - added, t2 - t0, t1 - t0, workers, t2 - t1);
    }
    rc = SBCTL_OK;
out:
    for (int w = 0; w < workers; w++)
        if (files[w])
            fclose(files[w]);
    return rc;
}

int sbctl_cmd_user(int argc, char **argv)
{
    struct jid j;
    char *pw = NULL;
    int rc;

    if (argc < 2)
        return SBCTL_USAGE;
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--", 2))
            return SBCTL_USAGE;     /* no options here: an unknown one */
    const char *op = argv[0];
    int is_add = strcmp(op, "add") == 0, is_pw = strcmp(op, "passwd") == 0;
    if (((is_add || is_pw) && argc > 3) ||
        ((strcmp(op, "del") == 0 || strcmp(op, "list") == 0) && argc != 2) ||
        (strcmp(op, "bulk-add") == 0 && argc != 5) ||
        (!is_add && !is_pw && strcmp(op, "del") && strcmp(op, "list") && strcmp(op, "bulk-add")))
        return SBCTL_USAGE;
    if ((is_add || is_pw || strcmp(op, "del") == 0) && account_parse(argv[1], &j) != 0)
        return SBCTL_FAIL;
    if ((is_add || is_pw) && !(pw = account_password(argc == 3 ? argv[2] : NULL)))
        return SBCTL_FAIL;

    PGconn *c = sbctl_db_connect();
    if (!c)
        rc = SBCTL_FAIL;
    else if (is_add)
        rc = user_add(c, &j, pw);
    else if (is_pw)
        rc = user_passwd(c, &j, pw);
    else if (strcmp(op, "del") == 0)
        rc = user_del(c, &j);
    else if (strcmp(op, "list") == 0)
        rc = user_list(c, argv[1]);
    else
        rc = user_bulk_add(c, argv + 1);
    if (c)
        PQfinish(c);
    if (pw) {
        memset(pw, 0, strlen(pw));
        free(pw);
    }
    return rc;
}
