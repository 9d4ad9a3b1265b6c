/* mod_ping.c — XEP-0199 ping to the server (a server domain, or no `to`):
 * an empty result. Pings to a user's bare JID are mod_account's, to a full
 * JID mod_deliver's. */
#include "sm.h"

#include <string.h>

#define NS_PING "urn:xmpp:ping"

static const char *const ping_features[] = {NS_PING, NULL};

static sb_rc ping_iq(struct sm_job *j, const char *ns)
{
    if (strcmp(ns, NS_PING) || (j->to && !sm_job_to_domain(j)))
        return SB_DECLINED;
    if (!strcmp(j->type, "set")) {
        sm_reply_error(j, "cancel", "feature-not-implemented");
        return SB_OK;
    }
    if (strcmp(j->type, "get"))
        return SB_OK;                   /* results/errors: nothing to answer */
    if (strcmp(xml_first_elem(j->st)->name, "ping")) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    struct xml_doc *d = sm_iq_result_new(j);
    if (!d || sm_send_node(j->core, d->root) != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    xml_doc_free(d);
    return SB_OK;
}

const struct sm_module sm_mod_ping = {
    .name = "ping",
    .handle_iq = ping_iq,
    .features = ping_features,
};
