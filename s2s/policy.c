/* policy.c — which local domains exist (and which are anonymous), loaded
 * from PostgreSQL at start and every 30 s (common/domains.c), and whether a
 * local domain may exchange stanzas with a remote one. The policy of a
 * local domain is `[domain.NAME] s2s_policy`; an anonymous domain without
 * one allows only its `s2s_allow` list (what c2s and bosh enforce for its
 * users, none by default); other domains use `[s2s] policy` (allow):
 *   allow | deny | allow: a.example b.example | deny: a.example, b.example
 * It applies to both directions. Listeners open once the domains are known,
 * so a stream header is never judged against an empty list. */
#include "s2s.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dom_accepting;

/* Listeners open once the domain list (common/domains.c) first loads. */
static void dom_changed(void *ud)
{
    (void)ud;
    if (!dom_accepting && !s2s.stopping) {
        dom_accepting = 1;
        s2s_listen_start();
        log_info("accepting", "domains=%d", sb_domains_count());
    }
}

void s2s_domains_start(void)
{
    sb_domains_start(s2s.loop, s2s.pg, dom_changed, NULL);
}

void s2s_domains_stop(void)
{
    sb_domains_stop();
}

/* ---- policy ----------------------------------------------------------------- */

int s2s_policy_allows(const char *local, const char *remote)
{
    const char *v = sb_config_str_in("domain", local, "s2s_policy", NULL);
    char buf[2048];
    if (!v && sb_domains_anonymous(local)) {
        /* The same list the front-ends apply to anonymous users. */
        snprintf(buf, sizeof buf, "allow: %s", sb_config_str_in("domain", local, "s2s_allow", ""));
        v = buf;
    }
    if (!v)
        v = sb_config_str("policy", "allow");
    int r = s2s_policy_eval(v, remote);
    if (r < 0) {
        log_warn("policy_invalid", "local=%s value=%s note=\"treated as deny\"", local,
                 sb_log_q(v));
        return 0;
    }
    return r;
}
