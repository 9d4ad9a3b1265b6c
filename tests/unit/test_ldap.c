/* test_ldap.c — auth/ldap.c without a directory: what is refused before
 * any thread is asked, and that an unreachable directory answers -1 later
 * through the loop (never inside the call), also during the back-off.
 * The real directory is tests/integration/test_ldap.py (slapd). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "auth-int.h"

static char cfg_path[] = "/tmp/sb_test_ldap_XXXXXX";

struct answer {
    int calls, result;
};

static void on_answer(void *arg, int result)
{
    struct answer *a = arg;
    a->calls++;
    a->result = result;
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

/* Run the loop until a has an answer (or 10 s). */
static void wait_answer(struct ev_loop *loop, struct answer *a)
{
    ev_timer t;
    ev_timer_init(&t, on_timeout, 0.02, 0.02);
    ev_timer_start(loop, &t);
    for (int i = 0; i < 500 && !a->calls; i++)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
}

static int setup(void **state)
{
    int fd = mkstemp(cfg_path);
    const char *ini =
        "[domain.down.example]\nauth = ldap\n"
        "ldap_uri = ldap://127.0.0.1:1\nldap_base = dc=example\nldap_timeout = 1\n"
        "ldap_pool = 2\n"
        "[domain.nouri.example]\nauth = ldap\n";
    if (fd < 0 || write(fd, ini, strlen(ini)) != (ssize_t)strlen(ini))
        return -1;
    close(fd);
    return sb_config_load(cfg_path, "c2s", "c2s1") == SB_OK ? 0 : -1;
}

static int teardown(void **state)
{
    sb_config_free();
    unlink(cfg_path);
    return 0;
}

static void test_ldap_backend_is_read_per_domain(void **state)
{
    assert_int_equal(auth_backend_of("down.example"), AUTH_BE_LDAP);
    assert_int_equal(auth_backend_of("other.example"), AUTH_BE_INTERNAL);
}

static void test_ldap_refuses_what_it_cannot_ask(void **state)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct answer a = {0, 9};
    /* an empty password would be an unauthenticated bind */
    assert_int_equal(auth_ldap_check(loop, "down.example", "alice", "", on_answer, &a), SB_ERROR);
    assert_int_equal(auth_ldap_check(loop, "down.example", "", "pw", on_answer, &a), SB_ERROR);
    assert_int_equal(auth_ldap_check(loop, "nouri.example", "alice", "pw", on_answer, &a),
                     SB_ERROR);
    assert_int_equal(auth_ldap_check(NULL, "down.example", "alice", "pw", on_answer, &a),
                     SB_ERROR);
    assert_int_equal(a.calls, 0);
}

static void test_ldap_unreachable_answers_later_with_minus_one(void **state)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct answer a = {0, 9}, b = {0, 9};

    assert_int_equal(auth_ldap_check(loop, "down.example", "alice", "pw", on_answer, &a), SB_OK);
    assert_int_equal(a.calls, 0);             /* never inside */
    wait_answer(loop, &a);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.result, -1);
    /* in the back-off now: fails without trying, still through the loop */
    assert_int_equal(auth_ldap_check(loop, "down.example", "bob", "pw", on_answer, &b), SB_OK);
    assert_int_equal(b.calls, 0);
    wait_answer(loop, &b);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.result, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ldap_backend_is_read_per_domain),
        cmocka_unit_test(test_ldap_refuses_what_it_cannot_ask),
        cmocka_unit_test(test_ldap_unreachable_answers_later_with_minus_one),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
