/* link.c — a component's ZeroMQ connections on the libev loop.
 *
 * Sockets. `main` is the DEALER to the router (HELLO, heartbeat, control,
 * everything that is not sent directly). An sm also binds `direct`, a
 * ROUTER every component connects to; every component keeps one DEALER
 * `peer` per sm that announced a direct endpoint, learnt from the router's
 * `members` broadcast. A ROUTE_JID stanza or control for a local domain goes
 * through the peer DEALER of the sm the router itself would pick (same
 * registry, same rendezvous hash: common/route.c), and an sm answers a
 * front-end through its `direct` ROUTER, so a chat message crosses two
 * ZeroMQ hops (c2s → sm → c2s) instead of four through the router. Whatever
 * cannot go directly (peer not connected yet: ZMQ_IMMEDIATE refuses the
 * send; destination not connected to us; remote domains; the router's own
 * traffic) takes the router path, which also bounces what nobody can take.
 *
 * Edges. ZMQ_FD only signals edges, so per socket an ev_io marks it fired,
 * the ev_check drains fired sockets, and the ev_prepare asks ZMQ_EVENTS
 * before the loop blocks for sockets touched since they were last seen
 * empty, starting an idle watcher if messages wait. Every ZMQ_EVENTS query
 * and empty receive costs libzmq two system calls (getpid, poll), so they
 * are made only when something may have consumed the edge.
 *
 * Batches. Envelopes sent in one loop iteration join one multipart message
 * [h1][b1][h2][b2]… per socket (per destination on `direct`), ended by the
 * prepare watcher, which runs last (lowest priority) before the loop
 * blocks. Each ZeroMQ message costs a hand-off to libzmq's I/O thread (an
 * eventfd write, a wake-up) and a wake-up of the receiver; under load one
 * batch per iteration instead of one message per envelope is most of a
 * hop's cost. A DEALER batch stays open by holding its last body frame back:
 * sending it without ZMQ_SNDMORE ends the message. Under steady load a
 * batch may also wait up to `batch_window` (default 1 ms) after the
 * socket's previous one, so each socket sends at most one batch per window;
 * the first stanza after a quiet window leaves at once. */
#include "link.h"
#include "buf.h"
#include "curve.h"
#include "log.h"
#include "metrics.h"
#include "route.h"
#include "sb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define LINK_HWM 100000
#define LINK_LINGER_MS 200
#define LINK_BATCH 512          /* messages per drain before yielding to the loop */
#define LINK_DRAIN_SLICE 0.010  /* seconds per drain before yielding to the loop */
#define LINK_SEND_MAX 128       /* envelopes per outgoing batch */
#define LINK_SEND_BYTES 65536   /* body bytes per outgoing batch */
#define LINK_PEERS_MAX 64       /* sms with a direct endpoint */
#define LINK_ROUTERS_MAX 8
#define LINK_MARKS 8            /* HELLOs awaiting an ack, per router */
#define LINK_LIMBO_MAX (16u << 20)  /* bytes held for re-sending while no router takes them */
#define LINK_RECONNECT_MAX_MS 200   /* longest wait between two connects to a router */
#define LINK_HOLD_S 1.0             /* a router socket this new may connect yet: sends wait */

struct link;

/* One ZeroMQ socket and its edge state. */
struct link_zs {
    struct link *l;
    void *sock;
    int router;                 /* ROUTER: frames start with the peer identity */
    ev_io io;
    int fired;                  /* the fd fired: drain at the next check */
    int dirty;                  /* zmq calls since the socket was seen empty */
    /* DEALER batch */
    zmq_msg_t held;             /* the open batch's last body, not yet sent */
    int holding;
    unsigned batch_n;
    size_t batch_bytes;
    double last_flush;          /* loop time of the last batch sent */
    /* peer DEALER: which sm, where */
    char name[ENV_NAME_MAX + 1];
    char endpoint[RT_DIRECT_MAX + 1];
    int seen;                   /* still in the latest members list */
};

/* The highest router-path seq delivered from one sender. */
struct link_seen {
    char sender[ENV_NAME_MAX + 1];
    uint64_t seq;
};

/* Envelopes queued on `direct` for one destination: [h][b] pairs. */
struct link_rq {
    char to[ENV_NAME_MAX + 1];
    zmq_msg_t *f;
    size_t n, cap;              /* frames */
};

/* A HELLO sent to a router: its ack renews the lease from `sent` and
 * confirms every envelope before `off` in the router's unacked buffer. */
struct link_mark {
    unsigned long seq;
    size_t off;
    double sent;
};

/* One router: its DEALER, and what it has not confirmed yet. */
struct link_rt {
    struct link_zs z;
    char endpoint[RT_DIRECT_MAX + 1];
    int up;                     /* acked lately: sends prefer it */
    int reopen;                 /* down: make the socket anew before the loop blocks */
    double opened_at;           /* loop time the socket was made (link_may_hold) */
    void *mon;                  /* PAIR: the DEALER's handshake events (curve refusals) */
    ev_io mon_io;               /* its ZMQ_FD: a (re)connection says HELLO at once */
    double refused_at;          /* last handshake refused (our key not a member?) */
    double last_ack;
    struct sb_buf unacked;      /* [u32 hlen][hdr][u32 blen][body]… */
    size_t acked_off;           /* unacked before this: confirmed by the last ack, kept
                                 * until the next (rt_on_ack) */
    struct link_mark marks[LINK_MARKS];
    size_t nmarks;
};

/* The direct path's confirmations (see "direct confirmations" below).
 * Sender side, per peer DEALER: a copy of every envelope it took, until
 * its sm confirms it. Receiver side (an sm's `direct`), per sender: the
 * direct seqs taken from it. */
struct link_dc_out {
    const struct link_zs *z;    /* the peer */
    struct sb_buf copies;       /* [u64 seq][u32 hlen][hdr][u32 blen][body]…, seq order */
    unsigned long confirms;     /* direct-acks it sent */
    int legacy;                 /* it never confirms (an older sm): keep nothing */
};

struct link_dc_in {
    char sender[ENV_NAME_MAX + 1];
    uint64_t first;             /* the first seq taken from it (this process) */
    uint64_t done;              /* the highest seq handed over (its callback returned) */
    uint64_t confirmed;         /* the highest seq confirmed to it */
};

struct link_dc {
    struct link_dc_out *out;
    size_t nout, capout;
    struct link_dc_in *in;
    size_t nin, capin;
    struct sb_buf resend;       /* copies to send again: their sm is gone */
};

struct link {
    struct ev_loop *loop;
    void *zctx;
    struct link_rt rt[LINK_ROUTERS_MAX];
    size_t nrt, pref, cur;      /* routers; the one this instance prefers; in use */
    uint64_t seq;               /* last router-path envelope's (ENV_F_SEQ) */
    struct link_seen *seen;     /* per sender: the highest seq delivered */
    size_t nseen, capseen;
    unsigned long dups;         /* re-sent duplicates dropped since the last heartbeat */
    unsigned long held;         /* sends kept in limbo for want of a router, since then */
    struct sb_buf limbo;        /* taken by a router that died unconfirmed: re-sent */
    int resending;
    unsigned long hello_seq;    /* HELLOs sent */
    unsigned long st_in, st_out;   /* stanzas received / sent, ever */
    unsigned long rate_in0, rate_out0;  /* the counters at rate_at */
    double rate_at, in_rate, out_rate;  /* stanzas/s over the last >= 1 s (HELLO) */
    char inc[RT_INC_MAX + 1];   /* incarnation: new at start and after a lost lease */
    int leased;
    double lease_until, started, router_wait;
    link_state_cb on_state;
    void *state_ud;
    ev_check lease_check;
    struct link_zs *direct;     /* sm only */
    char direct_ep[RT_DIRECT_MAX + 1];
    struct link_zs *peers[LINK_PEERS_MAX];
    size_t npeers;
    int local_router;           /* our router is on this host: loopback peers are usable */
    struct rt_registry members; /* the router's view, for direct routing */
    struct link_rq *rq;
    size_t nrq, caprq;
    int rq_queued;
    double rq_last_flush;
    double window;              /* batch_window: seconds a batch may wait to fill */
    struct sb_curve *curve;
    ev_timer flush_timer;
    unsigned long fb_peer, fb_rq;   /* direct sends that took the router path */
    char instance[ENV_NAME_MAX + 1];
    struct rt_addrs addrs;      /* sm: who is at which id on `direct` */
    double forged_at;           /* refused envelopes: one log line per window */
    unsigned long forged;
    char kind[ENV_NAME_MAX + 1];
    char *domains;
    long sessions;
    double heartbeat;
    link_recv_cb cb;
    void *ud;
    ev_prepare prepare;
    ev_check check;
    ev_idle idle;
    ev_timer hello;
    struct link_dc dc;          /* the direct path's confirmations (link_dc_*) */
};

static sb_rc link_main_send(struct link *l, const uint8_t *hdr, size_t hlen, const char *body,
                            size_t blen, const struct env_hdr *h);
struct link_dc_in;
static struct link_dc_in *dc_ack_due(struct link *l, const char *to);
static void dc_ack_send(struct link *l, struct link_dc_in *d);
static void dc_peer_gone(struct link *l, struct link_zs *z);
static void dc_resend(struct link *l, const char *sm, const char *why);

/* ---- one socket ------------------------------------------------------------ */

static void zs_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct link_zs *z = w->data;
    z->fired = 1;               /* drained in the check, once per iteration */
}

static sb_rc zs_open(struct link *l, struct link_zs *z, int type)
{
    int hwm = LINK_HWM, linger = LINK_LINGER_MS, one = 1, fd = -1;
    size_t sz = sizeof fd;
    z->l = l;
    z->router = type == ZMQ_ROUTER;
    z->sock = zmq_socket(l->zctx, type);
    if (!z->sock ||
        zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(z->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(z->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0)
        return SB_ERROR;
    /* DEALER: a new id "NAME#NONCE" for every socket (route.h). A socket
     * made anew (rt_reopen: its router fell silent, or this process was
     * frozen past its lease) must not meet the connection it replaces,
     * which the server may still hold: a ROUTER without handover ignores a
     * second connection under an id in use, and the process never rejoins.
     * The server answers NAME at the id it last heard NAME from. */
    char rid[ENV_NAME_MAX + RT_NONCE_HEX + 2];
    rt_id_make(rid, sizeof rid, l->instance);
    if (type == ZMQ_DEALER &&
        zmq_setsockopt(z->sock, ZMQ_ROUTING_ID, rid, strlen(rid)) != 0)
        return SB_ERROR;
    /* ROUTER: an unknown destination fails the send (and takes the router
     * path). No handover: ids carry a nonce, so nobody can take over
     * another's, and no socket of ours meets an older one's. */
    if (type == ZMQ_ROUTER &&
        zmq_setsockopt(z->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0)
        return SB_ERROR;
    /* Only cluster members join the bus (curve.c): before connect/bind. */
    if ((type == ZMQ_ROUTER ? sb_curve_server(l->curve, z->sock)
                            : sb_curve_client(l->curve, z->sock)) != SB_OK)
        return SB_ERROR;
    zmq_getsockopt(z->sock, ZMQ_FD, &fd, &sz);
    ev_io_init(&z->io, zs_on_io, fd, EV_READ);
    z->io.data = z;
    ev_io_start(l->loop, &z->io);
    return SB_OK;
}

static void zs_close(struct link_zs *z)
{
    if (ev_is_active(&z->io))
        ev_io_stop(z->l->loop, &z->io);
    if (z->holding)
        zmq_msg_close(&z->held);
    z->holding = 0;
    if (z->sock)
        zmq_close(z->sock);
    z->sock = NULL;
}

static int zs_readable(struct link_zs *z)
{
    int ev = 0;
    size_t sz = sizeof ev;
    if (zmq_getsockopt(z->sock, ZMQ_EVENTS, &ev, &sz) != 0)
        return 0;
    return (ev & ZMQ_POLLIN) != 0;
}

/* End the open batch: its held last body goes out without ZMQ_SNDMORE. */
static void zs_flush(struct link_zs *z)
{
    if (!z->holding)
        return;
    if (zmq_msg_send(&z->held, z->sock, 0) < 0) {
        log_error("link_flush_failed", "envelopes=%u err=%s", z->batch_n,
                  sb_log_q(zmq_strerror(errno)));
        zmq_msg_close(&z->held);
    }
    z->holding = 0;
    z->batch_n = 0;
    z->batch_bytes = 0;
    z->dirty = 1;               /* the prepare asks ZMQ_EVENTS before blocking */
}

/* Add [hdr][body] to the DEALER's open batch. Inside an open multipart
 * message frames are always accepted (it is atomic); only a batch's first
 * frame can be refused: high-water mark, or no connection yet on a peer
 * (ZMQ_IMMEDIATE). Returns -1 with errno then, nothing queued. */
static int zs_send(struct link_zs *z, const uint8_t *hdr, size_t hlen, const char *body,
                   size_t blen)
{
    if (z->holding && (z->batch_n >= LINK_SEND_MAX || z->batch_bytes >= LINK_SEND_BYTES))
        zs_flush(z);
    int rc = z->holding ? zmq_msg_send(&z->held, z->sock, ZMQ_SNDMORE) : 0;
    if (rc >= 0)
        rc = zmq_send(z->sock, hdr, hlen, ZMQ_SNDMORE | (z->holding ? 0 : ZMQ_DONTWAIT));
    z->dirty = 1;
    if (rc < 0) {
        z->holding = 0;         /* cannot happen mid-batch; never leave it half-open */
        return -1;
    }
    if (zmq_msg_init_size(&z->held, blen) != 0) {
        zmq_send(z->sock, "", 0, 0);    /* the header is queued: end the message */
        z->holding = 0;
        errno = ENOMEM;
        return -1;
    }
    if (blen)
        memcpy(zmq_msg_data(&z->held), body, blen);
    z->holding = 1;
    z->batch_n++;
    z->batch_bytes += blen;
    return 0;
}

static void link_deliver(struct link_zs *z, const char *from, zmq_msg_t *hdr, zmq_msg_t *body);

SB_COUNTER(link_mx_sent_direct, "sb_link_envelopes_sent_total", "path=\"direct\"",
           "Envelopes sent, straight to an sm/component or through a router")
SB_COUNTER(link_mx_sent_router, "sb_link_envelopes_sent_total", "path=\"router\"",
           "Envelopes sent, straight to an sm/component or through a router")
SB_COUNTER(link_mx_send_failed, "sb_link_send_failures_total", "",
           "Envelopes no socket would take (the caller answers resource-constraint)")
SB_COUNTER(link_mx_received, "sb_link_envelopes_received_total", "",
           "Envelopes received and handed to the process")
SB_COUNTER(link_mx_dups, "sb_link_duplicates_total", "",
           "Re-sent envelopes dropped because they had been delivered already")
SB_COUNTER(link_mx_router_down, "sb_link_router_down_total", "",
           "Times a router connection was declared down")

/* An envelope the link refuses (forged sender, a router's control from
 * elsewhere): one line per 10 s, with the count since the last one. */
static void link_forged(struct link *l, const char *why, const char *from, const char *op)
{
    double now = ev_now(l->loop);
    l->forged++;
    if (now - l->forged_at < 10.0)
        return;
    log_warn("bus_forged", "why=%s from=%s op=%s count=%lu", why, sb_log_q(from), sb_log_q(op),
             l->forged);
    l->forged_at = now;
    l->forged = 0;
}

/* On the direct ROUTER: may this connection speak for the name in its id?
 * Cuts `from` down to that name, and remembers the id to answer it at. */
static int link_from_trusted(struct link *l, zmq_msg_t *first, char *from)
{
    size_t len = strlen(from);
    const char *uid = l->curve ? zmq_msg_gets(first, "User-Id") : NULL;
    if (!rt_id_speaks_for(uid, l->curve != NULL, from, len)) {
        link_forged(l, "name-not-its-key", from, "");
        return 0;
    }
    rt_addrs_learn(&l->addrs, from, len);
    from[rt_id_name_len(from, len)] = '\0';
    return 1;
}

/* Receive one whole multipart message ([identity] on a ROUTER, then
 * [h1][b1][h2][b2]…) and deliver its envelopes in order. A trailing odd
 * frame is garbage: logged, dropped. Returns 0 when the socket is empty. */
static int zs_recv_one(struct link_zs *z)
{
    zmq_msg_t f[2];
    char from[RT_ID_MAX + 1] = "";     /* on a ROUTER: the sender's NAME, once trusted */
    int n = 0, more = 1, first = 1, skip = z->router, checked = !z->router, trusted = 1;
    while (more && z->sock) {
        zmq_msg_init(&f[n]);
        int rc;
        while ((rc = zmq_msg_recv(&f[n], z->sock, first ? ZMQ_DONTWAIT : 0)) < 0 &&
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
        if (skip) {             /* the sender's routing id */
            skip = 0;
            size_t len = zmq_msg_size(&f[n]) > RT_ID_MAX ? RT_ID_MAX : zmq_msg_size(&f[n]);
            memcpy(from, zmq_msg_data(&f[n]), len);
            from[len] = '\0';
            zmq_msg_close(&f[n]);
            continue;
        }
        if (!checked) {         /* its key must be that id's name's (route.h) */
            checked = 1;
            trusted = link_from_trusted(z->l, &f[n], from);
        }
        if (++n == 2) {
            if (trusted)
                link_deliver(z, z->router ? from : NULL, &f[0], &f[1]);
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

/* At most LINK_BATCH messages and LINK_DRAIN_SLICE seconds per socket and
 * iteration: one message may carry LINK_SEND_MAX envelopes, each costing
 * the receiver anything from a copy to a room's fan-out, so a count alone
 * let a flood (a MUC join storm reaching the sms) hold the loop for
 * seconds, past the lease, with the HELLO timer waiting behind it. */
static void zs_drain(struct link_zs *z)
{
    z->fired = 0;
    z->dirty = 1;               /* a full batch leaves messages behind */
    double start = ev_time();
    for (int i = 0; i < LINK_BATCH && z->sock; i++) {
        if (!zs_recv_one(z)) {
            z->dirty = 0;       /* empty, and the receive re-armed the fd */
            break;
        }
        if (ev_time() - start > LINK_DRAIN_SLICE)
            break;              /* the rest next iteration (zs_rearm sees dirty) */
    }
}

/* ---- direct: the sm's ROUTER, queued per destination ---------------------- */

static struct link_rq *rq_find(struct link *l, const char *to)
{
    for (size_t i = 0; i < l->nrq; i++)
        if (!strcmp(l->rq[i].to, to))
            return &l->rq[i];
    if (l->nrq == l->caprq) {
        size_t cap = l->caprq ? 2 * l->caprq : 8;
        struct link_rq *v = realloc(l->rq, cap * sizeof *v);
        if (!v)
            return NULL;
        l->rq = v;
        l->caprq = cap;
    }
    struct link_rq *q = &l->rq[l->nrq++];
    memset(q, 0, sizeof *q);
    snprintf(q->to, sizeof q->to, "%.*s", ENV_NAME_MAX, to);
    return q;
}

static int rq_frame(zmq_msg_t *m, const void *data, size_t len)
{
    if (zmq_msg_init_size(m, len) != 0)
        return -1;
    if (len)
        memcpy(zmq_msg_data(m), data, len);
    return 0;
}

static void rq_flush_one(struct link *l, struct link_rq *q);

/* Queue [hdr][body] for a component connected to our ROUTER. */
static int rq_send(struct link *l, const char *to, const uint8_t *hdr, size_t hlen,
                   const char *body, size_t blen)
{
    struct link_rq *q = rq_find(l, to);
    if (!q)
        return -1;
    if (q->n >= 2 * LINK_SEND_MAX)
        rq_flush_one(l, q);
    if (q->n + 2 > q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 32;
        zmq_msg_t *f = realloc(q->f, cap * sizeof *f);
        if (!f)
            return -1;
        q->f = f;
        q->cap = cap;
    }
    if (rq_frame(&q->f[q->n], hdr, hlen) != 0)
        return -1;
    if (rq_frame(&q->f[q->n + 1], body, blen) != 0) {
        zmq_msg_close(&q->f[q->n]);
        return -1;
    }
    q->n += 2;
    l->rq_queued = 1;
    return 0;
}

/* Send one destination's queue as one message. Not connected to us (or
 * full): the router takes the envelopes instead, in order. */
static void rq_flush_one(struct link *l, struct link_rq *q)
{
    size_t n = q->n;
    struct link_dc_in *ack = dc_ack_due(l, q->to);
    q->n = 0;
    if (!n && !ack)
        return;
    size_t idlen;
    const char *id = rt_addrs_id(&l->addrs, q->to, strlen(q->to), &idlen);
    if (zmq_send(l->direct->sock, id, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        /* Even a refused send reads the socket's commands, which may take
         * the edge of messages that came meanwhile: the prepare must ask
         * ZMQ_EVENTS, or the direct socket stays undrained until some
         * other send succeeds (an sm asking an unknown front-end every
         * second heard no front-end for 50 s: binds timed out). */
        l->direct->dirty = 1;
        l->fb_rq += n / 2;
        for (size_t i = 0; i + 1 < n; i += 2) {
            struct env_hdr h;
            if (env_decode(&h, zmq_msg_data(&q->f[i]), zmq_msg_size(&q->f[i])) == SB_OK)
                link_main_send(l, zmq_msg_data(&q->f[i]), zmq_msg_size(&q->f[i]),
                               zmq_msg_data(&q->f[i + 1]), zmq_msg_size(&q->f[i + 1]), &h);
        }
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&q->f[i]);
        return;
    }
    for (size_t i = 0; i < n; i++)
        zmq_msg_send(&q->f[i], l->direct->sock, i + 1 < n || ack ? ZMQ_SNDMORE : 0);
    if (ack)
        dc_ack_send(l, ack);    /* rides on the batch it goes with */
    l->direct->dirty = 1;
}

static void rq_flush(struct link *l)
{
    l->rq_queued = 0;
    for (size_t i = 0; i < l->nrq; i++)
        rq_flush_one(l, &l->rq[i]);
}

/* ---- peers: one DEALER per sm, from `members` ------------------------------ */

static struct link_zs *peer_find(struct link *l, const char *name)
{
    for (size_t i = 0; i < l->npeers; i++)
        if (!strcmp(l->peers[i]->name, name))
            return l->peers[i];
    return NULL;
}

static void peer_free(struct link_zs *z)
{
    zs_flush(z);
    zs_close(z);
    free(z);
}

static void peer_add(struct link *l, const struct rt_inst *in)
{
    int immediate = 1;
    struct link_zs *z = calloc(1, sizeof *z);
    if (!z || l->npeers == LINK_PEERS_MAX) {
        free(z);
        return;
    }
    snprintf(z->name, sizeof z->name, "%s", in->name);
    snprintf(z->endpoint, sizeof z->endpoint, "%s", in->direct);
    /* IMMEDIATE: until connected, a send fails and takes the router path
     * instead of waiting in a queue for a peer that may never come. */
    if (zs_open(l, z, ZMQ_DEALER) != SB_OK ||
        zmq_setsockopt(z->sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate) != 0 ||
        zmq_connect(z->sock, in->direct) != 0) {
        log_warn("link_direct_failed", "sm=%s endpoint=%s err=%s", in->name,
                 sb_log_q(in->direct), sb_log_q(zmq_strerror(errno)));
        zs_close(z);
        free(z);
        return;
    }
    z->seen = 1;
    l->peers[l->npeers++] = z;
    log_info("link_direct", "sm=%s endpoint=%s", in->name, sb_log_q(in->direct));
}

/* An sm with a direct endpoint we can reach: a loopback one only when our
 * router is on this host too. */
static int link_usable_sm(const struct link *l, const struct rt_inst *in)
{
    return !strcmp(in->kind, "sm") && in->direct[0] &&
           (l->local_router || !rt_endpoint_local(in->direct));
}

static sb_rc rt_open(struct link *l, struct link_rt *r);

/* A router announced in `members` that we are not connected to (started
 * after us, not in our `routers`): connect to it as to the others. A
 * loopback endpoint only when all our routers are local too. */
static void link_learn_router(struct link *l, const struct rt_inst *in)
{
    if (!l->local_router && rt_endpoint_local(in->direct))
        return;
    for (size_t i = 0; i < l->nrt; i++)
        if (!strcmp(l->rt[i].endpoint, in->direct))
            return;
    if (l->nrt == LINK_ROUTERS_MAX) {
        log_warn("link_router_not_added", "router=%s endpoint=%s why=max-%d", in->name,
                 sb_log_q(in->direct), LINK_ROUTERS_MAX);
        return;
    }
    struct link_rt *r = &l->rt[l->nrt];
    memset(r, 0, sizeof *r);
    snprintf(r->endpoint, sizeof r->endpoint, "%s", in->direct);
    r->unacked = (struct sb_buf)SB_BUF_INIT;
    if (rt_open(l, r) != SB_OK) {
        zs_close(&r->z);
        return;
    }
    l->nrt++;
    log_info("link_router_learned", "router=%s endpoint=%s", in->name, sb_log_q(in->direct));
}

/* `members`: "kind name [key=value…]" lines. Keep the registry the router
 * routes by, and one DEALER per sm with a usable direct endpoint. */
static void link_on_members(struct link *l, const char *body, size_t len)
{
    rt_reg_free(&l->members);
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *sp = memchr(p, ' ', (size_t)(le - p));
        if (sp) {
            const char *ne = memchr(sp + 1, ' ', (size_t)(le - sp - 1));
            if (!ne)
                ne = le;
            char hb[2048];
            int n = snprintf(hb, sizeof hb, "kind=%.*s %.*s", (int)(sp - p), p,
                             (int)(le - ne), ne);
            if (n > 0 && (size_t)n < sizeof hb)
                rt_reg_hello(&l->members, sp + 1, (size_t)(ne - sp - 1), hb, (size_t)n, 0, NULL);
        }
        p = le + 1;
    }
    /* Keep peers whose sm is still there at the same endpoint, drop the
     * rest (gone, or restarted elsewhere), then connect whatever is missing. */
    for (size_t i = 0; i < l->npeers; i++)
        l->peers[i]->seen = 0;
    for (size_t i = 0; i < l->members.n; i++) {
        struct link_zs *z = link_usable_sm(l, &l->members.v[i])
                                ? peer_find(l, l->members.v[i].name) : NULL;
        if (z && !strcmp(z->endpoint, l->members.v[i].direct))
            z->seen = 1;
    }
    for (size_t i = 0; i < l->npeers;) {
        struct link_zs *z = l->peers[i];
        if (z->seen) {
            i++;
            continue;
        }
        log_info("link_direct_gone", "sm=%s", z->name);
        l->peers[i] = l->peers[--l->npeers];
        dc_peer_gone(l, z);
        peer_free(z);
    }
    for (size_t i = 0; i < l->members.n; i++) {
        const struct rt_inst *in = &l->members.v[i];
        if (link_usable_sm(l, in) && !peer_find(l, in->name))
            peer_add(l, in);
        else if (!strcmp(in->kind, "router") && in->direct[0])
            link_learn_router(l, in);
    }
    dc_resend(l, "-", "sm-gone");     /* routed by the new members */
}

/* The DEALER to the sm the router would pick for this envelope, or NULL. */
static struct link_zs *link_direct_peer(struct link *l, const struct env_hdr *h)
{
    if (!l->npeers || h->route != ENV_ROUTE_JID ||
        (h->kind != ENV_STANZA && h->kind != ENV_CONTROL))
        return NULL;
    const char *reason;
    const struct rt_inst *to = rt_route_jid(&l->members, h->key, strlen(h->key), 0, &reason);
    if (!to || strcmp(to->kind, "sm") != 0)
        return NULL;
    return peer_find(l, to->name);
}

/* ---- direct confirmations ---------------------------------------------------
 *
 * The router path keeps what a router took until the router confirms it;
 * the direct path kept nothing, so what sat in a peer DEALER's pipe (or in
 * the sm's socket) when its sm was killed was lost, though the front-end
 * had counted it for its client (XEP-0198 <a h/>). Now every envelope sent
 * to a peer carries ENV_F_SEQ (the link's one counter, which the router
 * path uses too) and a copy of it goes into one buffer per peer (appended:
 * no allocation per envelope). The sm's link notes per sender the first
 * seq it took (in this process) and the highest one it handed over, and
 * adds one CONTROL `direct-ack` (aux "FIRST DONE") to the next batch it
 * sends that sender anyway — alone, within the batch window, when it has
 * none. The sender drops its copies up to DONE; copies below FIRST never
 * reached this process (an sm restarted at the same endpoint) and are sent
 * again. When `members` drops a peer (its sm is gone, or restarted at
 * another endpoint), its unconfirmed copies are sent again as new
 * envelopes, routed by the new members: to the sm that owns their keys
 * now, straight or through a router. ENVELOPE.md has the wire part. */

#define LINK_DC_OP "direct-ack"
#define LINK_DC_LEGACY (1u << 20)   /* bytes kept for a peer that never confirmed */

SB_COUNTER(link_mx_dc_resent, "sb_link_direct_resent_total", "",
           "Envelopes sent again because the sm they went straight to never confirmed them")

/* One kept copy, read in place. */
struct dc_copy {
    uint64_t seq;
    uint32_t hlen, blen;
    const uint8_t *hdr;
    const char *body;
    size_t size;
};

static int dc_copy_at(const struct sb_buf *b, size_t off, struct dc_copy *c)
{
    if (off + 16 > b->len)
        return 0;
    memcpy(&c->seq, b->data + off, 8);
    memcpy(&c->hlen, b->data + off + 8, 4);
    if (off + 16 + c->hlen > b->len)
        return 0;
    memcpy(&c->blen, b->data + off + 12 + c->hlen, 4);
    c->hdr = (const uint8_t *)b->data + off + 12;
    c->body = b->data + off + 16 + c->hlen;
    c->size = 16 + (size_t)c->hlen + c->blen;
    return off + c->size <= b->len;
}

static struct link_dc_out *dc_out_of(struct link *l, const struct link_zs *z, int add)
{
    for (size_t i = 0; i < l->dc.nout; i++)
        if (l->dc.out[i].z == z)
            return &l->dc.out[i];
    if (!add)
        return NULL;
    if (l->dc.nout == l->dc.capout) {
        size_t cap = l->dc.capout ? 2 * l->dc.capout : 8;
        struct link_dc_out *v = realloc(l->dc.out, cap * sizeof *v);
        if (!v)
            return NULL;
        l->dc.out = v;
        l->dc.capout = cap;
    }
    struct link_dc_out *o = &l->dc.out[l->dc.nout++];
    memset(o, 0, sizeof *o);
    o->z = z;
    return o;
}

/* Keep a copy of what a peer took (hdr without the seq). A peer that took
 * LINK_DC_LEGACY bytes and never confirmed any is an older sm: nothing
 * more is kept for it (re-sending it all would duplicate it all). */
static void dc_record(struct link *l, const struct link_zs *z, uint64_t seq, const uint8_t *hdr,
                      size_t hlen, const char *body, size_t blen)
{
    struct link_dc_out *o = dc_out_of(l, z, 1);
    if (!o || o->legacy)
        return;
    struct sb_buf *b = &o->copies;
    if (b->len > (o->confirms ? LINK_LIMBO_MAX : LINK_DC_LEGACY)) {
        log_error("link_direct_unconfirmed_dropped", "sm=%s bytes=%zu why=%s", z->name, b->len,
                  o->confirms ? "no-confirmation" : "peer-never-confirms");
        sb_buf_free(b);
        o->legacy = !o->confirms;
        if (o->legacy)
            return;
    }
    uint32_t hl = (uint32_t)hlen, bl = (uint32_t)blen;
    if (sb_buf_add(b, &seq, 8) != SB_OK || sb_buf_add(b, &hl, 4) != SB_OK ||
        sb_buf_add(b, hdr, hlen) != SB_OK || sb_buf_add(b, &bl, 4) != SB_OK ||
        sb_buf_add(b, body, blen) != SB_OK)
        log_error("link_direct_record_failed", "sm=%s err=nomem", z->name);
}

/* Send [hdr][body] to a peer with the link's next seq, keeping a copy.
 * -1 with nothing sent, as zs_send. */
static int dc_send(struct link *l, struct link_zs *z, const uint8_t *hdr, size_t hlen,
                   const char *body, size_t blen)
{
    uint8_t sh[ENV_HDR_MAX];
    if ((hdr[3] & ENV_F_SEQ) || hlen + 8 > sizeof sh)
        return zs_send(z, hdr, hlen, body, blen);   /* stamped by the caller: not ours */
    uint64_t q = l->seq + 1;
    memcpy(sh, hdr, hlen);
    sh[3] |= ENV_F_SEQ;
    for (int i = 0; i < 8; i++)
        sh[hlen + i] = (uint8_t)(q >> (56 - 8 * i));
    if (zs_send(z, sh, hlen + 8, body, blen) != 0)
        return -1;
    l->seq = q;
    dc_record(l, z, q, hdr, hlen, body, blen);
    return 0;
}

/* Send the held copies again as new envelopes, routed afresh. */
static void dc_resend(struct link *l, const char *sm, const char *why)
{
    if (!l->dc.resend.len)
        return;
    struct sb_buf b = l->dc.resend;     /* link_send below never adds to it */
    l->dc.resend = (struct sb_buf)SB_BUF_INIT;
    size_t off = 0, n = 0, failed = 0;
    struct dc_copy c;
    while (dc_copy_at(&b, off, &c)) {
        struct env_hdr h;
        if (env_decode(&h, c.hdr, c.hlen) == SB_OK && link_send(l, &h, c.body, c.blen) == SB_OK)
            n++;
        else
            failed++;
        off += c.size;
    }
    sb_buf_free(&b);
    sb_metric_add(&link_mx_dc_resent, (double)n);
    log_info("link_direct_resent", "sm=%s envelopes=%zu failed=%zu why=%s", sm, n, failed, why);
}

/* `members` dropped this peer: its sm is gone (or restarted elsewhere), so
 * what it never confirmed goes to whoever owns those keys now. Nothing of
 * its pipe may reach it any more (a frozen sm could still wake up). */
static void dc_peer_gone(struct link *l, struct link_zs *z)
{
    int zero = 0;
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
    struct link_dc_out *o = dc_out_of(l, z, 0);
    if (!o)
        return;
    size_t off = 0, n = 0;
    struct dc_copy c;
    for (; dc_copy_at(&o->copies, off, &c); off += c.size)
        n++;
    if (n)
        log_info("link_direct_unconfirmed", "sm=%s envelopes=%zu why=sm-gone", z->name, n);
    if (o->copies.len && sb_buf_add(&l->dc.resend, o->copies.data, o->copies.len) != SB_OK)
        log_error("link_direct_resend_dropped", "sm=%s bytes=%zu err=nomem", z->name,
                  o->copies.len);
    sb_buf_free(&o->copies);
    *o = l->dc.out[--l->dc.nout];
}

/* direct-ack from a peer's sm: aux "FIRST DONE". */
static void dc_on_ack(struct link *l, struct link_zs *z, const struct env_hdr *h)
{
    unsigned long long first, done;
    struct link_dc_out *o = z->router || strcmp(z->name, h->sender) ? NULL : dc_out_of(l, z, 0);
    if (!o || sscanf(h->aux, "%llu %llu", &first, &done) != 2)
        return;
    o->confirms++;
    size_t off = 0;
    struct dc_copy c;
    while (dc_copy_at(&o->copies, off, &c) && c.seq <= done) {
        if (c.seq < first)      /* sent before this process of the sm took anything */
            sb_buf_add(&l->dc.resend, o->copies.data + off, c.size);
        off += c.size;
    }
    sb_buf_consume(&o->copies, off);
    dc_resend(l, z->name, "sm-restarted");
}

/* On `direct`: a stamped envelope from `sender` is about to be handed over.
 * Returns its sender's record, or -1. */
static long dc_taken(struct link *l, const struct env_hdr *h)
{
    for (size_t i = 0; i < l->dc.nin; i++)
        if (!strcmp(l->dc.in[i].sender, h->sender))
            return (long)i;
    if (l->dc.nin == l->dc.capin) {
        size_t cap = l->dc.capin ? 2 * l->dc.capin : 16;
        struct link_dc_in *v = realloc(l->dc.in, cap * sizeof *v);
        if (!v)
            return -1;
        l->dc.in = v;
        l->dc.capin = cap;
    }
    struct link_dc_in *d = &l->dc.in[l->dc.nin];
    memset(d, 0, sizeof *d);
    snprintf(d->sender, sizeof d->sender, "%s", h->sender);
    d->first = h->seq;
    return (long)l->dc.nin++;
}

/* Its callback returned: confirm it with the next batch to its sender. */
static void dc_handed(struct link *l, size_t i, uint64_t seq)
{
    struct link_dc_in *d = &l->dc.in[i];
    if (seq > d->done)
        d->done = seq;
    if (d->done > d->confirmed && rq_find(l, d->sender))
        l->rq_queued = 1;
}

/* The sender's record when a confirmation is due, else NULL. */
static struct link_dc_in *dc_ack_due(struct link *l, const char *to)
{
    for (size_t i = 0; i < l->dc.nin; i++)
        if (!strcmp(l->dc.in[i].sender, to))
            return l->dc.in[i].done > l->dc.in[i].confirmed ? &l->dc.in[i] : NULL;
    return NULL;
}

/* The last envelope of the message being sent on `direct`. */
static void dc_ack_send(struct link *l, struct link_dc_in *d)
{
    struct env_hdr h;
    uint8_t hdr[512];
    env_init(&h, ENV_CONTROL, ENV_ROUTE_INSTANCE);
    snprintf(h.key, sizeof h.key, "%s", d->sender);
    snprintf(h.sender, sizeof h.sender, "%s", l->instance);
    snprintf(h.op, sizeof h.op, "%s", LINK_DC_OP);
    snprintf(h.aux, sizeof h.aux, "%llu %llu", (unsigned long long)d->first,
             (unsigned long long)d->done);
    long n = env_encode(&h, hdr, sizeof hdr);
    if (n < 0 || zmq_send(l->direct->sock, hdr, (size_t)n, ZMQ_SNDMORE) < 0) {
        zmq_send(l->direct->sock, "", 0, 0);    /* end the message all the same */
        return;
    }
    zmq_send(l->direct->sock, "", 0, 0);
    d->confirmed = d->done;
}

static void dc_free(struct link *l)
{
    for (size_t i = 0; i < l->dc.nout; i++)
        sb_buf_free(&l->dc.out[i].copies);
    free(l->dc.out);
    free(l->dc.in);
    sb_buf_free(&l->dc.resend);
}

/* ---- routers: one DEALER each, a live one carries what is not direct ------ */

static struct link_rt *link_rt_of(struct link *l, const struct link_zs *z)
{
    for (size_t i = 0; i < l->nrt; i++)
        if (&l->rt[i].z == z)
            return &l->rt[i];
    return NULL;
}

/* ZMQ_IMMEDIATE: a router that is not connected refuses at once, so the
 * next one takes the envelope instead of a queue for a dead peer.
 * Reconnection is retried every 0.1 s to LINK_RECONNECT_MAX_MS, never
 * longer: a restarted router is used by whoever reconnected first, and
 * until every component is back it bounces what is for the others
 * (`unreachable`). With ZeroMQ's back-off to 2 s that window was up to
 * 2 s after the restart, long enough for the other router to die in it
 * (test_routers: four messages bounced, their senders answered with
 * errors). A retry is one refused TCP connect while the router is down. A
 * monitor reports refused handshakes (link_rt_events). */
static void link_rt_events(struct link *l, struct link_rt *r);
static sb_rc link_send_hello(struct link *l, int bye);

/* The monitor's ZMQ_FD is edge-triggered: link_rt_events reads it empty. */
static void link_on_mon(struct ev_loop *loop, ev_io *w, int revents)
{
    struct link_rt *r = w->data;
    link_rt_events(r->z.l, r);
}

static void rt_mon_close(struct link *l, struct link_rt *r)
{
    if (!r->mon)
        return;
    ev_io_stop(l->loop, &r->mon_io);
    zmq_close(r->mon);
    r->mon = NULL;
}

static sb_rc rt_open(struct link *l, struct link_rt *r)
{
    int immediate = 1, ivl_max = LINK_RECONNECT_MAX_MS, zero = 0;
    char mon[64];
    if (zs_open(l, &r->z, ZMQ_DEALER) != SB_OK ||
        zmq_setsockopt(r->z.sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate) != 0 ||
        zmq_setsockopt(r->z.sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) != 0)
        return SB_ERROR;
    /* A name per socket: the socket it replaces (rt_reopen) is closed by
     * ZeroMQ's reaper later and holds its monitor's name until then, so
     * the same name was refused (EADDRINUSE) and the new socket had no
     * monitor at all. */
    static unsigned long mons;
    snprintf(mon, sizeof mon, "inproc://link-mon-%p-%lu", (void *)r, ++mons);
    rt_mon_close(l, r);
    if (zmq_socket_monitor(r->z.sock, mon, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                            ZMQ_EVENT_HANDSHAKE_SUCCEEDED) == 0 &&
        (r->mon = zmq_socket(l->zctx, ZMQ_PAIR)) != NULL) {
        zmq_setsockopt(r->mon, ZMQ_LINGER, &zero, sizeof zero);
        if (zmq_connect(r->mon, mon) != 0) {
            zmq_close(r->mon);
            r->mon = NULL;
        }
    }
    if (!r->mon)
        log_warn("link_monitor_failed", "endpoint=%s err=%s", sb_log_q(r->endpoint),
                 sb_log_q(zmq_strerror(errno)));
    if (r->mon) {
        int fd = -1;
        size_t sz = sizeof fd;
        zmq_getsockopt(r->mon, ZMQ_FD, &fd, &sz);
        ev_io_init(&r->mon_io, link_on_mon, fd, EV_READ);
        r->mon_io.data = r;
        ev_io_start(l->loop, &r->mon_io);
        /* Read it empty once: ZMQ_FD only signals a message that arrives
         * after a receive found the socket empty. Unread, a new socket's
         * monitor stayed silent until the next heartbeat read it
         * (link_on_hello), so a socket made anew (rt_reopen) said HELLO a
         * heartbeat after connecting, and the router, which addresses us
         * at the id it last heard, bounced what was ours meanwhile. */
        link_rt_events(l, r);
    }
    r->opened_at = ev_now(l->loop);
    if (zmq_connect(r->z.sock, r->endpoint) != 0) {
        log_error("link_connect_failed", "endpoint=%s err=%s", sb_log_q(r->endpoint),
                  sb_log_q(zmq_strerror(errno)));
        return SB_ERROR;
    }
    return SB_OK;
}

/* Keep a copy of what a router took until it confirms it (hello-ack). */
static void rt_record(struct link_rt *r, const uint8_t *hdr, size_t hlen, const char *body,
                      size_t blen)
{
    struct sb_buf *b = &r->unacked;
    uint32_t hl = (uint32_t)hlen, bl = (uint32_t)blen;
    if (b->len > LINK_LIMBO_MAX && r->acked_off) {  /* the confirmed part goes first */
        sb_buf_consume(b, r->acked_off);
        for (size_t k = 0; k < r->nmarks; k++)
            r->marks[k].off -= r->acked_off;
        r->acked_off = 0;
    }
    if (b->len > LINK_LIMBO_MAX) {  /* a router that never confirms: keep no more */
        log_error("link_unconfirmed_dropped", "bytes=%zu why=no-ack", b->len);
        sb_buf_reset(b);
        r->nmarks = 0;
        r->acked_off = 0;
    }
    if (sb_buf_add(b, &hl, sizeof hl) != SB_OK || sb_buf_add(b, hdr, hlen) != SB_OK ||
        sb_buf_add(b, &bl, sizeof bl) != SB_OK || sb_buf_add(b, body, blen) != SB_OK)
        log_error("link_record_failed", "err=nomem");
}

static void link_resend(struct link *l);

static void rt_to_limbo(struct link *l, struct link_rt *r)
{
    if (!r->unacked.len)
        return;
    if (l->limbo.len + r->unacked.len <= LINK_LIMBO_MAX)
        sb_buf_add(&l->limbo, r->unacked.data, r->unacked.len);
    else
        log_error("link_resend_dropped", "bytes=%zu why=limbo-full", r->unacked.len);
    sb_buf_reset(&r->unacked);
    r->acked_off = 0;
}

/* A router stopped answering or refused: what it took unconfirmed is
 * re-sent through another one (in order, before anything newer), and its
 * socket is made anew so a frozen router cannot deliver the old queue too. */
static void rt_down(struct link *l, struct link_rt *r, const char *why)
{
    if (r->up)
        sb_metric_inc(&link_mx_router_down);
    if (r->up)
        log_warn("link_router_down", "endpoint=%s why=%s unconfirmed_bytes=%zu",
                 sb_log_q(r->endpoint), why, r->unacked.len);
    r->up = 0;
    r->nmarks = 0;
    r->reopen = 1;              /* not here: we may be inside its drain */
    rt_to_limbo(l, r);
    link_resend(l);
}

/* From the prepare watcher: a downed router's socket is made anew. */
static void rt_reopen(struct link *l, struct link_rt *r)
{
    int zero = 0;
    r->reopen = 0;
    zmq_setsockopt(r->z.sock, ZMQ_LINGER, &zero, sizeof zero);
    zs_close(&r->z);
    rt_to_limbo(l, r);          /* whatever it took since it went down */
    if (rt_open(l, r) != SB_OK)
        log_error("link_router_reopen_failed", "endpoint=%s", sb_log_q(r->endpoint));
    link_resend(l);
}

/* Send through a live router, the preferred one first; a refusing router
 * is taken down (its unconfirmed envelopes go first through the next). */
/* The router carrying this instance's router path stays the same until it
 * fails (no switching back when another comes up): one router at a time
 * keeps per-sender order, which the receivers' duplicate check relies on. */
static int rt_send_any(struct link *l, const uint8_t *hdr, size_t hlen, const char *body,
                       size_t blen)
{
    for (int pass = 0; pass < 3; pass++)
        for (size_t k = 0; k < l->nrt; k++) {
            size_t i = pass == 0 ? l->cur : (l->pref + k) % l->nrt;
            struct link_rt *r = &l->rt[i];
            if ((pass == 0 && k > 0) || (pass < 2 && !r->up) || (pass == 2 && r->up) ||
                r->reopen || !r->z.sock)
                continue;
            if (zs_send(&r->z, hdr, hlen, body, blen) == 0) {
                rt_record(r, hdr, hlen, body, blen);
                l->cur = i;
                return 0;
            }
            if (r->up)
                rt_down(l, r, "refused");
        }
    return -1;
}

/* Re-send held envelopes while some router takes them. */
static void link_resend(struct link *l)
{
    if (l->resending || !l->limbo.len)
        return;
    l->resending = 1;
    size_t off = 0, n = 0;
    while (off + 8 <= l->limbo.len) {
        uint32_t hl, bl;
        memcpy(&hl, l->limbo.data + off, 4);
        memcpy(&bl, l->limbo.data + off + 4 + hl, 4);
        const uint8_t *hdr = (const uint8_t *)l->limbo.data + off + 4;
        const char *body = l->limbo.data + off + 8 + hl;
        if (rt_send_any(l, hdr, hl, body, bl) != 0)
            break;
        off += 8 + hl + bl;
        n++;
    }
    if (n)
        log_info("link_resent", "envelopes=%zu held_bytes=%zu", n, l->limbo.len - off);
    sb_buf_consume(&l->limbo, off);
    l->resending = 0;
}

/* Handshake failures since the last look: a router that refuses our key
 * (ZAP status 400: not in its members.pub) or speaks no CURVE. Logged at
 * most every 30 s per router; ZeroMQ keeps retrying with back-off, and a
 * refused link does not end the process as "no router" would. */
static void link_rt_events(struct link *l, struct link_rt *r)
{
    int hello = 0;
    while (r->mon) {
        zmq_msg_t ev, ep;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, r->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            break;
        }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (char *)zmq_msg_data(&ev) + 2, 4);
        }
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) {
            zmq_msg_init(&ep);
            zmq_msg_recv(&ep, r->mon, 0);
            zmq_msg_close(&ep);
        }
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            /* A (re)connected router knows us by our routing id only once we
             * speak (route.h): say HELLO now, not at the next heartbeat. */
            hello = 1;
            continue;
        }
        double now = ev_now(l->loop);
        if (now - r->refused_at >= 30 || !r->refused_at)
            log_error("link_refused", "endpoint=%s why=%s status=%u note=\"is this "
                      "instance's key in the cluster's members.pub? retrying\"",
                      sb_log_q(r->endpoint),
                      event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "key-refused" : "handshake",
                      (unsigned)value);
        if (now - r->refused_at >= 30 || !r->refused_at)
            r->refused_at = now;
    }
    if (hello && l->nrt) {
        /* The new connection's pipe is attached by a command the socket
         * reads when asked; a send reads commands at most once a
         * millisecond or so (libzmq throttles it), so the HELLO could be
         * refused as not connected yet and wait for the next heartbeat.
         * ZMQ_EVENTS reads them now. The prepare asks again (dirty). */
        if (r->z.sock && !r->reopen) {
            zs_readable(&r->z);
            r->z.dirty = 1;
        }
        link_send_hello(l, 0);
    }
}

static void link_state(struct link *l, enum link_state st)
{
    if (l->on_state)
        l->on_state(l, st, l->state_ud);
}

static void link_new_inc(struct link *l)
{
    uint8_t b[8];
    sb_random(b, sizeof b);
    for (int i = 0; i < 8; i++)
        snprintf(l->inc + 2 * i, 3, "%02x", b[i]);
}

/* hello-ack: aux = the HELLO's seq, body "lease_ms=N store=ok|down". The
 * router had every envelope sent before that HELLO; the lease runs from
 * when the HELLO was sent (Redis counts from later, never earlier). */
static void rt_on_ack(struct link *l, struct link_rt *r, const struct env_hdr *h,
                      const char *body, size_t len)
{
    unsigned long seq = strtoul(h->aux, NULL, 10);
    long lease_ms = 0;
    const char *p = len > 9 && !memcmp(body, "lease_ms=", 9) ? body + 9 : NULL;
    for (; p && p < body + len && *p >= '0' && *p <= '9'; p++)
        lease_ms = lease_ms * 10 + (*p - '0');
    size_t i = 0;
    while (i < r->nmarks && r->marks[i].seq != seq)
        i++;
    if (i == r->nmarks)
        return;                 /* an old socket's, or dropped from the ring */
    /* The ack says the router took them, not that it passed them on: a
     * router killed right after acking loses what still sat in its queues
     * and socket buffers. So what this ack confirms is kept one heartbeat
     * more, and only what the previous ack confirmed goes now; if the
     * router dies meanwhile it is re-sent with the rest, and receivers drop
     * the copies they already had by their seq (link_seen_before). */
    struct link_mark m = r->marks[i];
    size_t drop = r->acked_off;
    sb_buf_consume(&r->unacked, drop);
    memmove(r->marks, r->marks + i + 1, (r->nmarks - i - 1) * sizeof *r->marks);
    r->nmarks -= i + 1;
    for (size_t k = 0; k < r->nmarks; k++)
        r->marks[k].off -= drop;
    r->acked_off = m.off - drop;
    if (!r->up) {
        log_info("link_router_up", "endpoint=%s", sb_log_q(r->endpoint));
        if (l->hello.repeat < l->heartbeat) {  /* answered: back to the heartbeat */
            l->hello.repeat = l->heartbeat;
            ev_timer_again(l->loop, &l->hello);
        }
    }
    r->up = 1;
    r->last_ack = ev_now(l->loop);
    if (m.sent + lease_ms / 1000.0 > l->lease_until)
        l->lease_until = m.sent + lease_ms / 1000.0;
    if (!l->leased && l->lease_until > ev_now(l->loop)) {
        l->leased = 1;
        log_info("lease_held", "inc=%s lease_ms=%ld", l->inc, lease_ms);
        link_state(l, LINK_LEASE_HELD);
    }
    if (l->limbo.len)
        link_resend(l);
}

/* Before anything else in an iteration (highest priority): a process that
 * was frozen past its lease must not serve one more stanza as if alive. */
static void link_check_lease(struct link *l)
{
    if (!l->leased || ev_now(l->loop) < l->lease_until)
        return;
    l->leased = 0;
    log_error("lease_lost", "inc=%s late_ms=%ld", l->inc,
              (long)((ev_now(l->loop) - l->lease_until) * 1000));
    link_new_inc(l);
    link_state(l, LINK_LEASE_LOST);
}

static void link_on_lease_check(struct ev_loop *loop, ev_check *w, int revents)
{
    link_check_lease(w->data);
}

/* ---- the loop --------------------------------------------------------------- */

/* Router-path envelopes from one sender arrive in seq order (one router
 * at a time carries them); a seq not above the last one delivered is the
 * copy of a re-send whose original the dying router had delivered. */
static int link_seen_before(struct link *l, const struct env_hdr *h)
{
    for (size_t i = 0; i < l->nseen; i++) {
        struct link_seen *s = &l->seen[i];
        if (strcmp(s->sender, h->sender) != 0)
            continue;
        if (h->seq <= s->seq)
            return 1;
        s->seq = h->seq;
        return 0;
    }
    if (l->nseen == l->capseen) {
        size_t cap = l->capseen ? 2 * l->capseen : 16;
        struct link_seen *v = realloc(l->seen, cap * sizeof *v);
        if (!v)
            return 0;
        l->seen = v;
        l->capseen = cap;
    }
    struct link_seen *s = &l->seen[l->nseen++];
    snprintf(s->sender, sizeof s->sender, "%s", h->sender);
    s->seq = h->seq;
    return 0;
}

/* Controls only a router may give: who is alive, who died. */
static int link_router_only(const struct env_hdr *h)
{
    return h->kind == ENV_CONTROL &&
           (!strcmp(h->op, "members") || !strcmp(h->op, "instance-down") ||
            !strcmp(h->op, "hello-ack"));
}

static void link_deliver(struct link_zs *z, const char *from, zmq_msg_t *hdr, zmq_msg_t *body)
{
    struct link *l = z->l;
    struct env_hdr h;
    if (env_decode(&h, zmq_msg_data(hdr), zmq_msg_size(hdr)) != SB_OK) {
        log_warn("link_bad_envelope", "bytes=%zu", zmq_msg_size(hdr));
        return;
    }
    /* The direct ROUTER's peers are who their key says (zs_recv_one). */
    if (from && strcmp(h.sender, from) != 0) {
        link_forged(l, "sender-not-its-name", from, h.op);
        return;
    }
    /* A router's own word comes on a router's socket with ENV_F_ROUTER,
     * which routers never forward: not from the direct path, nor from a
     * member through a router. */
    if (link_router_only(&h) && (!link_rt_of(l, z) || !(h.flags & ENV_F_ROUTER))) {
        link_forged(l, "not-from-a-router", h.sender, h.op);
        return;
    }
    if (h.kind == ENV_CONTROL && !strcmp(h.op, LINK_DC_OP)) {
        dc_on_ack(l, z, &h);    /* only a peer's own sm's counts */
        return;
    }
    long dci = -1;              /* the direct path: confirmed once handed over */
    if (z == l->direct && env_has_seq(h.kind, h.flags))
        dci = dc_taken(l, &h);
    else if (env_has_seq(h.kind, h.flags) && link_seen_before(l, &h)) {
        l->dups++;              /* a re-send we already had */
        sb_metric_inc(&link_mx_dups);
        return;
    }
    struct link_rt *r = h.kind == ENV_CONTROL ? link_rt_of(l, z) : NULL;
    if (r && !strcmp(h.op, "hello-ack")) {
        rt_on_ack(l, r, &h, zmq_msg_data(body), zmq_msg_size(body));
        return;
    }
    sb_metric_inc(&link_mx_received);
    if (h.kind == ENV_CONTROL && !strcmp(h.op, "members"))
        link_on_members(l, zmq_msg_data(body), zmq_msg_size(body));
    if (h.kind == ENV_STANZA)
        l->st_in++;
    l->cb(l, &h, zmq_msg_data(body), zmq_msg_size(body), l->ud);
    if (dci >= 0)
        dc_handed(l, (size_t)dci, h.seq);
}

void link_flush(struct link *l)
{
    if (l->rq_queued)
        rq_flush(l);            /* refusals fall back to main: before main's flush */
    for (size_t i = 0; i < l->npeers; i++)
        zs_flush(l->peers[i]);
    for (size_t i = 0; i < l->nrt; i++)
        zs_flush(&l->rt[i].z);
}

/* Flush a batch if its socket sent nothing for a window, else say when. */
static void zs_flush_due(struct link_zs *z, double now, double window, double *next)
{
    if (!z->holding)
        return;
    if (now - z->last_flush >= window) {
        zs_flush(z);
        z->last_flush = now;
    } else if (z->last_flush + window < *next) {
        *next = z->last_flush + window;
    }
}

/* Before the loop blocks. With a batch window, a socket that sent a batch
 * less than a window ago keeps filling its next one until the window ends
 * (a timer sends it): under steady load each socket hands libzmq one
 * message per window instead of one per loop iteration, and a quiet
 * socket's first stanza still leaves at once. */
static void link_flush_due(struct link *l)
{
    double now = ev_now(l->loop), next = now + 3600;
    if (l->window <= 0) {
        link_flush(l);
        return;
    }
    if (l->rq_queued) {
        if (now - l->rq_last_flush >= l->window) {
            rq_flush(l);
            l->rq_last_flush = now;
        } else {
            next = l->rq_last_flush + l->window;
        }
    }
    for (size_t i = 0; i < l->npeers; i++)
        zs_flush_due(l->peers[i], now, l->window, &next);
    for (size_t i = 0; i < l->nrt; i++)
        zs_flush_due(&l->rt[i].z, now, l->window, &next);
    if (next < now + 3600 && !ev_is_active(&l->flush_timer)) {
        ev_timer_set(&l->flush_timer, next - now, 0.);
        ev_timer_start(l->loop, &l->flush_timer);
    }
}

static void link_on_flush_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    link_flush_due(w->data);    /* the prepare then asks ZMQ_EVENTS */
}

/* Keep the loop from blocking while a socket still holds messages. */
static void zs_rearm(struct link_zs *z)
{
    if (!z->dirty)
        return;                 /* seen empty, nothing since: the fd is armed */
    if (zs_readable(z))
        ev_idle_start(z->l->loop, &z->l->idle);
    else
        z->dirty = 0;
}

static void link_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct link *l = w->data;
    for (size_t i = 0; i < l->nrt; i++)
        if (l->rt[i].reopen)
            rt_reopen(l, &l->rt[i]);
    link_flush_due(l);
    for (size_t i = 0; i < l->nrt; i++)
        zs_rearm(&l->rt[i].z);
    if (l->direct)
        zs_rearm(l->direct);
    for (size_t i = 0; i < l->npeers; i++)
        zs_rearm(l->peers[i]);
}

static void link_on_check(struct ev_loop *loop, ev_check *w, int revents)
{
    struct link *l = w->data;
    int waiting = ev_is_active(&l->idle);
    ev_idle_stop(loop, &l->idle);
    for (size_t i = 0; i < l->nrt; i++)
        if (l->rt[i].z.fired || (waiting && l->rt[i].z.dirty))
            zs_drain(&l->rt[i].z);
    if (l->direct && (l->direct->fired || (waiting && l->direct->dirty)))
        zs_drain(l->direct);
    /* Draining main may change members (and free peers): index each time. */
    for (size_t i = 0; i < l->npeers; i++) {
        struct link_zs *z = l->peers[i];
        if (z->fired || (waiting && z->dirty))
            zs_drain(z);
    }
}

static void link_on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    /* Only exists to make the loop poll with a zero timeout. */
}

/* HELLO to every router: its ack renews the lease (rt_on_ack). A router
 * not connected refuses it (ZMQ_IMMEDIATE) and is asked again next time. */
/* Stanza rates for HELLO (sbctl status): averaged over at least a second,
 * so the 0.1 s HELLOs of a start-up do not make them jump. */
static void link_rates(struct link *l)
{
    double now = ev_now(l->loop), dt = now - l->rate_at;
    if (dt < 1.0)
        return;
    if (l->rate_at > 0) {
        l->in_rate = (double)(l->st_in - l->rate_in0) / dt;
        l->out_rate = (double)(l->st_out - l->rate_out0) / dt;
    }
    l->rate_at = now;
    l->rate_in0 = l->st_in;
    l->rate_out0 = l->st_out;
}

static sb_rc link_send_hello(struct link *l, int bye)
{
    char body[2048];
    link_rates(l);
    int n = snprintf(body, sizeof body,
                     "kind=%s pid=%ld inc=%s seq=%lu domains=%s sessions=%ld up_s=%.0f"
                     " in_rate=%.1f out_rate=%.1f%s%s%s", l->kind,
                     (long)getpid(), l->inc, ++l->hello_seq, l->domains ? l->domains : "", l->sessions,
                     ev_now(l->loop) - l->started, l->in_rate, l->out_rate,
                     l->direct ? " direct=" : "", l->direct ? l->direct_ep : "",
                     bye ? " bye=1" : "");
    if (n < 0 || (size_t)n >= sizeof body) {
        log_error("link_hello_too_long", "bytes=%d", n);
        return SB_ERROR;
    }
    struct env_hdr h;
    uint8_t hdr[ENV_HDR_MAX];
    env_init(&h, ENV_HELLO, ENV_ROUTE_ROUTER);
    snprintf(h.sender, sizeof h.sender, "%s", l->instance);
    long hl = env_encode(&h, hdr, sizeof hdr);
    if (hl < 0)
        return SB_ERROR;
    int sent = 0;
    for (size_t i = 0; i < l->nrt; i++) {
        struct link_rt *r = &l->rt[i];
        if (r->reopen || zs_send(&r->z, hdr, (size_t)hl, body, (size_t)n) != 0)
            continue;
        if (r->nmarks == LINK_MARKS) {  /* the oldest goes: a later ack covers it */
            memmove(r->marks, r->marks + 1, (LINK_MARKS - 1) * sizeof *r->marks);
            r->nmarks--;
        }
        r->marks[r->nmarks++] = (struct link_mark){l->hello_seq, r->unacked.len, ev_now(l->loop)};
        zs_flush(&r->z);        /* the lease must not wait for a batch window */
        sent++;
    }
    return sent ? SB_OK : SB_ERROR;
}

/* Every heartbeat: HELLO; a router silent for 2.5 heartbeats is down.
 * Until some router answers, ask ten times a second; past router_wait
 * with none ever answering, say so (the process exits with that error). */
static void link_on_hello(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct link *l = w->data;
    double now = ev_now(loop);
    int any_up = 0;
    link_check_lease(l);
    int refused = 0;
    for (size_t i = 0; i < l->nrt; i++) {
        struct link_rt *r = &l->rt[i];
        link_rt_events(l, r);
        if (r->up && now - r->last_ack > 2.5 * l->heartbeat)
            rt_down(l, r, "silent");
        any_up |= r->up;
        refused |= r->refused_at > 0;
    }
    link_send_hello(l, 0);
    if (!any_up && !refused && !l->lease_until && l->router_wait > 0 &&
        now - l->started > l->router_wait) {
        log_error("no_router", "routers=%zu waited_s=%.0f", l->nrt, now - l->started);
        l->router_wait = 0;
        link_state(l, LINK_NO_ROUTER);
    }
    w->repeat = any_up ? l->heartbeat : (l->heartbeat < 0.1 ? l->heartbeat : 0.1);
    ev_timer_again(loop, w);
    /* Expected only while a direct connection is being set up: in steady
     * state this means a peer refused (not connected, queue full). */
    if (l->dups) {
        log_info("link_duplicates_dropped", "count=%lu why=re-sent", l->dups);
        l->dups = 0;
    }
    if (l->held) {
        log_info("link_held", "envelopes=%lu why=no-router-yet held_bytes=%zu", l->held,
                 l->limbo.len);
        l->held = 0;
    }
    if (any_up && (l->fb_peer || l->fb_rq)) {
        log_info("link_direct_fallback", "to_sm=%lu to_instance=%lu", l->fb_peer, l->fb_rq);
        l->fb_peer = l->fb_rq = 0;
    }
}

/* An sm's ROUTER for direct traffic, bound where o->direct_bind says and
 * announced at `advertise` (a host) when given. */
static sb_rc link_direct_bind(struct link *l, const char *bind, const char *advertise)
{
    size_t sz = sizeof l->direct_ep;
    l->direct = calloc(1, sizeof *l->direct);
    if (!l->direct || zs_open(l, l->direct, ZMQ_ROUTER) != SB_OK)
        return SB_ERROR;
    if (zmq_bind(l->direct->sock, bind) != 0 ||
        zmq_getsockopt(l->direct->sock, ZMQ_LAST_ENDPOINT, l->direct_ep, &sz) != 0) {
        log_error("link_direct_bind_failed", "endpoint=%s err=%s", sb_log_q(bind),
                  sb_log_q(zmq_strerror(errno)));
        return SB_ERROR;
    }
    const char *port = strrchr(l->direct_ep, ':');
    if (advertise && *advertise && port && !strncmp(l->direct_ep, "tcp://", 6)) {
        char ep[RT_DIRECT_MAX + 1];
        int n = snprintf(ep, sizeof ep, "tcp://%s%s", advertise, port);
        if (n < 0 || (size_t)n >= sizeof ep) {
            log_error("link_direct_advertise_bad", "host=%s", sb_log_q(advertise));
            return SB_ERROR;
        }
        strcpy(l->direct_ep, ep);
    }
    log_info("link_direct_bound", "endpoint=%s bind=%s", sb_log_q(l->direct_ep), sb_log_q(bind));
    return SB_OK;
}

/* The routers: a comma-separated list of endpoints. */
static sb_rc link_socket(struct link *l, const struct link_opts *o)
{
    l->zctx = zmq_ctx_new();
    if (!l->zctx)
        return SB_ERROR;
    l->local_router = 1;
    char *list = strdup(o->endpoint), *save = NULL;
    if (!list)
        return SB_ERROR;
    for (char *t = strtok_r(list, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        if (l->nrt == LINK_ROUTERS_MAX || strlen(t) > RT_DIRECT_MAX) {
            log_error("link_routers_bad", "routers=%s max=%d", sb_log_q(o->endpoint),
                      LINK_ROUTERS_MAX);
            free(list);
            return SB_ERROR;
        }
        struct link_rt *r = &l->rt[l->nrt++];
        strcpy(r->endpoint, t);
        r->unacked = (struct sb_buf)SB_BUF_INIT;
        l->local_router &= rt_endpoint_local(r->endpoint);
        if (rt_open(l, r) != SB_OK) {
            free(list);
            return SB_ERROR;
        }
    }
    free(list);
    if (!l->nrt) {
        log_error("link_routers_bad", "routers=\"\" note=\"no router endpoint\"");
        return SB_ERROR;
    }
    l->pref = (size_t)(rt_fnv1a64(RT_FNV_OFFSET, l->instance, strlen(l->instance)) % l->nrt);
    if (o->direct_bind && o->direct_bind[0]) {
        if (sb_curve_zap_start(l->curve, l->zctx) != SB_OK)
            return SB_ERROR;
        return link_direct_bind(l, o->direct_bind, o->direct_advertise);
    }
    return SB_OK;
}

static void link_watchers(struct link *l)
{
    ev_prepare_init(&l->prepare, link_on_prepare);
    ev_set_priority(&l->prepare, EV_MINPRI);    /* after every other prepare that may send */
    ev_check_init(&l->check, link_on_check);
    ev_idle_init(&l->idle, link_on_idle);
    /* Quick until a router answers (link_on_hello), then every heartbeat. */
    double first = l->heartbeat < 0.1 ? l->heartbeat : 0.1;
    ev_timer_init(&l->hello, link_on_hello, first, first);
    ev_timer_init(&l->flush_timer, link_on_flush_timer, 0., 0.);
    ev_check_init(&l->lease_check, link_on_lease_check);
    ev_set_priority(&l->lease_check, EV_MAXPRI);   /* before any client input is read */
    l->prepare.data = l->check.data = l->idle.data = l->hello.data = l->flush_timer.data = l;
    l->lease_check.data = l;
    ev_prepare_start(l->loop, &l->prepare);
    ev_check_start(l->loop, &l->check);
    ev_check_start(l->loop, &l->lease_check);
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
    l->window = o->batch_window >= 0 ? o->batch_window : 0;
    l->router_wait = o->router_wait > 0 ? o->router_wait : 10;
    l->curve = o->curve;
    l->started = ev_now(loop);
    l->limbo = (struct sb_buf)SB_BUF_INIT;
    l->seq = (uint64_t)(sb_now() * 1e6);
    strcpy(l->instance, o->instance);
    strcpy(l->kind, o->kind);
    rt_reg_init(&l->members);
    link_new_inc(l);
    l->domains = strdup(o->domains ? o->domains : "");
    if (!l->domains || link_socket(l, o) != SB_OK) {
        link_free(l);
        return NULL;
    }
    link_watchers(l);
    link_send_hello(l, 0);
    log_info("link_up", "routers=%s kind=%s inc=%s heartbeat=%.3g direct=%s",
             sb_log_q(o->endpoint), l->kind, l->inc, l->heartbeat,
             sb_log_q(l->direct ? l->direct_ep : ""));
    return l;
}

void link_free(struct link *l)
{
    if (!l)
        return;
    if (l->zctx && l->nrt) {
        link_flush(l);          /* the linger period still delivers it */
        if (l->leased)
            link_send_hello(l, 1);  /* give the lease back: see router/README.md */
    }
    if (ev_is_active(&l->prepare)) {
        ev_prepare_stop(l->loop, &l->prepare);
        ev_check_stop(l->loop, &l->check);
        ev_check_stop(l->loop, &l->lease_check);
        ev_idle_stop(l->loop, &l->idle);
        ev_timer_stop(l->loop, &l->hello);
        ev_timer_stop(l->loop, &l->flush_timer);
    }
    for (size_t i = 0; i < l->npeers; i++)
        peer_free(l->peers[i]);
    if (l->direct) {
        zs_close(l->direct);
        free(l->direct);
    }
    for (size_t i = 0; i < l->nrq; i++) {
        for (size_t j = 0; j < l->rq[i].n; j++)
            zmq_msg_close(&l->rq[i].f[j]);
        free(l->rq[i].f);
    }
    free(l->rq);
    free(l->seen);
    dc_free(l);
    for (size_t i = 0; i < l->nrt; i++) {
        zs_close(&l->rt[i].z);
        rt_mon_close(l, &l->rt[i]);
        sb_buf_free(&l->rt[i].unacked);
    }
    sb_buf_free(&l->limbo);
    if (l->zctx)
        zmq_ctx_term(l->zctx);
    rt_reg_free(&l->members);
    rt_addrs_free(&l->addrs);
    free(l->domains);
    free(l);
}

/* No router takes an envelope now. While a router socket is new (made
 * anew after its router fell silent or refused, e.g. this process was
 * frozen past its lease and has just woken up; or at start) it may
 * connect any moment: the envelope waits in limbo behind the older ones,
 * re-sent in order as soon as a router acknowledges us, instead of
 * failing (a thawed sm failed hundreds of deliveries in the 0.1 s before
 * its new sockets connected). Past LINK_HOLD_S with none connected, sends
 * fail again and the caller answers with an error. */
static int link_may_hold(const struct link *l)
{
    double now = ev_now(l->loop);
    for (size_t i = 0; i < l->nrt; i++)
        if (l->rt[i].reopen || now - l->rt[i].opened_at < LINK_HOLD_S)
            return 1;
    return 0;
}

static sb_rc link_hold(struct link *l, const uint8_t *hdr, size_t hlen, const char *body,
                       size_t blen)
{
    uint32_t hl = (uint32_t)hlen, bl = (uint32_t)blen;
    if (l->limbo.len + 8 + hlen + blen > LINK_LIMBO_MAX)
        return SB_ERROR;
    size_t len = l->limbo.len;
    if (sb_buf_add(&l->limbo, &hl, sizeof hl) != SB_OK || sb_buf_add(&l->limbo, hdr, hlen) != SB_OK ||
        sb_buf_add(&l->limbo, &bl, sizeof bl) != SB_OK || sb_buf_add(&l->limbo, body, blen) != SB_OK) {
        l->limbo.len = len;     /* never half an envelope */
        return SB_ERROR;
    }
    l->held++;
    return SB_OK;
}

/* The router path: the header gets ENV_F_SEQ and this instance's next
 * seq, so a receiver drops the copy of a re-send it already had. Seqs
 * start at the wall clock in µs, so a restarted instance's are above its
 * predecessor's (it never sends a million envelopes a second). */
static sb_rc link_main_send(struct link *l, const uint8_t *hdr, size_t hlen, const char *body,
                            size_t blen, const struct env_hdr *h)
{
    uint8_t sh[ENV_HDR_MAX];
    if (!env_has_seq(hdr[1], hdr[3] | ENV_F_SEQ) || (hdr[3] & ENV_F_SEQ) || hlen + 8 > sizeof sh) {
        memcpy(sh, hdr, hlen < sizeof sh ? hlen : sizeof sh);   /* BOUNCE, or stamped */
    } else {
        uint64_t q = ++l->seq;
        memcpy(sh, hdr, hlen);
        sh[3] |= ENV_F_SEQ;
        for (int i = 0; i < 8; i++)
            sh[hlen + i] = (uint8_t)(q >> (56 - 8 * i));
        hlen += 8;
    }
    if (l->limbo.len)
        link_resend(l);         /* older first */
    if (!l->limbo.len && rt_send_any(l, sh, hlen, body, blen) == 0)
        return SB_OK;
    if (link_may_hold(l) && link_hold(l, sh, hlen, body, blen) == SB_OK)
        return SB_OK;           /* sent when a router takes the limbo (rt_on_ack) */
    log_warn("link_send_failed", "kind=%s key=%s err=%s", env_kind_name(h->kind),
             sb_log_q(h->key), l->limbo.len ? "held-envelopes-first" : "no-router");
    return SB_ERROR;
}

sb_rc link_send(struct link *l, const struct env_hdr *h, const char *body, size_t body_len)
{
    uint8_t hdr[ENV_HDR_MAX];
    long n = env_encode(h, hdr, sizeof hdr);
    if (n < 0) {
        log_error("link_encode_failed", "kind=%s key=%s", env_kind_name(h->kind), sb_log_q(h->key));
        return SB_ERROR;
    }
    if (!body)
        body = "";
    if (h->kind == ENV_STANZA)
        l->st_out++;
    struct link_zs *peer = link_direct_peer(l, h);
    if (peer) {
        if (dc_send(l, peer, hdr, (size_t)n, body, body_len) == 0) {
            sb_metric_inc(&link_mx_sent_direct);
            return SB_OK;
        }
        l->fb_peer++;
    }
    if (l->direct && h->route == ENV_ROUTE_INSTANCE && strlen(h->key) <= ENV_NAME_MAX &&
        (h->kind == ENV_STANZA || h->kind == ENV_CONTROL) &&
        rq_send(l, h->key, hdr, (size_t)n, body, body_len) == 0) {
        sb_metric_inc(&link_mx_sent_direct);
        return SB_OK;
    }
    sb_rc rc = link_main_send(l, hdr, (size_t)n, body, body_len, h);
    sb_metric_inc(rc == SB_OK ? &link_mx_sent_router : &link_mx_send_failed);
    return rc;
}

const char *link_instance(const struct link *l)
{
    return l->instance;
}

const struct rt_registry *link_members(const struct link *l)
{
    return &l->members;
}

void link_set_on_state(struct link *l, link_state_cb cb, void *ud)
{
    l->on_state = cb;
    l->state_ud = ud;
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
    link_send_hello(l, 0);
}
