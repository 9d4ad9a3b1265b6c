/* test_c2s_rate.c — the per-session byte shaper and stanza rate (c2s/rate.c)
 * with a fake clock: throttling pauses for exactly the debt, buckets refill
 * up to their burst, a sustained stanza flood is closed, 0 turns limits off. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "../../c2s/c2s.h"

static double test_now;
#define ev_now(loop) test_now
#include "../../c2s/rate.c"

struct c2s_srv c2s;
static int test_errors;
static const char *test_cond;

void c2s_stream_error(struct c2s_conn *c, const char *cond, const char *why)
{
    test_errors++;
    test_cond = cond;
    c->state = C2S_S_CLOSING;
}

static void setup_limits(double rate, double burst, double st, double st_burst)
{
    memset(&c2s, 0, sizeof c2s);
    c2s.cfg.max_rate = rate;
    c2s.cfg.rate_burst = burst;
    c2s.cfg.max_stanzas = st;
    c2s.cfg.stanza_burst = st_burst;
    test_now = 1000;
    test_errors = 0;
    test_cond = NULL;
}

static void test_rate_reads_freely_within_burst(void **state)
{
    struct c2s_conn c = {0};
    setup_limits(1000, 4000, 0, 0);
    c2s_rate_init(&c);
    assert_true(c2s_rate_bytes(&c, 3000) == 0);
    assert_true(c2s_rate_bytes(&c, 1000) == 0);
}

static void test_rate_throttles_for_the_debt_then_refills(void **state)
{
    struct c2s_conn c = {0};
    setup_limits(1000, 4000, 0, 0);
    c2s_rate_init(&c);
    double wait = c2s_rate_bytes(&c, 6000);          /* 2000 bytes of debt */
    assert_true(wait > 1.99 && wait < 2.01);
    assert_true(c2s_rate_resume_at(&c) > 1001.99 && c2s_rate_resume_at(&c) < 1002.01);
    test_now += 2;
    assert_true(c2s_rate_bytes(&c, 0) == 0);         /* debt paid */
    test_now += 100;                                 /* never more than the burst */
    assert_true(c2s_rate_bytes(&c, 4000) == 0);
    assert_true(c2s_rate_bytes(&c, 1) > 0);
}

static void test_rate_off_never_throttles(void **state)
{
    struct c2s_conn c = {0};
    setup_limits(0, 0, 0, 0);
    c2s_rate_init(&c);
    assert_true(c2s_rate_bytes(&c, 100000000) == 0);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(c2s_rate_stanza(&c), 0);
}

static void test_rate_stanza_burst_is_allowed(void **state)
{
    struct c2s_conn c = {0};
    setup_limits(0, 0, 10, 50);
    c2s_rate_init(&c);
    for (int i = 0; i < 50; i++)
        assert_int_equal(c2s_rate_stanza(&c), 0);
    test_now += 1;                                   /* 10 more allowed */
    for (int i = 0; i < 10; i++)
        assert_int_equal(c2s_rate_stanza(&c), 0);
    assert_int_equal(test_errors, 0);
}

static void test_rate_sustained_stanza_flood_gets_policy_violation(void **state)
{
    struct c2s_conn c = {0};
    setup_limits(0, 0, 10, 50);
    c2s_rate_init(&c);
    int closed_at = -1;
    for (int i = 0; i < 1000 && closed_at < 0; i++) {
        test_now += 0.01;                            /* 100/s against 10/s */
        if (c2s_rate_stanza(&c))
            closed_at = i;
    }
    assert_true(closed_at > 40 && closed_at < 70);
    assert_int_equal(test_errors, 1);
    assert_string_equal(test_cond, "policy-violation");
}

static void test_rate_steady_client_at_the_limit_is_never_closed(void **state)
{
    struct c2s_conn c = {0};
    setup_limits(0, 0, 10, 50);
    c2s_rate_init(&c);
    for (int i = 0; i < 5000; i++) {
        test_now += 0.1;
        assert_int_equal(c2s_rate_stanza(&c), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_reads_freely_within_burst),
        cmocka_unit_test(test_rate_throttles_for_the_debt_then_refills),
        cmocka_unit_test(test_rate_off_never_throttles),
        cmocka_unit_test(test_rate_stanza_burst_is_allowed),
        cmocka_unit_test(test_rate_sustained_stanza_flood_gets_policy_violation),
        cmocka_unit_test(test_rate_steady_client_at_the_limit_is_never_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
