/* policy.c — which local domains exist (and which are anonymous), loaded
 * from PostgreSQL at start and every 30 s (common/domains.c), and whether a
 * local domain may exchange stanzas with a remote one: the domain's own
 * policy (sb_domains_s2s_policy: `[domain.NAME] s2s_policy`, for an
 * anonymous domain its `s2s_allow` list, the same c2s and bosh enforce for
 * its users), else `[s2s] policy` (allow). It applies to both directions.
 * Listeners open once the domains are known, so a stream header is never
 * judged against an empty list. */
#include "s2s.h"
#include "certs.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A domain added or removed: its certificate (common/certs.h) too, and
 * the streams of a domain no longer served end with <host-unknown/>
 * (RFC 6120 §4.9.3.6), both directions: the remote server learns at once
 * rather than at its next stanza (which would be refused anyway). */
static void dom_changed(void *ud)
{
    sb_certs_domains_changed();
    long n = 0;
    for (struct s2s_conn *c = s2s.conns, *next; c; c = next) {
        next = c->next;
        if (c->local && c->state != S2S_S_CLOSING && !sb_domains_find(c->local)) {
            s2s_stream_error(c, "host-unknown", "domain-removed");
            n++;
        }
    }
    if (n)
        log_info("domain_streams_closed", "streams=%ld", n);
}

/* Listeners open once the domain list (common/domains.c) first loads. */
void s2s_domains_start(void)
{
    sb_domains_serve(s2s.loop, s2s.pg, s2s_listen_start, dom_changed, NULL);
}

void s2s_domains_stop(void)
{
    sb_domains_stop();
}

/* ---- policy ----------------------------------------------------------------- */

int s2s_policy_allows(const char *local, const char *remote)
{
    char buf[2048];
    const char *v = sb_domains_s2s_policy(local, buf, sizeof buf);
    if (!v)
        v = sb_config_str("policy", "allow");
    int r = sb_domains_policy_eval(v, remote);
    if (r < 0) {
        log_warn("policy_invalid", "local=%s value=%s note=\"treated as deny\"", local,
                 sb_log_q(v));
        return 0;
    }
    return r;
}
