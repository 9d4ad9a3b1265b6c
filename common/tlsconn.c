/* tlsconn.c — see tlsconn.h. Level-triggered: each event does a bounded
 * amount of work (TLSCONN_READS_TURN reads) and the loop comes back.
 *
 * Coalescing: the first write to a connection in a loop iteration goes
 * straight to the socket (no copy); further writes in the same iteration
 * are held in its buffer and leave together, in one send (one TLS record up
 * to 16 KiB), from a prepare watcher that runs before the loop blocks. A
 * burst of stanzas (a batch from the router) costs two sends, not one per
 * stanza; a lone stanza costs what it did. */
#include "tlsconn.h"
#include "certs.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TLSCONN_READ_MAX   65536   /* shared read buffer */
#define TLSCONN_READS_TURN 16      /* reads per event before yielding */
#define TLSCONN_TLS_CHUNK  16384   /* one TLS record */

static char tc_rbuf[TLSCONN_READ_MAX];

static void tc_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void tc_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents);

/* Connections holding output until the end of this loop iteration
 * (TLSCONN_F_HELD set exactly while listed). */
static ev_prepare tc_prepare;
static uint32_t tc_iter = 1;          /* loop iterations, counted by tc_prepare */
static struct tlsconn **tc_held;
static size_t tc_nheld, tc_capheld;

void tlsconn_init(struct tlsconn *t, struct ev_loop *loop, int fd,
                  const struct tlsconn_ops *ops, void *ud, const char *peer)
{
    t->loop = loop;
    t->ops = ops;
    t->peer = peer;
    t->tls = NULL;
    t->out = (struct sb_buf)SB_BUF_INIT;
    t->out_counted = 0;
    t->fd = fd;
    t->flags = 0;
    t->iter = 0;
    ev_io_init(&t->io, tc_io_cb, fd < 0 ? 0 : fd, 0);
    t->io.data = ud;
    if (fd >= 0 && !ev_is_active(&tc_prepare)) {
        ev_prepare_init(&tc_prepare, tc_prepare_cb);
        ev_set_priority(&tc_prepare, EV_MAXPRI);   /* before other prepare work */
        ev_prepare_start(loop, &tc_prepare);
        ev_unref(loop);               /* it alone keeps no loop running */
    }
}

int tlsconn_secure(const struct tlsconn *t)
{
    return t->tls && !(t->flags & (TLSCONN_F_START | TLSCONN_F_HANDSHAKE));
}

size_t tlsconn_pending(const struct tlsconn *t)
{
    return t->out.len + ((t->flags & TLSCONN_F_AGAIN) ? 1 : 0);
}

void tlsconn_want(struct tlsconn *t)
{
    int ev = 0;
    if (t->fd < 0)
        return;
    if (t->flags & TLSCONN_F_DEAD) {
        ev = 0;
    } else if (t->flags & TLSCONN_F_CONNECTING) {
        ev = EV_WRITE;
    } else if (t->flags & TLSCONN_F_HANDSHAKE) {
        ev = gnutls_record_get_direction(t->tls) ? EV_WRITE : EV_READ;
    } else {
        if (!(t->flags & (TLSCONN_F_START | TLSCONN_F_PAUSED)))
            ev |= EV_READ;
        if (tlsconn_pending(t))
            ev |= EV_WRITE;
    }
    if (ev == (t->io.events & (EV_READ | EV_WRITE)) && (ev == 0 || ev_is_active(&t->io)))
        return;
    ev_io_stop(t->loop, &t->io);
    ev_io_set(&t->io, t->fd, ev);
    if (ev)
        ev_io_start(t->loop, &t->io);
}

/* The output queue's size, counted in sb_mem_owned ([c2s] max_memory_mb). */
static void tc_out_sync(struct tlsconn *t)
{
    sb_mem_sync(&t->out_counted, t->out.cap);
}

/* The wire is gone: drop what was queued, stop watching, tell the owner. */
static void tc_dead(struct tlsconn *t, const char *why)
{
    if (t->flags & TLSCONN_F_DEAD)
        return;
    t->flags |= TLSCONN_F_DEAD;
    t->flags &= (uint16_t)~(TLSCONN_F_AGAIN | TLSCONN_F_START | TLSCONN_F_HANDSHAKE |
                           TLSCONN_F_CONNECTING);
    sb_buf_free(&t->out);
    tc_out_sync(t);
    tlsconn_want(t);
    t->ops->dead(t->io.data, why);
}

void tlsconn_connecting(struct tlsconn *t)
{
    t->flags |= TLSCONN_F_CONNECTING;
    tlsconn_want(t);
}

static void tc_connected(struct tlsconn *t)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (!err)                         /* a failed one closes as "no stream yet" */
        t->flags &= (uint16_t)~TLSCONN_F_CONNECTING;
    t->ops->connected(t->io.data, err);
    if (!(t->flags & TLSCONN_F_HANDSHAKE))
        tlsconn_want(t);
}

/* ---- TLS handshake ------------------------------------------------------- */

static void tc_handshake(struct tlsconn *t)
{
    for (int tries = 0;; tries++) {
        int r = gnutls_handshake(t->tls);
        if (r == GNUTLS_E_SUCCESS)
            break;
        if (r == GNUTLS_E_AGAIN) {
            tlsconn_want(t);
            return;
        }
        if ((r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(r)) && tries < 8)
            continue;
        log_info("tls_handshake_failed", "peer=%s error=%s", t->peer,
                 sb_log_q(gnutls_strerror(r)));
        tc_dead(t, "tls-handshake-failed");
        return;
    }
    t->flags &= (uint16_t)~TLSCONN_F_HANDSHAKE;
    char *desc = gnutls_session_get_desc(t->tls);
    log_debug("tls_established", "peer=%s suite=%s", t->peer, sb_log_q(desc ? desc : "?"));
    gnutls_free(desc);
    t->ops->secured(t->io.data);
    if (t->flags & (TLSCONN_F_DEAD | TLSCONN_F_CLOSING))
        return;
    tlsconn_want(t);
    /* The peer may have sent its stream header in the same flight. */
    if (gnutls_record_check_pending(t->tls) > 0)
        ev_feed_event(t->loop, &t->io, EV_READ);
}

static void tc_begin_handshake(struct tlsconn *t)
{
    t->flags &= (uint16_t)~TLSCONN_F_START;
    t->flags |= TLSCONN_F_HANDSHAKE;
    tc_handshake(t);
}

void tlsconn_starttls(struct tlsconn *t, gnutls_session_t s)
{
    t->tls = s;
    t->flags |= TLSCONN_F_START;
    if (!tlsconn_pending(t))
        tc_begin_handshake(t);
    else
        tlsconn_want(t);
}

/* ---- output -------------------------------------------------------------- */

/* Write what the socket takes now; bytes taken from data, or -1 (logged). */
static long tc_send(struct tlsconn *t, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        if (tlsconn_secure(t)) {
            size_t n = len - done > TLSCONN_TLS_CHUNK ? TLSCONN_TLS_CHUNK : len - done;
            ssize_t r = gnutls_record_send(t->tls, data + done, n);
            if (r > 0) {
                done += (size_t)r;
                continue;
            }
            if (r == GNUTLS_E_AGAIN) {
                /* gnutls keeps the encrypted record; finish with NULL, 0. */
                t->flags |= TLSCONN_F_AGAIN;
                return (long)(done + n);
            }
            if (r == GNUTLS_E_INTERRUPTED)
                continue;
            log_info("tls_write_error", "peer=%s error=%s", t->peer,
                     sb_log_q(gnutls_strerror((int)r)));
            return -1;
        }
        ssize_t r = send(t->fd, data + done, len - done, MSG_NOSIGNAL);
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

/* Drain the queue: 0 when empty, 1 when bytes remain, -1 when dead. */
static int tc_flush(struct tlsconn *t)
{
    if (t->flags & TLSCONN_F_AGAIN) {
        ssize_t r = gnutls_record_send(t->tls, NULL, 0);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return 1;
        t->flags &= (uint16_t)~TLSCONN_F_AGAIN;
        if (r < 0) {
            tc_dead(t, "tls-write-error");
            return -1;
        }
    }
    if (t->out.len) {
        long n = tc_send(t, t->out.data, t->out.len);
        if (n < 0) {
            tc_dead(t, "write-error");
            return -1;
        }
        sb_buf_consume(&t->out, (size_t)n);
        tc_out_sync(t);
    }
    if (tlsconn_pending(t))
        return 1;
    sb_buf_free(&t->out);             /* idle connections hold no buffer */
    tc_out_sync(t);
    return 0;
}

/* Hold t's output until tc_prepare runs; 0 when the list cannot grow. */
static int tc_hold(struct tlsconn *t)
{
    if (tc_nheld == tc_capheld) {
        size_t cap = tc_capheld ? tc_capheld * 2 : 256;
        struct tlsconn **n = realloc(tc_held, cap * sizeof *n);
        if (!n)
            return 0;
        tc_held = n;
        tc_capheld = cap;
    }
    tc_held[tc_nheld++] = t;
    t->flags |= TLSCONN_F_HELD;
    return 1;
}

int tlsconn_write(struct tlsconn *t, const char *data, size_t len, size_t max_pending)
{
    if (t->flags & TLSCONN_F_DEAD)
        return TLSCONN_OK;
    if (!tlsconn_pending(t) &&
        !(t->flags & (TLSCONN_F_CONNECTING | TLSCONN_F_START | TLSCONN_F_HANDSHAKE)) &&
        (t->iter != tc_iter || !tc_hold(t))) {
        t->iter = tc_iter;            /* the first write of this iteration */
        long n = tc_send(t, data, len);
        if (n < 0) {
            tc_dead(t, "write-error");
            return TLSCONN_FAILED;
        }
        data += n;
        len -= (size_t)n;
        if (len == 0 && !tlsconn_pending(t))
            return TLSCONN_OK;
    }
    if (t->out.len + len > max_pending)
        return TLSCONN_FULL;
    if (sb_buf_add(&t->out, data, len) != SB_OK) {
        tc_dead(t, "nomem");
        return TLSCONN_FAILED;
    }
    tc_out_sync(t);
    if (!(t->flags & TLSCONN_F_HELD))
        tlsconn_want(t);              /* held output leaves from tc_prepare */
    return TLSCONN_OK;
}

void tlsconn_hold_next(struct tlsconn *t)
{
    t->iter = tc_iter;                /* the direct write of this iteration is spent */
}

void tlsconn_queue(struct tlsconn *t, const char *data, size_t len)
{
    if (!(t->flags & TLSCONN_F_DEAD) && sb_buf_add(&t->out, data, len) == SB_OK) {
        tc_out_sync(t);
        tlsconn_want(t);
    }
}

/* ---- input --------------------------------------------------------------- */

static void tc_read(struct tlsconn *t)
{
    for (int i = 0;; i++) {
        if (t->flags & (TLSCONN_F_CLOSING | TLSCONN_F_START | TLSCONN_F_HANDSHAKE |
                        TLSCONN_F_PAUSED | TLSCONN_F_DEAD | TLSCONN_F_CONNECTING))
            return;
        int more_tls = t->tls && gnutls_record_check_pending(t->tls) > 0;
        if (i >= TLSCONN_READS_TURN && !more_tls)
            return;                   /* level-triggered: the loop comes back */
        ssize_t n;
        const char *why = NULL;
        if (t->tls) {
            n = gnutls_record_recv(t->tls, tc_rbuf, sizeof tc_rbuf);
            if (n == GNUTLS_E_AGAIN)
                return;
            if (n == GNUTLS_E_INTERRUPTED)
                continue;
            if (n < 0 && !gnutls_error_is_fatal((int)n)) {
                log_debug("tls_warning", "peer=%s error=%s", t->peer,
                          sb_log_q(gnutls_strerror((int)n)));
                continue;
            }
            if (n == GNUTLS_E_PREMATURE_TERMINATION) {
                why = "eof";              /* TCP closed without close_notify */
            } else if (n < 0) {
                log_info("tls_read_error", "peer=%s error=%s", t->peer,
                         sb_log_q(gnutls_strerror((int)n)));
                why = "tls-error";
            }
        } else {
            n = recv(t->fd, tc_rbuf, sizeof tc_rbuf, 0);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                why = errno == ECONNRESET ? "reset" : "read-error";
        }
        if (!why && n == 0)
            why = "eof";
        if (why) {
            tc_dead(t, why);
            return;
        }
        t->ops->input(t->io.data, tc_rbuf, (size_t)n);
        /* A short plaintext read emptied the socket: asking again would
         * only return EAGAIN (one wasted system call per stanza); the
         * level-triggered loop comes back when more arrives. */
        if (!t->tls && (size_t)n < sizeof tc_rbuf)
            return;
    }
}

void tlsconn_pause(struct tlsconn *t)
{
    t->flags |= TLSCONN_F_PAUSED;
    tlsconn_want(t);
}

void tlsconn_resume(struct tlsconn *t)
{
    t->flags &= (uint16_t)~TLSCONN_F_PAUSED;
    tc_read(t);                       /* TLS may hold records: no fd event for those */
    tlsconn_want(t);
}

/* ---- closing ------------------------------------------------------------- */

/* Output is flushed: say goodbye on the wire and stop writing. */
static void tc_shutdown(struct tlsconn *t)
{
    if (t->flags & TLSCONN_F_SHUT)
        return;
    t->flags |= TLSCONN_F_SHUT;
    if (t->tls)
        gnutls_bye(t->tls, GNUTLS_SHUT_WR);   /* close_notify, best effort */
    shutdown(t->fd, SHUT_WR);
}

/* Lingering close: discard what the peer still sends until it closes. */
static void tc_drain(struct tlsconn *t)
{
    for (int i = 0; i < TLSCONN_READS_TURN; i++) {
        ssize_t n = recv(t->fd, tc_rbuf, sizeof tc_rbuf, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        break;
    }
    tc_dead(t, "eof");
}

int tlsconn_close(struct tlsconn *t)
{
    if (t->fd < 0)
        return 1;
    if (t->flags & (TLSCONN_F_CONNECTING | TLSCONN_F_START | TLSCONN_F_HANDSHAKE)) {
        /* No stream yet: nothing worth sending, no TLS records to end. */
        t->flags |= TLSCONN_F_DEAD;
        t->flags &= (uint16_t)~(TLSCONN_F_AGAIN | TLSCONN_F_START | TLSCONN_F_HANDSHAKE |
                               TLSCONN_F_CONNECTING);
        sb_buf_free(&t->out);
        tc_out_sync(t);
    }
    t->flags |= TLSCONN_F_CLOSING;
    t->flags &= (uint16_t)~TLSCONN_F_PAUSED;
    if (!(t->flags & TLSCONN_F_DEAD) && !tlsconn_pending(t))
        tc_shutdown(t);
    tlsconn_want(t);
    return (t->flags & TLSCONN_F_DEAD) != 0;
}

void tlsconn_free(struct tlsconn *t)
{
    if (t->flags & TLSCONN_F_HELD) {
        for (size_t i = 0; i < tc_nheld; i++)
            if (tc_held[i] == t)
                tc_held[i] = NULL;
    }
    ev_io_stop(t->loop, &t->io);
    if (t->tls)
        gnutls_deinit(t->tls);
    if (t->fd >= 0)
        close(t->fd);
    sb_buf_free(&t->out);
    tc_out_sync(t);
    t->tls = NULL;
    t->fd = -1;
    t->flags = TLSCONN_F_DEAD;
}

static void tc_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct tlsconn *t = (struct tlsconn *)w;      /* io is the first member */
    if (t->flags & TLSCONN_F_DEAD) {
        tlsconn_want(t);
        return;
    }
    if (t->flags & TLSCONN_F_CLOSING) {
        if ((revents & EV_WRITE) && tc_flush(t) == 0)
            tc_shutdown(t);
        if ((revents & EV_READ) && !(t->flags & TLSCONN_F_DEAD))
            tc_drain(t);
        tlsconn_want(t);
        return;
    }
    if (t->flags & TLSCONN_F_CONNECTING) {
        tc_connected(t);
        return;
    }
    if (t->flags & TLSCONN_F_HANDSHAKE) {
        tc_handshake(t);
        return;
    }
    if (revents & EV_WRITE) {
        int r = tc_flush(t);
        if (r < 0)
            return;
        if (r == 0 && (t->flags & TLSCONN_F_START)) {
            tc_begin_handshake(t);
            return;
        }
    }
    if (revents & EV_READ)
        tc_read(t);
    tlsconn_want(t);
}

/* End of a loop iteration: send what writes after the first were holding. */
static void tc_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    tc_iter++;
    for (size_t i = 0; i < tc_nheld; i++) {
        struct tlsconn *t = tc_held[i];
        if (!t)
            continue;                 /* freed meanwhile */
        t->flags &= (uint16_t)~TLSCONN_F_HELD;
        if (t->flags & TLSCONN_F_DEAD)
            continue;
        int r = tc_flush(t);
        if (r < 0)
            continue;                 /* dead: the owner was told */
        if (r == 0 && (t->flags & TLSCONN_F_CLOSING))
            tc_shutdown(t);
        else if (r == 0 && (t->flags & TLSCONN_F_START)) {
            tc_begin_handshake(t);
            continue;
        }
        tlsconn_want(t);
    }
    tc_nheld = 0;
}

/* ---- sockets ------------------------------------------------------------- */

int tlsconn_listen(const char *addr, int port, int backlog)
{
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(addr && *addr ? addr : NULL, ports, &hints, &res);
    if (gai != 0) {
        log_error("listen_failed", "addr=%s port=%d error=%s", addr, port,
                  sb_log_q(gai_strerror(gai)));
        return -1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        log_error("listen_failed", "addr=%s port=%d error=%s", addr, port,
                  sb_log_q(strerror(errno)));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

void tlsconn_peer_name(char *out, size_t cap, const struct sockaddr *sa)
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
    snprintf(out, cap, "%s:%d", host, port);
}

int tlsconn_addr_key(const char *peer, uint8_t key[16], char *shown, size_t cap)
{
    char host[64];
    const char *colon = peer ? strrchr(peer, ':') : NULL;
    size_t n = colon ? (size_t)(colon - peer) : 0;
    if (!colon || n == 0 || n >= sizeof host)
        return -1;
    memcpy(host, peer, n);
    host[n] = '\0';
    if (host[0] == '[' && host[n - 1] == ']') {      /* "[v6]:port" */
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        memset(a6.s6_addr, 0, 10);
        a6.s6_addr[10] = a6.s6_addr[11] = 0xff;
        memcpy(a6.s6_addr + 12, &a4, 4);
    } else if (inet_pton(AF_INET6, host, &a6) != 1) {
        return -1;
    }
    memcpy(key, a6.s6_addr, 16);
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        inet_ntop(AF_INET, key + 12, shown, (socklen_t)cap);
        return 0;
    }
    memset(key + 8, 0, 8);                           /* the /64 */
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, key, buf, sizeof buf);
    snprintf(shown, cap, "%s/64", buf);
    return 0;
}

/* ---- credentials --------------------------------------------------------- */

sb_rc tlsconn_creds_init(struct tlsconn_creds *cr, const char *priority)
{
    cr->cred = NULL;
    cr->prio = NULL;
    int r = gnutls_certificate_allocate_credentials(&cr->cred);
    if (r < 0) {
        log_error("tls_init_failed", "error=%s", sb_log_q(gnutls_strerror(r)));
        cr->cred = NULL;
        return SB_ERROR;
    }
    sb_certs_attach(cr->cred);
    const char *errpos = NULL;
    r = gnutls_priority_init(&cr->prio, priority, &errpos);
    if (r < 0) {
        log_error("tls_priority_failed", "priority=%s at=%s", sb_log_q(priority),
                  sb_log_q(errpos ? errpos : "-"));
        cr->prio = NULL;
        tlsconn_creds_free(cr);
        return SB_ERROR;
    }
    return SB_OK;
}

void tlsconn_creds_free(struct tlsconn_creds *cr)
{
    if (cr->prio)
        gnutls_priority_deinit(cr->prio);
    if (cr->cred)
        gnutls_certificate_free_credentials(cr->cred);
    cr->prio = NULL;
    cr->cred = NULL;
}

sb_rc tlsconn_session_new(const struct tlsconn_creds *cr, unsigned role, int fd,
                          gnutls_session_t *out)
{
    if (!cr->cred || !cr->prio)
        return SB_ERROR;
    gnutls_session_t s;
    if (gnutls_init(&s, role | GNUTLS_NONBLOCK) < 0)
        return SB_ERROR;
    if (gnutls_priority_set(s, cr->prio) < 0 ||
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cr->cred) < 0) {
        gnutls_deinit(s);
        return SB_ERROR;
    }
    gnutls_transport_set_int(s, fd);
    gnutls_handshake_set_timeout(s, 0);   /* the owner's deadline bounds it */
    *out = s;
    return SB_OK;
}
