/* bus.c — sbctl on the ZeroMQ bus: a DEALER (routing id sbctl-<pid>, the
 * bus CURVE key sbctl.key) to the router asked, ADMIN envelopes out and
 * their answers back (common/ENVELOPE.md), plus one DEALER with the same id
 * to each other router, since an instance sends its answer through any
 * router. Every wait has a deadline. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "curve.h"
#include "sb.h"
#include "sbctl.h"

#define BUS_ANSWER_S 2.0
#define BUS_READY_S 0.5        /* for the other routers to know sbctl */

int sbctl_routers(char *copy, size_t cap, char **eps, int max)
{
    const char *list = sb_config_str("routers", sb_config_str("router", NULL));
    char *save = NULL;
    int n = 0;
    if (!list || !*list) {
        sbctl_err("no router endpoint (config key 'routers' in [cluster])");
        return -1;
    }
    snprintf(copy, cap, "%s", list);
    for (char *t = strtok_r(copy, ", \t", &save); t && n < max; t = strtok_r(NULL, ", \t", &save))
        eps[n++] = t;
    return n;
}

void sbctl_bus_close(struct sbctl_bus *b)
{
    for (int i = 0; i < b->nrx; i++)
        zmq_close(b->rx[i]);
    b->nrx = 0;
    if (b->sock)
        zmq_close(b->sock);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    sb_curve_free(b->curve);
    b->sock = b->ctx = NULL;
    b->curve = NULL;
}

/* A DEALER with the bus id and key, connected to ep; NULL on failure. */
static void *bus_connect(struct sbctl_bus *b, const char *ep)
{
    int zero = 0;
    void *s = zmq_socket(b->ctx, ZMQ_DEALER);
    if (!s)
        return NULL;
    zmq_setsockopt(s, ZMQ_ROUTING_ID, b->id, strlen(b->id));
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (sb_curve_client(b->curve, s) != SB_OK || zmq_connect(s, ep) != 0) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

static int bus_send_on(void *sock, struct sbctl_bus *b, int route, const char *key,
                       const char *op, const char *sid, const char *aux, const char *body);

/* A router knows sbctl's id only once the connection's handshake is done:
 * ask each of the others for its status (the answer proves it) and wait
 * a bounded time, so that an answer sent through any of them arrives. A
 * router that is down is left connecting. */
static void bus_rx_ready(struct sbctl_bus *b)
{
    int waiting[SBCTL_MAX_ROUTERS] = {0}, left = 0;
    for (int i = 0; i < b->nrx; i++)
        if (bus_send_on(b->rx[i], b, ENV_ROUTE_ROUTER, "", "status", "", "", "") == 0)
            waiting[i] = 1, left++;
    double deadline = sb_now() + BUS_READY_S;
    while (left > 0) {
        long ms = (long)((deadline - sb_now()) * 1000);
        if (ms <= 0)
            break;
        zmq_pollitem_t it[SBCTL_MAX_ROUTERS];
        for (int i = 0; i < b->nrx; i++)
            it[i] = (zmq_pollitem_t){b->rx[i], 0, ZMQ_POLLIN, 0};
        if (zmq_poll(it, b->nrx, ms) <= 0)
            continue;
        for (int i = 0; i < b->nrx; i++) {
            if (!(it[i].revents & ZMQ_POLLIN))
                continue;
            zmq_msg_t m;                /* the whole status answer, dropped */
            int more = 1;
            while (more) {
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, b->rx[i], 0) < 0) {
                    zmq_msg_close(&m);
                    break;
                }
                more = zmq_msg_more(&m);
                zmq_msg_close(&m);
            }
            if (waiting[i])
                waiting[i] = 0, left--;
        }
    }
}

int sbctl_bus_open(struct sbctl_bus *b, const char *ep)
{
    memset(b, 0, sizeof *b);
    snprintf(b->id, sizeof b->id, "sbctl-%d", (int)getpid());
    /* The routers admit bus members only: sbctl is one, with sbctl.key. */
    if (sb_config_bool("curve", 1) && sb_curve_load(&b->curve, "sbctl") != SB_OK) {
        sbctl_err("cannot load the bus CURVE keys (sbctl keys generate … sbctl)");
        return -1;
    }
    b->ctx = zmq_ctx_new();
    b->sock = b->ctx ? bus_connect(b, ep) : NULL;
    if (!b->sock) {
        sbctl_err("cannot connect to router endpoint %s: %s", ep, zmq_strerror(zmq_errno()));
        sbctl_bus_close(b);
        return -1;
    }
    char copy[1024], *eps[SBCTL_MAX_ROUTERS];
    int n = sbctl_routers(copy, sizeof copy, eps, SBCTL_MAX_ROUTERS);
    for (int i = 0; i < n && b->nrx < SBCTL_MAX_ROUTERS; i++) {
        void *s = strcmp(eps[i], ep) ? bus_connect(b, eps[i]) : NULL;
        if (s)
            b->rx[b->nrx++] = s;
    }
    bus_rx_ready(b);
    return 0;
}

void *sbctl_bus_poll(struct sbctl_bus *b, long ms)
{
    zmq_pollitem_t it[1 + SBCTL_MAX_ROUTERS];
    it[0] = (zmq_pollitem_t){b->sock, 0, ZMQ_POLLIN, 0};
    for (int i = 0; i < b->nrx; i++)
        it[1 + i] = (zmq_pollitem_t){b->rx[i], 0, ZMQ_POLLIN, 0};
    if (zmq_poll(it, 1 + b->nrx, ms) <= 0)
        return NULL;
    for (int i = 0; i <= b->nrx; i++)
        if (it[i].revents & ZMQ_POLLIN)
            return it[i].socket;
    return NULL;
}

static int bus_send_on(void *sock, struct sbctl_bus *b, int route, const char *key,
                       const char *op, const char *sid, const char *aux, const char *body)
{
    uint8_t hdr[ENV_HDR_MAX];
    struct env_hdr h;
    env_init(&h, ENV_ADMIN, (enum env_route)route);
    if (strlen(key) >= sizeof h.key || strlen(sid) >= sizeof h.sid || strlen(aux) >= sizeof h.aux)
        return -1;
    snprintf(h.key, sizeof h.key, "%s", key);
    snprintf(h.sender, sizeof h.sender, "%s", b->id);
    snprintf(h.op, sizeof h.op, "%s", op);
    snprintf(h.sid, sizeof h.sid, "%s", sid);
    snprintf(h.aux, sizeof h.aux, "%s", aux);
    long n = env_encode(&h, hdr, sizeof hdr);
    if (n < 0 || zmq_send(sock, hdr, (size_t)n, ZMQ_SNDMORE) < 0 ||
        zmq_send(sock, body, strlen(body), 0) < 0)
        return -1;
    return 0;
}

int sbctl_bus_send(struct sbctl_bus *b, int route, const char *key, const char *op,
                   const char *sid, const char *aux, const char *body)
{
    return bus_send_on(b->sock, b, route, key, op, sid, aux, body);
}

int sbctl_bus_recv(struct sbctl_bus *b, double secs, struct env_hdr *h, char *body, size_t cap)
{
    double deadline = sb_now() + secs;
    for (;;) {
        long left = (long)((deadline - sb_now()) * 1000);
        if (left <= 0)
            return 0;
        void *sock = sbctl_bus_poll(b, left);
        if (!sock)
            continue;
        zmq_msg_t f[2];
        zmq_msg_init(&f[0]);
        zmq_msg_init(&f[1]);
        int ok = zmq_msg_recv(&f[0], sock, 0) >= 0 && zmq_msg_more(&f[0]) &&
                 zmq_msg_recv(&f[1], sock, 0) >= 0;
        while (ok && zmq_msg_more(&f[1])) {      /* a batch: keep only the first */
            zmq_msg_t x;
            zmq_msg_init(&x);
            zmq_msg_recv(&x, sock, 0);
            int more = zmq_msg_more(&x);
            zmq_msg_close(&x);
            if (!more)
                break;
        }
        if (ok && env_decode(h, zmq_msg_data(&f[0]), zmq_msg_size(&f[0])) == SB_OK) {
            size_t n = zmq_msg_size(&f[1]) < cap - 1 ? zmq_msg_size(&f[1]) : cap - 1;
            memcpy(body, zmq_msg_data(&f[1]), n);
            body[n] = '\0';
            zmq_msg_close(&f[0]);
            zmq_msg_close(&f[1]);
            return 1;
        }
        zmq_msg_close(&f[0]);
        zmq_msg_close(&f[1]);
    }
}

static int bus_ask(int route, const char *instance, const char *op, const char *sid,
                   const char *aux, const char *body, char *out, size_t cap)
{
    char copy[1024], *eps[16];
    int n = sbctl_routers(copy, sizeof copy, eps, 16), answered = 0;
    struct sbctl_bus b;
    struct env_hdr h;
    for (int i = 0; i < n && !answered; i++) {
        if (sbctl_bus_open(&b, eps[i]) < 0)
            continue;
        if (sbctl_bus_send(&b, route, instance, op, sid, aux, body) == 0)
            while (sbctl_bus_recv(&b, BUS_ANSWER_S, &h, out, cap)) {
                if (h.kind == ENV_BOUNCE) {
                    answered = -1;      /* not connected to this router: try the next */
                    break;
                }
                if (h.kind == ENV_ADMIN && !strcmp(h.op, op)) {
                    answered = 1;
                    break;
                }
            }
        sbctl_bus_close(&b);
        if (answered < 0 && i + 1 < n)
            answered = 0;
    }
    return answered;
}

int sbctl_bus_ask(const char *instance, const char *op, const char *sid, const char *aux,
                  const char *body, char *out, size_t cap)
{
    return bus_ask(ENV_ROUTE_INSTANCE, instance, op, sid, aux, body, out, cap);
}

int sbctl_bus_ask_jid(const char *jid, const char *op, const char *body, char *out, size_t cap)
{
    return bus_ask(ENV_ROUTE_JID, jid, op, "", "", body, out, cap);
}
