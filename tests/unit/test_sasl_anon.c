/* test_sasl_anon.c — SASL ANONYMOUS (RFC 4505) in auth/: offered only on
 * an anonymous domain and alone there, a random node claimed through the
 * store's claim function (collisions retried, outages failing with
 * temporary-auth-failure), and freeing a session while a claim is pending. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "log.h"
#include "auth-int.h"

struct claims {
    int calls;
    int answers[4];              /* what the n-th claim answers; 2 = hold it */
    char nodes[4][64];
    auth_claim_cb held_cb;
    void *held_arg;
};

static sb_rc fake_claim(void *ud, const char *domain, const char *node, auth_claim_cb cb,
                        void *arg)
{
    struct claims *c = ud;
    int i = c->calls++;
    snprintf(c->nodes[i % 4], sizeof c->nodes[0], "%s", node);
    if (c->answers[i % 4] == 2) {
        c->held_cb = cb;
        c->held_arg = arg;
        return SB_OK;
    }
    if (c->answers[i % 4] == 3)
        return SB_ERROR;
    cb(arg, c->answers[i % 4]);
    return SB_OK;
}

static sb_rc no_lookup(void *ud, const char *domain, const char *username, auth_store_cb cb,
                       void *arg)
{
    return SB_ERROR;
}

struct capture {
    int calls;
    enum sasl_status status;
    int anonymous;
    char condition[64];
    char username[64];
};

static void on_result(void *ud, const struct sasl_result *r)
{
    struct capture *c = ud;
    c->calls++;
    c->status = r->status;
    c->anonymous = r->anonymous;
    snprintf(c->condition, sizeof c->condition, "%s", r->condition ? r->condition : "");
    snprintf(c->username, sizeof c->username, "%s", r->username ? r->username : "");
}

static struct sasl_opts anon_opts = {"anon.localhost", 0, 0, 1, NULL};
static struct sasl_opts plain_opts = {"localhost", 1, 0, 0, NULL};

static void test_anonymous_is_the_only_mechanism_of_an_anonymous_domain(void **st)
{
    assert_string_equal(sasl_mechanisms(&anon_opts), "ANONYMOUS");
    assert_null(strstr(sasl_mechanisms(&plain_opts), "ANONYMOUS"));
}

static void test_anonymous_login_gets_a_claimed_random_node(void **st)
{
    struct claims cl = {.answers = {1}};
    struct auth_store *s = auth_store_new_fn(no_lookup, NULL);
    auth_store_set_claim(s, fake_claim, &cl);
    struct capture cap = {0};
    struct sasl_sess *x = sasl_new(s, &anon_opts, on_result, &cap);
    sasl_start(x, "ANONYMOUS", "");              /* no trace: no challenge either */
    assert_int_equal(cap.calls, 1);
    assert_int_equal(cap.status, SASL_SUCCESS);
    assert_true(cap.anonymous);
    assert_int_equal(strlen(cap.username), 20);
    assert_string_equal(cap.username, cl.nodes[0]);
    sasl_free(x);
    auth_store_free(s);
}

static void test_anonymous_claim_collision_retries_with_a_new_node(void **st)
{
    struct claims cl = {.answers = {0, 1}};
    struct auth_store *s = auth_store_new_fn(no_lookup, NULL);
    auth_store_set_claim(s, fake_claim, &cl);
    struct capture cap = {0};
    struct sasl_sess *x = sasl_new(s, &anon_opts, on_result, &cap);
    sasl_start(x, "ANONYMOUS", "dHJhY2U=");     /* trace "trace" */
    assert_int_equal(cl.calls, 2);
    assert_string_not_equal(cl.nodes[0], cl.nodes[1]);
    assert_int_equal(cap.status, SASL_SUCCESS);
    assert_string_equal(cap.username, cl.nodes[1]);
    sasl_free(x);
    auth_store_free(s);
}

static void test_anonymous_claim_outage_is_temporary_auth_failure(void **st)
{
    struct claims cl = {.answers = {-1}};
    struct auth_store *s = auth_store_new_fn(no_lookup, NULL);
    auth_store_set_claim(s, fake_claim, &cl);
    struct capture cap = {0};
    struct sasl_sess *x = sasl_new(s, &anon_opts, on_result, &cap);
    sasl_start(x, "ANONYMOUS", "");
    assert_int_equal(cap.status, SASL_FAILURE);
    assert_string_equal(cap.condition, "temporary-auth-failure");
    cl.calls = 0;
    cl.answers[0] = 3;                            /* cannot even ask */
    sasl_start(x, "ANONYMOUS", "");
    assert_string_equal(cap.condition, "temporary-auth-failure");
    cl.calls = 0;
    cl.answers[0] = cl.answers[1] = cl.answers[2] = 0;   /* always taken */
    sasl_start(x, "ANONYMOUS", "");
    assert_int_equal(cl.calls, 3);
    assert_string_equal(cap.condition, "temporary-auth-failure");
    sasl_free(x);
    auth_store_free(s);
}

static void test_anonymous_is_refused_elsewhere_and_others_on_anonymous_domains(void **st)
{
    struct auth_store *s = auth_store_new_fn(no_lookup, NULL);
    struct capture cap = {0};
    struct sasl_sess *x = sasl_new(s, &plain_opts, on_result, &cap);
    sasl_start(x, "ANONYMOUS", "");
    assert_string_equal(cap.condition, "invalid-mechanism");
    sasl_free(x);
    x = sasl_new(s, &anon_opts, on_result, &cap);
    sasl_start(x, "SCRAM-SHA-256", "");
    assert_string_equal(cap.condition, "invalid-mechanism");
    sasl_start(x, "ANONYMOUS", "%%%");
    assert_string_equal(cap.condition, "incorrect-encoding");
    sasl_free(x);
    auth_store_free(s);
}

static void test_free_during_a_pending_claim_drops_the_answer(void **st)
{
    struct claims cl = {.answers = {2}};
    struct auth_store *s = auth_store_new_fn(no_lookup, NULL);
    auth_store_set_claim(s, fake_claim, &cl);
    struct capture cap = {0};
    struct sasl_sess *x = sasl_new(s, &anon_opts, on_result, &cap);
    sasl_start(x, "ANONYMOUS", "");
    assert_int_equal(cap.calls, 0);
    sasl_free(x);
    cl.held_cb(cl.held_arg, 1);                   /* arrives after the session is gone */
    assert_int_equal(cap.calls, 0);
    auth_store_free(s);
}

int main(void)
{
    sb_log_init("test", SB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anonymous_is_the_only_mechanism_of_an_anonymous_domain),
        cmocka_unit_test(test_anonymous_login_gets_a_claimed_random_node),
        cmocka_unit_test(test_anonymous_claim_collision_retries_with_a_new_node),
        cmocka_unit_test(test_anonymous_claim_outage_is_temporary_auth_failure),
        cmocka_unit_test(test_anonymous_is_refused_elsewhere_and_others_on_anonymous_domains),
        cmocka_unit_test(test_free_during_a_pending_claim_drops_the_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
