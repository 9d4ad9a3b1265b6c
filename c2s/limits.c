/* limits.c — what one source address and one account may do, on top of the
 * per-session limits of rate.c:
 *
 *   per address (IPv4 address, IPv6 /64: tlsconn_addr_key), in this process
 *     sessions open          max_conns_per_addr (TCP; sb-bosh: BOSH and
 *                            WebSocket sessions)
 *     not yet authenticated  max_unauth_per_addr
 *     over either: the session is not counted and its stream gets
 *     policy-violation (RFC 6120 §4.9.3.12) as soon as it can be spoken
 *     failed logins          login_failures_per_addr per minute: a token
 *                            bucket that deep (rate.c's arithmetic), so a
 *                            burst passes and then one try per 60/N s; an
 *                            <auth/> with the bucket empty gets SASL
 *                            temporary-auth-failure (§6.5.12)
 *   per account (user@domain), across the cluster
 *     failed logins          counted in Redis only when a login fails
 *                            (INCR + EXPIRE NX, pipelined on c2s.rd), so a
 *                            successful login costs nothing. The N-th
 *                            failure in login_fail_window locks the account
 *                            for the window, each further one while the
 *                            counter lives (lockout + window) doubles it, up
 *                            to login_lockout_max. The lock is PUBLISHed on
 *                            sb:auth-lock; every front-end keeps the locks
 *                            it heard in memory and answers every login of
 *                            the account with temporary-auth-failure, the
 *                            right password too (else the limit would not
 *                            slow a guesser at all).
 *
 * Address counts are local: a front-end owns its sockets, so it knows its
 * counts exactly and at no cost, and a crashed one leaves nothing stale;
 * with N front-ends an address gets N times the caps. Accounts are shared:
 * a guesser spreads over front-ends. A front-end that missed a PUBLISH
 * (Redis reconnecting) learns the lock at the account's next failure,
 * whose INCR answers past the limit.
 *
 * Refusals are logged once per address per LIM_LOG_PERIOD with the count
 * since the last line (`addr_limited`), locks once each (`account_locked`). */
#include "c2s.h"
#include "log.h"
#include "rdev.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIM_LOG_PERIOD   10.0     /* s: one addr_limited line per address */
#define LIM_SWEEP        30.0     /* s: forget idle addresses, ended locks */
#define LIM_REFUSED_WAIT 5.0      /* s a refused session may take to hear why */
#define LIM_LOCK_CHANNEL "sb:auth-lock"
#define LIM_LOCK_BUCKETS 256

struct c2s_addr {
    struct c2s_addr *next;         /* hash chain */
    uint8_t key[16];
    uint32_t conns, unauth;        /* counted sessions, of them unauthenticated */
    float fail_tokens;             /* failed logins left in the bucket */
    double fail_at;                /* when it was last refilled */
    double logged_at;              /* last addr_limited line */
    uint32_t refused;              /* refusals since that line */
    char shown[48];                /* the key as text, for logs */
};

struct lim_lock {
    struct lim_lock *next;
    double until;                  /* ev_now time */
    char acct[];                   /* user@domain */
};

static struct c2s_addr **lim_tab;
static size_t lim_size, lim_count;
static struct lim_lock *lim_locks[LIM_LOCK_BUCKETS];
static struct rdev *lim_sub;       /* subscriber: sb:auth-lock */
static ev_timer lim_sweep;

static uint64_t lim_hash(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ULL;
    while (n--)
        h = (h ^ *s++) * 1099511628211ULL;
    return h;
}

/* ---- the address table ---------------------------------------------------- */

static int lim_addr_on(void)
{
    const struct c2s_cfg *cfg = &c2s.cfg;
    return cfg->max_conns_per_addr > 0 || cfg->max_unauth_per_addr > 0 ||
           cfg->login_failures_per_addr > 0;
}

static void lim_grow(void)
{
    size_t nsize = lim_size ? lim_size * 2 : 256;
    struct c2s_addr **nt = calloc(nsize, sizeof *nt);
    if (!nt)
        return;                    /* longer chains */
    for (size_t i = 0; i < lim_size; i++) {
        for (struct c2s_addr *a = lim_tab[i], *next; a; a = next) {
            next = a->next;
            size_t b = lim_hash(a->key, 16) & (nsize - 1);
            a->next = nt[b];
            nt[b] = a;
        }
    }
    free(lim_tab);
    lim_tab = nt;
    lim_size = nsize;
}

/* The entry of peer's address (created when `create`), NULL if peer is not
 * an address or memory ran out (then it is not limited). */
static struct c2s_addr *lim_addr(const char *peer, int create)
{
    uint8_t key[16];
    char shown[48];
    if (tlsconn_addr_key(peer, key, shown, sizeof shown) != 0)
        return NULL;
    if (lim_tab) {
        struct c2s_addr *a = lim_tab[lim_hash(key, 16) & (lim_size - 1)];
        for (; a; a = a->next)
            if (memcmp(a->key, key, 16) == 0)
                return a;
    }
    if (!create)
        return NULL;
    if (lim_count >= lim_size)
        lim_grow();
    struct c2s_addr *a = lim_tab ? calloc(1, sizeof *a) : NULL;
    if (!a)
        return NULL;
    memcpy(a->key, key, 16);
    memcpy(a->shown, shown, sizeof a->shown);
    a->fail_tokens = (float)c2s.cfg.login_failures_per_addr;
    a->fail_at = ev_now(c2s.loop);
    size_t b = lim_hash(key, 16) & (lim_size - 1);
    a->next = lim_tab[b];
    lim_tab[b] = a;
    lim_count++;
    return a;
}

static void lim_fail_refill(struct c2s_addr *a)
{
    double now = ev_now(c2s.loop), n = c2s.cfg.login_failures_per_addr;
    a->fail_tokens = c2s_bucket_refill(a->fail_tokens, now - a->fail_at, n / 60.0, n);
    a->fail_at = now;
}

/* Nothing left to remember: no session, a full bucket, no line owed. */
static int lim_idle(struct c2s_addr *a)
{
    if (a->conns)
        return 0;
    if (c2s.cfg.login_failures_per_addr > 0) {
        lim_fail_refill(a);
        if (a->fail_tokens < (float)c2s.cfg.login_failures_per_addr)
            return 0;
    }
    return a->refused == 0 || ev_now(c2s.loop) - a->logged_at >= LIM_LOG_PERIOD;
}

static void lim_forget(struct c2s_addr *a)
{
    struct c2s_addr **pp = &lim_tab[lim_hash(a->key, 16) & (lim_size - 1)];
    for (; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            lim_count--;
            free(a);
            return;
        }
    }
}

/* One line per address per period, with how many were refused since. */
static void lim_refused(struct c2s_addr *a, const char *limit, double max, const char *peer,
                        const char *account)
{
    double now = ev_now(c2s.loop);
    a->refused++;
    if (a->logged_at > 0 && now - a->logged_at < LIM_LOG_PERIOD)
        return;
    log_warn("addr_limited", "addr=%s limit=%s max=%g refused=%u peer=%s%s%s", a->shown, limit,
             max, a->refused, peer, account ? " account=" : "", account ? account : "");
    a->logged_at = now;
    a->refused = 0;
}

int c2s_limits_conn_new(struct c2s_conn *c)
{
    const struct c2s_cfg *cfg = &c2s.cfg;
    struct c2s_addr *a = lim_addr_on() ? lim_addr(c->peer, 1) : NULL;
    if (!a)
        return 0;
    const char *over = NULL;
    double max = 0;
    if (cfg->max_conns_per_addr > 0 && a->conns >= (uint32_t)cfg->max_conns_per_addr)
        over = "sessions", max = cfg->max_conns_per_addr;
    else if (cfg->max_unauth_per_addr > 0 && a->unauth >= (uint32_t)cfg->max_unauth_per_addr)
        over = "unauthenticated", max = cfg->max_unauth_per_addr;
    if (over) {
        c->flags |= C2S_F_REFUSED;
        double by = ev_now(c2s.loop) + LIM_REFUSED_WAIT;
        if (c->login_deadline > by)
            c->login_deadline = by;
        lim_refused(a, over, max, c->peer, NULL);
        return 1;
    }
    a->conns++;
    a->unauth++;
    c->addr = a;
    return 0;
}

void c2s_limits_conn_authed(struct c2s_conn *c)
{
    if (c->addr && c->addr->unauth)
        c->addr->unauth--;
}

void c2s_limits_conn_gone(struct c2s_conn *c)
{
    struct c2s_addr *a = c->addr;
    if (!a)
        return;
    c->addr = NULL;
    if (a->conns)
        a->conns--;
    if (c->state <= C2S_S_STREAM_OPEN && a->unauth)
        a->unauth--;
    if (lim_idle(a))
        lim_forget(a);
}

void c2s_limits_refuse_stream(struct c2s_conn *c)
{
    c2s_stream_error_full(c, "policy-violation", NULL, "too many connections from your address",
                          NULL, "addr-limit");
}

int c2s_limits_login_allowed(struct c2s_conn *c)
{
    double n = c2s.cfg.login_failures_per_addr;
    struct c2s_addr *a = n > 0 ? (c->addr ? c->addr : lim_addr(c->peer, 0)) : NULL;
    if (!a)
        return 1;
    lim_fail_refill(a);
    if (a->fail_tokens >= 1)
        return 1;
    c->flags |= C2S_F_REFUSED;         /* its close is not logged per session */
    lim_refused(a, "login-failures", n, c->peer, NULL);
    return 0;
}

/* A failed login takes one from the address's bucket. */
static void lim_addr_failed(struct c2s_conn *c)
{
    if (c2s.cfg.login_failures_per_addr <= 0)
        return;
    struct c2s_addr *a = c->addr ? c->addr : lim_addr(c->peer, 1);
    if (!a)
        return;
    lim_fail_refill(a);
    a->fail_tokens = a->fail_tokens >= 1 ? a->fail_tokens - 1 : 0;
}

/* ---- account locks ------------------------------------------------------- */

static struct lim_lock **lim_lock_slot(const char *acct)
{
    return &lim_locks[lim_hash(acct, strlen(acct)) % LIM_LOCK_BUCKETS];
}

static struct lim_lock *lim_lock_find(const char *acct)
{
    for (struct lim_lock *l = *lim_lock_slot(acct); l; l = l->next)
        if (strcmp(l->acct, acct) == 0)
            return l;
    return NULL;
}

static int lim_locked(const char *acct)
{
    struct lim_lock *l = lim_lock_find(acct);
    return l && l->until > ev_now(c2s.loop);
}

static void lim_lock(const char *acct, double secs)
{
    double until = ev_now(c2s.loop) + secs;
    struct lim_lock *l = lim_lock_find(acct);
    if (!l) {
        size_t n = strlen(acct) + 1;
        if (!(l = malloc(sizeof *l + n)))
            return;
        memcpy(l->acct, acct, n);
        l->until = 0;
        struct lim_lock **slot = lim_lock_slot(acct);
        l->next = *slot;
        *slot = l;
    }
    if (until > l->until)
        l->until = until;
}

/* "user@domain SECONDS" from another front-end (or our own, again). */
static void lim_lock_heard(const char *msg, size_t len, void *arg)
{
    char buf[JID_BARE_MAX + 32];
    if (!msg || len == 0 || len >= sizeof buf)
        return;                    /* (re)subscribed, or not ours */
    memcpy(buf, msg, len);
    buf[len] = '\0';
    char *sp = strrchr(buf, ' ');
    double secs = sp ? atof(sp + 1) : 0;
    if (!sp || secs <= 0 || sp == buf)
        return;
    *sp = '\0';
    lim_lock(buf, secs);
    log_debug("account_lock_heard", "account=%s lockout=%g", buf, secs);
}

/* The account's failure count after this one. */
static void lim_incr_reply(redisReply *r, void *arg)
{
    char *acct = arg;
    const struct c2s_cfg *cfg = &c2s.cfg;
    long long limit = cfg->login_failures_per_account;
    if (r && r->type == REDIS_REPLY_INTEGER && limit > 0 && r->integer >= limit) {
        long long over = r->integer - limit;
        double lock = cfg->login_fail_window;
        for (long long i = 0; i < over && lock < cfg->login_lockout_max; i++)
            lock *= 2;
        if (lock > cfg->login_lockout_max)
            lock = cfg->login_lockout_max;
        char msg[JID_BARE_MAX + 32];
        snprintf(msg, sizeof msg, "%s %.0f", acct, lock);
        rdev_cmd(c2s.rd, NULL, NULL, "EXPIRE sb:authfail:{%s} %d", acct,
                 (int)(lock + cfg->login_fail_window));
        rdev_cmd(c2s.rd, NULL, NULL, "PUBLISH " LIM_LOCK_CHANNEL " %s", msg);
        lim_lock(acct, lock);
        log_warn("account_locked", "account=%s failures=%lld lockout=%.0f", acct, r->integer,
                 lock);
    }
    free(acct);
}

static void lim_account_failed(const char *acct)
{
    const struct c2s_cfg *cfg = &c2s.cfg;
    if (cfg->login_failures_per_account <= 0 || !c2s.rd)
        return;
    char *arg = strdup(acct);
    if (!arg)
        return;
    if (rdev_cmd(c2s.rd, lim_incr_reply, arg, "INCR sb:authfail:{%s}", acct) != SB_OK) {
        free(arg);
        return;
    }
    rdev_cmd(c2s.rd, NULL, NULL, "EXPIRE sb:authfail:{%s} %d NX", acct,
             (int)cfg->login_fail_window);
}

const char *c2s_limits_login_done(struct c2s_conn *c, const struct sasl_result *r)
{
    if (r->status == SASL_SUCCESS && r->anonymous)
        return NULL;
    char acct[JID_BARE_MAX + 1] = "";
    if (r->username && *r->username && c->domain)
        snprintf(acct, sizeof acct, "%s@%s", r->username, c->domain);
    int failed = r->status == SASL_FAILURE && r->condition &&
                 strcmp(r->condition, "not-authorized") == 0;
    int locked = *acct && c2s.cfg.login_failures_per_account > 0 && lim_locked(acct);
    if (failed || locked)
        lim_addr_failed(c);
    if (locked) {
        struct c2s_addr *a = c->addr ? c->addr : lim_addr(c->peer, 1);
        if (a)
            lim_refused(a, "account-locked", c2s.cfg.login_failures_per_account, c->peer, acct);
        c->flags |= C2S_F_REFUSED;
        return "temporary-auth-failure";
    }
    if (failed && *acct)
        lim_account_failed(acct);
    return NULL;
}

/* ---- life ------------------------------------------------------------------ */

static void lim_sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    for (size_t i = 0; i < lim_size; i++) {
        for (struct c2s_addr *a = lim_tab[i], *next; a; a = next) {
            next = a->next;
            if (lim_idle(a))
                lim_forget(a);
        }
    }
    double now = ev_now(loop);
    for (int i = 0; i < LIM_LOCK_BUCKETS; i++) {
        for (struct lim_lock **pp = &lim_locks[i]; *pp;) {
            struct lim_lock *l = *pp;
            if (l->until <= now) {
                *pp = l->next;
                free(l);
            } else {
                pp = &l->next;
            }
        }
    }
}

void c2s_limits_init(void)
{
    ev_timer_init(&lim_sweep, lim_sweep_cb, LIM_SWEEP, LIM_SWEEP);
    ev_timer_start(c2s.loop, &lim_sweep);
    if (!lim_sub && (lim_sub = rdev_from_config(c2s.loop)) &&
        rdev_subscribe(lim_sub, LIM_LOCK_CHANNEL, lim_lock_heard, NULL) != SB_OK)
        log_warn("limits_subscribe_failed", "channel=" LIM_LOCK_CHANNEL);
}

void c2s_limits_stop(void)
{
    ev_timer_stop(c2s.loop, &lim_sweep);
    if (lim_sub)
        rdev_free(lim_sub);
    lim_sub = NULL;
    for (size_t i = 0; i < lim_size; i++) {
        for (struct c2s_addr *a = lim_tab[i], *next; a; a = next) {
            next = a->next;
            free(a);
        }
    }
    free(lim_tab);
    lim_tab = NULL;
    lim_size = lim_count = 0;
    for (int i = 0; i < LIM_LOCK_BUCKETS; i++) {
        for (struct lim_lock *l = lim_locks[i], *next; l; l = next) {
            next = l->next;
            free(l);
        }
        lim_locks[i] = NULL;
    }
}
