/* test_router.c — the router's registry and rendezvous hashing: stable
 * ownership when an sm leaves, even spread, HELLO parsing, expiry and the
 * ROUTE_JID decision. router.c is pure, so it is compiled in directly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "../../common/route.c"

static void hello(struct rt_registry *r, const char *name, const char *body, double now)
{
    assert_true(rt_reg_hello(r, name, strlen(name), body, strlen(body), now, NULL) >= 0);
}

static void three_sms(struct rt_registry *r)
{
    rt_reg_init(r);
    hello(r, "sm1", "kind=sm pid=11 domains=localhost,anon.localhost sessions=0", 0);
    hello(r, "sm2", "kind=sm pid=12 domains=localhost,anon.localhost sessions=0", 0);
    hello(r, "sm3", "kind=sm pid=13 domains=localhost,anon.localhost sessions=0", 0);
}

static void key_of(char *out, size_t cap, int i)
{
    snprintf(out, cap, "user%d@localhost", i);
}

static void test_router_score_is_fnv1a64_of_instance_newline_key(void **st)
{
    /* fnv1a64("") is the offset basis; check one known vector too. */
    assert_true(rt_fnv1a64(RT_FNV_OFFSET, "", 0) == 0xcbf29ce484222325ULL);
    assert_true(rt_fnv1a64(RT_FNV_OFFSET, "a", 1) == 0xaf63dc4c8601ec8cULL);
    const char *whole = "sm1\nalice@localhost";
    assert_true(rt_score("sm1", "alice@localhost", 15) ==
                rt_fnv1a64(RT_FNV_OFFSET, whole, strlen(whole)));
}

static void test_router_removing_one_sm_moves_only_its_keys(void **st)
{
    struct rt_registry r;
    three_sms(&r);
    char owner[3000][ENV_NAME_MAX + 1], key[64];
    for (int i = 0; i < 3000; i++) {
        key_of(key, sizeof key, i);
        strcpy(owner[i], rt_pick(&r, "sm", key, strlen(key))->name);
    }
    rt_reg_remove(&r, 1);    /* sm2 leaves */
    int moved = 0;
    for (int i = 0; i < 3000; i++) {
        key_of(key, sizeof key, i);
        const char *now = rt_pick(&r, "sm", key, strlen(key))->name;
        if (strcmp(owner[i], "sm2") == 0) {
            assert_string_not_equal(now, "sm2");
            moved++;
        } else {
            assert_string_equal(now, owner[i]);
        }
    }
    assert_true(moved > 0);
    rt_reg_free(&r);
}

static void test_router_spreads_3000_keys_evenly_over_3_sms(void **st)
{
    struct rt_registry r;
    three_sms(&r);
    int count[3] = {0, 0, 0};
    char key[64];
    for (int i = 0; i < 3000; i++) {
        key_of(key, sizeof key, i);
        const struct rt_inst *in = rt_pick(&r, "sm", key, strlen(key));
        count[in->name[2] - '1']++;
    }
    for (int i = 0; i < 3; i++) {
        print_message("sm%d owns %d keys\n", i + 1, count[i]);
        assert_in_range(count[i], 800, 1200);
    }
    rt_reg_free(&r);
}

static void test_router_hello_registers_and_detects_changes(void **st)
{
    struct rt_registry r;
    rt_reg_init(&r);
    const char *b = "kind=c2s pid=5 domains= sessions=3";
    char old[RT_KIND_MAX + 1];
    assert_int_equal(rt_reg_hello(&r, "c2s1", 4, b, strlen(b), 1.0, old), RT_CH_NEW);
    assert_int_equal(rt_reg_hello(&r, "c2s1", 4, b, strlen(b), 2.0, old), 0);
    const char *b2 = "kind=c2s pid=6 domains=x sessions=0";
    assert_int_equal(rt_reg_hello(&r, "c2s1", 4, b2, strlen(b2), 3.0, old),
                     RT_CH_RESTART | RT_CH_DOMAINS);
    assert_string_equal(old, "c2s");
    struct rt_inst *in = rt_reg_find(&r, "c2s1", 4);
    assert_non_null(in);
    assert_int_equal(in->pid, 6);
    assert_string_equal(in->domains, "x");
    rt_reg_free(&r);
}

static void test_router_hello_rejects_bad_name_or_missing_kind(void **st)
{
    struct rt_registry r;
    rt_reg_init(&r);
    const char *b = "kind=c2s pid=5";
    assert_int_equal(rt_reg_hello(&r, "", 0, b, strlen(b), 0, NULL), -1);
    assert_int_equal(rt_reg_hello(&r, "a b", 3, b, strlen(b), 0, NULL), -1);
    assert_int_equal(rt_reg_hello(&r, "\0\1\2", 3, b, strlen(b), 0, NULL), -1);
    assert_int_equal(rt_reg_hello(&r, "c2s1", 4, "pid=5", 5, 0, NULL), -1);
    assert_int_equal(rt_reg_hello(&r, "c2s1", 4, "", 0, 0, NULL), -1);
    assert_int_equal(r.n, 0);
    rt_reg_free(&r);
}

/* Found by tests/fuzz (corpus envelope/crash-hello-direct-past-end): a body
 * ending in "direct=tcp" was compared with strncmp past its end (ZeroMQ
 * bodies have no NUL). The body sits at the very end of its allocation, so
 * `make unit-san` catches a read beyond it. */
static void test_router_hello_direct_at_end_of_body(void **st)
{
    struct rt_registry r;
    rt_reg_init(&r);
    static const char text[] = "kind=sm direct=tcp";
    char *b = malloc(sizeof text - 1);
    memcpy(b, text, sizeof text - 1);
    assert_true(rt_reg_hello(&r, "sm1", 3, b, sizeof text - 1, 0, NULL) > 0);
    assert_string_equal(r.v[0].direct, "");
    free(b);
    rt_reg_free(&r);
}

static void test_router_expires_silent_instances_only(void **st)
{
    struct rt_registry r;
    three_sms(&r);
    hello(&r, "sm1", "kind=sm pid=11 domains=localhost", 5.0);
    hello(&r, "sm3", "kind=sm pid=13 domains=localhost", 5.0);
    assert_int_equal(rt_reg_find_dead(&r, 2.5, 3.0), -1);
    long i = rt_reg_find_dead(&r, 3.5, 3.0);
    assert_int_equal(i, 1);
    assert_string_equal(r.v[i].name, "sm2");
    rt_reg_remove(&r, (size_t)i);
    assert_int_equal(rt_reg_find_dead(&r, 3.5, 3.0), -1);
    assert_int_equal(r.n, 2);
    rt_reg_free(&r);
}

static void test_router_routes_jid_to_sm_s2s_or_bounce(void **st)
{
    struct rt_registry r;
    rt_reg_init(&r);
    const char *reason = NULL;
    assert_null(rt_route_jid(&r, "a@localhost", 11, 0, &reason));
    assert_string_equal(reason, "no-sm");

    hello(&r, "sm1", "kind=sm pid=1 domains=localhost,anon.localhost", 0);
    const struct rt_inst *d = rt_route_jid(&r, "a@anon.localhost", 16, 0, &reason);
    assert_non_null(d);
    assert_string_equal(d->name, "sm1");
    assert_null(rt_route_jid(&r, "a@localhost.evil", 16, 0, &reason));
    assert_string_equal(reason, "remote-domain");

    hello(&r, "s2s1", "kind=s2s pid=2", 0);
    d = rt_route_jid(&r, "bob@example.org", 15, 0, &reason);
    assert_non_null(d);
    assert_string_equal(d->name, "s2s1");
    /* Never hand a remote stanza that came in over s2s back to s2s. */
    assert_null(rt_route_jid(&r, "bob@example.org", 15, 1, &reason));
    assert_string_equal(reason, "remote-domain");
    rt_reg_free(&r);
}

/* XEP-0114: a component's domain goes to an s2s that announces it, even
 * from s2s (component to component), never to one that does not. */
static void test_router_routes_a_component_domain_to_the_s2s_holding_it(void **st)
{
    struct rt_registry r;
    rt_reg_init(&r);
    const char *reason = NULL;
    hello(&r, "sm1", "kind=sm pid=1 domains=localhost", 0);
    hello(&r, "s2s1", "kind=s2s pid=2", 0);
    hello(&r, "s2s2", "kind=s2s pid=3 domains=gw.localhost", 0);
    for (int i = 0; i < 20; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "u%d@gw.localhost", i);
        const struct rt_inst *d = rt_route_jid(&r, key, (size_t)n, i % 2, &reason);
        assert_non_null(d);
        assert_string_equal(d->name, "s2s2");
    }
    const struct rt_inst *d = rt_route_jid(&r, "gw.localhost", 12, 1, &reason);
    assert_non_null(d);
    assert_string_equal(d->name, "s2s2");
    assert_null(rt_route_jid(&r, "x@other.localhost", 17, 1, &reason));
    rt_reg_free(&r);
}

/* XEP-0045: a room goes to one of the sb-muc instances announcing its
 * service, by rendezvous hash of the room's bare JID (rt_pick by kind gives
 * the same answer, which is what sb-muc asks to know its own rooms); a
 * service nobody announces goes to s2s (which answers service-unavailable). */
static void test_router_spreads_rooms_over_the_muc_instances(void **st)
{
    struct rt_registry r;
    rt_reg_init(&r);
    const char *reason = NULL;
    hello(&r, "sm1", "kind=sm pid=1 domains=localhost", 0);
    hello(&r, "s2s1", "kind=s2s pid=2", 0);
    hello(&r, "muc1", "kind=muc pid=3 domains=conference.localhost", 0);
    hello(&r, "muc2", "kind=muc pid=4 domains=conference.localhost", 0);
    int on1 = 0;
    for (int i = 0; i < 40; i++) {
        char key[48];
        int n = snprintf(key, sizeof key, "room%d@conference.localhost", i);
        const struct rt_inst *d = rt_route_jid(&r, key, (size_t)n, 0, &reason);
        assert_non_null(d);
        assert_string_equal(d->kind, "muc");
        assert_string_equal(d->name, rt_pick(&r, "muc", key, (size_t)n)->name);
        on1 += !strcmp(d->name, "muc1");
    }
    assert_true(on1 > 0 && on1 < 40);
    const struct rt_inst *d = rt_route_jid(&r, "x@conference.other", 18, 0, &reason);
    assert_non_null(d);
    assert_string_equal(d->name, "s2s1");
    rt_reg_free(&r);
}

static void test_router_key_domain_handles_bare_domain_and_full_jid(void **st)
{
    const char *d;
    size_t n;
    rt_key_domain("a@b.org", 7, &d, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "b.org", 5);
    rt_key_domain("b.org", 5, &d, &n);
    assert_memory_equal(d, "b.org", 5);
    rt_key_domain("a@b.org/r@x", 11, &d, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "b.org", 5);
}

static void test_router_status_and_members_list_every_instance(void **st)
{
    struct rt_registry r;
    rt_reg_init(&r);
    hello(&r, "c2s1", "kind=c2s pid=123 domains=localhost sessions=3", 10.0);
    hello(&r, "sm1", "kind=sm pid=7 domains=localhost", 10.2);
    struct sb_buf b = SB_BUF_INIT;
    assert_int_equal(rt_status_body(&r, 10.25, &b), SB_OK);
    assert_string_equal(b.data,
        "name=c2s1 kind=c2s pid=123 last_hello_ms=250 sessions=3 domains=localhost\n"
        "name=sm1 kind=sm pid=7 last_hello_ms=50 sessions=0 domains=localhost\n");
    assert_int_equal(rt_members_body(&r, &b), SB_OK);
    assert_string_equal(b.data, "c2s c2s1\nsm sm1 domains=localhost\n");
    sb_buf_free(&b);
    rt_reg_free(&r);
}

static int hello_ch(struct rt_registry *r, const char *name, const char *body, double now)
{
    return rt_reg_hello(r, name, strlen(name), body, strlen(body), now, NULL);
}

static void test_router_direct_endpoint_announced_unless_loopback_of_another_host(void **st)
{
    struct rt_registry r;
    struct sb_buf b = SB_BUF_INIT;
    rt_reg_init(&r);
    hello(&r, "sm1", "kind=sm pid=7 domains=a direct=tcp://127.0.0.1:4000", 1.0);
    assert_int_equal(rt_members_body(&r, &b), SB_OK);
    assert_string_equal(b.data, "sm sm1 domains=a direct=tcp://127.0.0.1:4000\n");
    assert_int_equal(rt_status_body(&r, 1.0, &b), SB_OK);
    assert_string_equal(b.data, "name=sm1 kind=sm pid=7 last_hello_ms=0 sessions=0 domains=a "
                                "direct=tcp://127.0.0.1:4000\n");
    /* Same body from another host: its loopback is not ours. */
    r.remote_hello = 1;
    assert_int_equal(hello_ch(&r, "sm1", "kind=sm pid=7 domains=a direct=tcp://127.0.0.1:4000", 2.0), RT_CH_DIRECT);
    assert_int_equal(rt_members_body(&r, &b), SB_OK);
    assert_string_equal(b.data, "sm sm1 domains=a\n");
    /* A routable address is kept; garbage is ignored. */
    assert_int_equal(hello_ch(&r, "sm1", "kind=sm pid=7 domains=a direct=tcp://10.0.0.5:4000", 3.0), RT_CH_DIRECT);
    assert_string_equal(r.v[0].direct, "tcp://10.0.0.5:4000");
    assert_int_equal(hello_ch(&r, "sm1", "kind=sm pid=7 domains=a direct=http://x", 4.0), RT_CH_DIRECT);
    assert_string_equal(r.v[0].direct, "");
    sb_buf_free(&b);
    rt_reg_free(&r);
}

/* Routing ids (route.h): NAME#NONCE, a fresh nonce per call; a connection
 * speaks for NAME only with NAME's key; the latest id a name spoke from is
 * where it is reached, a name never heard is its own id. */
static void test_router_ids_are_tied_to_the_key_and_the_latest_connection(void **st)
{
    char a[96], b[96];
    rt_id_make(a, sizeof a, "c2s1");
    rt_id_make(b, sizeof b, "c2s1");
    assert_int_equal(strlen(a), 4 + 1 + RT_NONCE_HEX);
    assert_true(strcmp(a, b) != 0);
    assert_int_equal(rt_id_name_len(a, strlen(a)), 4);
    assert_int_equal(rt_id_name_len("sbctl-12", 8), 8);
    assert_true(rt_id_speaks_for("c2s1", 1, a, strlen(a)));
    assert_false(rt_id_speaks_for("c2s2", 1, a, strlen(a)));
    assert_false(rt_id_speaks_for("c2s", 1, a, strlen(a)));
    assert_false(rt_id_speaks_for(NULL, 1, a, strlen(a)));
    assert_true(rt_id_speaks_for(NULL, 0, a, strlen(a)));     /* curve = off */

    struct rt_addrs ad = {0};
    size_t n;
    assert_string_equal(rt_addrs_id(&ad, "c2s1", 4, &n), "c2s1");
    rt_addrs_learn(&ad, a, strlen(a));
    assert_memory_equal(rt_addrs_id(&ad, "c2s1", 4, &n), a, strlen(a));
    assert_int_equal(n, strlen(a));
    rt_addrs_learn(&ad, b, strlen(b));            /* restarted: the new one wins */
    assert_memory_equal(rt_addrs_id(&ad, "c2s1", 4, &n), b, strlen(b));
    rt_addrs_learn(&ad, "sbctl-1", 7);            /* no nonce: nothing to learn */
    assert_int_equal(ad.n, 1);
    rt_addrs_learn(&ad, "c2s1", 4);               /* its latest speaks without one */
    assert_string_equal(rt_addrs_id(&ad, "c2s1", 4, &n), "c2s1");
    assert_int_equal(n, 4);
    rt_addrs_free(&ad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router_score_is_fnv1a64_of_instance_newline_key),
        cmocka_unit_test(test_router_routes_a_component_domain_to_the_s2s_holding_it),
        cmocka_unit_test(test_router_spreads_rooms_over_the_muc_instances),
        cmocka_unit_test(test_router_direct_endpoint_announced_unless_loopback_of_another_host),
        cmocka_unit_test(test_router_removing_one_sm_moves_only_its_keys),
        cmocka_unit_test(test_router_spreads_3000_keys_evenly_over_3_sms),
        cmocka_unit_test(test_router_hello_registers_and_detects_changes),
        cmocka_unit_test(test_router_hello_rejects_bad_name_or_missing_kind),
        cmocka_unit_test(test_router_hello_direct_at_end_of_body),
        cmocka_unit_test(test_router_expires_silent_instances_only),
        cmocka_unit_test(test_router_routes_jid_to_sm_s2s_or_bounce),
        cmocka_unit_test(test_router_key_domain_handles_bare_domain_and_full_jid),
        cmocka_unit_test(test_router_status_and_members_list_every_instance),
        cmocka_unit_test(test_router_ids_are_tied_to_the_key_and_the_latest_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
