/* domains.c — c2s's use of the shared domain list (common/domains.c):
 * the router learns every change, and clients are not accepted until the
 * first answer (connections wait in the listen backlog), so a stream header
 * is never judged against an empty list. */
#include "c2s.h"
#include "domains.h"
#include "log.h"

static int dom_accepting;

static void dom_changed(void *ud)
{
    (void)ud;
    link_set_domains(c2s.link, sb_domains_csv());
    if (!dom_accepting && !c2s.stopping) {
        dom_accepting = 1;
        c2s_listen_start();
        log_info("accepting", "domains=%d", sb_domains_count());
    }
}

void c2s_domains_start(void)
{
    sb_domains_start(c2s.loop, c2s.pg, dom_changed, NULL);
}

void c2s_domains_stop(void)
{
    sb_domains_stop();
}
