/* store.c — where credentials come from: PostgreSQL through pgev (never
 * blocking the loop) or a caller-supplied lookup function. Also the fake
 * credentials that make an unknown account look like a wrong password. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stddef.h>
#include <stdio.h>
#include <nettle/hmac.h>

#include "config.h"
#include "jid.h"
#include "log.h"
#include "pgev.h"
#include "auth-int.h"

struct auth_store {
    struct pgev *pg;             /* PostgreSQL back-end, or NULL */
    auth_store_lookup_fn fn;     /* function back-end, or NULL */
    void *ud;
    int seen_up;                 /* pg has been connected at least once */
    auth_claim_fn claim;         /* ANONYMOUS node claims, or NULL */
    void *claim_ud;
    auth_token_fn token_fn;      /* tests: token checks, or NULL */
    void *token_ud;
    struct ev_loop *loop;        /* external back-ends, or NULL */
};

void auth_store_set_loop(struct auth_store *st, struct ev_loop *loop)
{
    st->loop = loop;
}

enum auth_backend auth_backend_of(const char *domain)
{
    const char *v = domain ? sb_config_str_in("domain", domain, "auth", "internal") : "";
    if (!strcasecmp(v, "extauth"))
        return AUTH_BE_EXTAUTH;
    if (!strcasecmp(v, "ldap"))
        return AUTH_BE_LDAP;
    return AUTH_BE_INTERNAL;
}

const char *auth_backend_name(enum auth_backend b)
{
    switch (b) {
    case AUTH_BE_EXTAUTH: return "extauth";
    case AUTH_BE_LDAP: return "ldap";
    default: return "internal";
    }
}

void auth_store_set_token_fn(struct auth_store *st, auth_token_fn fn, void *ud)
{
    st->token_fn = fn;
    st->token_ud = ud;
}

void auth_store_set_claim(struct auth_store *st, auth_claim_fn fn, void *ud)
{
    st->claim = fn;
    st->claim_ud = ud;
}

sb_rc auth_store_claim(struct auth_store *st, const char *domain, const char *node,
                       auth_claim_cb cb, void *arg)
{
    if (!st->claim) {
        cb(arg, 1);
        return SB_OK;
    }
    return st->claim(st->claim_ud, domain, node, cb, arg);
}

struct auth_store *auth_store_new(struct pgev *pg)
{
    struct auth_store *st = calloc(1, sizeof(*st));
    if (st)
        st->pg = pg;
    return st;
}

struct auth_store *auth_store_new_fn(auth_store_lookup_fn fn, void *ud)
{
    struct auth_store *st = calloc(1, sizeof(*st));
    if (st) {
        st->fn = fn;
        st->ud = ud;
    }
    return st;
}

/* Pending pg callbacks only hold their own context, so the store may go
 * first; pgev_free answers them with NULL. */
void auth_store_free(struct auth_store *st)
{
    free(st);
}

/* ---- PostgreSQL back-end ---------------------------------------------------- */

#define STORE_SQL \
    "SELECT scram_sha1_salt, scram_sha1_iter, scram_sha1_stored, scram_sha1_server," \
    " scram_sha256_salt, scram_sha256_iter, scram_sha256_stored, scram_sha256_server" \
    " FROM users WHERE domain=$1 AND username=$2"

/* One lookup in PostgreSQL. While it is unanswered past the cache wait
 * (a frozen database) a cached entry answers; the database's late answer
 * then only refreshes the cache (cb NULL). */
struct store_req {
    auth_store_cb cb;
    void *arg;
    struct ev_loop *loop;        /* NULL: no cache wait timer */
    ev_timer wait;
    unsigned long epoch;
    char domain[JID_PART_MAX + 1], username[JID_PART_MAX + 1];
};

static void store_req_free(struct store_req *rq)
{
    if (rq->loop)
        ev_timer_stop(rq->loop, &rq->wait);
    free(rq);
}

/* PostgreSQL could not answer (now, or not yet): the cache, if it has the
 * account. 1 when rq was answered. */
static int store_from_cache(struct store_req *rq, const char *why)
{
    struct auth_cred cred;

    if (!rq->cb || !auth_cache_get(rq->domain, rq->username, &cred))
        return 0;
    log_info("auth_cache_used", "user=%s domain=%s why=%s", sb_log_q(rq->username),
             sb_log_q(rq->domain), why);
    auth_store_cb cb = rq->cb;
    rq->cb = NULL;
    cb(rq->arg, &cred);
    memset(&cred, 0, sizeof cred);
    return 1;
}

/* Not in this cache either: the other front-ends may have it (the answer
 * comes later). 1 when rq's callback was handed on. */
static int store_from_peers(struct store_req *rq)
{
    if (!rq->cb || auth_cache_ask(rq->domain, rq->username, rq->epoch, rq->cb, rq->arg) != SB_OK)
        return 0;
    rq->cb = NULL;
    return 1;
}

static void store_on_wait(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct store_req *rq = (struct store_req *)((char *)w - offsetof(struct store_req, wait));
    ev_timer_stop(loop, w);
    if (!store_from_cache(rq, "slow"))
        store_from_peers(rq);
}

static double store_cache_wait(void)
{
    const char *v = sb_config_str_in("auth", NULL, "credential_cache_wait_ms", NULL);
    long ms = v && *v ? strtol(v, NULL, 10) : AUTH_CACHE_WAIT_DEFAULT;
    return ms > 0 ? ms / 1e3 : 0;
}

/* Columns col..col+3 (salt, iter, stored, server) into c; 0 when absent/bad. */
static int store_parse_keys(PGresult *res, int col, enum scram_hash h, struct scram_cred *c)
{
    size_t dl = scram_digest_len(h), n;

    memset(c, 0, sizeof(*c));
    c->hash = h;
    for (int i = 0; i < 4; i++)
        if (PQgetisnull(res, 0, col + i))
            return 0;
    const char *salt = PQgetvalue(res, 0, col), *stored = PQgetvalue(res, 0, col + 2),
               *server = PQgetvalue(res, 0, col + 3);
    long iter = strtol(PQgetvalue(res, 0, col + 1), NULL, 10);
    if (iter < 1 || iter > 10000000)
        return 0;
    c->iter = (unsigned)iter;
    if (auth_b64_decode(salt, strlen(salt), c->salt, sizeof(c->salt), &c->saltlen) != SB_OK ||
        c->saltlen == 0)
        return 0;
    if (auth_b64_decode(stored, strlen(stored), c->stored_key, SCRAM_MAX_DIGEST, &n) != SB_OK ||
        n != dl)
        return 0;
    if (auth_b64_decode(server, strlen(server), c->server_key, SCRAM_MAX_DIGEST, &n) != SB_OK ||
        n != dl)
        return 0;
    return 1;
}

static void store_pg_done(PGresult *res, void *arg)
{
    struct store_req *rq = arg;
    struct auth_cred cred;

    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res)
            log_warn("auth_store_error", "error=%s", sb_log_q(PQresultErrorMessage(res)));
        if (rq->cb && !store_from_cache(rq, res ? "error" : "no-answer") &&
            !store_from_peers(rq))
            rq->cb(rq->arg, NULL);
        store_req_free(rq);
        return;
    }
    memset(&cred, 0, sizeof(cred));
    cred.epoch = rq->epoch;
    if (PQntuples(res) > 0 && PQnfields(res) == 8) {
        cred.found = 1;
        cred.has_sha1 = store_parse_keys(res, 0, SCRAM_SHA1, &cred.sha1);
        cred.has_sha256 = store_parse_keys(res, 4, SCRAM_SHA256, &cred.sha256);
        if (!cred.has_sha1 && !cred.has_sha256)
            log_warn("auth_store_bad_row", "detail=%s", sb_log_q("no usable SCRAM keys"));
    }
    auth_cache_refresh(rq->domain, rq->username, &cred);
    if (rq->cb)
        rq->cb(rq->arg, &cred);
    memset(&cred, 0, sizeof cred);
    store_req_free(rq);
}

/* The database to ask, or NULL: none, or known to be down. A login should
 * not wait out pgev's queue deadline while the database is down: it fails
 * now (temporary-auth-failure). Before the first connection (start-up)
 * queries are queued as usual. */
static struct pgev *store_pg(struct auth_store *st)
{
    if (!st->pg)
        return NULL;
    if (pgev_connected(st->pg))
        st->seen_up = 1;
    else if (st->seen_up) {
        pgev_kick(st->pg);      /* the next login finds it, if it is back */
        return NULL;
    }
    return st->pg;
}

struct pgev *auth_store_pg(struct auth_store *st)
{
    return st ? store_pg(st) : NULL;
}

sb_rc auth_store_token(struct auth_store *st, const char *domain, const char *token,
                       auth_token_cb cb, void *arg)
{
    if (!st)
        return SB_ERROR;
    if (st->token_fn)
        return st->token_fn(st->token_ud, domain, token, cb, arg);
    return auth_token_check(store_pg(st), domain, token, cb, arg);
}

sb_rc auth_store_lookup(struct auth_store *st, const char *domain, const char *username,
                        auth_store_cb cb, void *arg)
{
    if (!st)
        return SB_ERROR;         /* no store configured: temporary-auth-failure */
    if (st->fn)
        return st->fn(st->ud, domain, username, cb, arg);
    struct store_req *rq = calloc(1, sizeof(*rq));
    if (!rq)
        return SB_ERROR;
    rq->cb = cb;
    rq->arg = arg;
    rq->epoch = auth_cache_epoch();
    snprintf(rq->domain, sizeof rq->domain, "%s", domain);
    snprintf(rq->username, sizeof rq->username, "%s", username);
    const char *params[2] = {domain, username};
    if (!store_pg(st) || pgev_query(st->pg, STORE_SQL, 2, params, store_pg_done, rq) != SB_OK) {
        /* Down (or the queue is full): the cache answers now, inside, the
         * other front-ends later, or the caller fails with
         * temporary-auth-failure. */
        int hit = store_from_cache(rq, st->pg && !pgev_connected(st->pg) ? "down" : "queue") ||
                  store_from_peers(rq);
        free(rq);
        return hit ? SB_OK : SB_ERROR;
    }
    double wait = st->loop ? store_cache_wait() : 0;
    if (wait > 0) {
        rq->loop = st->loop;
        ev_timer_init(&rq->wait, store_on_wait, wait, 0.);
        ev_timer_start(rq->loop, &rq->wait);
    }
    return SB_OK;
}

/* ---- external back-ends: the password is checked elsewhere ----------------------- */

struct store_ext_req {
    struct auth_store *st;        /* stores live as long as the process */
    auth_check_cb cb;
    void *arg;
    char domain[JID_PART_MAX + 1], username[JID_PART_MAX + 1];
};

static void store_ext_created(PGresult *res, void *arg)
{
    struct store_ext_req *rq = arg;
    int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;

    if (!ok && res)
        log_warn("auth_store_error", "error=%s", sb_log_q(PQresultErrorMessage(res)));
    else if (ok && strcmp(PQcmdTuples(res), "1") == 0)
        log_info("account_auto_created", "user=%s domain=%s backend=%s",
                 sb_log_q(rq->username), sb_log_q(rq->domain),
                 auth_backend_name(auth_backend_of(rq->domain)));
    rq->cb(rq->arg, ok ? 1 : -1);
    free(rq);
}

/* The directory said yes: make sure the account row exists. */
static void store_ext_done(void *arg, int result)
{
    struct store_ext_req *rq = arg;
    struct pgev *pg = result == 1 ? store_pg(rq->st) : NULL;
    const char *params[2] = {rq->domain, rq->username};

    if (result == 1 && pg &&
        pgev_query(pg, AUTH_ACCOUNT_CREATE_SQL, 2, params, store_ext_created, rq) == SB_OK)
        return;
    rq->cb(rq->arg, result == 1 ? -1 : result);
    free(rq);
}

sb_rc auth_store_password(struct auth_store *st, const char *domain, const char *user,
                          const char *password, auth_check_cb cb, void *arg)
{
    enum auth_backend be = auth_backend_of(domain);
    struct store_ext_req *rq;

    if (!st || be == AUTH_BE_INTERNAL || !(rq = calloc(1, sizeof(*rq))))
        return SB_ERROR;
    rq->st = st;
    rq->cb = cb;
    rq->arg = arg;
    snprintf(rq->domain, sizeof rq->domain, "%s", domain);
    snprintf(rq->username, sizeof rq->username, "%s", user);
    sb_rc rc = be == AUTH_BE_EXTAUTH
        ? auth_extauth_call(st->loop, domain, "auth", user, password, store_ext_done, rq)
        : auth_ldap_check(st->loop, domain, user, password, store_ext_done, rq);
    if (rc != SB_OK)
        free(rq);
    return rc;
}

/* ---- fake credentials ----------------------------------------------------------- */

static uint8_t store_secret[32];
static int store_secret_ready;
static int store_secret_configured;    /* from the config, not made up here */
static unsigned store_fake_iter = AUTH_DEFAULT_ITER;

unsigned auth_scram_iterations(void)
{
    long it = sb_config_int("scram_iterations", AUTH_DEFAULT_ITER);
    return it < 1 || it > 1000000 ? AUTH_DEFAULT_ITER : (unsigned)it;
}

sb_rc auth_fake_configure(void)
{
    char secret[256];
    sb_rc rc = sb_config_secret("sasl_secret", secret, sizeof secret);
    if (rc == SB_ERROR)
        return SB_ERROR;
    store_fake_iter = auth_scram_iterations();
    if (rc == SB_DONE || !*secret) {
        log_warn("sasl_secret_missing", "note=\"fake SCRAM salts differ per process: set "
                 "[cluster] sasl_secret\"");
        return SB_OK;
    }
    /* The key is a digest of the secret: any length configures 32 bytes. */
    sb_secret_digest(secret, strlen(secret), store_secret);
    store_secret_ready = 1;
    store_secret_configured = 1;
    memset(secret, 0, sizeof secret);
    return SB_OK;
}

/* FAST tokens must verify on every front-end and after restarts: only
 * with the cluster's own secret. A key apart from the fake-salt one. */
int auth_fast_key(uint8_t out[32])
{
    static const char label[] = "sb-fast-key";
    struct hmac_sha256_ctx mac;

    if (!store_secret_configured)
        return 0;
    hmac_sha256_set_key(&mac, sizeof(store_secret), store_secret);
    hmac_sha256_update(&mac, sizeof label, (const uint8_t *)label);
    hmac_sha256_digest(&mac, 32, out);
    return 1;
}

void auth_fake_cred(enum scram_hash h, const char *domain, const char *username,
                    struct scram_cred *out)
{
    struct hmac_sha256_ctx mac;
    uint8_t digest[32];
    uint8_t tag = (uint8_t)h;

    if (!store_secret_ready) {
        sb_random(store_secret, sizeof(store_secret));
        store_secret_ready = 1;
    }
    hmac_sha256_set_key(&mac, sizeof(store_secret), store_secret);
    hmac_sha256_update(&mac, 1, &tag);
    hmac_sha256_update(&mac, strlen(domain) + 1, (const uint8_t *)domain);
    hmac_sha256_update(&mac, strlen(username) + 1, (const uint8_t *)username);
    hmac_sha256_digest(&mac, sizeof(digest), digest);

    memset(out, 0, sizeof(*out));
    out->hash = h;
    out->iter = store_fake_iter;
    out->saltlen = 16;                    /* same shape as scram_cred_make */
    memcpy(out->salt, digest, out->saltlen);
    sb_random(out->stored_key, sizeof(out->stored_key));
    sb_random(out->server_key, sizeof(out->server_key));
}
