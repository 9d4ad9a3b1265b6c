/* mod_disco.c — XEP-0030 service discovery on a server domain: who we are
 * (server/im) and which features the loaded modules implement. Items are
 * empty until components (MUC, upload…) exist. Disco of an account (bare
 * JID) is left to the fallback for now. */
#include "sm.h"
#include "log.h"

#include <string.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

/* Keep in step with the modules that answer these namespaces. */
static const char *const disco_features[] = {
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    "urn:xmpp:ping",
    "jabber:iq:roster",
};

static sb_rc disco_fill_info(struct xml_doc *d, struct xml_node *q)
{
    struct xml_node *id = xml_add_child(d, q, "identity");
    if (!id || xml_set_attr(d, id, "category", "server") != SB_OK ||
        xml_set_attr(d, id, "type", "im") != SB_OK ||
        xml_set_attr(d, id, "name", "Switchboard") != SB_OK)
        return SB_ERROR;
    for (size_t i = 0; i < SB_ARRAY_LEN(disco_features); i++) {
        struct xml_node *f = xml_add_child(d, q, "feature");
        if (!f || xml_set_attr(d, f, "var", disco_features[i]) != SB_OK)
            return SB_ERROR;
    }
    return SB_OK;
}

static sb_rc disco_iq(struct sm_job *j, const char *ns)
{
    int info = !strcmp(ns, NS_DISCO_INFO);
    if ((!info && strcmp(ns, NS_DISCO_ITEMS)) || !sm_job_to_domain(j))
        return SB_DECLINED;
    if (strcmp(j->type, "get")) {
        sm_reply_error(j, "cancel", "service-unavailable");
        return SB_OK;
    }
    if (xml_attr(xml_first_elem(j->st), "node")) {
        sm_reply_error(j, "cancel", "item-not-found");   /* no nodes yet */
        return SB_OK;
    }
    struct xml_doc *d = sm_iq_result_new(j);
    struct xml_node *q = d ? xml_add_child(d, d->root, "query") : NULL;
    sb_rc rc = q ? xml_set_attr(d, q, "xmlns", ns) : SB_ERROR;
    if (rc == SB_OK && info)
        rc = disco_fill_info(d, q);
    if (rc == SB_OK)
        rc = sm_send_node(j->core, d->root);
    xml_doc_free(d);
    if (rc != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    return SB_OK;
}

const struct sm_module sm_mod_disco = {
    .name = "disco",
    .handle_iq = disco_iq,
};
