/* web_ws.c — XMPP over WebSocket (RFC 7395) at /xmpp-websocket: the
 * upgrade (RFC 6455 handshake, subprotocol `xmpp` required), framing with
 * the maintained wslay library, and the WebSocket transport of the c2s
 * session core: every element is one text message, <open/> and <close/>
 * (urn:ietf:params:xml:ns:xmpp-framing) replace the stream header and
 * </stream:stream>. Limits: a message over max_stanza (+1 KiB of slack for
 * the framing) closes the socket with 1009 (wslay), an element over
 * max_stanza or max_depth gets a policy-violation stream error, binary
 * frames close with 1003. Every `ws_ping` seconds the server pings; a
 * client that has sent nothing since the previous ping is closed. */
#include "web.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#define NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"

struct web_ws {
    struct web_ws *prev, *next;
    struct web_conn *h;          /* NULL once the connection is gone */
    struct c2s_conn *c;          /* NULL once the session is gone */
    wslay_event_context_ptr ctx;
    unsigned ping_out : 1;       /* a ping went out, nothing came back since */
    unsigned closing : 1;        /* the session is over: close after the data */
    unsigned close_queued : 1;   /* our close frame is queued */
    unsigned in_io : 1;          /* inside wslay: no pumping, no freeing */
    unsigned dead : 1;           /* the connection went away while in_io */
};

static void ws_destroy(struct web_ws *ws);

static struct web_ws *ws_list;
static ev_timer ws_ping_timer;
static struct sb_buf ws_frame;

static void ws_tp_open(struct c2s_conn *c, const char *from, const char *to);
static void ws_tp_write(struct c2s_conn *c, const char *data, size_t len);
static void ws_tp_end(struct c2s_conn *c);
static void ws_tp_close(struct c2s_conn *c, enum c2s_state was);
static void ws_tp_release(struct c2s_conn *c);
static void ws_tp_resume(struct c2s_conn *c);

static const struct c2s_transport ws_transport = {
    .name = "ws",
    .framed = 1,
    .starttls = 0,
    .open = ws_tp_open,
    .write = ws_tp_write,
    .end = ws_tp_end,
    .close = ws_tp_close,
    .release = ws_tp_release,
    .resume = ws_tp_resume,
};

/* ---- wslay plumbing ------------------------------------------------------------ */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *ud)
{
    struct web_ws *ws = ud;
    if (!ws->h) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if (ws->c && (ws->c->flags & C2S_F_THROTTLED)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);   /* over max_rate (rate.c) */
        return -1;
    }
    ssize_t n = web_http_raw_read(ws->h, buf, len);
    if (n == -1) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    ws->ping_out = 0;
    if (ws->c && c2s_rate_bytes(ws->c, (size_t)n) > 0) {
        ws->c->flags |= C2S_F_THROTTLED;     /* stop reading; the conn timer resumes */
        c2s_conn_arm_timer(ws->c);
    }
    return n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                          int flags, void *ud)
{
    struct web_ws *ws = ud;
    if (!ws->h) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    ssize_t n = web_http_raw_write(ws->h, data, len);
    if (n == -1) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (n < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return n;
}

static void ws_message(struct web_ws *ws, const char *msg, size_t len);

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                      void *ud)
{
    struct web_ws *ws = ud;
    if (!ws->c)
        return;
    if (a->opcode == WSLAY_TEXT_FRAME) {
        ws_message(ws, (const char *)a->msg, a->msg_length);
    } else if (a->opcode == WSLAY_BINARY_FRAME) {
        log_info("ws_binary_refused", "sid=%s", ws->c->sid);
        wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, NULL, 0);
        ws->close_queued = 1;
        c2s_conn_close(ws->c, "ws-binary-frame");
    } else if (a->opcode == WSLAY_CONNECTION_CLOSE) {
        c2s_conn_close(ws->c, "ws-close-frame");      /* without <close/>: abrupt end */
    }
}

/* Run wslay both ways and set the connection's interest; closes when done. */
static void ws_pump(struct web_ws *ws)
{
    if (!ws->h || ws->in_io)
        return;
    int r = 0;
    for (int round = 0; round < 2 && r == 0; round++) {
        /* wslay sends control frames first: queue the close only once every
         * element (the <close/>, a stream error) has gone out. */
        if (ws->closing && !ws->close_queued && wslay_event_get_queued_msg_count(ws->ctx) == 0) {
            wslay_event_queue_close(ws->ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
            ws->close_queued = 1;
        }
        if (!wslay_event_want_write(ws->ctx))
            break;
        ws->in_io = 1;
        r = wslay_event_send(ws->ctx);
        ws->in_io = 0;
        if (ws->dead) {
            ws_destroy(ws);
            return;
        }
    }
    int rd = wslay_event_want_read(ws->ctx), wr = wslay_event_want_write(ws->ctx);
    if (r != 0 || (!rd && !wr) || (ws->close_queued && !wr)) {
        if (ws->c)
            c2s_conn_close(ws->c, r ? "ws-error" : "ws-closed");
        if (ws->h)
            web_http_close(ws->h, "ws-done");
        return;
    }
    if (ws->c && (ws->c->flags & C2S_F_THROTTLED))
        rd = 0;
    web_http_want(ws->h, rd, wr || web_http_pending(ws->h));
}

/* The byte shaper let the session read again. */
static void ws_tp_resume(struct c2s_conn *c)
{
    struct web_ws *ws = c->tctx;
    if (ws && ws->h && !ws->in_io)
        web_ws_io(ws, EV_READ);
}

void web_ws_io(void *obj, int revents)
{
    struct web_ws *ws = obj;
    int r = 0;
    if (revents & EV_READ) {
        ws->in_io = 1;
        r = wslay_event_recv(ws->ctx);
        ws->in_io = 0;
        if (ws->dead) {
            ws_destroy(ws);
            return;
        }
    }
    if (r != 0) {
        if (ws->c)
            c2s_conn_close(ws->c, "ws-eof");
        if (ws->h)
            web_http_close(ws->h, "ws-eof");
        return;
    }
    ws_pump(ws);
}

static void ws_send_text(struct web_ws *ws, const char *data, size_t len)
{
    if (!ws->h || ws->closing)
        return;
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)data, len};
    if (wslay_event_queue_msg(ws->ctx, &m) != 0)
        log_warn("ws_queue_failed", "peer=%s", web_http_peer(ws->h));
}

/* ---- messages from the client ------------------------------------------------------- */

static void ws_open(struct web_ws *ws, const struct xml_node *n)
{
    const char *ns = xml_attr(n, "xmlns");
    if (!ns || strcmp(ns, NS_FRAMING) != 0) {
        c2s_stream_error(ws->c, "invalid-namespace", "open-ns");
        return;
    }
    c2s_stream_begin(ws->c, xml_attr(n, "to"), xml_attr(n, "version"), xml_attr(n, "from"));
}

static void ws_message(struct web_ws *ws, const char *msg, size_t len)
{
    int empty;
    enum xml_err err;
    struct xml_doc *d = web_ws_parse(msg, len, &c2s.cfg.limits, &empty, &err);
    if (empty)
        return;                              /* whitespace: nothing to do */
    if (!d) {
        c2s_stream_error(ws->c, xml_err_stream_cond(err), xml_err_name(err));
        return;
    }
    struct xml_node *n = d->root;
    if (strcmp(n->name, "open") == 0) {
        ws_open(ws, n);
    } else if (strcmp(n->name, "close") == 0) {
        c2s_stream_closed(ws->c);
    } else if (!(ws->c->flags & C2S_F_HDR_SENT)) {
        c2s_stream_error(ws->c, strcmp(n->name, "stream:stream") == 0 ? "invalid-namespace"
                                                                      : "bad-format", n->name);
    } else {
        c2s_stream_element(ws->c, n);
    }
    xml_doc_free(d);
}

/* ---- the transport ------------------------------------------------------------------ */

static void ws_tp_open(struct c2s_conn *c, const char *from, const char *to)
{
    struct web_ws *ws = c->tctx;
    if (!ws)
        return;
    struct sb_buf *b = &ws_frame;
    sb_buf_reset(b);
    sb_buf_printf(b, "<open xmlns='" NS_FRAMING "' id='%s'", c->sid);
    if (from) {
        sb_buf_adds(b, " from='");
        xml_escape_attr(b, from, strlen(from));
        sb_buf_adds(b, "'");
    }
    if (to) {
        sb_buf_adds(b, " to='");
        xml_escape_attr(b, to, strlen(to));
        sb_buf_adds(b, "'");
    }
    sb_buf_adds(b, " version='1.0' xml:lang='en'/>");
    ws_send_text(ws, b->data, b->len);
    ws_pump(ws);
}

static void ws_tp_write(struct c2s_conn *c, const char *data, size_t len)
{
    struct web_ws *ws = c->tctx;
    if (!ws || !ws->h)
        return;
    if (wslay_event_get_queued_msg_length(ws->ctx) + len > c2s.cfg.max_pending) {
        log_warn("slow_reader", "peer=%s sid=%s jid=%s", c->peer, c->sid, c->jid ? c->jid : "-");
        c2s_conn_close(c, "slow-reader");
        return;
    }
    struct sb_buf *b = &ws_frame;
    sb_buf_reset(b);
    if (web_add_element(b, data, len) != SB_OK) {
        c2s_conn_close(c, "nomem");
        return;
    }
    ws_send_text(ws, b->data, b->len);
    ws_pump(ws);
}

static void ws_tp_end(struct c2s_conn *c)
{
    struct web_ws *ws = c->tctx;
    static const char close_el[] = "<close xmlns='" NS_FRAMING "'/>";
    if (ws)
        ws_send_text(ws, close_el, sizeof close_el - 1);
}

static void ws_tp_close(struct c2s_conn *c, enum c2s_state was)
{
    struct web_ws *ws = c->tctx;
    c->tctx = NULL;
    c2s_conn_free_soon(c);
    if (!ws)
        return;
    ws->c = NULL;
    if (ws->h && !ws->closing) {
        ws->closing = 1;
        ws_pump(ws);
    }
}

static void ws_tp_release(struct c2s_conn *c)
{
    struct web_ws *ws = c->tctx;
    if (ws)
        ws->c = NULL;
}

/* ---- the upgrade ------------------------------------------------------------------------ */

static void ws_refuse(struct web_conn *h, int status, const char *why)
{
    log_info("ws_refused", "peer=%s status=%d why=%s", web_http_peer(h), status, why);
    web_respond(h, status, "text/plain; charset=utf-8", why, strlen(why), 0);
}

void web_ws_upgrade(struct web_conn *h, struct web_req *r)
{
    const char *why = web_ws_check_upgrade(r);
    if (why) {
        ws_refuse(h, 400, why);
        return;
    }
    if (*r->origin && !web_origin_allowed(r->origin)) {
        ws_refuse(h, 403, "origin not allowed\n");
        return;
    }
    struct web_ws *ws = calloc(1, sizeof *ws);
    static const struct wslay_event_callbacks cbs = {
        ws_recv_cb, ws_send_cb, NULL, NULL, NULL, NULL, ws_msg_cb,
    };
    if (!ws || web_ws_ctx_new(&ws->ctx, &cbs, ws, c2s.cfg.limits.max_stanza + 1024) != 0) {
        free(ws);
        ws_refuse(h, 503, "out of memory\n");
        return;
    }
    ws->c = c2s_conn_new_session(&ws_transport, ws, web_http_peer(h), web_http_secure(h),
                                 C2S_NEW_COUNTED);
    if (!ws->c) {
        wslay_event_context_free(ws->ctx);
        free(ws);
        ws_refuse(h, 503, "out of memory\n");
        return;
    }
    ws->h = h;
    ws->next = ws_list;
    if (ws_list)
        ws_list->prev = ws;
    ws_list = ws;
    char accept[64], head[256];
    web_ws_accept_key(r->ws_key, accept);
    int n = snprintf(head, sizeof head, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: xmpp\r\n\r\n", accept);
    web_http_upgraded(h, ws);
    if (web_http_raw_write(h, head, (size_t)n) < 0) {
        web_http_close(h, "write-error");
        return;
    }
    log_debug("ws_open", "peer=%s", web_http_peer(h));
    web_ws_io(ws, EV_READ);               /* frames may have come with the request */
}

void web_ws_conn_gone(void *obj)
{
    struct web_ws *ws = obj;
    ws->h = NULL;
    if (ws->c)
        c2s_conn_close(ws->c, "ws-eof");
    if (ws->in_io)
        ws->dead = 1;                     /* freed when wslay has returned */
    else
        ws_destroy(ws);
}

static void ws_destroy(struct web_ws *ws)
{
    if (ws->prev)
        ws->prev->next = ws->next;
    else
        ws_list = ws->next;
    if (ws->next)
        ws->next->prev = ws->prev;
    if (ws->c)
        ws->c->tctx = NULL;
    wslay_event_context_free(ws->ctx);
    free(ws);
}

/* ---- pings ---------------------------------------------------------------------------------- */

static void ws_ping_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    for (struct web_ws *ws = ws_list, *next; ws; ws = next) {
        next = ws->next;
        if (!ws->h || ws->closing)
            continue;
        if (ws->ping_out) {
            log_info("ws_ping_timeout", "peer=%s sid=%s", web_http_peer(ws->h),
                     ws->c ? ws->c->sid : "-");
            if (ws->c)
                c2s_conn_close(ws->c, "ws-ping-timeout");
            else
                web_http_close(ws->h, "ws-ping-timeout");
            continue;
        }
        struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"sb", 2};
        wslay_event_queue_msg(ws->ctx, &m);
        ws->ping_out = 1;
        ws_pump(ws);
    }
}

void web_ws_ping_all(void)
{
    if (web_cfg.ws_ping <= 0)
        return;
    ev_timer_init(&ws_ping_timer, ws_ping_cb, web_cfg.ws_ping, web_cfg.ws_ping);
    ev_timer_start(c2s.loop, &ws_ping_timer);
    ev_unref(c2s.loop);
}
