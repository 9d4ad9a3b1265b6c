/* test_secret.c — sb_secret_matches (common/sb.h): a presented secret
 * matches only the exact configured bytes, whatever its length; the
 * comparison is between fixed-length digests (no early exit on length). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "sb.h"

static const char secret[] = "0123456789abcdef-the-prebind-secret";

static int matches(const char *given, size_t len)
{
    uint8_t want[SB_SECRET_DIGEST];
    sb_secret_digest(secret, strlen(secret), want);
    return sb_secret_matches(want, given, len);
}

static void test_secret_the_exact_bytes_match(void **st)
{
    assert_true(matches(secret, strlen(secret)));
}

static void test_secret_a_prefix_or_an_extension_does_not_match(void **st)
{
    char longer[sizeof secret + 1];
    memcpy(longer, secret, sizeof secret - 1);
    longer[sizeof secret - 1] = 'x';
    longer[sizeof secret] = '\0';
    assert_false(matches(secret, strlen(secret) - 1));
    assert_false(matches(secret, 1));
    assert_false(matches(longer, strlen(longer)));
    assert_false(matches("", 0));
}

static void test_secret_one_flipped_byte_anywhere_does_not_match(void **st)
{
    char buf[sizeof secret];
    for (size_t i = 0; i < strlen(secret); i++) {
        memcpy(buf, secret, sizeof secret);
        buf[i] ^= 0x01;
        assert_false(matches(buf, strlen(secret)));
    }
}

static void test_secret_embedded_nul_is_part_of_the_value(void **st)
{
    /* The length given is compared, not a C string: "secret\0x" is not "secret". */
    char buf[sizeof secret + 2];
    memcpy(buf, secret, sizeof secret);        /* includes the NUL */
    buf[sizeof secret] = 'x';
    assert_false(matches(buf, sizeof secret + 1));
}

static void test_secret_digest_is_deterministic_and_differs_per_secret(void **st)
{
    uint8_t a[SB_SECRET_DIGEST], b[SB_SECRET_DIGEST], c[SB_SECRET_DIGEST];
    sb_secret_digest("alpha-secret-1234", 17, a);
    sb_secret_digest("alpha-secret-1234", 17, b);
    sb_secret_digest("alpha-secret-1235", 17, c);
    assert_memory_equal(a, b, SB_SECRET_DIGEST);
    assert_memory_not_equal(a, c, SB_SECRET_DIGEST);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_the_exact_bytes_match),
        cmocka_unit_test(test_secret_a_prefix_or_an_extension_does_not_match),
        cmocka_unit_test(test_secret_one_flipped_byte_anywhere_does_not_match),
        cmocka_unit_test(test_secret_embedded_nul_is_part_of_the_value),
        cmocka_unit_test(test_secret_digest_is_deterministic_and_differs_per_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
