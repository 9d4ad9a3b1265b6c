/* limits.c — incoming s2s streams per remote address (an IPv4 address, an
 * IPv6 /64: tlsconn_addr_key) and per remote domain (the header's `from`).
 * Checked at a stream's first header by counting the incoming connections
 * of this process that share it (a few hundred at most: a walk is cheaper
 * than a table to keep right). Over `max_in_per_addr` / `max_in_per_domain`
 * the stream gets policy-violation (RFC 6120 §4.9.3.12), flagged
 * S2S_F_REFUSED so its stream_error/close lines are debug; one
 * `s2s_limited` line per source and limit per LIM_LOG_PERIOD says how many
 * were refused. Outgoing streams need no cap: one route per domain pair. */
#include "s2s.h"
#include "log.h"

#include <string.h>

#define LIM_LOG_PERIOD 10.0
#define LIM_LOG_SLOTS  16              /* sources remembered for the log */

static struct {
    char source[80];                   /* "addr=…" or "domain=…" */
    double at;
    unsigned refused;
} lim_log[LIM_LOG_SLOTS];

/* One line per source per period, with the refusals since the last. */
static void lim_note(const char *source, const char *limit, int max, const char *peer)
{
    double now = ev_now(s2s.loop);
    int slot = 0;
    for (int i = 0; i < LIM_LOG_SLOTS; i++) {
        if (strcmp(lim_log[i].source, source) == 0) {
            slot = i;
            break;
        }
        if (lim_log[i].at < lim_log[slot].at)
            slot = i;                  /* else the oldest one */
    }
    if (strcmp(lim_log[slot].source, source) != 0) {
        snprintf(lim_log[slot].source, sizeof lim_log[slot].source, "%s", source);
        lim_log[slot].at = 0;
        lim_log[slot].refused = 0;
    }
    lim_log[slot].refused++;
    if (lim_log[slot].at > 0 && now - lim_log[slot].at < LIM_LOG_PERIOD)
        return;
    log_warn("s2s_limited", "%s limit=%s max=%d refused=%u peer=%s", source, limit, max,
             lim_log[slot].refused, peer);
    lim_log[slot].at = now;
    lim_log[slot].refused = 0;
}

int s2s_limits_refused(struct s2s_conn *c, const char *from)
{
    const struct s2s_cfg *cfg = &s2s.cfg;
    uint8_t key[16], other[16];
    char shown[48], src[80];
    int by_addr = cfg->max_in_per_addr > 0 &&
                  tlsconn_addr_key(c->peer, key, shown, sizeof shown) == 0;
    int by_dom = cfg->max_in_per_domain > 0 && from;
    if (!by_addr && !by_dom)
        return 0;
    int n_addr = 0, n_dom = 0;
    for (struct s2s_conn *o = s2s.conns; o; o = o->next) {
        if (o == c || o->dir != S2S_IN || o->state == S2S_S_CLOSING)
            continue;
        if (by_addr && tlsconn_addr_key(o->peer, other, src, sizeof src) == 0 &&
            memcmp(key, other, 16) == 0)
            n_addr++;
        if (by_dom && o->remote && strcmp(o->remote, from) == 0)
            n_dom++;
    }
    if (by_addr && n_addr >= cfg->max_in_per_addr) {
        snprintf(src, sizeof src, "addr=%s", shown);
        lim_note(src, "connections", cfg->max_in_per_addr, c->peer);
    } else if (by_dom && n_dom >= cfg->max_in_per_domain) {
        snprintf(src, sizeof src, "domain=%s", from);
        lim_note(src, "domain-streams", cfg->max_in_per_domain, c->peer);
    } else {
        return 0;
    }
    c->flags |= S2S_F_REFUSED;
    return 1;
}
