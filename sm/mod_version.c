/* mod_version.c — XEP-0092 software version of the server (an iq to a
 * server domain): name and version from common/version.h. No <os/>: the
 * XEP makes it optional and it only helps attackers. A version query to a
 * user's full JID is delivered to that client by mod_deliver. */
#include "sm.h"
#include "version.h"

#include <string.h>

#define NS_VERSION "jabber:iq:version"

static const char *const version_features[] = {NS_VERSION, NULL};

static sb_rc version_add(struct xml_doc *d, struct xml_node *q, const char *name,
                         const char *text)
{
    struct xml_node *n = xml_add_child(d, q, name);
    return n ? xml_add_text(d, n, text, strlen(text)) : SB_ERROR;
}

static sb_rc version_iq(struct sm_job *j, const char *ns)
{
    if (strcmp(ns, NS_VERSION) || !sm_job_to_domain(j))
        return SB_DECLINED;
    if (!strcmp(j->type, "set")) {
        sm_reply_error(j, "cancel", "feature-not-implemented");
        return SB_OK;
    }
    if (strcmp(j->type, "get"))
        return SB_OK;
    if (strcmp(xml_first_elem(j->st)->name, "query")) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    struct xml_doc *d = sm_iq_result_new(j);
    struct xml_node *q = d ? xml_add_child(d, d->root, "query") : NULL;
    sb_rc rc = q ? xml_set_attr(d, q, "xmlns", NS_VERSION) : SB_ERROR;
    if (rc == SB_OK)
        rc = version_add(d, q, "name", SB_SOFTWARE_NAME);
    if (rc == SB_OK)
        rc = version_add(d, q, "version", SB_VERSION);
    if (rc == SB_OK)
        rc = sm_send_node(j->core, d->root);
    xml_doc_free(d);
    if (rc != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    return SB_OK;
}

const struct sm_module sm_mod_version = {
    .name = "version",
    .handle_iq = version_iq,
    .features = version_features,
};
