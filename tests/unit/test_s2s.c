/* test_s2s.c — the IO-free parts of sb-s2s: XEP-0185 dialback keys, policy
 * values, RFC 2782 ordering of SRV targets. s2s objects are not in a
 * library, so the one source file under test is compiled in. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "s2s/pure.c"

/* XEP-0185 §2: HMAC-SHA256 keyed with the hex SHA-256 of the secret over
 * "receiving originating id". Expected value computed independently:
 *   k = sha256(b"s3cr3tf0rd14lb4ck").hexdigest().encode()
 *   hmac.new(k, b"example.net example.com D60000229F", sha256).hexdigest() */
static void test_dialback_key_follows_xep0185(void **st)
{
    char key[65];
    s2s_db_key("s3cr3tf0rd14lb4ck", "example.net", "example.com", "D60000229F", key);
    assert_string_equal(key, "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc");
}

static void test_dialback_key_depends_on_every_input(void **st)
{
    char base[65], k[65];
    s2s_db_key("secret-0123456789", "b.example", "a.example", "id1", base);
    s2s_db_key("secret-0123456789", "a.example", "b.example", "id1", k);
    assert_string_not_equal(base, k);
    s2s_db_key("secret-0123456789", "b.example", "a.example", "id2", k);
    assert_string_not_equal(base, k);
    s2s_db_key("other-secret-0123", "b.example", "a.example", "id1", k);
    assert_string_not_equal(base, k);
    s2s_db_key("secret-0123456789", "b.example", "a.example", "id1", k);
    assert_string_equal(base, k);
}

static void test_policy_allow_and_deny_all(void **st)
{
    assert_int_equal(sb_domains_policy_eval("allow", "x.example"), 1);
    assert_int_equal(sb_domains_policy_eval(" Deny ", "x.example"), 0);
}

static void test_policy_allow_list_admits_only_listed_domains(void **st)
{
    const char *v = "allow: a.example, b.example";
    assert_int_equal(sb_domains_policy_eval(v, "a.example"), 1);
    assert_int_equal(sb_domains_policy_eval(v, "b.example"), 1);
    assert_int_equal(sb_domains_policy_eval(v, "c.example"), 0);
    assert_int_equal(sb_domains_policy_eval(v, "sub.a.example"), 0);
    assert_int_equal(sb_domains_policy_eval("allow:", "a.example"), 0);
}

static void test_policy_deny_list_refuses_only_listed_domains(void **st)
{
    const char *v = "deny: spam.example bad.example";
    assert_int_equal(sb_domains_policy_eval(v, "spam.example"), 0);
    assert_int_equal(sb_domains_policy_eval(v, "BAD.example"), 0);
    assert_int_equal(sb_domains_policy_eval(v, "good.example"), 1);
}

static void test_policy_rejects_malformed_values(void **st)
{
    assert_int_equal(sb_domains_policy_eval("maybe", "a.example"), -1);
    assert_int_equal(sb_domains_policy_eval("allow a.example", "a.example"), -1);
    assert_int_equal(sb_domains_policy_eval("", "a.example"), -1);
}

static void test_srv_targets_are_ordered_by_priority(void **st)
{
    struct s2s_target t[3] = {{"c", 3, 0}, {"a", 1, 1}, {"b", 2, 0}};
    int prio[3] = {30, 10, 20}, weight[3] = {0, 0, 0};
    s2s_dns_sort(t, prio, weight, 3);
    assert_string_equal(t[0].host, "a");
    assert_int_equal(t[0].direct_tls, 1);
    assert_string_equal(t[1].host, "b");
    assert_string_equal(t[2].host, "c");
}

static void test_srv_weight_decides_within_one_priority(void **st)
{
    int heavy_first = 0;
    for (int i = 0; i < 400; i++) {
        struct s2s_target t[3] = {{"light", 1, 0}, {"heavy", 2, 0}, {"backup", 3, 0}};
        int prio[3] = {5, 5, 9}, weight[3] = {1, 98, 100};
        s2s_dns_sort(t, prio, weight, 3);
        assert_string_equal(t[2].host, "backup");   /* higher priority value last */
        heavy_first += !strcmp(t[0].host, "heavy");
    }
    /* P(heavy first) = 99/101; 400 draws stay far above 300. */
    assert_true(heavy_first > 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dialback_key_follows_xep0185),
        cmocka_unit_test(test_dialback_key_depends_on_every_input),
        cmocka_unit_test(test_policy_allow_and_deny_all),
        cmocka_unit_test(test_policy_allow_list_admits_only_listed_domains),
        cmocka_unit_test(test_policy_deny_list_refuses_only_listed_domains),
        cmocka_unit_test(test_policy_rejects_malformed_values),
        cmocka_unit_test(test_srv_targets_are_ordered_by_priority),
        cmocka_unit_test(test_srv_weight_decides_within_one_priority),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
