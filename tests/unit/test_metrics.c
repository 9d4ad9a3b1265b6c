/* test_metrics.c — the registry and the text format: families share one
 * HELP/TYPE, labels stay as registered, histograms are cumulative with
 * +Inf = count, functions are read at render time, stanza kinds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "buf.h"
#include "metrics.h"

SB_COUNTER(t_a, "sb_test_things_total", "kind=\"a\"", "Things seen")
SB_COUNTER(t_b, "sb_test_things_total", "kind=\"b\"", "Things seen")
SB_GAUGE(t_g, "sb_test_level", "", "A level")
SB_HISTOGRAM(t_h, "sb_test_seconds", "op=\"x\"", "Durations")
static double t_fn_value = 42;
static double t_fn(void)
{
    return t_fn_value;
}
SB_GAUGE_FN(t_f, "sb_test_read", "", "Read at scrape time", t_fn)

static char *render(void)
{
    static struct sb_buf b;
    sb_buf_reset(&b);
    assert_int_equal(sb_metrics_render(&b), SB_OK);
    return b.data;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void test_metrics_family_has_one_help_and_type_and_every_series(void **st)
{
    sb_metric_inc(&t_a);
    sb_metric_add(&t_b, 3);
    const char *out = render();
    assert_int_equal(count(out, "# HELP sb_test_things_total Things seen\n"), 1);
    assert_int_equal(count(out, "# TYPE sb_test_things_total counter\n"), 1);
    assert_non_null(strstr(out, "sb_test_things_total{kind=\"a\"} 1\n"));
    assert_non_null(strstr(out, "sb_test_things_total{kind=\"b\"} 3\n"));
    /* the series follow their HELP/TYPE directly */
    const char *type = strstr(out, "# TYPE sb_test_things_total counter\n");
    assert_ptr_equal(strstr(out, "sb_test_things_total{kind=\"a\"}"),
                     type + strlen("# TYPE sb_test_things_total counter\n"));
}

static void test_metrics_gauge_goes_both_ways_and_has_no_braces_without_labels(void **st)
{
    sb_metric_set(&t_g, 5);
    sb_metric_dec(&t_g);
    assert_non_null(strstr(render(), "\nsb_test_level 4\n"));
}

static void test_metrics_histogram_buckets_are_cumulative(void **st)
{
    sb_metric_observe(&t_h, 0.00005);   /* first bucket */
    sb_metric_observe(&t_h, 0.003);     /* le=0.005 */
    sb_metric_observe(&t_h, 100);       /* only +Inf */
    const char *out = render();
    assert_non_null(strstr(out, "# TYPE sb_test_seconds histogram\n"));
    assert_non_null(strstr(out, "sb_test_seconds_bucket{op=\"x\",le=\"0.0001\"} 1\n"));
    assert_non_null(strstr(out, "sb_test_seconds_bucket{op=\"x\",le=\"0.0025\"} 1\n"));
    assert_non_null(strstr(out, "sb_test_seconds_bucket{op=\"x\",le=\"0.005\"} 2\n"));
    assert_non_null(strstr(out, "sb_test_seconds_bucket{op=\"x\",le=\"5\"} 2\n"));
    assert_non_null(strstr(out, "sb_test_seconds_bucket{op=\"x\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(out, "sb_test_seconds_count{op=\"x\"} 3\n"));
    assert_non_null(strstr(out, "sb_test_seconds_sum{op=\"x\"} 100.00305"));
}

static void test_metrics_function_is_read_at_render_time(void **st)
{
    t_fn_value = 7;
    assert_non_null(strstr(render(), "\nsb_test_read 7\n"));
    t_fn_value = 8;
    assert_non_null(strstr(render(), "\nsb_test_read 8\n"));
}

static void test_metrics_process_metrics_are_exported(void **st)
{
    const char *out = render();
    assert_non_null(strstr(out, "# TYPE sb_process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(out, "# TYPE sb_process_resident_memory_bytes gauge\n"));
    assert_null(strstr(out, "\nsb_process_resident_memory_bytes 0\n"));
}

static void test_metrics_stanza_kind_from_name_and_xml(void **st)
{
    assert_int_equal(sb_stanza_kind_of("message"), SB_ST_MESSAGE);
    assert_int_equal(sb_stanza_kind_of("presence"), SB_ST_PRESENCE);
    assert_int_equal(sb_stanza_kind_of("iq"), SB_ST_IQ);
    assert_int_equal(sb_stanza_kind_of("stream:features"), SB_ST_OTHER);
    assert_int_equal(sb_stanza_kind_of(NULL), SB_ST_OTHER);
    const char *m = "<message to='a'/>", *p = "<presence/>", *i = "<iq>", *x = "<iqx/>";
    assert_int_equal(sb_stanza_kind_of_xml(m, strlen(m)), SB_ST_MESSAGE);
    assert_int_equal(sb_stanza_kind_of_xml(p, strlen(p)), SB_ST_PRESENCE);
    assert_int_equal(sb_stanza_kind_of_xml(i, strlen(i)), SB_ST_IQ);
    assert_int_equal(sb_stanza_kind_of_xml(x, strlen(x)), SB_ST_OTHER);
    assert_int_equal(sb_stanza_kind_of_xml("<iq", 3), SB_ST_OTHER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_family_has_one_help_and_type_and_every_series),
        cmocka_unit_test(test_metrics_gauge_goes_both_ways_and_has_no_braces_without_labels),
        cmocka_unit_test(test_metrics_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_metrics_function_is_read_at_render_time),
        cmocka_unit_test(test_metrics_process_metrics_are_exported),
        cmocka_unit_test(test_metrics_stanza_kind_from_name_and_xml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
