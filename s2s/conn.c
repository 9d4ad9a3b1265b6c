/* conn.c — one server-to-server TCP connection on the loop, in either
 * direction: accepting and connecting, reading into a shared buffer,
 * writing (directly, or through a buffer that exists only while bytes are
 * pending), TLS records, closing and the deadline timer.
 *
 * A conn is never freed inside a callback that may still touch it: close
 * marks it CLOSING and its timer frees it on a later loop turn, after the
 * output was flushed (or CONN_LINGER passed). */
#define _GNU_SOURCE              /* accept4 */
#include "s2s.h"
#include "log.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONN_READ_MAX   65536
#define CONN_READS_TURN 16
#define CONN_LINGER     2.0
#define CONN_TLS_CHUNK  16384

static char conn_rbuf[CONN_READ_MAX];

static struct {
    ev_io w;
    int direct_tls;
} conn_lis[4];
static int conn_nlis;

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_close_dead(struct s2s_conn *c, const char *reason);

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
    default:                return "none";
    }
}

static void conn_peer(struct s2s_conn *c, const struct sockaddr *sa)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
}

static struct s2s_conn *conn_new(int fd, enum s2s_dir dir)
{
    struct s2s_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->dir = (uint8_t)dir;
    c->cert_ok = -1;
    c->serial = ++s2s.next_serial;
    c->since = c->last_active = ev_now(s2s.loop);
    ev_io_init(&c->io, conn_io_cb, fd, 0);
    c->io.data = c;
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

sb_rc s2s_listen_open(const char *addr, int port, int direct_tls)
{
    if (conn_nlis >= (int)SB_ARRAY_LEN(conn_lis))
        return SB_ERROR;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST;
    int gai = getaddrinfo(addr && *addr ? addr : NULL, ports, &hints, &res);
    if (gai != 0) {
        log_error("listen_failed", "addr=%s port=%d error=%s", addr, port,
                  sb_log_q(gai_strerror(gai)));
        return SB_ERROR;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        log_error("listen_failed", "addr=%s port=%d error=%s", addr, port,
                  sb_log_q(strerror(errno)));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return SB_ERROR;
    }
    freeaddrinfo(res);
    conn_lis[conn_nlis].direct_tls = direct_tls;
    ev_io_init(&conn_lis[conn_nlis].w, NULL, fd, EV_READ);
    conn_lis[conn_nlis].w.data = &conn_lis[conn_nlis];
    conn_nlis++;
    log_info("listen", "addr=%s port=%d tls=%s", addr, port, direct_tls ? "direct" : "starttls");
    return SB_OK;
}

static void conn_accepted(int fd, const struct sockaddr_storage *ss, int direct_tls)
{
    struct s2s_conn *c = conn_new(fd, S2S_IN);
    if (!c) {
        close(fd);
        log_error("accept_nomem", "fd=%d", fd);
        return;
    }
    conn_peer(c, (const struct sockaddr *)ss);
    c->state = S2S_S_WAIT_HEADER;
    c->deadline = ev_now(s2s.loop) + s2s.cfg.login_timeout;
    log_info("accept", "peer=%s tls=%s", c->peer, direct_tls ? "direct" : "starttls");
    s2s_conn_arm_timer(c);
    if (direct_tls) {
        c->flags |= S2S_F_DIRECT_TLS;
        if (s2s_tls_start(c) != SB_OK) {
            s2s_conn_close(c, "tls-init-failed");
            return;
        }
        s2s_tls_handshake(c);
        return;
    }
    s2s_conn_want(c);
}

static void conn_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    int direct_tls = ((typeof(conn_lis[0]) *)w->data)->direct_tls;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                log_warn("accept_failed", "error=%s", sb_log_q(strerror(errno)));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_accepted(fd, &ss, direct_tls);
    }
}

void s2s_listen_start(void)
{
    for (int i = 0; i < conn_nlis; i++) {
        if (ev_is_active(&conn_lis[i].w))
            continue;
        ev_set_cb(&conn_lis[i].w, conn_accept_cb);
        ev_io_start(s2s.loop, &conn_lis[i].w);
    }
}

void s2s_listen_stop(void)
{
    for (int i = 0; i < conn_nlis; i++) {
        ev_io_stop(s2s.loop, &conn_lis[i].w);
        close(conn_lis[i].w.fd);
    }
    conn_nlis = 0;
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
    conn_peer(c, sa);
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
    ev_io_set(&c->io, fd, EV_WRITE);
    ev_io_start(s2s.loop, &c->io);
    log_info("connecting", "local=%s remote=%s peer=%s tls=%s verify=%d", c->local, c->remote,
             c->peer, direct_tls ? "direct" : "starttls", r->verify_only);
    return c;
}

/* The TCP connect finished: start TLS (direct) or the stream. */
static void conn_connected(struct s2s_conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        log_info("connect_failed", "remote=%s peer=%s error=%s", c->remote, c->peer,
                 sb_log_q(strerror(err)));
        conn_close_dead(c, "connect-failed");
        return;
    }
    if (c->route)
        c->route->reached = 1;
    c->state = S2S_S_WAIT_HEADER;
    if (c->flags & S2S_F_DIRECT_TLS) {
        if (s2s_tls_start(c) != SB_OK) {
            s2s_conn_close(c, "tls-init-failed");
            return;
        }
        s2s_tls_handshake(c);
        return;
    }
    s2s_stream_send_header(c);
    s2s_conn_want(c);
}

/* ---- output ------------------------------------------------------------- */

static int conn_tls_ready(const struct s2s_conn *c)
{
    return c->tls && c->state != S2S_S_TLS_HANDSHAKE;
}

size_t s2s_conn_pending(const struct s2s_conn *c)
{
    return c->out.len + ((c->flags & S2S_F_TLS_AGAIN) ? 1 : 0);
}

static long conn_send_now(struct s2s_conn *c, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        if (conn_tls_ready(c)) {
            size_t n = len - done > CONN_TLS_CHUNK ? CONN_TLS_CHUNK : len - done;
            ssize_t r = gnutls_record_send(c->tls, data + done, n);
            if (r > 0) {
                done += (size_t)r;
                continue;
            }
            if (r == GNUTLS_E_AGAIN) {
                c->flags |= S2S_F_TLS_AGAIN;    /* gnutls keeps the record */
                return (long)(done + n);
            }
            if (r == GNUTLS_E_INTERRUPTED)
                continue;
            log_info("tls_write_error", "peer=%s error=%s", c->peer,
                     sb_log_q(gnutls_strerror((int)r)));
            return -1;
        }
        ssize_t r = send(c->fd, data + done, len - done, MSG_NOSIGNAL);
        if (r > 0) {
            done += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return -1;
    }
    return (long)done;
}

/* 0 flushed, 1 bytes remain, -1 failed (closed). */
static int conn_flush(struct s2s_conn *c)
{
    if (c->flags & S2S_F_TLS_AGAIN) {
        ssize_t r = gnutls_record_send(c->tls, NULL, 0);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return 1;
        c->flags &= ~S2S_F_TLS_AGAIN;
        if (r < 0) {
            sb_buf_free(&c->out);
            conn_close_dead(c, "tls-write-error");
            return -1;
        }
    }
    if (c->out.len) {
        long n = conn_send_now(c, c->out.data, c->out.len);
        if (n < 0) {
            sb_buf_free(&c->out);
            c->flags &= ~S2S_F_TLS_AGAIN;
            conn_close_dead(c, "write-error");
            return -1;
        }
        sb_buf_consume(&c->out, (size_t)n);
    }
    if (s2s_conn_pending(c))
        return 1;
    sb_buf_free(&c->out);
    return 0;
}

void s2s_conn_write(struct s2s_conn *c, const char *data, size_t len)
{
    if (c->state == S2S_S_CLOSING || len == 0)
        return;
    c->last_active = ev_now(s2s.loop);
    if (!s2s_conn_pending(c) && c->state != S2S_S_TLS_HANDSHAKE &&
        c->state != S2S_S_CONNECTING && !(c->flags & S2S_F_TLS_START)) {
        long n = conn_send_now(c, data, len);
        if (n < 0) {
            sb_buf_free(&c->out);
            c->flags &= ~S2S_F_TLS_AGAIN;
            conn_close_dead(c, "write-error");
            return;
        }
        data += n;
        len -= (size_t)n;
        if (len == 0 && !s2s_conn_pending(c))
            return;
    }
    if (c->out.len + len > s2s.cfg.max_pending) {
        log_warn("slow_peer", "peer=%s remote=%s pending=%zu", c->peer,
                 c->remote ? c->remote : "-", c->out.len);
        conn_close_dead(c, "slow-peer");
        return;
    }
    if (sb_buf_add(&c->out, data, len) != SB_OK) {
        conn_close_dead(c, "nomem");
        return;
    }
    s2s_conn_want(c);
}

void s2s_conn_writes(struct s2s_conn *c, const char *s)
{
    s2s_conn_write(c, s, strlen(s));
}

void s2s_conn_want(struct s2s_conn *c)
{
    int ev = 0;
    if (c->state == S2S_S_CONNECTING) {
        ev = EV_WRITE;
    } else if (c->state == S2S_S_TLS_HANDSHAKE && !(c->flags & S2S_F_TLS_START)) {
        ev = gnutls_record_get_direction(c->tls) ? EV_WRITE : EV_READ;
    } else {
        if (!(c->flags & (S2S_F_TLS_START | S2S_F_EOF)))
            ev |= EV_READ;
        if (s2s_conn_pending(c))
            ev |= EV_WRITE;
    }
    if (ev == (c->io.events & (EV_READ | EV_WRITE)) && (ev == 0 || ev_is_active(&c->io)))
        return;
    ev_io_stop(s2s.loop, &c->io);
    ev_io_set(&c->io, c->fd, ev);
    if (ev)
        ev_io_start(s2s.loop, &c->io);
}

/* ---- input -------------------------------------------------------------- */

static void conn_read(struct s2s_conn *c)
{
    for (int i = 0;; i++) {
        if (c->state == S2S_S_CLOSING || c->state == S2S_S_TLS_HANDSHAKE ||
            (c->flags & S2S_F_TLS_START))
            return;
        int more_tls = c->tls && gnutls_record_check_pending(c->tls) > 0;
        if (i >= CONN_READS_TURN && !more_tls)
            return;
        ssize_t n;
        if (c->tls) {
            n = gnutls_record_recv(c->tls, conn_rbuf, sizeof conn_rbuf);
            if (n == GNUTLS_E_AGAIN)
                return;
            if (n == GNUTLS_E_INTERRUPTED)
                continue;
            if (n < 0 && !gnutls_error_is_fatal((int)n))
                continue;
            if (n == GNUTLS_E_PREMATURE_TERMINATION) {
                conn_close_dead(c, "eof");
                return;
            }
            if (n < 0) {
                log_info("tls_read_error", "peer=%s error=%s", c->peer,
                         sb_log_q(gnutls_strerror((int)n)));
                conn_close_dead(c, "tls-error");
                return;
            }
        } else {
            n = recv(c->fd, conn_rbuf, sizeof conn_rbuf, 0);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                conn_close_dead(c, errno == ECONNRESET ? "reset" : "read-error");
                return;
            }
        }
        if (n == 0) {
            conn_close_dead(c, "eof");
            return;
        }
        c->last_active = ev_now(s2s.loop);
        s2s_stream_input(c, conn_rbuf, (size_t)n);
    }
}

static void conn_free_soon(struct s2s_conn *c)
{
    ev_timer_stop(s2s.loop, &c->timer);
    ev_timer_set(&c->timer, 0., 0.);
    ev_timer_start(s2s.loop, &c->timer);
}

static void conn_shutdown(struct s2s_conn *c)
{
    if (c->flags & S2S_F_SHUT)
        return;
    c->flags |= S2S_F_SHUT;
    if (c->tls)
        gnutls_bye(c->tls, GNUTLS_SHUT_WR);
    shutdown(c->fd, SHUT_WR);
}

static void conn_drain(struct s2s_conn *c)
{
    for (int i = 0; i < CONN_READS_TURN; i++) {
        ssize_t n = recv(c->fd, conn_rbuf, sizeof conn_rbuf, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        break;
    }
    c->flags |= S2S_F_EOF;
    conn_free_soon(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct s2s_conn *c = w->data;
    if (c->state == S2S_S_CLOSING) {
        if ((revents & EV_WRITE) && conn_flush(c) == 0)
            conn_shutdown(c);
        if (revents & EV_READ)
            conn_drain(c);
        if (!(c->flags & S2S_F_EOF))
            s2s_conn_want(c);
        return;
    }
    if (c->state == S2S_S_CONNECTING) {
        conn_connected(c);
        return;
    }
    if (c->state == S2S_S_TLS_HANDSHAKE && !(c->flags & S2S_F_TLS_START)) {
        s2s_tls_handshake(c);
        return;
    }
    if (revents & EV_WRITE) {
        int r = conn_flush(c);
        if (r < 0)
            return;
        if (r == 0 && (c->flags & S2S_F_TLS_START)) {
            c->flags &= ~S2S_F_TLS_START;
            if (s2s_tls_start(c) != SB_OK) {
                s2s_conn_close(c, "tls-init-failed");
                return;
            }
            s2s_tls_handshake(c);
            return;
        }
    }
    if (revents & EV_READ)
        conn_read(c);
    if (c->state != S2S_S_TLS_HANDSHAKE && c->state != S2S_S_CLOSING)
        s2s_conn_want(c);
}

void s2s_conn_starttls(struct s2s_conn *c)
{
    c->flags |= S2S_F_TLS_START;
    c->state = S2S_S_TLS_HANDSHAKE;
    if (!s2s_conn_pending(c)) {
        c->flags &= ~S2S_F_TLS_START;
        if (s2s_tls_start(c) != SB_OK) {
            s2s_conn_close(c, "tls-init-failed");
            return;
        }
        s2s_tls_handshake(c);
        return;
    }
    s2s_conn_want(c);
}

/* ---- close, timers ------------------------------------------------------ */

static void conn_free(struct s2s_conn *c)
{
    ev_io_stop(s2s.loop, &c->io);
    ev_timer_stop(s2s.loop, &c->timer);
    if (c->tls)
        gnutls_deinit(c->tls);
    close(c->fd);
    xml_stream_free(c->xs);
    sb_buf_free(&c->out);
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
    log_info("close", "peer=%s dir=%s local=%s remote=%s state=%s auth=%s reason=%s", c->peer,
             c->dir == S2S_OUT ? "out" : "in", c->local ? c->local : "-",
             c->remote ? c->remote : "-", s2s_state_name(c->state), s2s_auth_name(c->auth),
             reason);
    enum s2s_state was = c->state;
    if (was == S2S_S_TLS_HANDSHAKE || was == S2S_S_CONNECTING) {
        c->flags |= S2S_F_EOF;
        sb_buf_free(&c->out);
        c->flags &= ~(S2S_F_TLS_START | S2S_F_TLS_AGAIN);
        if (c->tls) {
            gnutls_deinit(c->tls);
            c->tls = NULL;
        }
    }
    c->state = S2S_S_CLOSING;
    c->close_deadline = ev_now(s2s.loop) + CONN_LINGER;
    if (c->dir == S2S_OUT && c->route)
        s2s_out_conn_closed(c, reason);   /* may start another attempt */
    if (!s2s_conn_pending(c) && !(c->flags & S2S_F_EOF))
        conn_shutdown(c);
    if (c->flags & S2S_F_EOF)
        conn_free_soon(c);
    else
        s2s_conn_arm_timer(c);
    s2s_conn_want(c);
}

static void conn_close_dead(struct s2s_conn *c, const char *reason)
{
    c->flags |= S2S_F_EOF;
    if (c->state == S2S_S_CLOSING)
        conn_free_soon(c);
    else
        s2s_conn_close(c, reason);
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
    else if (c->dir == S2S_OUT && c->state == S2S_S_OPEN) {
        ev_timer_stop(s2s.loop, &c->timer);   /* the route's timer watches it */
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
