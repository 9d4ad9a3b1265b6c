/* test_link.c — the link's batching against a real ZeroMQ ROUTER socket on
 * loopback: envelopes sent in one loop iteration leave as one message of
 * header/body pairs, a full batch is ended early, and a received message of
 * several envelopes reaches the callback once per envelope, in order; with
 * an sm's direct endpoint in `members`, stanzas for its domains skip the
 * router both ways, and what cannot go directly still takes the router. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "link.h"

struct peer {
    void *ctx, *sock;
    char endpoint[64];
    char ids[4][96];            /* routing ids learnt from HELLOs: "NAME#NONCE" */
    int nids;
};

/* The id a link named `name` connected with (route.h: NAME#NONCE). */
static const char *peer_id(struct peer *p, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < p->nids; i++)
        if (!strncmp(p->ids[i], name, n) && p->ids[i][n] == '#')
            return p->ids[i];
    return name;
}

static void peer_learn(struct peer *p, zmq_msg_t *id)
{
    if (p->nids < 4)
        snprintf(p->ids[p->nids++], sizeof p->ids[0], "%.*s", (int)zmq_msg_size(id),
                 (char *)zmq_msg_data(id));
}

static void peer_open(struct peer *p)
{
    int linger = 0, timeout = 3000;
    memset(p, 0, sizeof *p);
    size_t sz = sizeof p->endpoint;
    p->ctx = zmq_ctx_new();
    p->sock = zmq_socket(p->ctx, ZMQ_ROUTER);
    assert_non_null(p->sock);
    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p->sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    assert_int_equal(zmq_bind(p->sock, "tcp://127.0.0.1:*"), 0);
    assert_int_equal(zmq_getsockopt(p->sock, ZMQ_LAST_ENDPOINT, p->endpoint, &sz), 0);
}

static void peer_close(struct peer *p)
{
    zmq_close(p->sock);
    zmq_ctx_term(p->ctx);
}

/* Receive one whole message; returns its frame count, frames in f. */
static int peer_recv(struct peer *p, zmq_msg_t *f, int cap)
{
    int n = 0, more = 1;
    while (more && n < cap) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], p->sock, 0) < 0) {
            zmq_msg_close(&f[n]);
            return n;
        }
        more = zmq_msg_more(&f[n]);
        n++;
    }
    return n;
}

/* Run the loop until the peer has a message (the link retries its first
 * HELLO every 0.1 s until the TCP connection is up), 3 s at most. */
static void spin_until_readable(struct ev_loop *loop, struct peer *p)
{
    for (int i = 0; i < 300; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10) > 0)
            return;
    }
}

static void close_all(zmq_msg_t *f, int n)
{
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

/* Answer a HELLO [id][hdr][body] as a router does: hello-ack with its seq
 * and a lease. Then let the link take it and drop HELLOs it retried
 * before, so the test sees only what it sends next. */
static void ack_hello(struct ev_loop *loop, struct peer *p, zmq_msg_t *f)
{
    const char *seq = strstr(zmq_msg_data(&f[2]), "seq=");
    uint8_t hdr[ENV_HDR_MAX];
    struct env_hdr h;
    env_init(&h, ENV_CONTROL, ENV_ROUTE_INSTANCE);
    h.flags = ENV_F_ROUTER;
    snprintf(h.key, sizeof h.key, "%.*s", (int)strcspn(zmq_msg_data(&f[0]), "#"),
             (char *)zmq_msg_data(&f[0]));
    snprintf(h.op, sizeof h.op, "hello-ack");
    snprintf(h.aux, sizeof h.aux, "%ld", seq ? strtol(seq + 4, NULL, 10) : 0L);
    long n = env_encode(&h, hdr, sizeof hdr);
    const char *body = "lease_ms=60000 store=ok";
    zmq_send(p->sock, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), ZMQ_SNDMORE);
    zmq_send(p->sock, hdr, (size_t)n, ZMQ_SNDMORE);
    zmq_send(p->sock, body, strlen(body), 0);
    for (int i = 0; i < 50; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    for (;;) {
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 0) <= 0)
            break;
        zmq_msg_t g[4];
        close_all(g, peer_recv(p, g, 4));
    }
}

struct seen {
    int n;
    char keys[8][32];
    char bodies[8][32];
};

static void on_recv(struct link *l, const struct env_hdr *h, const char *body, size_t len,
                    void *ud)
{
    struct seen *s = ud;
    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof s->keys[0], "%.31s", h->key);
        snprintf(s->bodies[s->n], sizeof s->bodies[0], "%.*s", (int)len, body);
    }
    s->n++;
}

static struct link *open_link_as(struct ev_loop *loop, struct peer *p, struct seen *seen,
                                 const char *name, const char *kind, const char *direct,
                                 char *hello, size_t hello_cap)
{
    struct link_opts o = {.endpoint = p->endpoint, .instance = name, .kind = kind,
                          .domains = "", .heartbeat = 60, .direct_bind = direct};
    struct link *l = link_new(loop, &o, on_recv, seen);
    assert_non_null(l);
    spin_until_readable(loop, p);
    zmq_msg_t f[4];
    int n = peer_recv(p, f, 4);
    assert_int_equal(n, 3);
    /* the routing id is NAME#<16 hex>: no one else can claim it */
    assert_int_equal(zmq_msg_size(&f[0]), strlen(name) + 17);
    assert_memory_equal(zmq_msg_data(&f[0]), name, strlen(name));
    assert_int_equal(((char *)zmq_msg_data(&f[0]))[strlen(name)], '#');
    peer_learn(p, &f[0]);
    if (hello)
        snprintf(hello, hello_cap, "%.*s", (int)zmq_msg_size(&f[2]), (char *)zmq_msg_data(&f[2]));
    ack_hello(loop, p, f);
    close_all(f, n);
    return l;
}

static struct link *open_link(struct ev_loop *loop, struct peer *p, struct seen *seen)
{
    struct link_opts o = {.endpoint = p->endpoint, .instance = "t1", .kind = "c2s",
                          .domains = "", .heartbeat = 60};
    struct link *l = link_new(loop, &o, on_recv, seen);
    assert_non_null(l);
    spin_until_readable(loop, p);  /* the HELLO: the peer now knows "t1" */
    zmq_msg_t f[4];
    int n = peer_recv(p, f, 4);
    assert_int_equal(n, 3);
    struct env_hdr h;
    assert_int_equal(env_decode(&h, zmq_msg_data(&f[1]), zmq_msg_size(&f[1])), SB_OK);
    assert_int_equal(h.kind, ENV_HELLO);
    peer_learn(p, &f[0]);
    ack_hello(loop, p, f);
    close_all(f, n);
    return l;
}

static void test_link_sends_one_iteration_as_one_message(void **state)
{
    struct peer p;
    struct seen seen = {0};
    peer_open(&p);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *l = open_link(loop, &p, &seen);
    assert_int_equal(link_send_to(l, ENV_STANZA, ENV_ROUTE_JID, "a@x", "", "", "<m1/>", 5), SB_OK);
    assert_int_equal(link_send_to(l, ENV_STANZA, ENV_ROUTE_JID, "b@x", "", "", "<m2/>", 5), SB_OK);
    assert_int_equal(link_send_to(l, ENV_STANZA, ENV_ROUTE_JID, "c@x", "", "", "", 0), SB_OK);
    ev_run(loop, EVRUN_NOWAIT);    /* the prepare watcher ends the batch */

    zmq_msg_t f[16];
    int n = peer_recv(&p, f, 16);
    assert_int_equal(n, 7);        /* identity + 3 × (header, body) */
    assert_memory_equal(zmq_msg_data(&f[0]), "t1", 2);
    const char *keys[3] = {"a@x", "b@x", "c@x"}, *bodies[3] = {"<m1/>", "<m2/>", ""};
    for (int i = 0; i < 3; i++) {
        struct env_hdr h;
        assert_int_equal(env_decode(&h, zmq_msg_data(&f[1 + 2 * i]), zmq_msg_size(&f[1 + 2 * i])),
                         SB_OK);
        assert_string_equal(h.key, keys[i]);
        assert_string_equal(h.sender, "t1");
        assert_int_equal(zmq_msg_size(&f[2 + 2 * i]), strlen(bodies[i]));
        assert_memory_equal(zmq_msg_data(&f[2 + 2 * i]), bodies[i], strlen(bodies[i]));
    }
    close_all(f, n);
    link_free(l);
    ev_loop_destroy(loop);
    peer_close(&p);
}

static void test_link_ends_a_full_batch_early(void **state)
{
    struct peer p;
    struct seen seen = {0};
    peer_open(&p);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *l = open_link(loop, &p, &seen);
    for (int i = 0; i < 130; i++)
        assert_int_equal(link_send_to(l, ENV_STANZA, ENV_ROUTE_JID, "a@x", "", "", "<m/>", 4),
                         SB_OK);
    /* No loop iteration yet: the first 128 already left as one message. */
    static zmq_msg_t f[300];
    int n = peer_recv(&p, f, 300);
    assert_int_equal(n, 1 + 2 * 128);
    close_all(f, n);
    link_flush(l);
    n = peer_recv(&p, f, 300);
    assert_int_equal(n, 1 + 2 * 2);
    close_all(f, n);
    link_free(l);
    ev_loop_destroy(loop);
    peer_close(&p);
}

static void test_link_delivers_each_envelope_of_a_batch_in_order(void **state)
{
    struct peer p;
    struct seen seen = {0};
    peer_open(&p);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *l = open_link(loop, &p, &seen);
    uint8_t hdr[ENV_HDR_MAX];
    struct env_hdr h;
    zmq_send(p.sock, peer_id(&p, "t1"), strlen(peer_id(&p, "t1")), ZMQ_SNDMORE);
    for (int i = 0; i < 3; i++) {
        char key[16], body[16];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(body, sizeof body, "<b%d/>", i);
        env_init(&h, ENV_STANZA, ENV_ROUTE_INSTANCE);
        strcpy(h.key, key);
        long n = env_encode(&h, hdr, sizeof hdr);
        assert_true(n > 0);
        zmq_send(p.sock, hdr, (size_t)n, ZMQ_SNDMORE);
        zmq_send(p.sock, body, strlen(body), i < 2 ? ZMQ_SNDMORE : 0);
    }
    /* A message with a trailing header and no body: the pair before it
     * is delivered, the odd frame dropped. */
    zmq_send(p.sock, peer_id(&p, "t1"), strlen(peer_id(&p, "t1")), ZMQ_SNDMORE);
    zmq_send(p.sock, hdr, (size_t)env_encode(&h, hdr, sizeof hdr), ZMQ_SNDMORE);
    zmq_send(p.sock, "<b3/>", 5, ZMQ_SNDMORE);
    zmq_send(p.sock, hdr, (size_t)env_encode(&h, hdr, sizeof hdr), 0);

    for (int spins = 0; seen.n < 4 && spins < 3000; spins++) {    /* ≤ 3 s */
        ev_run(loop, EVRUN_NOWAIT);
        if (seen.n < 4)
            usleep(1000);
    }
    assert_int_equal(seen.n, 4);
    for (int i = 0; i < 4; i++) {
        char body[16];
        snprintf(body, sizeof body, "<b%d/>", i);
        assert_string_equal(seen.bodies[i], body);
    }
    assert_string_equal(seen.keys[1], "k1");
    link_free(l);
    ev_loop_destroy(loop);
    peer_close(&p);
}

/* The fake router sends one control envelope to `to`. */
static void router_send_flags(struct peer *p, const char *to, const char *op, const char *body,
                              uint8_t flags)
{
    uint8_t hdr[ENV_HDR_MAX];
    struct env_hdr h;
    env_init(&h, ENV_CONTROL, ENV_ROUTE_INSTANCE);
    h.flags = flags;
    snprintf(h.key, sizeof h.key, "%s", to);
    snprintf(h.op, sizeof h.op, "%s", op);
    long n = env_encode(&h, hdr, sizeof hdr);
    zmq_send(p->sock, peer_id(p, to), strlen(peer_id(p, to)), ZMQ_SNDMORE);
    zmq_send(p->sock, hdr, (size_t)n, ZMQ_SNDMORE);
    zmq_send(p->sock, body, strlen(body), 0);
}

static void router_send(struct peer *p, const char *to, const char *op, const char *body)
{
    router_send_flags(p, to, op, body, ENV_F_ROUTER);
}

static void spin_until(struct ev_loop *loop, const int *count, int want)
{
    for (int spins = 0; *count < want && spins < 3000; spins++) {    /* ≤ 3 s */
        ev_run(loop, EVRUN_NOWAIT);
        if (*count < want)
            usleep(1000);
    }
}

static void test_link_sends_straight_to_the_owning_sm_and_back(void **state)
{
    struct peer p;
    struct seen at_sm = {0}, at_c2s = {0};
    char hello[512], members[1024];
    peer_open(&p);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *sm = open_link_as(loop, &p, &at_sm, "smA", "sm", "tcp://127.0.0.1:*",
                                   hello, sizeof hello);
    const char *ep = strstr(hello, "direct=tcp://127.0.0.1:");
    assert_non_null(ep);
    struct link *fe = open_link_as(loop, &p, &at_c2s, "c2sB", "c2s", NULL, NULL, 0);
    snprintf(members, sizeof members, "sm smA domains=x %s\nc2s c2sB\n", ep);
    router_send(&p, "smA", "members", members);
    router_send(&p, "c2sB", "members", members);
    spin_until(loop, &at_c2s.n, 1);
    spin_until(loop, &at_sm.n, 1);
    assert_int_equal(at_c2s.n, 1);

    /* The DEALER connects asynchronously: until then the router path is
     * taken, so retry until the sm sees one directly. */
    int direct = 0;
    for (int i = 0; i < 100 && !direct; i++) {
        int before = at_sm.n;
        assert_int_equal(link_send_to(fe, ENV_STANZA, ENV_ROUTE_JID, "u@x", "s1", "", "<m/>", 4),
                         SB_OK);
        ev_run(loop, EVRUN_NOWAIT);
        zmq_pollitem_t it = {p.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20) > 0) {
            zmq_msg_t f[4];    /* it went to the router: take it off, retry */
            close_all(f, peer_recv(&p, f, 4));
            continue;
        }
        spin_until(loop, &at_sm.n, before + 1);
        assert_int_equal(at_sm.n, before + 1);
        assert_string_equal(at_sm.keys[(before < 8 ? before : 7)], "u@x");
        direct = 1;
    }
    assert_true(direct);
    /* A remote domain still goes through the router. */
    assert_int_equal(link_send_to(fe, ENV_STANZA, ENV_ROUTE_JID, "u@remote.example", "", "",
                                  "<m/>", 4), SB_OK);
    ev_run(loop, EVRUN_NOWAIT);
    zmq_msg_t f[4];
    int n = peer_recv(&p, f, 4);
    assert_int_equal(n, 3);
    assert_memory_equal(zmq_msg_data(&f[0]), "c2sB", 4);
    close_all(f, n);
    /* The sm answers the front-end through its own ROUTER. */
    int before = at_c2s.n;
    assert_int_equal(link_send_to(sm, ENV_STANZA, ENV_ROUTE_INSTANCE, "c2sB", "s1", "", "<r/>", 4),
                     SB_OK);
    ev_run(loop, EVRUN_NOWAIT);
    spin_until(loop, &at_c2s.n, before + 1);
    assert_int_equal(at_c2s.n, before + 1);
    assert_string_equal(at_c2s.bodies[before], "<r/>");
    /* An instance not connected to the sm: the router takes it. */
    assert_int_equal(link_send_to(sm, ENV_STANZA, ENV_ROUTE_INSTANCE, "c2sZ", "s1", "", "<r/>", 4),
                     SB_OK);
    ev_run(loop, EVRUN_NOWAIT);
    n = peer_recv(&p, f, 4);
    assert_int_equal(n, 3);
    assert_memory_equal(zmq_msg_data(&f[0]), "smA", 3);
    close_all(f, n);
    link_free(fe);
    link_free(sm);
    ev_loop_destroy(loop);
    peer_close(&p);
}


/* A link named `name` on two routers, both HELLOs acked; it sends <m1/>
 * on its router path, which one router takes (and does not ack): that
 * router's index. */
static int two_routers_take_m1(struct ev_loop *loop, struct peer *p, struct link **lp,
                               struct seen *seen, const char *name)
{
    char eps[160];
    peer_open(&p[0]);
    peer_open(&p[1]);
    snprintf(eps, sizeof eps, "%s,%s", p[0].endpoint, p[1].endpoint);
    struct link_opts o = {.endpoint = eps, .instance = name, .kind = "c2s", .domains = "",
                          .heartbeat = 60};
    struct link *l = *lp = link_new(loop, &o, on_recv, seen);
    assert_non_null(l);
    for (int i = 0; i < 2; i++) {    /* a HELLO reaches each router: ack it */
        spin_until_readable(loop, &p[i]);
        zmq_msg_t f[4];
        assert_int_equal(peer_recv(&p[i], f, 4), 3);
        ack_hello(loop, &p[i], f);
        close_all(f, 3);
    }
    assert_int_equal(link_send_to(l, ENV_STANZA, ENV_ROUTE_JID, "u@remote", "", "", "<m1/>", 5),
                     SB_OK);
    link_flush(l);
    int used = -1;
    for (int i = 0; i < 300 && used < 0; i++)
        for (int k = 0; k < 2 && used < 0; k++) {
            ev_run(loop, EVRUN_NOWAIT);
            zmq_pollitem_t it = {p[k].sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 5) > 0)
                used = k;
        }
    assert_true(used >= 0);
    zmq_msg_t f[4];
    assert_int_equal(peer_recv(&p[used], f, 4), 3);    /* <m1/>, taken, not confirmed */
    close_all(f, 3);
    return used;
}

/* Two routers: what goes through the router path uses one of them; when it
 * goes away, the envelopes it never confirmed (sent after its last
 * hello-ack) are re-sent through the other, in order, before anything
 * newer. */
static void test_link_resends_what_a_dead_router_never_confirmed(void **state)
{
    struct peer p[2];
    struct seen seen = {0};
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *l = NULL;
    int used = two_routers_take_m1(loop, p, &l, &seen, "t2");
    peer_close(&p[used]);           /* that router dies */
    int other = 1 - used;
    /* The next sends find it gone and go to the other router, <m1/> first. */
    const char *want[3] = {"<m1/>", "<m2/>", "<m3/>"};
    int got = 0;
    for (int i = 0; i < 300 && got < 3; i++) {
        if (i == 0 || (i % 20 == 0 && got == 0)) {
            char body[8];
            snprintf(body, sizeof body, "<m%d/>", i == 0 ? 2 : 3);
            if (i <= 20)
                link_send_to(l, ENV_STANZA, ENV_ROUTE_JID, "u@remote", "", "", body, 5);
        }
        ev_run(loop, EVRUN_NOWAIT);
        zmq_pollitem_t it = {p[other].sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10) <= 0)
            continue;
        zmq_msg_t g[16];
        int n = peer_recv(&p[other], g, 16);
        for (int k = 1; k + 1 < n; k += 2) {
            struct env_hdr h;
            assert_int_equal(env_decode(&h, zmq_msg_data(&g[k]), zmq_msg_size(&g[k])), SB_OK);
            if (h.kind != ENV_STANZA)
                continue;           /* a HELLO */
            assert_true(got < 3);
            assert_int_equal(zmq_msg_size(&g[k + 1]), 5);
            assert_memory_equal(zmq_msg_data(&g[k + 1]), want[got], 5);
            got++;
        }
        close_all(g, n);
    }
    assert_true(got >= 2);          /* <m1/> re-sent, then <m2/> (and <m3/> if sent) */
    link_free(l);
    ev_loop_destroy(loop);
    peer_close(&p[other]);
}

/* A HELLO to every router now (a domain change says one at once), each
 * answered with its hello-ack. */
static void hello_round(struct ev_loop *loop, struct link *l, struct peer *p, int np)
{
    link_set_domains(l, "");
    for (int i = 0; i < np; i++) {
        spin_until_readable(loop, &p[i]);
        zmq_msg_t f[4];
        int n = peer_recv(&p[i], f, 4);
        assert_int_equal(n, 3);
        struct env_hdr h;
        assert_int_equal(env_decode(&h, zmq_msg_data(&f[1]), zmq_msg_size(&f[1])), SB_OK);
        assert_int_equal(h.kind, ENV_HELLO);
        ack_hello(loop, &p[i], f);
        close_all(f, n);
    }
}

/* An ack says a router took what came before its HELLO, not that it
 * passed it on (a router killed just after acking loses its queues): what
 * one ack confirmed is still re-sent if the router dies before the next
 * ack; after a second ack it is not. `acks` = 1 or 2. */
static void resend_after_acks(int acks)
{
    struct peer p[2];
    struct seen seen = {0};
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *l = NULL;
    int used = two_routers_take_m1(loop, p, &l, &seen, "t3");
    for (int a = 0; a < acks; a++)
        hello_round(loop, l, p, 2);                     /* each router acks a later HELLO */
    peer_close(&p[used]);                               /* then that router dies */
    int other = 1 - used;
    char got[4][8];
    int ngot = 0;
    for (int i = 0; i < 300 && ngot < 2; i++) {
        if (i == 0)
            link_send_to(l, ENV_STANZA, ENV_ROUTE_JID, "u@remote", "", "", "<m2/>", 5);
        ev_run(loop, EVRUN_NOWAIT);
        zmq_pollitem_t it = {p[other].sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10) <= 0)
            continue;
        zmq_msg_t g[16];
        int n = peer_recv(&p[other], g, 16);
        for (int k = 1; k + 1 < n; k += 2) {
            struct env_hdr h;
            assert_int_equal(env_decode(&h, zmq_msg_data(&g[k]), zmq_msg_size(&g[k])), SB_OK);
            if (h.kind == ENV_STANZA && ngot < 4)
                snprintf(got[ngot++], sizeof got[0], "%.*s", (int)zmq_msg_size(&g[k + 1]),
                         (char *)zmq_msg_data(&g[k + 1]));
        }
        close_all(g, n);
        if (ngot && !strcmp(got[ngot - 1], "<m2/>"))
            break;
    }
    if (acks == 1) {
        assert_int_equal(ngot, 2);
        assert_string_equal(got[0], "<m1/>");           /* re-sent, first */
        assert_string_equal(got[1], "<m2/>");
    } else {
        assert_int_equal(ngot, 1);
        assert_string_equal(got[0], "<m2/>");           /* confirmed twice: gone */
    }
    link_free(l);
    ev_loop_destroy(loop);
    peer_close(&p[other]);
}

static void test_link_resends_what_one_ack_confirmed_if_the_router_dies(void **state)
{
    resend_after_acks(1);
}

static void test_link_forgets_what_two_acks_confirmed(void **state)
{
    resend_after_acks(2);
}

/* Only a router's own word counts: `members` without ENV_F_ROUTER (a
 * member's, forwarded) is dropped; on the sm's direct socket neither
 * `instance-down` nor an envelope whose sender is not the connection's
 * name gets through, while the connection's own stanza does. */
static void test_link_takes_router_controls_and_senders_only_from_who_they_are(void **state)
{
    struct peer p;
    struct seen at_sm = {0};
    char hello[512];
    peer_open(&p);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *sm = open_link_as(loop, &p, &at_sm, "smA", "sm", "tcp://127.0.0.1:*",
                                   hello, sizeof hello);
    router_send_flags(&p, "smA", "members", "sm smA domains=x\n", 0);
    router_send_flags(&p, "smA", "instance-down", "kind=c2s inc=1", 0);
    router_send(&p, "smA", "session-gone", "");     /* any other control: fine */
    spin_until(loop, &at_sm.n, 1);
    assert_int_equal(at_sm.n, 1);
    assert_string_equal(at_sm.keys[0], "smA");

    char ep[128];
    snprintf(ep, sizeof ep, "%.*s", (int)strcspn(strstr(hello, "direct=") + 7, " "),
             strstr(hello, "direct=") + 7);
    void *d = zmq_socket(p.ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(d, ZMQ_ROUTING_ID, "c2sX#0123456789abcdef", 21);
    assert_int_equal(zmq_connect(d, ep), 0);
    const char *senders[3] = {"c2sX", "c2sY", "c2sX"};
    const int kinds[3] = {ENV_CONTROL, ENV_STANZA, ENV_STANZA};
    const char *keys[3] = {"smA", "forged@x", "own@x"};
    for (int i = 0; i < 3; i++) {
        uint8_t hdr[ENV_HDR_MAX];
        struct env_hdr h;
        env_init(&h, (enum env_kind)kinds[i], ENV_ROUTE_INSTANCE);
        h.flags = ENV_F_ROUTER;        /* claimed, and worthless off a router socket */
        snprintf(h.key, sizeof h.key, "%s", keys[i]);
        snprintf(h.sender, sizeof h.sender, "%s", senders[i]);
        if (kinds[i] == ENV_CONTROL)
            snprintf(h.op, sizeof h.op, "instance-down");
        long n = env_encode(&h, hdr, sizeof hdr);
        zmq_send(d, hdr, (size_t)n, ZMQ_SNDMORE);
        zmq_send(d, "<m/>", 4, 0);
    }
    spin_until(loop, &at_sm.n, 2);
    for (int i = 0; i < 50; i++) {      /* anything refused would have come by now */
        ev_run(loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    assert_int_equal(at_sm.n, 2);
    assert_string_equal(at_sm.keys[1], "own@x");
    zmq_close(d);
    link_free(sm);
    ev_loop_destroy(loop);
    peer_close(&p);
}

/* A router restarted after a while is joined again within a fraction of a
 * second, not after ZeroMQ's reconnect back-off (0.1 s doubling to 2 s):
 * while a component has not reconnected, the restarted router bounces
 * what is for it (`unreachable`), and the other router may die meanwhile
 * (test_routers: four messages lost). Down 3.7 s, the back-off would next
 * try 1.4 s or more after the restart. */
static void test_link_reconnects_to_a_restarted_router_at_once(void **state)
{
    struct peer p;
    struct seen seen = {0};
    peer_open(&p);
    char ep[64];
    snprintf(ep, sizeof ep, "%s", p.endpoint);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *l = open_link(loop, &p, &seen);
    peer_close(&p);                 /* the router dies */
    double t0 = ev_time();
    while (ev_time() - t0 < 3.7) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(5000);
    }
    int linger = 0, timeout = 3000;  /* and comes back at the same endpoint */
    p.ctx = zmq_ctx_new();
    p.sock = zmq_socket(p.ctx, ZMQ_ROUTER);
    zmq_setsockopt(p.sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p.sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    assert_int_equal(zmq_bind(p.sock, ep), 0);
    double up = ev_time();
    spin_until_readable(loop, &p);  /* the HELLO said on reconnecting */
    double took = ev_time() - up;
    zmq_msg_t f[4];
    int n = peer_recv(&p, f, 4);
    assert_int_equal(n, 3);
    struct env_hdr h;
    assert_int_equal(env_decode(&h, zmq_msg_data(&f[1]), zmq_msg_size(&f[1])), SB_OK);
    assert_int_equal(h.kind, ENV_HELLO);
    close_all(f, n);
    if (took > 1.0)
        fail_msg("reconnected %.2f s after the router came back", took);
    link_free(l);
    ev_loop_destroy(loop);
    peer_close(&p);
}

/* A router that stops answering (or a process frozen past its lease that
 * wakes up) has its DEALER made anew. The ROUTER still holds the old
 * connection while messages it has not read sit in it, and without
 * handover it ignores a second connection under an id in use: the new
 * socket must come with a new id, and its HELLO must get through. */
static void test_link_rejoins_under_a_new_id_when_its_router_went_silent(void **state)
{
    struct peer p;
    struct seen seen = {0};
    peer_open(&p);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link_opts o = {.endpoint = p.endpoint, .instance = "t5", .kind = "c2s",
                          .domains = "", .heartbeat = 0.1};
    struct link *l = link_new(loop, &o, on_recv, &seen);
    assert_non_null(l);
    spin_until_readable(loop, &p);
    zmq_msg_t f[4];
    assert_int_equal(peer_recv(&p, f, 4), 3);
    char first[96];
    snprintf(first, sizeof first, "%.*s", (int)zmq_msg_size(&f[0]), (char *)zmq_msg_data(&f[0]));
    ack_hello(loop, &p, f);
    close_all(f, 3);
    /* No ack for 0.6 s (2.5 heartbeats make it silent), nothing read: the
     * HELLOs of the old connection wait in the ROUTER. */
    double t0 = ev_time();
    while (ev_time() - t0 < 0.6) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(2000);
    }
    int fresh = 0;
    t0 = ev_time();
    while (!fresh && ev_time() - t0 < 3.0) {
        ev_run(loop, EVRUN_NOWAIT);
        zmq_pollitem_t it = {p.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10) <= 0)
            continue;
        int n = peer_recv(&p, f, 4);
        assert_int_equal(n, 3);
        assert_memory_equal(zmq_msg_data(&f[0]), "t5#", 3);
        fresh = zmq_msg_size(&f[0]) != strlen(first) ||
                memcmp(zmq_msg_data(&f[0]), first, strlen(first)) != 0;
        if (fresh)
            ack_hello(loop, &p, f);     /* answered at the new id: up again */
        close_all(f, n);
    }
    assert_true(fresh);
    link_free(l);
    ev_loop_destroy(loop);
    peer_close(&p);
}

/* A router given up (a send refused) has its socket made anew; when the
 * router is back, the new socket's HELLO goes out as soon as it connects
 * (the monitor's handshake event), not at the next heartbeat: until the
 * router has heard it, it cannot address this instance and bounces what
 * is for it. Here the heartbeat is a minute and the other router keeps
 * answering, so only the handshake can say it. */
static void test_link_says_hello_at_once_to_a_router_back_after_a_refusal(void **state)
{
    struct peer p[2];
    struct seen seen = {0};
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link *l = NULL;
    int used = two_routers_take_m1(loop, p, &l, &seen, "t6");
    char ep[64];
    snprintf(ep, sizeof ep, "%s", p[used].endpoint);
    peer_close(&p[used]);           /* that router dies: the next send is refused */
    for (int i = 0; i < 100; i++) {
        if (i % 10 == 0)
            link_send_to(l, ENV_STANZA, ENV_ROUTE_JID, "u@remote", "", "", "<m2/>", 5);
        ev_run(loop, EVRUN_NOWAIT);
        usleep(5000);
    }
    int linger = 0, timeout = 3000;  /* back at the same endpoint */
    p[used].ctx = zmq_ctx_new();
    p[used].sock = zmq_socket(p[used].ctx, ZMQ_ROUTER);
    zmq_setsockopt(p[used].sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p[used].sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    assert_int_equal(zmq_bind(p[used].sock, ep), 0);
    double up = ev_time();
    int hello = 0;
    while (!hello && ev_time() - up < 2.0) {
        ev_run(loop, EVRUN_NOWAIT);
        zmq_pollitem_t it = {p[used].sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10) <= 0)
            continue;
        zmq_msg_t f[16];
        int n = peer_recv(&p[used], f, 16);
        for (int k = 1; k + 1 < n; k += 2) {
            struct env_hdr h;
            if (env_decode(&h, zmq_msg_data(&f[k]), zmq_msg_size(&f[k])) == SB_OK)
                hello |= h.kind == ENV_HELLO;
        }
        close_all(f, n);
    }
    double took = ev_time() - up;
    if (!hello || took > 1.0)
        fail_msg("hello=%d %.2f s after the router came back", hello, took);
    link_free(l);
    ev_loop_destroy(loop);
    peer_close(&p[0]);
    peer_close(&p[1]);
}

/* While its router sockets are new (at start; made anew after a freeze
 * past the lease) a send no router takes yet waits in limbo and leaves,
 * in order, once a router has acknowledged the link; with no router
 * connected for longer than that, a send fails again. */
static void test_link_holds_sends_until_a_new_socket_connects(void **state)
{
    struct peer p;
    struct seen seen = {0};
    peer_open(&p);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct link_opts o = {.endpoint = p.endpoint, .instance = "t7", .kind = "sm",
                          .domains = "", .heartbeat = 60};
    struct link *l = link_new(loop, &o, on_recv, &seen);
    assert_non_null(l);
    /* not connected yet: ZMQ_IMMEDIATE refuses, the link keeps them */
    assert_int_equal(link_send_to(l, ENV_STANZA, ENV_ROUTE_INSTANCE, "c2s1", "s1", "", "<h1/>", 5),
                     SB_OK);
    assert_int_equal(link_send_to(l, ENV_STANZA, ENV_ROUTE_INSTANCE, "c2s1", "s1", "", "<h2/>", 5),
                     SB_OK);
    spin_until_readable(loop, &p);
    zmq_msg_t f[16];
    int n = peer_recv(&p, f, 16);
    assert_true(n >= 3);
    struct env_hdr h;
    assert_int_equal(env_decode(&h, zmq_msg_data(&f[1]), zmq_msg_size(&f[1])), SB_OK);
    assert_int_equal(h.kind, ENV_HELLO);
    zmq_msg_t hello[3];
    for (int i = 0; i < 3; i++) {
        zmq_msg_init(&hello[i]);
        zmq_msg_copy(&hello[i], &f[i]);
    }
    close_all(f, n);
    /* the ack sends them; ack_hello would drain them, so answer by hand */
    const char *seq = strstr(zmq_msg_data(&hello[2]), "seq=");
    uint8_t hdr[ENV_HDR_MAX];
    env_init(&h, ENV_CONTROL, ENV_ROUTE_INSTANCE);
    h.flags = ENV_F_ROUTER;
    snprintf(h.key, sizeof h.key, "t7");
    snprintf(h.op, sizeof h.op, "hello-ack");
    snprintf(h.aux, sizeof h.aux, "%ld", seq ? strtol(seq + 4, NULL, 10) : 0L);
    long hn = env_encode(&h, hdr, sizeof hdr);
    zmq_send(p.sock, zmq_msg_data(&hello[0]), zmq_msg_size(&hello[0]), ZMQ_SNDMORE);
    zmq_send(p.sock, hdr, (size_t)hn, ZMQ_SNDMORE);
    zmq_send(p.sock, "lease_ms=60000 store=ok", 23, 0);
    close_all(hello, 3);
    const char *want[2] = {"<h1/>", "<h2/>"};
    int got = 0;
    for (int i = 0; i < 300 && got < 2; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        zmq_pollitem_t it = {p.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10) <= 0)
            continue;
        n = peer_recv(&p, f, 16);
        for (int k = 1; k + 1 < n; k += 2) {
            assert_int_equal(env_decode(&h, zmq_msg_data(&f[k]), zmq_msg_size(&f[k])), SB_OK);
            if (h.kind != ENV_STANZA)
                continue;
            assert_true(got < 2);
            assert_int_equal(zmq_msg_size(&f[k + 1]), 5);
            assert_memory_equal(zmq_msg_data(&f[k + 1]), want[got], 5);
            got++;
        }
        close_all(f, n);
    }
    assert_int_equal(got, 2);
    link_free(l);
    peer_close(&p);
    /* no router at all for longer than a new socket needs: an error */
    o.endpoint = "tcp://127.0.0.1:9";
    l = link_new(loop, &o, on_recv, &seen);
    assert_non_null(l);
    double t0 = ev_time();
    while (ev_time() - t0 < 1.2) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(5000);
    }
    assert_int_equal(link_send_to(l, ENV_STANZA, ENV_ROUTE_INSTANCE, "c2s1", "s1", "", "<h3/>", 5),
                     SB_ERROR);
    link_free(l);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_link_sends_one_iteration_as_one_message),
        cmocka_unit_test(test_link_ends_a_full_batch_early),
        cmocka_unit_test(test_link_delivers_each_envelope_of_a_batch_in_order),
        cmocka_unit_test(test_link_sends_straight_to_the_owning_sm_and_back),
        cmocka_unit_test(test_link_resends_what_a_dead_router_never_confirmed),
        cmocka_unit_test(test_link_resends_what_one_ack_confirmed_if_the_router_dies),
        cmocka_unit_test(test_link_forgets_what_two_acks_confirmed),
        cmocka_unit_test(test_link_takes_router_controls_and_senders_only_from_who_they_are),
        cmocka_unit_test(test_link_reconnects_to_a_restarted_router_at_once),
        cmocka_unit_test(test_link_rejoins_under_a_new_id_when_its_router_went_silent),
        cmocka_unit_test(test_link_says_hello_at_once_to_a_router_back_after_a_refusal),
        cmocka_unit_test(test_link_holds_sends_until_a_new_socket_connects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
