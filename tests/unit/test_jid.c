/* test_jid.c — JID parsing and stringprep preparation (jid.c is compiled in
 * directly so its ASCII fast path can be checked against libidn). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/jid.c"    /* static jid_prep too */

static struct jid j;

static void test_jid_parses_full_bare_and_domain_forms(void **st)
{
    char out[JID_FULL_MAX + 1];
    assert_int_equal(jid_parse(&j, "alice@example.org/phone"), SB_OK);
    assert_string_equal(j.node, "alice");
    assert_string_equal(j.domain, "example.org");
    assert_string_equal(j.resource, "phone");
    jid_full(&j, out);
    assert_string_equal(out, "alice@example.org/phone");
    jid_bare(&j, out);
    assert_string_equal(out, "alice@example.org");
    assert_int_equal(jid_parse(&j, "example.org"), SB_OK);
    assert_string_equal(j.node, "");
    assert_string_equal(j.resource, "");
    jid_full(&j, out);
    assert_string_equal(out, "example.org");
    assert_int_equal(jid_parse(&j, "example.org/res"), SB_OK);
    jid_full(&j, out);
    assert_string_equal(out, "example.org/res");
}

static void test_jid_folds_case_of_node_and_domain_but_keeps_resource(void **st)
{
    assert_int_equal(jid_parse(&j, "AlIcE@ExAmPlE.ORG/Phone Home"), SB_OK);
    assert_string_equal(j.node, "alice");
    assert_string_equal(j.domain, "example.org");
    assert_string_equal(j.resource, "Phone Home");
    /* non-ASCII case folding: ÄÖ → äö */
    assert_int_equal(jid_parse(&j, "\xc3\x84\xc3\x96@localhost"), SB_OK);
    assert_string_equal(j.node, "\xc3\xa4\xc3\xb6");
}

static void test_jid_resource_may_contain_at_and_slash(void **st)
{
    assert_int_equal(jid_parse(&j, "a@b/c@d/e"), SB_OK);
    assert_string_equal(j.node, "a");
    assert_string_equal(j.domain, "b");
    assert_string_equal(j.resource, "c@d/e");
    assert_int_equal(jid_parse(&j, "b/c@d"), SB_OK);
    assert_string_equal(j.node, "");
    assert_string_equal(j.resource, "c@d");
}

static void test_jid_node_rejects_prohibited_characters(void **st)
{
    const char *bad[] = {"a\"b@x", "a&b@x", "a'b@x", "a:b@x", "a<b@x", "a>b@x", "a b@x", "a@b@x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(jid_parse(&j, bad[i]), SB_ERROR);
    char out[JID_PART_MAX + 1];
    assert_int_equal(jid_nodeprep("a/b", out), SB_ERROR);
    assert_int_equal(jid_nodeprep("a@b", out), SB_ERROR);
    assert_int_equal(jid_nodeprep("Bob", out), SB_OK);
    assert_string_equal(out, "bob");
}

static void test_jid_rejects_empty_parts(void **st)
{
    assert_int_equal(jid_parse(&j, ""), SB_ERROR);
    assert_int_equal(jid_parse(&j, "@example.org"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@example.org/"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@/r"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "/r"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@b..c"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@."), SB_ERROR);
    /* soft hyphen is mapped to nothing: the node becomes empty */
    assert_int_equal(jid_parse(&j, "\xc2\xad@example.org"), SB_ERROR);
    assert_string_equal(j.domain, "");
}

static void test_jid_domain_strips_one_trailing_dot(void **st)
{
    assert_int_equal(jid_parse(&j, "a@Example.ORG./r"), SB_OK);
    assert_string_equal(j.domain, "example.org");
    assert_int_equal(jid_parse(&j, "a@example.org.."), SB_ERROR);
}

static void test_jid_domain_accepts_ip_literals(void **st)
{
    assert_int_equal(jid_parse(&j, "a@127.0.0.1/r"), SB_OK);
    assert_string_equal(j.domain, "127.0.0.1");
    assert_int_equal(jid_parse(&j, "a@[::1]/r"), SB_OK);
    assert_string_equal(j.domain, "[::1]");
    assert_int_equal(jid_parse(&j, "[2001:DB8:0::1]"), SB_OK);
    assert_string_equal(j.domain, "[2001:db8::1]");
    assert_int_equal(jid_parse(&j, "a@[::1"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@[nope]"), SB_ERROR);
}

static void test_jid_domain_rejects_bad_ascii(void **st)
{
    assert_int_equal(jid_parse(&j, "a@exa mple.org"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@exa<mple.org"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@exa:5222"), SB_ERROR);
    assert_int_equal(jid_parse(&j, "a@b\xff"), SB_ERROR);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_jid_part_length_limit_is_1023_bytes(void **st)
{
    char *p1023 = repeat('a', 1023), *p1024 = repeat('a', 1024);
    char *in = malloc(5000), *out = malloc(JID_FULL_MAX + 1);
    snprintf(in, 5000, "%s@%s/%s", p1023, "x.org", p1023);
    assert_int_equal(jid_parse(&j, in), SB_OK);
    assert_int_equal(strlen(j.node), 1023);
    assert_int_equal(strlen(j.resource), 1023);
    snprintf(in, 5000, "%s@x.org", p1024);
    assert_int_equal(jid_parse(&j, in), SB_ERROR);
    snprintf(in, 5000, "a@x.org/%s", p1024);
    assert_int_equal(jid_parse(&j, in), SB_ERROR);
    /* a domain of 1023 bytes in labels of 63 */
    size_t n = 0;
    while (n + 64 <= 1023) {
        memset(in + n, 'd', 63);
        in[n + 63] = '.';
        n += 64;
    }
    memset(in + n, 'e', 1023 - n);
    in[1023] = '\0';
    assert_int_equal(jid_parse(&j, in), SB_OK);
    assert_int_equal(strlen(j.domain), 1023);
    snprintf(out, JID_FULL_MAX + 1, "%s@%s/%s", p1023, in, p1023);
    assert_int_equal(jid_parse(&j, out), SB_OK);
    jid_full(&j, in);
    assert_string_equal(in, out);
    assert_int_equal(strlen(in), JID_FULL_MAX);
    in[1023] = 'e';
    in[1024] = '\0';
    assert_int_equal(jid_parse(&j, in), SB_ERROR);
    /* an expanding preparation (ß → ss) past the limit is refused */
    char big[2 * 600 + 1];
    for (int i = 0; i < 600; i++)
        memcpy(big + 2 * i, "\xc3\x9f", 2);
    big[1200] = '\0';
    assert_int_equal(jid_nodeprep(big, out), SB_ERROR);
    free(p1023);
    free(p1024);
    free(in);
    free(out);
}

static void test_jid_prep_functions_reject_empty_and_invalid_utf8(void **st)
{
    char out[JID_PART_MAX + 1];
    assert_int_equal(jid_nodeprep("", out), SB_ERROR);
    assert_int_equal(jid_resourceprep("", out), SB_ERROR);
    assert_int_equal(jid_nameprep("", out), SB_ERROR);
    assert_int_equal(jid_resourceprep("a\xc3", out), SB_ERROR);
    assert_int_equal(jid_resourceprep("Res.1", out), SB_OK);
    assert_string_equal(out, "Res.1");
    assert_int_equal(jid_nameprep("LocalHost", out), SB_OK);
    assert_string_equal(out, "localhost");
}

static void test_jid_bare_of_splits_without_preparing(void **st)
{
    char out[32];
    assert_int_equal(jid_bare_of("Alice@x/r/s", out, sizeof out), 7);
    assert_string_equal(out, "Alice@x");
    assert_int_equal(jid_bare_of("x.org", out, sizeof out), 5);
    assert_string_equal(out, "x.org");
    assert_int_equal(jid_bare_of("/r", out, sizeof out), -1);
    assert_int_equal(jid_bare_of("abcdef", out, 6), -1);
    assert_int_equal(jid_bare_of("abcde", out, 6), 5);
}

/* The ASCII fast path must agree with libidn's stringprep, character by
 * character, for all three profiles. */
static void test_jid_ascii_fast_path_matches_stringprep(void **st)
{
    const Stringprep_profile *profiles[3] = {stringprep_xmpp_nodeprep, stringprep_nameprep,
                                             stringprep_xmpp_resourceprep};
    sb_rc (*fast[3])(const char *, char *) = {jid_nodeprep, NULL, jid_resourceprep};
    for (int p = 0; p < 3; p++) {
        for (int c = 1; c < 128; c++) {
            char in[8], ref[64], got[JID_PART_MAX + 1];
            snprintf(in, sizeof in, "aB%cz", c);
            snprintf(ref, sizeof ref, "%s", in);
            int ok = stringprep(ref, sizeof ref, 0, profiles[p]) == STRINGPREP_OK;
            sb_rc rc;
            if (fast[p]) {
                rc = fast[p](in, got);
            } else {
                /* nameprep alone: the domain check after it is stricter */
                rc = jid_prep(in, strlen(in), got, stringprep_nameprep);
            }
            assert_int_equal(rc == SB_OK, ok);
            if (ok)
                assert_string_equal(got, ref);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jid_parses_full_bare_and_domain_forms),
        cmocka_unit_test(test_jid_folds_case_of_node_and_domain_but_keeps_resource),
        cmocka_unit_test(test_jid_resource_may_contain_at_and_slash),
        cmocka_unit_test(test_jid_node_rejects_prohibited_characters),
        cmocka_unit_test(test_jid_rejects_empty_parts),
        cmocka_unit_test(test_jid_domain_strips_one_trailing_dot),
        cmocka_unit_test(test_jid_domain_accepts_ip_literals),
        cmocka_unit_test(test_jid_domain_rejects_bad_ascii),
        cmocka_unit_test(test_jid_part_length_limit_is_1023_bytes),
        cmocka_unit_test(test_jid_prep_functions_reject_empty_and_invalid_utf8),
        cmocka_unit_test(test_jid_bare_of_splits_without_preparing),
        cmocka_unit_test(test_jid_ascii_fast_path_matches_stringprep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
