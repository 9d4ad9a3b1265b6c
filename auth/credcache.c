/* credcache.c — the SCRAM material of accounts that logged in recently,
 * kept in the front-end's memory so that they can log in again while
 * PostgreSQL cannot answer (auth-int.h, "credential cache").
 *
 * What is kept is what the `users` row holds (salts, iteration counts,
 * StoredKey, ServerKey), never a password. An entry is made only by a
 * successful login whose keys PostgreSQL gave; it is consulted only when
 * PostgreSQL cannot answer; every answer PostgreSQL gives replaces or
 * drops it. A password change or deletion is published on Redis
 * (AUTH_CACHE_CHANNEL) and forgets the entry on every front-end; a
 * subscription (re)confirmed after Redis was away forgets everything,
 * since a message may have been missed. The epoch makes a login whose
 * lookup started before a forget unable to put the old keys back.
 *
 * A miss while PostgreSQL cannot answer asks the other front-ends
 * (auth_cache_ask; the front-end carries the question over the bus): a
 * peer lends its entry only while its own forget channel is live, and the
 * asker takes it only while its channel is live, no forget came since the
 * lookup began (epoch) and none for that account in the last
 * AUTH_ASK_QUIET seconds (a peer may read the same forget a little later).
 * While PostgreSQL answers, nobody asks: no cost per login. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "buf.h"
#include "config.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "rdev.h"
#include "auth-int.h"

struct cc_entry {
    char key[2 * (JID_PART_MAX + 1)];   /* "user@domain" */
    struct auth_cred cred;
    double expires;
    UT_hash_handle hh;
};

static struct cc_entry *cc_table;
static unsigned long cc_epoch = 1;
static struct rdev *cc_sub;             /* the forget channel's connection */
static int cc_live_test = -1;           /* tests: forced liveness */

static void cc_tomb_add(const char *bare);

SB_COUNTER(cc_mx_hits, "sb_auth_cache_total", "result=\"hit\"",
           "Credential lookups answered from the cache while PostgreSQL could not answer")
SB_COUNTER(cc_mx_misses, "sb_auth_cache_total", "result=\"miss\"",
           "Credential lookups answered from the cache while PostgreSQL could not answer")
SB_COUNTER(cc_mx_lent, "sb_auth_cache_total", "result=\"peer-hit\"",
           "Credential lookups answered from the cache while PostgreSQL could not answer")
SB_COUNTER(cc_mx_unlent, "sb_auth_cache_total", "result=\"peer-miss\"",
           "Credential lookups answered from the cache while PostgreSQL could not answer")
SB_GAUGE(cc_mx_entries, "sb_auth_cache_entries", "", "Accounts in the credential cache")

/* `[auth] credential_cache_s` (seconds an entry serves after the login
 * that made it; 0: no cache) and `credential_cache_max` (entries). */
static double cc_ttl(void)
{
    const char *v = sb_config_str_in("auth", NULL, "credential_cache_s", NULL);
    long s = v && *v ? strtol(v, NULL, 10) : AUTH_CACHE_TTL_DEFAULT;
    return s < 0 ? 0 : (double)s;
}

static long cc_max(void)
{
    const char *v = sb_config_str_in("auth", NULL, "credential_cache_max", NULL);
    long n = v && *v ? strtol(v, NULL, 10) : AUTH_CACHE_MAX_DEFAULT;
    return n < 0 ? 0 : n;
}

static int cc_key(char *out, size_t cap, const char *domain, const char *username)
{
    size_t n = (size_t)snprintf(out, cap, "%s@%s", username, domain);
    return n < cap;
}

static void cc_drop(struct cc_entry *e)
{
    HASH_DEL(cc_table, e);
    memset(e, 0, sizeof *e);        /* keys do not linger in freed memory */
    free(e);
    sb_metric_dec(&cc_mx_entries);
}

unsigned long auth_cache_epoch(void)
{
    return cc_epoch;
}

static void cc_put_for(const char *domain, const char *username, const struct auth_cred *c,
                       double ttl)
{
    char key[sizeof ((struct cc_entry *)0)->key];
    struct cc_entry *e;
    long max = cc_max();

    if (ttl <= 0 || max <= 0 || !c->found || (!c->has_sha1 && !c->has_sha256) ||
        c->epoch != cc_epoch || !cc_key(key, sizeof key, domain, username))
        return;
    HASH_FIND_STR(cc_table, key, e);
    if (e)
        cc_drop(e);             /* re-added at the end: the oldest go first */
    while (HASH_COUNT(cc_table) >= (unsigned)max && cc_table)
        cc_drop(cc_table);
    if (!(e = calloc(1, sizeof *e)))
        return;
    memcpy(e->key, key, sizeof key);
    e->cred = *c;
    e->cred.cached = 1;
    e->expires = sb_now() + ttl;
    HASH_ADD_STR(cc_table, key, e);
    sb_metric_inc(&cc_mx_entries);
}

void auth_cache_put(const char *domain, const char *username, const struct auth_cred *c)
{
    cc_put_for(domain, username, c, cc_ttl());
}

void auth_cache_refresh(const char *domain, const char *username, const struct auth_cred *c)
{
    char key[sizeof ((struct cc_entry *)0)->key];
    struct cc_entry *e;

    if (!cc_table || !cc_key(key, sizeof key, domain, username))
        return;
    HASH_FIND_STR(cc_table, key, e);
    if (!e)
        return;
    if (!c->found || (!c->has_sha1 && !c->has_sha256) || c->epoch != cc_epoch) {
        cc_drop(e);
        return;
    }
    double expires = e->expires;
    e->cred = *c;               /* the database's word, same expiry */
    e->cred.cached = 1;
    e->expires = expires;
}

int auth_cache_get(const char *domain, const char *username, struct auth_cred *out)
{
    char key[sizeof ((struct cc_entry *)0)->key];
    struct cc_entry *e = NULL;

    if (cc_table && cc_key(key, sizeof key, domain, username))
        HASH_FIND_STR(cc_table, key, e);
    if (e && e->expires <= sb_now()) {
        cc_drop(e);
        e = NULL;
    }
    if (!e) {
        sb_metric_inc(&cc_mx_misses);
        return 0;
    }
    sb_metric_inc(&cc_mx_hits);
    *out = e->cred;
    return 1;
}

/* tomb: remember the forget for AUTH_ASK_QUIET (a peer may read the same
 * message later). Not for the forget-all of a (re)confirmed subscription:
 * what it may have missed, peers that were connected have applied, and
 * peers that were not forget everything too before they lend again. */
static void cc_forget(const char *bare, int tomb)
{
    struct cc_entry *e, *tmp;

    cc_epoch++;
    if (tomb)
        cc_tomb_add(bare);
    if (!bare || !strcmp(bare, "*")) {
        long n = (long)HASH_COUNT(cc_table);
        HASH_ITER(hh, cc_table, e, tmp)
            cc_drop(e);
        log_info("auth_cache_cleared", "entries=%ld", n);
        return;
    }
    HASH_FIND_STR(cc_table, bare, e);
    log_info("auth_cache_forget", "user=%s found=%d", sb_log_q(bare), e != NULL);
    if (e)
        cc_drop(e);
}

void auth_cache_forget(const char *bare)
{
    cc_forget(bare, 1);
}

long auth_cache_count(void)
{
    return (long)HASH_COUNT(cc_table);
}

/* ---- the Redis channel ------------------------------------------------------ */

/* "forget user@domain" or "forget *"; anything else, and the (re)confirmed
 * subscription, forget everything: correct, only less available. */
static void cc_notified(const char *msg, size_t len, void *arg)
{
    char bare[2 * (JID_PART_MAX + 1)];

    if (msg && len > 7 && len - 7 < sizeof bare && !memcmp(msg, "forget ", 7)) {
        memcpy(bare, msg + 7, len - 7);
        bare[len - 7] = '\0';
        auth_cache_forget(bare);
        return;
    }
    if (!msg && !cc_table) {
        cc_epoch++;             /* nothing to clear; a racing put still loses */
        return;
    }
    cc_forget(NULL, msg != NULL);
}

void auth_cache_test_notify(const char *msg, size_t len)
{
    cc_notified(msg, len, NULL);
}

struct rdev *auth_cache_subscribe(struct ev_loop *loop)
{
    struct rdev *r;

    if (cc_ttl() <= 0)
        return NULL;
    if (!(r = rdev_from_config(loop)))
        return NULL;
    if (rdev_subscribe(r, AUTH_CACHE_CHANNEL, cc_notified, NULL) != SB_OK) {
        log_warn("auth_cache_subscribe_failed", "channel=%s", AUTH_CACHE_CHANNEL);
        rdev_free(r);
        return NULL;
    }
    cc_sub = r;
    return r;
}

/* No message on the forget channel can have been missed right now. */
static int cc_live(void)
{
    return cc_live_test >= 0 ? cc_live_test : rdev_subscribed(cc_sub);
}

void auth_cache_test_live(int live)
{
    cc_live_test = live;
}

/* ---- forgotten lately (tombstones) ------------------------------------------ */

#define CC_TOMB_MAX 10000

struct cc_tomb {
    char key[2 * (JID_PART_MAX + 1)];
    double at;
    UT_hash_handle hh;
};

static struct cc_tomb *cc_tombs;
static double cc_all_forgotten_at = -1e9;

static void cc_tombs_clear(void)
{
    struct cc_tomb *t, *tmp;
    HASH_ITER(hh, cc_tombs, t, tmp) {
        HASH_DEL(cc_tombs, t);
        free(t);
    }
}

static void cc_tomb_add(const char *bare)
{
    struct cc_tomb *t, *tmp;
    double now = sb_now();

    if (!bare || !strcmp(bare, "*") || strlen(bare) >= sizeof t->key) {
        cc_all_forgotten_at = now;
        cc_tombs_clear();
        return;
    }
    HASH_ITER(hh, cc_tombs, t, tmp)         /* oldest first: drop the stale */
        if (now - t->at > AUTH_ASK_QUIET) {
            HASH_DEL(cc_tombs, t);
            free(t);
        } else
            break;
    HASH_FIND_STR(cc_tombs, bare, t);
    if (t) {
        HASH_DEL(cc_tombs, t);
    } else if (HASH_COUNT(cc_tombs) >= CC_TOMB_MAX || !(t = calloc(1, sizeof *t))) {
        cc_all_forgotten_at = now;          /* too many to tell apart: all */
        cc_tombs_clear();
        return;
    } else {
        snprintf(t->key, sizeof t->key, "%s", bare);
    }
    t->at = now;
    HASH_ADD_STR(cc_tombs, key, t);
}

static int cc_forgotten_lately(const char *bare)
{
    struct cc_tomb *t;
    double now = sb_now();

    if (now - cc_all_forgotten_at <= AUTH_ASK_QUIET)
        return 1;
    HASH_FIND_STR(cc_tombs, bare, t);
    return t && now - t->at <= AUTH_ASK_QUIET;
}

/* ---- lending to and borrowing from the other front-ends --------------------- */

#define CC_ASK_MAX 1024          /* questions in flight */

struct cc_ask {
    char id[24];
    char key[2 * (JID_PART_MAX + 1)];
    char domain[JID_PART_MAX + 1], username[JID_PART_MAX + 1];
    unsigned long epoch;
    int asked, answered;
    auth_store_cb cb;
    void *arg;
    ev_timer wait;
    UT_hash_handle hh;
};

static struct cc_ask *cc_asks;
static struct ev_loop *cc_loop;
static auth_peer_ask_fn cc_ask_fn;
static void *cc_ask_ud;
static unsigned long cc_ask_seq;

void auth_cache_set_peers(struct ev_loop *loop, auth_peer_ask_fn ask, void *ud)
{
    cc_loop = loop;
    cc_ask_fn = ask;
    cc_ask_ud = ud;
}

static double cc_ask_wait(void)
{
    const char *v = sb_config_str_in("auth", NULL, "credential_cache_ask_ms", NULL);
    long ms = v && *v ? strtol(v, NULL, 10) : AUTH_ASK_WAIT_DEFAULT;
    return ms > 0 ? ms / 1e3 : AUTH_ASK_WAIT_DEFAULT / 1e3;
}

/* Answer the login (c NULL: nobody lent) and forget the question. */
static void cc_ask_end(struct cc_ask *a, const struct auth_cred *c)
{
    auth_store_cb cb = a->cb;
    void *arg = a->arg;

    HASH_DEL(cc_asks, a);
    if (cc_loop)
        ev_timer_stop(cc_loop, &a->wait);
    sb_metric_inc(c ? &cc_mx_lent : &cc_mx_unlent);
    memset(a, 0, sizeof *a);
    free(a);
    cb(arg, c);
}

static void cc_ask_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct cc_ask *a = (struct cc_ask *)((char *)w - offsetof(struct cc_ask, wait));

    log_info("auth_cache_peer_miss", "user=%s domain=%s asked=%d answered=%d why=timeout",
             sb_log_q(a->username), sb_log_q(a->domain), a->asked, a->answered);
    cc_ask_end(a, NULL);
}

sb_rc auth_cache_ask(const char *domain, const char *username, unsigned long epoch,
                     auth_store_cb cb, void *arg)
{
    struct cc_ask *a;
    int n;

    if (!cc_ask_fn || !cc_loop || cc_ttl() <= 0 || cc_max() <= 0 || !cc_live() ||
        HASH_COUNT(cc_asks) >= CC_ASK_MAX || !(a = calloc(1, sizeof *a)))
        return SB_ERROR;
    if (!cc_key(a->key, sizeof a->key, domain, username) || cc_forgotten_lately(a->key)) {
        free(a);
        return SB_ERROR;
    }
    snprintf(a->id, sizeof a->id, "cred-%lx", ++cc_ask_seq);
    snprintf(a->domain, sizeof a->domain, "%s", domain);
    snprintf(a->username, sizeof a->username, "%s", username);
    a->epoch = epoch;
    a->cb = cb;
    a->arg = arg;
    if ((n = cc_ask_fn(cc_ask_ud, a->id, a->key)) <= 0) {
        free(a);
        return SB_ERROR;
    }
    a->asked = n;
    HASH_ADD_STR(cc_asks, id, a);
    ev_timer_init(&a->wait, cc_ask_timeout, cc_ask_wait(), 0.);
    ev_timer_start(cc_loop, &a->wait);
    log_info("auth_cache_peer_ask", "user=%s domain=%s peers=%d", sb_log_q(username),
             sb_log_q(domain), n);
    return SB_OK;
}

static void cc_lend_keys(struct sb_buf *out, const char *name, const struct scram_cred *k)
{
    char salt[128], stored[64], server[64];
    size_t dl = scram_digest_len(k->hash);

    auth_b64_encode(k->salt, k->saltlen, salt);
    auth_b64_encode(k->stored_key, dl, stored);
    auth_b64_encode(k->server_key, dl, server);
    sb_buf_printf(out, "%s %u %s %s %s\n", name, k->iter, salt, stored, server);
}

int auth_cache_lend(const char *bare, struct sb_buf *out)
{
    struct cc_entry *e = NULL;

    if (!cc_table || !cc_live())
        return 0;
    HASH_FIND_STR(cc_table, bare, e);
    if (!e || e->expires <= sb_now())
        return 0;
    sb_buf_printf(out, "life %.0f\n", e->expires - sb_now());
    if (e->cred.has_sha1)
        cc_lend_keys(out, "sha1", &e->cred.sha1);
    if (e->cred.has_sha256)
        cc_lend_keys(out, "sha256", &e->cred.sha256);
    return out->data != NULL;
}

/* One "NAME ITER SALT STORED SERVER" line into k; 0 when malformed. */
static int cc_parse_keys(const char *line, enum scram_hash h, struct scram_cred *k)
{
    char salt[128], stored[64], server[64];
    unsigned iter;
    size_t n, dl = scram_digest_len(h);

    memset(k, 0, sizeof *k);
    k->hash = h;
    if (sscanf(line, "%*s %u %127s %63s %63s", &iter, salt, stored, server) != 4 ||
        iter < 1 || iter > 10000000)
        return 0;
    k->iter = iter;
    if (auth_b64_decode(salt, strlen(salt), k->salt, sizeof k->salt, &k->saltlen) != SB_OK ||
        !k->saltlen ||
        auth_b64_decode(stored, strlen(stored), k->stored_key, SCRAM_MAX_DIGEST, &n) != SB_OK ||
        n != dl ||
        auth_b64_decode(server, strlen(server), k->server_key, SCRAM_MAX_DIGEST, &n) != SB_OK ||
        n != dl)
        return 0;
    return 1;
}

/* A peer's body into c and its remaining life; 0 when unusable. */
static int cc_parse_lent(const char *body, size_t len, struct auth_cred *c, double *life)
{
    char text[1024];
    char *line, *save = NULL;

    if (!body || len == 0 || len >= sizeof text)
        return 0;
    memcpy(text, body, len);
    text[len] = '\0';
    memset(c, 0, sizeof *c);
    *life = 0;
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "life ", 5))
            *life = strtod(line + 5, NULL);
        else if (!strncmp(line, "sha1 ", 5))
            c->has_sha1 = cc_parse_keys(line, SCRAM_SHA1, &c->sha1);
        else if (!strncmp(line, "sha256 ", 7))
            c->has_sha256 = cc_parse_keys(line, SCRAM_SHA256, &c->sha256);
    }
    memset(text, 0, sizeof text);
    c->found = c->has_sha1 || c->has_sha256;
    return c->found && *life > 0;
}

void auth_cache_lent(const char *id, const char *bare, const char *peer, const char *body,
                     size_t len)
{
    struct cc_ask *a;
    struct auth_cred c;
    double life, ttl = cc_ttl();
    const char *refused = NULL;

    HASH_FIND_STR(cc_asks, id, a);
    if (!a || strcmp(a->key, bare))
        return;                 /* answered already (or timed out): later ones are void */
    a->answered++;
    if (body && len) {
        if (!cc_parse_lent(body, len, &c, &life))
            refused = "malformed";
        else if (a->epoch != cc_epoch || cc_forgotten_lately(a->key))
            refused = "forgotten";
        else if (!cc_live())
            refused = "channel-down";
        if (!refused) {
            c.epoch = a->epoch;
            cc_put_for(a->domain, a->username, &c, life < ttl ? life : ttl);
            c.cached = 1;
            log_info("auth_cache_used", "user=%s domain=%s why=peer peer=%s",
                     sb_log_q(a->username), sb_log_q(a->domain), sb_log_q(peer));
            cc_ask_end(a, &c);
            memset(&c, 0, sizeof c);
            return;
        }
        memset(&c, 0, sizeof c);
        log_warn("auth_cache_peer_refused", "user=%s domain=%s peer=%s why=%s",
                 sb_log_q(a->username), sb_log_q(a->domain), sb_log_q(peer), refused);
    }
    if (a->answered >= a->asked) {
        log_info("auth_cache_peer_miss", "user=%s domain=%s asked=%d answered=%d why=%s",
                 sb_log_q(a->username), sb_log_q(a->domain), a->asked, a->answered,
                 refused ? refused : "none");
        cc_ask_end(a, NULL);
    }
}

void auth_cache_stop(struct rdev *r)
{
    struct cc_entry *e, *tmp;
    struct cc_ask *a, *atmp;

    HASH_ITER(hh, cc_asks, a, atmp)
        cc_ask_end(a, NULL);
    if (r)
        rdev_free(r);
    if (r == cc_sub)
        cc_sub = NULL;
    HASH_ITER(hh, cc_table, e, tmp)
        cc_drop(e);
    cc_tombs_clear();
    cc_all_forgotten_at = -1e9;
}
