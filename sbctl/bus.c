/* bus.c — sbctl on the ZeroMQ bus: a DEALER (routing id sbctl-<pid>, the
 * bus CURVE key sbctl.key) to one router, ADMIN envelopes out and their
 * answers back (common/ENVELOPE.md). Every wait has a deadline. */
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
    if (b->sock)
        zmq_close(b->sock);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    sb_curve_free(b->curve);
    b->sock = b->ctx = NULL;
    b->curve = NULL;
}

int sbctl_bus_open(struct sbctl_bus *b, const char *ep)
{
    int zero = 0;
    memset(b, 0, sizeof *b);
    snprintf(b->id, sizeof b->id, "sbctl-%d", (int)getpid());
    /* The routers admit bus members only: sbctl is one, with sbctl.key. */
    if (sb_config_bool("curve", 1) && sb_curve_load(&b->curve, "sbctl") != SB_OK) {
        sbctl_err("cannot load the bus CURVE keys (sbctl keys generate … sbctl)");
        return -1;
    }
    b->ctx = zmq_ctx_new();
    b->sock = b->ctx ? zmq_socket(b->ctx, ZMQ_DEALER) : NULL;
    if (!b->sock) {
        sbctl_err("cannot create a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
        sbctl_bus_close(b);
        return -1;
    }
    zmq_setsockopt(b->sock, ZMQ_ROUTING_ID, b->id, strlen(b->id));
    zmq_setsockopt(b->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (sb_curve_client(b->curve, b->sock) != SB_OK || zmq_connect(b->sock, ep) != 0) {
        sbctl_err("cannot connect to router endpoint %s: %s", ep, zmq_strerror(zmq_errno()));
        sbctl_bus_close(b);
        return -1;
    }
    return 0;
}

int sbctl_bus_send(struct sbctl_bus *b, int route, const char *key, const char *op,
                   const char *sid, const char *aux, const char *body)
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
    if (n < 0 || zmq_send(b->sock, hdr, (size_t)n, ZMQ_SNDMORE) < 0 ||
        zmq_send(b->sock, body, strlen(body), 0) < 0)
        return -1;
    return 0;
}

int sbctl_bus_recv(struct sbctl_bus *b, double secs, struct env_hdr *h, char *body, size_t cap)
{
    double deadline = sb_now() + secs;
    for (;;) {
        long left = (long)((deadline - sb_now()) * 1000);
        if (left <= 0)
            return 0;
        zmq_pollitem_t it = {b->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) <= 0)
            continue;
        zmq_msg_t f[2];
        zmq_msg_init(&f[0]);
        zmq_msg_init(&f[1]);
        int ok = zmq_msg_recv(&f[0], b->sock, 0) >= 0 && zmq_msg_more(&f[0]) &&
                 zmq_msg_recv(&f[1], b->sock, 0) >= 0;
        while (ok && zmq_msg_more(&f[1])) {      /* a batch: keep only the first */
            zmq_msg_t x;
            zmq_msg_init(&x);
            zmq_msg_recv(&x, b->sock, 0);
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

int sbctl_bus_ask(const char *instance, const char *op, const char *sid, const char *aux,
                  const char *body, char *out, size_t cap)
{
    char copy[1024], *eps[16];
    int n = sbctl_routers(copy, sizeof copy, eps, 16), answered = 0;
    struct sbctl_bus b;
    struct env_hdr h;
    for (int i = 0; i < n && !answered; i++) {
        if (sbctl_bus_open(&b, eps[i]) < 0)
            continue;
        if (sbctl_bus_send(&b, ENV_ROUTE_INSTANCE, instance, op, sid, aux, body) == 0)
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
