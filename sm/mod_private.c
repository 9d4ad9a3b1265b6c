/* mod_private.c — XEP-0049 private XML storage (jabber:iq:private), one
 * PostgreSQL row per (account, namespace) holding the serialised children
 * of that namespace (a set MAY carry several elements of one namespace).
 *   only the own account                         else forbidden
 *   get: exactly one child, its namespace        else bad-request
 *   get: nothing stored                          the request's child echoed
 *   set: at least one child, each namespaced     else not-acceptable
 *   reserved namespaces (prefix jabber: or http://jabber.org/, vcard-temp)
 *                                                not-acceptable
 * A set is one statement, so either every namespace is stored or none. */
#include "acct.h"
#include "pep.h"
#include "log.h"

#include <string.h>

#define NS_PRIVATE "jabber:iq:private"
#define PRIVATE_MAX_BYTES (256 * 1024)  /* c2s's max_stanza bounds it anyway */

static const char *const private_features[] = {NS_PRIVATE, NULL};

static const char PRIVATE_GET_SQL[] =
    "SELECT data FROM private_storage WHERE domain = $1 AND username = $2 AND namespace = $3";
/* $3/$4: the namespaces and their data as parallel text arrays. */
static const char PRIVATE_SET_SQL[] =
    "INSERT INTO private_storage (domain, username, namespace, data)"
    " SELECT $1, $2, n, d FROM unnest($3::text[], $4::text[]) AS t(n, d)"
    " ON CONFLICT (domain, username, namespace)"
    " DO UPDATE SET data = EXCLUDED.data, updated_at = now()";

static int private_reserved(const char *ns)
{
    return !strncmp(ns, "jabber:", 7) || !strncmp(ns, "http://jabber.org/", 18) ||
           !strcmp(ns, "vcard-temp");
}

static void private_reply_done(struct sm_job *j, struct xml_doc *d)
{
    if (!d || sm_send_node(j->core, d->root) != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    xml_doc_free(d);
}

/* <query xmlns='jabber:iq:private'>STORED</query>, or the request's query. */
static struct xml_doc *private_result(struct sm_job *j, const char *stored)
{
    struct xml_doc *d = sm_iq_result_new(j);
    if (!d)
        return NULL;
    if (!stored || !*stored) {
        if (!xml_copy_into(d, d->root, xml_first_elem(j->st)))
            goto fail;
        return d;
    }
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_adds(&b, "<query xmlns='" NS_PRIVATE "'>");
    sb_buf_adds(&b, stored);
    sb_buf_adds(&b, "</query>");
    struct xml_doc *q = b.data ? xml_doc_parse(b.data, b.len, NULL, NULL) : NULL;
    sb_buf_free(&b);
    struct xml_node *n = q && q->root ? xml_copy_into(d, d->root, q->root) : NULL;
    xml_doc_free(q);
    if (n)
        return d;
fail:
    xml_doc_free(d);
    return NULL;
}

static void private_on_get(PGresult *res, void *arg)
{
    struct sm_job *j = arg;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("private_get_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else {
        private_reply_done(j, private_result(j, PQntuples(res) ? PQgetvalue(res, 0, 0) : NULL));
    }
    sm_job_done(j);
}

static void private_on_set(PGresult *res, void *arg)
{
    struct sm_job *j = arg;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_warn("private_set_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else {
        private_reply_done(j, sm_iq_result_new(j));
        /* XEP-0411: storage:bookmarks goes on to the PEP node, then done */
        if (j->user && sm_pep_compat_private_set(j, xml_first_elem(j->st)) == SB_AGAIN)
            return;
    }
    sm_job_done(j);
}

static sb_rc private_query(struct sm_job *j, const char *sql, int n, const char *const *p,
                           pgev_cb cb)
{
    if (sm_pg_query(j->core, sql, n, p, cb, j) != SB_OK) {
        sm_reply_error(j, "wait", "resource-constraint");
        return SB_OK;
    }
    return SB_AGAIN;
}

static sb_rc private_get(struct sm_job *j, const struct xml_node *q, const char **params)
{
    const struct xml_node *ch = xml_first_elem(q);
    const char *ns = ch ? xml_attr(ch, "xmlns") : NULL;
    if (!ch || xml_next_elem(ch) || !ns || !*ns) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    if (private_reserved(ns)) {
        sm_reply_error(j, "modify", "not-acceptable");
        return SB_OK;
    }
    params[2] = ns;
    return private_query(j, PRIVATE_GET_SQL, 3, params, private_on_get);
}

/* Group the children by namespace: each namespace's elements, serialised
 * one after the other, become one stored value. */
static sb_rc private_collect(const struct xml_node *q, struct sb_buf *names, struct sb_buf *vals)
{
    struct sb_buf one = SB_BUF_INIT;
    sb_buf_adds(names, "{");
    sb_buf_adds(vals, "{");
    for (const struct xml_node *ch = xml_first_elem(q); ch; ch = xml_next_elem(ch)) {
        const char *ns = xml_attr(ch, "xmlns");
        int seen = 0;
        for (const struct xml_node *p = xml_first_elem(q); p != ch; p = xml_next_elem(p))
            seen |= !strcmp(xml_attr(p, "xmlns"), ns);
        if (seen)
            continue;
        sb_buf_reset(&one);
        for (const struct xml_node *c = ch; c; c = xml_next_elem(c))
            if (!strcmp(xml_attr(c, "xmlns"), ns) && xml_serialize(c, &one) != SB_OK)
                break;
        pgev_array_add(names, ns, strlen(ns));
        pgev_array_add(vals, one.data ? one.data : "", one.len);
    }
    sb_buf_free(&one);
    sb_buf_adds(names, "}");
    sb_buf_adds(vals, "}");
    return names->data && vals->data ? SB_OK : SB_ERROR;
}

static sb_rc private_set(struct sm_job *j, const struct xml_node *q, const char **params)
{
    int n = 0;
    for (const struct xml_node *ch = xml_first_elem(q); ch; ch = xml_next_elem(ch), n++) {
        const char *ns = xml_attr(ch, "xmlns");
        if (!ns || !*ns || private_reserved(ns)) {
            sm_reply_error(j, "modify", "not-acceptable");
            return SB_OK;
        }
    }
    if (!n) {
        sm_reply_error(j, "modify", "not-acceptable");
        return SB_OK;
    }
    struct sb_buf names = SB_BUF_INIT, vals = SB_BUF_INIT;
    sb_rc rc;
    if (private_collect(q, &names, &vals) != SB_OK || vals.len > PRIVATE_MAX_BYTES * 2) {
        sm_reply_error(j, "modify", "not-acceptable");
        rc = SB_OK;
    } else {
        params[2] = names.data;
        params[3] = vals.data;
        rc = private_query(j, PRIVATE_SET_SQL, 4, params, private_on_set);
    }
    sb_buf_free(&names);
    sb_buf_free(&vals);
    return rc;
}

static sb_rc private_iq(struct sm_job *j, const char *ns)
{
    if (strcmp(ns, NS_PRIVATE) || !j->user || (j->to && strchr(j->to, '/')))
        return SB_DECLINED;             /* to a full JID: that client's business */
    if (strcmp(j->type, "get") && strcmp(j->type, "set"))
        return SB_OK;
    const struct xml_node *q = xml_first_elem(j->st);
    char node[ENV_STR_MAX + 1];
    const char *params[4];
    if (!sm_job_to_own_account(j)) {
        sm_reply_error(j, "auth", "forbidden");
        return SB_OK;
    }
    if (strcmp(q->name, "query") ||
        sm_acct_split(j->user->bare, node, sizeof node, &params[0]) != SB_OK) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    params[1] = node;
    return !strcmp(j->type, "get") ? private_get(j, q, params) : private_set(j, q, params);
}

const struct sm_module sm_mod_private = {
    .name = "private",
    .handle_iq = private_iq,
    .features = private_features,
};
