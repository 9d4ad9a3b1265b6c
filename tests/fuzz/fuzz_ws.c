/* fuzz_ws.c — XMPP over WebSocket (RFC 7395) as sb-bosh reads it: a wslay
 * server context set up by web_ws_ctx_new (the daemon's own message cap),
 * fed the client's bytes in pieces through the receive callback (masking,
 * fragmentation, control frames, lengths are wslay's, driven for real),
 * each text message parsed by web_ws_parse with the c2s limits and, like
 * web_ws.c, an <open/> checked, elements framed. Output frames (pongs,
 * close) go nowhere. Checks: a message is never over the cap, whitespace
 * is only whitespace, a parse failure names an error. */
#include "fuzz.h"
#include "c2s/web.h"

#define WS_MAX (262144 + 1024)

static const struct xml_limits lim = XML_LIMITS_DEFAULT;
static struct fuzz_in in;
static size_t chunk;
static struct sb_buf ser, framed;

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud)
{
    if (!in.n) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < chunk ? len : chunk;
    if (n > in.n)
        n = in.n;
    memcpy(buf, in.p, n);
    in.p += n;
    in.n -= n;
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                       int flags, void *ud)
{
    return (ssize_t)len;
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                   void *ud)
{
    if (a->opcode != WSLAY_TEXT_FRAME)
        return;
    FUZZ_CHECK(a->msg_length <= WS_MAX);
    int empty;
    enum xml_err err;
    struct xml_doc *d = web_ws_parse((const char *)a->msg, a->msg_length, &lim, &empty, &err);
    if (empty) {
        FUZZ_CHECK(!d);
        for (size_t i = 0; i < a->msg_length; i++)
            FUZZ_CHECK(strchr(" \t\r\n", a->msg[i]) && a->msg[i]);
        return;
    }
    if (!d) {
        FUZZ_CHECK(*xml_err_stream_cond(err));
        return;
    }
    if (!strcmp(d->root->name, "open")) {
        (void)xml_stream_version_ok(xml_attr(d->root, "version"));
    } else {
        sb_buf_reset(&ser);
        FUZZ_CHECK(xml_serialize(d->root, &ser) == SB_OK);
        sb_buf_reset(&framed);
        FUZZ_CHECK(web_add_element(&framed, ser.data, ser.len) == SB_OK);
    }
    xml_doc_free(d);
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
    chunk = (size_t)data[0] * 2 + 1;
    in = (struct fuzz_in){data + 1, size - 1};
    static const struct wslay_event_callbacks cbs = {recv_cb, send_cb, NULL, NULL, NULL, NULL,
                                                     msg_cb};
    wslay_event_context_ptr ctx;
    FUZZ_CHECK(web_ws_ctx_new(&ctx, &cbs, NULL, WS_MAX) == 0);
    for (int round = 0; round < 10000 && in.n; round++) {
        if (wslay_event_recv(ctx) != 0)
            break;
        if (wslay_event_want_write(ctx) && wslay_event_send(ctx) != 0)
            break;
        if (!wslay_event_want_read(ctx))
            break;
    }
    wslay_event_context_free(ctx);
    return 0;
}
