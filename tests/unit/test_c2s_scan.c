/* test_c2s_scan.c — c2s's tree-free scanners: reading the `to` of a stanza
 * the router handed over for a stale sid, and loopback detection for
 * allow_plain_without_tls. c2s objects are not in a library, so the one
 * source file under test is compiled in. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "c2s/scan.c"
#include "c2s/web_parse.c"

static long scan(const char *xml, const char *name, char *out, size_t cap)
{
    return c2s_scan_attr(xml, strlen(xml), name, out, cap);
}

static void test_scan_finds_to_in_single_and_double_quotes(void **st)
{
    char out[64];
    assert_int_equal(scan("<message from='a@b/c' to='bob@localhost/r1'><body/></message>",
                          "to", out, sizeof out), 16);
    assert_string_equal(out, "bob@localhost/r1");
    assert_true(scan("<iq to=\"x@y\" type='get'/>", "to", out, sizeof out) > 0);
    assert_string_equal(out, "x@y");
}

static void test_scan_decodes_entities(void **st)
{
    char out[64];
    assert_true(scan("<message to='o&apos;brien@x/&amp;&lt;&gt;&quot;'/>", "to", out,
                     sizeof out) > 0);
    assert_string_equal(out, "o'brien@x/&<>\"");
}

static void test_scan_ignores_attributes_with_similar_names(void **st)
{
    char out[64];
    assert_true(scan("<message xto='no' tox='no' to='yes'/>", "to", out, sizeof out) > 0);
    assert_string_equal(out, "yes");
}

static void test_scan_reads_only_the_first_start_tag(void **st)
{
    char out[64];
    assert_int_equal(scan("<message><body to='inner'/></message>", "to", out, sizeof out), -1);
    assert_int_equal(scan("<presence/>", "to", out, sizeof out), -1);
}

static void test_scan_rejects_bad_input(void **st)
{
    char out[8];
    assert_int_equal(scan("", "to", out, sizeof out), -1);
    assert_int_equal(scan("not xml", "to", out, sizeof out), -1);
    assert_int_equal(scan("<m to='unterminated", "to", out, sizeof out), -1);
    assert_int_equal(scan("<m to=noquote>", "to", out, sizeof out), -1);
    assert_int_equal(scan("<m to='&bogus;'/>", "to", out, sizeof out), -1);
    assert_int_equal(scan("<m to='longer-than-cap'/>", "to", out, sizeof out), -1);
}

static void test_scan_handles_leading_whitespace_and_gt_in_values(void **st)
{
    char out[64];
    assert_true(scan("  \n<message a='x>y' to = 'z@w' />", "to", out, sizeof out) > 0);
    assert_string_equal(out, "z@w");
}

/* Found by tests/fuzz (corpus xml/crash-framed-xmlns-entity): an xmlns the
 * scanner could not decode counted as none, so web_add_element added a
 * second one and the framed element was not well-formed. */
static void test_web_add_element_keeps_a_single_xmlns(void **st)
{
    struct sb_buf b = SB_BUF_INIT;
    static const char odd[] = "<iq xmlns='urn:x&#10;y' type='get'/>";
    assert_true(c2s_scan_has_attr(odd, strlen(odd), "xmlns"));
    assert_int_equal(web_add_element(&b, odd, strlen(odd)), SB_OK);
    assert_int_equal(b.len, strlen(odd));
    assert_memory_equal(b.data, odd, b.len);
    sb_buf_reset(&b);
    static const char bare[] = "<message to='a@b'><body/></message>";
    assert_false(c2s_scan_has_attr(bare, strlen(bare), "xmlns"));
    assert_int_equal(web_add_element(&b, bare, strlen(bare)), SB_OK);
    sb_buf_add(&b, "", 1);
    assert_string_equal(b.data, "<message xmlns='jabber:client' to='a@b'><body/></message>");
    sb_buf_free(&b);
}

static void test_loopback_addresses_are_recognised(void **st)
{
    assert_true(c2s_is_loopback("127.0.0.1"));
    assert_true(c2s_is_loopback("127.1.2.3"));
    assert_true(c2s_is_loopback("::1"));
    assert_true(c2s_is_loopback("localhost"));
    assert_false(c2s_is_loopback("0.0.0.0"));
    assert_false(c2s_is_loopback("::"));
    assert_false(c2s_is_loopback("10.0.0.1"));
    assert_false(c2s_is_loopback(""));
    assert_false(c2s_is_loopback(NULL));
    assert_false(c2s_is_loopback("example.org"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_finds_to_in_single_and_double_quotes),
        cmocka_unit_test(test_scan_decodes_entities),
        cmocka_unit_test(test_scan_ignores_attributes_with_similar_names),
        cmocka_unit_test(test_scan_reads_only_the_first_start_tag),
        cmocka_unit_test(test_scan_rejects_bad_input),
        cmocka_unit_test(test_scan_handles_leading_whitespace_and_gt_in_values),
        cmocka_unit_test(test_web_add_element_keeps_a_single_xmlns),
        cmocka_unit_test(test_loopback_addresses_are_recognised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
