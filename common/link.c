/* link.c — a component's DEALER connection to the router on the libev loop.
 *
 * ZMQ_FD only signals edges, so three watchers cooperate: the ev_io wakes
 * us when the fd becomes readable, the ev_prepare asks ZMQ_EVENTS before
 * the loop blocks and, if messages wait, starts an idle watcher so the loop
 * does not block, and the ev_check drains. Every ZMQ_EVENTS query and every
 * empty receive costs two system calls inside libzmq (getpid, poll), so they
 * are only made when something may have consumed the edge: the drain runs
 * when the fd fired or messages were known to wait, and the prepare asks
 * only when a send (or a partial drain) happened since the socket was last
 * seen empty.
 *
 * Sends are batched: every envelope sent during one loop iteration joins
 * one multipart message [h1][b1][h2][b2]…, closed by the prepare watcher
 * (which runs last, at the lowest priority) before the loop blocks. Each
 * ZeroMQ message costs a hand-off to libzmq's I/O thread (an eventfd write
 * and a wake-up) and a wake-up of the receiver, so under load one batch per
 * iteration instead of one message per envelope is most of the hop's cost.
 * The batch stays open by holding its last body frame back: sending it
 * without ZMQ_SNDMORE ends the message. */
#include "link.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define LINK_HWM 100000
#define LINK_LINGER_MS 200
#define LINK_BATCH 512          /* messages per drain before yielding to the loop */
#define LINK_SEND_MAX 128       /* envelopes per outgoing batch */
#define LINK_SEND_BYTES 65536   /* body bytes per outgoing batch */

struct link {
    struct ev_loop *loop;
    void *zctx, *sock;
    char instance[ENV_NAME_MAX + 1];
    char kind[ENV_NAME_MAX + 1];
    char *domains;
    long sessions;
    double heartbeat;
    link_recv_cb cb;
    void *ud;
    ev_io io;
    ev_prepare prepare;
    ev_check check;
    ev_idle idle;
    ev_timer hello;
    zmq_msg_t held;             /* the open batch's last body, not yet sent */
    int holding;                /* a batch is open (its frames wait for held) */
    unsigned batch_n;           /* envelopes in the open batch */
    size_t batch_bytes;         /* their body bytes */
    int fired;                  /* the fd fired: drain at the next check */
    int dirty;                  /* zmq calls since the socket was seen empty */
};

static int link_readable(struct link *l)
{
    int ev = 0;
    size_t sz = sizeof ev;
    if (zmq_getsockopt(l->sock, ZMQ_EVENTS, &ev, &sz) != 0)
        return 0;
    return (ev & ZMQ_POLLIN) != 0;
}

/* Keep the loop from blocking while the socket still holds messages. */
static void link_rearm(struct link *l)
{
    if (!l->dirty)
        return;                 /* seen empty, nothing since: the fd is armed */
    if (link_readable(l))
        ev_idle_start(l->loop, &l->idle);
    else
        l->dirty = 0;
}

static void link_deliver(struct link *l, zmq_msg_t *hdr, zmq_msg_t *body)
{
    struct env_hdr h;
    if (env_decode(&h, zmq_msg_data(hdr), zmq_msg_size(hdr)) != SB_OK) {
        log_warn("link_bad_envelope", "bytes=%zu", zmq_msg_size(hdr));
        return;
    }
    l->cb(l, &h, zmq_msg_data(body), zmq_msg_size(body), l->ud);
}

/* Receive one whole multipart message [h1][b1][h2][b2]… and deliver its
 * envelopes in order. A trailing odd frame is garbage: logged, dropped.
 * Returns 0 when the socket is empty, 1 otherwise. */
static int link_recv_one(struct link *l)
{
    zmq_msg_t f[2];
    int n = 0, more = 1, first = 1;
    while (more) {
        zmq_msg_init(&f[n]);
        int rc;
        while ((rc = zmq_msg_recv(&f[n], l->sock, first ? ZMQ_DONTWAIT : 0)) < 0 &&
               errno == EINTR && !first)
            ;                   /* the rest of an atomic message is there */
        if (rc < 0) {
            int err = errno;
            zmq_msg_close(&f[n]);
            if (first) {
                if (err != EAGAIN && err != EINTR)
                    log_error("link_recv_failed", "err=%s", sb_log_q(zmq_strerror(err)));
                return 0;
            }
            break;
        }
        first = 0;
        more = zmq_msg_more(&f[n]);
        if (++n == 2) {
            link_deliver(l, &f[0], &f[1]);
            zmq_msg_close(&f[0]);
            zmq_msg_close(&f[1]);
            n = 0;
        }
    }
    if (n) {
        log_warn("link_bad_envelope", "frames=odd");
        zmq_msg_close(&f[0]);
    }
    return 1;
}

static void link_drain(struct link *l)
{
    l->fired = 0;
    l->dirty = 1;               /* a full batch leaves messages behind */
    for (int i = 0; i < LINK_BATCH && l->sock; i++)
        if (!link_recv_one(l)) {
            l->dirty = 0;       /* empty, and the receive re-armed the fd */
            break;
        }
}

/* End the open batch: its held last body goes out without ZMQ_SNDMORE. */
void link_flush(struct link *l)
{
    if (!l->holding)
        return;
    if (zmq_msg_send(&l->held, l->sock, 0) < 0) {
        log_error("link_flush_failed", "envelopes=%u err=%s", l->batch_n,
                  sb_log_q(zmq_strerror(errno)));
        zmq_msg_close(&l->held);
    }
    l->holding = 0;
    l->batch_n = 0;
    l->batch_bytes = 0;
    l->dirty = 1;               /* the prepare asks ZMQ_EVENTS before blocking */
}

static void link_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct link *l = w->data;
    l->fired = 1;               /* drained in the check, once per iteration */
}

static void link_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    link_flush(w->data);
    link_rearm(w->data);
}

static void link_on_check(struct ev_loop *loop, ev_check *w, int revents)
{
    struct link *l = w->data;
    int waiting = ev_is_active(&l->idle);
    ev_idle_stop(loop, &l->idle);
    if (l->fired || waiting)
        link_drain(l);
}

static void link_on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    /* Only exists to make the loop poll with a zero timeout. */
}

static sb_rc link_send_hello(struct link *l)
{
    char body[2048];
    int n = snprintf(body, sizeof body, "kind=%s pid=%ld domains=%s sessions=%ld",
                     l->kind, (long)getpid(), l->domains ? l->domains : "", l->sessions);
    if (n < 0 || (size_t)n >= sizeof body) {
        log_error("link_hello_too_long", "bytes=%d", n);
        return SB_ERROR;
    }
    return link_send_to(l, ENV_HELLO, ENV_ROUTE_ROUTER, "", "", "", body, (size_t)n);
}

static void link_on_hello(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct link *l = w->data;
    if (link_send_hello(l) != SB_OK)
        log_warn("link_hello_failed", "endpoint_queue=full");
}

static sb_rc link_socket(struct link *l, const char *endpoint)
{
    int hwm = LINK_HWM, linger = LINK_LINGER_MS, immediate = 0;
    l->zctx = zmq_ctx_new();
    if (!l->zctx)
        return SB_ERROR;
    l->sock = zmq_socket(l->zctx, ZMQ_DEALER);
    if (!l->sock)
        return SB_ERROR;
    if (zmq_setsockopt(l->sock, ZMQ_ROUTING_ID, l->instance, strlen(l->instance)) != 0 ||
        zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(l->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(l->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(l->sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate) != 0)
        return SB_ERROR;
    if (zmq_connect(l->sock, endpoint) != 0) {
        log_error("link_connect_failed", "endpoint=%s err=%s", sb_log_q(endpoint),
                  sb_log_q(zmq_strerror(errno)));
        return SB_ERROR;
    }
    return SB_OK;
}

static void link_watchers(struct link *l)
{
    int fd = -1;
    size_t sz = sizeof fd;
    zmq_getsockopt(l->sock, ZMQ_FD, &fd, &sz);
    ev_io_init(&l->io, link_on_io, fd, EV_READ);
    ev_prepare_init(&l->prepare, link_on_prepare);
    ev_set_priority(&l->prepare, EV_MINPRI);    /* after every other prepare that may send */
    ev_check_init(&l->check, link_on_check);
    ev_idle_init(&l->idle, link_on_idle);
    ev_timer_init(&l->hello, link_on_hello, l->heartbeat, l->heartbeat);
    l->io.data = l->prepare.data = l->check.data = l->idle.data = l->hello.data = l;
    ev_io_start(l->loop, &l->io);
    ev_prepare_start(l->loop, &l->prepare);
    ev_check_start(l->loop, &l->check);
    ev_timer_start(l->loop, &l->hello);
}

struct link *link_new(struct ev_loop *loop, const struct link_opts *o,
                      link_recv_cb cb, void *ud)
{
    if (!o || !o->endpoint || !o->instance || !o->kind || !cb ||
        !o->instance[0] || strlen(o->instance) > ENV_NAME_MAX || strlen(o->kind) > ENV_NAME_MAX)
        return NULL;
    struct link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->loop = loop;
    l->cb = cb;
    l->ud = ud;
    l->heartbeat = o->heartbeat > 0 ? o->heartbeat : 1.0;
    strcpy(l->instance, o->instance);
    strcpy(l->kind, o->kind);
    l->domains = strdup(o->domains ? o->domains : "");
    if (!l->domains || link_socket(l, o->endpoint) != SB_OK) {
        link_free(l);
        return NULL;
    }
    link_watchers(l);
    link_send_hello(l);
    log_info("link_up", "endpoint=%s kind=%s heartbeat=%.3g", sb_log_q(o->endpoint),
             l->kind, l->heartbeat);
    return l;
}

void link_free(struct link *l)
{
    if (!l)
        return;
    if (l->sock)
        link_flush(l);          /* the linger period still delivers it */
    if (ev_is_active(&l->io) || ev_is_active(&l->prepare)) {
        ev_io_stop(l->loop, &l->io);
        ev_prepare_stop(l->loop, &l->prepare);
        ev_check_stop(l->loop, &l->check);
        ev_idle_stop(l->loop, &l->idle);
        ev_timer_stop(l->loop, &l->hello);
    }
    if (l->sock)
        zmq_close(l->sock);
    if (l->zctx)
        zmq_ctx_term(l->zctx);
    free(l->domains);
    free(l);
}

sb_rc link_send(struct link *l, const struct env_hdr *h, const char *body, size_t body_len)
{
    uint8_t hdr[ENV_HDR_MAX];
    long n = env_encode(h, hdr, sizeof hdr);
    if (n < 0) {
        log_error("link_encode_failed", "kind=%s key=%s", env_kind_name(h->kind), sb_log_q(h->key));
        return SB_ERROR;
    }
    if (l->holding && (l->batch_n >= LINK_SEND_MAX || l->batch_bytes >= LINK_SEND_BYTES))
        link_flush(l);
    /* Inside an open multipart message frames are always accepted (it is
     * atomic); only its first frame can meet the high-water mark. */
    int rc = l->holding ? zmq_msg_send(&l->held, l->sock, ZMQ_SNDMORE) : 0;
    if (rc >= 0)
        rc = zmq_send(l->sock, hdr, (size_t)n, ZMQ_SNDMORE | (l->holding ? 0 : ZMQ_DONTWAIT));
    l->dirty = 1;               /* the prepare asks ZMQ_EVENTS before blocking */
    if (rc < 0) {
        log_warn("link_send_failed", "kind=%s key=%s err=%s", env_kind_name(h->kind),
                 sb_log_q(h->key), sb_log_q(zmq_strerror(errno)));
        if (l->holding)         /* cannot happen; never leave a batch half-open */
            l->holding = 0;
        return SB_ERROR;
    }
    if (zmq_msg_init_size(&l->held, body_len) != 0) {
        /* The header is queued: end the message with an empty body rather
         * than leave it open. */
        zmq_send(l->sock, "", 0, 0);
        l->holding = 0;
        log_error("link_send_failed", "kind=%s err=nomem", env_kind_name(h->kind));
        return SB_ERROR;
    }
    if (body_len)
        memcpy(zmq_msg_data(&l->held), body, body_len);
    l->holding = 1;
    l->batch_n++;
    l->batch_bytes += body_len;
    return SB_OK;
}

const char *link_instance(const struct link *l)
{
    return l->instance;
}

static void link_copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

sb_rc link_send_to(struct link *l, enum env_kind kind, enum env_route route,
                   const char *key, const char *sid, const char *op,
                   const char *body, size_t body_len)
{
    struct env_hdr h;
    env_init(&h, kind, route);
    if ((key && strlen(key) > ENV_STR_MAX) || (sid && strlen(sid) > ENV_NAME_MAX) ||
        (op && strlen(op) > ENV_NAME_MAX)) {
        log_error("link_field_too_long", "kind=%s", env_kind_name(kind));
        return SB_ERROR;
    }
    link_copy(h.key, sizeof h.key, key);
    link_copy(h.sender, sizeof h.sender, l->instance);
    link_copy(h.sid, sizeof h.sid, sid);
    link_copy(h.op, sizeof h.op, op);
    return link_send(l, &h, body, body_len);
}

void link_set_sessions(struct link *l, long n)
{
    l->sessions = n;
}

void link_set_domains(struct link *l, const char *csv)
{
    char *d = strdup(csv ? csv : "");
    if (!d) {
        log_error("link_set_domains_failed", "err=nomem");
        return;
    }
    free(l->domains);
    l->domains = d;
    /* Routing depends on domains: tell the router now, not at the next beat. */
    link_send_hello(l);
}
