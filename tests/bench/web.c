/* web.c — the generator's WebSocket and BOSH transports (--transport ws |
 * bosh), under the same login state machine as TCP (client.c): client.c
 * hands every element it writes to sbb_web_write and every byte it reads to
 * sbb_web_input; this file frames them and feeds the unwrapped elements
 * back through sbb_conn_feed.
 *
 * WebSocket (RFC 6455, XMPP framing RFC 7395): an HTTP/1.1 Upgrade with
 * Sec-WebSocket-Protocol: xmpp, then one masked text frame per element
 * written; <open/> and <close/> stand for the stream header and its end.
 * Server frames are unmasked: text payloads are fed as they are, a ping is
 * answered with a pong, a close ends the connection.
 *
 * BOSH (XEP-0124 / XEP-0206), one HTTP/1.1 keep-alive connection and
 * hold=1: exactly one request is always out (the server holds it up to
 * `wait` s when it has nothing to say); what the state machine writes meanwhile
 * waits in `q` and leaves with the next request, sent as soon as the
 * answer to the current one is in. The first request creates the session,
 * a restart after SASL is xmpp:restart='true', the end is type='terminate'.
 * So a chatting BOSH client's messages can wait up to `wait` s: fine for
 * the idle scenario, not a latency figure. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nettle/base64.h>

#include "sbbench.h"

#define NS_FRAMING "urn:ietf:params:xml:ns:xmpp-framing"
#define NS_HTTPBIND "http://jabber.org/protocol/httpbind"
#define BOSH_WAIT 60

/* ---- WebSocket ---------------------------------------------------------- */

/* One client frame: FIN + opcode, masked payload (RFC 6455 §5.2, §5.3). */
static void ws_frame(struct sbb_conn *c, int opcode, const char *data, size_t len)
{
    unsigned char h[14];
    size_t n = 0;
    h[n++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        h[n++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        h[n++] = 0x80 | 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    uint32_t key = (uint32_t)random();
    unsigned char *m = h + n;
    memcpy(m, &key, 4);
    n += 4;
    char *p = malloc(n + len);
    if (!p) {
        sbb_conn_fail(c, "nomem");
        return;
    }
    memcpy(p, h, n);
    for (size_t i = 0; i < len; i++)
        p[n + i] = (char)(data[i] ^ m[i & 3]);
    sbb_conn_raw(c, p, n + len);
    free(p);
}

static void ws_upgrade(struct sbb_conn *c)
{
    unsigned char nonce[16];
    char key[BASE64_ENCODE_RAW_LENGTH(16) + 1], req[512];
    for (int i = 0; i < 16; i++)
        nonce[i] = (unsigned char)random();
    base64_encode_raw(key, 16, nonce);
    key[BASE64_ENCODE_RAW_LENGTH(16)] = 0;
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n",
                     sbb_opt.path ? sbb_opt.path : "/xmpp-websocket", sbb_opt.domain, key);
    sbb_conn_raw(c, req, (size_t)n);
}

/* Whole frames out of c->raw; 0 while the connection lives. */
static int ws_frames(struct sbb_conn *c)
{
    const unsigned char *p = (const unsigned char *)c->raw.data;
    size_t have = c->raw.len, off = 0;
    while (have - off >= 2) {
        const unsigned char *f = p + off;
        int op = f[0] & 0x0f, masked = f[1] & 0x80;
        uint64_t len = f[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (have - off < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (have - off < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
            hl = 10;
        }
        if (masked) {                         /* a server never masks (§5.1) */
            sbb_conn_fail(c, "ws-masked");
            return -1;
        }
        if (have - off - hl < len)
            break;
        const char *pl = (const char *)f + hl;
        if (op == 0x1 || op == 0x0) {
            sbb_conn_feed(c, pl, (size_t)len);
        } else if (op == 0x9) {
            ws_frame(c, 0xA, pl, (size_t)len);
        } else if (op == 0x8) {
            sbb_conn_fail(c, c->state == SBB_CLOSING ? "closed" : "ws-close");
            return -1;
        }
        if (c->state == SBB_DEAD)
            return -1;
        off += hl + (size_t)len;
        p = (const unsigned char *)c->raw.data;   /* a feed never touches raw */
    }
    sbb_buf_consume(&c->raw, off);
    return 0;
}

static void ws_input(struct sbb_conn *c)
{
    if (!c->web_up) {
        char *end = memmem(c->raw.data, c->raw.len, "\r\n\r\n", 4);
        if (!end)
            return;
        if (strncmp(c->raw.data, "HTTP/1.1 101", 12) != 0) {
            sbb_conn_fail(c, "ws-upgrade");
            return;
        }
        sbb_buf_consume(&c->raw, (size_t)(end + 4 - c->raw.data));
        c->web_up = 1;
        c->state = SBB_FEATURES;
        sbb_conn_header(c);
        if (c->state == SBB_DEAD)
            return;
    }
    ws_frames(c);
}

/* ---- BOSH ------------------------------------------------------------------ */

static void bosh_post(struct sbb_conn *c, const char *body, size_t len)
{
    char h[256];
    int n = snprintf(h, sizeof(h), "POST %s HTTP/1.1\r\nHost: %s\r\n"
                     "Content-Type: text/xml; charset=utf-8\r\nContent-Length: %zu\r\n\r\n",
                     sbb_opt.path ? sbb_opt.path : "/http-bind", sbb_opt.domain, len);
    sbb_conn_raw(c, h, (size_t)n);
    sbb_conn_raw(c, body, len);
    c->web_busy = 1;
}

/* The next request: session creation, restart, terminate, or q (maybe empty). */
static void bosh_send(struct sbb_conn *c)
{
    char *b = NULL;
    int n;
    const char *xmpp = "xmlns:xmpp='urn:xmpp:xbosh'";
    unsigned long long rid = c->rid++;
    if (!c->sid) {
        n = asprintf(&b, "<body content='text/xml; charset=utf-8' hold='1' rid='%llu' to='%s' "
                     "ver='1.6' wait='%d' xml:lang='en' xmpp:version='1.0' xmlns='" NS_HTTPBIND
                     "' %s/>", rid, sbb_opt.domain, BOSH_WAIT, xmpp);
    } else if (c->web_restart) {
        c->web_restart = 0;
        n = asprintf(&b, "<body rid='%llu' sid='%s' to='%s' xml:lang='en' xmpp:restart='true' "
                     "xmlns='" NS_HTTPBIND "' %s/>", rid, c->sid, sbb_opt.domain, xmpp);
    } else {
        n = asprintf(&b, "<body rid='%llu' sid='%s'%s xmlns='" NS_HTTPBIND "'>%.*s</body>", rid,
                     c->sid, c->state == SBB_CLOSING ? " type='terminate'" : "",
                     (int)c->q.len, c->q.data ? c->q.data : "");
        sbb_buf_consume(&c->q, c->q.len);
    }
    if (n < 0) {
        sbb_conn_fail(c, "nomem");
        return;
    }
    bosh_post(c, b, (size_t)n);
    free(b);
}

/* One whole response: its <body/>'s children go to the state machine. */
static void bosh_body(struct sbb_conn *c, const char *p, size_t len)
{
    const char *gt = memchr(p, '>', len);
    if (len < 6 || strncmp(p, "<body", 5) != 0 || !gt) {
        sbb_conn_fail(c, "bosh-body");
        return;
    }
    size_t tl = (size_t)(gt + 1 - p);
    if (memmem(p, tl, "type='terminate'", 16) || memmem(p, tl, "type=\"terminate\"", 16)) {
        sbb_conn_fail(c, c->state == SBB_CLOSING ? "closed" : "bosh-terminate");
        return;
    }
    if (!c->sid) {
        char sid[128];
        sbb_attr_get(p, len, "sid", sid, sizeof(sid));
        if (!sid[0] || !(c->sid = strdup(sid))) {
            sbb_conn_fail(c, "bosh-no-sid");
            return;
        }
    }
    c->web_busy = 0;
    if (gt[-1] != '/' && len >= 7) {
        const char *end = p + len - 7;        /* the last </body> */
        while (end > gt && memcmp(end, "</body>", 7) != 0)
            end--;
        if (end > gt + 1) {
            c->web_feeding = 1;
            sbb_conn_feed(c, gt + 1, (size_t)(end - (gt + 1)));
            c->web_feeding = 0;
        }
    }
    if (c->state != SBB_DEAD && !c->web_busy)
        bosh_send(c);
}

static void bosh_input(struct sbb_conn *c)
{
    while (c->state != SBB_DEAD) {
        char *hend = c->raw.len ? memmem(c->raw.data, c->raw.len, "\r\n\r\n", 4) : NULL;
        if (!hend)
            return;
        if (strncmp(c->raw.data, "HTTP/1.1 200", 12) != 0) {
            sbb_conn_fail(c, "bosh-http-status");
            return;
        }
        size_t hl = (size_t)(hend + 4 - c->raw.data), blen = 0;
        for (char *l = c->raw.data; l && l < hend; l = strstr(l, "\r\n")) {
            l += 2;
            if (strncasecmp(l, "Content-Length:", 15) == 0)
                blen = strtoul(l + 15, NULL, 10);
        }
        if (c->raw.len < hl + blen)
            return;
        /* the body is handled from a copy: its feed may write and read */
        char *b = malloc(blen + 1);
        if (!b) {
            sbb_conn_fail(c, "nomem");
            return;
        }
        memcpy(b, c->raw.data + hl, blen);
        b[blen] = 0;
        sbb_buf_consume(&c->raw, hl + blen);
        bosh_body(c, b, blen);
        free(b);
    }
}

/* ---- the transport interface (client.c) ------------------------------------ */

void sbb_web_connected(struct sbb_conn *c)
{
    if (sbb_opt.transport == SBB_TP_WS) {
        c->state = SBB_HTTP;
        ws_upgrade(c);
    } else {
        c->state = SBB_FEATURES;
        sbb_conn_header(c);
    }
}

void sbb_web_open(struct sbb_conn *c)
{
    if (sbb_opt.transport == SBB_TP_WS) {
        char o[256];
        int n = snprintf(o, sizeof(o), "<open xmlns='" NS_FRAMING "' to='%s' version='1.0'/>",
                         sbb_opt.domain);
        ws_frame(c, 0x1, o, (size_t)n);
        return;
    }
    if (c->sid)
        c->web_restart = 1;
    if (!c->web_busy && !c->web_feeding)
        bosh_send(c);
}

void sbb_web_write(struct sbb_conn *c, const char *data, size_t len)
{
    if (sbb_opt.transport == SBB_TP_WS) {
        ws_frame(c, 0x1, data, len);
        return;
    }
    sbb_buf_add(&c->q, data, len);
    if (!c->web_busy && !c->web_feeding)
        bosh_send(c);
}

/* The end of the stream; 1 when it needs no more from us (drop the wire). */
int sbb_web_close(struct sbb_conn *c)
{
    if (sbb_opt.transport == SBB_TP_WS) {
        static const char cl[] = "<close xmlns='" NS_FRAMING "'/>";
        ws_frame(c, 0x1, cl, sizeof(cl) - 1);
        return 0;
    }
    if (c->web_busy && !c->web_feeding)
        return 1;   /* the held request comes back only after `wait` s, and one
                     * connection carries one request: the server's inactivity
                     * timer ends the session */
    c->state = SBB_CLOSING;            /* type='terminate' goes with the next request */
    if (!c->web_busy && !c->web_feeding)
        bosh_send(c);
    return 0;
}

void sbb_web_input(struct sbb_conn *c, const char *data, size_t len)
{
    sbb_buf_add(&c->raw, data, len);
    if (sbb_opt.transport == SBB_TP_WS)
        ws_input(c);
    else
        bosh_input(c);
}
