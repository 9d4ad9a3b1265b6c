/* web_http.c — the HTTP(S) connections of sb-bosh: accepting, the TLS
 * handshake (GnuTLS, driven by the loop), reading requests with the
 * maintained http_parser, writing responses (always with Content-Length;
 * CORS headers for the BOSH endpoint), keep-alive, and handing a connection
 * over to WebSocket after the 101. One request at a time per connection:
 * bytes that arrive while a request is pending (a held BOSH request, a
 * pre-bind in progress) wait in `in` with the parser paused. An upload PUT
 * (web_upload.c) is judged when its headers are complete and its body
 * goes to the store as it arrives; a file GET is streamed from its fd as
 * the socket drains (http_pump), so neither is ever held whole. */
#include "web.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_FILE_CHUNK   65536     /* bytes of a file read ahead into `out` */

#define HTTP_READ_MAX     16384
#define HTTP_IN_MAX       65536     /* bytes kept while a request is pending */
#define HTTP_HS_TIMEOUT   10.0      /* TLS handshake */
#define HTTP_REQ_TIMEOUT  30.0      /* a request started but not finished */
#define HTTP_IDLE_TIMEOUT 75.0      /* keep-alive between requests */
#define HTTP_LINGER       2.0       /* flush before closing */

enum http_state {
    HTTP_S_HANDSHAKE,   /* TLS handshake */
    HTTP_S_READ,        /* reading a request */
    HTTP_S_PENDING,     /* a request is being answered (held BOSH, pre-bind) */
    HTTP_S_WS,          /* upgraded: bytes belong to web_ws.c */
    HTTP_S_CLOSING,     /* flushing, then freed */
};

struct web_conn {
    struct web_conn *prev, *next;
    int fd;
    uint8_t state;
    uint8_t secure;             /* accepted on the HTTPS port */
    uint8_t tls_again;          /* gnutls holds a record not yet sent */
    uint8_t keep_alive, shut;
    uint8_t sending;            /* a file is being streamed (file_fd) */
    struct web_upload *upload;  /* the PUT being stored, or NULL */
    int file_fd;
    off_t file_off, file_left;
    gnutls_session_t tls;
    ev_io io;
    ev_timer timer;
    double deadline;
    struct web_reqp rp;         /* the request being read (web_parse.c) */
    struct sb_buf in, out;
    enum web_wait wait;
    void *wait_obj;
    void *ws;
    char peer[64];
};

static struct web_conn *http_conns;
static char http_rbuf[HTTP_READ_MAX];

static void http_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void http_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void http_feed(struct web_conn *h, const char *data, size_t len);
static void http_free(struct web_conn *h);

const char *web_http_peer(const struct web_conn *h) { return h->peer; }
int web_http_pending(const struct web_conn *h) { return h->out.len || h->tls_again; }
int web_http_secure(const struct web_conn *h) { return h->secure; }

/* ---- timers and interest -------------------------------------------------- */

static void http_arm(struct web_conn *h, double after)
{
    ev_timer_stop(c2s.loop, &h->timer);
    if (after <= 0)
        return;
    h->deadline = ev_now(c2s.loop) + after;
    ev_timer_set(&h->timer, after, 0.);
    ev_timer_start(c2s.loop, &h->timer);
}

void web_http_want(struct web_conn *h, int rd, int wr)
{
    int ev = (rd ? EV_READ : 0) | (wr ? EV_WRITE : 0);
    if (ev == (h->io.events & (EV_READ | EV_WRITE)) && (ev == 0 || ev_is_active(&h->io)))
        return;
    ev_io_stop(c2s.loop, &h->io);
    ev_io_set(&h->io, h->fd, ev);
    if (ev)
        ev_io_start(c2s.loop, &h->io);
}

static void http_want(struct web_conn *h)
{
    if (h->state == HTTP_S_HANDSHAKE) {
        web_http_want(h, !gnutls_record_get_direction(h->tls), gnutls_record_get_direction(h->tls));
        return;
    }
    int pending = h->out.len || h->tls_again || h->sending;
    web_http_want(h, 1, pending);
}

/* ---- raw I/O ------------------------------------------------------------------ */

ssize_t web_http_raw_read(struct web_conn *h, void *buf, size_t len)
{
    if (h->in.len) {                         /* bytes that came with the upgrade */
        size_t n = h->in.len < len ? h->in.len : len;
        memcpy(buf, h->in.data, n);
        sb_buf_consume(&h->in, n);
        if (!h->in.len)
            sb_buf_free(&h->in);
        return (ssize_t)n;
    }
    for (;;) {
        ssize_t n;
        if (h->tls) {
            n = gnutls_record_recv(h->tls, buf, len);
            if (n == GNUTLS_E_AGAIN)
                return -1;
            if (n == GNUTLS_E_INTERRUPTED || (n < 0 && !gnutls_error_is_fatal((int)n)))
                continue;
            if (n == GNUTLS_E_PREMATURE_TERMINATION)
                return 0;
            return n < 0 ? -2 : n;
        }
        n = recv(h->fd, buf, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        return n < 0 ? -2 : n;
    }
}

/* Drain h->out: 0 empty, 1 bytes remain, -1 error. */
static void http_on_headers(struct web_reqp *p);
static int http_on_body(struct web_reqp *p, const char *at, size_t n);

static int http_flush(struct web_conn *h)
{
    if (h->tls_again) {
        ssize_t r = gnutls_record_send(h->tls, NULL, 0);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return 1;
        h->tls_again = 0;
        if (r < 0)
            return -1;
    }
    size_t done = 0;
    while (done < h->out.len) {
        ssize_t r;
        size_t n = h->out.len - done;
        if (h->tls) {
            if (n > 16384)
                n = 16384;
            r = gnutls_record_send(h->tls, h->out.data + done, n);
            if (r == GNUTLS_E_AGAIN) {
                h->tls_again = 1;    /* gnutls keeps the record: it counts as taken */
                done += n;
                break;
            }
            if (r == GNUTLS_E_INTERRUPTED)
                continue;
        } else {
            r = send(h->fd, h->out.data + done, n, MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
        }
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    sb_buf_consume(&h->out, done);
    if (h->out.len || h->tls_again)
        return 1;
    sb_buf_free(&h->out);
    return 0;
}

ssize_t web_http_raw_write(struct web_conn *h, const void *buf, size_t len)
{
    if (h->out.len > c2s.cfg.max_pending)
        return -1;                            /* the peer does not read: push back */
    if (sb_buf_add(&h->out, buf, len) != SB_OK)
        return -2;
    if (http_flush(h) < 0)
        return -2;
    return (ssize_t)len;
}

/* ---- life of a connection ------------------------------------------------------- */

void web_http_accept(int fd, const char *peer, int tls)
{
    struct web_conn *h = calloc(1, sizeof *h);
    if (!h) {
        close(fd);
        log_error("http_accept_nomem", "peer=%s", peer);
        return;
    }
    h->fd = fd;
    h->secure = (uint8_t)(tls != 0);
    snprintf(h->peer, sizeof h->peer, "%s", peer);
    ev_io_init(&h->io, http_io_cb, fd, 0);
    h->io.data = h;
    ev_init(&h->timer, http_timer_cb);
    h->timer.data = h;
    web_reqp_init(&h->rp, web_cfg.max_body);
    h->rp.on_headers = http_on_headers;
    h->rp.on_body = http_on_body;
    h->rp.ud = h;
    h->next = http_conns;
    if (http_conns)
        http_conns->prev = h;
    http_conns = h;
    log_debug("http_accept", "peer=%s tls=%d", peer, tls);
    if (tls) {
        if (c2s_tls_session_new(fd, NULL, &h->tls) != SB_OK) {
            http_free(h);
            return;
        }
        h->state = HTTP_S_HANDSHAKE;
        http_arm(h, HTTP_HS_TIMEOUT);
        ev_feed_event(c2s.loop, &h->io, EV_READ);
        http_want(h);
        return;
    }
    h->state = HTTP_S_READ;
    http_arm(h, HTTP_IDLE_TIMEOUT);
    http_want(h);
}

/* Whatever a request holds besides buffers: the PUT's temporary file, the
 * file being sent. */
static void http_req_release(struct web_conn *h)
{
    if (h->upload)
        web_upload_put_abort(h->upload);
    h->upload = NULL;
    if (h->sending)
        close(h->file_fd);
    h->sending = 0;
}

static void http_free(struct web_conn *h)
{
    http_req_release(h);
    if (h->wait == WEB_WAIT_BOSH)
        web_bosh_conn_gone(h->wait_obj, h);
    else if (h->wait == WEB_WAIT_PREBIND)
        web_prebind_gone(h->wait_obj);
    h->wait = WEB_WAIT_NONE;
    if (h->ws)
        web_ws_conn_gone(h->ws);
    h->ws = NULL;
    ev_io_stop(c2s.loop, &h->io);
    ev_timer_stop(c2s.loop, &h->timer);
    if (h->tls)
        gnutls_deinit(h->tls);
    close(h->fd);
    sb_buf_free(&h->in);
    sb_buf_free(&h->out);
    web_reqp_free(&h->rp);
    if (h->prev)
        h->prev->next = h->next;
    else
        http_conns = h->next;
    if (h->next)
        h->next->prev = h->prev;
    free(h);
}

/* Lingering close (like c2s): once flushed, shut the write side and read
 * until EOF or HTTP_LINGER, so a peer still sending gets our last bytes
 * (an error, a close frame) instead of a reset. */
static void http_shut(struct web_conn *h)
{
    if (h->shut)
        return;
    h->shut = 1;
    if (h->tls)
        gnutls_bye(h->tls, GNUTLS_SHUT_WR);
    shutdown(h->fd, SHUT_WR);
}

void web_http_close(struct web_conn *h, const char *reason)
{
    if (h->state == HTTP_S_CLOSING)
        return;
    log_debug("http_close", "peer=%s reason=%s", h->peer, reason);
    h->state = HTTP_S_CLOSING;
    http_req_release(h);
    if (h->wait == WEB_WAIT_BOSH)
        web_bosh_conn_gone(h->wait_obj, h);
    else if (h->wait == WEB_WAIT_PREBIND)
        web_prebind_gone(h->wait_obj);
    h->wait = WEB_WAIT_NONE;
    if (h->ws)
        web_ws_conn_gone(h->ws);
    h->ws = NULL;
    http_arm(h, HTTP_LINGER);
    int r = http_flush(h);
    if (r < 0) {
        ev_timer_stop(c2s.loop, &h->timer);
        ev_timer_set(&h->timer, 0., 0.);       /* free on the next loop turn */
        ev_timer_start(c2s.loop, &h->timer);
        web_http_want(h, 0, 0);
        return;
    }
    if (r == 0)
        http_shut(h);
    web_http_want(h, 1, r == 1);
}

void web_http_upgraded(struct web_conn *h, void *ws)
{
    h->ws = ws;
    h->state = HTTP_S_WS;
    ev_timer_stop(c2s.loop, &h->timer);        /* WebSocket pings watch it now */
}

void web_http_wait(struct web_conn *h, enum web_wait what, void *obj)
{
    h->wait = what;
    h->wait_obj = obj;
}

/* ---- requests --------------------------------------------------------------------- */


/* web_reqp hooks (web_parse.c): an upload PUT is judged when its headers
 * are in (a refused one is answered without reading its body) and its body
 * goes to the store as it arrives. */
static void http_on_headers(struct web_reqp *p)
{
    struct web_conn *h = p->ud;
    struct web_req *r = &p->req;
    if (r->method == HTTP_PUT && web_upload_path(r->path)) {
        p->fail = web_upload_put_begin(h, r, &h->upload, &p->fail_why);
        p->streamed = !p->fail && h->upload;
    }
}

static int http_on_body(struct web_reqp *p, const char *at, size_t n)
{
    struct web_conn *h = p->ud;
    http_arm(h, HTTP_REQ_TIMEOUT);       /* a slow upload lives while it moves */
    p->fail = web_upload_put_data(h->upload, at, n, &p->fail_why);
    return p->fail;
}

/* ---- responses ---------------------------------------------------------------------- */

int web_origin_allowed(const char *origin)
{
    const char *l = web_cfg.cors_origins;
    if (strcmp(l, "*") == 0)
        return 1;
    size_t n = strlen(origin);
    if (!n)
        return 0;
    while (*l) {
        l += strspn(l, " ,\t");
        size_t k = strcspn(l, " ,\t");
        if (k == n && strncmp(l, origin, n) == 0)
            return 1;
        l += k;
    }
    return 0;
}

static void http_cors(struct web_conn *h, struct sb_buf *b)
{
    if (strcmp(web_cfg.cors_origins, "*") == 0)
        sb_buf_adds(b, "Access-Control-Allow-Origin: *\r\n");
    else if (web_origin_allowed(h->rp.req.origin))
        sb_buf_printf(b, "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n", h->rp.req.origin);
    else
        return;
    sb_buf_adds(b, "Access-Control-Allow-Methods: GET, HEAD, POST, PUT, OPTIONS\r\n"
                   "Access-Control-Allow-Headers: Content-Type\r\n"
                   "Access-Control-Max-Age: 86400\r\n");
}

static void http_next(struct web_conn *h);
static void http_done(struct web_conn *h);

void web_respond(struct web_conn *h, int status, const char *ctype, const char *body,
                 size_t len, int cors)
{
    if (h->state == HTTP_S_CLOSING || h->state == HTTP_S_WS)
        return;
    struct sb_buf hdr = SB_BUF_INIT;
    sb_buf_printf(&hdr, "HTTP/1.1 %d %s\r\nServer: switchboard\r\nCache-Control: no-store\r\n",
                  status, http_status_str((enum http_status)status));
    if (ctype)
        sb_buf_printf(&hdr, "Content-Type: %s\r\n", ctype);
    if (cors)
        http_cors(h, &hdr);
    sb_buf_printf(&hdr, "Content-Length: %zu\r\nConnection: %s\r\n\r\n", len,
                  h->keep_alive ? "keep-alive" : "close");
    if (!hdr.data || sb_buf_add(&h->out, hdr.data, hdr.len) != SB_OK ||
        sb_buf_add(&h->out, body, len) != SB_OK) {
        sb_buf_free(&hdr);
        web_http_close(h, "nomem");
        return;
    }
    sb_buf_free(&hdr);
    h->wait = WEB_WAIT_NONE;
    h->wait_obj = NULL;
    http_done(h);
}

/* The response is in `out` (and, for a file, sent to its end): close, or
 * read the next request. */
static void http_done(struct web_conn *h)
{
    if (!h->keep_alive) {
        web_http_close(h, "done");
        return;
    }
    if (http_flush(h) < 0) {
        web_http_close(h, "write-error");
        return;
    }
    h->state = HTTP_S_READ;
    http_arm(h, HTTP_IDLE_TIMEOUT);
    http_want(h);
    http_next(h);
}

/* Keep up to HTTP_FILE_CHUNK of the file in `out` while the socket takes
 * it; the connection ends the response once the last byte left. */
static void http_pump(struct web_conn *h)
{
    for (int round = 0; round < 16 && h->sending; round++) {
        while (h->file_left > 0 && h->out.len < HTTP_FILE_CHUNK) {
            size_t want = sizeof http_rbuf;
            if ((off_t)want > h->file_left)
                want = (size_t)h->file_left;
            ssize_t n = pread(h->file_fd, http_rbuf, want, h->file_off);
            if (n <= 0 || sb_buf_add(&h->out, http_rbuf, (size_t)n) != SB_OK) {
                log_warn("http_file_read_failed", "peer=%s err=%s", h->peer,
                         n < 0 ? strerror(errno) : "short");
                web_http_close(h, "file-read-error");
                return;
            }
            h->file_off += n;
            h->file_left -= n;
        }
        int r = http_flush(h);
        if (r < 0) {
            web_http_close(h, "write-error");
            return;
        }
        if (h->file_left == 0) {
            close(h->file_fd);
            h->sending = 0;
            if (r == 0) {
                http_done(h);
                return;
            }
        }
        if (r == 1)
            break;              /* the socket is full: EV_WRITE resumes */
    }
    http_want(h);
}

void web_respond_file(struct web_conn *h, int status, const char *ctype, const char *headers,
                      int fd, off_t off, off_t len, int head)
{
    if (h->state == HTTP_S_CLOSING || h->state == HTTP_S_WS) {
        close(fd);
        return;
    }
    struct sb_buf hdr = SB_BUF_INIT;
    sb_buf_printf(&hdr, "HTTP/1.1 %d %s\r\nServer: switchboard\r\n", status,
                  http_status_str((enum http_status)status));
    if (ctype)
        sb_buf_printf(&hdr, "Content-Type: %s\r\n", ctype);
    http_cors(h, &hdr);
    sb_buf_printf(&hdr, "%sContent-Length: %lld\r\nConnection: %s\r\n\r\n", headers,
                  (long long)len, h->keep_alive ? "keep-alive" : "close");
    if (!hdr.data || sb_buf_add(&h->out, hdr.data, hdr.len) != SB_OK) {
        sb_buf_free(&hdr);
        close(fd);
        web_http_close(h, "nomem");
        return;
    }
    sb_buf_free(&hdr);
    h->wait = WEB_WAIT_NONE;
    h->wait_obj = NULL;
    if (head || len == 0) {
        close(fd);
        http_done(h);
        return;
    }
    h->sending = 1;
    h->file_fd = fd;
    h->file_off = off;
    h->file_left = len;
    http_pump(h);
}

static void http_error(struct web_conn *h, int status, const char *text)
{
    h->keep_alive = 0;
    web_respond(h, status, "text/plain; charset=utf-8", text, strlen(text), 0);
}

void web_http_error(struct web_conn *h, int status, const char *text)
{
    http_error(h, status, text);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void http_dispatch(struct web_conn *h)
{
    struct web_req *r = &h->rp.req;
    h->keep_alive = (uint8_t)r->keep_alive;
    h->state = HTTP_S_PENDING;
    ev_timer_stop(c2s.loop, &h->timer);
    if (c2s.stopping) {
        http_error(h, 503, "shutting down\n");
        return;
    }
    if (strcmp(r->path, web_cfg.bosh_path) == 0) {
        if (r->method == HTTP_OPTIONS)
            web_respond(h, 204, NULL, "", 0, 1);
        else if (r->method == HTTP_POST)
            web_bosh_request(h, r);
        else if (r->method == HTTP_GET || r->method == HTTP_HEAD)
            web_respond(h, 200, "text/plain; charset=utf-8",
                        "XMPP over BOSH (XEP-0124, XEP-0206): POST <body/> here.\n", 56, 1);
        else
            http_error(h, 405, "method not allowed\n");
        return;
    }
    if (strcmp(r->path, web_cfg.ws_path) == 0) {
        if (r->method == HTTP_GET && r->upgrade_req)
            web_ws_upgrade(h, r);
        else
            http_error(h, 426, "WebSocket (RFC 7395, subprotocol xmpp) only\n");
        return;
    }
    if (web_upload_path(r->path)) {
        struct web_upload *up = h->upload;
        h->upload = NULL;              /* web_upload_request owns it now */
        web_upload_request(h, r, up);
        return;
    }
    if (*web_cfg.prebind_secret && strcmp(r->path, web_cfg.prebind_path) == 0) {
        if (r->method == HTTP_POST)
            web_prebind_request(h, r);
        else
            http_error(h, 405, "method not allowed\n");
        return;
    }
    http_error(h, 404, "not found\n");
}

/* Parse what was buffered while the last request was answered. */
static void http_next(struct web_conn *h)
{
    web_reqp_next(&h->rp);
    if (h->in.len) {
        struct sb_buf in = h->in;
        h->in = (struct sb_buf)SB_BUF_INIT;
        http_feed(h, in.data, in.len);
        sb_buf_free(&in);
    }
}

static void http_feed(struct web_conn *h, const char *data, size_t len)
{
    if (h->state == HTTP_S_PENDING) {
        if (h->in.len + len > HTTP_IN_MAX || sb_buf_add(&h->in, data, len) != SB_OK)
            web_http_close(h, "pipelining-overflow");
        return;
    }
    if (h->state != HTTP_S_READ)
        return;
    int was_started = h->rp.started;
    h->rp.max_body = web_cfg.max_body;    /* may change on SIGHUP */
    size_t n;
    enum web_reqp_rc rc = web_reqp_feed(&h->rp, data, len, &n);
    if (!was_started && h->rp.started)
        http_arm(h, HTTP_REQ_TIMEOUT);    /* a request began */
    if (rc == WEB_REQP_DONE || rc == WEB_REQP_HDR_TOO_BIG) {
        if (n < len && sb_buf_add(&h->in, data + n, len - n) != SB_OK) {
            web_http_close(h, "nomem");
            return;
        }
        if (rc == WEB_REQP_HDR_TOO_BIG) {
            http_error(h, 431, "request header fields too large\n");
            return;
        }
        http_dispatch(h);
        return;
    }
    if (rc == WEB_REQP_FAILED) {
        http_error(h, h->rp.fail, h->rp.fail_why ? h->rp.fail_why : "refused\n");
        return;
    }
    if (rc == WEB_REQP_TOO_BIG) {
        http_error(h, 413, "request body too large\n");
        return;
    }
    if (rc == WEB_REQP_BAD) {
        log_info("http_bad_request", "peer=%s error=%s", h->peer, web_reqp_error(&h->rp));
        http_error(h, 400, "bad request\n");
    }
}

/* ---- events ---------------------------------------------------------------------------------- */

static void http_handshake(struct web_conn *h)
{
    int r = gnutls_handshake(h->tls);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
        http_want(h);
        return;
    }
    if (r < 0) {
        log_info("https_handshake_failed", "peer=%s error=%s", h->peer,
                 sb_log_q(gnutls_strerror(r)));
        http_free(h);
        return;
    }
    h->state = HTTP_S_READ;
    http_arm(h, HTTP_IDLE_TIMEOUT);
    http_want(h);
    if (gnutls_record_check_pending(h->tls) > 0)
        ev_feed_event(c2s.loop, &h->io, EV_READ);
}

static void http_read(struct web_conn *h)
{
    for (int i = 0; i < 16 && (h->state == HTTP_S_READ || h->state == HTTP_S_PENDING); i++) {
        ssize_t n = web_http_raw_read(h, http_rbuf, sizeof http_rbuf);
        if (n == -1)
            return;
        if (n <= 0) {
            web_http_close(h, n == 0 ? "eof" : "read-error");
            return;
        }
        http_feed(h, http_rbuf, (size_t)n);
    }
}

static void http_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct web_conn *h = w->data;
    switch (h->state) {
    case HTTP_S_HANDSHAKE:
        http_handshake(h);
        return;
    case HTTP_S_WS:
        if ((revents & EV_WRITE) && http_flush(h) < 0) {
            web_http_close(h, "write-error");
            return;
        }
        web_ws_io(h->ws, revents);
        return;
    case HTTP_S_CLOSING: {
        int r = (revents & EV_WRITE) ? http_flush(h) : (web_http_pending(h) ? 1 : 0);
        if (r < 0) {
            http_free(h);
            return;
        }
        if (r == 0)
            http_shut(h);
        if (revents & EV_READ) {
            for (int i = 0; i < 16; i++) {
                ssize_t n = recv(h->fd, http_rbuf, sizeof http_rbuf, 0);
                if (n > 0)
                    continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                    break;
                http_free(h);               /* EOF or error: done */
                return;
            }
        }
        web_http_want(h, 1, r == 1);
        return;
    }
    default:
        break;
    }
    if ((revents & EV_WRITE) && http_flush(h) < 0) {
        web_http_close(h, "write-error");
        return;
    }
    if (h->sending && (revents & EV_WRITE) && !h->out.len && !h->tls_again) {
        http_pump(h);
        if (h->state == HTTP_S_CLOSING)
            return;
    }
    if (revents & EV_READ)
        http_read(h);
    if (h->state == HTTP_S_READ || h->state == HTTP_S_PENDING)
        http_want(h);
}

static void http_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct web_conn *h = w->data;
    if (h->state == HTTP_S_CLOSING) {
        http_free(h);
        return;
    }
    if (h->state == HTTP_S_PENDING || h->state == HTTP_S_WS)
        return;
    log_debug("http_timeout", "peer=%s state=%d", h->peer, h->state);
    if (h->state == HTTP_S_READ && h->rp.started)
        http_error(h, 408, "request timeout\n");
    else
        http_free(h);
}

void web_http_init(void)
{
    web_reqp_setup();
}

void web_http_stop(void)
{
    for (struct web_conn *h = http_conns, *next; h; h = next) {
        next = h->next;
        if (h->state == HTTP_S_READ && !h->rp.started)
            http_free(h);
    }
}

void web_http_free_all(void)
{
    while (http_conns)
        http_free(http_conns);
}
