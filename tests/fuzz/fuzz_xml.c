/* fuzz_xml.c — the client XML stream (common/xml.c) configured as c2s
 * configures it (c2s/stream.c: the default max_stanza/max_depth of
 * c2s/srv.c, names kept as written): the bytes of one TCP stream, fed in
 * pieces whose sizes come from the input, with the c2s header checks
 * (c2s_stream_check_names, xml_stream_version_ok), a stream restart after
 * <starttls/> or <auth/> like STARTTLS and SASL success do, and the parser
 * freed between stanzas and primed again as an idle bound session is.
 * Checks on every stanza: serialising it and parsing that gives the same
 * serialisation (the serialiser is lossless and its output well-formed),
 * and the framed form (web_add_element) parses too. */
#include "fuzz.h"
#include "xml.h"
#include "c2s/web.h"

static const struct xml_limits lim = XML_LIMITS_DEFAULT;
static struct sb_buf ser, ser2, framed;
static int restart_wanted, stop_wanted, opened, waking;
static int parsed;                        /* a header or stanza since the parser was made */
static struct xml_stream *cur;

static void on_open(void *ud, struct xml_node *hdr)
{
    FUZZ_CHECK(hdr->name && !hdr->children);
    opened = 1;
    if (waking)
        return;                           /* c2s ignores its own priming header */
    parsed = 1;
    const char *cond = c2s_stream_check_names(hdr);
    if (!cond && !xml_stream_version_ok(xml_attr(hdr, "version")))
        cond = "unsupported-version";
    if (cond) {
        FUZZ_CHECK(*xml_err_stream_cond(XML_ERR_SYNTAX));
        stop_wanted = 1;                  /* c2s sends a stream error and closes */
        xml_stream_stop(cur);
    }
    sb_buf_reset(&ser);
    FUZZ_CHECK(xml_serialize_open(hdr, &ser) == SB_OK);
}

static void on_stanza(void *ud, struct xml_node *n)
{
    FUZZ_CHECK(n->name);
    parsed = 1;
    sb_buf_reset(&ser);
    FUZZ_CHECK(xml_serialize(n, &ser) == SB_OK);
    enum xml_err err = XML_ERR_NONE;
    struct xml_limits big = {ser.len * 2 + 64, lim.max_depth + 1};
    struct xml_doc *d = xml_doc_parse(ser.data, ser.len, &big, &err);
    FUZZ_CHECK(d);
    sb_buf_reset(&ser2);
    FUZZ_CHECK(xml_serialize(d->root, &ser2) == SB_OK);
    FUZZ_CHECK(ser.len == ser2.len && memcmp(ser.data, ser2.data, ser.len) == 0);
    xml_doc_free(d);
    sb_buf_reset(&framed);
    FUZZ_CHECK(web_add_element(&framed, ser.data, ser.len) == SB_OK);
    d = xml_doc_parse(framed.data, framed.len, &big, &err);
    FUZZ_CHECK(d);
    xml_doc_free(d);
    if (!strcmp(n->name, "starttls") || !strcmp(n->name, "auth")) {
        restart_wanted = 1;
        xml_stream_restart(cur);
    }
}

static void on_close(void *ud)
{
    stop_wanted = 1;
}

static const struct xml_stream_cb cbs = {on_open, on_stanza, on_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet();
        init = 1;
    }
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] * 3 + 1;     /* read sizes: 1 .. 766 bytes */
    data++, size--;
    cur = xml_stream_new(&lim, &cbs, NULL);
    FUZZ_CHECK(cur);
    opened = stop_wanted = parsed = 0;
    for (size_t off = 0; off < size && !stop_wanted;) {
        size_t n = size - off < chunk ? size - off : chunk;
        restart_wanted = 0;
        sb_rc rc = xml_stream_feed(cur, (const char *)data + off, n);
        off += n;
        if (rc == SB_ERROR) {
            enum xml_err e = xml_stream_error(cur);
            FUZZ_CHECK(e != XML_ERR_NONE);
            FUZZ_CHECK(xml_err_name(e) && xml_err_stream_cond(e));
            break;
        }
        if (rc == SB_DONE)
            FUZZ_CHECK(restart_wanted || stop_wanted);
        /* c2s frees the parser of an idle bound session and primes a new one.
         * Not again before the new one has parsed something: free, make and
         * prime on every keepalive byte (each a state seen already) was two
         * thirds of this target's time. */
        if (rc == SB_OK && opened && parsed && xml_stream_idle(cur)) {
            static const char hdr[] = "<stream:stream xmlns='jabber:client' "
                                      "xmlns:stream='http://etherx.jabber.org/streams'>";
            xml_stream_free(cur);
            cur = xml_stream_new(&lim, &cbs, NULL);
            FUZZ_CHECK(cur);
            waking = 1;
            parsed = 0;
            FUZZ_CHECK(xml_stream_feed(cur, hdr, sizeof hdr - 1) == SB_OK);
            waking = 0;
        }
    }
    xml_stream_free(cur);
    cur = NULL;
    return 0;
}
