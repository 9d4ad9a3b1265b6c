/* fuzz_bosh.c — BOSH request bodies (XEP-0124/0206) as web_bosh.c reads
 * them (c2s/web_parse.c): the <body/> check with the limits sb-bosh uses,
 * rid and the integer attributes, and each payload element made framed
 * (web_add_element). Checks: an accepted body is a body, its rid is in
 * range, every payload element serialised and framed is well-formed. */
#include "fuzz.h"
#include "c2s/web.h"

static struct sb_buf ser, framed;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet();
        init = 1;
    }
    /* web_main.c: max_body = max_stanza + 8192; depth one more than c2s. */
    struct xml_limits lim = {262144 + 8192, 33};
    struct xml_doc *d = web_bosh_parse((const char *)data, size, &lim);
    if (!d)
        return 0;
    const struct xml_node *body = d->root;
    FUZZ_CHECK(!strcmp(body->name, "body"));
    uint64_t rid;
    if (web_bosh_rid(xml_attr(body, "rid"), &rid) == 0)
        FUZZ_CHECK(rid > 0 && rid <= WEB_BOSH_RID_MAX);
    static const char *const ints[] = {"wait", "hold", "pause", "ack", "requests"};
    for (size_t i = 0; i < SB_ARRAY_LEN(ints); i++) {
        int v = web_bosh_int_attr(body, ints[i], -1);
        FUZZ_CHECK(v >= -1 && v <= 999999);
    }
    for (const struct xml_node *n = xml_first_elem(body); n; n = xml_next_elem(n)) {
        sb_buf_reset(&ser);
        FUZZ_CHECK(xml_serialize(n, &ser) == SB_OK);
        sb_buf_reset(&framed);
        FUZZ_CHECK(web_add_element(&framed, ser.data, ser.len) == SB_OK);
        enum xml_err err;
        struct xml_limits big = {framed.len * 2 + 64, 64};
        struct xml_doc *e = xml_doc_parse(framed.data, framed.len, &big, &err);
        FUZZ_CHECK(e);
        FUZZ_CHECK(!strcmp(e->root->name, n->name));
        if (!strcmp(n->name, "message") || !strcmp(n->name, "presence") ||
            !strcmp(n->name, "iq"))
            FUZZ_CHECK(xml_attr(e->root, "xmlns"));
        xml_doc_free(e);
    }
    xml_doc_free(d);
    return 0;
}
