/* fuzz_http.c — sb-bosh's HTTP request reader (c2s/web_parse.c over
 * http_parser, as web_http.c drives it): the bytes of one keep-alive
 * connection, fed in pieces whose size comes from the first byte, several
 * pipelined requests in a row (each answered before the next is read, as
 * the daemon does). Each complete request goes where web_http.c would send
 * it: the BOSH body checks, the WebSocket upgrade checks (and the accept
 * key). Checks: every kept field is NUL-terminated within its slot, `used`
 * never exceeds what was fed, and a body never exceeds max_body. */
#include "fuzz.h"
#include "c2s/web.h"

#define MAX_BODY 4096

static void check_field(const char *f, size_t cap)
{
    FUZZ_CHECK(memchr(f, '\0', cap) != NULL);
}

static void request(struct web_reqp *p)
{
    struct web_req *r = &p->req;
    check_field(r->path, sizeof r->path);
    check_field(r->query, sizeof r->query);
    check_field(r->origin, sizeof r->origin);
    check_field(r->ctype, sizeof r->ctype);
    check_field(r->auth, sizeof r->auth);
    check_field(r->upgrade, sizeof r->upgrade);
    check_field(r->ws_key, sizeof r->ws_key);
    check_field(r->ws_version, sizeof r->ws_version);
    check_field(r->ws_proto, sizeof r->ws_proto);
    FUZZ_CHECK(r->body.len <= MAX_BODY);
    FUZZ_CHECK(!strchr(r->path, '?'));
    if (r->method == HTTP_POST) {
        struct xml_limits lim = {MAX_BODY, 33};
        struct xml_doc *d = web_bosh_parse(r->body.data, r->body.len, &lim);
        if (d) {
            FUZZ_CHECK(!strcmp(d->root->name, "body"));
            uint64_t rid;
            if (web_bosh_rid(xml_attr(d->root, "rid"), &rid) == 0)
                FUZZ_CHECK(rid > 0 && rid <= WEB_BOSH_RID_MAX);
            FUZZ_CHECK(web_bosh_int_attr(d->root, "wait", -1) >= -1);
            xml_doc_free(d);
        }
    }
    if (r->method == HTTP_GET && r->upgrade_req && !web_ws_check_upgrade(r)) {
        char accept[29];
        web_ws_accept_key(r->ws_key, accept);
        FUZZ_CHECK(strlen(accept) == 28);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet();
        init = 1;
    }
    if (!size)
        return 0;
    size_t chunk = (size_t)data[0] * 4 + 1;
    data++, size--;
    struct web_reqp p;
    web_reqp_init(&p, MAX_BODY);
    struct sb_buf pending = SB_BUF_INIT;     /* bytes read while a request was answered */
    size_t off = 0;
    int requests = 0, done = 0;
    while (!done && (off < size || pending.len) && requests < 64) {
        const char *in;
        size_t n;
        struct sb_buf cur = SB_BUF_INIT;
        if (pending.len) {
            cur = pending;
            pending = (struct sb_buf)SB_BUF_INIT;
            in = cur.data;
            n = cur.len;
        } else {
            n = size - off < chunk ? size - off : chunk;
            in = (const char *)data + off;
            off += n;
        }
        size_t used;
        enum web_reqp_rc rc = web_reqp_feed(&p, in, n, &used);
        FUZZ_CHECK(used <= n);
        switch (rc) {
        case WEB_REQP_DONE:
            if (used < n)
                FUZZ_CHECK(sb_buf_add(&pending, in + used, n - used) == SB_OK);
            request(&p);
            requests++;
            if (!p.req.keep_alive || p.req.upgrade_req)
                done = 1;             /* the daemon closes or hands over to WebSocket */
            web_reqp_next(&p);
            break;
        case WEB_REQP_MORE:
            FUZZ_CHECK(used == n);
            break;
        default:
            FUZZ_CHECK(*web_reqp_error(&p));
            done = 1;                 /* 400/413/431 and close */
        }
        sb_buf_free(&cur);
    }
    sb_buf_free(&pending);
    web_reqp_free(&p);
    return 0;
}
