/* test_pgev.c — pgev's reconnection: a database that comes back is tried
 * again as soon as someone asks for it (pgev_kick), not only when the
 * back-off timer (up to 5 s) runs out. The "database" is a listening TCP
 * socket on loopback: that a connection attempt reached it is what counts,
 * no PostgreSQL server is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pgev.h"

/* A loopback port nothing listens on (bound, then closed). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &n), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    return fd;
}

/* Run the loop until `until` (loop time) or, with lfd >= 0, until a
 * connection arrives there; returns the loop time it arrived, or -1. */
static double run_until(struct ev_loop *loop, double until, int lfd)
{
    while (ev_now(loop) < until) {
        ev_run(loop, EVRUN_NOWAIT);
        if (lfd >= 0) {
            int c = accept(lfd, NULL, NULL);
            if (c >= 0) {
                close(c);
                return ev_now(loop);
            }
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        }
        usleep(2000);
        ev_now_update(loop);
    }
    return -1;
}

/* A pgev on a loopback port nothing listens on: refused at once, then
 * backing off. *t0 is the loop time it started. */
static struct pgev *pgev_refused(struct ev_loop *loop, int *port, double *t0)
{
    char conninfo[128];
    *port = free_port();
    snprintf(conninfo, sizeof conninfo, "hostaddr=127.0.0.1 port=%d connect_timeout=2", *port);
    struct pgev *pg = pgev_new(loop, conninfo);
    assert_non_null(pg);
    ev_now_update(loop);
    *t0 = ev_now(loop);
    return pg;
}

static void test_a_kick_tries_a_database_that_came_back_before_the_back_off_ends(void **st)
{
    (void)st;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    int port;
    double t0;
    struct pgev *pg = pgev_refused(loop, &port, &t0);
    /* Refused at 0, retried at 0.5 and 1.5: the next retry is at 3.5 s;
     * a kick is taken 0.5 s after the last attempt. */
    run_until(loop, t0 + 2.3, -1);
    assert_false(pgev_connected(pg));
    int lfd = listen_on(port);
    double kicked = ev_now(loop);
    pgev_kick(pg);
    double seen = run_until(loop, t0 + 3.3, lfd);
    assert_true(seen >= 0);               /* reached before the back-off's 3.5 s */
    assert_true(seen - kicked < 0.5);
    close(lfd);
    pgev_free(pg);
    ev_loop_destroy(loop);
}

static void test_without_a_kick_the_back_off_is_waited_out(void **st)
{
    (void)st;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    int port;
    double t0;
    struct pgev *pg = pgev_refused(loop, &port, &t0);
    run_until(loop, t0 + 2.0, -1);
    int lfd = listen_on(port);
    assert_true(run_until(loop, t0 + 3.2, lfd) < 0);    /* nobody asked: still waiting */
    close(lfd);
    pgev_free(pg);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_kick_tries_a_database_that_came_back_before_the_back_off_ends),
        cmocka_unit_test(test_without_a_kick_the_back_off_is_waited_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
