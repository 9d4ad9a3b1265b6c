/* ldap.c — passwords checked against an LDAP directory
 * ([domain.NAME] auth = ldap), search-then-bind: a service account
 * (ldap_bind_dn + ldap_bind_password_file, or anonymous without one)
 * searches ldap_base for (&(ldap_uid_attr=USER)ldap_filter) with USER
 * escaped as RFC 4515 says, and exactly one entry's DN is then bound with
 * the password the client typed. ldap://, ldaps:// or ldap:// with
 * StartTLS (ldap_starttls = 1); ldap_ca_file is what the directory's
 * certificate must chain to (always verified).
 *
 * libldap's calls block, so they never run on the event loop: a domain has
 * a pool of ldap_pool worker threads (default 2), each with one
 * connection of its own, fed from one queue (mutex + condition), and the
 * answers come back to the loop through an ev_async. Every call has
 * ldap_timeout seconds (connect, search, bind); a request waits in the
 * queue at most twice that. A connection that fails is made again on the
 * next request, but after a failed connect the pool waits a back-off
 * (0.5 s doubling to 8 s) during which requests fail at once: the
 * directory down is temporary-auth-failure at once, logged once
 * (ldap_down) until it answers again (ldap_up).
 *
 * ldap_cache_ttl > 0 (seconds; default 0, off) keeps successful logins on
 * the loop side: an HMAC of user and password under a per-process random
 * key, so a repeated login within the ttl does not ask the directory
 * (and a password changed there still works here until the ttl ends).
 *
 * Pools live as long as the process; a domain whose LDAP settings change
 * (SIGHUP) gets a new pool and the old one idles. */
#define _GNU_SOURCE
#include <ldap.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nettle/hmac.h>
#include <nettle/sha2.h>
#include <nettle/memops.h>
#include <uthash.h>

#include "buf.h"
#include "config.h"
#include "jid.h"
#include "log.h"
#include "auth-int.h"

#define LDP_MAX_THREADS  8
#define LDP_MAX_QUEUE    1024
#define LDP_MAX_CACHE    10000
#define LDP_BACKOFF_MIN  0.5
#define LDP_BACKOFF_MAX  8.0
#define LDP_MAX_PASSWORD 1024

struct ldp_req {
    struct ldp_req *next;
    auth_check_cb cb;
    void *arg;
    double deadline;              /* sb_now(): given up if still queued */
    int result;                   /* 1 yes, 0 no, -1 could not ask */
    int reached;                  /* the directory answered (for ldap_down/up) */
    int cached;                   /* answered from the cache */
    const char *why;              /* a log word, or NULL */
    char error[128];              /* libldap's words when it failed */
    uint8_t digest[SHA256_DIGEST_SIZE];
    char user[JID_PART_MAX + 1];
    char password[];              /* wiped by the worker */
};

struct ldp_cache {
    UT_hash_handle hh;
    double expires;
    uint8_t digest[SHA256_DIGEST_SIZE];
    char user[JID_PART_MAX + 1];
};

struct ldp_pool {
    struct ldp_pool *next;
    struct ev_loop *loop;
    char *domain, *sig;
    /* settings (read on the loop once, then only read) */
    char *uri, *ca_file, *bind_dn, *bind_pw, *base, *attr, *filter;
    int starttls, nthreads;
    double timeout, cache_ttl;
    /* shared with the workers, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ldp_req *head, **tail;   /* waiting */
    struct ldp_req *done;           /* answered, for the loop */
    size_t queued;
    double retry_at, backoff;       /* after a failed connect */
    ev_async wake;
    /* the loop's own */
    int logged_down;
    struct ldp_cache *cache;
    size_t ncache;
};

static struct ldp_pool *ldp_pools;
static uint8_t ldp_key[32];
static int ldp_key_ready;

/* ---- one worker: a connection and the search-then-bind ------------------- */

struct ldp_conn {
    struct ldp_pool *p;
    LDAP *ld;
    int as_service;               /* bound as the service account now */
};

static void ldp_drop(struct ldp_conn *w)
{
    if (w->ld)
        ldap_unbind_ext_s(w->ld, NULL, NULL);
    w->ld = NULL;
    w->as_service = 0;
}

static void ldp_err(struct ldp_req *rq, const char *what, int rc)
{
    snprintf(rq->error, sizeof rq->error, "%s: %s", what, ldap_err2string(rc));
}

static int ldp_bind(LDAP *ld, const char *dn, const char *pw)
{
    struct berval cred = {pw ? strlen(pw) : 0, (char *)(pw ? pw : "")};
    return ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

/* Connect (TLS as configured) and bind as the service account. */
static int ldp_connect(struct ldp_conn *w, struct ldp_req *rq)
{
    struct ldp_pool *p = w->p;
    struct timeval tv = {(time_t)p->timeout, (long)((p->timeout - (long)p->timeout) * 1e6)};
    int v3 = LDAP_VERSION3, demand = LDAP_OPT_X_TLS_DEMAND, off = 0, rc;

    rc = ldap_initialize(&w->ld, p->uri);
    if (rc != LDAP_SUCCESS) {
        ldp_err(rq, "initialize", rc);
        w->ld = NULL;
        return -1;
    }
    ldap_set_option(w->ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(w->ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(w->ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(w->ld, LDAP_OPT_TIMEOUT, &tv);
    ldap_set_option(w->ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
    if (p->ca_file[0])
        ldap_set_option(w->ld, LDAP_OPT_X_TLS_CACERTFILE, p->ca_file);
    ldap_set_option(w->ld, LDAP_OPT_X_TLS_NEWCTX, &off);
    if (p->starttls && (rc = ldap_start_tls_s(w->ld, NULL, NULL)) != LDAP_SUCCESS) {
        ldp_err(rq, "starttls", rc);
        ldp_drop(w);
        return -1;
    }
    /* an anonymous bind without a service account: it connects now, so a
     * directory that is down starts the back-off */
    rc = p->bind_dn[0] ? ldp_bind(w->ld, p->bind_dn, p->bind_pw) : ldp_bind(w->ld, NULL, NULL);
    if (rc != LDAP_SUCCESS) {
        ldp_err(rq, "service-bind", rc);
        ldp_drop(w);
        return -1;
    }
    w->as_service = 1;
    return 0;
}

/* A connection bound as the service account, or -1 (rq->error set). */
static int ldp_ready(struct ldp_conn *w, struct ldp_req *rq)
{
    struct ldp_pool *p = w->p;
    int rc;

    if (w->ld && !w->as_service) {
        rc = p->bind_dn[0] ? ldp_bind(w->ld, p->bind_dn, p->bind_pw) : ldp_bind(w->ld, NULL, NULL);
        if (rc == LDAP_SUCCESS) {
            w->as_service = 1;
            return 0;
        }
        ldp_drop(w);
    }
    if (w->ld)
        return 0;
    pthread_mutex_lock(&p->mu);
    int wait = sb_now() < p->retry_at;
    pthread_mutex_unlock(&p->mu);
    if (wait) {
        snprintf(rq->error, sizeof rq->error, "backing off after a failed connect");
        return -1;
    }
    int ok = ldp_connect(w, rq) == 0;
    pthread_mutex_lock(&p->mu);
    if (ok) {
        p->backoff = LDP_BACKOFF_MIN;
    } else {
        p->retry_at = sb_now() + p->backoff;
        p->backoff = p->backoff * 2 > LDP_BACKOFF_MAX ? LDP_BACKOFF_MAX : p->backoff * 2;
    }
    pthread_mutex_unlock(&p->mu);
    return ok ? 0 : -1;
}

static int ldp_conn_lost(int rc)
{
    return rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT ||
           rc == LDAP_UNAVAILABLE;
}

/* The one entry's DN (ldap_memfree), or NULL with rq's result set. */
static char *ldp_search(struct ldp_conn *w, struct ldp_req *rq)
{
    struct ldp_pool *p = w->p;
    struct berval in = {strlen(rq->user), rq->user}, esc = {0, NULL};
    char *attrs[] = {LDAP_NO_ATTRS, NULL}, *dn = NULL, filter[3 * 1024];
    struct timeval tv = {(time_t)p->timeout, (long)((p->timeout - (long)p->timeout) * 1e6)};
    LDAPMessage *res = NULL;
    int rc;

    rq->result = -1;
    if (ldap_bv2escaped_filter_value(&in, &esc) != 0) {
        snprintf(rq->error, sizeof rq->error, "cannot escape the name");
        return NULL;
    }
    if (p->filter[0])
        snprintf(filter, sizeof filter, "(&(%s=%s)%s)", p->attr, esc.bv_val, p->filter);
    else
        snprintf(filter, sizeof filter, "(%s=%s)", p->attr, esc.bv_val);
    ber_memfree(esc.bv_val);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (ldp_ready(w, rq) != 0)
            return NULL;
        rc = ldap_search_ext_s(w->ld, p->base, LDAP_SCOPE_SUBTREE, filter, attrs, 1, NULL, NULL,
                               &tv, 2, &res);
        if (rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED || !ldp_conn_lost(rc))
            break;
        ldap_msgfree(res);              /* a stale connection (the directory restarted) */
        res = NULL;
        ldp_drop(w);
        ldp_err(rq, "search", rc);
    }
    if (rc == LDAP_SIZELIMIT_EXCEEDED || (rc == LDAP_SUCCESS && ldap_count_entries(w->ld, res) > 1)) {
        rq->reached = 1;
        rq->result = 0;
        rq->why = "ambiguous";
    } else if (rc == LDAP_SUCCESS && ldap_count_entries(w->ld, res) == 0) {
        rq->reached = 1;
        rq->result = 0;
        rq->why = "no-such-user";
    } else if (rc == LDAP_SUCCESS) {
        rq->reached = 1;
        dn = ldap_get_dn(w->ld, ldap_first_entry(w->ld, res));
        if (!dn)
            snprintf(rq->error, sizeof rq->error, "entry without a DN");
    } else if (!ldp_conn_lost(rc)) {
        rq->reached = 1;                /* it answered, with an error */
        ldp_err(rq, "search", rc);
    }
    ldap_msgfree(res);
    return dn;
}

static void ldp_check(struct ldp_conn *w, struct ldp_req *rq)
{
    char *dn = ldp_search(w, rq);
    if (!dn)
        return;
    int rc = ldp_bind(w->ld, dn, rq->password);
    ldap_memfree(dn);
    w->as_service = 0;
    if (rc == LDAP_SUCCESS) {
        rq->result = 1;
    } else if (rc == LDAP_INVALID_CREDENTIALS || rc == LDAP_INAPPROPRIATE_AUTH ||
               rc == LDAP_UNWILLING_TO_PERFORM) {
        rq->result = 0;
        rq->why = "wrong-password";
    } else {
        rq->result = -1;
        rq->reached = !ldp_conn_lost(rc);
        ldp_err(rq, "bind", rc);
        ldp_drop(w);
    }
}

static struct ldp_req *ldp_pop(struct ldp_pool *p)
{
    struct ldp_req *rq = p->head;
    if (rq) {
        p->head = rq->next;
        if (!p->head)
            p->tail = &p->head;
        p->queued--;
    }
    return rq;
}

static void ldp_answer(struct ldp_pool *p, struct ldp_req *rq)
{
    pthread_mutex_lock(&p->mu);
    rq->next = p->done;
    p->done = rq;
    pthread_mutex_unlock(&p->mu);
    ev_async_send(p->loop, &p->wake);
}

static void *ldp_worker(void *arg)
{
    struct ldp_conn w = {arg, NULL, 0};
    struct ldp_pool *p = w.p;

    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head)
            pthread_cond_wait(&p->cv, &p->mu);
        struct ldp_req *rq = ldp_pop(p);
        pthread_mutex_unlock(&p->mu);
        if (sb_now() > rq->deadline) {
            rq->result = -1;
            snprintf(rq->error, sizeof rq->error, "waited too long in the queue");
        } else {
            ldp_check(&w, rq);
        }
        memset(rq->password, 0, strlen(rq->password));
        ldp_answer(p, rq);
    }
    return NULL;
}

/* ---- the loop's side: answers, the cache, the pools -------------------------- */

static void ldp_digest(const char *user, const char *password, uint8_t out[SHA256_DIGEST_SIZE])
{
    struct hmac_sha256_ctx mac;
    if (!ldp_key_ready) {
        sb_random(ldp_key, sizeof ldp_key);
        ldp_key_ready = 1;
    }
    hmac_sha256_set_key(&mac, sizeof ldp_key, ldp_key);
    hmac_sha256_update(&mac, strlen(user) + 1, (const uint8_t *)user);
    hmac_sha256_update(&mac, strlen(password), (const uint8_t *)password);
    hmac_sha256_digest(&mac, SHA256_DIGEST_SIZE, out);
}

static void ldp_cache_del(struct ldp_pool *p, struct ldp_cache *e)
{
    HASH_DEL(p->cache, e);
    free(e);
    p->ncache--;
}

static int ldp_cache_hit(struct ldp_pool *p, const struct ldp_req *rq)
{
    struct ldp_cache *e;
    HASH_FIND_STR(p->cache, rq->user, e);
    if (!e)
        return 0;
    if (e->expires <= ev_now(p->loop)) {
        ldp_cache_del(p, e);
        return 0;
    }
    return memeql_sec(e->digest, rq->digest, SHA256_DIGEST_SIZE);
}

static void ldp_cache_put(struct ldp_pool *p, const struct ldp_req *rq)
{
    struct ldp_cache *e, *tmp;
    double now = ev_now(p->loop);

    HASH_FIND_STR(p->cache, rq->user, e);
    if (!e && p->ncache >= LDP_MAX_CACHE) {
        HASH_ITER(hh, p->cache, e, tmp) {
            if (e->expires <= now)
                ldp_cache_del(p, e);
        }
    }
    HASH_FIND_STR(p->cache, rq->user, e);
    if (!e) {
        if (p->ncache >= LDP_MAX_CACHE || !(e = calloc(1, sizeof(*e))))
            return;
        snprintf(e->user, sizeof e->user, "%s", rq->user);
        HASH_ADD_STR(p->cache, user, e);
        p->ncache++;
    }
    memcpy(e->digest, rq->digest, sizeof e->digest);
    e->expires = now + p->cache_ttl;
}

static void ldp_deliver(struct ldp_pool *p, struct ldp_req *rq)
{
    if (!rq->cached && rq->reached && p->logged_down) {
        p->logged_down = 0;
        log_info("ldap_up", "domain=%s uri=%s", sb_log_q(p->domain), sb_log_q(p->uri));
    } else if (!rq->cached && !rq->reached && rq->result < 0 && !p->logged_down) {
        p->logged_down = 1;
        log_warn("ldap_down", "domain=%s uri=%s error=%s", sb_log_q(p->domain),
                 sb_log_q(p->uri), sb_log_q(rq->error));
    } else if (rq->result < 0 && rq->reached) {
        log_warn("ldap_error", "domain=%s user=%s error=%s", sb_log_q(p->domain),
                 sb_log_q(rq->user), sb_log_q(rq->error));
    }
    if (rq->result == 0)
        log_info("ldap_refused", "domain=%s user=%s reason=%s", sb_log_q(p->domain),
                 sb_log_q(rq->user), rq->why ? rq->why : "-");
    if (rq->result == 1 && !rq->cached && p->cache_ttl > 0)
        ldp_cache_put(p, rq);
    auth_check_cb cb = rq->cb;
    void *arg = rq->arg;
    int result = rq->result;
    free(rq);
    cb(arg, result);
}

static void ldp_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct ldp_pool *p = w->data;
    pthread_mutex_lock(&p->mu);
    struct ldp_req *list = p->done, *rev = NULL;
    p->done = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {                    /* oldest first */
        struct ldp_req *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct ldp_req *n = rev->next;
        ldp_deliver(p, rev);
        rev = n;
    }
}

static const char *ldp_cfg(const char *domain, const char *key, const char *def)
{
    return sb_config_str_in("domain", domain, key, def);
}

/* Every setting in one string: a change makes a new pool. */
static char *ldp_signature(const char *domain)
{
    static const char *const keys[] = {"ldap_uri", "ldap_starttls", "ldap_ca_file",
                                       "ldap_bind_dn", "ldap_bind_password_file",
                                       "ldap_bind_password", "ldap_base", "ldap_uid_attr",
                                       "ldap_filter", "ldap_timeout", "ldap_pool",
                                       "ldap_cache_ttl"};
    struct sb_buf b = SB_BUF_INIT;
    for (size_t i = 0; i < SB_ARRAY_LEN(keys); i++)
        sb_buf_printf(&b, "%s\n", ldp_cfg(domain, keys[i], ""));
    return b.data ? b.data : strdup("");
}

static int ldp_start_threads(struct ldp_pool *p)
{
    sigset_t all, old;
    pthread_attr_t at;
    int started = 0;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);     /* signals stay with the loop */
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < p->nthreads; i++) {
        pthread_t t;
        if (pthread_create(&t, &at, ldp_worker, p) == 0)
            started++;
    }
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return started;
}

static struct ldp_pool *ldp_pool_new(struct ev_loop *loop, const char *domain, char *sig)
{
    struct ldp_pool *p = calloc(1, sizeof(*p));
    char pw[512] = "";
    char section[JID_PART_MAX + 16];

    if (!p)
        return NULL;
    snprintf(section, sizeof section, "domain.%s", domain);
    if (sb_config_secret_section(section, "ldap_bind_password", pw, sizeof pw) == SB_ERROR) {
        free(p);
        return NULL;                  /* logged by config */
    }
    p->loop = loop;
    p->domain = strdup(domain);
    p->sig = sig;
    p->uri = strdup(ldp_cfg(domain, "ldap_uri", ""));
    p->ca_file = strdup(ldp_cfg(domain, "ldap_ca_file", ""));
    p->bind_dn = strdup(ldp_cfg(domain, "ldap_bind_dn", ""));
    p->bind_pw = strdup(pw);
    memset(pw, 0, sizeof pw);
    p->base = strdup(ldp_cfg(domain, "ldap_base", ""));
    p->attr = strdup(ldp_cfg(domain, "ldap_uid_attr", "uid"));
    p->filter = strdup(ldp_cfg(domain, "ldap_filter", ""));
    p->starttls = sb_config_bool_in("domain", domain, "ldap_starttls", 0);
    long n = strtol(ldp_cfg(domain, "ldap_pool", "2"), NULL, 10);
    p->nthreads = n < 1 ? 1 : n > LDP_MAX_THREADS ? LDP_MAX_THREADS : (int)n;
    p->timeout = strtod(ldp_cfg(domain, "ldap_timeout", "5"), NULL);
    if (!(p->timeout > 0))
        p->timeout = 5;
    p->cache_ttl = strtod(ldp_cfg(domain, "ldap_cache_ttl", "0"), NULL);
    p->backoff = LDP_BACKOFF_MIN;
    p->tail = &p->head;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    ev_async_init(&p->wake, ldp_wake_cb);
    p->wake.data = p;
    ev_async_start(loop, &p->wake);
    ev_unref(loop);                   /* the loop may end with pools alive */
    int started = ldp_start_threads(p);
    log_info("ldap_pool", "domain=%s uri=%s starttls=%d threads=%d timeout=%.1f cache_ttl=%.0f",
             sb_log_q(domain), sb_log_q(p->uri), p->starttls, started, p->timeout, p->cache_ttl);
    if (!started) {
        log_warn("ldap_unavailable", "domain=%s reason=no-threads", sb_log_q(domain));
        ev_ref(loop);
        ev_async_stop(loop, &p->wake);
        p->sig = NULL;
        free(sig);                    /* tried again on the next login */
        return NULL;                  /* the small allocations stay (rare) */
    }
    p->next = ldp_pools;
    ldp_pools = p;
    return p;
}

static struct ldp_pool *ldp_pool_get(struct ev_loop *loop, const char *domain)
{
    if (!ldp_cfg(domain, "ldap_uri", "")[0]) {
        log_warn("ldap_unavailable", "domain=%s reason=no-ldap_uri", sb_log_q(domain));
        return NULL;
    }
    char *sig = ldp_signature(domain);
    for (struct ldp_pool *p = ldp_pools; p; p = p->next)
        if (p->loop == loop && !strcmp(p->domain, domain) && p->sig && !strcmp(p->sig, sig)) {
            free(sig);
            return p;
        }
    return ldp_pool_new(loop, domain, sig);
}

sb_rc auth_ldap_check(struct ev_loop *loop, const char *domain, const char *user,
                      const char *password, auth_check_cb cb, void *arg)
{
    struct ldp_pool *p = loop && domain ? ldp_pool_get(loop, domain) : NULL;
    size_t pl = password ? strlen(password) : 0;

    /* An empty password would be an unauthenticated bind, which
     * directories answer with success (RFC 4513 §5.1.2). */
    if (!p || !user || !user[0] || strlen(user) > JID_PART_MAX || pl == 0 ||
        pl > LDP_MAX_PASSWORD)
        return SB_ERROR;
    struct ldp_req *rq = calloc(1, sizeof(*rq) + pl + 1);
    if (!rq)
        return SB_ERROR;
    rq->cb = cb;
    rq->arg = arg;
    snprintf(rq->user, sizeof rq->user, "%s", user);
    memcpy(rq->password, password, pl + 1);
    rq->deadline = sb_now() + 2 * p->timeout;
    if (p->cache_ttl > 0)
        ldp_digest(user, password, rq->digest);
    if (p->cache_ttl > 0 && ldp_cache_hit(p, rq)) {
        memset(rq->password, 0, pl);
        rq->cached = 1;
        rq->result = 1;
        ldp_answer(p, rq);            /* later, never inside */
        return SB_OK;
    }
    pthread_mutex_lock(&p->mu);
    if (p->queued >= LDP_MAX_QUEUE) {
        pthread_mutex_unlock(&p->mu);
        log_warn("ldap_unavailable", "domain=%s reason=queue-full queued=%zu",
                 sb_log_q(domain), p->queued);
        memset(rq->password, 0, pl);
        free(rq);
        return SB_ERROR;
    }
    *p->tail = rq;
    p->tail = &rq->next;
    p->queued++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return SB_OK;
}
