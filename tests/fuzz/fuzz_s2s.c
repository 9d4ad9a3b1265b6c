/* fuzz_s2s.c — what a peer server sends before it is trusted: the stream
 * header and the dialback elements (XEP-0220), through the s2s parser
 * configuration (common/xml.c with the default limits s2s uses) and the
 * pure checks of s2s/pure.c (s2s_stream_check_header, s2s_elem_ns,
 * s2s_local_name, s2s_db_key, s2s_db_key_equal), as s2s/stream.c and
 * s2s/dialback.c apply them. Checks: the key we would issue for the
 * element's domains and stream id verifies, the key the peer sent
 * verifies exactly when it is that key, namespace and prefix rules agree. */
#include "fuzz.h"
#include "xml.h"
#include "jid.h"
#include "s2s/s2s.h"

static const struct xml_limits lim = XML_LIMITS_DEFAULT;
static struct xml_stream *xs;
static struct sb_buf text;
static char stream_id[128];

static void on_open(void *ud, struct xml_node *hdr)
{
    const char *cond = s2s_stream_check_header(hdr);
    if (cond) {
        FUZZ_CHECK(*cond);
        xml_stream_stop(xs);
        return;
    }
    FUZZ_CHECK(!strcmp(hdr->name, "stream:stream"));
    const char *id = xml_attr(hdr, "id");
    snprintf(stream_id, sizeof stream_id, "%s", id ? id : "");
}

static void on_stanza(void *ud, struct xml_node *n)
{
    const char *local = s2s_local_name(n->name);
    FUZZ_CHECK(local && strlen(local) <= strlen(n->name));
    int db = s2s_elem_ns(n, S2S_NS_DB);
    if (db && s2s_elem_ns(n, S2S_NS_STREAM))
        FUZZ_CHECK(0);                    /* one element, one namespace */
    if (!db || (strcmp(local, "result") && strcmp(local, "verify")))
        return;
    char from[JID_PART_MAX + 1], to[JID_PART_MAX + 1];
    const char *f = xml_attr(n, "from"), *t = xml_attr(n, "to");
    if (!f || !t || strchr(f, '@') || strchr(f, '/') || jid_nameprep(f, from) != SB_OK ||
        jid_nameprep(t, to) != SB_OK)
        return;                           /* invalid-from / host-unknown */
    const char *id = !strcmp(local, "verify") ? xml_attr(n, "id") : stream_id;
    if (!id)
        id = "";
    xml_text(n, &text);
    const char *key = text.data ? text.data : "";
    char expect[65];
    s2s_db_key("fuzz-secret", from, to, id, expect);
    FUZZ_CHECK(strlen(expect) == 64);
    FUZZ_CHECK(s2s_db_key_equal(expect, expect));
    FUZZ_CHECK(s2s_db_key_equal(expect, key) == (strcmp(expect, key) == 0));
}

static void on_close(void *ud)
{
}

static const struct xml_stream_cb cbs = {on_open, on_stanza, on_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet();
        init = 1;
    }
    if (!size)
        return 0;
    size_t chunk = (size_t)data[0] * 3 + 1;
    data++, size--;
    *stream_id = '\0';
    xs = xml_stream_new(&lim, &cbs, NULL);
    FUZZ_CHECK(xs);
    for (size_t off = 0; off < size;) {
        size_t n = size - off < chunk ? size - off : chunk;
        sb_rc rc = xml_stream_feed(xs, (const char *)data + off, n);
        off += n;
        if (rc != SB_OK)
            break;
    }
    xml_stream_free(xs);
    xs = NULL;
    return 0;
}
