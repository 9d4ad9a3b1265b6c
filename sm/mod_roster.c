/* mod_roster.c — roster get (RFC 6121 §2.1.3) from PostgreSQL `roster`, for
 * the sender's own account only (no `to`, or `to` = own bare JID).
 * Not yet: roster versioning (`ver`), roster set and pushes — the IM issue
 * adds them; until then a set is answered feature-not-implemented. */
#include "sm.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define NS_ROSTER "jabber:iq:roster"

/* Groups come joined by U+001F, a character XML 1.0 cannot carry, so no
 * group name can contain it. */
static const char ROSTER_SQL[] =
    "SELECT contact, coalesce(name, ''), coalesce(subscription::text, 'none'),"
    " coalesce(ask::text, ''), coalesce(array_to_string(groups, chr(31)), '')"
    " FROM roster WHERE domain = $1 AND username = $2 AND NOT removed ORDER BY contact";

static const char *roster_subscription(const char *v)
{
    static const char *const ok[] = {"none", "to", "from", "both"};
    for (size_t i = 0; i < SB_ARRAY_LEN(ok); i++)
        if (!strcmp(v, ok[i]))
            return ok[i];
    return "none";
}

/* `ask` may be stored as a boolean or as the text "subscribe". */
static int roster_ask(const char *v)
{
    return !strcmp(v, "t") || !strcmp(v, "true") || !strcmp(v, "subscribe");
}

static sb_rc roster_add_groups(struct xml_doc *d, struct xml_node *item, const char *groups)
{
    const char *p = groups;
    while (*p) {
        const char *sep = strchr(p, '\x1f');
        size_t n = sep ? (size_t)(sep - p) : strlen(p);
        struct xml_node *g = n ? xml_add_child(d, item, "group") : NULL;
        if (n && (!g || xml_add_text(d, g, p, n) != SB_OK))
            return SB_ERROR;
        p = sep ? sep + 1 : p + n;
    }
    return SB_OK;
}

static sb_rc roster_add_item(struct xml_doc *d, struct xml_node *q, PGresult *res, int row)
{
    struct xml_node *item = xml_add_child(d, q, "item");
    const char *name = PQgetvalue(res, row, 1);
    if (!item || xml_set_attr(d, item, "jid", PQgetvalue(res, row, 0)) != SB_OK ||
        (*name && xml_set_attr(d, item, "name", name) != SB_OK) ||
        xml_set_attr(d, item, "subscription",
                     roster_subscription(PQgetvalue(res, row, 2))) != SB_OK ||
        (roster_ask(PQgetvalue(res, row, 3)) &&
         xml_set_attr(d, item, "ask", "subscribe") != SB_OK))
        return SB_ERROR;
    return roster_add_groups(d, item, PQgetvalue(res, row, 4));
}

static sb_rc roster_send_result(struct sm_job *j, PGresult *res)
{
    struct xml_doc *d = sm_iq_result_new(j);
    struct xml_node *q = d ? xml_add_child(d, d->root, "query") : NULL;
    sb_rc rc = q ? xml_set_attr(d, q, "xmlns", NS_ROSTER) : SB_ERROR;
    for (int i = 0; rc == SB_OK && i < PQntuples(res); i++)
        rc = roster_add_item(d, q, res, i);
    if (rc == SB_OK)
        rc = sm_send_node(j->core, d->root);
    xml_doc_free(d);
    return rc;
}

static void roster_on_rows(PGresult *res, void *arg)
{
    struct sm_job *j = arg;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("roster_load_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else if (roster_send_result(j, res) != SB_OK) {
        sm_reply_error(j, "wait", "internal-server-error");
    } else {
        log_debug("roster_get", "jid=%s items=%d", sb_log_q(j->key), PQntuples(res));
    }
    sm_job_done(j);
}

static sb_rc roster_get(struct sm_job *j)
{
    /* The user key is the sender's own bare JID here: `node@domain`. */
    char node[ENV_STR_MAX + 1];
    const char *at = strchr(j->key, '@');
    if (!at || (size_t)(at - j->key) >= sizeof node) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    memcpy(node, j->key, (size_t)(at - j->key));
    node[at - j->key] = '\0';
    const char *params[2] = {at + 1, node};
    if (sm_pg_query(j->core, ROSTER_SQL, 2, params, roster_on_rows, j) != SB_OK) {
        sm_reply_error(j, "wait", "resource-constraint");
        return SB_OK;
    }
    return SB_AGAIN;
}

static sb_rc roster_iq(struct sm_job *j, const char *ns)
{
    if (strcmp(ns, NS_ROSTER) || !j->user || !sm_job_to_own_account(j))
        return SB_DECLINED;
    if (!strcmp(j->type, "get"))
        return roster_get(j);
    if (!strcmp(j->type, "set")) {
        /* Roster set (add/update/remove + pushes to every resource) comes
         * with the IM issue; say so instead of pretending it worked. */
        sm_reply_error(j, "cancel", "feature-not-implemented");
        return SB_OK;
    }
    return SB_OK;   /* results/errors to the account: nothing to do */
}

const struct sm_module sm_mod_roster = {
    .name = "roster",
    .handle_iq = roster_iq,
};
