/* test_curve.c — only members join the bus: real ZeroMQ CURVE over TCP
 * loopback with the ZAP handler. A listed member talks both ways and the
 * server reads its name as User-Id; a plain client and a client with an
 * unlisted key get nothing through (waited for on the server's socket
 * monitor, not with sleeps); the ZAP replies follow RFC 27 frame by frame;
 * keys are made once and never overwritten; curve = off means plain
 * sockets; the handler survives either order of zmq_ctx_term and
 * sb_curve_free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "curve.h"
#include "log.h"

#define TIMEOUT_MS 3000

static char dir[64], outdir[64], ini[PATH_MAX], ini_off[PATH_MAX];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **st)
{
    char text[1024];
    sb_log_init("test", SB_LOG_ERROR);
    strcpy(dir, "/tmp/sb_test_curve_XXXXXX");
    strcpy(outdir, "/tmp/sb_test_curve_out_XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_non_null(mkdtemp(outdir));
    assert_int_equal(sb_curve_gen_server(dir), SB_OK);
    assert_int_equal(sb_curve_gen_member(dir, "sm1"), SB_OK);
    assert_int_equal(sb_curve_gen_member(dir, "c2s1"), SB_OK);
    assert_int_equal(sb_curve_gen_member(outdir, "outsider"), SB_OK);
    size_t n = 0;
    assert_int_equal(sb_curve_write_members(dir, &n), SB_OK);
    assert_int_equal(n, 2);
    snprintf(ini, sizeof ini, "%s/test.ini", outdir);
    snprintf(text, sizeof text,
             "[cluster]\ncurve_dir = %s\n[c2s.outsider]\ncurve_key_file = %s/outsider.key\n",
             dir, outdir);
    write_file(ini, text);
    snprintf(ini_off, sizeof ini_off, "%s/off.ini", outdir);
    write_file(ini_off, "[cluster]\ncurve = off\n");
    return 0;
}

static void rm_dir(const char *d)
{
    DIR *dd = opendir(d);
    struct dirent *e;
    char p[PATH_MAX];
    while (dd && (e = readdir(dd)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", d, e->d_name);
            unlink(p);
        }
    if (dd)
        closedir(dd);
    rmdir(d);
}

static int teardown(void **st)
{
    rm_dir(dir);
    rm_dir(outdir);
    sb_config_free();
    return 0;
}

static struct sb_curve *load_as(const char *path, const char *instance)
{
    struct sb_curve *c = NULL;
    assert_int_equal(sb_config_load(path, "c2s", instance), SB_OK);
    assert_int_equal(sb_curve_load(&c, instance), SB_OK);
    return c;
}

static void *sock_new(void *ctx, int type)
{
    int linger = 0, timeout = TIMEOUT_MS;
    void *s = zmq_socket(ctx, type);
    assert_non_null(s);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    return s;
}

/* A ROUTER bound on a free loopback port (CURVE when c), its endpoint in ep. */
static void *server_new(void *ctx, const struct sb_curve *c, char *ep, size_t cap)
{
    void *s = sock_new(ctx, ZMQ_ROUTER);
    assert_int_equal(sb_curve_server(c, s), SB_OK);
    assert_int_equal(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    assert_int_equal(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &cap), 0);
    return s;
}

static void *client_new(void *ctx, const struct sb_curve *c, const char *id, const char *ep)
{
    void *s = sock_new(ctx, ZMQ_DEALER);
    zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    if (c)
        assert_int_equal(sb_curve_client(c, s), SB_OK);
    assert_int_equal(zmq_connect(s, ep), 0);
    return s;
}

/* A PAIR receiving the server's handshake events (and `extra` ones). */
static void *monitor_new(void *ctx, void *server, int extra)
{
    static int seq;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://test-curve-mon-%d", ++seq);
    assert_int_equal(zmq_socket_monitor(server, ep,
                                        ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | extra),
                     0);
    void *m = sock_new(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_connect(m, ep), 0);
    return m;
}

/* The next monitor event (fails the test on timeout); its value in *value. */
static int monitor_next(void *m, uint32_t *value)
{
    zmq_msg_t f;
    uint16_t ev;
    zmq_msg_init(&f);
    assert_true(zmq_msg_recv(&f, m, 0) >= 6);
    memcpy(&ev, zmq_msg_data(&f), 2);
    memcpy(value, (uint8_t *)zmq_msg_data(&f) + 2, 4);
    assert_true(zmq_msg_more(&f));
    assert_true(zmq_msg_recv(&f, m, 0) >= 0);   /* the endpoint */
    zmq_msg_close(&f);
    return ev;
}

/* Server receives [id]["text"] from a client; returns the User-Id (copied). */
static void server_recv(void *s, const char *want_id, const char *want, char *user, size_t cap)
{
    char id[64], buf[64];
    zmq_msg_t m;
    int n = zmq_recv(s, id, sizeof id, 0);
    assert_int_equal(n, (int)strlen(want_id));
    assert_memory_equal(id, want_id, (size_t)n);
    zmq_msg_init(&m);
    n = zmq_msg_recv(&m, s, 0);
    assert_int_equal(n, (int)strlen(want));
    memcpy(buf, zmq_msg_data(&m), (size_t)n);
    buf[n] = '\0';
    assert_string_equal(buf, want);
    const char *u = zmq_msg_gets(&m, "User-Id");
    snprintf(user, cap, "%s", u ? u : "");
    zmq_msg_close(&m);
}

static void assert_nothing_queued(void *s)
{
    char buf[64];
    assert_int_equal(zmq_recv(s, buf, sizeof buf, ZMQ_DONTWAIT), -1);
    assert_int_equal(zmq_errno(), EAGAIN);
}

static void test_curve_member_talks_both_ways_and_is_named_by_user_id(void **st)
{
    struct sb_curve *c = load_as(ini, "c2s1");
    assert_non_null(c);
    void *sctx = zmq_ctx_new(), *cctx = zmq_ctx_new();
    char ep[128], user[64], buf[16];
    assert_int_equal(sb_curve_zap_start(c, sctx), SB_OK);
    void *srv = server_new(sctx, c, ep, sizeof ep);
    void *cli = client_new(cctx, c, "c2s1", ep);

    assert_int_equal(zmq_send(cli, "ping", 4, 0), 4);
    server_recv(srv, "c2s1", "ping", user, sizeof user);
    assert_string_equal(user, "c2s1");
    assert_int_equal(zmq_send(srv, "c2s1", 4, ZMQ_SNDMORE), 4);
    assert_int_equal(zmq_send(srv, "pong", 4, 0), 4);
    assert_int_equal(zmq_recv(cli, buf, sizeof buf, 0), 4);
    assert_memory_equal(buf, "pong", 4);

    zmq_close(cli);
    zmq_close(srv);
    sb_curve_free(c);           /* the handler first, then the context */
    assert_int_equal(zmq_ctx_term(sctx), 0);
    assert_int_equal(zmq_ctx_term(cctx), 0);
}

static void test_curve_plain_client_gets_nothing_through(void **st)
{
    struct sb_curve *c = load_as(ini, "c2s1");
    void *sctx = zmq_ctx_new(), *cctx = zmq_ctx_new();
    char ep[128], user[64];
    uint32_t value;
    assert_int_equal(sb_curve_zap_start(c, sctx), SB_OK);
    void *srv = server_new(sctx, c, ep, sizeof ep);
    /* An attempt of the plain client ends in a mechanism mismatch, or in
     * a plain disconnect when the client hung up first on the same
     * mismatch (both sides see it at once). */
    void *mon = monitor_new(sctx, srv, ZMQ_EVENT_DISCONNECTED);
    void *plain = client_new(cctx, NULL, "intruder", ep);
    assert_int_equal(zmq_send(plain, "hello", 5, 0), 5);

    int ev = monitor_next(mon, &value);
    assert_true(ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || ev == ZMQ_EVENT_DISCONNECTED);
    assert_nothing_queued(srv);
    /* A member still gets in, and its message is the first one there. */
    void *cli = client_new(cctx, c, "c2s1", ep);
    assert_int_equal(zmq_send(cli, "ok", 2, 0), 2);
    for (int i = 0; i < 1000; i++) {    /* the plain client keeps retrying */
        ev = monitor_next(mon, &value);
        if (ev != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && ev != ZMQ_EVENT_DISCONNECTED)
            break;
    }
    assert_int_equal(ev, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    server_recv(srv, "c2s1", "ok", user, sizeof user);
    assert_string_equal(user, "c2s1");

    zmq_close(plain);
    zmq_close(cli);
    zmq_close(mon);
    zmq_close(srv);
    sb_curve_free(c);
    zmq_ctx_term(sctx);
    zmq_ctx_term(cctx);
}

static void test_curve_unlisted_key_is_refused_with_400(void **st)
{
    struct sb_curve *c = load_as(ini, "c2s1");
    struct sb_curve *out = load_as(ini, "outsider");  /* valid keypair, not a member */
    void *sctx = zmq_ctx_new(), *cctx = zmq_ctx_new();
    char ep[128], buf[16];
    uint32_t value;
    assert_int_equal(sb_curve_zap_start(c, sctx), SB_OK);
    void *srv = server_new(sctx, c, ep, sizeof ep);
    void *mon = monitor_new(sctx, srv, 0);
    void *cli = client_new(cctx, out, "c2s1", ep);  /* even claiming a member's name */
    assert_int_equal(zmq_send(cli, "hello", 5, 0), 5);

    assert_int_equal(monitor_next(mon, &value), ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    assert_int_equal(value, 400);
    assert_nothing_queued(srv);
    assert_int_equal(zmq_recv(cli, buf, sizeof buf, ZMQ_DONTWAIT), -1);

    zmq_close(cli);
    zmq_close(mon);
    zmq_close(srv);
    sb_curve_free(out);
    sb_curve_free(c);
    zmq_ctx_term(sctx);
    zmq_ctx_term(cctx);
}

static void test_curve_off_gives_null_state_and_plain_sockets(void **st)
{
    struct sb_curve *c = load_as(ini_off, "c2s1");
    assert_null(c);
    void *ctx = zmq_ctx_new();
    char ep[128], user[64];
    assert_int_equal(sb_curve_zap_start(c, ctx), SB_OK);
    void *srv = server_new(ctx, c, ep, sizeof ep);
    void *cli = client_new(ctx, c, "c2s1", ep);
    assert_int_equal(zmq_send(cli, "plain", 5, 0), 5);
    server_recv(srv, "c2s1", "plain", user, sizeof user);
    assert_string_equal(user, "");
    zmq_close(cli);
    zmq_close(srv);
    sb_curve_free(c);
    zmq_ctx_term(ctx);
}

/* A member's public key, from its key file. */
static void member_pub(const char *name, uint8_t *key)
{
    char path[PATH_MAX], line[128];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    assert_memory_equal(line, "public=", 7);
    assert_non_null(zmq_z85_decode(key, line + 7));
}

/* Send a ZAP request of n frames, receive the reply's frames as text. */
static int zap_ask(void *req, const char *const *fr, const size_t *len, int n,
                   char reply[][64])
{
    for (int i = 0; i < n; i++)
        assert_true(zmq_send(req, fr[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
    int k = 0, more = 1;
    while (more && k < 8) {
        int r = zmq_recv(req, reply[k], 63, 0);
        assert_true(r >= 0);
        reply[k][r] = '\0';
        size_t sz = sizeof more;
        zmq_getsockopt(req, ZMQ_RCVMORE, &more, &sz);
        k++;
    }
    return k;
}

static void test_curve_zap_replies_follow_rfc27_and_log_once_per_window(void **st)
{
    struct sb_curve *c = load_as(ini, "c2s1");
    void *ctx = zmq_ctx_new();
    uint8_t key[32], unknown[32];
    char reply[8][64];
    member_pub("sm1", key);
    memset(unknown, 7, sizeof unknown);
    assert_int_equal(sb_curve_zap_start(c, ctx), SB_OK);
    void *req = sock_new(ctx, ZMQ_REQ);
    assert_int_equal(zmq_connect(req, "inproc://zeromq.zap.01"), 0);

    const char *ok[] = {"1.0", "id-1", "switchboard", "10.0.0.1", "sm1", "CURVE", (char *)key};
    size_t okl[] = {3, 4, 11, 8, 3, 5, 32};
    assert_int_equal(zap_ask(req, ok, okl, 7, reply), 6);
    assert_string_equal(reply[0], "1.0");
    assert_string_equal(reply[1], "id-1");
    assert_string_equal(reply[2], "200");
    assert_string_equal(reply[4], "sm1");
    assert_string_equal(reply[5], "");

    /* Refusals: stderr captured to count the log lines. */
    char logf[PATH_MAX];
    snprintf(logf, sizeof logf, "%s/stderr.log", outdir);
    fflush(stderr);
    int saved = dup(2), fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 2);
    close(fd);
    sb_log_set_level(SB_LOG_WARN);

    const char *null[] = {"1.0", "id-2", "switchboard", "10.0.0.2", "x", "NULL"};
    size_t nulll[] = {3, 4, 11, 8, 1, 4};
    assert_int_equal(zap_ask(req, null, nulll, 6, reply), 6);
    assert_string_equal(reply[1], "id-2");
    assert_string_equal(reply[2], "400");
    assert_string_equal(reply[4], "");
    const char *bad[] = {"1.0", "id-3", "switchboard", "10.0.0.3", "x", "CURVE", (char *)unknown};
    size_t badl[] = {3, 4, 11, 8, 1, 5, 32};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(zap_ask(req, bad, badl, 7, reply), 6);
        assert_string_equal(reply[2], "400");
        assert_string_equal(reply[4], "");
    }
    const char *v2[] = {"2.0", "id-4", "switchboard", "10.0.0.4", "x", "NULL"};
    assert_int_equal(zap_ask(req, v2, nulll, 6, reply), 6);
    assert_string_equal(reply[0], "1.0");
    assert_string_equal(reply[1], "id-4");
    assert_string_equal(reply[2], "500");

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    sb_log_set_level(SB_LOG_ERROR);
    FILE *f = fopen(logf, "r");
    char line[1024];
    int mech = 0, unknown_key = 0, other = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strstr(line, "event=bus_peer_refused reason=mechanism mechanism=\"NULL\""))
            mech++;
        else if (strstr(line, "event=bus_peer_refused reason=unknown_key mechanism=\"CURVE\" key="))
            unknown_key++;
        else if (strstr(line, "event=bus_peer_refused reason=malformed"))
            other++;
    }
    if (f)
        fclose(f);
    assert_int_equal(mech, 1);
    assert_int_equal(unknown_key, 1);   /* three refusals, one line in the window */
    assert_int_equal(other, 1);

    zmq_close(req);
    sb_curve_free(c);
    zmq_ctx_term(ctx);
}

static void test_curve_members_reload_admits_a_new_member(void **st)
{
    struct sb_curve *c = load_as(ini, "c2s1");
    void *ctx = zmq_ctx_new();
    uint8_t key[32];
    char reply[8][64];
    assert_int_equal(sb_curve_zap_start(c, ctx), SB_OK);
    void *req = sock_new(ctx, ZMQ_REQ);
    assert_int_equal(zmq_connect(req, "inproc://zeromq.zap.01"), 0);
    assert_int_equal(sb_curve_gen_member(dir, "bosh1"), SB_OK);
    member_pub("bosh1", key);
    const char *rq[] = {"1.0", "r", "switchboard", "10.0.0.5", "bosh1", "CURVE", (char *)key};
    size_t rql[] = {3, 1, 11, 8, 5, 5, 32};
    assert_int_equal(zap_ask(req, rq, rql, 7, reply), 6);
    assert_string_equal(reply[2], "400");
    assert_int_equal(sb_curve_write_members(dir, NULL), SB_OK);
    assert_int_equal(sb_curve_members_reload(c), SB_OK);
    assert_int_equal(zap_ask(req, rq, rql, 7, reply), 6);
    assert_string_equal(reply[2], "200");
    assert_string_equal(reply[4], "bosh1");
    zmq_close(req);
    /* The other order: the context goes first, the thread follows it. */
    assert_int_equal(zmq_ctx_term(ctx), 0);
    sb_curve_free(c);
}

static void test_curve_keys_are_made_once_and_never_overwritten(void **st)
{
    char path[PATH_MAX], before[256], after[256];
    struct stat sbuf;
    snprintf(path, sizeof path, "%s/sm1.key", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    before[fread(before, 1, sizeof before - 1, f)] = '\0';
    fclose(f);
    assert_int_equal(stat(path, &sbuf), 0);
    assert_int_equal(sbuf.st_mode & 0777, 0600);

    assert_int_equal(sb_curve_gen_member(dir, "sm1"), SB_DONE);
    assert_int_equal(sb_curve_gen_server(dir), SB_DONE);
    f = fopen(path, "r");
    after[fread(after, 1, sizeof after - 1, f)] = '\0';
    fclose(f);
    assert_string_equal(before, after);

    assert_int_equal(sb_curve_gen_member(dir, "server"), SB_ERROR);
    assert_int_equal(sb_curve_gen_member(dir, "../x"), SB_ERROR);
    assert_int_equal(sb_curve_gen_member(dir, ""), SB_ERROR);

    /* members.pub: one sorted line per member key, no server, no outsider. */
    assert_int_equal(sb_curve_gen_member(dir, "a0"), SB_OK);
    assert_int_equal(sb_curve_write_members(dir, NULL), SB_OK);
    snprintf(path, sizeof path, "%s/members.pub", dir);
    f = fopen(path, "r");
    assert_non_null(f);
    char line[256], names[256] = "";
    while (fgets(line, sizeof line, f))
        if (line[0] != '#') {
            char name[64], z[64];
            assert_int_equal(sscanf(line, "%63s %63s", name, z), 2);
            assert_int_equal(strlen(z), 40);
            strcat(names, name);
            strcat(names, " ");
        }
    fclose(f);
    assert_true(strncmp(names, "a0 ", 3) == 0);
    assert_null(strstr(names, "server"));
    assert_null(strstr(names, "outsider"));
    assert_non_null(strstr(names, "c2s1 "));
    assert_non_null(strstr(names, "sm1 "));
}

static void test_curve_server_refuses_without_zap_or_server_key(void **st)
{
    struct sb_curve *c = load_as(ini, "c2s1");
    void *ctx = zmq_ctx_new();
    void *s = sock_new(ctx, ZMQ_ROUTER);
    assert_int_equal(sb_curve_server(c, s), SB_ERROR);   /* any key would get in */
    zmq_close(s);
    sb_curve_free(c);
    zmq_ctx_term(ctx);

    /* A client-only host: its own key and server.pub, no server secret. */
    char text[PATH_MAX + 64], cini[PATH_MAX], sub[PATH_MAX + 16], cmd[4 * PATH_MAX];
    snprintf(sub, sizeof sub, "%s/client", outdir);
    mkdir(sub, 0700);
    snprintf(cmd, sizeof cmd, "cp %s/c2s1.key %s/server.pub %s/", dir, dir, sub);
    assert_int_equal(system(cmd), 0);
    snprintf(cini, sizeof cini, "%s/client.ini", outdir);
    snprintf(text, sizeof text, "[cluster]\ncurve_dir = %s\n", sub);
    write_file(cini, text);
    c = load_as(cini, "c2s1");
    assert_non_null(c);
    ctx = zmq_ctx_new();
    s = sock_new(ctx, ZMQ_DEALER);
    assert_int_equal(sb_curve_client(c, s), SB_OK);
    zmq_close(s);
    s = sock_new(ctx, ZMQ_ROUTER);
    assert_int_equal(sb_curve_zap_start(c, ctx), SB_ERROR);    /* no members.pub */
    assert_int_equal(sb_curve_server(c, s), SB_ERROR);
    zmq_close(s);
    sb_curve_free(c);
    zmq_ctx_term(ctx);
    snprintf(cmd, sizeof cmd, "rm -rf %s", sub);
    assert_int_equal(system(cmd), 0);
}

static void test_curve_missing_keys_fail_the_load(void **st)
{
    char text[PATH_MAX + 64], eini[PATH_MAX];
    struct sb_curve *c = (struct sb_curve *)1;
    snprintf(eini, sizeof eini, "%s/empty.ini", outdir);
    snprintf(text, sizeof text, "[cluster]\ncurve_dir = %s/nowhere\n", outdir);
    write_file(eini, text);
    assert_int_equal(sb_config_load(eini, "c2s", "c2s1"), SB_OK);
    assert_int_equal(sb_curve_load(&c, "c2s1"), SB_ERROR);
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curve_member_talks_both_ways_and_is_named_by_user_id),
        cmocka_unit_test(test_curve_plain_client_gets_nothing_through),
        cmocka_unit_test(test_curve_unlisted_key_is_refused_with_400),
        cmocka_unit_test(test_curve_off_gives_null_state_and_plain_sockets),
        cmocka_unit_test(test_curve_zap_replies_follow_rfc27_and_log_once_per_window),
        cmocka_unit_test(test_curve_members_reload_admits_a_new_member),
        cmocka_unit_test(test_curve_keys_are_made_once_and_never_overwritten),
        cmocka_unit_test(test_curve_server_refuses_without_zap_or_server_key),
        cmocka_unit_test(test_curve_missing_keys_fail_the_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
