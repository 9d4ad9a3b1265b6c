/* test_credcache.c — the front-ends' credential cache (auth/credcache.c):
 * only keys PostgreSQL gave are kept, a forget wins over a login whose
 * lookup began before it, the database's answers correct or drop an entry,
 * the table is bounded, and the Redis messages forget one account or all.
 * Lending to other front-ends: a peer lends only while its forget channel
 * is live, the asker takes the keys only when no forget came since the
 * lookup began or lately for that account, and a question every peer
 * answered "none" fails. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"
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
    auth_cache_set_peers(NULL, NULL, NULL);
    auth_cache_test_live(-1);
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

/* ---- lending between front-ends ------------------------------------------------ */

static char asked_id[32], asked_bare[64];
static int answers;
static struct auth_cred answer;
static int answer_null;

static int fake_ask(void *ud, const char *id, const char *bare)
{
    snprintf(asked_id, sizeof asked_id, "%s", id);
    snprintf(asked_bare, sizeof asked_bare, "%s", bare);
    return *(int *)ud;
}

static void on_answer(void *arg, const struct auth_cred *c)
{
    answers++;
    answer_null = c == NULL;
    if (c)
        answer = *c;
}

/* alice's entry as a peer would send it; the local cache emptied after. */
static void lent_body(const char *password, struct sb_buf *out)
{
    struct auth_cred c = cred_of(password);
    auth_cache_put("localhost", "alice", &c);
    assert_int_equal(auth_cache_lend("alice@localhost", out), 1);
    auth_cache_stop(NULL);          /* "another process": nothing here */
}

static int peers = 2;

static void ask_alice(void)
{
    answers = answer_null = 0;
    auth_cache_set_peers(EV_DEFAULT, fake_ask, &peers);
    assert_int_equal(auth_cache_ask("localhost", "alice", auth_cache_epoch(), on_answer, NULL),
                     SB_OK);
    assert_string_equal(asked_bare, "alice@localhost");
    assert_int_equal(answers, 0);
}

static void test_a_peer_lends_its_entry_and_the_asker_logs_in_with_it(void **state)
{
    struct sb_buf b = SB_BUF_INIT;
    struct auth_cred got;
    auth_cache_test_live(1);
    lent_body("secret", &b);
    assert_null(strstr(b.data, "secret"));          /* keys, never the password */
    ask_alice();
    auth_cache_lent(asked_id, "alice@localhost", "c2s2", NULL, 0);     /* one has none */
    assert_int_equal(answers, 0);
    auth_cache_lent(asked_id, "alice@localhost", "c2s3", b.data, b.len);
    assert_int_equal(answers, 1);
    assert_false(answer_null);
    assert_int_equal(answer.cached, 1);
    assert_true(scram_cred_check_password(&answer.sha256, "secret", 6));
    assert_false(scram_cred_check_password(&answer.sha256, "other", 5));
    assert_int_equal(auth_cache_get("localhost", "alice", &got), 1);    /* kept here too */
    auth_cache_lent(asked_id, "alice@localhost", "c2s3", b.data, b.len);   /* late: void */
    assert_int_equal(answers, 1);
    sb_buf_free(&b);
}

static void test_lent_keys_are_refused_after_a_forget(void **state)
{
    struct sb_buf b = SB_BUF_INIT;
    struct auth_cred got;
    auth_cache_test_live(1);
    lent_body("old", &b);
    ask_alice();
    auth_cache_forget("alice@localhost");           /* changed while the question flew */
    auth_cache_lent(asked_id, "alice@localhost", "c2s2", b.data, b.len);
    auth_cache_lent(asked_id, "alice@localhost", "c2s3", b.data, b.len);
    assert_int_equal(answers, 1);
    assert_true(answer_null);
    assert_int_equal(auth_cache_get("localhost", "alice", &got), 0);
    /* and lately forgotten: not even asked (a peer may read the forget later) */
    auth_cache_set_peers(EV_DEFAULT, fake_ask, &peers);
    assert_int_equal(auth_cache_ask("localhost", "alice", auth_cache_epoch(), on_answer, NULL),
                     SB_ERROR);
    sb_buf_free(&b);
}

static void test_nobody_lends_or_borrows_while_the_forget_channel_is_down(void **state)
{
    struct sb_buf b = SB_BUF_INIT;
    struct auth_cred c = cred_of("x");
    auth_cache_put("localhost", "alice", &c);
    auth_cache_test_live(0);
    assert_int_equal(auth_cache_lend("alice@localhost", &b), 0);
    auth_cache_set_peers(EV_DEFAULT, fake_ask, &peers);
    assert_int_equal(auth_cache_ask("localhost", "bob", auth_cache_epoch(), on_answer, NULL),
                     SB_ERROR);
    auth_cache_test_live(1);
    assert_int_equal(auth_cache_lend("bob@localhost", &b), 0);         /* not here */
    sb_buf_free(&b);
}

static void test_a_reconnection_forgets_all_but_lets_peers_lend_at_once(void **state)
{
    struct sb_buf b = SB_BUF_INIT;
    struct auth_cred c = cred_of("x"), got;
    auth_cache_test_live(1);
    lent_body("secret", &b);
    auth_cache_put("localhost", "bob", &c);
    auth_cache_test_notify(NULL, 0);            /* Redis was away: all forgotten */
    assert_int_equal(auth_cache_get("localhost", "bob", &got), 0);
    ask_alice();                                /* and the peers are asked */
    auth_cache_lent(asked_id, "alice@localhost", "c2s2", b.data, b.len);
    assert_int_equal(answers, 1);
    assert_false(answer_null);
    auth_cache_test_notify("forget *", 8);      /* a forget-all message: a window */
    auth_cache_set_peers(EV_DEFAULT, fake_ask, &peers);
    assert_int_equal(auth_cache_ask("localhost", "alice", auth_cache_epoch(), on_answer, NULL),
                     SB_ERROR);
    sb_buf_free(&b);
}

static void test_every_peer_without_it_fails_the_login(void **state)
{
    int none = 0;
    auth_cache_test_live(1);
    ask_alice();
    auth_cache_lent(asked_id, "bob@localhost", "c2s2", NULL, 0);       /* other account */
    auth_cache_lent(asked_id, "alice@localhost", "c2s2", NULL, 0);
    assert_int_equal(answers, 0);
    auth_cache_lent(asked_id, "alice@localhost", "c2s3", "life 5\nsha256 bad\n", 18);
    assert_int_equal(answers, 1);
    assert_true(answer_null);
    auth_cache_set_peers(EV_DEFAULT, fake_ask, &none);                  /* no peer at all */
    assert_int_equal(auth_cache_ask("localhost", "alice", auth_cache_epoch(), on_answer, NULL),
                     SB_ERROR);
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
        cmocka_unit_test_teardown(test_a_peer_lends_its_entry_and_the_asker_logs_in_with_it,
                                  teardown),
        cmocka_unit_test_teardown(test_lent_keys_are_refused_after_a_forget, teardown),
        cmocka_unit_test_teardown(test_nobody_lends_or_borrows_while_the_forget_channel_is_down,
                                  teardown),
        cmocka_unit_test_teardown(test_a_reconnection_forgets_all_but_lets_peers_lend_at_once,
                                  teardown),
        cmocka_unit_test_teardown(test_every_peer_without_it_fails_the_login, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
