/* rdev.c — hiredis async on libev with reconnection (see rdev.h).
 *
 * hiredis 0.14 has no timeouts of its own, so a watchdog tick drops a
 * connection whose connect or whose oldest outstanding reply takes longer
 * than RDEV_STALL seconds (a hung or unreachable server), which answers
 * every outstanding command with NULL. Commands issued while there is no
 * connection are answered NULL from the loop's next iteration. */
#include "rdev.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/adapters/libev.h>

#define RDEV_BACKOFF_MIN 0.5
#define RDEV_BACKOFF_MAX 5.0
#define RDEV_STALL 5.0
#define RDEV_FREELIST_MAX 1024

/* One outstanding command: what to call back. Recycled via a free list. */
struct rdev_req {
    struct rdev_req *next;
    struct rdev *r;
    rdev_cb cb;
    void *arg;
    double t0;                  /* sent (sb_now): the round trip */
};

struct rdev {
    struct ev_loop *loop;
    char *host;
    int port;
    char *user, *password;      /* AUTH after every connect when password is set */
    int auth_failed;            /* logged once until a login works again */
    redisAsyncContext *ac;      /* NULL while down */
    int connected;              /* connect callback said OK */
    int logged_up;              /* -1 nothing yet, 0 down, 1 up */
    double backoff;
    double since;               /* connect start, or last progress on replies */
    long pending;               /* commands hiredis still owes a reply */
    ev_timer retry, tick, fail;
    ev_timer up;                /* runs on_up outside hiredis' callback */
    void (*on_up)(void *arg);
    void *on_up_arg;
    char *sub_channel;          /* rdev_subscribe: SUBSCRIBEd after every up */
    rdev_msg_cb sub_cb;
    unsigned long gen, sub_gen;  /* connections made; the one the subscription was confirmed on */
    void *sub_arg;
    struct rdev_req *failed, *failed_tail;   /* to answer NULL asynchronously */
    struct rdev_req *freelist;
    size_t nfree;
};

static int rdev_auth_logged;       /* redis_auth_failed said, until a login works */
SB_COUNTER(rdev_mx_cmds, "sb_redis_commands_total", "", "Redis commands issued")
SB_COUNTER(rdev_mx_err_down, "sb_redis_errors_total", "reason=\"unavailable\"",
           "Redis commands that failed: not connected, connection lost, error reply")
SB_COUNTER(rdev_mx_err_lost, "sb_redis_errors_total", "reason=\"connection\"",
           "Redis commands that failed: not connected, connection lost, error reply")
SB_COUNTER(rdev_mx_err_reply, "sb_redis_errors_total", "reason=\"reply\"",
           "Redis commands that failed: not connected, connection lost, error reply")
SB_COUNTER(rdev_mx_disconnects, "sb_redis_disconnects_total", "",
           "Times a Redis connection went down")
SB_GAUGE(rdev_mx_pending, "sb_redis_pending", "", "Redis commands waiting for their reply")
SB_HISTOGRAM(rdev_mx_rtt, "sb_redis_round_trip_seconds", "",
             "Redis command round trips, sent to reply")

static void rdev_connect(struct rdev *r);
static void rdev_up(struct rdev *r);
static void rdev_on_auth(redisAsyncContext *ac, void *reply, void *priv);

/* ---- requests ------------------------------------------------------------- */

static struct rdev_req *rdev_req_get(struct rdev *r, rdev_cb cb, void *arg)
{
    struct rdev_req *q = r->freelist;
    if (q) {
        r->freelist = q->next;
        r->nfree--;
    } else if (!(q = malloc(sizeof *q))) {
        return NULL;
    }
    q->next = NULL;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->t0 = sb_now();
    sb_metric_inc(&rdev_mx_cmds);
    return q;
}

static void rdev_req_put(struct rdev *r, struct rdev_req *q)
{
    if (r->nfree >= RDEV_FREELIST_MAX) {
        free(q);
        return;
    }
    q->next = r->freelist;
    r->freelist = q;
    r->nfree++;
}

static void rdev_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rdev_req *q = priv;
    struct rdev *r = q->r;
    rdev_cb cb = q->cb;
    void *arg = q->arg;
    r->pending--;
    sb_metric_dec(&rdev_mx_pending);
    if (!reply)
        sb_metric_inc(&rdev_mx_err_lost);
    else if (((redisReply *)reply)->type == REDIS_REPLY_ERROR)
        sb_metric_inc(&rdev_mx_err_reply);
    else
        sb_metric_observe(&rdev_mx_rtt, sb_now() - q->t0);
    r->since = ev_now(r->loop);
    rdev_req_put(r, q);
    if (cb)
        cb(reply, arg);
}

/* Answer NULL on the next loop iteration, never inside rdev_cmd: callers
 * often issue a command and then record state the callback relies on. */
static void rdev_fail_later(struct rdev *r, struct rdev_req *q)
{
    sb_metric_inc(&rdev_mx_err_down);
    if (r->failed_tail)
        r->failed_tail->next = q;
    else
        r->failed = q;
    r->failed_tail = q;
    if (!ev_is_active(&r->fail))
        ev_timer_start(r->loop, &r->fail);
}

static void rdev_fail_all(struct rdev *r)
{
    struct rdev_req *q = r->failed;
    r->failed = r->failed_tail = NULL;
    while (q) {
        struct rdev_req *next = q->next;
        rdev_cb cb = q->cb;
        void *arg = q->arg;
        rdev_req_put(r, q);
        if (cb)
            cb(NULL, arg);
        q = next;
    }
}

static void rdev_on_fail(struct ev_loop *loop, ev_timer *w, int revents)
{
    rdev_fail_all(w->data);
}

/* ---- connection ---------------------------------------------------------- */

static void rdev_log_state(struct rdev *r, int up, const char *why)
{
    if (r->logged_up == up)
        return;
    if (!up && r->logged_up == 1)
        sb_metric_inc(&rdev_mx_disconnects);
    r->logged_up = up;
    if (up)
        log_info("redis_connected", "host=%s port=%d", r->host, r->port);
    else
        log_error("redis_disconnected", "host=%s port=%d err=%s", r->host, r->port,
                  sb_log_q(why && *why ? why : "unknown"));
}

static void rdev_schedule(struct rdev *r)
{
    ev_timer_stop(r->loop, &r->retry);
    ev_timer_set(&r->retry, r->backoff, 0);
    ev_timer_start(r->loop, &r->retry);
    r->backoff = r->backoff * 2 > RDEV_BACKOFF_MAX ? RDEV_BACKOFF_MAX : r->backoff * 2;
}

static void rdev_on_connect(const redisAsyncContext *ac, int status)
{
    struct rdev *r = ac->data;
    if (r->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this returns, without onDisconnect. */
        r->ac = NULL;
        r->connected = 0;
        rdev_log_state(r, 0, ac->errstr);
        rdev_schedule(r);
        return;
    }
    if (r->password) {
        /* First command on the connection: everything after it runs as
         * that user; up (and on_up) only once Redis said OK. */
        r->since = ev_now(r->loop);
        int rc = r->user ? redisAsyncCommand(r->ac, rdev_on_auth, r, "AUTH %s %s", r->user,
                                             r->password)
                         : redisAsyncCommand(r->ac, rdev_on_auth, r, "AUTH %s", r->password);
        if (rc == REDIS_OK)
            return;
    }
    rdev_up(r);
}

/* A subscription's replies: the confirmation, then every message. Not
 * counted in `pending` (they never end), so the watchdog leaves them be. */
static void rdev_on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rdev *r = priv;
    redisReply *rep = reply;
    if (r->ac != ac || !rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (!strcmp(rep->element[0]->str, "subscribe")) {
        log_info("redis_subscribed", "channel=%s", r->sub_channel);
        r->sub_gen = r->gen;
        r->sub_cb(NULL, 0, r->sub_arg);
    } else if (!strcmp(rep->element[0]->str, "message") &&
               rep->element[2]->type == REDIS_REPLY_STRING) {
        r->sub_cb(rep->element[2]->str, rep->element[2]->len, r->sub_arg);
    }
}

static void rdev_resubscribe(struct rdev *r)
{
    if (r->sub_channel && r->ac &&
        redisAsyncCommand(r->ac, rdev_on_message, r, "SUBSCRIBE %s", r->sub_channel) != REDIS_OK)
        log_warn("redis_subscribe_failed", "channel=%s", r->sub_channel);
}

sb_rc rdev_subscribe(struct rdev *r, const char *channel, rdev_msg_cb cb, void *arg)
{
    if (r->sub_channel || !(r->sub_channel = strdup(channel)))
        return SB_ERROR;
    r->sub_cb = cb;
    r->sub_arg = arg;
    if (rdev_connected(r))
        rdev_resubscribe(r);
    return SB_OK;
}

int rdev_subscribed(const struct rdev *r)
{
    return r && r->sub_channel && rdev_connected(r) && r->gen && r->sub_gen == r->gen;
}

/* The connection is usable. */
static void rdev_up(struct rdev *r)
{
    r->connected = 1;
    r->gen++;
    rdev_resubscribe(r);
    r->auth_failed = 0;
    r->backoff = RDEV_BACKOFF_MIN;
    r->since = ev_now(r->loop);
    rdev_log_state(r, 1, NULL);
    if (r->on_up) {
        ev_timer_stop(r->loop, &r->up);
        ev_timer_set(&r->up, 0., 0.);
        ev_timer_start(r->loop, &r->up);
    }
}

/* AUTH answered. Refused: one log line (not one per retry), then the
 * connection is closed and retried with the usual back-off. */
static void rdev_on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rdev *r = priv;
    redisReply *rep = reply;
    if (r->ac != ac)
        return;
    if (rep && rep->type == REDIS_REPLY_STATUS) {
        rdev_up(r);
        return;
    }
    /* Once per process, not per connection (domains.c has its own). */
    if (!r->auth_failed && !rdev_auth_logged++)
        log_error("redis_auth_failed", "host=%s port=%d user=%s err=%s", r->host, r->port,
                  r->user ? r->user : "default", sb_log_q(rep && rep->str ? rep->str : "no reply"));
    r->auth_failed = 1;
    if (rep)
        redisAsyncDisconnect(ac);   /* onDisconnect schedules the retry */
}

static void rdev_on_up(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rdev *r = w->data;
    if (r->on_up && rdev_connected(r))
        r->on_up(r->on_up_arg);
}

void rdev_set_on_up(struct rdev *r, void (*cb)(void *arg), void *arg)
{
    r->on_up = cb;
    r->on_up_arg = arg;
    ev_init(&r->up, rdev_on_up);
    r->up.data = r;
}

static void rdev_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rdev *r = ac->data;
    if (r->ac != ac)    /* we dropped it ourselves (watchdog, free) */
        return;
    r->ac = NULL;
    r->connected = 0;
    rdev_log_state(r, 0, status == REDIS_OK ? "closed" : ac->errstr);
    rdev_schedule(r);
}

static void rdev_connect(struct rdev *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        rdev_log_state(r, 0, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        rdev_schedule(r);
        return;
    }
    ac->data = r;
    r->ac = ac;
    r->connected = 0;
    r->since = ev_now(r->loop);
    redisLibevAttach(r->loop, ac);
    redisAsyncSetConnectCallback(ac, rdev_on_connect);
    redisAsyncSetDisconnectCallback(ac, rdev_on_disconnect);
}

static void rdev_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rdev *r = w->data;
    if (!r->ac)
        rdev_connect(r);
}

/* Drop the connection now; hiredis answers every outstanding command NULL. */
static void rdev_drop(struct rdev *r, const char *why)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->connected = 0;
    log_warn("redis_stalled", "host=%s port=%d what=%s pending=%ld", r->host, r->port, why, r->pending);
    rdev_log_state(r, 0, why);
    redisAsyncFree(ac);
    rdev_schedule(r);
}

static void rdev_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rdev *r = w->data;
    if (!r->ac || ev_now(loop) - r->since <= RDEV_STALL)
        return;
    if (!r->connected)
        rdev_drop(r, "connect timed out");
    else if (r->pending > 0)
        rdev_drop(r, "reply timed out");
}

/* ---- public ------------------------------------------------------------- */

struct rdev *rdev_new(struct ev_loop *loop, const char *host, int port)
{
    return rdev_new_auth(loop, host, port, NULL, NULL);
}

struct rdev *rdev_new_auth(struct ev_loop *loop, const char *host, int port, const char *user,
                           const char *password)
{
    struct rdev *r = calloc(1, sizeof *r);
    if (!r || !(r->host = strdup(host ? host : "127.0.0.1")) ||
        (password && *password && !(r->password = strdup(password))) ||
        (r->password && user && *user && !(r->user = strdup(user)))) {
        if (r) {
            free(r->host);
            free(r->password);
        }
        free(r);
        return NULL;
    }
    r->loop = loop;
    r->port = port;
    r->logged_up = -1;
    r->backoff = RDEV_BACKOFF_MIN;
    ev_init(&r->retry, rdev_on_retry);
    ev_timer_init(&r->tick, rdev_on_tick, 1.0, 1.0);
    ev_timer_init(&r->fail, rdev_on_fail, 0, 0);
    r->retry.data = r->tick.data = r->fail.data = r;
    ev_timer_start(loop, &r->tick);
    rdev_connect(r);
    return r;
}

void rdev_free(struct rdev *r)
{
    if (!r)
        return;
    ev_timer_stop(r->loop, &r->retry);
    ev_timer_stop(r->loop, &r->tick);
    ev_timer_stop(r->loop, &r->fail);
    if (r->on_up)
        ev_timer_stop(r->loop, &r->up);
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (ac)
        redisAsyncFree(ac);    /* outstanding callbacks get NULL now */
    rdev_fail_all(r);
    while (r->freelist) {
        struct rdev_req *q = r->freelist;
        r->freelist = q->next;
        free(q);
    }
    free(r->host);
    free(r->user);
    free(r->sub_channel);
    if (r->password) {
        memset(r->password, 0, strlen(r->password));
        free(r->password);
    }
    free(r);
}

/* The cluster's Redis from the config: redis_host, redis_port, redis_user,
 * redis_password(_file). redis_tls: hiredis 0.14 (Debian 12) has no TLS,
 * so a TLS Redis is reached through a local TLS tunnel (README). */
struct rdev *rdev_from_config(struct ev_loop *loop)
{
    char pw[1024];
    if (sb_config_bool("redis_tls", 0)) {
        log_error("redis_tls_unavailable", "why=\"Debian 12's hiredis 0.14 has no TLS\" "
                  "fix=\"point redis_host/redis_port at a local stunnel client (README)\"");
        return NULL;
    }
    if (sb_config_secret("redis_password", pw, sizeof pw) == SB_ERROR)
        return NULL;
    struct rdev *r = rdev_new_auth(loop, sb_config_str("redis_host", "127.0.0.1"),
                                   (int)sb_config_int("redis_port", 6379),
                                   sb_config_str("redis_user", NULL), pw);
    memset(pw, 0, sizeof pw);
    return r;
}

int rdev_connected(const struct rdev *r)
{
    return r && r->ac && r->connected;
}

long rdev_pending(const struct rdev *r)
{
    return r ? r->pending : 0;
}

int rdev_stalled(const struct rdev *r, double secs)
{
    return r && r->pending > 0 && ev_now(r->loop) - r->since > secs;
}

/* Usable context, or NULL: down, or being torn down by hiredis. */
static redisAsyncContext *rdev_ctx(struct rdev *r)
{
    if (!r->ac || (r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)))
        return NULL;
    return r->ac;
}

static sb_rc rdev_issued(struct rdev *r, struct rdev_req *q, int rc)
{
    if (rc != REDIS_OK) {    /* bad format: hiredis will not call back */
        rdev_req_put(r, q);
        return SB_ERROR;
    }
    sb_metric_inc(&rdev_mx_pending);
    if (r->pending++ == 0)
        r->since = ev_now(r->loop);
    return SB_OK;
}

sb_rc rdev_cmd(struct rdev *r, rdev_cb cb, void *arg, const char *fmt, ...)
{
    struct rdev_req *q = rdev_req_get(r, cb, arg);
    if (!q)
        return SB_ERROR;
    redisAsyncContext *ac = rdev_ctx(r);
    if (!ac) {
        rdev_fail_later(r, q);
        return SB_OK;
    }
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(ac, rdev_on_reply, q, fmt, ap);
    va_end(ap);
    return rdev_issued(r, q, rc);
}

sb_rc rdev_cmdargv(struct rdev *r, rdev_cb cb, void *arg, int argc,
                   const char **argv, const size_t *argvlen)
{
    struct rdev_req *q = rdev_req_get(r, cb, arg);
    if (!q)
        return SB_ERROR;
    redisAsyncContext *ac = rdev_ctx(r);
    if (!ac) {
        rdev_fail_later(r, q);
        return SB_OK;
    }
    return rdev_issued(r, q, redisAsyncCommandArgv(ac, rdev_on_reply, q, argc, argv, argvlen));
}
