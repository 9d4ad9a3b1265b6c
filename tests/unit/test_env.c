/* test_env.c — the envelope header survives a round trip and every
 * malformed header is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "env.h"

static void fill(struct env_hdr *h)
{
    env_init(h, ENV_STANZA, ENV_ROUTE_JID);
    h->flags = 0x5a;
    strcpy(h->key, "alice@localhost");
    strcpy(h->sender, "c2s1");
    strcpy(h->sid, "abcdefghij0123456789");
    strcpy(h->op, "");
    strcpy(h->aux, "alice@localhost/res.1234");
}

static void test_env_round_trip_keeps_every_field(void **st)
{
    struct env_hdr h, d;
    uint8_t buf[ENV_HDR_MAX];
    fill(&h);
    long n = env_encode(&h, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(n, 4 + 10 + 15 + 4 + 20 + 0 + 24);
    assert_int_equal(env_decode(&d, buf, (size_t)n), SB_OK);
    assert_int_equal(d.version, ENV_VERSION);
    assert_int_equal(d.kind, ENV_STANZA);
    assert_int_equal(d.route, ENV_ROUTE_JID);
    assert_int_equal(d.flags, 0x5a);
    assert_string_equal(d.key, h.key);
    assert_string_equal(d.sender, h.sender);
    assert_string_equal(d.sid, h.sid);
    assert_string_equal(d.op, "");
    assert_string_equal(d.aux, h.aux);
}

static void test_env_round_trip_at_maximum_field_lengths(void **st)
{
    static struct env_hdr h, d;
    static uint8_t buf[ENV_HDR_MAX];
    env_init(&h, ENV_CONTROL, ENV_ROUTE_INSTANCE);
    memset(h.key, 'k', ENV_STR_MAX);
    h.key[ENV_STR_MAX] = '\0';
    memset(h.aux, 'a', ENV_STR_MAX);
    h.aux[ENV_STR_MAX] = '\0';
    memset(h.sender, 's', ENV_NAME_MAX);
    h.sender[ENV_NAME_MAX] = '\0';
    memset(h.sid, 'i', ENV_NAME_MAX);
    h.sid[ENV_NAME_MAX] = '\0';
    memset(h.op, 'o', ENV_NAME_MAX);
    h.op[ENV_NAME_MAX] = '\0';
    h.flags = ENV_F_SEQ;            /* the router path's seq: the longest header */
    h.seq = 0x0102030405060708ULL;
    long n = env_encode(&h, buf, sizeof buf);
    assert_int_equal(n, ENV_HDR_MAX);
    assert_int_equal(env_decode(&d, buf, (size_t)n), SB_OK);
    assert_int_equal(strlen(d.key), ENV_STR_MAX);
    assert_int_equal(strlen(d.aux), ENV_STR_MAX);
    assert_int_equal(strlen(d.op), ENV_NAME_MAX);
    assert_true(d.seq == h.seq);
}

/* A BOUNCE's flags carry the original kind: never a seq, whatever the bits. */
static void test_env_seq_only_where_flagged_and_never_on_a_bounce(void **st)
{
    struct env_hdr h, d;
    uint8_t buf[ENV_HDR_MAX];
    fill(&h);
    long plain = env_encode(&h, buf, sizeof buf);
    h.flags = ENV_F_SEQ;
    h.seq = 42;
    long n = env_encode(&h, buf, sizeof buf);
    assert_int_equal(n, plain + 8);
    assert_int_equal(env_decode(&d, buf, (size_t)n), SB_OK);
    assert_true(d.seq == 42);
    assert_int_equal(env_decode(&d, buf, (size_t)n - 1), SB_ERROR);   /* cut seq */
    h.kind = ENV_BOUNCE;
    h.flags = ENV_F_SEQ | ENV_STANZA;
    n = env_encode(&h, buf, sizeof buf);
    assert_int_equal(n, plain);
    assert_int_equal(env_decode(&d, buf, (size_t)n), SB_OK);
    assert_true(d.seq == 0);
}

static void test_env_encode_refuses_small_buffer(void **st)
{
    struct env_hdr h;
    uint8_t buf[ENV_HDR_MAX];
    fill(&h);
    long n = env_encode(&h, buf, sizeof buf);
    assert_int_equal(env_encode(&h, buf, (size_t)n - 1), -1);
    assert_int_equal(env_encode(&h, buf, 3), -1);
    assert_int_equal(env_encode(&h, buf, (size_t)n), n);
}

static void test_env_encode_refuses_over_long_name_field(void **st)
{
    struct env_hdr h;
    uint8_t buf[ENV_HDR_MAX];
    fill(&h);
    /* sender is a name field: 63 bytes at most even though aux may be longer. */
    memset(h.sender, 'x', ENV_NAME_MAX + 1);   /* fills the array, no NUL */
    assert_int_equal(env_encode(&h, buf, sizeof buf), -1);
}

static void test_env_decode_rejects_every_truncation(void **st)
{
    struct env_hdr h, d;
    uint8_t buf[ENV_HDR_MAX];
    fill(&h);
    long n = env_encode(&h, buf, sizeof buf);
    for (long cut = 0; cut < n; cut++)
        assert_int_equal(env_decode(&d, buf, (size_t)cut), SB_ERROR);
}

static void test_env_decode_rejects_trailing_bytes(void **st)
{
    struct env_hdr h, d;
    uint8_t buf[ENV_HDR_MAX + 1];
    fill(&h);
    long n = env_encode(&h, buf, sizeof buf);
    buf[n] = 0;
    assert_int_equal(env_decode(&d, buf, (size_t)n + 1), SB_ERROR);
}

static void test_env_decode_rejects_bad_version_kind_route(void **st)
{
    struct env_hdr h, d;
    uint8_t buf[ENV_HDR_MAX];
    fill(&h);
    long n = env_encode(&h, buf, sizeof buf);
    uint8_t bad[][2] = {{0, 0}, {0, 2}, {1, 0}, {1, 6}, {1, 255}, {2, 0}, {2, 5}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t copy[ENV_HDR_MAX];
        memcpy(copy, buf, (size_t)n);
        copy[bad[i][0]] = bad[i][1];
        assert_int_equal(env_decode(&d, copy, (size_t)n), SB_ERROR);
        uint8_t k, r;
        const char *key;
        size_t kl;
        assert_int_equal(env_peek(copy, (size_t)n, &k, &r, &key, &kl), SB_ERROR);
    }
}

static void test_env_decode_rejects_over_long_field(void **st)
{
    static uint8_t buf[4 + 2 + ENV_STR_MAX + 1 + 8];
    struct env_hdr d;
    /* sender declared 64 bytes long: one over ENV_NAME_MAX. */
    uint8_t small[4 + 2 + 2 + 64 + 6] = {ENV_VERSION, ENV_HELLO, ENV_ROUTE_ROUTER, 0, 0, 0, 0, 64};
    memset(small + 8, 's', 64);
    assert_int_equal(env_decode(&d, small, sizeof small), SB_ERROR);
    /* key declared ENV_STR_MAX + 1 bytes long. */
    memset(buf, 0, sizeof buf);
    buf[0] = ENV_VERSION;
    buf[1] = ENV_STANZA;
    buf[2] = ENV_ROUTE_JID;
    buf[4] = (uint8_t)((ENV_STR_MAX + 1) >> 8);
    buf[5] = (uint8_t)((ENV_STR_MAX + 1) & 0xff);
    memset(buf + 6, 'k', ENV_STR_MAX + 1);
    assert_int_equal(env_decode(&d, buf, sizeof buf), SB_ERROR);
    uint8_t k, r;
    const char *key;
    size_t kl;
    assert_int_equal(env_peek(buf, sizeof buf, &k, &r, &key, &kl), SB_ERROR);
}

static void test_env_decode_rejects_embedded_nul(void **st)
{
    struct env_hdr h, d;
    uint8_t buf[ENV_HDR_MAX];
    fill(&h);
    long n = env_encode(&h, buf, sizeof buf);
    buf[6 + 3] = '\0';   /* inside the key */
    assert_int_equal(env_decode(&d, buf, (size_t)n), SB_ERROR);
}

static void test_env_peek_points_into_buffer_without_copy(void **st)
{
    struct env_hdr h;
    uint8_t buf[ENV_HDR_MAX];
    fill(&h);
    long n = env_encode(&h, buf, sizeof buf);
    uint8_t k, r;
    const char *key;
    size_t kl;
    assert_int_equal(env_peek(buf, (size_t)n, &k, &r, &key, &kl), SB_OK);
    assert_int_equal(k, ENV_STANZA);
    assert_int_equal(r, ENV_ROUTE_JID);
    assert_ptr_equal(key, (const char *)buf + 6);
    assert_int_equal(kl, strlen("alice@localhost"));
    assert_memory_equal(key, "alice@localhost", kl);
    assert_int_equal(env_peek(buf, 7, &k, &r, &key, &kl), SB_ERROR);
}

static void test_env_names_cover_all_values(void **st)
{
    assert_string_equal(env_kind_name(ENV_STANZA), "stanza");
    assert_string_equal(env_kind_name(ENV_BOUNCE), "bounce");
    assert_string_equal(env_kind_name(99), "unknown");
    assert_string_equal(env_route_name(ENV_ROUTE_KIND), "kind");
    assert_string_equal(env_route_name(0), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env_round_trip_keeps_every_field),
        cmocka_unit_test(test_env_round_trip_at_maximum_field_lengths),
        cmocka_unit_test(test_env_seq_only_where_flagged_and_never_on_a_bounce),
        cmocka_unit_test(test_env_encode_refuses_small_buffer),
        cmocka_unit_test(test_env_encode_refuses_over_long_name_field),
        cmocka_unit_test(test_env_decode_rejects_every_truncation),
        cmocka_unit_test(test_env_decode_rejects_trailing_bytes),
        cmocka_unit_test(test_env_decode_rejects_bad_version_kind_route),
        cmocka_unit_test(test_env_decode_rejects_over_long_field),
        cmocka_unit_test(test_env_decode_rejects_embedded_nul),
        cmocka_unit_test(test_env_peek_points_into_buffer_without_copy),
        cmocka_unit_test(test_env_names_cover_all_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
