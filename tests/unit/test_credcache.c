/* test_credcache.c — the front-ends' credential cache (auth/credcache.c):
 * only keys PostgreSQL gave are kept, a forget wins over a login whose
 * lookup began before it, the database's answers correct or drop an entry,
 * the table is bounded, and the Redis messages forget one account or all. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "auth-int.h"

static struct auth_cred cred_of(const char *password)
{
    struct auth_cred c;
    memset(&c, 0, sizeof c);
    c.found = c.has_sha256 = 1;
    scram_cred_make(&c.sha256, SCRAM_SHA256, password, 64);
    c.epoch = auth_cache_epoch();
    return c;
}

static int teardown(void **state)
{
    auth_cache_stop(NULL);
    unsetenv("SB_AUTH_CREDENTIAL_CACHE_S");
    unsetenv("SB_AUTH_CREDENTIAL_CACHE_MAX");
    return 0;
}

static void test_cache_keeps_a_login_and_answers_for_it(void **state)
{
    struct auth_cred c = cred_of("secret"), got;
    assert_int_equal(auth_cache_get("localhost", "alice", &got), 0);
    auth_cache_put("localhost", "alice", &c);
    assert_int_equal(auth_cache_get("localhost", "alice", &got), 1);
    assert_int_equal(got.cached, 1);
    assert_true(scram_cred_check_password(&got.sha256, "secret", 6));
    assert_false(scram_cred_check_password(&got.sha256, "other", 5));
    assert_int_equal(auth_cache_get("localhost", "bob", &got), 0);
    assert_int_equal(auth_cache_get("example.org", "alice", &got), 0);
}

static void test_cache_never_keeps_unknown_accounts(void **state)
{
    struct auth_cred none, got;
    memset(&none, 0, sizeof none);
    none.epoch = auth_cache_epoch();
    auth_cache_put("localhost", "ghost", &none);
    assert_int_equal(auth_cache_get("localhost", "ghost", &got), 0);
}

static void test_forget_wins_over_a_login_that_started_before(void **state)
{
    struct auth_cred old = cred_of("old"), got;   /* looked up before the change */
    auth_cache_forget("alice@localhost");          /* password changed meanwhile */
    auth_cache_put("localhost", "alice", &old);    /* the login ends: too late */
    assert_int_equal(auth_cache_get("localhost", "alice", &got), 0);
}

static void test_forget_one_account_or_all(void **state)
{
    struct auth_cred a = cred_of("a"), got;
    auth_cache_put("localhost", "alice", &a);
    a = cred_of("b");
    auth_cache_put("localhost", "bob", &a);
    auth_cache_forget("alice@localhost");
    assert_int_equal(auth_cache_get("localhost", "alice", &got), 0);
    assert_int_equal(auth_cache_get("localhost", "bob", &got), 1);
    auth_cache_forget("*");
    assert_int_equal(auth_cache_get("localhost", "bob", &got), 0);
    assert_int_equal(auth_cache_count(), 0);
}

static void test_database_answers_correct_the_entry(void **state)
{
    struct auth_cred old = cred_of("old"), now = cred_of("new"), none, got;
    auth_cache_put("localhost", "alice", &old);
    auth_cache_refresh("localhost", "alice", &now);    /* changed behind our back */
    assert_int_equal(auth_cache_get("localhost", "alice", &got), 1);
    assert_false(scram_cred_check_password(&got.sha256, "old", 3));
    assert_true(scram_cred_check_password(&got.sha256, "new", 3));
    memset(&none, 0, sizeof none);
    none.epoch = auth_cache_epoch();
    auth_cache_refresh("localhost", "alice", &none);   /* the account is gone */
    assert_int_equal(auth_cache_get("localhost", "alice", &got), 0);
    auth_cache_refresh("localhost", "carol", &now);    /* never cached: not added */
    assert_int_equal(auth_cache_get("localhost", "carol", &got), 0);
}

static void test_cache_is_bounded_and_can_be_off(void **state)
{
    char name[16];
    struct auth_cred c = cred_of("x"), got;
    setenv("SB_AUTH_CREDENTIAL_CACHE_MAX", "3", 1);
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "u%d", i);
        auth_cache_put("localhost", name, &c);
    }
    assert_int_equal(auth_cache_count(), 3);
    assert_int_equal(auth_cache_get("localhost", "u0", &got), 0);   /* oldest went */
    assert_int_equal(auth_cache_get("localhost", "u4", &got), 1);
    setenv("SB_AUTH_CREDENTIAL_CACHE_S", "0", 1);
    auth_cache_put("localhost", "off", &c);
    assert_int_equal(auth_cache_get("localhost", "off", &got), 0);
}

int main(void)
{
    sb_log_init("test", SB_LOG_ERROR);
    sb_config_load(NULL, "c2s", "c2s1");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cache_keeps_a_login_and_answers_for_it, teardown),
        cmocka_unit_test_teardown(test_cache_never_keeps_unknown_accounts, teardown),
        cmocka_unit_test_teardown(test_forget_wins_over_a_login_that_started_before, teardown),
        cmocka_unit_test_teardown(test_forget_one_account_or_all, teardown),
        cmocka_unit_test_teardown(test_database_answers_correct_the_entry, teardown),
        cmocka_unit_test_teardown(test_cache_is_bounded_and_can_be_off, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
