/* drain.c — `sbctl drain INSTANCE [--timeout S] [--no-wait]`: ask a front-end
 * (c2s or bosh) through a router to stop accepting and send its streams
 * away (ADMIN op=drain, common/ENVELOPE.md), then wait until it has left
 * the cluster (gone from the routers' status) or the timeout passed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "curve.h"
#include "env.h"
#include "sb.h"
#include "sbctl.h"

#define DRAIN_ANSWER_S 2.0

struct drain_bus {
    void *ctx, *sock;
    char id[ENV_NAME_MAX + 1];
};

static void drain_bus_close(struct drain_bus *b)
{
    if (b->sock)
        zmq_close(b->sock);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    b->sock = b->ctx = NULL;
}

static int drain_bus_open(struct drain_bus *b, const struct sb_curve *curve, const char *ep)
{
    int zero = 0;
    snprintf(b->id, sizeof b->id, "sbctl-%d", (int)getpid());
    b->ctx = zmq_ctx_new();
    b->sock = b->ctx ? zmq_socket(b->ctx, ZMQ_DEALER) : NULL;
    if (!b->sock)
        return -1;
    zmq_setsockopt(b->sock, ZMQ_ROUTING_ID, b->id, strlen(b->id));
    zmq_setsockopt(b->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (sb_curve_client(curve, b->sock) != SB_OK || zmq_connect(b->sock, ep) != 0)
        return -1;
    return 0;
}

static int drain_send(struct drain_bus *b, int route, const char *key, const char *op,
                      const char *body)
{
    uint8_t hdr[ENV_HDR_MAX];
    struct env_hdr h;
    env_init(&h, ENV_ADMIN, (enum env_route)route);
    snprintf(h.key, sizeof h.key, "%s", key);
    snprintf(h.sender, sizeof h.sender, "%s", b->id);
    snprintf(h.op, sizeof h.op, "%s", op);
    long n = env_encode(&h, hdr, sizeof hdr);
    if (n < 0 || zmq_send(b->sock, hdr, (size_t)n, ZMQ_SNDMORE) < 0 ||
        zmq_send(b->sock, body, strlen(body), 0) < 0)
        return -1;
    return 0;
}

/* The next [header][body] within `secs`: 1 with h/body filled, 0 timeout. */
static int drain_recv(struct drain_bus *b, double secs, struct env_hdr *h, char *body,
                      size_t cap)
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

/* Is `name` still in the router's status (one `name=… ` line each)? 1 yes,
 * 0 no, -1 no answer. */
static int drain_listed(struct drain_bus *b, const char *name)
{
    static char body[1 << 16];
    struct env_hdr h;
    char pat[ENV_NAME_MAX + 8];
    if (drain_send(b, ENV_ROUTE_ROUTER, "", "status", "") < 0)
        return -1;
    while (drain_recv(b, DRAIN_ANSWER_S, &h, body, sizeof body))
        if (h.kind == ENV_ADMIN && !strcmp(h.op, "status")) {
            snprintf(pat, sizeof pat, "name=%s ", name);
            for (const char *p = body; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                if (!strncmp(p, pat, strlen(pat)))
                    return 1;
            return 0;
        }
    return -1;
}

static void drain_usage(void)
{
    fprintf(stderr, "usage: sbctl drain INSTANCE [--timeout SECONDS] [--no-wait]\n"
                    "  a c2s or bosh instance stops accepting, sends its streams to another\n"
                    "  front-end (see-other-host to its drain_redirect, else system-shutdown)\n"
                    "  and exits; sbctl waits until it has left the cluster\n");
}

int sbctl_cmd_drain(int argc, char **argv)
{
    const char *name = NULL;
    double timeout = 0;
    int wait = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            drain_usage();
            return SBCTL_OK;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--no-wait")) {
            wait = 0;
        } else if (argv[i][0] != '-' && !name) {
            name = argv[i];
        } else {
            drain_usage();
            return SBCTL_USAGE;
        }
    }
    if (!name || strlen(name) > ENV_NAME_MAX || timeout < 0) {
        drain_usage();
        return SBCTL_USAGE;
    }
    const char *list = sb_config_str("routers", sb_config_str("router", NULL));
    if (!list || !*list) {
        sbctl_err("no router endpoint (config key 'routers' in [cluster])");
        return SBCTL_FAIL;
    }
    struct sb_curve *curve = NULL;
    if (sb_config_bool("curve", 1) && sb_curve_load(&curve, "sbctl") != SB_OK) {
        sbctl_err("cannot load the bus CURVE keys (sbctl keys generate … sbctl)");
        return SBCTL_FAIL;
    }
    char *copy = strdup(list), *save = NULL, body[512], arg[48];
    int rc = SBCTL_FAIL, answered = 0;
    struct drain_bus b = {0};
    struct env_hdr h;
    snprintf(arg, sizeof arg, timeout > 0 ? "timeout=%g" : "", timeout);
    for (char *ep = copy ? strtok_r(copy, ", \t", &save) : NULL; ep && !answered;
         ep = strtok_r(NULL, ", \t", &save)) {
        drain_bus_close(&b);
        if (drain_bus_open(&b, curve, ep) < 0 ||
            drain_send(&b, ENV_ROUTE_INSTANCE, name, "drain", arg) < 0)
            continue;
        while (drain_recv(&b, DRAIN_ANSWER_S, &h, body, sizeof body)) {
            if (h.kind == ENV_BOUNCE) {
                sbctl_err("%s is not connected to the router at %s (%s)", name, ep, h.op);
                answered = -1;
                break;
            }
            if (h.kind == ENV_ADMIN && !strcmp(h.op, "drain")) {
                printf("draining %s: %s\n", name, body);
                answered = 1;
                break;
            }
        }
    }
    if (answered == 0)
        sbctl_err("no answer from %s through any router (is it a running c2s or bosh?)", name);
    if (answered == 1) {
        rc = SBCTL_OK;
        double t0 = sb_now(), limit = (timeout > 0 ? timeout : 30) + 10;
        while (wait) {
            int listed = drain_listed(&b, name);
            if (listed == 0) {
                printf("%s has left the cluster after %.1f s\n", name, sb_now() - t0);
                break;
            }
            if (sb_now() - t0 > limit) {
                sbctl_err("%s still listed %.0f s after the drain began", name, limit);
                rc = SBCTL_FAIL;
                break;
            }
            usleep(200 * 1000);
        }
    }
    drain_bus_close(&b);
    free(copy);
    sb_curve_free(curve);
    return rc;
}
