/* domains.c — c2s's use of the shared domain list (common/domains.c):
 * the router learns every change, a new domain's certificate is loaded
 * (common/certs.h), the streams of a removed one are closed
 * (host-unknown), and clients are accepted only after the first answer
 * (sb_domains_serve; until then they wait in the listen backlog). */
#include "c2s.h"
#include "certs.h"
#include "domains.h"
#include "log.h"

/* Streams of a domain no longer served end with host-unknown (RFC 6120
 * §4.9.3.6): the domain was deleted (sbctl domain del). */
static void dom_close_removed(void)
{
    long n = 0;
    for (struct c2s_conn *c = c2s.conns, *next; c; c = next) {
        next = c->next;
        if (c->domain && c->state != C2S_S_CLOSING && !sb_domains_has(c->domain)) {
            c2s_stream_error_full(c, "host-unknown", NULL, "this domain is no longer served", NULL,
                                  "domain-removed");
            n++;
        }
    }
    if (n)
        log_info("domain_streams_closed", "streams=%ld", n);
}

static void dom_changed(void *ud)
{
    link_set_domains(c2s.link, sb_domains_csv());
    sb_certs_domains_changed();
    dom_close_removed();
}

void c2s_domains_start(void)
{
    sb_domains_serve(c2s.loop, c2s.pg, c2s_listen_start, dom_changed, NULL);
}

void c2s_domains_stop(void)
{
    sb_domains_stop();
}
