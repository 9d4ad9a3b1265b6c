/* test_xml.c — stream parser events, limits and restricted XML, restarts
 * from callbacks, documents, tree helpers and the serialiser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xml.h"

#define HDR "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
            "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"

struct rec {
    struct sb_buf log;          /* "open(to)|<stanza/>|close|" */
    struct xml_stream *s;
    int restart_on, stop_on, free_on;   /* act at the n-th stanza (1-based) */
    int nstanza;
};

static void on_open(void *ud, struct xml_node *hdr)
{
    struct rec *r = ud;
    sb_buf_printf(&r->log, "open(%s,%s)|", hdr->name, xml_attr(hdr, "to") ? xml_attr(hdr, "to") : "-");
    assert_null(hdr->children);
}

static void on_stanza(void *ud, struct xml_node *st)
{
    struct rec *r = ud;
    r->nstanza++;
    xml_serialize(st, &r->log);
    sb_buf_adds(&r->log, "|");
    if (r->nstanza == r->restart_on)
        xml_stream_restart(r->s);
    if (r->nstanza == r->stop_on)
        xml_stream_stop(r->s);
    if (r->nstanza == r->free_on) {
        xml_stream_free(r->s);
        r->s = NULL;
    }
}

static void on_close(void *ud)
{
    struct rec *r = ud;
    sb_buf_adds(&r->log, "close|");
}

static const struct xml_stream_cb cbs = {on_open, on_stanza, on_close};

static struct rec *rec_new(size_t max_stanza, int max_depth)
{
    struct rec *r = calloc(1, sizeof *r);
    struct xml_limits lim = {max_stanza, max_depth};
    r->s = xml_stream_new(&lim, &cbs, r);
    assert_non_null(r->s);
    return r;
}

static void rec_free(struct rec *r)
{
    xml_stream_free(r->s);
    sb_buf_free(&r->log);
    free(r);
}

static sb_rc feed(struct rec *r, const char *s)
{
    return xml_stream_feed(r->s, s, strlen(s));
}

static void test_stream_yields_header_stanzas_and_close(void **st)
{
    struct rec *r = rec_new(0, 0);
    assert_int_equal(feed(r, HDR "<message to='b@x' type='chat'><body>hi &amp; bye</body></message>"
                             "<presence/></stream:stream>"), SB_OK);
    assert_string_equal(r->log.data, "open(stream:stream,localhost)|"
                        "<message to='b@x' type='chat'><body>hi &amp; bye</body></message>|"
                        "<presence/>|close|");
    assert_int_equal(feed(r, "<more/>"), SB_DONE);
    rec_free(r);
}

static void test_stream_split_byte_by_byte_gives_same_events(void **st)
{
    const char *in = HDR " <iq type='get' id='a1'><query xmlns='jabber:iq:roster'/></iq>\n"
                     "<message><body>h\xc3\xa9llo &lt;x&gt;</body></message></stream:stream>";
    struct rec *whole = rec_new(0, 0), *bytes = rec_new(0, 0);
    assert_int_equal(feed(whole, in), SB_OK);
    for (size_t i = 0; in[i]; i++)
        assert_int_equal(xml_stream_feed(bytes->s, in + i, 1), SB_OK);
    assert_string_equal(whole->log.data, bytes->log.data);
    assert_non_null(strstr(bytes->log.data, "<body>h\xc3\xa9llo &lt;x&gt;</body>"));
    rec_free(whole);
    rec_free(bytes);
}

static void test_stream_ignores_whitespace_keepalives(void **st)
{
    struct rec *r = rec_new(64, 0);
    assert_int_equal(feed(r, HDR), SB_OK);
    /* far more keepalive bytes than max_stanza in total */
    for (int i = 0; i < 100; i++)
        assert_int_equal(feed(r, " \n\t "), SB_OK);
    assert_int_equal(feed(r, "<presence/>"), SB_OK);
    assert_string_equal(r->log.data, "open(stream:stream,localhost)|<presence/>|");
    rec_free(r);
}

static void test_parser_accepts_many_small_stanzas_beyond_limit_in_total(void **st)
{
    struct rec *r = rec_new(100, 0);
    struct sb_buf in = SB_BUF_INIT;
    sb_buf_adds(&in, HDR);
    for (int i = 0; i < 200; i++)
        sb_buf_printf(&in, "<message id='m%d'><body>x</body></message>", i);
    assert_int_equal(xml_stream_feed(r->s, in.data, in.len), SB_OK);
    assert_int_equal(r->nstanza, 200);
    sb_buf_free(&in);
    rec_free(r);
}

static void test_parser_accepts_stanza_exactly_at_limit(void **st)
{
    const char *stanza = "<message><body>0123456789</body></message>";
    struct rec *r = rec_new(strlen(stanza), 0);
    assert_int_equal(feed(r, HDR), SB_OK);
    assert_int_equal(feed(r, stanza), SB_OK);
    assert_int_equal(feed(r, stanza), SB_OK);
    assert_int_equal(r->nstanza, 2);
    rec_free(r);
}

static void test_parser_rejects_stanza_over_limit_in_many_feeds(void **st)
{
    struct rec *r = rec_new(1000, 0);
    assert_int_equal(feed(r, HDR "<message><body>"), SB_OK);
    sb_rc rc = SB_OK;
    int i;
    for (i = 0; i < 10000 && rc == SB_OK; i++)
        rc = feed(r, "x");
    assert_int_equal(rc, SB_ERROR);
    assert_true(i < 1000);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_TOO_BIG);
    assert_int_equal(feed(r, "</body></message>"), SB_ERROR);
    assert_int_equal(r->nstanza, 0);
    rec_free(r);
}

static void test_parser_rejects_one_huge_text_node_in_one_feed(void **st)
{
    struct rec *r = rec_new(4096, 0);
    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    big[n] = '\0';
    assert_int_equal(feed(r, HDR "<message><body>"), SB_OK);
    assert_int_equal(feed(r, big), SB_ERROR);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_TOO_BIG);
    free(big);
    rec_free(r);
}

static void test_parser_rejects_huge_start_tag_in_small_feeds(void **st)
{
    struct rec *r = rec_new(2048, 0);
    assert_int_equal(feed(r, HDR "<message to='"), SB_OK);
    sb_rc rc = SB_OK;
    for (int i = 0; i < 5000 && rc == SB_OK; i++)
        rc = feed(r, "y");
    assert_int_equal(rc, SB_ERROR);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_TOO_BIG);
    rec_free(r);
}

/* Expat 2.5 rescans an incomplete token from its start on every call: a
 * start tag trickled a byte at a time was quadratic (200 KB: ~20 s of CPU,
 * found by tests/fuzz). Held back until it can end, it costs milliseconds. */
static void test_stream_trickled_huge_start_tag_costs_linear_time(void **st)
{
    struct rec *r = rec_new(0, 0);
    assert_int_equal(feed(r, HDR "<message to='"), SB_OK);
    clock_t t0 = clock();
    for (int i = 0; i < 200000; i++)
        assert_int_equal(xml_stream_feed(r->s, i % 2 ? ">" : "y", 1), SB_OK);
    assert_int_equal(r->nstanza, 0);
    assert_int_equal(feed(r, "'/>"), SB_OK);
    double cpu = (double)(clock() - t0) / CLOCKS_PER_SEC;
    assert_int_equal(r->nstanza, 1);
    assert_true(cpu < 1.0);
    rec_free(r);
}

/* Held bytes never hold back an event: fed a byte at a time, each stanza
 * arrives with its last byte, whatever quotes, references, CDATA or '>'
 * inside attribute values it has. */
static void test_stream_stanza_arrives_with_its_last_byte(void **st)
{
    static const char *const stanzas[] = {
        "<message to='a>b' id=\"x'>y\"><body>a &amp; b &#x3e; c</body></message>",
        "<iq><q a='&lt;&quot;'><![CDATA[<'x& ]]]></q></iq>",
        "<presence/>",
        "</stream:stream>",
    };
    struct rec *r = rec_new(0, 0);
    const char *hdr = HDR;
    for (size_t i = 0; hdr[i]; i++) {
        assert_int_equal(xml_stream_feed(r->s, hdr + i, 1), SB_OK);
        assert_int_equal(strlen(r->log.data ? r->log.data : "") > 0, hdr[i + 1] == '\0');
    }
    for (size_t k = 0; k < sizeof stanzas / sizeof *stanzas; k++) {
        const char *in = stanzas[k];
        for (size_t i = 0; in[i]; i++) {
            assert_int_equal(xml_stream_feed(r->s, in + i, 1), SB_OK);
            int last = in[i + 1] == '\0' && k < 3;
            assert_int_equal(xml_stream_idle(r->s), last);   /* nothing held */
            assert_int_equal(r->nstanza, (int)k + last);
        }
        assert_int_equal(xml_stream_feed(r->s, " ", 1), k < 3 ? SB_OK : SB_DONE);
        if (k < 3)
            assert_int_equal(xml_stream_idle(r->s), 1);
    }
    assert_string_equal(r->log.data, "open(stream:stream,localhost)|"
                        "<message to='a&gt;b' id='x&apos;&gt;y'><body>a &amp; b &gt; c</body></message>|"
                        "<iq><q a='&lt;&quot;'>&lt;'x&amp; ]</q></iq>|<presence/>|close|");
    rec_free(r);
}

static void test_stream_trickled_comment_and_reference_still_fail(void **st)
{
    struct rec *r = rec_new(0, 0);
    const char *in = HDR "<!-- a > b -- -->";
    sb_rc rc = SB_OK;
    for (size_t i = 0; in[i] && rc == SB_OK; i++)
        rc = xml_stream_feed(r->s, in + i, 1);
    assert_int_equal(rc, SB_ERROR);
    rec_free(r);
    r = rec_new(0, 0);
    in = HDR "<message><body>&nosuch;</body></message>";
    rc = SB_OK;
    for (size_t i = 0; in[i] && rc == SB_OK; i++)
        rc = xml_stream_feed(r->s, in + i, 1);
    assert_int_equal(rc, SB_ERROR);
    assert_int_equal(r->nstanza, 0);
    rec_free(r);
}

static void test_parser_rejects_too_deep_nesting(void **st)
{
    struct rec *r = rec_new(0, 4);
    assert_int_equal(feed(r, HDR "<a><b><c><d/></c></b></a>"), SB_OK);
    assert_int_equal(r->nstanza, 1);
    assert_int_equal(feed(r, "<a><b><c><d><e/></d></c></b></a>"), SB_ERROR);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_TOO_DEEP);
    assert_int_equal(r->nstanza, 1);
    rec_free(r);
}

static void expect_restricted(const char *in)
{
    struct rec *r = rec_new(0, 0);
    assert_int_equal(feed(r, in), SB_ERROR);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_RESTRICTED);
    rec_free(r);
}

static void test_parser_rejects_comment(void **st)
{
    expect_restricted(HDR "<!-- hi -->");
    expect_restricted(HDR "<message><!-- hi --></message>");
    expect_restricted("<!-- before --><stream:stream>");
}

static void test_parser_rejects_processing_instruction(void **st)
{
    expect_restricted(HDR "<?php echo 1; ?>");
    expect_restricted(HDR "<message><?pi x?></message>");
}

static void test_parser_rejects_doctype_and_entity_declarations(void **st)
{
    expect_restricted("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]><stream:stream>");
    expect_restricted("<!DOCTYPE stream SYSTEM 'http://x/'><stream:stream>");
}

static void test_parser_allows_xml_declaration(void **st)
{
    struct rec *r = rec_new(0, 0);
    assert_int_equal(feed(r, "<?xml version='1.0' encoding='UTF-8'?>\n<stream:stream to='a'>"), SB_OK);
    assert_string_equal(r->log.data, "open(stream:stream,a)|");
    rec_free(r);
}

static void test_parser_rejects_malformed_xml(void **st)
{
    struct rec *r = rec_new(0, 0);
    assert_int_equal(feed(r, HDR "<message><body></message>"), SB_ERROR);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_SYNTAX);
    assert_int_equal(feed(r, "<presence/>"), SB_ERROR);
    rec_free(r);
    r = rec_new(0, 0);
    assert_int_equal(feed(r, HDR "<message>&undefined;</message>"), SB_ERROR);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_SYNTAX);
    rec_free(r);
    r = rec_new(0, 0);
    assert_int_equal(feed(r, HDR "<message>\xff\xfe</message>"), SB_ERROR);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_SYNTAX);
    rec_free(r);
}

static void test_restart_inside_callback_drops_rest_and_accepts_new_header(void **st)
{
    struct rec *r = rec_new(0, 0);
    r->restart_on = 1;
    assert_int_equal(feed(r, HDR "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><dropped/>"), SB_DONE);
    assert_int_equal(xml_stream_error(r->s), XML_ERR_NONE);
    /* a fresh stream, with its own XML declaration */
    assert_int_equal(feed(r, HDR "<auth/>"), SB_OK);
    assert_string_equal(r->log.data,
                        "open(stream:stream,localhost)|<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>|"
                        "open(stream:stream,localhost)|<auth/>|");
    rec_free(r);
}

static void test_restart_works_when_fed_byte_by_byte(void **st)
{
    struct rec *r = rec_new(0, 0);
    r->restart_on = 1;
    const char *in = HDR "<success/>";
    for (size_t i = 0; in[i]; i++)
        assert_int_equal(xml_stream_feed(r->s, in + i, 1), in[i + 1] ? SB_OK : SB_DONE);
    in = HDR "<bind/>";
    for (size_t i = 0; in[i]; i++)
        assert_int_equal(xml_stream_feed(r->s, in + i, 1), SB_OK);
    assert_int_equal(r->nstanza, 2);
    rec_free(r);
}

static void test_stop_inside_callback_ends_feeding(void **st)
{
    struct rec *r = rec_new(0, 0);
    r->stop_on = 1;
    assert_int_equal(feed(r, HDR "<a/><b/>"), SB_DONE);
    assert_int_equal(feed(r, "<c/>"), SB_DONE);
    assert_int_equal(r->nstanza, 1);
    xml_stream_reset(r->s);
    assert_int_equal(feed(r, HDR "<d/>"), SB_OK);
    assert_int_equal(r->nstanza, 2);
    rec_free(r);
}

static void test_free_inside_callback_is_deferred_safely(void **st)
{
    struct rec *r = rec_new(0, 0);
    r->free_on = 1;
    assert_int_equal(feed(r, HDR "<a/><b/>"), SB_DONE);
    assert_null(r->s);
    rec_free(r);
}

static void test_escaping_round_trips_through_parser(void **st)
{
    const char *nasty = "a&b<c>d\"e'f]]>g\tx\ny\rz";
    struct xml_doc *d = xml_doc_new("message");
    assert_int_equal(xml_set_attr(d, d->root, "id", nasty), SB_OK);
    struct xml_node *body = xml_add_child(d, d->root, "body");
    assert_int_equal(xml_add_text(d, body, nasty, strlen(nasty)), SB_OK);
    struct sb_buf out = SB_BUF_INIT, txt = SB_BUF_INIT;
    assert_int_equal(xml_serialize(d->root, &out), SB_OK);
    enum xml_err err;
    struct xml_doc *back = xml_doc_parse(out.data, out.len, NULL, &err);
    assert_non_null(back);
    assert_string_equal(xml_attr(back->root, "id"), nasty);
    xml_text(xml_child(back->root, "body", NULL), &txt);
    assert_string_equal(txt.data, nasty);
    xml_doc_free(d);
    xml_doc_free(back);
    sb_buf_free(&out);
    sb_buf_free(&txt);
}

static void test_escape_functions_output(void **st)
{
    struct sb_buf b = SB_BUF_INIT;
    assert_int_equal(xml_escape_text(&b, "<a & 'b' \"c\">", 14), SB_OK);
    assert_string_equal(b.data, "&lt;a &amp; 'b' \"c\"&gt;");
    sb_buf_reset(&b);
    assert_int_equal(xml_escape_attr(&b, "<a & 'b' \"c\">", 14), SB_OK);
    assert_string_equal(b.data, "&lt;a &amp; &apos;b&apos; &quot;c&quot;&gt;");
    sb_buf_free(&b);
}

static void test_serializer_self_closes_and_quotes_with_apostrophe(void **st)
{
    struct xml_doc *d = xml_doc_new("iq");
    xml_set_attr(d, d->root, "type", "result");
    xml_set_attr(d, d->root, "id", "x1");
    struct xml_node *q = xml_add_child(d, d->root, "query");
    xml_set_attr(d, q, "xmlns", "jabber:iq:roster");
    xml_add_child(d, q, "item");
    struct sb_buf b = SB_BUF_INIT;
    assert_int_equal(xml_serialize(d->root, &b), SB_OK);
    assert_string_equal(b.data, "<iq type='result' id='x1'><query xmlns='jabber:iq:roster'><item/></query></iq>");
    sb_buf_reset(&b);
    assert_int_equal(xml_serialize_open(d->root, &b), SB_OK);
    assert_string_equal(b.data, "<iq type='result' id='x1'>");
    xml_doc_free(d);
    sb_buf_free(&b);
}

static void test_attr_set_replace_delete(void **st)
{
    struct xml_doc *d = xml_doc_parse("<message from='evil' to='b'/>", 29, NULL, NULL);
    assert_non_null(d);
    assert_int_equal(xml_set_attr(d, d->root, "from", "a@x/r"), SB_OK);
    for (int i = 0; i < 10; i++) {
        char n[16];
        snprintf(n, sizeof n, "a%d", i);
        assert_int_equal(xml_set_attr(d, d->root, n, "v"), SB_OK);
    }
    assert_string_equal(xml_attr(d->root, "from"), "a@x/r");
    assert_string_equal(xml_attr(d->root, "a9"), "v");
    xml_del_attr(d->root, "to");
    assert_null(xml_attr(d->root, "to"));
    assert_string_equal(xml_attr(d->root, "a0"), "v");
    assert_int_equal(d->root->nattrs, 11);
    xml_doc_free(d);
}

static void test_child_lookup_by_name_and_inherited_namespace(void **st)
{
    const char *in = "<iq xmlns='jabber:client'> text <query xmlns='jabber:iq:roster'><item/></query>"
                     "<ping xmlns='urn:xmpp:ping'/>x<error/></iq>";
    struct xml_doc *d = xml_doc_parse(in, strlen(in), NULL, NULL);
    assert_non_null(d);
    assert_non_null(xml_child(d->root, "query", "jabber:iq:roster"));
    assert_null(xml_child(d->root, "query", "urn:xmpp:ping"));
    assert_non_null(xml_child(d->root, "ping", "urn:xmpp:ping"));
    assert_non_null(xml_child(d->root, "error", "jabber:client"));
    assert_non_null(xml_child(xml_child(d->root, "query", NULL), "item", "jabber:iq:roster"));
    struct xml_node *e = xml_first_elem(d->root);
    assert_string_equal(e->name, "query");
    e = xml_next_elem(e);
    assert_string_equal(e->name, "ping");
    e = xml_next_elem(e);
    assert_string_equal(e->name, "error");
    assert_null(xml_next_elem(e));
    struct sb_buf t = SB_BUF_INIT;
    xml_text(d->root, &t);
    assert_string_equal(t.data, " text x");
    sb_buf_free(&t);
    xml_doc_free(d);
}

static void test_copy_into_makes_independent_subtree(void **st)
{
    const char *in = "<message to='a'><body>hi &amp; there</body><x xmlns='y' k='v'/></message>";
    struct xml_doc *src = xml_doc_parse(in, strlen(in), NULL, NULL);
    struct xml_doc *dst = xml_doc_new("forwarded");
    assert_non_null(xml_copy_into(dst, dst->root, src->root));
    xml_doc_free(src);
    struct sb_buf b = SB_BUF_INIT;
    xml_serialize(dst->root, &b);
    assert_string_equal(b.data, "<forwarded><message to='a'><body>hi &amp; there</body><x xmlns='y' k='v'/></message></forwarded>");
    sb_buf_free(&b);
    xml_doc_free(dst);
}

static void test_doc_parse_enforces_limits_and_restrictions(void **st)
{
    enum xml_err err;
    struct xml_limits lim = {32, 3};
    assert_null(xml_doc_parse("<a><b><c>x</c></b></a>xx", 24, &lim, &err));
    assert_int_equal(err, XML_ERR_SYNTAX);
    assert_null(xml_doc_parse("<message><body>0123456789012345678</body></message>", 51, &lim, &err));
    assert_int_equal(err, XML_ERR_TOO_BIG);
    assert_null(xml_doc_parse("<a><b><c><d/></c></b></a>", 25, &lim, &err));
    assert_int_equal(err, XML_ERR_TOO_DEEP);
    assert_null(xml_doc_parse("<a><!--c--></a>", 15, &lim, &err));
    assert_int_equal(err, XML_ERR_RESTRICTED);
    assert_null(xml_doc_parse("<a/><b/>", 8, &lim, &err));
    assert_int_equal(err, XML_ERR_SYNTAX);
    assert_null(xml_doc_parse("", 0, &lim, &err));
    assert_int_equal(err, XML_ERR_SYNTAX);
    assert_null(xml_doc_parse("<a>", 3, &lim, &err));
    assert_int_equal(err, XML_ERR_SYNTAX);
    struct xml_doc *d = xml_doc_parse("<a><b><c>x</c></b></a>", 22, &lim, &err);
    assert_non_null(d);
    assert_int_equal(err, XML_ERR_NONE);
    assert_string_equal(d->root->name, "a");
    xml_doc_free(d);
}

static void test_doc_parse_handles_large_stanza_in_arena(void **st)
{
    struct sb_buf in = SB_BUF_INIT, out = SB_BUF_INIT;
    sb_buf_adds(&in, "<query xmlns='jabber:iq:roster'>");
    for (int i = 0; i < 2000; i++)
        sb_buf_printf(&in, "<item jid='user%d@example.org' name='User %d' subscription='both'><group>G</group></item>", i, i);
    sb_buf_adds(&in, "</query>");
    struct xml_doc *d = xml_doc_parse(in.data, in.len, NULL, NULL);
    assert_non_null(d);
    assert_int_equal(xml_serialize(d->root, &out), SB_OK);
    assert_string_equal(in.data, out.data);
    xml_doc_free(d);
    sb_buf_free(&in);
    sb_buf_free(&out);
}

static double parse_small_docs(int n)
{
    static const char small[] = "<message to='a@b' type='chat'><body>hi</body></message>";
    clock_t t0 = clock();
    for (int i = 0; i < n; i++) {
        struct xml_doc *d = xml_doc_parse(small, sizeof small - 1, NULL, NULL);
        assert_non_null(d);
        xml_doc_free(d);
    }
    return (double)(clock() - t0) / CLOCKS_PER_SEC;
}

/* Expat's name tables keep their biggest size and each reset walks them:
 * one stanza of 20,000 attribute names made every later stanza of the
 * thread ~80 times slower to parse (found by tests/fuzz). */
static void test_doc_parse_stays_fast_after_a_stanza_of_many_names(void **st)
{
    double before = parse_small_docs(20000);
    struct sb_buf big = SB_BUF_INIT;
    sb_buf_adds(&big, "<m");
    for (int i = 0; i < 20000; i++)
        sb_buf_printf(&big, " a%d=''", i);
    sb_buf_adds(&big, "/>");
    struct xml_doc *d = xml_doc_parse(big.data, big.len, NULL, NULL);
    assert_non_null(d);
    assert_int_equal(d->root->nattrs, 20000);
    xml_doc_free(d);
    sb_buf_free(&big);
    double after = parse_small_docs(20000);
    assert_true(after < before * 4 + 0.05);
}

static void test_err_names(void **st)
{
    assert_string_equal(xml_err_name(XML_ERR_TOO_BIG), "too-big");
    assert_string_equal(xml_err_name(XML_ERR_RESTRICTED), "restricted");
}

static void test_parser_errors_map_to_stream_error_conditions(void **state)
{
    assert_string_equal(xml_err_stream_cond(XML_ERR_SYNTAX), "not-well-formed");
    assert_string_equal(xml_err_stream_cond(XML_ERR_RESTRICTED), "restricted-xml");
    assert_string_equal(xml_err_stream_cond(XML_ERR_TOO_BIG), "policy-violation");
    assert_string_equal(xml_err_stream_cond(XML_ERR_TOO_DEEP), "policy-violation");
    assert_string_equal(xml_err_stream_cond(XML_ERR_NOMEM), "resource-constraint");
}

static void test_stream_version_needs_major_one_or_more(void **state)
{
    assert_true(xml_stream_version_ok("1.0"));
    assert_true(xml_stream_version_ok("2.3"));
    assert_false(xml_stream_version_ok("0.9"));
    assert_false(xml_stream_version_ok("1"));
    assert_false(xml_stream_version_ok(""));
    assert_false(xml_stream_version_ok(NULL));
    assert_false(xml_stream_version_ok("x.0"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_yields_header_stanzas_and_close),
        cmocka_unit_test(test_stream_split_byte_by_byte_gives_same_events),
        cmocka_unit_test(test_stream_ignores_whitespace_keepalives),
        cmocka_unit_test(test_parser_accepts_many_small_stanzas_beyond_limit_in_total),
        cmocka_unit_test(test_parser_accepts_stanza_exactly_at_limit),
        cmocka_unit_test(test_parser_rejects_stanza_over_limit_in_many_feeds),
        cmocka_unit_test(test_parser_rejects_one_huge_text_node_in_one_feed),
        cmocka_unit_test(test_parser_rejects_huge_start_tag_in_small_feeds),
        cmocka_unit_test(test_stream_trickled_huge_start_tag_costs_linear_time),
        cmocka_unit_test(test_stream_stanza_arrives_with_its_last_byte),
        cmocka_unit_test(test_stream_trickled_comment_and_reference_still_fail),
        cmocka_unit_test(test_parser_rejects_too_deep_nesting),
        cmocka_unit_test(test_parser_rejects_comment),
        cmocka_unit_test(test_parser_rejects_processing_instruction),
        cmocka_unit_test(test_parser_rejects_doctype_and_entity_declarations),
        cmocka_unit_test(test_parser_allows_xml_declaration),
        cmocka_unit_test(test_parser_rejects_malformed_xml),
        cmocka_unit_test(test_restart_inside_callback_drops_rest_and_accepts_new_header),
        cmocka_unit_test(test_restart_works_when_fed_byte_by_byte),
        cmocka_unit_test(test_stop_inside_callback_ends_feeding),
        cmocka_unit_test(test_free_inside_callback_is_deferred_safely),
        cmocka_unit_test(test_escaping_round_trips_through_parser),
        cmocka_unit_test(test_escape_functions_output),
        cmocka_unit_test(test_serializer_self_closes_and_quotes_with_apostrophe),
        cmocka_unit_test(test_attr_set_replace_delete),
        cmocka_unit_test(test_child_lookup_by_name_and_inherited_namespace),
        cmocka_unit_test(test_copy_into_makes_independent_subtree),
        cmocka_unit_test(test_doc_parse_enforces_limits_and_restrictions),
        cmocka_unit_test(test_doc_parse_handles_large_stanza_in_arena),
        cmocka_unit_test(test_doc_parse_stays_fast_after_a_stanza_of_many_names),
        cmocka_unit_test(test_err_names),
        cmocka_unit_test(test_parser_errors_map_to_stream_error_conditions),
        cmocka_unit_test(test_stream_version_needs_major_one_or_more),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
