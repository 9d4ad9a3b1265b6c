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
 * lookup started before a forget unable to put the old keys back. */
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

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

SB_COUNTER(cc_mx_hits, "sb_auth_cache_total", "result=\"hit\"",
           "Credential lookups answered from the cache while PostgreSQL could not answer")
SB_COUNTER(cc_mx_misses, "sb_auth_cache_total", "result=\"miss\"",
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

void auth_cache_put(const char *domain, const char *username, const struct auth_cred *c)
{
    char key[sizeof ((struct cc_entry *)0)->key];
    struct cc_entry *e;
    double ttl = cc_ttl();
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

void auth_cache_forget(const char *bare)
{
    struct cc_entry *e, *tmp;

    cc_epoch++;
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
    auth_cache_forget(NULL);
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
    return r;
}

void auth_cache_stop(struct rdev *r)
{
    struct cc_entry *e, *tmp;

    if (r)
        rdev_free(r);
    HASH_ITER(hh, cc_table, e, tmp)
        cc_drop(e);
}
