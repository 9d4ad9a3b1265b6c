/* test_tlsconn.c — the plaintext path of common/tlsconn over a socketpair on
 * a real libev loop: direct writes, coalescing within a loop iteration,
 * input, the output queue and its cap, pausing, EOF, and the lingering
 * close (goodbye after the flush, dead once the peer closes). TLS runs end
 * to end in the integration suite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlsconn.h"
#include "log.h"

static struct ev_loop *loop;
static char got[1 << 16];
static size_t ngot;
static const char *dead_why;
static int ndead;

static void on_input(void *ud, const char *data, size_t len)
{
    if (ngot + len <= sizeof got) {
        memcpy(got + ngot, data, len);
        ngot += len;
    }
}
static void on_secured(void *ud) {}
static void on_connected(void *ud, int err) {}
static void on_dead(void *ud, const char *why)
{
    ndead++;
    dead_why = why;
}
static const struct tlsconn_ops ops = {on_input, on_secured, on_connected, on_dead};

struct pair {
    struct tlsconn t;
    int other;
};

static void pair_open(struct pair *p)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    tlsconn_init(&p->t, loop, sv[0], &ops, p, "test");
    tlsconn_want(&p->t);
    p->other = sv[1];
    ngot = 0;
    ndead = 0;
    dead_why = NULL;
}

static void pair_close(struct pair *p)
{
    tlsconn_free(&p->t);
    if (p->other >= 0)
        close(p->other);
}

static void turn(void)
{
    for (int i = 0; i < 4; i++)
        ev_run(loop, EVRUN_NOWAIT);
}

static void test_tlsconn_writes_directly_and_hands_input_over(void **state)
{
    struct pair p;
    pair_open(&p);
    assert_int_equal(tlsconn_write(&p.t, "hello", 5, 100), TLSCONN_OK);
    assert_int_equal(tlsconn_pending(&p.t), 0);
    assert_null(p.t.out.data);                     /* nothing copied */
    char buf[16];
    assert_int_equal(read(p.other, buf, sizeof buf), 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(write(p.other, "world", 5), 5);
    turn();
    assert_int_equal(ngot, 5);
    assert_memory_equal(got, "world", 5);
    pair_close(&p);
}

static void test_tlsconn_writes_after_the_first_in_a_turn_leave_together(void **state)
{
    struct pair p;
    pair_open(&p);
    turn();                                        /* a fresh iteration */
    assert_int_equal(tlsconn_write(&p.t, "<a/>", 4, 100), TLSCONN_OK);
    assert_int_equal(tlsconn_write(&p.t, "<b/>", 4, 100), TLSCONN_OK);
    assert_int_equal(tlsconn_write(&p.t, "<c/>", 4, 100), TLSCONN_OK);
    char buf[64];
    assert_int_equal(read(p.other, buf, sizeof buf), 4);   /* only the first so far */
    assert_memory_equal(buf, "<a/>", 4);
    assert_int_equal(tlsconn_pending(&p.t), 8);
    turn();                                        /* the iteration ends: one send */
    assert_int_equal(read(p.other, buf, sizeof buf), 8);
    assert_memory_equal(buf, "<b/><c/>", 8);
    assert_int_equal(tlsconn_pending(&p.t), 0);
    assert_null(p.t.out.data);
    turn();
    assert_int_equal(tlsconn_write(&p.t, "<d/>", 4, 100), TLSCONN_OK);
    assert_int_equal(tlsconn_pending(&p.t), 0);    /* a new iteration: direct again */
    pair_close(&p);
}

static void test_tlsconn_freed_while_holding_output_is_forgotten(void **state)
{
    struct pair p;
    pair_open(&p);
    turn();
    tlsconn_write(&p.t, "<a/>", 4, 100);
    tlsconn_write(&p.t, "<b/>", 4, 100);
    assert_true(p.t.flags & TLSCONN_F_HELD);
    pair_close(&p);
    memset(&p.t, 0xff, sizeof p.t);                /* a use after free would show */
    turn();
}

/* Fill the socket; returns the bytes written before it refused more. */
static size_t fill(struct pair *p, size_t cap)
{
    static char chunk[4096];
    size_t total = 0;
    while (tlsconn_pending(&p->t) == 0) {
        assert_int_equal(tlsconn_write(&p->t, chunk, sizeof chunk, cap), TLSCONN_OK);
        total += sizeof chunk;
    }
    return total;
}

static void test_tlsconn_queues_what_the_socket_refuses_and_flushes_it(void **state)
{
    struct pair p;
    pair_open(&p);
    size_t total = fill(&p, 1 << 20);
    assert_true(tlsconn_pending(&p.t) > 0);
    size_t seen = 0;
    char buf[8192];
    for (int i = 0; i < 10000 && seen < total; i++) {
        ssize_t n = read(p.other, buf, sizeof buf);
        if (n > 0)
            seen += (size_t)n;
        turn();
    }
    assert_int_equal(seen, total);
    assert_int_equal(tlsconn_pending(&p.t), 0);
    assert_null(p.t.out.data);                     /* the buffer goes once drained */
    pair_close(&p);
}

static void test_tlsconn_write_over_the_cap_is_full_and_takes_nothing(void **state)
{
    struct pair p;
    pair_open(&p);
    fill(&p, 1 << 20);
    size_t before = tlsconn_pending(&p.t);
    static char big[2 << 20];
    assert_int_equal(tlsconn_write(&p.t, big, sizeof big, 1 << 20), TLSCONN_FULL);
    assert_int_equal(tlsconn_pending(&p.t), before);
    assert_int_equal(ndead, 0);
    pair_close(&p);
}

static void test_tlsconn_paused_reads_nothing_until_resumed(void **state)
{
    struct pair p;
    pair_open(&p);
    tlsconn_pause(&p.t);
    assert_int_equal(write(p.other, "abc", 3), 3);
    turn();
    assert_int_equal(ngot, 0);
    tlsconn_resume(&p.t);
    assert_int_equal(ngot, 3);
    pair_close(&p);
}

static void test_tlsconn_peer_close_reports_eof(void **state)
{
    struct pair p;
    pair_open(&p);
    close(p.other);
    p.other = -1;
    turn();
    assert_int_equal(ndead, 1);
    assert_string_equal(dead_why, "eof");
    assert_int_equal(tlsconn_write(&p.t, "x", 1, 100), TLSCONN_OK);   /* dropped */
    pair_close(&p);
}

static void test_tlsconn_close_flushes_says_goodbye_and_lingers(void **state)
{
    struct pair p;
    pair_open(&p);
    size_t total = fill(&p, 1 << 20);
    assert_int_equal(tlsconn_close(&p.t), 0);      /* lingering, not gone */
    assert_false(p.t.flags & TLSCONN_F_SHUT);      /* output first */
    char buf[8192];
    size_t seen = 0;
    ssize_t n = 1;
    for (int i = 0; i < 10000 && n != 0; i++) {
        n = read(p.other, buf, sizeof buf);
        if (n > 0)
            seen += (size_t)n;
        turn();
    }
    assert_int_equal(n, 0);                        /* our write side shut */
    assert_int_equal(seen, total);
    assert_int_equal(ndead, 0);
    assert_int_equal(write(p.other, "late", 4), 4);   /* discarded */
    close(p.other);
    p.other = -1;
    turn();
    assert_int_equal(ngot, 0);
    assert_int_equal(ndead, 1);
    pair_close(&p);
}

static void test_tlsconn_close_before_a_stream_sends_nothing(void **state)
{
    struct pair p;
    pair_open(&p);
    tlsconn_connecting(&p.t);
    assert_int_equal(tlsconn_write(&p.t, "queued", 6, 100), TLSCONN_OK);
    assert_int_equal(tlsconn_close(&p.t), 1);      /* gone at once */
    assert_int_equal(tlsconn_pending(&p.t), 0);
    pair_close(&p);
}

static void test_addr_key_groups_ipv4_by_address_and_ipv6_by_64(void **st)
{
    uint8_t a[16], b[16];
    char shown[48];
    assert_int_equal(tlsconn_addr_key("192.0.2.7:5222", a, shown, sizeof shown), 0);
    assert_string_equal(shown, "192.0.2.7");
    assert_int_equal(tlsconn_addr_key("192.0.2.7:6000", b, shown, sizeof shown), 0);
    assert_memory_equal(a, b, 16);                       /* the port does not count */
    assert_int_equal(tlsconn_addr_key("192.0.2.8:5222", b, shown, sizeof shown), 0);
    assert_memory_not_equal(a, b, 16);
    assert_int_equal(tlsconn_addr_key("::ffff:192.0.2.7:1", b, shown, sizeof shown), 0);
    assert_memory_equal(a, b, 16);                       /* v4-mapped is the v4 address */
    assert_int_equal(tlsconn_addr_key("2001:db8:1:2:aaaa::1:443", a, shown, sizeof shown), 0);
    assert_string_equal(shown, "2001:db8:1:2::/64");
    assert_int_equal(tlsconn_addr_key("[2001:db8:1:2:bbbb::9]:443", b, shown, sizeof shown), 0);
    assert_memory_equal(a, b, 16);                       /* one /64 */
    assert_int_equal(tlsconn_addr_key("2001:db8:1:3::1:443", b, shown, sizeof shown), 0);
    assert_memory_not_equal(a, b, 16);
    assert_int_equal(tlsconn_addr_key("::1:5222", a, shown, sizeof shown), 0);
    assert_int_equal(tlsconn_addr_key("not-an-address:1", a, shown, sizeof shown), -1);
    assert_int_equal(tlsconn_addr_key("192.0.2.7", a, shown, sizeof shown), -1);
    assert_int_equal(tlsconn_addr_key(":1", a, shown, sizeof shown), -1);
    assert_int_equal(tlsconn_addr_key(NULL, a, shown, sizeof shown), -1);
}

int main(void)
{
    sb_log_init("test", SB_LOG_ERROR);
    loop = ev_default_loop(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_key_groups_ipv4_by_address_and_ipv6_by_64),
        cmocka_unit_test(test_tlsconn_writes_directly_and_hands_input_over),
        cmocka_unit_test(test_tlsconn_writes_after_the_first_in_a_turn_leave_together),
        cmocka_unit_test(test_tlsconn_freed_while_holding_output_is_forgotten),
        cmocka_unit_test(test_tlsconn_queues_what_the_socket_refuses_and_flushes_it),
        cmocka_unit_test(test_tlsconn_write_over_the_cap_is_full_and_takes_nothing),
        cmocka_unit_test(test_tlsconn_paused_reads_nothing_until_resumed),
        cmocka_unit_test(test_tlsconn_peer_close_reports_eof),
        cmocka_unit_test(test_tlsconn_close_flushes_says_goodbye_and_lingers),
        cmocka_unit_test(test_tlsconn_close_before_a_stream_sends_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
