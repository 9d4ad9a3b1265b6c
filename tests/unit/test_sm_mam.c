/* test_sm_mam.c — XEP-0313 query parsing (form fields, XEP-0059 RSM,
 * flip-page), XEP-0082 times and the archiving preferences rule
 * (common/mam.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/mam.c"

static struct xml_doc *doc;

static const struct xml_node *parse(const char *s)
{
    xml_doc_free(doc);
    doc = xml_doc_parse(s, strlen(s), NULL, NULL);
    assert_non_null(doc);
    return doc->root;
}

#define FORM(fields) \
    "<query xmlns='urn:xmpp:mam:2' queryid='f27'><x xmlns='jabber:x:data' type='submit'>" \
    "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>" fields "</x>"

static void expect_error(const char *xml, const char *cond)
{
    struct mam_query q;
    const char *c = NULL, *why = NULL;
    assert_int_equal(mam_query_parse(parse(xml), &q, &c, &why), SB_ERROR);
    assert_string_equal(c, cond);
    assert_non_null(why);
    mam_query_free(&q);
}

static void test_form_fields_and_rsm_are_parsed(void **state)
{
    struct mam_query q;
    const char *c, *why;
    const char *xml = FORM(
        "<field var='with'><value>Juliet@Capulet.lit/Balcony</value></field>"
        "<field var='start'><value>2010-06-07T00:00:00Z</value></field>"
        "<field var='end'><value>2010-07-07T13:23:54.5+02:00</value></field>"
        "<field var='after-id'><value>abc</value></field>"
        "<field var='ids'><value>x1</value><value>x2</value></field>"
        "<field var='{urn:xmpp:fulltext:0}fulltext'><value>привет</value></field>")
        "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set>"
        "<flip-page/></query>";
    assert_int_equal(mam_query_parse(parse(xml), &q, &c, &why), SB_OK);
    assert_string_equal(q.queryid, "f27");
    assert_string_equal(q.with, "juliet@capulet.lit/Balcony");
    assert_true(q.has_start && q.has_end);
    assert_true(q.start == 1275868800.0);
    assert_true(q.end == 1278509034.5 - 7200);
    assert_string_equal(q.after_id, "abc");
    assert_int_equal(q.nids, 2);
    assert_string_equal(q.ids[1], "x2");
    assert_string_equal(q.fulltext, "привет");
    assert_int_equal(q.max, 10);
    assert_non_null(q.rsm_before);
    assert_string_equal(q.rsm_before, "");          /* empty: the last page */
    assert_null(q.rsm_after);
    assert_true(q.flip);
    mam_query_free(&q);
}

static void test_no_form_means_everything_with_the_default_page(void **state)
{
    struct mam_query q;
    const char *c, *why;
    assert_int_equal(mam_query_parse(parse("<query xmlns='urn:xmpp:mam:2'/>"), &q, &c, &why),
                     SB_OK);
    assert_null(q.queryid);
    assert_null(q.with);
    assert_int_equal(q.max, MAM_PAGE_DEFAULT);
    assert_null(q.rsm_before);
    mam_query_free(&q);
}

static void test_huge_max_is_capped(void **state)
{
    struct mam_query q;
    const char *c, *why;
    assert_int_equal(mam_query_parse(parse("<query xmlns='urn:xmpp:mam:2'><set xmlns="
                                              "'http://jabber.org/protocol/rsm'><max>99999999"
                                              "</max></set></query>"), &q, &c, &why), SB_OK);
    assert_int_equal(q.max, MAM_PAGE_MAX);
    mam_query_free(&q);
}

static void test_bad_forms_are_refused_with_the_right_condition(void **state)
{
    expect_error(FORM("<field var='colour'><value>red</value></field>") "</query>",
                 "feature-not-implemented");
    expect_error(FORM("<field var='start'><value>2010-13-07T00:00:00Z</value></field>")
                 "</query>", "bad-request");
    expect_error(FORM("<field var='start'><value>yesterday</value></field>") "</query>",
                 "bad-request");
    expect_error(FORM("<field var='with'><value>@nowhere</value></field>") "</query>",
                 "bad-request");
    expect_error("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>"
                 "<field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>",
                 "bad-request");
    expect_error("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>"
                 "<field var='with'><value>a@b</value></field></x></query>", "bad-request");
    expect_error("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
                 "<max>-1</max></set></query>", "bad-request");
    expect_error("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
                 "<max>5x</max></set></query>", "bad-request");
    expect_error("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
                 "<after/></set></query>", "bad-request");
    expect_error("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
                 "<index>3</index></set></query>", "feature-not-implemented");
    expect_error("<query xmlns='urn:xmpp:mam:2'><bogus/></query>", "bad-request");
}

static void test_times_round_trip(void **state)
{
    double t;
    char out[32];
    assert_int_equal(mam_parse_time("1970-01-01T00:00:01.250Z", &t), SB_OK);
    assert_true(t == 1.25);
    mam_format_time(t, out);
    assert_string_equal(out, "1970-01-01T00:00:01.250Z");
    assert_int_equal(mam_parse_time("1970-01-01T01:00:00-01:00", &t), SB_OK);
    assert_true(t == 7200);
    assert_int_equal(mam_parse_time("1970-01-01T00:00:00", &t), SB_ERROR);   /* no TZ */
    assert_int_equal(mam_parse_time("1970-01-01T00:00:00Zjunk", &t), SB_ERROR);
    assert_int_equal(mam_parse_time("1970-01-01T00:00:00.Z", &t), SB_ERROR);
}

static void test_prefs_never_beats_always_beats_default(void **state)
{
    struct mam_prefs p = {0};
    assert_int_equal(mam_wanted(&p, MAM_ALWAYS, "a@x", 0), 1);
    assert_int_equal(mam_wanted(&p, MAM_NEVER, "a@x", 0), 0);
    assert_int_equal(mam_wanted(&p, MAM_ROSTER, "a@x", -1), -1);
    assert_int_equal(mam_wanted(&p, MAM_ROSTER, "a@x", 1), 1);
    p.mode = MAM_NEVER;
    assert_int_equal(mam_prefs_add(&p, 1, "a@x"), SB_OK);
    assert_int_equal(mam_prefs_add(&p, 1, "a@x"), SB_OK);   /* once */
    assert_int_equal(p.nalways, 1);
    assert_int_equal(mam_wanted(&p, MAM_ALWAYS, "a@x", 0), 1);
    assert_int_equal(mam_wanted(&p, MAM_ALWAYS, "b@x", 0), 0);
    assert_int_equal(mam_prefs_add(&p, 0, "a@x"), SB_OK);
    assert_int_equal(mam_wanted(&p, MAM_ALWAYS, "a@x", 1), 0);
    assert_int_equal(mam_mode_parse("roster"), MAM_ROSTER);
    assert_int_equal(mam_mode_parse("sometimes"), MAM_UNSET);
    mam_prefs_clear(&p);
    assert_int_equal(p.nalways + p.nnever, 0);
}

/* The rows of one INSERT: PostgreSQL array literals, quotes escaped. */
static void test_batch_rows_become_array_literals(void **state)
{
    struct mam_batch b = {0};
    const char *p[MAM_INSERT_NPARAMS];
    mam_batch_row(&b, "conference.x", "room", "s1", "room@conference.x", "nick", 0, 1.5,
                  "<message a='\"'/>", 16, "hi", 2, 1);
    mam_batch_row(&b, "x", "u", "s2", "v@x", "", 1, 2, "<m/>", 4, NULL, 0, 0);
    assert_int_equal(b.n, 2);
    assert_int_equal(mam_batch_params(&b, "simple", "always", p), SB_OK);
    assert_string_equal(p[MAM_C_DOM], "{\"conference.x\",\"x\"}");
    assert_string_equal(p[MAM_C_WRES], "{\"nick\",\"\"}");
    assert_string_equal(p[MAM_C_STANZA], "{\"<message a='\\\"'/>\",\"<m/>\"}");
    assert_string_equal(p[MAM_C_TS], "{\"1.500\",\"2.000\"}");
    assert_string_equal(p[MAM_C_CHECKED], "{\"t\",\"f\"}");
    assert_string_equal(p[10], "simple");
    /* asked twice (a retry): the arrays are closed once */
    assert_int_equal(mam_batch_params(&b, "simple", "always", p), SB_OK);
    assert_string_equal(p[MAM_C_CHECKED], "{\"t\",\"f\"}");
    mam_batch_free(&b);
}

/* A room's query: with room/nick filters on the resource too. */
static void test_query_sql_of_a_room_archive(void **state)
{
    struct mam_query m;
    const char *cond, *why;
    assert_int_equal(mam_query_parse(parse(FORM("<field var='with'><value>r@c.x/nick</value>"
                                                "</field>") "</query>"), &m, &cond, &why), SB_OK);
    struct mam_sql s;
    mam_sql_build(&s, &m, "c.x", "r", "simple", 0);
    assert_non_null(s.sql.data);
    assert_string_equal(s.p[0], "c.x");
    assert_string_equal(s.p[1], "r");
    assert_string_equal(s.p[2], "r@c.x");
    assert_string_equal(s.p[3], "nick");
    assert_non_null(strstr(s.sql.data, "with_res = $4"));
    assert_non_null(strstr(s.sql.data, "ORDER BY id ASC"));
    mam_sql_free(&s);
    mam_query_free(&m);
}

static int teardown(void **state)
{
    xml_doc_free(doc);
    doc = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_fields_and_rsm_are_parsed),
        cmocka_unit_test(test_no_form_means_everything_with_the_default_page),
        cmocka_unit_test(test_huge_max_is_capped),
        cmocka_unit_test(test_bad_forms_are_refused_with_the_right_condition),
        cmocka_unit_test(test_times_round_trip),
        cmocka_unit_test(test_prefs_never_beats_always_beats_default),
        cmocka_unit_test(test_batch_rows_become_array_literals),
        cmocka_unit_test(test_query_sql_of_a_room_archive),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
