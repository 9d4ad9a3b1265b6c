/* domains.c — c2s's use of the shared domain list (common/domains.c):
 * the router learns every change, a new domain's certificate is loaded
 * (common/certs.h), and clients are accepted only after the first answer
 * (sb_domains_serve; until then they wait in the listen backlog). */
#include "c2s.h"
#include "certs.h"
#include "domains.h"

static void dom_changed(void *ud)
{
    link_set_domains(c2s.link, sb_domains_csv());
    sb_certs_domains_changed();
}

void c2s_domains_start(void)
{
    sb_domains_serve(c2s.loop, c2s.pg, c2s_listen_start, dom_changed, NULL);
}

void c2s_domains_stop(void)
{
    sb_domains_stop();
}
