/* mod_disco.c — XEP-0030 service discovery on a server domain: who we are
 * (server/im) and which features the loaded modules implement — the union
 * of every module's `features` list, so a feature is advertised exactly
 * when its module is in sm/modules.c. Items: the upload service
 * (mod_upload, `upload.D` when [upload] url is set), the external components
 * (XEP-0114, `[component.NAME]` sections) that are subdomains of the
 * domain asked, and the domain's MUC service (`[muc] subdomain`, sb-muc).
 * Disco of an account (bare JID) is mod_account's. */
#include "sm.h"
#include "config.h"
#include "version.h"
#include "log.h"
#include "domains.h"
#include "jid.h"

#include <string.h>
#include <strings.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

static const char *const disco_features[] = {NS_DISCO_INFO, NS_DISCO_ITEMS, NULL};

/* A feature listed by two modules is advertised once. */
static int disco_listed_before(size_t mod, const char *var)
{
    for (size_t i = 0; i < mod; i++)
        for (const char *const *f = sm_modules[i]->features; f && *f; f++)
            if (!strcmp(*f, var))
                return 1;
    return 0;
}

static sb_rc disco_fill_info(struct xml_doc *d, struct xml_node *q)
{
    struct xml_node *id = xml_add_child(d, q, "identity");
    if (!id || xml_set_attr(d, id, "category", "server") != SB_OK ||
        xml_set_attr(d, id, "type", "im") != SB_OK ||
        xml_set_attr(d, id, "name", SB_SOFTWARE_NAME) != SB_OK)
        return SB_ERROR;
    for (size_t m = 0; m < sm_nmodules; m++) {
        for (const char *const *f = sm_modules[m]->features; f && *f; f++) {
            if (disco_listed_before(m, *f))
                continue;
            struct xml_node *fe = xml_add_child(d, q, "feature");
            if (!fe || xml_set_attr(d, fe, "var", *f) != SB_OK)
                return SB_ERROR;
        }
    }
    return SB_OK;
}

struct disco_items {
    struct xml_doc *d;
    struct xml_node *q;
    const char *domain;
    sb_rc rc;
};

/* One [component.NAME] section (found by its secret or secret_file key;
 * a section with both is listed once, by the first). */
static void disco_item_one(const char *section, const char *value, void *ud)
{
    struct disco_items *it = ud;
    if (strncmp(section, "component.", 10) != 0 || it->rc != SB_OK)
        return;
    const char *name = section + 10;
    size_t n = strlen(name), dl = strlen(it->domain);
    if (n <= dl + 1 || name[n - dl - 1] != '.' || strcasecmp(name + n - dl, it->domain) != 0)
        return;
    for (struct xml_node *c = it->q->children; c; c = c->next)
        if (c->name && !strcmp(c->name, "item") && xml_attr(c, "jid") &&
            !strcasecmp(xml_attr(c, "jid"), name))
            return;
    struct xml_node *item = xml_add_child(it->d, it->q, "item");
    if (!item || xml_set_attr(it->d, item, "jid", name) != SB_OK)
        it->rc = SB_ERROR;
}

static sb_rc disco_fill_items(struct xml_doc *d, struct xml_node *q, const char *domain)
{
    struct disco_items it = {d, q, domain, SB_OK};
    if (sm_upload_serves(domain)) {
        char jid[1100];
        snprintf(jid, sizeof jid, "upload.%s", domain);
        struct xml_node *item = xml_add_child(d, q, "item");
        if (!item || xml_set_attr(d, item, "jid", jid) != SB_OK ||
            xml_set_attr(d, item, "name", "HTTP File Upload") != SB_OK)
            return SB_ERROR;
    }
    char muc[JID_PART_MAX + 1];
    if (sb_domains_muc_of(domain, muc, sizeof muc) == SB_OK) {     /* XEP-0045, sb-muc */
        struct xml_node *item = xml_add_child(d, q, "item");
        if (!item || xml_set_attr(d, item, "jid", muc) != SB_OK)
            return SB_ERROR;
    }
    sb_config_each_key("secret", disco_item_one, &it);
    sb_config_each_key("secret_file", disco_item_one, &it);
    return it.rc;
}

static sb_rc disco_iq(struct sm_job *j, const char *ns)
{
    int info = !strcmp(ns, NS_DISCO_INFO);
    if ((!info && strcmp(ns, NS_DISCO_ITEMS)) || !sm_job_to_domain(j))
        return SB_DECLINED;
    if (strcmp(j->type, "get")) {
        if (!strcmp(j->type, "set"))    /* a namespace we know, a type it lacks */
            sm_reply_error(j, "cancel", "feature-not-implemented");
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
    else if (rc == SB_OK)
        rc = disco_fill_items(d, q, j->to);
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
    .features = disco_features,
};
