/* test_sm_sub.c — the subscription state machine against the tables of
 * RFC 6121 Appendix A: every one of the nine states × four stanza types,
 * outbound (A.2) and inbound (A.3), with what the server must do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>

#include "../../sm/sub.c"

#define N 0
#define PO SM_SUB_PEND_OUT
#define PI SM_SUB_PEND_IN
#define T SM_SUB_TO
#define F SM_SUB_FROM
#define B (SM_SUB_TO | SM_SUB_FROM)

static const int states[9] = {N, N | PO, N | PI, N | PO | PI, T, T | PI, F, F | PO, B};

struct row {
    int from, to, actions;
};

static void check_table(int (*fn)(int, enum sm_sub_type, int *), enum sm_sub_type t,
                        const struct row *rows, const char *what)
{
    for (int i = 0; i < 9; i++) {
        int actions = -1;
        int got = fn(rows[i].from, t, &actions);
        if (got != rows[i].to || actions != rows[i].actions)
            fail_msg("%s in \"%s\": got \"%s\" actions=%#x, want \"%s\" actions=%#x", what,
                     sm_sub_state_name(rows[i].from), sm_sub_state_name(got), actions,
                     sm_sub_state_name(rows[i].to), rows[i].actions);
        assert_int_equal(rows[i].from, states[i]);
    }
}

#define R SM_SUB_A_ROUTE
#define D SM_SUB_A_DELIVER

/* A.2.1: subscribe is always routed; the state asks unless TO is held. */
static void test_outbound_subscribe_follows_table_a21(void **st)
{
    const struct row rows[9] = {
        {N, N | PO, R}, {N | PO, N | PO, R}, {N | PI, N | PO | PI, R},
        {N | PO | PI, N | PO | PI, R}, {T, T, R}, {T | PI, T | PI, R},
        {F, F | PO, R}, {F | PO, F | PO, R}, {B, B, R},
    };
    check_table(sm_sub_outbound, SM_SUB_T_SUBSCRIBE, rows, "outbound subscribe");
}

/* A.2.2: subscribed approves only a pending request; otherwise it is not
 * routed (no pre-approval). Approval sends the user's presence. */
static void test_outbound_subscribed_follows_table_a22(void **st)
{
    const int RP = R | SM_SUB_A_PRESENCE;
    const struct row rows[9] = {
        {N, N, 0}, {N | PO, N | PO, 0}, {N | PI, F, RP},
        {N | PO | PI, F | PO, RP}, {T, T, 0}, {T | PI, B, RP},
        {F, F, 0}, {F | PO, F | PO, 0}, {B, B, 0},
    };
    check_table(sm_sub_outbound, SM_SUB_T_SUBSCRIBED, rows, "outbound subscribed");
}

/* A.2.3 */
static void test_outbound_unsubscribe_follows_table_a23(void **st)
{
    const struct row rows[9] = {
        {N, N, R}, {N | PO, N, R}, {N | PI, N | PI, R},
        {N | PO | PI, N | PI, R}, {T, N, R}, {T | PI, N | PI, R},
        {F, F, R}, {F | PO, F, R}, {B, F, R},
    };
    check_table(sm_sub_outbound, SM_SUB_T_UNSUBSCRIBE, rows, "outbound unsubscribe");
}

/* A.2.4: cancelling FROM also sends unavailable to the contact. */
static void test_outbound_unsubscribed_follows_table_a24(void **st)
{
    const int RU = R | SM_SUB_A_UNAVAIL;
    const struct row rows[9] = {
        {N, N, R}, {N | PO, N | PO, R}, {N | PI, N, R},
        {N | PO | PI, N | PO, R}, {T, T, R}, {T | PI, T, R},
        {F, N, RU}, {F | PO, N | PO, RU}, {B, T, RU},
    };
    check_table(sm_sub_outbound, SM_SUB_T_UNSUBSCRIBED, rows, "outbound unsubscribed");
}

/* A.3.1: a new request is delivered; a repeated one is not; an approved
 * one is answered by the server. */
static void test_inbound_subscribe_follows_table_a31(void **st)
{
    const int A = SM_SUB_A_AUTOREPLY;
    const struct row rows[9] = {
        {N, N | PI, D}, {N | PO, N | PO | PI, D}, {N | PI, N | PI, 0},
        {N | PO | PI, N | PO | PI, 0}, {T, T | PI, D}, {T | PI, T | PI, 0},
        {F, F, A}, {F | PO, F | PO, A}, {B, B, A},
    };
    check_table(sm_sub_inbound, SM_SUB_T_SUBSCRIBE, rows, "inbound subscribe");
}

/* A.3.2: only an answer to the user's own request counts. */
static void test_inbound_subscribed_follows_table_a32(void **st)
{
    const struct row rows[9] = {
        {N, N, 0}, {N | PO, T, D}, {N | PI, N | PI, 0},
        {N | PO | PI, T | PI, D}, {T, T, 0}, {T | PI, T | PI, 0},
        {F, F, 0}, {F | PO, B, D}, {B, B, 0},
    };
    check_table(sm_sub_inbound, SM_SUB_T_SUBSCRIBED, rows, "inbound subscribed");
}

/* A.3.3: losing FROM means the contact gets unavailable from the user. */
static void test_inbound_unsubscribe_follows_table_a33(void **st)
{
    const int DU = D | SM_SUB_A_UNAVAIL;
    const struct row rows[9] = {
        {N, N, 0}, {N | PO, N | PO, 0}, {N | PI, N, D},
        {N | PO | PI, N | PO, D}, {T, T, 0}, {T | PI, T, D},
        {F, N, DU}, {F | PO, N | PO, DU}, {B, T, DU},
    };
    check_table(sm_sub_inbound, SM_SUB_T_UNSUBSCRIBE, rows, "inbound unsubscribe");
}

/* A.3.4 */
static void test_inbound_unsubscribed_follows_table_a34(void **st)
{
    const struct row rows[9] = {
        {N, N, 0}, {N | PO, N, D}, {N | PI, N | PI, 0},
        {N | PO | PI, N | PI, D}, {T, N, D}, {T | PI, N | PI, D},
        {F, F, 0}, {F | PO, F, D}, {B, F, D},
    };
    check_table(sm_sub_inbound, SM_SUB_T_UNSUBSCRIBED, rows, "inbound unsubscribed");
}

static void test_states_never_reach_invalid_combinations(void **st)
{
    for (int i = 0; i < 9; i++)
        for (int t = SM_SUB_T_SUBSCRIBE; t <= SM_SUB_T_UNSUBSCRIBED; t++) {
            int a;
            int o = sm_sub_outbound(states[i], (enum sm_sub_type)t, &a);
            int in = sm_sub_inbound(states[i], (enum sm_sub_type)t, &a);
            assert_string_not_equal(sm_sub_state_name(o), "invalid");
            assert_string_not_equal(sm_sub_state_name(in), "invalid");
        }
}

static void test_names_and_parsing_round_trip(void **st)
{
    assert_string_equal(sm_sub_name(T | PI), "to");
    assert_string_equal(sm_sub_name(F | PO), "from");
    assert_string_equal(sm_sub_name(B), "both");
    assert_string_equal(sm_sub_name(N | PO | PI), "none");
    assert_int_equal(sm_sub_parse("both"), B);
    assert_int_equal(sm_sub_parse("bogus"), N);
    assert_int_equal(sm_sub_type_parse("unsubscribed"), SM_SUB_T_UNSUBSCRIBED);
    assert_int_equal(sm_sub_type_parse("probe"), SM_SUB_T_NONE);
    assert_int_equal(sm_sub_type_parse(NULL), SM_SUB_T_NONE);
    int a = -1;
    assert_int_equal(sm_sub_outbound(B, SM_SUB_T_NONE, &a), B);
    assert_int_equal(a, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbound_subscribe_follows_table_a21),
        cmocka_unit_test(test_outbound_subscribed_follows_table_a22),
        cmocka_unit_test(test_outbound_unsubscribe_follows_table_a23),
        cmocka_unit_test(test_outbound_unsubscribed_follows_table_a24),
        cmocka_unit_test(test_inbound_subscribe_follows_table_a31),
        cmocka_unit_test(test_inbound_subscribed_follows_table_a32),
        cmocka_unit_test(test_inbound_unsubscribe_follows_table_a33),
        cmocka_unit_test(test_inbound_unsubscribed_follows_table_a34),
        cmocka_unit_test(test_states_never_reach_invalid_combinations),
        cmocka_unit_test(test_names_and_parsing_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
