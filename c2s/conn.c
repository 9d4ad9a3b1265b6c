/* conn.c — the life of a c2s_conn (memory, the sid table the router side
 * uses to deliver stanzas, state, the deadline timer, closing) and the TCP
 * transport: accepting, and the session's side of common/tlsconn (which
 * reads, writes without copying when the socket takes the bytes, buffers
 * the rest, runs TLS and the lingering close). BOSH and WebSocket sessions
 * (web_*.c) use the same conn with their own transport and fd -1.
 *
 * A conn is never freed inside a callback that may still touch it: close
 * marks it CLOSING and its timer frees it on a later loop turn. Closing
 * lingers (like nginx): flush, shut the write side, then read and discard
 * until the peer closes or CONN_LINGER passes, so a client that is still
 * sending gets our stream error instead of a reset. */
#define _GNU_SOURCE              /* accept4 */
#include "c2s.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONN_LINGER     2.0     /* seconds to flush output after close */


static struct sb_listen conn_lis;    /* every listener of the process */

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_free_soon(struct c2s_conn *c);
static void conn_tcp_open(struct c2s_conn *c, const char *from, const char *to);
static void conn_tcp_write(struct c2s_conn *c, const char *data, size_t len);
static void conn_tcp_end(struct c2s_conn *c);
static void conn_tcp_close(struct c2s_conn *c, enum c2s_state was);
static void conn_tcp_input(void *ud, const char *data, size_t len);
static void conn_tcp_secured(void *ud);
static void conn_tcp_dead(void *ud, const char *why);

static const struct tlsconn_ops conn_tcp_ops = {
    .input = conn_tcp_input,
    .secured = conn_tcp_secured,
    .dead = conn_tcp_dead,
};

/* Connections and bound sessions by transport (sb-c2s: tcp; sb-bosh: bosh
 * and ws). A BOSH or WebSocket "connection" is its XMPP session's wire. */
enum { CONN_MX_TCP, CONN_MX_BOSH, CONN_MX_WS, CONN_MX_N };
#define CONN_MX(tp)                                                                    \
    SB_GAUGE(conn_mx_open_##tp, "sb_connections", "transport=\"" #tp "\"",             \
             "Client connections open, by transport")                                 \
    SB_COUNTER(conn_mx_opened_##tp, "sb_connections_opened_total",                     \
               "transport=\"" #tp "\"", "Client connections accepted, by transport")   \
    SB_GAUGE(conn_mx_sess_##tp, "sb_sessions", "transport=\"" #tp "\"",                \
             "Bound client sessions, by transport")
CONN_MX(tcp)
CONN_MX(bosh)
CONN_MX(ws)
static struct sb_metric *const conn_mx_open[] = {&conn_mx_open_tcp, &conn_mx_open_bosh,
                                                 &conn_mx_open_ws};
static struct sb_metric *const conn_mx_opened[] = {&conn_mx_opened_tcp, &conn_mx_opened_bosh,
                                                   &conn_mx_opened_ws};
static struct sb_metric *const conn_mx_sess[] = {&conn_mx_sess_tcp, &conn_mx_sess_bosh,
                                                 &conn_mx_sess_ws};

static int conn_mx_of(const struct c2s_conn *c)
{
    if (c->tp == &c2s_tcp_transport)
        return CONN_MX_TCP;
    return strcmp(c->tp->name, "ws") == 0 ? CONN_MX_WS : CONN_MX_BOSH;
}

const struct c2s_transport c2s_tcp_transport = {
    .name = "tcp",
    .framed = 0,
    .starttls = 1,
    .open = conn_tcp_open,
    .write = conn_tcp_write,
    .end = conn_tcp_end,
    .close = conn_tcp_close,
    .release = NULL,
};

const char *c2s_lis_kind_name(enum c2s_lis_kind k)
{
    switch (k) {
    case C2S_LIS_STARTTLS: return "starttls";
    case C2S_LIS_TLS:      return "direct";
    case C2S_LIS_HTTP:     return "http";
    case C2S_LIS_HTTPS:    return "https";
    }
    return "?";
}

const char *c2s_state_name(enum c2s_state s)
{
    switch (s) {
    case C2S_S_TLS_HANDSHAKE: return "tls-handshake";
    case C2S_S_CONNECTED:     return "connected";
    case C2S_S_STREAM_OPEN:   return "stream-open";
    case C2S_S_AUTHENTICATED: return "authenticated";
    case C2S_S_BOUND:         return "bound";
    case C2S_S_CLOSING:       return "closing";
    }
    return "?";
}

/* ---- conn memory ---------------------------------------------------------- */

/* Conns come from page-sized slabs, apart from the heap: login leaves
 * ~10 KiB of parser and SASL blocks behind, and with no long-lived small
 * block pinned between them malloc_trim can give those pages back. */
#define CONN_SLAB 64
static struct c2s_conn *conn_spare;

static struct c2s_conn *conn_alloc(void)
{
    if (!conn_spare) {
        size_t sz = CONN_SLAB * sizeof(struct c2s_conn);
        struct c2s_conn *slab = mmap(NULL, sz, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (slab == MAP_FAILED)
            return NULL;
        for (int i = 0; i < CONN_SLAB; i++) {
            slab[i].next = conn_spare;
            conn_spare = &slab[i];
        }
    }
    struct c2s_conn *c = conn_spare;
    conn_spare = c->next;
    memset(c, 0, sizeof *c);
    return c;
}

static void conn_release(struct c2s_conn *c)
{
    memset(c, 0, sizeof *c);
    c->next = conn_spare;
    conn_spare = c;
}

sb_rc c2s_conn_set_jid(struct c2s_conn *c, const char *jid)
{
    size_t n = strlen(jid) + 1;
    char *dst = n <= sizeof c->jid_in ? c->jid_in : malloc(n);
    if (!dst)
        return SB_ERROR;
    memmove(dst, jid, n);
    if (c->jid && c->jid != c->jid_in && c->jid != dst)
        free(c->jid);
    c->jid = dst;
    return SB_OK;
}

/* ---- session table ------------------------------------------------------ */

static struct c2s_conn **conn_tab;
static size_t conn_tab_size, conn_tab_count;

static uint64_t conn_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static void conn_tab_grow(void)
{
    size_t nsize = conn_tab_size ? conn_tab_size * 2 : 1024;
    struct c2s_conn **nt = calloc(nsize, sizeof *nt);
    if (!nt)
        return;                     /* keep the old table; chains get longer */
    for (size_t i = 0; i < conn_tab_size; i++) {
        struct c2s_conn *c = conn_tab[i], *next;
        for (; c; c = next) {
            next = c->hnext;
            size_t b = conn_hash(c->sid) & (nsize - 1);
            c->hnext = nt[b];
            nt[b] = c;
        }
    }
    free(conn_tab);
    conn_tab = nt;
    conn_tab_size = nsize;
}

void c2s_table_add(struct c2s_conn *c)
{
    if (c->flags & C2S_F_IN_TABLE)
        return;
    if (conn_tab_count >= conn_tab_size)
        conn_tab_grow();
    if (!conn_tab)
        return;
    size_t b = conn_hash(c->sid) & (conn_tab_size - 1);
    c->hnext = conn_tab[b];
    conn_tab[b] = c;
    conn_tab_count++;
    c->flags |= C2S_F_IN_TABLE;
}

void c2s_table_del(struct c2s_conn *c)
{
    if (!(c->flags & C2S_F_IN_TABLE))
        return;
    struct c2s_conn **pp = &conn_tab[conn_hash(c->sid) & (conn_tab_size - 1)];
    for (; *pp; pp = &(*pp)->hnext) {
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    }
    c->hnext = NULL;
    conn_tab_count--;
    c->flags &= ~C2S_F_IN_TABLE;
}

struct c2s_conn *c2s_table_find(const char *sid)
{
    if (!conn_tab)
        return NULL;
    struct c2s_conn *c = conn_tab[conn_hash(sid) & (conn_tab_size - 1)];
    for (; c; c = c->hnext)
        if (strcmp(c->sid, sid) == 0)
            return c;
    return NULL;
}

void c2s_conn_set_state(struct c2s_conn *c, enum c2s_state s)
{
    if (c->state == s)
        return;
    if (s == C2S_S_BOUND) {
        c2s.nsessions++;
        sb_metric_inc(conn_mx_sess[conn_mx_of(c)]);
    } else if (c->state == C2S_S_BOUND) {
        c2s.nsessions--;
        sb_metric_dec(conn_mx_sess[conn_mx_of(c)]);
    }
    if (c->state <= C2S_S_STREAM_OPEN && s > C2S_S_STREAM_OPEN)
        c2s_limits_conn_authed(c);
    int changed = (s == C2S_S_BOUND || c->state == C2S_S_BOUND);
    c->state = (uint8_t)s;
    if (changed)
        c2s_sessions_changed();
}

/* ---- listening ---------------------------------------------------------- */

static void conn_accepted(int fd, const struct sockaddr_storage *ss, int tag, void *ud);

sb_rc c2s_listen_open(const char *addr, int port, enum c2s_lis_kind kind)
{
    if (!conn_lis.loop)
        sb_listen_init(&conn_lis, c2s.loop, conn_accepted, NULL);
    if (sb_listen_add(&conn_lis, addr, port, 1024, (int)kind) != SB_OK)
        return SB_ERROR;
    log_info("listen", "addr=%s port=%d tls=%s", addr, port, c2s_lis_kind_name(kind));
    return SB_OK;
}

/* A conn in the process list with its timer ready and login deadline set. */
static struct c2s_conn *conn_create(const struct c2s_transport *tp, int fd)
{
    struct c2s_conn *c = conn_alloc();
    if (!c)
        return NULL;
    c->tp = tp;
    tlsconn_init(&c->tc, c2s.loop, fd, &conn_tcp_ops, c, c->peer);
    ev_init(&c->timer, conn_timer_cb);
    c->timer.data = c;
    c->login_deadline = ev_now(c2s.loop) + c2s.cfg.login_timeout;
    c->last_rx = ev_now(c2s.loop);
    c2s_rate_init(c);
    c->next = c2s.conns;
    if (c2s.conns)
        c2s.conns->prev = c;
    c2s.conns = c;
    c2s.nconns++;
    sb_metric_inc(conn_mx_open[conn_mx_of(c)]);
    sb_metric_inc(conn_mx_opened[conn_mx_of(c)]);
    c->state = C2S_S_CONNECTED;
    return c;
}

struct c2s_conn *c2s_conn_new_session(const struct c2s_transport *tp, void *tctx,
                                      const char *peer, int secure, enum c2s_new_kind kind)
{
    struct c2s_conn *c = conn_create(tp, -1);
    if (!c)
        return NULL;
    c->tctx = tctx;
    if (secure)
        c->flags |= C2S_F_TLS;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    if (kind == C2S_NEW_COUNTED)
        c2s_limits_conn_new(c);    /* refused: its stream begins with the error */
    c2s_conn_arm_timer(c);
    return c;
}

static void conn_new(int fd, const struct sockaddr_storage *ss, int direct_tls)
{
    struct c2s_conn *c = conn_create(&c2s_tcp_transport, fd);
    if (!c) {
        close(fd);
        log_error("accept_nomem", "fd=%d", fd);
        return;
    }
    tlsconn_peer_name(c->peer, sizeof c->peer, (const struct sockaddr *)ss);
    log_debug("accept", "peer=%s tls=%s", c->peer, direct_tls ? "direct" : "starttls");
    int refused = c2s_limits_conn_new(c);
    if (c2s_stream_new(c) != SB_OK) {
        c2s_conn_close(c, "nomem");
        return;
    }
    c2s_conn_arm_timer(c);
    if (refused && !direct_tls) {
        /* Said at once, without waiting for (or reading) its header; on
         * the direct TLS port after the handshake, at its header. */
        c2s_limits_refuse_stream(c);
        return;
    }
    if (direct_tls) {
        c->flags |= C2S_F_DIRECT_TLS;
        c2s_conn_starttls(c);
        return;
    }
    tlsconn_want(&c->tc);
}

static void conn_accepted(int fd, const struct sockaddr_storage *ss, int tag, void *ud)
{
    enum c2s_lis_kind kind = (enum c2s_lis_kind)tag;
    if (kind == C2S_LIS_HTTP || kind == C2S_LIS_HTTPS) {
        char peer[64];
        tlsconn_peer_name(peer, sizeof peer, (const struct sockaddr *)ss);
        if (c2s.fe && c2s.fe->accept_http)
            c2s.fe->accept_http(fd, peer, kind == C2S_LIS_HTTPS);
        else
            close(fd);
        return;
    }
    conn_new(fd, ss, kind == C2S_LIS_TLS);
}

void c2s_listen_start(void)
{
    if (conn_lis.loop)
        sb_listen_start(&conn_lis);
}

void c2s_listen_stop(void)
{
    sb_listen_close(&conn_lis);
}

/* ---- the TCP transport -------------------------------------------------- */

SB_STANZA_COUNTERS(conn_mx_out, "sb_stanzas_out_total",
                   "Stanzas written to clients, by type")

void c2s_conn_write(struct c2s_conn *c, const char *data, size_t len)
{
    if (c->state == C2S_S_CLOSING || len == 0)
        return;
    /* Every write is one whole element: stanzas are counted, the rest
     * (features, SASL, stream errors) is not. */
    enum sb_stanza_kind k = sb_stanza_kind_of_xml(data, len);
    if (k != SB_ST_OTHER)
        sb_metric_inc(conn_mx_out[k]);
    c->tp->write(c, data, len);
}

void c2s_conn_writes(struct c2s_conn *c, const char *s)
{
    c2s_conn_write(c, s, strlen(s));
}

static struct sb_buf conn_hdr;      /* scratch for stream headers */

/* Our stream header; `to` echoes the client's `from` when it gave one. */
static void conn_tcp_open(struct c2s_conn *c, const char *from, const char *to)
{
    struct sb_buf *b = &conn_hdr;
    sb_buf_reset(b);
    sb_buf_adds(b, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                   "xmlns:stream='http://etherx.jabber.org/streams' id='");
    sb_buf_adds(b, c->sid);
    if (from) {
        sb_buf_adds(b, "' from='");
        xml_escape_attr(b, from, strlen(from));
    }
    if (to) {
        sb_buf_adds(b, "' to='");
        xml_escape_attr(b, to, strlen(to));
    }
    sb_buf_adds(b, "' version='1.0' xml:lang='en'>");
    tlsconn_hold_next(&c->tc);        /* the features follow: one send for both */
    conn_tcp_write(c, b->data, b->len);
}

static void conn_tcp_end(struct c2s_conn *c)
{
    conn_tcp_write(c, "</stream:stream>", 16);
}

static void conn_tcp_write(struct c2s_conn *c, const char *data, size_t len)
{
    if (c->state == C2S_S_CLOSING || len == 0)
        return;
    if (tlsconn_write(&c->tc, data, len, c2s.cfg.max_pending) != TLSCONN_FULL)
        return;
    /* A client that does not read: tell it why (whole units only are
     * queued, so the error lands on an element boundary) and drop it. */
    log_warn("slow_reader", "peer=%s sid=%s jid=%s pending=%zu", c->peer, c->sid,
             c->jid ? c->jid : "-", c->tc.out.len);
    static const char err[] =
        "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        "</stream:error></stream:stream>";
    tlsconn_queue(&c->tc, err, sizeof err - 1);
    c2s_conn_close(c, "slow-reader");
}

static void conn_tcp_input(void *ud, const char *data, size_t len)
{
    struct c2s_conn *c = ud;
    c2s_keepalive_seen(c);
    c2s_stream_input(c, data, len);
    if (c->state != C2S_S_CLOSING && c2s_rate_bytes(c, len) > 0) {
        /* Over max_rate: leave the rest in the kernel (back-pressure). */
        c->flags |= C2S_F_THROTTLED;
        tlsconn_pause(&c->tc);
        c2s_conn_arm_timer(c);
    }
}

/* TLS on the socket: at once (direct TLS: SNI picks the certificate), or
 * once <proceed/> (queued by stream.c) has been written (the certificate
 * of the stream's `to`). */
void c2s_conn_starttls(struct c2s_conn *c)
{
    gnutls_session_t s;
    const char *domain = (c->flags & C2S_F_DIRECT_TLS) ? NULL : c->domain;
    c2s_conn_set_state(c, C2S_S_TLS_HANDSHAKE);
    if (c2s_tls_session_new(c->tc.fd, domain, &s) != SB_OK) {
        c2s_conn_close(c, "tls-init-failed");
        return;
    }
    c->flags |= C2S_F_TLS;
    tlsconn_starttls(&c->tc, s);
}

/* A new stream starts over TLS (RFC 6120 §5.4.3.3). */
static void conn_tcp_secured(void *ud)
{
    c2s_conn_set_state(ud, C2S_S_CONNECTED);
}

void c2s_conn_free_soon(struct c2s_conn *c)
{
    c->flags |= C2S_F_EOF;
    conn_free_soon(c);
}

static void conn_free_soon(struct c2s_conn *c)
{
    ev_timer_stop(c2s.loop, &c->timer);
    ev_timer_set(&c->timer, 0., 0.);
    ev_timer_start(c2s.loop, &c->timer);
}

/* ---- close, timers ------------------------------------------------------ */

static void conn_free(struct c2s_conn *c)
{
    ev_timer_stop(c2s.loop, &c->timer);
    c2s_table_del(c);
    c2s_limits_conn_gone(c);
    if (c->tp->release)
        c->tp->release(c);
    tlsconn_free(&c->tc);
    xml_stream_free(c->xs);
    sasl_free(c->sasl);
    c2s_register_release(c);
    c2s_sasl2_free(c);
    if (c->jid != c->jid_in)
        free(c->jid);
    free(c->bind_iq);
    c2s_sm_free(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        c2s.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c2s.nconns--;
    sb_metric_dec(conn_mx_open[conn_mx_of(c)]);
    conn_release(c);
    if (c2s.stopping && !c2s.conns)
        ev_break(c2s.loop, EVBREAK_ALL);
}

void c2s_conn_free_all(void)
{
    c2s.stopping = 0;                 /* no ev_break from conn_free now */
    while (c2s.conns)
        conn_free(c2s.conns);
}

void c2s_conn_close(struct c2s_conn *c, const char *reason)
{
    if (c->state == C2S_S_CLOSING)
        return;
    /* Refused by limits.c: logged there, once per address per period. */
    sb_log(c->flags & C2S_F_REFUSED ? SB_LOG_DEBUG : SB_LOG_INFO, "close",
           "peer=%s sid=%s jid=%s state=%s reason=%s", c->peer,
             *c->sid ? c->sid : "-", c->jid ? c->jid : "-",
             c2s_state_name(c->state), reason);
    if (c->state == C2S_S_BOUND)
        c2s_route_end(c);
    if (c->flags & C2S_F_ANON)
        c2s_anon_release(c);
    c2s_table_del(c);
    if (c->sasl && !(c->flags & C2S_F_IN_SASL_CB)) {
        sasl_free(c->sasl);
        c->sasl = NULL;
    }
    enum c2s_state was = (enum c2s_state)c->state;
    c2s_conn_set_state(c, C2S_S_CLOSING);
    c->tp->close(c, was);
}

/* Lingering close of a TCP connection (tlsconn flushes and drains; the
 * timer frees c once the peer is gone or CONN_LINGER passed). */
static void conn_tcp_close(struct c2s_conn *c, enum c2s_state was)
{
    c->close_deadline = ev_now(c2s.loop) + CONN_LINGER;
    if (tlsconn_close(&c->tc))
        c->flags |= C2S_F_EOF;
    if (c->flags & C2S_F_EOF)
        conn_free_soon(c);
    else
        c2s_conn_arm_timer(c);
}

/* The peer is gone (EOF, reset, TLS failure): close without lingering. */
static void conn_tcp_dead(void *ud, const char *why)
{
    struct c2s_conn *c = ud;
    c->flags |= C2S_F_EOF;
    if (c->state == C2S_S_CLOSING)
        conn_free_soon(c);
    else
        c2s_conn_close(c, why);
}


void c2s_conn_arm_timer(struct c2s_conn *c)
{
    double next = 0;
    int any = 0;
    if (c->state == C2S_S_CLOSING) {
        next = c->close_deadline;
        any = 1;
    } else if (c->state == C2S_S_BOUND) {
        if (c->xs && c2s.cfg.parser_idle > 0) {
            /* Already past (mid-stanza when it came): look again later. */
            double now = ev_now(c2s.loop), at = c->last_rx + c2s.cfg.parser_idle;
            next = at > now ? at : now + c2s.cfg.parser_idle;
            any = 1;
        }
        double ka = c2s_keepalive_next(c);
        if (ka > 0 && (!any || ka < next)) {
            next = ka;
            any = 1;
        }
    } else {
        if (c->state != C2S_S_BOUND) {
            next = c->login_deadline;
            any = 1;
        }
        if ((c->flags & C2S_F_BIND_WAIT) && (!any || c->bind_deadline < next)) {
            next = c->bind_deadline;
            any = 1;
        }
    }
    if ((c->flags & C2S_F_THROTTLED) && c->state != C2S_S_CLOSING) {
        double at = c2s_rate_resume_at(c);
        if (!any || at < next)
            next = at;
        any = 1;
    }
    ev_timer_stop(c2s.loop, &c->timer);
    if (!any)
        return;
    double after = next - ev_now(c2s.loop);
    ev_timer_set(&c->timer, after > 0 ? after : 0., 0.);
    ev_timer_start(c2s.loop, &c->timer);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct c2s_conn *c = w->data;
    double now = ev_now(loop);
    if (c->state == C2S_S_CLOSING) {
        if ((c->flags & C2S_F_EOF) || now >= c->close_deadline)
            conn_free(c);
        else
            c2s_conn_arm_timer(c);
        return;
    }
    if ((c->flags & C2S_F_THROTTLED) && now + 1e-3 >= c2s_rate_resume_at(c)) {
        c->flags &= ~C2S_F_THROTTLED;
        if (c->tc.fd >= 0)
            tlsconn_resume(&c->tc);
        else if (c->tp->resume)
            c->tp->resume(c);
        if (c->state == C2S_S_CLOSING)
            return;
    }
    if (c->state == C2S_S_BOUND) {
        if (c2s_keepalive_check(c, now))
            return;
        if (c2s.cfg.parser_idle > 0 && now >= c->last_rx + c2s.cfg.parser_idle)
            c2s_stream_hibernate(c);
        c2s_conn_arm_timer(c);       /* keepalive, or mid-stanza: look again later */
        return;
    }
    if ((c->flags & C2S_F_BIND_WAIT) && now >= c->bind_deadline)
        c2s_bind_timeout(c);
    if (c->state != C2S_S_BOUND && c->state != C2S_S_CLOSING && now >= c->login_deadline) {
        c2s_stream_error(c, "connection-timeout", "login-timeout");
        return;
    }
    if (c->state != C2S_S_CLOSING)
        c2s_conn_arm_timer(c);
}
