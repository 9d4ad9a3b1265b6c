/* test_c2s_sasl2.c — reading a XEP-0388 <authenticate/> (c2s/sasl2_parse.c)
 * and the Bind 2 resource derived from the user-agent id. The source under
 * test is compiled in (c2s objects are not in a library). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "c2s/sasl2_parse.c"

static struct sb_buf text;

static const char *parse(const char *xml, struct c2s_sasl2_req *r, const char **cond)
{
    static struct xml_doc *d;
    struct xml_limits lim = {65536, 32};
    enum xml_err err;
    xml_doc_free(d);
    d = xml_doc_parse(xml, strlen(xml), &lim, &err);
    assert_non_null(d);
    return c2s_sasl2_parse(d->root, &text, r, cond);
}

static void test_authenticate_with_every_inline_request_is_read(void **st)
{
    struct c2s_sasl2_req r;
    const char *cond;
    const char *why = parse(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-256'>"
        "<initial-response>biws</initial-response>"
        "<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>App</software>"
        "<device>Phone\n1</device></user-agent>"
        "<resume xmlns='urn:xmpp:sm:3' previd='abc123' h='5'/>"
        "<bind xmlns='urn:xmpp:bind:0'><tag>App</tag><enable xmlns='urn:xmpp:carbons:2'/>"
        "<enable xmlns='urn:xmpp:sm:3' resume='true' max='300'/></bind>"
        "<request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>"
        "<fast xmlns='urn:xmpp:fast:0' count='7' invalidate='true'/></authenticate>",
        &r, &cond);
    assert_null(why);
    assert_string_equal(r.mech, "SCRAM-SHA-256");
    assert_string_equal(r.initial, "biws");
    assert_string_equal(r.ua, "d4565fa7-4d72-4749-b3d3-740edbf87770");
    assert_string_equal(r.software, "App");
    assert_string_equal(r.device, "Phone 1");          /* control bytes out */
    assert_true(r.bind && r.carbons && r.sm_enable && r.sm_resumable && r.resume);
    assert_int_equal(r.sm_max, 300);
    assert_string_equal(r.tag, "App");
    assert_string_equal(r.previd, "abc123");
    assert_string_equal(r.resume_h, "5");
    assert_string_equal(r.token_mech, "HT-SHA-256-NONE");
    assert_true(r.fast && r.invalidate);
    assert_int_equal(r.count, 7);
}

static void test_bad_authenticate_elements_are_refused_with_a_condition(void **st)
{
    static const struct { const char *xml, *cond; } cases[] = {
        {"<authenticate xmlns='urn:xmpp:sasl:2'/>", "invalid-mechanism"},
        {"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='a b'/>", "invalid-mechanism"},
        {"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><user-agent id=''/>"
         "</authenticate>", "malformed-request"},
        {"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><user-agent id='a/b'/>"
         "</authenticate>", "malformed-request"},
        {"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><fast "
         "xmlns='urn:xmpp:fast:0'/></authenticate>", "malformed-request"},
        {"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><user-agent id='u'/>"
         "<fast xmlns='urn:xmpp:fast:0' count='-1'/></authenticate>", "malformed-request"},
        {"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><user-agent id='u'/>"
         "<request-token xmlns='urn:xmpp:fast:0' mechanism='PLAIN'/></authenticate>",
         "malformed-request"},
        {"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><resume "
         "xmlns='urn:xmpp:sm:3' previd='x' h='1a'/></authenticate>", "malformed-request"},
        {"<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><bind "
         "xmlns='urn:xmpp:bind:0'/><bind xmlns='urn:xmpp:bind:0'/></authenticate>",
         "malformed-request"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct c2s_sasl2_req r;
        const char *cond = NULL;
        assert_non_null(parse(cases[i].xml, &r, &cond));
        assert_string_equal(cond, cases[i].cond);
    }
}

static void test_bind2_resource_is_stable_per_device_and_fits(void **st)
{
    char a[33], b[33], c[33], d[33];
    assert_int_equal(c2s_sasl2_resource("u@example.org", "ua-1", "Conversations", a), 1);
    assert_int_equal(c2s_sasl2_resource("u@example.org", "ua-1", "Conversations", b), 1);
    c2s_sasl2_resource("u@example.org", "ua-2", "Conversations", c);
    c2s_sasl2_resource("v@example.org", "ua-1", "Conversations", d);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_string_not_equal(a, d);          /* the same device id on another account */
    assert_int_equal(strlen(a), strlen("Conversations") + 1 + 12);
    assert_int_equal(strncmp(a, "Conversations.", 14), 0);
    /* a long (UTF-8) tag is cut on a character boundary: 32 bytes at most */
    c2s_sasl2_resource("u@example.org", "ua", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                       "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", a);
    assert_true(strlen(a) <= 32);
    assert_int_equal(strlen(a), 18 + 1 + 12);
    /* no user-agent: the tag alone (the sm adds randomness) */
    assert_int_equal(c2s_sasl2_resource("u@example.org", "", "App", a), 0);
    assert_string_equal(a, "App");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authenticate_with_every_inline_request_is_read),
        cmocka_unit_test(test_bad_authenticate_elements_are_refused_with_a_condition),
        cmocka_unit_test(test_bind2_resource_is_stable_per_device_and_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
