/* web_parse.c — the parsing steps of sb-bosh that need no socket and no
 * loop, shared by the daemon (web_http.c, web_bosh.c, web_ws.c) and the
 * fuzz targets (tests/fuzz/): one HTTP request read with the maintained
 * http_parser into a struct web_req, the checks of a BOSH <body/>, the
 * checks of a WebSocket upgrade request, one WebSocket message as an XML
 * element, and the jabber:client namespace of a framed stanza. */
#include "web.h"

#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NS_BOSH    "http://jabber.org/protocol/httpbind"
#define WS_GUID    "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- one HTTP request ------------------------------------------------------------ */

static http_parser_settings reqp_settings;
static int reqp_ready;

/* Append to a fixed field; overflowing marks the request bad. */
static void reqp_append(struct web_reqp *p, char *dst, size_t cap, size_t *len,
                        const char *at, size_t n)
{
    if (*len + n >= cap) {
        p->bad = 1;
        return;
    }
    memcpy(dst + *len, at, n);
    *len += n;
    dst[*len] = '\0';
}

static int reqp_on_begin(http_parser *hp)
{
    struct web_reqp *p = hp->data;
    p->started = 1;
    return 0;
}

static int reqp_on_url(http_parser *hp, const char *at, size_t n)
{
    struct web_reqp *p = hp->data;
    size_t len = strlen(p->req.path);
    reqp_append(p, p->req.path, sizeof p->req.path, &len, at, n);
    return 0;
}

static int reqp_on_hfield(http_parser *hp, const char *at, size_t n)
{
    struct web_reqp *p = hp->data;
    if (p->hdst) {                  /* a new header begins */
        p->hdst = NULL;
        p->hname_len = 0;
    }
    if (p->hname_len + n < sizeof p->hname) {
        memcpy(p->hname + p->hname_len, at, n);
        p->hname_len += n;
    } else {
        p->hname_len = sizeof p->hname;   /* too long: not one we want */
    }
    return 0;
}

static char *reqp_header_slot(struct web_reqp *p, size_t *cap)
{
    static const struct { const char *name; size_t off, cap; } want[] = {
        {"origin", offsetof(struct web_req, origin), sizeof(((struct web_req *)0)->origin)},
        {"content-type", offsetof(struct web_req, ctype), sizeof(((struct web_req *)0)->ctype)},
        {"authorization", offsetof(struct web_req, auth), sizeof(((struct web_req *)0)->auth)},
        {"upgrade", offsetof(struct web_req, upgrade), sizeof(((struct web_req *)0)->upgrade)},
        {"sec-websocket-key", offsetof(struct web_req, ws_key), sizeof(((struct web_req *)0)->ws_key)},
        {"sec-websocket-version", offsetof(struct web_req, ws_version),
         sizeof(((struct web_req *)0)->ws_version)},
        {"sec-websocket-protocol", offsetof(struct web_req, ws_proto),
         sizeof(((struct web_req *)0)->ws_proto)},
        {"range", offsetof(struct web_req, range), sizeof(((struct web_req *)0)->range)},
    };
    if (p->hname_len >= sizeof p->hname)
        return NULL;
    for (size_t i = 0; i < SB_ARRAY_LEN(want); i++) {
        if (strlen(want[i].name) == p->hname_len &&
            strncasecmp(want[i].name, p->hname, p->hname_len) == 0) {
            *cap = want[i].cap;
            return (char *)&p->req + want[i].off;
        }
    }
    return NULL;
}

static char reqp_ignored[1];       /* hdst of a header we do not keep */

static int reqp_on_hvalue(http_parser *hp, const char *at, size_t n)
{
    struct web_reqp *p = hp->data;
    if (!p->hdst) {
        size_t cap = 0;
        char *slot = reqp_header_slot(p, &cap);
        p->hdst = slot ? slot : reqp_ignored;
        p->hcap = slot ? cap : 0;
        p->hlen = slot ? strlen(slot) : 0;
        if (p->hlen)                      /* a repeated header: join with a comma */
            reqp_append(p, p->hdst, p->hcap, &p->hlen, ",", 1);
    }
    if (p->hcap)
        reqp_append(p, p->hdst, p->hcap, &p->hlen, at, n);
    return 0;
}

/* The request line and headers are in: split the query off, then the
 * daemon's hook may judge the request before its body. */
static int reqp_on_headers(http_parser *hp)
{
    struct web_reqp *p = hp->data;
    struct web_req *r = &p->req;
    char *q = strchr(r->path, '?');
    if (q) {
        snprintf(r->query, sizeof r->query, "%s", q + 1);
        *q = '\0';
    }
    r->method = hp->method;
    r->clen = (hp->flags & F_CHUNKED) || hp->content_length == ULLONG_MAX
                  ? -1 : (long long)hp->content_length;
    if (p->on_headers && !p->bad) {
        p->on_headers(p);
        if (p->fail)
            http_parser_pause(hp, 1);
    }
    return 0;
}

static int reqp_on_body(http_parser *hp, const char *at, size_t n)
{
    struct web_reqp *p = hp->data;
    if (p->streamed)
        return p->on_body(p, at, n) ? 1 : 0;
    if (p->req.body.len + n > p->max_body) {
        p->bad = 2;                       /* too large */
        return 1;
    }
    if (sb_buf_add(&p->req.body, at, n) != SB_OK)
        return 1;
    return 0;
}

static int reqp_on_complete(http_parser *hp)
{
    struct web_reqp *p = hp->data;
    p->req_done = 1;
    http_parser_pause(hp, 1);             /* one request at a time */
    return 0;
}

void web_reqp_setup(void)
{
    if (reqp_ready)
        return;
    http_parser_settings_init(&reqp_settings);
    reqp_settings.on_message_begin = reqp_on_begin;
    reqp_settings.on_url = reqp_on_url;
    reqp_settings.on_header_field = reqp_on_hfield;
    reqp_settings.on_header_value = reqp_on_hvalue;
    reqp_settings.on_headers_complete = reqp_on_headers;
    reqp_settings.on_body = reqp_on_body;
    reqp_settings.on_message_complete = reqp_on_complete;
    http_parser_set_max_header_size(16384);
    reqp_ready = 1;
}

void web_reqp_init(struct web_reqp *p, size_t max_body)
{
    web_reqp_setup();
    memset(p, 0, sizeof *p);
    http_parser_init(&p->parser, HTTP_REQUEST);
    p->parser.data = p;
    p->max_body = max_body;
    p->req.clen = -1;
}

void web_reqp_free(struct web_reqp *p)
{
    sb_buf_free(&p->req.body);
}

void web_reqp_next(struct web_reqp *p)
{
    struct sb_buf body = p->req.body;
    sb_buf_reset(&body);
    memset(&p->req, 0, sizeof p->req);
    p->req.body = body;
    p->hname_len = 0;
    p->hdst = NULL;
    p->req_done = p->started = p->bad = p->streamed = 0;
    p->fail = 0;
    p->fail_why = NULL;
    p->req.clen = -1;
    http_parser_pause(&p->parser, 0);
}

enum web_reqp_rc web_reqp_feed(struct web_reqp *p, const char *data, size_t len, size_t *used)
{
    size_t n = http_parser_execute(&p->parser, &reqp_settings, data, len);
    *used = n;
    if (p->fail)
        return WEB_REQP_FAILED;
    if (p->req_done) {
        if (p->bad)
            return WEB_REQP_HDR_TOO_BIG;
        struct web_req *r = &p->req;
        r->keep_alive = http_should_keep_alive(&p->parser) != 0;
        r->upgrade_req = p->parser.upgrade != 0;
        return WEB_REQP_DONE;
    }
    if (p->bad == 2)
        return WEB_REQP_TOO_BIG;
    if (HTTP_PARSER_ERRNO(&p->parser) != HPE_OK)
        return WEB_REQP_BAD;
    return WEB_REQP_MORE;
}

const char *web_reqp_error(const struct web_reqp *p)
{
    return http_errno_name(HTTP_PARSER_ERRNO(&p->parser));
}

/* ---- BOSH ----------------------------------------------------------------------------- */

struct xml_doc *web_bosh_parse(const char *data, size_t len, const struct xml_limits *lim)
{
    enum xml_err err;
    struct xml_doc *d = len ? xml_doc_parse(data, len, lim, &err) : NULL;
    const char *ns = d ? xml_attr(d->root, "xmlns") : NULL;
    if (!d || strcmp(d->root->name, "body") != 0 || !ns || strcmp(ns, NS_BOSH) != 0) {
        xml_doc_free(d);
        return NULL;
    }
    return d;
}

int web_bosh_rid(const char *s, uint64_t *out)
{
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 16)
        return -1;
    *out = strtoull(s, NULL, 10);
    return *out > 0 && *out <= WEB_BOSH_RID_MAX ? 0 : -1;
}

int web_bosh_int_attr(const struct xml_node *n, const char *name, int def)
{
    const char *v = xml_attr(n, name);
    if (!v || !*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 6)
        return def;
    return atoi(v);
}

/* ---- WebSocket ---------------------------------------------------------------------------- */

static int ws_has_token(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    while (*list) {
        list += strspn(list, " ,\t");
        size_t k = strcspn(list, " ,\t");
        if (k == n && strncasecmp(list, tok, n) == 0)
            return 1;
        list += k;
    }
    return 0;
}

const char *web_ws_check_upgrade(const struct web_req *r)
{
    if (strcasecmp(r->upgrade, "websocket") != 0 || strcmp(r->ws_version, "13") != 0 ||
        strlen(r->ws_key) < 16)
        return "a WebSocket upgrade (version 13) is required\n";
    if (!ws_has_token(r->ws_proto, "xmpp"))
        return "subprotocol xmpp (RFC 7395) is required\n";
    return NULL;
}

void web_ws_accept_key(const char *key, char out[29])
{
    struct sha1_ctx s;
    uint8_t dig[SHA1_DIGEST_SIZE];
    sha1_init(&s);
    sha1_update(&s, strlen(key), (const uint8_t *)key);
    sha1_update(&s, sizeof WS_GUID - 1, (const uint8_t *)WS_GUID);
    sha1_digest(&s, sizeof dig, dig);
    base64_encode_raw((char *)out, sizeof dig, dig);
    out[BASE64_ENCODE_RAW_LENGTH(sizeof dig)] = '\0';
}

int web_ws_ctx_new(wslay_event_context_ptr *ctx, const struct wslay_event_callbacks *cbs,
                   void *ud, size_t max_msg)
{
    if (wslay_event_context_server_init(ctx, cbs, ud) != 0)
        return -1;
    wslay_event_config_set_max_recv_msg_length(*ctx, max_msg);
    return 0;
}

struct xml_doc *web_ws_parse(const char *msg, size_t len, const struct xml_limits *lim,
                             int *empty, enum xml_err *err)
{
    size_t sp = 0;
    *err = XML_ERR_NONE;
    while (sp < len && (msg[sp] == ' ' || msg[sp] == '\t' || msg[sp] == '\r' || msg[sp] == '\n'))
        sp++;
    *empty = sp == len;                      /* whitespace: nothing to do */
    return *empty ? NULL : xml_doc_parse(msg, len, lim, err);
}

/* ---- elements for framed transports ------------------------------------------ */

sb_rc web_add_element(struct sb_buf *b, const char *data, size_t len)
{
    static const char *const names[] = {"message", "presence", "iq"};
    if (len > 1 && data[0] == '<') {
        for (size_t i = 0; i < SB_ARRAY_LEN(names); i++) {
            size_t n = strlen(names[i]);
            char after = len > n + 1 ? data[n + 1] : '\0';
            if (len > n + 1 && strncmp(data + 1, names[i], n) == 0 &&
                (after == ' ' || after == '>' || after == '/' || after == '\t' ||
                 after == '\n' || after == '\r')) {
                /* Any xmlns at all, even one the scanner cannot decode
                 * (&#10;) or that is long: a second one would make the
                 * element not well-formed (found by tests/fuzz). */
                if (c2s_scan_has_attr(data, len, "xmlns"))
                    break;               /* the stanza names its namespace */
                if (sb_buf_add(b, data, n + 1) != SB_OK ||
                    sb_buf_adds(b, " xmlns='jabber:client'") != SB_OK)
                    return SB_ERROR;
                return sb_buf_add(b, data + n + 1, len - n - 1);
            }
        }
    }
    return sb_buf_add(b, data, len);
}
