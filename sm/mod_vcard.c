/* mod_vcard.c — XEP-0054 vcard-temp, stored in PostgreSQL (`vcards`, the
 * element as serialised XML).
 *   get, no `to` or own bare JID  the user's vCard, or an empty <vCard/>
 *   get, another user's bare JID  that user's vCard (vCards are public);
 *                                 service-unavailable for no such account
 *   set, own account              replaces it; larger than [sm]
 *                                 vcard_max_size (65536) → not-acceptable
 *   set, another account          forbidden
 * A vCard query to a full JID is a client's business (mod_deliver). */
#include "acct.h"
#include "pep.h"
#include "config.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define NS_VCARD "vcard-temp"

static const char *const vcard_features[] = {NS_VCARD, NULL};

static const char VCARD_GET_SQL[] =
    "SELECT vcard FROM vcards WHERE domain = $1 AND username = $2";
static const char VCARD_SET_SQL[] =
    "INSERT INTO vcards (domain, username, vcard) VALUES ($1, $2, $3)"
    " ON CONFLICT (domain, username) DO UPDATE SET vcard = EXCLUDED.vcard, updated_at = now()";

/* The result: the stored element, or an empty <vCard xmlns='vcard-temp'/>. */
static sb_rc vcard_send(struct sm_job *j, const char *stored)
{
    struct xml_doc *d = sm_iq_result_new(j);
    struct xml_doc *v = stored && *stored ? xml_doc_parse(stored, strlen(stored), NULL, NULL) : NULL;
    struct xml_node *n = NULL;
    if (d && v && v->root) {
        n = xml_copy_into(d, d->root, v->root);
    } else if (d) {
        if (stored && *stored)
            log_warn("vcard_unreadable", "jid=%s", sb_log_q(j->key));
        n = xml_add_child(d, d->root, "vCard");
        if (n && xml_set_attr(d, n, "xmlns", NS_VCARD) != SB_OK)
            n = NULL;
    }
    sb_rc rc = n ? sm_send_node(j->core, d->root) : SB_ERROR;
    xml_doc_free(v);
    xml_doc_free(d);
    return rc;
}

static void vcard_on_get(PGresult *res, void *arg)
{
    struct sm_job *j = arg;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("vcard_get_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else if (vcard_send(j, PQntuples(res) ? PQgetvalue(res, 0, 0) : NULL) != SB_OK) {
        sm_reply_error(j, "wait", "internal-server-error");
    }
    sm_job_done(j);
}

static void vcard_on_set(PGresult *res, void *arg)
{
    struct sm_job *j = arg;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_warn("vcard_set_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else {
        struct xml_doc *d = sm_iq_result_new(j);
        if (!d || sm_send_node(j->core, d->root) != SB_OK)
            sm_reply_error(j, "wait", "internal-server-error");
        xml_doc_free(d);
        log_info("vcard_set", "jid=%s", sb_log_q(j->key));
        if (j->user && sm_pep_compat_vcard_set(j, xml_first_elem(j->st)) == SB_AGAIN)
            return;                     /* XEP-0398: the avatar follows, then done */
    }
    sm_job_done(j);
}

/* ---- XEP-0398: the PHOTO from the PEP avatar (pep_compat.c) ------------------------------ */

struct vcard_photo {
    struct sm_job *j;
    char *type, *b64;
    char node[ENV_STR_MAX + 1];
    const char *domain;
};

static void vcard_photo_free(struct vcard_photo *p)
{
    free(p->type);
    free(p->b64);
    free(p);
}

static void vcard_photo_written(PGresult *res, void *arg)
{
    struct vcard_photo *p = arg;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("vcard_photo_failed", "jid=%s error=%s", sb_log_q(p->j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
    else
        log_info("vcard_photo_from_avatar", "jid=%s", sb_log_q(p->j->key));
    struct sm_job *j = p->j;
    vcard_photo_free(p);
    sm_job_done(j);
}

/* The stored vCard (or an empty one) with its PHOTO replaced. */
static void vcard_photo_read(PGresult *res, void *arg)
{
    struct vcard_photo *p = arg;
    struct sm_job *j = p->j;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("vcard_photo_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        vcard_photo_free(p);
        sm_job_done(j);
        return;
    }
    const char *stored = PQntuples(res) ? PQgetvalue(res, 0, 0) : NULL;
    struct xml_doc *v = stored && *stored ? xml_doc_parse(stored, strlen(stored), NULL, NULL)
                                          : NULL;
    if (!v || !v->root || strcmp(v->root->name, "vCard")) {
        xml_doc_free(v);
        v = xml_doc_new("vCard");
        if (v && xml_set_attr(v, v->root, "xmlns", NS_VCARD) != SB_OK) {
            xml_doc_free(v);
            v = NULL;
        }
    }
    struct xml_node *old;
    while (v && (old = xml_child(v->root, "PHOTO", NULL)))
        xml_unlink(old);
    struct xml_node *ph = v ? xml_add_child(v, v->root, "PHOTO") : NULL;
    struct xml_node *ty = ph ? xml_add_child(v, ph, "TYPE") : NULL;
    struct xml_node *bv = ph ? xml_add_child(v, ph, "BINVAL") : NULL;
    struct sb_buf b = SB_BUF_INIT;
    if (!ty || !bv || xml_add_text(v, ty, p->type, strlen(p->type)) != SB_OK ||
        xml_add_text(v, bv, p->b64, strlen(p->b64)) != SB_OK ||
        xml_serialize(v->root, &b) != SB_OK || !b.data ||
        (long)b.len > sb_config_int("vcard_max_size", 65536)) {
        log_info("vcard_photo_failed", "jid=%s reason=build-or-size", sb_log_q(j->key));
        goto done;
    }
    const char *params[3] = {p->domain, p->node, (const char *)b.data};
    if (sm_pg_query(j->core, VCARD_SET_SQL, 3, params, vcard_photo_written, p) == SB_OK) {
        sb_buf_free(&b);
        xml_doc_free(v);
        return;
    }
done:
    sb_buf_free(&b);
    xml_doc_free(v);
    vcard_photo_free(p);
    sm_job_done(j);
}

sb_rc sm_vcard_photo_set(struct sm_job *j, const char *type, const char *b64)
{
    struct vcard_photo *p = calloc(1, sizeof *p);
    if (!p || !j->user ||
        sm_acct_split(j->user->bare, p->node, sizeof p->node, &p->domain) != SB_OK ||
        !(p->type = strdup(type)) || !(p->b64 = strdup(b64))) {
        if (p)
            vcard_photo_free(p);
        return SB_ERROR;
    }
    p->j = j;
    const char *params[2] = {p->domain, p->node};
    if (sm_pg_query(j->core, VCARD_GET_SQL, 2, params, vcard_photo_read, p) != SB_OK) {
        vcard_photo_free(p);
        return SB_ERROR;
    }
    return SB_AGAIN;
}

static sb_rc vcard_query(struct sm_job *j, const char *sql, int n, const char *const *params,
                         pgev_cb cb)
{
    if (sm_pg_query(j->core, sql, n, params, cb, j) != SB_OK) {
        sm_reply_error(j, "wait", "resource-constraint");
        return SB_OK;
    }
    return SB_AGAIN;
}

static sb_rc vcard_set(struct sm_job *j, const char *domain, const char *node)
{
    if (!sm_job_to_own_account(j)) {
        sm_reply_error(j, "auth", "forbidden");
        return SB_OK;
    }
    long max = sb_config_int("vcard_max_size", 65536);
    struct sb_buf b = SB_BUF_INIT;
    sb_rc rc = xml_serialize(xml_first_elem(j->st), &b);
    if (rc != SB_OK || !b.data) {
        sb_buf_free(&b);
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    if ((long)b.len > max) {
        log_info("vcard_too_big", "jid=%s bytes=%zu max=%ld", sb_log_q(j->key), b.len, max);
        sb_buf_free(&b);
        sm_reply_error(j, "modify", "not-acceptable");
        return SB_OK;
    }
    const char *params[3] = {domain, node, b.data};
    sb_rc out = vcard_query(j, VCARD_SET_SQL, 3, params, vcard_on_set);
    sb_buf_free(&b);                    /* pgev copied the parameters */
    return out;
}

static sb_rc vcard_iq(struct sm_job *j, const char *ns)
{
    if (strcmp(ns, NS_VCARD) || !j->user || (j->to && strcmp(j->to, j->user->bare)))
        return SB_DECLINED;
    if (strcmp(j->type, "get") && strcmp(j->type, "set"))
        return SB_OK;
    if (strcmp(xml_first_elem(j->st)->name, "vCard")) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    char node[ENV_STR_MAX + 1];
    const char *domain;
    if (sm_acct_split(j->user->bare, node, sizeof node, &domain) != SB_OK ||
        !sm_acct_user_exists(j->user)) {
        sm_reply_error(j, "cancel", "service-unavailable");
        return SB_OK;
    }
    if (!strcmp(j->type, "set"))
        return vcard_set(j, domain, node);
    const char *params[2] = {domain, node};
    return vcard_query(j, VCARD_GET_SQL, 2, params, vcard_on_get);
}

const struct sm_module sm_mod_vcard = {
    .name = "vcard",
    .handle_iq = vcard_iq,
    .features = vcard_features,
};
