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
#include "env.h"
#include "sb.h"
#include "sbctl.h"

#define DRAIN_ANSWER_S 2.0

/* Is `name` still in the router's status (one `name=… ` line each)? 1 yes,
 * 0 no, -1 no answer. */
static int drain_listed(struct sbctl_bus *b, const char *name)
{
    static char body[1 << 16];
    struct env_hdr h;
    char pat[ENV_NAME_MAX + 8];
    if (sbctl_bus_send(b, ENV_ROUTE_ROUTER, "", "status", "", "", "") < 0)
        return -1;
    while (sbctl_bus_recv(b, DRAIN_ANSWER_S, &h, body, sizeof body))
        if (h.kind == ENV_ADMIN && !strcmp(h.op, "status")) {
            snprintf(pat, sizeof pat, "name=%s ", name);
            for (const char *p = body; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                if (!strncmp(p, pat, strlen(pat)))
                    return 1;
            return 0;
        }
    return -1;
}

int sbctl_cmd_drain(int argc, char **argv)
{
    const char *name = NULL;
    double timeout = 0;
    int wait = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--no-wait")) {
            wait = 0;
        } else if (argv[i][0] != '-' && !name) {
            name = argv[i];
        } else {
            return SBCTL_USAGE;
        }
    }
    if (!name || strlen(name) > ENV_NAME_MAX || timeout < 0)
        return SBCTL_USAGE;
    char copy[1024], *eps[16], body[512], arg[48];
    int n = sbctl_routers(copy, sizeof copy, eps, 16), rc = SBCTL_FAIL, answered = 0;
    struct sbctl_bus b = {0};
    struct env_hdr h;
    if (n < 0)
        return SBCTL_FAIL;
    snprintf(arg, sizeof arg, timeout > 0 ? "timeout=%g" : "", timeout);
    for (int i = 0; i < n && !answered; i++) {
        sbctl_bus_close(&b);
        if (sbctl_bus_open(&b, eps[i]) < 0 ||
            sbctl_bus_send(&b, ENV_ROUTE_INSTANCE, name, "drain", "", "", arg) < 0)
            continue;
        while (sbctl_bus_recv(&b, DRAIN_ANSWER_S, &h, body, sizeof body)) {
            if (h.kind == ENV_BOUNCE) {
                sbctl_err("%s is not connected to the router at %s (%s)", name, eps[i], h.op);
                answered = -1;
                break;
            }
            if (h.kind == ENV_ADMIN && !strcmp(h.op, "drain")) {
                if (sbctl_json) {
                    sj_obj(NULL);
                    sj_str("instance", name);
                    sj_str("answer", body);
                } else
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
                if (!sbctl_json)
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
    if (answered == 1 && sbctl_json) {
        sj_bool("left", rc == SBCTL_OK && wait);
        sj_end_obj();
    }
    sbctl_bus_close(&b);
    return rc;
}
