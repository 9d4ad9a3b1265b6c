/* status.c — `sbctl status`: ask the routers which instances are alive.
 * A DEALER socket with routing id sbctl-<pid> sends ADMIN op=status; the
 * router answers with one `key=value …` line per live instance
 * (common/ENVELOPE.md), printed here as a table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "curve.h"
#include "env.h"
#include "sbctl.h"

#define STATUS_TIMEOUT_MS 2000
#define STATUS_ROUTER_MS 1000   /* per router: a dead one must not hold up the rest */

/* Value of key in a `k=v k=v` line into out ("-" when absent). */
static void status_field(const char *line, size_t len, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    const char *p = line, *end = line + len;

    snprintf(out, cap, "-");
    while (p < end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *tok_end = sp ? sp : end;
        if ((size_t)(tok_end - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == '=') {
            snprintf(out, cap, "%.*s", (int)(tok_end - p - kl - 1), p + kl + 1);
            return;
        }
        p = tok_end + 1;
    }
}

/* s2s instances seen in the status reply: asked for their connections. */
#define STATUS_S2S_MAX 16
static char status_s2s[STATUS_S2S_MAX][64];
static int status_ns2s;

static void status_print(const char *body, size_t len)
{
    char name[64], kind[32], pid[32], age[32], sess[32], doms[512], direct[128];
    const char *p = body, *end = body + len;
    int rows = 0;

    printf("%-16s %-8s %-8s %-10s %-9s %-26s %s\n", "INSTANCE", "KIND", "PID", "HEARTBEAT",
           "SESSIONS", "DIRECT", "DOMAINS");
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (ll > 0) {
            status_field(p, ll, "name", name, sizeof(name));
            status_field(p, ll, "kind", kind, sizeof(kind));
            status_field(p, ll, "pid", pid, sizeof(pid));
            status_field(p, ll, "last_hello_ms", age, sizeof(age));
            status_field(p, ll, "sessions", sess, sizeof(sess));
            status_field(p, ll, "domains", doms, sizeof(doms));
            status_field(p, ll, "direct", direct, sizeof(direct));
            if (strcmp(age, "-") != 0) {
                double s = atof(age) / 1000.0;
                snprintf(age, sizeof(age), "%.1fs ago", s);
            }
            printf("%-16s %-8s %-8s %-10s %-9s %-26s %s\n", name, kind, pid, age, sess,
                   direct, doms[0] ? doms : "-");
            if (!strcmp(kind, "s2s") && status_ns2s < STATUS_S2S_MAX)
                snprintf(status_s2s[status_ns2s++], sizeof status_s2s[0], "%s", name);
            rows++;
        }
        p += ll + 1;
    }
    if (rows == 0)
        printf("(no live instances)\n");
}

/* Wait for one ZeroMQ message until deadline and pass each envelope in it
 * (the router batches: [h1][b1][h2][b2]…) to fn. Returns the sum of fn's
 * results, or -1 when the deadline passed with nothing received. */
typedef int (*status_fn)(const struct env_hdr *h, const char *body, size_t len, void *ud);

static int status_next(void *sock, double deadline, status_fn fn, void *ud)
{
    for (;;) {
        long left = (long)((deadline - sb_now()) * 1000);
        if (left <= 0)
            return -1;
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) > 0)
            break;
    }
    zmq_msg_t f[2];
    int n = 0, more = 1, sum = 0;
    struct env_hdr h;
    while (more) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], sock, 0) < 0) {
            zmq_msg_close(&f[n]);
            break;
        }
        more = zmq_msg_more(&f[n]);
        if (++n < 2)
            continue;
        if (env_decode(&h, zmq_msg_data(&f[0]), zmq_msg_size(&f[0])) == SB_OK)
            sum += fn(&h, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ud);
        zmq_msg_close(&f[0]);
        zmq_msg_close(&f[1]);
        n = 0;
    }
    if (n)
        zmq_msg_close(&f[0]);
    return sum;
}

/* 1: the status table was printed; -1: the router bounced the request. */
static int status_quiet;        /* only whether it answers */

static int status_on_reply(const struct env_hdr *h, const char *body, size_t len, void *ud)
{
    if (h->kind == ENV_ADMIN && strcmp(h->op, "status") == 0) {
        if (!status_quiet)
            status_print(body, len);
        return 1;
    }
    if (h->kind == ENV_BOUNCE) {
        sbctl_err("router at %s bounced the status request (%s)", (const char *)ud, h->op);
        return -1000;
    }
    return 0;
}

/* Wait for the status reply; 0 printed, -1 timeout or error (reported). */
static int status_wait(void *sock, const char *endpoint)
{
    double deadline = sb_now() + STATUS_ROUTER_MS / 1000.0;
    int r;
    while ((r = status_next(sock, deadline, status_on_reply, (void *)endpoint)) == 0)
        ;
    if (r > 0)
        return 0;
    if (r == -1)
        sbctl_err("no answer from the router at %s within %.1f s (is it running?)", endpoint,
                  STATUS_ROUTER_MS / 1000.0);
    return -1;
}

/* One row per s2s connection or route (s2s/README.md):
 * REMOTE LOCAL DIR STATE TLS AUTH IDLE INSTANCE. */
static void status_s2s_print(const char *body, size_t len)
{
    char f[8][256];
    static const char *keys[8] = {"remote", "local", "dir", "state", "tls", "auth", "idle_s",
                                  "instance"};
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (ll > 0) {
            for (int i = 0; i < 8; i++)
                status_field(p, ll, keys[i], f[i], sizeof f[i]);
            printf("%-24s %-16s %-10s %-11s %-4s %-9s %-6s %s\n", f[0], f[1], f[2], f[3],
                   !strcmp(f[4], "1") ? "yes" : "no", f[5], f[6], f[7]);
        }
        p += ll + 1;
    }
}

/* 1 for each answer (or bounce) of an s2s instance. */
static int status_on_s2s(const struct env_hdr *h, const char *body, size_t len, void *ud)
{
    if (h->kind == ENV_ADMIN && !strcmp(h->op, "s2s"))
        status_s2s_print(body, len);
    return h->kind == ENV_ADMIN || h->kind == ENV_BOUNCE;
}

/* Ask every s2s instance for its connections; prints what answers in time. */
static void status_s2s_query(void *sock, const char *id)
{
    if (status_ns2s == 0)
        return;
    uint8_t hdr[ENV_HDR_MAX];
    struct env_hdr h;
    int asked = 0;
    for (int i = 0; i < status_ns2s; i++) {
        env_init(&h, ENV_ADMIN, ENV_ROUTE_INSTANCE);
        snprintf(h.key, sizeof h.key, "%s", status_s2s[i]);
        snprintf(h.sender, sizeof h.sender, "%s", id);
        snprintf(h.op, sizeof h.op, "s2s");
        long n = env_encode(&h, hdr, sizeof hdr);
        if (n >= 0 && zmq_send(sock, hdr, (size_t)n, ZMQ_SNDMORE) >= 0 && zmq_send(sock, "", 0, 0) >= 0)
            asked++;
    }
    printf("\nS2S CONNECTIONS\n%-24s %-16s %-10s %-11s %-4s %-9s %-6s %s\n", "REMOTE", "LOCAL",
           "DIR", "STATE", "TLS", "AUTH", "IDLE", "INSTANCE");
    double deadline = sb_now() + STATUS_TIMEOUT_MS / 1000.0;
    while (asked > 0) {
        int r = status_next(sock, deadline, status_on_s2s, NULL);
        if (r < 0)
            break;
        asked -= r;
    }
    if (asked > 0)
        printf("(%d s2s instance(s) did not answer in time)\n", asked);
}

/* Ask one router for the status; print it (and the s2s connections) only
 * when `print`. 0 when it answered. */
static int status_ask(const struct sb_curve *curve, const char *endpoint, int print)
{
    char id[ENV_NAME_MAX + 1];
    uint8_t hdr[ENV_HDR_MAX];
    struct env_hdr h;
    int rc = -1, zero = 0;
    snprintf(id, sizeof(id), "sbctl-%d", (int)getpid());
    void *ctx = zmq_ctx_new();
    void *sock = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    if (!sock) {
        sbctl_err("cannot create a ZeroMQ socket: %s", zmq_strerror(zmq_errno()));
        goto out;
    }
    zmq_setsockopt(sock, ZMQ_ROUTING_ID, id, strlen(id));
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero));
    if (sb_curve_client(curve, sock) != SB_OK)
        goto out;
    if (zmq_connect(sock, endpoint) != 0) {
        sbctl_err("cannot connect to router endpoint %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto out;
    }
    env_init(&h, ENV_ADMIN, ENV_ROUTE_ROUTER);
    snprintf(h.sender, sizeof(h.sender), "%s", id);
    snprintf(h.op, sizeof(h.op), "status");
    long n = env_encode(&h, hdr, sizeof(hdr));
    if (n < 0 || zmq_send(sock, hdr, (size_t)n, ZMQ_SNDMORE) < 0 || zmq_send(sock, "", 0, 0) < 0) {
        sbctl_err("cannot send to router %s: %s", endpoint, zmq_strerror(zmq_errno()));
        goto out;
    }
    status_quiet = !print;
    if (status_wait(sock, endpoint) == 0) {
        rc = 0;
        if (print)
            status_s2s_query(sock, id);
    }
out:
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    return rc;
}

/* The instance table from the first router that answers (every router
 * reads the same membership from Redis), then whether each one answers. */
int sbctl_cmd_status(int argc, char **argv)
{
    const char *list = sb_config_str("routers", sb_config_str("router", NULL));
    if (argc != 0)
        return SBCTL_USAGE;
    if (!list || !*list) {
        sbctl_err("no router endpoint (config key 'routers' in [cluster])");
        return SBCTL_FAIL;
    }
    /* The routers admit bus members only: sbctl is one, with sbctl.key
     * (checked first so `curve = off` does not warn on every status). */
    struct sb_curve *curve = NULL;
    if (sb_config_bool("curve", 1) && sb_curve_load(&curve, "sbctl") != SB_OK) {
        sbctl_err("cannot load the bus CURVE keys (sbctl keys generate … sbctl)");
        return SBCTL_FAIL;
    }
    char *copy = strdup(list), *save = NULL;
    char *eps[16];
    int n = 0, shown = -1;
    for (char *t = copy ? strtok_r(copy, ", \t", &save) : NULL; t && n < 16;
         t = strtok_r(NULL, ", \t", &save))
        eps[n++] = t;
    int up[16] = {0};
    for (int i = 0; i < n; i++) {
        up[i] = status_ask(curve, eps[i], shown < 0) == 0;
        if (up[i] && shown < 0)
            shown = i;
    }
    printf("\nROUTERS\n");
    for (int i = 0; i < n; i++)
        printf("%-40s %s\n", eps[i], up[i] ? "answering" : "no answer");
    free(copy);
    sb_curve_free(curve);
    return shown >= 0 ? SBCTL_OK : SBCTL_FAIL;
}
