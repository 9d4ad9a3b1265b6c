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
 * envelope. A destination found gone at that point (EHOSTUNREACH) is
 * declared dead and its envelopes are routed again or bounced. */
#include "route.h"
#include "config.h"
#include "log.h"
#include "proc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define RT_HWM 100000
#define RT_BATCH 1024          /* messages per drain before yielding to the loop */
#define RT_OUT_MAX 256         /* envelopes per outgoing message to one destination */
#define RT_PENDING_MAX 256     /* dead front-ends waiting for an sm to clean them */
#define RT_ID_MAX 255          /* ZeroMQ routing ids are at most 255 bytes */

struct rt_dead {
    char name[ENV_NAME_MAX + 1];
    char kind[RT_KIND_MAX + 1];
    long pid;
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
    double timeout;
    struct rt_registry reg;
    ev_io io;
    ev_prepare prepare;
    ev_check check;
    ev_idle idle;
    ev_timer sweep;
    struct env_hdr in, out;         /* scratch for the slow paths */
    uint8_t enc[ENV_HDR_MAX];
    struct sb_buf body;
    struct rt_dead pending[RT_PENDING_MAX];
    size_t npending;
    unsigned long dropped_full;     /* sends refused by a full peer queue */
    int fired;                      /* the fd fired: drain in the check */
    int dirty;                      /* zmq calls since the socket was seen empty */
    unsigned long bad_in;           /* garbage envelopes since the last sweep */
    struct rt_outq *q;              /* one per destination seen; reused */
    size_t nq, capq;
    int queued;                     /* some queue holds envelopes */
};

static void rt_handle(struct rt_server *s, zmq_msg_t *f);
static void rt_bounce(struct rt_server *s, zmq_msg_t *id, zmq_msg_t *hdr,
                      zmq_msg_t *body, const char *reason);
static void rt_inst_gone(struct rt_server *s, size_t idx, const char *why);
static void rt_members_broadcast(struct rt_server *s);

/* A peer sending garbage must not flood the log: the first one of each
 * sweep period is logged in full, the rest are counted (rt_on_sweep). */
static int rt_bad_first(struct rt_server *s)
{
    return s->bad_in++ == 0;
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
 * and the envelopes are still ours. Gone (EHOSTUNREACH): it exited or died
 * before its heartbeat timed out, and ZeroMQ already knows — drop it now
 * and route its envelopes again (a bind would otherwise fail
 * internal-server-error). Full (EAGAIN): dropped and counted. */
static void rt_refused(struct rt_server *s, const char *to, size_t tolen,
                       struct rt_env *v, size_t n, int err)
{
    if (err == EHOSTUNREACH) {
        struct rt_inst *in = rt_reg_find(&s->reg, to, tolen);
        if (in) {
            rt_inst_gone(s, (size_t)(in - s->reg.v), "unreachable");
            rt_members_broadcast(s);
        }
    } else if (err == EAGAIN) {
        s->dropped_full += n;
    }
    for (size_t i = 0; i < n; i++) {
        struct rt_env *e = &v[i];
        if (err == EHOSTUNREACH && e->mode == RT_REROUTE)
            rt_handle(s, e->f);
        else if (err == EHOSTUNREACH && e->mode == RT_BOUNCE)
            rt_bounce(s, &e->f[0], &e->f[1], &e->f[2], "unknown-instance");
        else if (e->mode == RT_LOG)
            log_warn("control_not_sent", "to=%.*s err=%s", (int)tolen, to,
                     sb_log_q(zmq_strerror(err)));
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
    for (size_t i = 0; i < n; i++) {
        struct rt_env *e = &q->v[i];
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
    int ok = env_decode(o, zmq_msg_data(hdr), zmq_msg_size(hdr)) == SB_OK;
    if (ok && o->kind == ENV_BOUNCE) {
        log_warn("bounce_dropped", "reason=%s key=%s", reason, sb_log_q(o->key));
        return;
    }
    env_init(b, ENV_BOUNCE, ENV_ROUTE_INSTANCE);
    rt_copy_str(b->key, ENV_NAME_MAX + 1, zmq_msg_data(id), zmq_msg_size(id));
    if (strlen(b->key) != zmq_msg_size(id))
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
        rt_control(s, s->reg.v[i].name, "members", "", s->body.data, s->body.len);
}

/* Ask one sm (chosen by hashing the dead name, so every router agrees) to
 * clean up what the dead instance held. With no sm alive, remember it. */
static void rt_instance_down(struct rt_server *s, const char *name, const char *kind, long pid)
{
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
        d->pid = pid;
        log_warn("instance_down_pending", "name=%s kind=%s reason=no-sm", name, kind);
        return;
    }
    char body[RT_KIND_MAX + 8];
    int n = snprintf(body, sizeof body, "kind=%s", kind);
    rt_control(s, sm->name, "instance-down", name, body, (size_t)n);
    log_info("instance_down_sent", "name=%s kind=%s to=%s", name, kind, sm->name);
}

/* Remove a dead instance and have its sessions cleaned up; the caller sends
 * `members`. why != NULL: found gone by a failed send, before its heartbeat
 * timed out (logged instance_gone; the sweep logs instance_dead itself). */
static void rt_inst_gone(struct rt_server *s, size_t idx, const char *why)
{
    struct rt_dead d;
    const struct rt_inst *in = &s->reg.v[idx];
    strcpy(d.name, in->name);
    strcpy(d.kind, in->kind);
    d.pid = in->pid;
    if (why)
        log_warn("instance_gone", "name=%s kind=%s pid=%ld why=%s", d.name, d.kind, d.pid, why);
    rt_reg_remove(&s->reg, idx);
    rt_instance_down(s, d.name, d.kind, d.pid);
}

static void rt_flush_pending(struct rt_server *s)
{
    size_t n = s->npending;
    s->npending = 0;
    for (size_t i = 0; i < n; i++) {
        struct rt_dead d = s->pending[i];
        const struct rt_inst *back = rt_reg_find(&s->reg, d.name, strlen(d.name));
        /* Back under the same pid: it was only silent and still holds its
         * sessions. Any other case: the old process's sessions are stale. */
        if (!back || !d.pid || back->pid != d.pid)
            rt_instance_down(s, d.name, d.kind, d.pid);
    }
}

/* Two processes started with one name take the routing id from each other
 * on every HELLO (ROUTER_HANDOVER), so the pid flips back and forth. That
 * is a configuration error, not a stream of restarts: cleaning up "the old
 * process" each time would wipe live sessions. */
static int rt_name_flapping(struct rt_server *s, struct rt_inst *in, long old_pid)
{
    double now = sb_now();
    int flapping = in->restarted_at > 0 && now - in->restarted_at < 2 * s->timeout;
    in->restarted_at = now;
    if (flapping)
        log_error("duplicate_instance_name", "name=%s pid=%ld other_pid=%ld", in->name,
                  in->pid, old_pid);
    return flapping;
}

static void rt_on_hello(struct rt_server *s, zmq_msg_t *id, zmq_msg_t *body)
{
    char old_kind[RT_KIND_MAX + 1] = "";
    const char *name = zmq_msg_data(id);
    const struct rt_inst *prev = rt_reg_find(&s->reg, name, zmq_msg_size(id));
    long old_pid = prev ? prev->pid : 0;
    size_t nlen = zmq_msg_size(id);
    /* A loopback `direct=` endpoint is only usable if the sm is on this
     * host (ZeroMQ reports where a TCP message came from). */
    const char *peer = zmq_msg_gets(body, "Peer-Address");
    s->reg.remote_hello = peer && strncmp(peer, "127.", 4) != 0 && strcmp(peer, "::1") != 0;
    int ch = rt_reg_hello(&s->reg, name, nlen, zmq_msg_data(body), zmq_msg_size(body),
                          sb_now(), old_kind);
    if (ch < 0) {
        log_warn("hello_rejected", "id_bytes=%zu body_bytes=%zu", nlen, zmq_msg_size(body));
        return;
    }
    if (ch == 0)
        return;
    struct rt_inst *in = rt_reg_find(&s->reg, name, nlen);
    if ((ch & RT_CH_RESTART) && rt_name_flapping(s, in, old_pid))
        ch &= ~RT_CH_RESTART;
    if (ch & RT_CH_NEW)
        log_info("instance_up", "name=%s kind=%s pid=%ld domains=%s sessions=%ld",
                 in->name, in->kind, in->pid, sb_log_q(in->domains), in->sessions);
    else if (ch & (RT_CH_RESTART | RT_CH_KIND))
        log_warn("instance_restarted", "name=%s kind=%s old_kind=%s pid=%ld old_pid=%ld",
                 in->name, in->kind, old_kind, in->pid, old_pid);
    else if (ch & RT_CH_DOMAINS)
        log_info("instance_domains", "name=%s domains=%s", in->name, sb_log_q(in->domains));
    /* A quick restart never missed a heartbeat, but its old sessions are gone. */
    if (ch & RT_CH_RESTART) {
        char dead[ENV_NAME_MAX + 1];
        strcpy(dead, in->name);
        rt_instance_down(s, dead, old_kind, old_pid);
    }
    if (ch & RT_CH_DIRECT)
        log_info("instance_direct", "name=%s direct=%s", in->name, sb_log_q(in->direct));
    /* Links route by the same registry: anything it decides on goes out. */
    int sm_routing = strcmp(in->kind, "sm") == 0 && (ch & (RT_CH_DOMAINS | RT_CH_DIRECT));
    if ((ch & (RT_CH_NEW | RT_CH_KIND)) || sm_routing) {
        rt_members_broadcast(s);
        in = rt_reg_find(&s->reg, name, nlen);
        if (in && strcmp(in->kind, "sm") == 0 && s->npending)
            rt_flush_pending(s);
    }
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
    const struct rt_inst *from = rt_reg_find(&s->reg, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
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

/* f = [identity][header][body]. */
static void rt_handle(struct rt_server *s, zmq_msg_t *f)
{
    uint8_t kind, route;
    const char *key;
    size_t keylen;
    if (env_peek(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &kind, &route, &key, &keylen) != SB_OK) {
        rt_bounce(s, &f[0], &f[1], &f[2], "bad-envelope");
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

static void rt_on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct rt_server *s = w->data;
    s->dirty = 1;                   /* may send: ask ZMQ_EVENTS before blocking */
    double now = sb_now();
    int changed = 0;
    long i;
    while ((i = rt_reg_find_dead(&s->reg, now, s->timeout)) >= 0) {
        const struct rt_inst *in = &s->reg.v[i];
        log_warn("instance_dead", "name=%s kind=%s pid=%ld silent_ms=%ld", in->name, in->kind,
                 in->pid, (long)((now - in->last_hello) * 1000));
        rt_inst_gone(s, (size_t)i, NULL);
        changed = 1;
    }
    if (changed)
        rt_members_broadcast(s);
    if (s->bad_in > 1)
        log_warn("bad_envelopes", "count=%lu note=\"garbage from a peer, dropped or bounced\"",
                 s->bad_in);
    s->bad_in = 0;
    if (s->dropped_full) {
        log_warn("dropped_queue_full", "count=%lu", s->dropped_full);
        s->dropped_full = 0;
    }
}

/* ---- start and stop ------------------------------------------------------- */

static sb_rc rt_socket(struct rt_server *s, const char *bind)
{
    int hwm = RT_HWM, one = 1, linger = 0;
    s->zctx = zmq_ctx_new();
    s->sock = s->zctx ? zmq_socket(s->zctx, ZMQ_ROUTER) : NULL;
    if (!s->sock ||
        zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger) != 0)
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
    double every = s->timeout / 4 < 0.25 ? s->timeout / 4 : 0.25;
    ev_io_init(&s->io, rt_on_io, fd, EV_READ);
    ev_prepare_init(&s->prepare, rt_on_prepare);
    ev_check_init(&s->check, rt_on_check);
    ev_idle_init(&s->idle, rt_on_idle);
    ev_timer_init(&s->sweep, rt_on_sweep, every, every);
    s->io.data = s->prepare.data = s->check.data = s->idle.data = s->sweep.data = s;
    ev_io_start(s->loop, &s->io);
    ev_prepare_start(s->loop, &s->prepare);
    ev_check_start(s->loop, &s->check);
    ev_timer_start(s->loop, &s->sweep);
}

static void rt_stop(struct sb_proc *p, void *ud)
{
    ev_break(p->loop, EVBREAK_ALL);
}

/* SIGHUP (the log level is done by proc.c): heartbeat_timeout. The bind
 * endpoint needs a restart. */
static void rt_reload(struct sb_proc *p, void *ud)
{
    struct rt_server *s = ud;
    double t = strtod(sb_config_str("heartbeat_timeout", "3"), NULL);
    if (!(t > 0) || t == s->timeout)
        return;
    log_info("reload", "what=heartbeat_timeout from=%.3g to=%.3g", s->timeout, t);
    s->timeout = t;
    double every = t / 4 < 0.25 ? t / 4 : 0.25;
    ev_timer_stop(s->loop, &s->sweep);
    ev_timer_set(&s->sweep, every, every);
    ev_timer_start(s->loop, &s->sweep);
}

int main(int argc, char **argv)
{
    struct sb_proc proc;
    if (sb_proc_init(&proc, argc, argv, "router") != SB_OK)
        return 2;
    static struct rt_server s;    /* large scratch headers: keep off the stack */
    s.loop = proc.loop;
    s.name = proc.instance;
    s.body = (struct sb_buf)SB_BUF_INIT;
    rt_reg_init(&s.reg);
    const char *bind = sb_config_str("bind", "tcp://127.0.0.1:15555");
    s.timeout = strtod(sb_config_str("heartbeat_timeout", "3"), NULL);
    if (!(s.timeout > 0))
        s.timeout = 3;
    if (rt_socket(&s, bind) != SB_OK) {
        log_error("start_failed", "endpoint=%s", sb_log_q(bind));
        return 1;
    }
    rt_watchers(&s);
    proc.on_stop = rt_stop;
    proc.on_reload = rt_reload;
    proc.ud = &s;
    sb_proc_signals(&proc);
    log_info("listening", "endpoint=%s heartbeat_timeout=%.3g", sb_log_q(bind), s.timeout);
    ev_run(s.loop, 0);
    log_info("stop", "instances=%zu", s.reg.n);
    for (size_t i = 0; i < s.nq; i++) {
        for (size_t j = 0; j < s.q[i].n; j++)
            rt_env_close(&s.q[i].v[j]);
        free(s.q[i].v);
    }
    free(s.q);
    zmq_close(s.sock);
    zmq_ctx_term(s.zctx);
    rt_reg_free(&s.reg);
    sb_buf_free(&s.body);
    sb_config_free();
    return 0;
}
