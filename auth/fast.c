/* fast.c — XEP-0484 FAST tokens in PostgreSQL (deploy/migrations/
 * 012_fast.sql): issuing (with rotation: the current token becomes the
 * previous one, an older previous one goes), the lookup an HT-SHA-256-*
 * exchange checks its proof against (sasl.c), noting a use (the count,
 * and dropping the previous token once the current one has been used),
 * and invalidation. The token is never stored: it is an HMAC keyed by the
 * cluster's sasl_secret over the client and a stored random seed, so any
 * front-end can recompute it and a copy of the table alone is useless. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nettle/hmac.h>

#include "log.h"
#include "pgev.h"
#include "auth-int.h"

#define FAST_SEED_BYTES 16

int auth_fast_available(void)
{
    uint8_t k[32];
    return auth_fast_key(k);
}

const char *sasl_fast_mechanisms(const struct sasl_cb *cb)
{
    static char list[96];
    snprintf(list, sizeof list, "HT-SHA-256-NONE%s%s",
             cb && cb->endpoint_len ? " HT-SHA-256-ENDP" : "",
             cb && cb->exporter_len ? " HT-SHA-256-EXPR" : "");
    return list;
}

void auth_fast_token(const char *domain, const char *user, const char *ua, const char *seed,
                     char out[AUTH_FAST_TOKEN_LEN + 1])
{
    struct hmac_sha256_ctx mac;
    uint8_t key[32], d[SHA256_DIGEST_SIZE];
    static const char label[] = "sb-fast-token";

    auth_fast_key(key);
    hmac_sha256_set_key(&mac, sizeof key, key);
    hmac_sha256_update(&mac, sizeof label, (const uint8_t *)label);
    hmac_sha256_update(&mac, strlen(domain) + 1, (const uint8_t *)domain);
    hmac_sha256_update(&mac, strlen(user) + 1, (const uint8_t *)user);
    hmac_sha256_update(&mac, strlen(ua) + 1, (const uint8_t *)ua);
    hmac_sha256_update(&mac, strlen(seed), (const uint8_t *)seed);
    hmac_sha256_digest(&mac, sizeof d, d);
    auth_b64_encode(d, sizeof d, out);
    memset(key, 0, sizeof key);
    memset(d, 0, sizeof d);
}

/* ---- lookup ------------------------------------------------------------------ */

#define FAST_LOOKUP_SQL \
    "SELECT id, mechanism, seed, current, last_count FROM fast_tokens" \
    " WHERE domain=$1 AND username=$2 AND ua_id=$3 AND expires_at > now()" \
    " ORDER BY current DESC LIMIT 4"

struct fast_req {
    auth_fast_rows_cb cb;
    void *arg;
};

static void fast_lookup_done(PGresult *res, void *arg)
{
    struct fast_req *rq = arg;
    struct auth_fast_row rows[4];
    int n = 0;

    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res)
            log_warn("fast_store_error", "error=%s", sb_log_q(PQresultErrorMessage(res)));
        rq->cb(rq->arg, NULL, -1);
        free(rq);
        return;
    }
    for (int i = 0; i < PQntuples(res) && n < 4; i++) {
        struct auth_fast_row *r = &rows[n];
        const char *mech = PQgetvalue(res, i, 1), *seed = PQgetvalue(res, i, 2);
        if (strlen(mech) >= sizeof r->mech || strlen(seed) >= sizeof r->seed)
            continue;
        r->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        strcpy(r->mech, mech);
        strcpy(r->seed, seed);
        r->current = !strcmp(PQgetvalue(res, i, 3), "t");
        r->last_count = strtoll(PQgetvalue(res, i, 4), NULL, 10);
        n++;
    }
    rq->cb(rq->arg, rows, n);
    memset(rows, 0, sizeof rows);
    free(rq);
}

sb_rc auth_fast_lookup(struct pgev *pg, const char *domain, const char *user, const char *ua,
                       auth_fast_rows_cb cb, void *arg)
{
    if (!pg)
        return SB_ERROR;
    struct fast_req *rq = calloc(1, sizeof *rq);
    if (!rq)
        return SB_ERROR;
    rq->cb = cb;
    rq->arg = arg;
    const char *params[3] = {domain, user, ua};
    if (pgev_query(pg, FAST_LOOKUP_SQL, 3, params, fast_lookup_done, rq) != SB_OK) {
        free(rq);
        return SB_ERROR;
    }
    return SB_OK;
}

/* ---- writes ---------------------------------------------------------------------- */

static void fast_write_done(PGresult *res, void *arg)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        log_warn("fast_store_error", "op=%s error=%s", (const char *)arg,
                 sb_log_q(res ? PQresultErrorMessage(res) : "unavailable"));
}

/* The count goes up; a login with the current token retires the previous. */
#define FAST_USED_SQL \
    "WITH u AS (UPDATE fast_tokens SET last_count = GREATEST(last_count, $2::bigint)" \
    " WHERE id=$1 RETURNING domain, username, ua_id, current)" \
    " DELETE FROM fast_tokens f USING u WHERE u.current AND f.domain=u.domain" \
    " AND f.username=u.username AND f.ua_id=u.ua_id AND f.id<>$1"

sb_rc auth_fast_used(struct pgev *pg, long long id, long long count)
{
    char ids[24], cs[24];
    snprintf(ids, sizeof ids, "%lld", id);
    snprintf(cs, sizeof cs, "%lld", count < 0 ? -1 : count);
    const char *params[2] = {ids, cs};
    return pg ? pgev_query(pg, FAST_USED_SQL, 2, params, fast_write_done, "used") : SB_ERROR;
}

#define FAST_INVALIDATE_SQL \
    "DELETE FROM fast_tokens WHERE domain=$1 AND username=$2 AND ua_id=$3"

sb_rc auth_fast_invalidate(struct auth_store *st, const char *domain, const char *user,
                           const char *ua)
{
    struct pgev *pg = auth_store_pg(st);
    const char *params[3] = {domain, user, ua};
    if (!pg)
        return SB_ERROR;
    log_info("fast_invalidated", "user=%s domain=%s", sb_log_q(user), sb_log_q(domain));
    return pgev_query(pg, FAST_INVALIDATE_SQL, 3, params, fast_write_done, "invalidate");
}

/* Rotation in one statement: the older previous token goes, the current
 * one becomes the previous, the new one is current. */
#define FAST_ISSUE_SQL \
    "WITH d AS (DELETE FROM fast_tokens WHERE domain=$1 AND username=$2 AND ua_id=$3" \
    " AND NOT current), u AS (UPDATE fast_tokens SET current=false WHERE domain=$1" \
    " AND username=$2 AND ua_id=$3 AND current)" \
    " INSERT INTO fast_tokens (domain, username, ua_id, mechanism, seed, expires_at)" \
    " VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::double precision))" \
    " RETURNING id, to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

struct fast_issue_req {
    auth_fast_issue_cb cb;
    void *arg;
    char token[AUTH_FAST_TOKEN_LEN + 1];
};

static void fast_issue_done(PGresult *res, void *arg)
{
    struct fast_issue_req *rq = arg;
    struct auth_fast_issued t = {0};

    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        strlen(PQgetvalue(res, 0, 1)) < sizeof t.expiry) {
        t.ok = 1;
        t.id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        strcpy(t.expiry, PQgetvalue(res, 0, 1));
        memcpy(t.token, rq->token, sizeof t.token);
    } else {
        log_warn("fast_store_error", "op=issue error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "unavailable"));
    }
    rq->cb(rq->arg, &t);
    memset(&t, 0, sizeof t);
    memset(rq->token, 0, sizeof rq->token);
    free(rq);
}

sb_rc auth_fast_issue(struct auth_store *st, const char *domain, const char *user,
                      const char *ua, const char *mech, double ttl, auth_fast_issue_cb cb,
                      void *arg)
{
    struct pgev *pg = auth_store_pg(st);
    uint8_t raw[FAST_SEED_BYTES];
    char seed[2 * FAST_SEED_BYTES + 1], ttls[32];
    static const char digits[] = "0123456789abcdef";

    if (!pg || !auth_fast_available())
        return SB_ERROR;
    struct fast_issue_req *rq = calloc(1, sizeof *rq);
    if (!rq)
        return SB_ERROR;
    sb_random(raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++) {
        seed[2 * i] = digits[raw[i] >> 4];
        seed[2 * i + 1] = digits[raw[i] & 15];
    }
    seed[sizeof seed - 1] = '\0';
    snprintf(ttls, sizeof ttls, "%.0f", ttl);
    auth_fast_token(domain, user, ua, seed, rq->token);
    rq->cb = cb;
    rq->arg = arg;
    const char *params[6] = {domain, user, ua, mech, seed, ttls};
    if (pgev_query(pg, FAST_ISSUE_SQL, 6, params, fast_issue_done, rq) != SB_OK) {
        memset(rq->token, 0, sizeof rq->token);
        free(rq);
        return SB_ERROR;
    }
    log_info("fast_token_issued", "user=%s domain=%s mechanism=%s", sb_log_q(user),
             sb_log_q(domain), mech);
    return SB_OK;
}
