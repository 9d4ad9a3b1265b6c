/* mod_ping.c — XEP-0199 ping to the server (a server domain, or no `to`):
 * an empty result. Pings to a user's full JID are delivered by mod_deliver. */
#include "sm.h"

#include <string.h>

static sb_rc ping_iq(struct sm_job *j, const char *ns)
{
    if (strcmp(ns, "urn:xmpp:ping") || strcmp(j->type, "get") ||
        (j->to && !sm_job_to_domain(j)))
        return SB_DECLINED;
    struct xml_doc *d = sm_iq_result_new(j);
    if (!d || sm_send_node(j->core, d->root) != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    xml_doc_free(d);
    return SB_OK;
}

const struct sm_module sm_mod_ping = {
    .name = "ping",
    .handle_iq = ping_iq,
};
