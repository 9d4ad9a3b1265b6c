/* conn.c — one server-to-server connection, in either direction:
 * accepting and connecting, its state, closing and the deadline timer. The
 * socket, TLS records, output buffer and lingering close are
 * common/tlsconn's.
 *
 * A conn is never freed inside a callback that may still touch it: close
 * marks it CLOSING and its timer frees it on a later loop turn, after the
 * output was flushed (or CONN_LINGER passed). */
#define _GNU_SOURCE              /* accept4 */
#include "s2s.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONN_LINGER     2.0


static struct sb_listen conn_lis;

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_input(void *ud, const char *data, size_t len);
static void conn_secured(void *ud);
static void conn_connected(void *ud, int err);
static void conn_dead(void *ud, const char *why);

static const struct tlsconn_ops conn_ops = {
    .input = conn_input,
    .secured = conn_secured,
    .connected = conn_connected,
    .dead = conn_dead,
};

const char *s2s_state_name(enum s2s_state s)
{
    switch (s) {
    case S2S_S_CONNECTING:    return "connecting";
    case S2S_S_TLS_HANDSHAKE: return "tls-handshake";
    case S2S_S_WAIT_HEADER:   return "wait-header";
    case S2S_S_WAIT_FEATURES: return "wait-features";
    case S2S_S_STARTTLS:      return "starttls";
    case S2S_S_SASL:          return "sasl";
    case S2S_S_DIALBACK:      return "dialback";
    case S2S_S_OPEN:          return "open";
    case S2S_S_CLOSING:       return "closing";
    }
    return "?";
}

const char *s2s_auth_name(int a)
{
    switch (a) {
    case S2S_AUTH_EXTERNAL: return "external";
    case S2S_AUTH_DIALBACK: return "dialback";
    case S2S_AUTH_COMPONENT: return "handshake";
    default:                return "none";
    }
}

/* Server-to-server streams by direction (common/metrics.h). */
SB_GAUGE(conn_mx_in, "sb_s2s_connections", "dir=\"in\"", "s2s streams open, by direction")
SB_GAUGE(conn_mx_out, "sb_s2s_connections", "dir=\"out\"", "s2s streams open, by direction")
SB_COUNTER(conn_mx_in_total, "sb_s2s_connections_opened_total", "dir=\"in\"",
           "s2s streams accepted (in) or connected (out)")
SB_COUNTER(conn_mx_out_total, "sb_s2s_connections_opened_total", "dir=\"out\"",
           "s2s streams accepted (in) or connected (out)")

static struct s2s_conn *conn_new(int fd, enum s2s_dir dir)
{
    struct s2s_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    tlsconn_init(&c->tc, s2s.loop, fd, &conn_ops, c, c->peer);
    c->dir = (uint8_t)dir;
    c->cert_ok = -1;
    c->serial = ++s2s.next_serial;
    c->since = c->last_active = ev_now(s2s.loop);
    ev_init(&c->timer, conn_timer_cb);
    c->timer.data = c;
    if (s2s_stream_new(c) != SB_OK) {
        free(c);
        return NULL;
    }
    c->next = s2s.conns;
    if (s2s.conns)
        s2s.conns->prev = c;
    s2s.conns = c;
    s2s.nconns++;
    sb_metric_inc(c->dir == S2S_OUT ? &conn_mx_out : &conn_mx_in);
    sb_metric_inc(c->dir == S2S_OUT ? &conn_mx_out_total : &conn_mx_in_total);
    s2s_sessions_changed();
    return c;
}

struct s2s_conn *s2s_conn_by_serial(unsigned long serial)
{
    for (struct s2s_conn *c = s2s.conns; c; c = c->next)
        if (c->serial == serial && c->state != S2S_S_CLOSING)
            return c;
    return NULL;
}


/* ---- listening ---------------------------------------------------------- */

const char *s2s_dir_name(int dir)
{
    return dir == S2S_OUT ? "out" : dir == S2S_COMP ? "component" : "in";
}

static void conn_accepted(int fd, const struct sockaddr_storage *ss, int kind, void *ud);

sb_rc s2s_listen_open(const char *addr, int port, int kind)
{
    if (!conn_lis.loop)
        sb_listen_init(&conn_lis, s2s.loop, conn_accepted, NULL);
    if (sb_listen_add(&conn_lis, addr, port, 512, kind) != SB_OK)
        return SB_ERROR;
    log_info("listen", "addr=%s port=%d tls=%s", addr, port,
             kind == S2S_LIS_DIRECT_TLS ? "direct" : kind == S2S_LIS_COMPONENT ? "none-component"
                                                                              : "starttls");
    return SB_OK;
}

static void conn_accepted(int fd, const struct sockaddr_storage *ss, int kind, void *ud)
{
    int direct_tls = kind == S2S_LIS_DIRECT_TLS;
    struct s2s_conn *c = conn_new(fd, kind == S2S_LIS_COMPONENT ? S2S_COMP : S2S_IN);
    if (!c) {
        close(fd);
        log_error("accept_nomem", "fd=%d", fd);
        return;
    }
    tlsconn_peer_name(c->peer, sizeof c->peer, (const struct sockaddr *)ss);
    c->state = S2S_S_WAIT_HEADER;
    c->deadline = ev_now(s2s.loop) + s2s.cfg.login_timeout;
    log_info("accept", "peer=%s dir=%s tls=%s", c->peer, s2s_dir_name(c->dir),
             direct_tls ? "direct" : kind == S2S_LIS_COMPONENT ? "none" : "starttls");
    s2s_conn_arm_timer(c);
    if (direct_tls) {
        c->flags |= S2S_F_DIRECT_TLS;
        s2s_conn_starttls(c);
        return;
    }
    tlsconn_want(&c->tc);
}

void s2s_listen_start(void)
{
    if (conn_lis.loop)
        sb_listen_start(&conn_lis);
}

void s2s_listen_stop(void)
{
    sb_listen_close(&conn_lis);
}

/* ---- connecting --------------------------------------------------------- */

struct s2s_conn *s2s_conn_connect(struct s2s_out *r, const struct sockaddr *sa,
                                  socklen_t salen, int direct_tls)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        log_info("connect_failed", "remote=%s error=%s", r->remote, sb_log_q(strerror(errno)));
        close(fd);
        return NULL;
    }
    struct s2s_conn *c = conn_new(fd, S2S_OUT);
    if (!c) {
        close(fd);
        return NULL;
    }
    tlsconn_peer_name(c->peer, sizeof c->peer, sa);
    c->route = r;
    c->local = strdup(r->local);
    c->remote = strdup(r->remote);
    if (!c->local || !c->remote) {
        s2s_conn_close(c, "nomem");
        return NULL;
    }
    if (direct_tls)
        c->flags |= S2S_F_DIRECT_TLS;
    c->state = S2S_S_CONNECTING;
    tlsconn_connecting(&c->tc);
    log_info("connecting", "local=%s remote=%s peer=%s tls=%s verify=%d", c->local, c->remote,
             c->peer, direct_tls ? "direct" : "starttls", r->verify_only);
    return c;
}

/* The TCP connect finished: start TLS (direct) or the stream. */
/* The TCP connect finished: start TLS (direct) or the stream. */
static void conn_connected(void *ud, int err)
{
    struct s2s_conn *c = ud;
    if (err) {
        log_info("connect_failed", "remote=%s peer=%s error=%s", c->remote, c->peer,
                 sb_log_q(strerror(err)));
        conn_dead(c, "connect-failed");
        return;
    }
    if (c->route)
        c->route->reached = 1;
    c->state = S2S_S_WAIT_HEADER;
    if (c->flags & S2S_F_DIRECT_TLS) {
        s2s_conn_starttls(c);
        return;
    }
    s2s_stream_send_header(c);
}

/* ---- the wire ------------------------------------------------------------ */

size_t s2s_conn_pending(const struct s2s_conn *c)
{
    return tlsconn_pending(&c->tc);
}

void s2s_conn_write(struct s2s_conn *c, const char *data, size_t len)
{
    if (c->state == S2S_S_CLOSING || len == 0)
        return;
    c->last_active = ev_now(s2s.loop);
    if (tlsconn_write(&c->tc, data, len, s2s.cfg.max_pending) != TLSCONN_FULL)
        return;
    log_warn("slow_peer", "peer=%s remote=%s pending=%zu", c->peer,
             c->remote ? c->remote : "-", c->tc.out.len);
    conn_dead(c, "slow-peer");
}

void s2s_conn_writes(struct s2s_conn *c, const char *s)
{
    s2s_conn_write(c, s, strlen(s));
}

static void conn_input(void *ud, const char *data, size_t len)
{
    struct s2s_conn *c = ud;
    c->last_active = ev_now(s2s.loop);
    s2s_stream_input(c, data, len);
}

static void conn_free_soon(struct s2s_conn *c)
{
    ev_timer_stop(s2s.loop, &c->timer);
    ev_timer_set(&c->timer, 0., 0.);
    ev_timer_start(s2s.loop, &c->timer);
}

/* TLS on the socket: at once (direct TLS, or the peer's <proceed/>), or
 * once our queued <proceed/> has been written. */
void s2s_conn_starttls(struct s2s_conn *c)
{
    gnutls_session_t s;
    c->state = S2S_S_TLS_HANDSHAKE;
    if (s2s_tls_session_new(c, &s) != SB_OK) {
        s2s_conn_close(c, "tls-init-failed");
        return;
    }
    c->flags |= S2S_F_TLS;
    c->cert_ok = -1;
    tlsconn_starttls(&c->tc, s);
}

/* A new stream starts over TLS (RFC 6120 §5.4.3.3). */
static void conn_secured(void *ud)
{
    struct s2s_conn *c = ud;
    c->state = S2S_S_WAIT_HEADER;
    c->flags &= ~S2S_F_HDR_SENT;
    if (c->dir == S2S_OUT)
        s2s_stream_send_header(c);
}

/* ---- close, timers ------------------------------------------------------ */

static void conn_free(struct s2s_conn *c)
{
    ev_timer_stop(s2s.loop, &c->timer);
    tlsconn_free(&c->tc);
    xml_stream_free(c->xs);
    s2s_in_free_pairs(c);
    free(c->local);
    free(c->remote);
    if (c->prev)
        c->prev->next = c->next;
    else
        s2s.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s2s.nconns--;
    sb_metric_dec(c->dir == S2S_OUT ? &conn_mx_out : &conn_mx_in);
    free(c);
    s2s_sessions_changed();
    if (s2s.stopping && !s2s.conns)
        ev_break(s2s.loop, EVBREAK_ALL);
}

void s2s_conn_free_all(void)
{
    s2s.stopping = 0;
    while (s2s.conns)
        conn_free(s2s.conns);
}

void s2s_conn_close(struct s2s_conn *c, const char *reason)
{
    if (c->state == S2S_S_CLOSING)
        return;
    sb_log(c->flags & S2S_F_REFUSED ? SB_LOG_DEBUG : SB_LOG_INFO, "close",   /* limits.c */
           "peer=%s dir=%s local=%s remote=%s state=%s auth=%s reason=%s", c->peer,
             s2s_dir_name(c->dir), c->local ? c->local : "-",
             c->remote ? c->remote : "-", s2s_state_name(c->state), s2s_auth_name(c->auth),
             reason);
    c->state = S2S_S_CLOSING;
    c->close_deadline = ev_now(s2s.loop) + CONN_LINGER;
    if (tlsconn_close(&c->tc))
        c->flags |= S2S_F_EOF;
    if (c->dir == S2S_OUT && c->route)
        s2s_out_conn_closed(c, reason);   /* may start another attempt */
    if (c->dir == S2S_COMP)
        s2s_comp_closed(c);
    if (c->flags & S2S_F_EOF)
        conn_free_soon(c);
    else
        s2s_conn_arm_timer(c);
}

/* The wire is gone (EOF, reset, TLS failure): close without lingering. */
static void conn_dead(void *ud, const char *why)
{
    struct s2s_conn *c = ud;
    c->flags |= S2S_F_EOF;
    if (c->state == S2S_S_CLOSING)
        conn_free_soon(c);
    else
        s2s_conn_close(c, why);
}

/* Deadlines: closing linger; before authentication the login/connect
 * deadline; afterwards idle checks (out.c owns idle and ping of routes). */
void s2s_conn_arm_timer(struct s2s_conn *c)
{
    double next;
    if (c->state == S2S_S_CLOSING)
        next = c->close_deadline;
    else if (c->dir == S2S_IN && c->pairs)
        next = c->last_active + s2s.cfg.in_idle_timeout;
    else if ((c->dir == S2S_OUT || c->dir == S2S_COMP) && c->state == S2S_S_OPEN) {
        /* out: the route's timer watches it; a component stays connected */
        ev_timer_stop(s2s.loop, &c->timer);
        return;
    }
    else
        next = c->deadline;
    ev_timer_stop(s2s.loop, &c->timer);
    double after = next - ev_now(s2s.loop);
    ev_timer_set(&c->timer, after > 0 ? after : 0., 0.);
    ev_timer_start(s2s.loop, &c->timer);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct s2s_conn *c = w->data;
    double now = ev_now(loop);
    if (c->state == S2S_S_CLOSING) {
        if ((c->flags & S2S_F_EOF) || now >= c->close_deadline)
            conn_free(c);
        else
            s2s_conn_arm_timer(c);
        return;
    }
    if (c->dir == S2S_IN && c->pairs) {
        if (now >= c->last_active + s2s.cfg.in_idle_timeout) {
            s2s_conn_writes(c, "</stream:stream>");
            s2s_conn_close(c, "idle");
            return;
        }
        s2s_conn_arm_timer(c);
        return;
    }
    if (now >= c->deadline) {
        if (c->state == S2S_S_CONNECTING || c->state == S2S_S_TLS_HANDSHAKE)
            s2s_conn_close(c, "timeout");
        else
            s2s_stream_error(c, "connection-timeout", "login-timeout");
        return;
    }
    s2s_conn_arm_timer(c);
}
