/* main.c — sb-router: one ROUTER socket on the libev loop. Every message is
 * [identity][header][body]… — one or more envelopes, batched by the sender;
 * the hot path peeks at each header (kind, route, key) and moves the frames
 * on unchanged. Only HELLO, ADMIN and bounces decode or build headers.
 * Decisions live in router.c.
 *
 * Sending is batched too: envelopes are queued per destination (the frames
 * moved, not copied) and each queue leaves as one ZeroMQ message after the
 * drain and before the loop blocks, so a busy router hands libzmq's I/O
 * thread one message per destination per wake-up instead of one per
 * envelope. A destination found gone at that point (EHOSTUNREACH) gets
 * its envelopes bounced: it is only declared dead when its lease ends.
 *
 * Membership is not this router's own: every HELLO a component sends (to
 * every router) renews its lease in Redis (`SET lease:NAME <hello> PX`,
 * `HSET sb:members NAME "inc kind"`), and the registry routing uses is
 * rebuilt from Redis every poll (250 ms, at once after a HELLO that says
 * something new), so every router gives the same answer. A name whose
 * lease is gone is dead; the one router that wins `SET down:NAME:INC NX`
 * asks an sm to clean up after it. See router/README.md. */
#define _GNU_SOURCE
#include "route.h"
#include "config.h"
#include "curve.h"
#include "metrics.h"
#include "log.h"
#include "proc.h"
#include "rdev.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define RT_HWM 100000
#define RT_BATCH 1024          /* messages per drain before yielding to the loop */
#define RT_OUT_MAX 256         /* envelopes per outgoing message to one destination */
#define RT_PENDING_MAX 256     /* dead front-ends waiting for an sm to clean them */
#define RT_POLL_EVERY 0.25     /* seconds between membership reads from Redis */
#define RT_MEMBERS_MAX 1024    /* names read per poll */
#define RT_DOWN_CLAIM_MS 600000 /* how long a clean-up claim is kept */

struct rt_dead {
    char name[ENV_NAME_MAX + 1];
    char kind[RT_KIND_MAX + 1];
    char inc[RT_INC_MAX + 1];
};

/* What to do with a queued envelope whose destination turns out gone. */
enum rt_mode {
    RT_REROUTE,                     /* ROUTE_JID: route again (the dead one is removed) */
    RT_BOUNCE,                      /* ROUTE_INSTANCE: bounce unknown-instance */
    RT_DROP,                        /* fan-out copies: nobody to tell */
    RT_LOG                          /* built by the router: log it */
};

/* f = [sender identity][header][body], the shape rt_handle takes. */
struct rt_env {
    zmq_msg_t f[3];
    enum rt_mode mode;
    double t;                       /* queued (sb_now): sb_router_hop_seconds */
};

struct rt_outq {
    char to[RT_ID_MAX + 1];
    size_t tolen;
    struct rt_env *v;
    size_t n, cap;
};

struct rt_server {
    struct ev_loop *loop;
    const char *name;
    void *zctx, *sock;
    double lease;                   /* seconds a HELLO keeps its sender alive */
    struct rt_registry reg;         /* from Redis: what routing uses */
    struct rt_registry heard;       /* from HELLOs here: only to notice news */
    struct rdev *rd;
    struct sb_curve *curve;         /* bus keys; NULL with curve = off */
    char advertise[RT_DIRECT_MAX + 1];  /* the endpoint components use, or "" */
    char inc[RT_INC_MAX + 1];
    double started;                 /* sb_now() at start: up_s in the lease */
    double store_up_since;          /* Redis (re)connected; 0 = down */
    int polling, poll_again;
    ev_timer poll;
    ev_io io;
    ev_prepare prepare;
    ev_check check;
    ev_idle idle;
    ev_timer sweep;
    struct env_hdr in, out;         /* scratch for the slow paths */
    uint8_t enc[ENV_HDR_MAX];
    struct sb_buf body;
    struct sb_buf lease_val;
    struct rt_dead pending[RT_PENDING_MAX];
    size_t npending;
    unsigned long dropped_full;     /* sends refused by a full peer queue */
    unsigned long unsent;           /* own controls to an instance not connected here */
    int fired;                      /* the fd fired: drain in the check */
    int dirty;                      /* zmq calls since the socket was seen empty */
    unsigned long bad_in;           /* garbage envelopes since the last sweep */
    struct rt_addrs addrs;          /* member name → the routing id it speaks from */
    struct rt_outq *q;              /* one per destination seen; reused */
    size_t nq, capq;
    int queued;                     /* some queue holds envelopes */
};

static void rt_handle(struct rt_server *s, zmq_msg_t *f);
static void rt_bounce(struct rt_server *s, zmq_msg_t *id, zmq_msg_t *hdr,
                      zmq_msg_t *body, const char *reason);
static void rt_members_broadcast(struct rt_server *s);
static const char *rt_id_str(zmq_msg_t *id);

/* A peer sending garbage must not flood the log: the first one of each
 * sweep period is logged in full, the rest are counted (rt_on_sweep). */
static int rt_bad_first(struct rt_server *s)
{
    return s->bad_in++ == 0;
}

/* ---- metrics (common/metrics.h) ------------------------------------------ */

#define RT_MX_IN(var, k) SB_COUNTER(var, "sb_router_envelopes_in_total", "kind=\"" k "\"", \
                                    "Envelopes received, by kind (bad: unreadable header)")
RT_MX_IN(rt_mx_in_stanza, "stanza")
RT_MX_IN(rt_mx_in_control, "control")
RT_MX_IN(rt_mx_in_hello, "hello")
RT_MX_IN(rt_mx_in_admin, "admin")
RT_MX_IN(rt_mx_in_bounce, "bounce")
RT_MX_IN(rt_mx_in_bad, "bad")
SB_COUNTER(rt_mx_out, "sb_router_envelopes_routed_total", "",
           "Envelopes handed to ZeroMQ for their destination (bounces included)")
SB_COUNTER(rt_mx_dropped, "sb_router_envelopes_dropped_total", "",
           "Envelopes dropped because the destination's queue was full")
#define RT_MX_BOUNCE(var, r) SB_COUNTER(var, "sb_router_bounces_total", "reason=\"" r "\"", \
                                        "Envelopes bounced to their sender, by reason")
RT_MX_BOUNCE(rt_mx_b_nosm, "no-sm")
RT_MX_BOUNCE(rt_mx_b_remote, "remote-domain")
RT_MX_BOUNCE(rt_mx_b_unknown, "unknown-instance")
RT_MX_BOUNCE(rt_mx_b_unreach, "unreachable")
RT_MX_BOUNCE(rt_mx_b_member, "not-a-member")
RT_MX_BOUNCE(rt_mx_b_bad, "bad-envelope")
RT_MX_BOUNCE(rt_mx_b_other, "other")
SB_HISTOGRAM(rt_mx_hop, "sb_router_hop_seconds", "",
             "Time an envelope spends in the router: queued for its destination to sent")
static const struct rt_server *rt_mx_server;
static double rt_mx_instances(void)
{
    return rt_mx_server ? (double)rt_mx_server->reg.n : 0;
}
SB_GAUGE_FN(rt_mx_members, "sb_router_members", "",
            "Live instances in the registry (from the leases in Redis)", rt_mx_instances)

static struct sb_metric *rt_mx_in_of(uint8_t kind)
{
    switch (kind) {
    case ENV_STANZA: return &rt_mx_in_stanza;
    case ENV_CONTROL: return &rt_mx_in_control;
    case ENV_HELLO: return &rt_mx_in_hello;
    case ENV_ADMIN: return &rt_mx_in_admin;
    case ENV_BOUNCE: return &rt_mx_in_bounce;
    default: return &rt_mx_in_bad;
    }
}

static struct sb_metric *rt_mx_bounce_of(const char *reason)
{
    static const struct { const char *r; struct sb_metric *m; } t[] = {
        {"no-sm", &rt_mx_b_nosm}, {"remote-domain", &rt_mx_b_remote},
        {"unknown-instance", &rt_mx_b_unknown}, {"unreachable", &rt_mx_b_unreach},
        {"not-a-member", &rt_mx_b_member}, {"bad-envelope", &rt_mx_b_bad},
    };
    for (size_t i = 0; i < SB_ARRAY_LEN(t); i++)
        if (strcmp(reason, t[i].r) == 0)
            return t[i].m;
    return &rt_mx_b_other;
}

/* ---- sending ----------------------------------------------------------- */

static struct rt_outq *rt_outq(struct rt_server *s, const char *to, size_t tolen)
{
    for (size_t i = 0; i < s->nq; i++)
        if (s->q[i].tolen == tolen && memcmp(s->q[i].to, to, tolen) == 0)
            return &s->q[i];
    if (s->nq == s->capq) {
        size_t cap = s->capq ? 2 * s->capq : 16;
        struct rt_outq *q = realloc(s->q, cap * sizeof *q);
        if (!q)
            return NULL;
        s->q = q;
        s->capq = cap;
    }
    struct rt_outq *q = &s->q[s->nq++];
    memset(q, 0, sizeof *q);
    memcpy(q->to, to, tolen);
    q->tolen = tolen;
    return q;
}

static void rt_env_close(struct rt_env *e)
{
    for (int i = 0; i < 3; i++)
        zmq_msg_close(&e->f[i]);
}

/* The destination refused the message's first frame: nothing was queued
 * and the envelopes are still ours. Gone (EHOSTUNREACH): not connected to
 * this router (it died, or its connection is being re-made). It stays a
 * member until its lease ends — another router may still reach it, and a
 * user's sm must not change while its lease holds — so each envelope is
 * bounced to its sender, who reports the error. Full (EAGAIN): dropped and
 * counted. */
static void rt_refused(struct rt_server *s, const char *to, size_t tolen,
                       struct rt_env *v, size_t n, int err)
{
    if (err == EAGAIN) {
        s->dropped_full += n;
        sb_metric_add(&rt_mx_dropped, (double)n);
    }
    for (size_t i = 0; i < n; i++) {
        struct rt_env *e = &v[i];
        if (err == EHOSTUNREACH && (e->mode == RT_REROUTE || e->mode == RT_BOUNCE))
            rt_bounce(s, &e->f[0], &e->f[1], &e->f[2],
                      e->mode == RT_REROUTE ? "unreachable" : "unknown-instance");
        else if (e->mode == RT_LOG)
            s->unsent++;            /* e.g. members for one not connected here: sweep logs */
        rt_env_close(e);
    }
}

/* Send one destination's queue as [to][h1][b1][h2][b2]…. */
static void rt_flush_one(struct rt_server *s, struct rt_outq *q)
{
    size_t n = q->n;
    if (zmq_send(s->sock, q->to, q->tolen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int err = errno;
        /* Take the envelopes out first: handling them queues more. */
        struct rt_env *v = q->v;
        char to[RT_ID_MAX + 1];
        size_t tolen = q->tolen;
        memcpy(to, q->to, tolen);
        q->v = NULL;
        q->n = q->cap = 0;
        rt_refused(s, to, tolen, v, n, err);
        free(v);
        return;
    }
    double now = sb_now();
    for (size_t i = 0; i < n; i++) {
        struct rt_env *e = &q->v[i];
        sb_metric_inc(&rt_mx_out);
        sb_metric_observe(&rt_mx_hop, now - e->t);
        zmq_msg_send(&e->f[1], s->sock, ZMQ_SNDMORE);
        zmq_msg_send(&e->f[2], s->sock, i + 1 < n ? ZMQ_SNDMORE : 0);
        rt_env_close(e);
    }
    q->n = 0;
}

/* Send every queue; refused envelopes routed again may fill others. */
static void rt_flush(struct rt_server *s)
{
    while (s->queued) {
        s->queued = 0;
        for (size_t i = 0; i < s->nq; i++)
            if (s->q[i].n)
                rt_flush_one(s, &s->q[i]);
    }
    s->dirty = 1;                   /* sent: ask ZMQ_EVENTS before blocking */
}

/* Queue [hdr][body] for `to`, moving both; id (may be NULL) is the original
 * sender, kept for a bounce or a new route if `to` is gone. Only an
 * impossible id fails at once (EHOSTUNREACH); the caller still owns all. */
static int rt_send_msgs(struct rt_server *s, const char *to, size_t tolen, zmq_msg_t *id,
                        zmq_msg_t *hdr, zmq_msg_t *body, enum rt_mode mode)
{
    to = rt_addrs_id(&s->addrs, to, tolen, &tolen);   /* a member's current connection */
    if (tolen == 0 || tolen > RT_ID_MAX) {
        errno = EHOSTUNREACH;
        return -1;
    }
    struct rt_outq *q = rt_outq(s, to, tolen);
    if (q && q->n == RT_OUT_MAX) {
        rt_flush_one(s, q);         /* a refusal may queue elsewhere: s->q can move */
        q = rt_outq(s, to, tolen);
    }
    if (q && q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 32;
        struct rt_env *v = realloc(q->v, cap * sizeof *v);
        if (v) {
            q->v = v;
            q->cap = cap;
        }
    }
    if (!q || q->n == q->cap) {
        log_error("queue_failed", "err=nomem");
        errno = ENOMEM;
        return -1;
    }
    struct rt_env *e = &q->v[q->n++];
    zmq_msg_init(&e->f[0]);
    if (id)
        zmq_msg_copy(&e->f[0], id);
    zmq_msg_init(&e->f[1]);
    zmq_msg_init(&e->f[2]);
    zmq_msg_move(&e->f[1], hdr);
    zmq_msg_move(&e->f[2], body);
    e->mode = mode;
    e->t = sb_now();
    s->queued = 1;
    return 0;
}

/* Send a header the router built itself. */
static int rt_send_new(struct rt_server *s, const char *to, size_t tolen,
                       const struct env_hdr *h, const char *body, size_t len)
{
    long n = env_encode(h, s->enc, sizeof s->enc);
    if (n < 0) {
        log_error("encode_failed", "kind=%s", env_kind_name(h->kind));
        return -1;
    }
    zmq_msg_t hm, bm;
    if (zmq_msg_init_size(&hm, (size_t)n) != 0)
        return -1;
    if (zmq_msg_init_size(&bm, len) != 0) {
        zmq_msg_close(&hm);
        return -1;
    }
    memcpy(zmq_msg_data(&hm), s->enc, (size_t)n);
    if (len)
        memcpy(zmq_msg_data(&bm), body, len);
    int rc = rt_send_msgs(s, to, tolen, NULL, &hm, &bm, RT_LOG);
    zmq_msg_close(&hm);
    zmq_msg_close(&bm);
    return rc;
}

static void rt_copy_str(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void rt_control(struct rt_server *s, const char *to, const char *op,
                       const char *aux, const char *body, size_t len)
{
    struct env_hdr *h = &s->out;
    env_init(h, ENV_CONTROL, ENV_ROUTE_INSTANCE);
    h->flags = ENV_F_ROUTER;        /* members, instance-down…: only a router's count */
    rt_copy_str(h->key, sizeof h->key, to, strlen(to));
    rt_copy_str(h->sender, sizeof h->sender, s->name, strlen(s->name));
    rt_copy_str(h->op, sizeof h->op, op, strlen(op));
    rt_copy_str(h->aux, sizeof h->aux, aux, strlen(aux));
    if (rt_send_new(s, to, strlen(to), h, body, len) != 0)
        log_warn("control_not_sent", "op=%s to=%s err=%s", op, to, sb_log_q(zmq_strerror(errno)));
}

/* ---- bounces ------------------------------------------------------------ */

/* Return the body to its sender with the reason in op and the original key
 * in aux. A BOUNCE is never bounced: that could ping-pong forever. */
static void rt_bounce(struct rt_server *s, zmq_msg_t *id, zmq_msg_t *hdr,
                      zmq_msg_t *body, const char *reason)
{
    struct env_hdr *o = &s->in, *b = &s->out;
    sb_metric_inc(rt_mx_bounce_of(reason));
    int ok = env_decode(o, zmq_msg_data(hdr), zmq_msg_size(hdr)) == SB_OK;
    if (ok && o->kind == ENV_BOUNCE) {
        log_warn("bounce_dropped", "reason=%s key=%s", reason, sb_log_q(o->key));
        return;
    }
    env_init(b, ENV_BOUNCE, ENV_ROUTE_INSTANCE);
    size_t idn = rt_id_name_len(zmq_msg_data(id), zmq_msg_size(id));
    rt_copy_str(b->key, ENV_NAME_MAX + 1, zmq_msg_data(id), idn);
    if (strlen(b->key) != idn)
        b->key[0] = '\0';    /* binary identity: the frame still addresses it */
    rt_copy_str(b->sender, sizeof b->sender, s->name, strlen(s->name));
    rt_copy_str(b->op, sizeof b->op, reason, strlen(reason));
    if (ok) {
        strcpy(b->sid, o->sid);
        strcpy(b->aux, o->key);
        b->flags = o->kind;
    }
    if (strcmp(reason, "bad-envelope") != 0 || rt_bad_first(s))
        log_info("bounce", "reason=%s to=%s kind=%s key=%s", reason, sb_log_q(b->key),
                 ok ? env_kind_name(o->kind) : "?", sb_log_q(ok ? o->key : ""));
    long n = env_encode(b, s->enc, sizeof s->enc);
    zmq_msg_t nh;
    if (n < 0 || zmq_msg_init_size(&nh, (size_t)n) != 0)
        return;
    memcpy(zmq_msg_data(&nh), s->enc, (size_t)n);
    if (rt_send_msgs(s, zmq_msg_data(id), zmq_msg_size(id), NULL, &nh, body, RT_DROP) != 0)
        log_warn("bounce_not_sent", "reason=%s to=%s err=%s", reason, sb_log_q(b->key),
                 sb_log_q(zmq_strerror(errno)));
    zmq_msg_close(&nh);
}

/* ---- membership ---------------------------------------------------------- */

static void rt_members_broadcast(struct rt_server *s)
{
    if (rt_members_body(&s->reg, &s->body) != SB_OK)
        return;
    for (size_t i = 0; i < s->reg.n; i++)
        if (strcmp(s->reg.v[i].kind, "router") != 0)
            rt_control(s, s->reg.v[i].name, "members", "", s->body.data, s->body.len);
}

/* Ask one sm (chosen by hashing the dead name, so every router agrees) to
 * clean up what the dead incarnation held. With no sm alive, remember it. */
static void rt_instance_down(struct rt_server *s, const char *name, const char *kind,
                             const char *inc)
{
    if (!strcmp(kind, "router"))
        return;                     /* a router holds no sessions */
    const struct rt_inst *sm = rt_pick(&s->reg, "sm", name, strlen(name));
    if (!sm) {
        if (strcmp(kind, "sm") == 0)
            return;
        if (s->npending == RT_PENDING_MAX) {
            log_error("instance_down_lost", "name=%s kind=%s reason=pending_full", name, kind);
            return;
        }
        struct rt_dead *d = &s->pending[s->npending++];
        snprintf(d->name, sizeof d->name, "%s", name);
        snprintf(d->kind, sizeof d->kind, "%s", kind);
        snprintf(d->inc, sizeof d->inc, "%s", inc);
        log_warn("instance_down_pending", "name=%s kind=%s reason=no-sm", name, kind);
        return;
    }
    char body[RT_KIND_MAX + RT_INC_MAX + 16];
    int n = snprintf(body, sizeof body, "kind=%s inc=%s", kind, inc);
    rt_control(s, sm->name, "instance-down", name, body, (size_t)n);
    log_info("instance_down_sent", "name=%s kind=%s inc=%s to=%s", name, kind, inc, sm->name);
}

static void rt_flush_pending(struct rt_server *s)
{
    size_t n = s->npending;
    s->npending = 0;
    for (size_t i = 0; i < n; i++)
        rt_instance_down(s, s->pending[i].name, s->pending[i].kind, s->pending[i].inc);
}

/* One dead incarnation is cleaned up once cluster-wide: whichever router
 * sets down:NAME:INC first sends instance-down; the others see nil. */
struct rt_claim {
    struct rt_server *s;
    struct rt_dead d;
};

static void rt_on_claim(redisReply *r, void *arg)
{
    struct rt_claim *c = arg;
    if (r && r->type == REDIS_REPLY_STATUS)
        rt_instance_down(c->s, c->d.name, c->d.kind, c->d.inc);
    else if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("instance_down_claim_failed", "name=%s inc=%s err=%s", c->d.name, c->d.inc,
                 sb_log_q(r ? r->str : "no connection"));
    free(c);
}

static void rt_claim_down(struct rt_server *s, const char *name, const char *kind, const char *inc)
{
    struct rt_claim *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->s = s;
    snprintf(c->d.name, sizeof c->d.name, "%s", name);
    snprintf(c->d.kind, sizeof c->d.kind, "%s", kind[0] ? kind : "?");
    snprintf(c->d.inc, sizeof c->d.inc, "%s", inc[0] ? inc : "-");
    if (rdev_cmd(s->rd, rt_on_claim, c, "SET down:%s:%s %s NX PX %d", c->d.name, c->d.inc,
                 s->name, RT_DOWN_CLAIM_MS) != SB_OK)
        free(c);
}

static void rt_on_redis_ok(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("redis_failed", "what=%s err=%s", (const char *)arg,
                 sb_log_q(r ? r->str : "no connection"));
}

/* Two processes started with one name overwrite each other's lease on
 * every HELLO, so the incarnation flips back and forth. That is a
 * configuration error, not a stream of restarts: cleaning up "the old
 * process" each time would wipe live sessions. */
static int rt_name_flapping(struct rt_server *s, struct rt_inst *in, long old_pid)
{
    double now = sb_now();
    int flapping = in->restarted_at > 0 && now - in->restarted_at < 2 * s->lease;
    in->restarted_at = now;
    if (flapping)
        log_error("duplicate_instance_name", "name=%s pid=%ld other_pid=%ld", in->name,
                  in->pid, old_pid);
    return flapping;
}

/* A live lease read from Redis: the registry takes it as a HELLO. Returns
 * 1 when what links route by changed. */
static int rt_lease_live(struct rt_server *s, const char *name, const char *body, size_t len)
{
    char old_kind[RT_KIND_MAX + 1] = "", old_inc[RT_INC_MAX + 1] = "";
    size_t nlen = strlen(name);
    const struct rt_inst *prev = rt_reg_find(&s->reg, name, nlen);
    long old_pid = prev ? prev->pid : 0;
    if (prev)
        strcpy(old_inc, prev->inc);
    s->reg.remote_hello = 0;
    int ch = rt_reg_hello(&s->reg, name, nlen, body, len, sb_now(), old_kind);
    if (ch <= 0) {
        if (ch < 0)
            log_warn("lease_rejected", "name=%s body_bytes=%zu", sb_log_q(name), len);
        return 0;
    }
    struct rt_inst *in = rt_reg_find(&s->reg, name, nlen);
    if ((ch & RT_CH_RESTART) && rt_name_flapping(s, in, old_pid))
        ch &= ~RT_CH_RESTART;
    if (ch & RT_CH_NEW)
        log_info("instance_up", "name=%s kind=%s pid=%ld inc=%s domains=%s sessions=%ld",
                 in->name, in->kind, in->pid, in->inc, sb_log_q(in->domains), in->sessions);
    else if (ch & (RT_CH_RESTART | RT_CH_KIND))
        log_warn("instance_restarted", "name=%s kind=%s old_kind=%s pid=%ld old_pid=%ld inc=%s",
                 in->name, in->kind, old_kind, in->pid, old_pid, in->inc);
    else if (ch & RT_CH_DOMAINS)
        log_info("instance_domains", "name=%s domains=%s", in->name, sb_log_q(in->domains));
    if (ch & RT_CH_DIRECT)
        log_info("instance_direct", "name=%s direct=%s", in->name, sb_log_q(in->direct));
    /* A quick restart kept the lease alive, but the old sessions are gone. */
    if (ch & RT_CH_RESTART)
        rt_claim_down(s, name, old_kind, old_inc);
    int sm_routing = strcmp(in->kind, "sm") == 0 && (ch & (RT_CH_DOMAINS | RT_CH_DIRECT));
    return (ch & (RT_CH_NEW | RT_CH_KIND)) || sm_routing;
}

/* A member whose lease is gone: dead. Nobody is judged while Redis has
 * been back for less than a lease (a restarted Redis lost every lease;
 * the components write theirs again within a heartbeat). */
static int rt_lease_gone(struct rt_server *s, const char *name, const char *incv)
{
    char inc[RT_INC_MAX + 1] = "", kind[RT_KIND_MAX + 1] = "";
    sscanf(incv, "%16s %15s", inc, kind);
    struct rt_inst *in = rt_reg_find(&s->reg, name, strlen(name));
    if (in) {
        log_warn("instance_dead", "name=%s kind=%s pid=%ld inc=%s silent_ms=%ld", in->name,
                 in->kind, in->pid, in->inc, (long)((sb_now() - in->last_hello) * 1000));
        rt_reg_remove(&s->reg, (size_t)(in - s->reg.v));
    }
    rt_claim_down(s, name, kind, inc);
    /* Forget the name unless it came back meanwhile (another incarnation). */
    rdev_cmd(s->rd, rt_on_redis_ok, "members_del",
             "EVAL %s 1 sb:members %s %s",
             "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then "
             "return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0",
             name, incv);
    return in != NULL;
}

struct rt_poll {
    struct rt_server *s;
    size_t n;
    char **names, **incs;
};

static void rt_poll_free(struct rt_poll *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->names[i]);
        free(p->incs[i]);
    }
    free(p->names);
    free(p->incs);
    free(p);
}

static void rt_poll_start(struct rt_server *s);

static void rt_poll_done(struct rt_server *s)
{
    s->polling = 0;
    if (s->poll_again) {
        s->poll_again = 0;
        rt_poll_start(s);
    }
}

/* MGET lease:… answered: live ones update the registry, gone ones die,
 * registry entries no longer listed at all were cleaned up elsewhere. */
static void rt_on_leases(redisReply *r, void *arg)
{
    struct rt_poll *p = arg;
    struct rt_server *s = p->s;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != p->n) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_warn("members_read_failed", "err=%s", sb_log_q(r->str));
        rt_poll_free(p);
        rt_poll_done(s);
        return;
    }
    int changed = 0, judge = s->store_up_since > 0 && sb_now() - s->store_up_since >= s->lease;
    for (size_t i = 0; i < p->n; i++) {
        redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_STRING)
            changed |= rt_lease_live(s, p->names[i], e->str, e->len);
        else if (judge)
            changed |= rt_lease_gone(s, p->names[i], p->incs[i]);
    }
    for (size_t i = 0; i < s->reg.n;) {
        size_t j = 0;
        while (j < p->n && strcmp(p->names[j], s->reg.v[i].name))
            j++;
        if (j < p->n || !judge) {
            i++;
            continue;
        }
        log_warn("instance_dead", "name=%s kind=%s pid=%ld inc=%s why=cleaned-up-elsewhere",
                 s->reg.v[i].name, s->reg.v[i].kind, s->reg.v[i].pid, s->reg.v[i].inc);
        rt_reg_remove(&s->reg, i);
        changed = 1;
    }
    if (changed) {
        rt_members_broadcast(s);
        if (s->npending && rt_reg_count_kind(&s->reg, "sm"))
            rt_flush_pending(s);
    }
    rt_poll_free(p);
    rt_poll_done(s);
}

/* HGETALL sb:members answered: read every lease in one MGET. */
static void rt_on_members(redisReply *r, void *arg)
{
    struct rt_server *s = arg;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r && r->type == REDIS_REPLY_ERROR)
            log_warn("members_read_failed", "err=%s", sb_log_q(r->str));
        rt_poll_done(s);
        return;
    }
    size_t n = r->elements / 2;
    if (n > RT_MEMBERS_MAX)
        n = RT_MEMBERS_MAX;
    struct rt_poll *p = calloc(1, sizeof *p);
    const char **argv = calloc(n + 1, sizeof *argv);
    size_t *argl = calloc(n + 1, sizeof *argl);
    if (p) {
        p->s = s;
        p->names = calloc(n + 1, sizeof *p->names);
        p->incs = calloc(n + 1, sizeof *p->incs);
    }
    if (!p || !argv || !argl || !p->names || !p->incs) {
        free(argv);
        free(argl);
        if (p)
            rt_poll_free(p);
        rt_poll_done(s);
        return;
    }
    argv[0] = "MGET";
    argl[0] = 4;
    for (size_t i = 0; i < n; i++) {
        redisReply *k = r->element[2 * i], *v = r->element[2 * i + 1];
        char *key = malloc(k->len + 7);
        p->names[p->n] = strndup(k->str, k->len);
        p->incs[p->n] = strndup(v->str, v->len);
        if (!key || !p->names[p->n] || !p->incs[p->n]) {
            free(key);
            free(p->names[p->n]);
            free(p->incs[p->n]);
            continue;
        }
        memcpy(key, "lease:", 6);
        memcpy(key + 6, k->str, k->len + 1);
        argv[p->n + 1] = key;
        argl[p->n + 1] = k->len + 6;
        p->n++;
    }
    sb_rc rc = SB_ERROR;
    if (p->n)
        rc = rdev_cmdargv(s->rd, rt_on_leases, p, (int)p->n + 1, argv, argl);
    for (size_t i = 1; i <= p->n; i++)
        free((char *)argv[i]);
    free(argv);
    free(argl);
    if (rc != SB_OK) {
        if (!p->n) {            /* nobody listed: whatever we knew is gone */
            redisReply none = {.type = REDIS_REPLY_ARRAY};
            rt_on_leases(&none, p);
            return;
        }
        rt_poll_free(p);
        rt_poll_done(s);
    }
}

static void rt_poll_start(struct rt_server *s)
{
    if (s->polling) {
        s->poll_again = 1;
        return;
    }
    if (!rdev_connected(s->rd))
        return;
    s->polling = 1;
    if (rdev_cmd(s->rd, rt_on_members, s, "HGETALL sb:members") != SB_OK)
        s->polling = 0;
}

static void rt_on_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
    rt_poll_start(w->data);
}

static void rt_on_store_up(void *arg)
{
    struct rt_server *s = arg;
    s->store_up_since = sb_now();
    log_info("store_up", "grace_ms=%ld", (long)(s->lease * 1000));
    rt_poll_start(s);
}

/* The HELLO's lease is written: confirm it to its sender, who counts its
 * lease from when it sent that HELLO (so never later than Redis does). */
struct rt_renew {
    struct rt_server *s;
    char name[ENV_NAME_MAX + 1];
    char seq[24];
};

static void rt_ack(struct rt_server *s, const char *name, const char *seq, int ok)
{
    char body[64];
    int n = snprintf(body, sizeof body, "lease_ms=%ld store=%s", (long)(s->lease * 1000),
                     ok ? "ok" : "down");
    rt_control(s, name, "hello-ack", seq, body, (size_t)n);
}

static void rt_on_renewed(redisReply *r, void *arg)
{
    struct rt_renew *rn = arg;
    struct rt_server *s = rn->s;
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (!r)
        s->store_up_since = 0;      /* judge nobody until it is back for a lease */
    else if (ok && !s->store_up_since)
        s->store_up_since = sb_now();   /* answering again (it was only stalled) */
    if (rn->seq[0] != '-')          /* not acknowledged already (store stalled) */
        rt_ack(s, rn->name, rn->seq, ok);
    free(rn);
}

/* HELLO: [identity] says who, the body what (common/link.c). Renew the
 * sender's lease with the address it came from, and read the members at
 * once when it says something this router has not heard before. */
/* HELLO with bye=1: a process stopping cleanly gives its lease back, so
 * nobody waits for it to run out (its users move to another sm at once).
 * Every router hears it and drops the name the same way. */
static void rt_on_bye(struct rt_server *s, const char *name, const char *inc)
{
    struct rt_inst *in = rt_reg_find(&s->reg, name, strlen(name));
    if (!in || strcmp(in->inc, inc) != 0)
        return;
    char kind[RT_KIND_MAX + 1], incv[RT_INC_MAX + RT_KIND_MAX + 2], needle[RT_INC_MAX + 8];
    strcpy(kind, in->kind);
    log_warn("instance_gone", "name=%s kind=%s pid=%ld inc=%s why=left", name, kind, in->pid, inc);
    rt_reg_remove(&s->reg, (size_t)(in - s->reg.v));
    snprintf(incv, sizeof incv, "%s %s", inc, kind);
    snprintf(needle, sizeof needle, "inc=%s ", inc);
    rdev_cmd(s->rd, rt_on_redis_ok, "lease_del", "EVAL %s 1 lease:%s %s",
             "if string.find(redis.call('GET', KEYS[1]) or '', ARGV[1], 1, true) then "
             "return redis.call('DEL', KEYS[1]) end return 0", name, needle);
    rt_lease_gone(s, name, incv);
    rt_members_broadcast(s);
}

static void rt_on_hello(struct rt_server *s, zmq_msg_t *id, zmq_msg_t *body)
{
    const char *name = zmq_msg_data(id);
    size_t nlen = rt_id_name_len(name, zmq_msg_size(id)), blen = zmq_msg_size(body);
    const char *peer = zmq_msg_gets(body, "Peer-Address");
    s->heard.remote_hello = 0;
    int ch = rt_reg_hello(&s->heard, name, nlen, zmq_msg_data(body), blen, sb_now(), NULL);
    struct rt_inst *in = ch < 0 ? NULL : rt_reg_find(&s->heard, name, nlen);
    if (!in || !in->inc[0]) {
        if (rt_bad_first(s))
            log_warn("hello_rejected", "id_bytes=%zu body_bytes=%zu", nlen, blen);
        return;
    }
    /* A member speaks for its own name only: the key it joined with
     * (ZAP's User-Id) must be that name's. */
    const char *uid = s->curve ? zmq_msg_gets(body, "User-Id") : NULL;
    if (s->curve && (!uid || strcmp(uid, in->name) != 0)) {
        if (rt_bad_first(s))
            log_warn("hello_rejected", "name=%s key_of=%s why=name-not-its-key", in->name,
                     sb_log_q(uid ? uid : "-"));
        rt_reg_remove(&s->heard, (size_t)(in - s->heard.v));
        return;
    }
    const char *b = zmq_msg_data(body);
    if (memmem(b, blen, " bye=1", 6)) {
        char nm[ENV_NAME_MAX + 1], inc[RT_INC_MAX + 1];
        strcpy(nm, in->name);
        strcpy(inc, in->inc);
        rt_reg_remove(&s->heard, (size_t)(in - s->heard.v));
        rt_on_bye(s, nm, inc);
        return;
    }
    struct rt_renew *rn = calloc(1, sizeof *rn);
    if (!rn)
        return;
    rn->s = s;
    strcpy(rn->name, in->name);
    const char *seq = blen ? memmem(b, blen, "seq=", 4) : NULL;
    size_t sl = 0;
    if (seq) {
        seq += 4;
        while (seq + sl < b + blen && sl < sizeof rn->seq - 1 && seq[sl] >= '0' && seq[sl] <= '9')
            sl++;
        memcpy(rn->seq, seq, sl);
    }
    char incv[RT_INC_MAX + RT_KIND_MAX + 2];
    snprintf(incv, sizeof incv, "%s %s", in->inc, in->kind);
    sb_buf_reset(&s->lease_val);
    if (sb_buf_add(&s->lease_val, b, blen) != SB_OK ||
        sb_buf_printf(&s->lease_val, " addr=%s", peer ? peer : "") != SB_OK) {
        free(rn);
        return;
    }
    /* A store that owes replies for a third of a lease is as good as down
     * (frozen, overloaded): acknowledge now, as for a store that is down,
     * and judge nobody until it answers again. */
    if (rdev_connected(s->rd) && rdev_stalled(s->rd, s->lease / 3)) {
        if (s->store_up_since)
            log_warn("store_stalled", "pending=%ld", rdev_pending(s->rd));
        s->store_up_since = 0;
        rt_ack(s, rn->name, rn->seq, 0);
        rn->seq[0] = '-';
    }
    rdev_cmd(s->rd, rt_on_redis_ok, "members_add", "HSET sb:members %s %s", in->name, incv);
    if (rdev_cmd(s->rd, rt_on_renewed, rn, "SET lease:%s %b PX %ld", in->name,
                 s->lease_val.data, s->lease_val.len, (long)(s->lease * 1000)) != SB_OK)
        free(rn);
    /* A restarted member's first HELLO here: it gets the members at once.
     * The broadcast after the poll may have reached this router before the
     * component's connection did (another router wrote its lease first),
     * and then it would learn no sm's direct socket until the next change.
     * Only from a registry that already lists it: a router that has just
     * started must not hand out a membership it has not read yet. */
    if (ch > 0 && (ch & RT_CH_RESTART) && strcmp(in->kind, "router") != 0 &&
        rt_reg_find(&s->reg, in->name, strlen(in->name)) &&
        rt_members_body(&s->reg, &s->body) == SB_OK)
        rt_control(s, in->name, "members", "", s->body.data, s->body.len);
    if (ch > 0)
        rt_poll_start(s);
}

static void rt_on_admin(struct rt_server *s, zmq_msg_t *id, zmq_msg_t *hdr)
{
    struct env_hdr *h = &s->in;
    if (env_decode(h, zmq_msg_data(hdr), zmq_msg_size(hdr)) != SB_OK || strcmp(h->op, "status") != 0) {
        log_warn("admin_unknown", "op=%s", sb_log_q(h->op));
        return;
    }
    if (rt_status_body(&s->reg, sb_now(), &s->body) != SB_OK)
        return;
    struct env_hdr *r = &s->out;
    env_init(r, ENV_ADMIN, ENV_ROUTE_INSTANCE);
    rt_copy_str(r->key, ENV_NAME_MAX + 1, zmq_msg_data(id), zmq_msg_size(id));
    rt_copy_str(r->sender, sizeof r->sender, s->name, strlen(s->name));
    strcpy(r->op, "status");
    if (rt_send_new(s, zmq_msg_data(id), zmq_msg_size(id), r, s->body.data, s->body.len) != 0)
        log_warn("admin_reply_failed", "to=%s", sb_log_q(r->key));
}

/* ---- forwarding ---------------------------------------------------------- */

static void rt_fwd_jid(struct rt_server *s, zmq_msg_t *f, const char *key, size_t keylen)
{
    const char *reason = "no-sm";
    const struct rt_inst *from = rt_reg_find(&s->reg, zmq_msg_data(&f[0]),
                                             rt_id_name_len(zmq_msg_data(&f[0]), zmq_msg_size(&f[0])));
    int from_s2s = from && strcmp(from->kind, "s2s") == 0;
    const struct rt_inst *to = rt_route_jid(&s->reg, key, keylen, from_s2s, &reason);
    if (!to || rt_send_msgs(s, to->name, strlen(to->name), &f[0], &f[1], &f[2], RT_REROUTE) != 0)
        rt_bounce(s, &f[0], &f[1], &f[2], reason);
}

static void rt_fwd_instance(struct rt_server *s, zmq_msg_t *f, const char *key, size_t keylen)
{
    char to[RT_ID_MAX + 1];
    size_t n = keylen > RT_ID_MAX ? 0 : keylen;
    memcpy(to, key, n);    /* key points into f[1], which queuing moves away */
    if (rt_send_msgs(s, to, n, &f[0], &f[1], &f[2], RT_BOUNCE) != 0)
        rt_bounce(s, &f[0], &f[1], &f[2], "unknown-instance");
}

static void rt_fwd_kind(struct rt_server *s, zmq_msg_t *f, const char *key, size_t keylen)
{
    for (size_t i = 0; i < s->reg.n; i++) {
        const struct rt_inst *in = &s->reg.v[i];
        if (strlen(in->kind) != keylen || memcmp(in->kind, key, keylen) != 0)
            continue;
        zmq_msg_t h, b;    /* copies share the data: reference counted */
        zmq_msg_init(&h);
        zmq_msg_init(&b);
        zmq_msg_copy(&h, &f[1]);
        zmq_msg_copy(&b, &f[2]);
        rt_send_msgs(s, in->name, strlen(in->name), NULL, &h, &b, RT_DROP);
        zmq_msg_close(&h);
        zmq_msg_close(&b);
    }
}

static void rt_for_router(struct rt_server *s, zmq_msg_t *f, uint8_t kind)
{
    if (kind == ENV_HELLO)
        rt_on_hello(s, &f[0], &f[2]);
    else if (kind == ENV_ADMIN)
        rt_on_admin(s, &f[0], &f[1]);
    else
        log_warn("unexpected_for_router", "kind=%s", env_kind_name(kind));
}

/* Who an envelope is from is the connection's business, not the header's:
 * the routing id's NAME must be the name of the CURVE key it came with
 * (sbctl's ADMIN aside: one key, an id per run), the header's `sender`
 * must be that NAME on everything forwarded, and ENV_F_ROUTER (what a
 * router itself says: members, instance-down) is never forwarded. Anything
 * else is dropped with one `bus_forged` line per sweep period (a key
 * speaking under another name is told `not-a-member`). A message
 * that passes teaches which connection NAME is at. */
static int rt_from_ok(struct rt_server *s, zmq_msg_t *f, uint8_t kind, uint8_t route,
                      const char *key, size_t keylen)
{
    const char *id = zmq_msg_data(&f[0]), *why = NULL;
    size_t idlen = zmq_msg_size(&f[0]), nlen = rt_id_name_len(id, idlen);
    const char *uid = s->curve ? zmq_msg_gets(&f[1], "User-Id") : NULL;
    const uint8_t *h = zmq_msg_data(&f[1]);
    size_t hlen = zmq_msg_size(&f[1]), off = 6 + keylen;
    size_t slen = hlen >= off + 2 ? ((size_t)h[off] << 8 | h[off + 1]) : 0;
    if (!rt_id_speaks_for(uid, s->curve != NULL, id, idlen)) {
        if (kind != ENV_ADMIN)
            why = "name-not-its-key";
    } else {
        rt_addrs_learn(&s->addrs, id, idlen);
    }
    if (!why && route != ENV_ROUTE_ROUTER &&
        (hlen < off + 2 + slen || slen != nlen || memcmp(h + off + 2, id, nlen) != 0))
        why = "sender-not-its-name";
    if (!why && route != ENV_ROUTE_ROUTER && kind != ENV_BOUNCE && (h[3] & ENV_F_ROUTER))
        why = "router-flag";
    if (!why)
        return 1;
    if (!strcmp(why, "name-not-its-key"))
        rt_bounce(s, &f[0], &f[1], &f[2], "not-a-member");    /* to that very connection */
    if (rt_bad_first(s)) {
        char k[ENV_NAME_MAX + 1];
        rt_copy_str(k, sizeof k, key, keylen);
        log_warn("bus_forged", "why=%s from=%s key_of=%s kind=%s key=%s", why,
                 sb_log_q(rt_id_str(&f[0])), sb_log_q(uid ? uid : "-"), env_kind_name(kind),
                 sb_log_q(k));
    }
    return 0;
}

/* f = [identity][header][body]. */
static void rt_handle(struct rt_server *s, zmq_msg_t *f)
{
    uint8_t kind, route;
    const char *key;
    size_t keylen;
    if (env_peek(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &kind, &route, &key, &keylen) != SB_OK) {
        sb_metric_inc(&rt_mx_in_bad);
        rt_bounce(s, &f[0], &f[1], &f[2], "bad-envelope");
        return;
    }
    sb_metric_inc(rt_mx_in_of(kind));
    const char *id = zmq_msg_data(&f[0]);
    size_t nlen = rt_id_name_len(id, zmq_msg_size(&f[0]));
    if (!rt_from_ok(s, f, kind, route, key, keylen))
        return;
    /* Only members route (a HELLO makes one; sbctl's ADMIN needs none): a
     * key holder that never said HELLO under this name is told so. */
    if (route != ENV_ROUTE_ROUTER && kind != ENV_ADMIN && kind != ENV_BOUNCE &&
        !rt_reg_find(&s->heard, id, nlen) && !rt_reg_find(&s->reg, id, nlen)) {
        if (rt_bad_first(s))
            log_warn("not_a_member", "from=%s kind=%s", sb_log_q(rt_id_str(&f[0])),
                     env_kind_name(kind));
        rt_bounce(s, &f[0], &f[1], &f[2], "not-a-member");
        return;
    }
    switch (route) {
    case ENV_ROUTE_JID: rt_fwd_jid(s, f, key, keylen); break;
    case ENV_ROUTE_INSTANCE: rt_fwd_instance(s, f, key, keylen); break;
    case ENV_ROUTE_KIND: rt_fwd_kind(s, f, key, keylen); break;
    case ENV_ROUTE_ROUTER: rt_for_router(s, f, kind); break;
    }
}

/* ---- receiving ------------------------------------------------------------ */

/* A routing id for a log line (printable prefix only). */
static const char *rt_id_str(zmq_msg_t *id)
{
    static char buf[ENV_NAME_MAX + 1];
    size_t n = zmq_msg_size(id);
    const char *d = zmq_msg_data(id);
    size_t i = 0;
    for (; i < n && i < ENV_NAME_MAX && d[i] > ' ' && d[i] < 127; i++)
        buf[i] = d[i];
    buf[i] = '\0';
    return buf;
}

/* Receive one multipart message [identity]([header][body])… and handle
 * each envelope in order. Returns 0 when the socket is empty. */
static int rt_recv_one(struct rt_server *s)
{
    zmq_msg_t f[3];
    zmq_msg_init(&f[0]);
    if (zmq_msg_recv(&f[0], s->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f[0]);
        return 0;
    }
    int more = zmq_msg_more(&f[0]), n = 1, envs = 0;
    while (more) {
        zmq_msg_init(&f[n]);
        int rc;
        while ((rc = zmq_msg_recv(&f[n], s->sock, 0)) < 0 && errno == EINTR)
            ;                       /* the rest of an atomic message is there */
        if (rc < 0) {
            zmq_msg_close(&f[n]);
            break;
        }
        more = zmq_msg_more(&f[n]);
        if (++n < 3)
            continue;
        rt_handle(s, f);
        zmq_msg_close(&f[1]);
        zmq_msg_close(&f[2]);
        n = 1;
        envs++;
    }
    if (n > 1 || envs == 0) {
        if (rt_bad_first(s))
            log_warn("bad_frames", "frames=%s from=%s", n > 1 ? "odd" : "1",
                     sb_log_q(rt_id_str(&f[0])));
        if (n > 1)
            zmq_msg_close(&f[1]);
    }
    zmq_msg_close(&f[0]);
    return 1;
}

/* Each ZMQ_EVENTS query and each empty receive costs libzmq two system
 * calls (getpid, poll): the drain runs only when the fd fired or messages
 * were known to wait, and ends with the socket seen empty (which re-arms
 * the fd) unless a full batch stopped it. What it queued leaves at once. */
static void rt_drain(struct rt_server *s)
{
    s->fired = 0;
    s->dirty = 1;
    for (int i = 0; i < RT_BATCH; i++) {
        if (!rt_recv_one(s)) {
            s->dirty = 0;
            break;
        }
    }
    if (s->queued)
        rt_flush(s);
}

static int rt_readable(struct rt_server *s)
{
    int ev = 0;
    size_t sz = sizeof ev;
    return zmq_getsockopt(s->sock, ZMQ_EVENTS, &ev, &sz) == 0 && (ev & ZMQ_POLLIN);
}

static void rt_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct rt_server *s = w->data;
    s->fired = 1;
}

/* ZMQ_FD is edge-triggered: before blocking, ask ZMQ_EVENTS and keep the
 * loop spinning (idle watcher) while messages wait; the check drains. */
static void rt_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct rt_server *s = w->data;
    if (s->queued)
        rt_flush(s);                /* timers (sweep, members) queue too */
    if (!s->dirty)
        return;                     /* seen empty, nothing since: the fd is armed */
    if (rt_readable(s))
        ev_idle_start(loop, &s->idle);
    else
        s->dirty = 0;
}

static void rt_on_check(struct ev_loop *loop, ev_check *w, int revents)
{
    struct rt_server *s = w->data;
    int waiting = ev_is_active(&s->idle);
    ev_idle_stop(loop, &s->idle);
    if (s->fired || waiting)
        rt_drain(s);
}

static void rt_on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
}

/* ---- expiry -------------------------------------------------------------- */

/* Every second: this router's own lease (kind=router, direct = its
 * advertised endpoint), so components learn a router started later from
 * `members` and connect to it without a configuration change. */
static void rt_own_lease(struct rt_server *s)
{
    if (!s->advertise[0] || !rdev_connected(s->rd))
        return;
    char body[256], incv[RT_INC_MAX + 8];
    snprintf(body, sizeof body, "kind=router pid=%ld inc=%s domains= sessions=0 up_s=%.0f direct=%s",
             (long)getpid(), s->inc, sb_now() - s->started, s->advertise);
    snprintf(incv, sizeof incv, "%s router", s->inc);
    rdev_cmd(s->rd, rt_on_redis_ok, "members_add", "HSET sb:members %s %s", s->name, incv);
    rdev_cmd(s->rd, rt_on_redis_ok, "own_lease", "SET lease:%s %s PX %ld", s->name, body,
             (long)(s->lease * 1000));
}

static void rt_on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rt_server *s = w->data;
    rt_own_lease(s);
    if (s->bad_in > 1)
        log_warn("bad_envelopes", "count=%lu note=\"garbage from a peer, dropped or bounced\"",
                 s->bad_in);
    s->bad_in = 0;
    if (s->dropped_full) {
        log_warn("dropped_queue_full", "count=%lu", s->dropped_full);
        s->dropped_full = 0;
    }
    if (s->unsent) {
        log_info("controls_not_sent", "count=%lu why=not-connected-here", s->unsent);
        s->unsent = 0;
    }
}

/* ---- start and stop ------------------------------------------------------- */

static sb_rc rt_socket(struct rt_server *s, const char *bind)
{
    int hwm = RT_HWM, one = 1, linger = 0;
    s->zctx = zmq_ctx_new();
    /* Only cluster members connect (common/curve.c). */
    if (!s->zctx || sb_curve_zap_start(s->curve, s->zctx) != SB_OK)
        return SB_ERROR;
    s->sock = zmq_socket(s->zctx, ZMQ_ROUTER);
    if (!s->sock ||
        zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        sb_curve_server(s->curve, s->sock) != SB_OK)
        return SB_ERROR;
    if (zmq_bind(s->sock, bind) != 0) {
        log_error("bind_failed", "endpoint=%s err=%s", sb_log_q(bind), sb_log_q(zmq_strerror(errno)));
        return SB_ERROR;
    }
    return SB_OK;
}

static void rt_watchers(struct rt_server *s)
{
    int fd = -1;
    size_t sz = sizeof fd;
    zmq_getsockopt(s->sock, ZMQ_FD, &fd, &sz);
    ev_io_init(&s->io, rt_on_io, fd, EV_READ);
    ev_prepare_init(&s->prepare, rt_on_prepare);
    ev_check_init(&s->check, rt_on_check);
    ev_idle_init(&s->idle, rt_on_idle);
    ev_timer_init(&s->sweep, rt_on_sweep, 1., 1.);
    ev_timer_init(&s->poll, rt_on_poll, RT_POLL_EVERY, RT_POLL_EVERY);
    s->io.data = s->prepare.data = s->check.data = s->idle.data = s->sweep.data = s;
    s->poll.data = s;
    ev_io_start(s->loop, &s->io);
    ev_prepare_start(s->loop, &s->prepare);
    ev_check_start(s->loop, &s->check);
    ev_timer_start(s->loop, &s->sweep);
    ev_timer_start(s->loop, &s->poll);
}

static void rt_stop(struct sb_proc *p, void *ud)
{
    ev_break(p->loop, EVBREAK_ALL);
}

/* What this router tells components to connect to: [router] advertise,
 * else its bind endpoint unless that is a wildcard (then it is not
 * announced; components know it only from `routers`). */
static void rt_advertise(struct rt_server *s, const char *bind)
{
    const char *a = sb_config_str("advertise", "");
    if (!*a && !strstr(bind, "*") && !strstr(bind, "0.0.0.0") && !strstr(bind, "[::]"))
        a = bind;
    snprintf(s->advertise, sizeof s->advertise, "%s", a);
    s->started = sb_now();
    uint8_t b[8];
    sb_random(b, sizeof b);
    for (int i = 0; i < 8; i++)
        snprintf(s->inc + 2 * i, 3, "%02x", b[i]);
}

/* The lease every HELLO renews: [cluster] lease (seconds), which the
 * components learn from each hello-ack. heartbeat_timeout is its old name. */
static double rt_lease_conf(void)
{
    double t = strtod(sb_config_str("lease", sb_config_str("heartbeat_timeout", "3")), NULL);
    return t > 0 ? t : 3;
}

/* SIGHUP (the log level is done by proc.c): the lease. The bind endpoint
 * needs a restart. */
static void rt_reload(struct sb_proc *p, void *ud)
{
    struct rt_server *s = ud;
    sb_curve_members_reload(s->curve);  /* a member added or removed */
    double t = rt_lease_conf();
    if (t == s->lease)
        return;
    log_info("reload", "what=lease from=%.3g to=%.3g", s->lease, t);
    s->lease = t;
}

int main(int argc, char **argv)
{
    struct sb_proc proc;
    if (sb_proc_init(&proc, argc, argv, "router") != SB_OK)
        return 2;
    static struct rt_server s;    /* large scratch headers: keep off the stack */
    s.loop = proc.loop;
    s.name = proc.instance;
    rt_mx_server = &s;
    s.body = (struct sb_buf)SB_BUF_INIT;
    s.lease_val = (struct sb_buf)SB_BUF_INIT;
    rt_reg_init(&s.reg);
    rt_reg_init(&s.heard);
    const char *bind = sb_config_str("bind", "tcp://127.0.0.1:15555");
    s.lease = rt_lease_conf();
    if (sb_curve_load(&s.curve, s.name) != SB_OK) {
        log_error("start_failed", "what=curve");
        return 1;
    }
    if (rt_socket(&s, bind) != SB_OK) {
        log_error("start_failed", "endpoint=%s", sb_log_q(bind));
        return 1;
    }
    s.rd = rdev_from_config(s.loop);
    if (!s.rd) {
        log_error("start_failed", "what=redis");
        return 1;
    }
    rdev_set_on_up(s.rd, rt_on_store_up, &s);
    rt_advertise(&s, bind);
    rt_watchers(&s);
    proc.on_stop = rt_stop;
    proc.on_reload = rt_reload;
    proc.ud = &s;
    sb_proc_signals(&proc);
    log_info("listening", "endpoint=%s lease=%.3g", sb_log_q(bind), s.lease);
    ev_run(s.loop, 0);
    log_info("stop", "instances=%zu", s.reg.n);
    for (size_t i = 0; i < s.nq; i++) {
        for (size_t j = 0; j < s.q[i].n; j++)
            rt_env_close(&s.q[i].v[j]);
        free(s.q[i].v);
    }
    free(s.q);
    rdev_free(s.rd);
    zmq_close(s.sock);
    zmq_ctx_term(s.zctx);
    sb_curve_free(s.curve);
    rt_reg_free(&s.reg);
    rt_reg_free(&s.heard);
    rt_addrs_free(&s.addrs);
    sb_buf_free(&s.body);
    sb_buf_free(&s.lease_val);
    sb_metrics_stop();
    sb_config_free();
    return 0;
}
