/* mod_account.c — the server answering on behalf of an account (an iq to a
 * user's bare JID, RFC 6121 §8.5.1 / §8.5.3.1) and loading what the sm
 * keeps about each account (acct.h):
 *   disco#info   identities account/registered and pubsub/pep (XEP-0163
 *                §4), the features answered here and mod_pep's
 *   disco#items  the account's PEP nodes the requester may see (mod_pep)
 *   ping         XEP-0199 §4.3: the server answers for the user
 * Only for an existing account and an allowed requester (the user, or a
 * contact subscribed to the user's presence: sm_acct_authorize);
 * otherwise service-unavailable, as for an unknown account, so nothing
 * leaks about whether the account exists. */
#include "acct.h"
#include "pep.h"
#include "log.h"

#include <string.h>

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_PING "urn:xmpp:ping"

/* What the server answers for an account (keep in step with the modules
 * that handle iqs to a bare JID: this one, mod_vcard, mod_last, mod_mam,
 * mod_push (XEP-0357 §4.1: push support is announced on the account)). */
static const char *const account_features[] = {
    NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, "jabber:iq:last", "vcard-temp", "urn:xmpp:push:0",
    MAM_NS, MAM_NS_EXT, MAM_NS_FULLTEXT,
    SM_NS_VCARD_CONVERSION, SM_NS_BOOKMARKS_COMPAT,    /* pep_compat.c */
};

extern const struct sm_module sm_mod_account;
extern const char *const sm_pep_features[];

static sb_rc account_identity(struct xml_doc *d, struct xml_node *q, const char *cat,
                              const char *type)
{
    struct xml_node *id = xml_add_child(d, q, "identity");
    return id && xml_set_attr(d, id, "category", cat) == SB_OK &&
                   xml_set_attr(d, id, "type", type) == SB_OK
               ? SB_OK
               : SB_ERROR;
}

static sb_rc account_feature(struct xml_doc *d, struct xml_node *q, const char *var)
{
    struct xml_node *f = xml_add_child(d, q, "feature");
    return f && xml_set_attr(d, f, "var", var) == SB_OK ? SB_OK : SB_ERROR;
}

static int account_to_bare(const struct sm_job *j)
{
    return j->user && j->to && !strchr(j->to, '/') && !strcmp(j->to, j->user->bare);
}

static sb_rc account_disco(struct sm_job *j, int info)
{
    struct xml_node *pl = xml_first_elem(j->st);
    if (strcmp(pl->name, "query")) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    if (xml_attr(pl, "node")) {
        sm_reply_error(j, "cancel", "item-not-found");
        return SB_OK;
    }
    struct xml_doc *d = sm_iq_result_new(j);
    struct xml_node *q = d ? xml_add_child(d, d->root, "query") : NULL;
    sb_rc rc = q ? xml_set_attr(d, q, "xmlns", info ? NS_DISCO_INFO : NS_DISCO_ITEMS)
                 : SB_ERROR;
    if (rc == SB_OK && info) {
        rc = account_identity(d, q, "account", "registered");
        if (rc == SB_OK)
            rc = account_identity(d, q, "pubsub", "pep");
        for (size_t i = 0; rc == SB_OK && i < SB_ARRAY_LEN(account_features); i++)
            rc = account_feature(d, q, account_features[i]);
        for (const char *const *f = sm_pep_features; rc == SB_OK && *f; f++)
            rc = account_feature(d, q, *f);
    } else if (rc == SB_OK) {
        rc = sm_pep_disco_items(j, d, q);
    }
    if (rc == SB_OK)
        rc = sm_send_node(j->core, d->root);
    xml_doc_free(d);
    if (rc != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    return SB_OK;
}

static sb_rc account_ping(struct sm_job *j)
{
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

static sb_rc account_iq(struct sm_job *j, const char *ns)
{
    int info = !strcmp(ns, NS_DISCO_INFO), items = !strcmp(ns, NS_DISCO_ITEMS);
    int ping = !strcmp(ns, NS_PING);
    if ((!info && !items && !ping) || !account_to_bare(j))
        return SB_DECLINED;
    if (strcmp(j->type, "get") && strcmp(j->type, "set"))
        return SB_OK;                   /* results/errors to the account: nothing */
    sb_rc auth = sm_acct_user_exists(j->user) ? sm_acct_authorize(j, &sm_mod_account)
                                               : SB_DECLINED;
    if (auth == SB_AGAIN)
        return SB_AGAIN;                /* re-offered once the roster is loaded */
    if (auth != SB_OK) {
        sm_reply_error(j, auth == SB_ERROR ? "wait" : "cancel",
                       auth == SB_ERROR ? "internal-server-error" : "service-unavailable");
        return SB_OK;
    }
    if (strcmp(j->type, "get")) {
        sm_reply_error(j, "cancel", "feature-not-implemented");
        return SB_OK;
    }
    return ping ? account_ping(j) : account_disco(j, info);
}

const struct sm_module sm_mod_account = {
    .name = "account",
    .handle_iq = account_iq,
    .load_user = sm_acct_load,
    .user_free = sm_acct_free,
};
