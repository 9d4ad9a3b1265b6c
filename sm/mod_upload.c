/* mod_upload.c — XEP-0363 HTTP File Upload: the slot service `upload.D` of
 * every (non-anonymous) local domain D, when [upload] url is set. The sm
 * announces upload.D with its domains (cluster.c), so the router hashes
 * iqs to it over the live sms like any domain; any sm answers, none keeps
 * state: the quota is in PostgreSQL (deploy/migrations/009_upload.sql) and
 * a slot is a signed URL (common/upload.h) that any sb-bosh verifies.
 *   disco#info      identity store/file, the feature, max-file-size form
 *   disco#items     empty
 *   request         from a user of D only                 else forbidden
 *                   filename, size > 0, valid content-type else bad-request
 *                   size > max_file_size  not-acceptable + <file-too-large>
 *                   type not in allowed_types             not-acceptable
 *                   over the user's quota                 resource-constraint
 * The hourly purge gives back the quota of slots older than expire_days. */
#include "sm.h"
#include "config.h"
#include "domains.h"
#include "log.h"
#include "upload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_UPLOAD "urn:xmpp:http:upload:0"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define UPLOAD_SUB "upload."
#define UPLOAD_PURGE_EVERY 3600.0

static struct upload_cfg up_cfg;
static int up_state;                    /* 0 unread, 1 on, -1 off */
static char *up_announce;               /* last announced csv */
static ev_timer up_purge_timer;
static struct sm_core *up_core;

static int upload_on(void)
{
    if (!up_state) {
        sb_rc rc = upload_cfg_load(&up_cfg);
        up_state = rc == SB_OK ? 1 : -1;
        if (rc == SB_OK)
            log_info("upload_ready", "url=%s max_file_size=%lld quota=%lld expire_days=%ld",
                     sb_log_q(up_cfg.url), up_cfg.max_size, up_cfg.quota, up_cfg.expire_days);
    }
    return up_state > 0;
}

const char *sm_upload_announce(const char *csv)
{
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_adds(&b, csv);
    if (upload_on()) {
        char *copy = strdup(csv), *save = NULL;
        for (char *d = copy ? strtok_r(copy, ",", &save) : NULL; d; d = strtok_r(NULL, ",", &save))
            if (!sb_domains_anonymous(d))
                sb_buf_printf(&b, ",%s%s", UPLOAD_SUB, d);
        free(copy);
    }
    free(up_announce);
    up_announce = b.data ? b.data : strdup(csv);
    return up_announce ? up_announce : csv;
}

int sm_upload_serves(const char *domain)
{
    return upload_on() && sb_domains_has(domain) && !sb_domains_anonymous(domain);
}

/* The served domain D of `upload.D`, or NULL. */
static const char *upload_domain_of(const char *to)
{
    if (!to || strncmp(to, UPLOAD_SUB, strlen(UPLOAD_SUB)) || strchr(to, '@') || strchr(to, '/'))
        return NULL;
    const char *d = to + strlen(UPLOAD_SUB);
    return sm_upload_serves(d) ? d : NULL;
}

static sb_rc upload_send(struct sm_job *j, struct xml_doc *d, sb_rc rc)
{
    if (rc == SB_OK && d)
        rc = sm_send_node(j->core, d->root);
    else
        rc = SB_ERROR;
    xml_doc_free(d);
    if (rc != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    return SB_OK;
}

static struct xml_node *upload_text_child(struct xml_doc *d, struct xml_node *p,
                                          const char *name, const char *text)
{
    struct xml_node *n = xml_add_child(d, p, name);
    if (n && xml_add_text(d, n, text, strlen(text)) != SB_OK)
        return NULL;
    return n;
}

static sb_rc upload_field(struct xml_doc *d, struct xml_node *x, const char *var,
                          const char *type, const char *value)
{
    struct xml_node *f = xml_add_child(d, x, "field");
    if (!f || xml_set_attr(d, f, "var", var) != SB_OK ||
        (type && xml_set_attr(d, f, "type", type) != SB_OK) ||
        !upload_text_child(d, f, "value", value))
        return SB_ERROR;
    return SB_OK;
}

static sb_rc upload_disco(struct sm_job *j, int info)
{
    char max[32];
    struct xml_doc *d = sm_iq_result_new(j);
    struct xml_node *q = d ? xml_add_child(d, d->root, "query") : NULL;
    sb_rc rc = q ? xml_set_attr(d, q, "xmlns", info ? NS_DISCO_INFO : NS_DISCO_ITEMS) : SB_ERROR;
    if (rc != SB_OK || !info)
        return upload_send(j, d, rc);
    struct xml_node *id = xml_add_child(d, q, "identity");
    struct xml_node *f1 = xml_add_child(d, q, "feature");
    struct xml_node *f2 = xml_add_child(d, q, "feature");
    struct xml_node *x = xml_add_child(d, q, "x");
    snprintf(max, sizeof max, "%lld", up_cfg.max_size);
    if (!id || !f1 || !f2 || !x || xml_set_attr(d, id, "category", "store") != SB_OK ||
        xml_set_attr(d, id, "type", "file") != SB_OK ||
        xml_set_attr(d, id, "name", "HTTP File Upload") != SB_OK ||
        xml_set_attr(d, f1, "var", NS_UPLOAD) != SB_OK ||
        xml_set_attr(d, f2, "var", NS_DISCO_INFO) != SB_OK ||
        xml_set_attr(d, x, "xmlns", "jabber:x:data") != SB_OK ||
        xml_set_attr(d, x, "type", "result") != SB_OK ||
        upload_field(d, x, "FORM_TYPE", "hidden", NS_UPLOAD) != SB_OK ||
        upload_field(d, x, "max-file-size", NULL, max) != SB_OK)
        rc = SB_ERROR;
    return upload_send(j, d, rc);
}

static void upload_too_large(struct sm_job *j)
{
    char max[32];
    snprintf(max, sizeof max, "%lld", up_cfg.max_size);
    struct xml_doc *e = xml_doc_new("file-too-large");
    if (!e || xml_set_attr(e, e->root, "xmlns", NS_UPLOAD) != SB_OK ||
        !upload_text_child(e, e->root, "max-file-size", max) ||
        sm_reply_error_with(j, "modify", "not-acceptable", NULL, NULL, e->root) != SB_OK)
        sm_reply_error(j, "modify", "not-acceptable");
    xml_doc_free(e);
}

/* What a granted slot needs once PostgreSQL said yes. */
struct upload_slot {
    struct sm_job *j;
    char id[UPLOAD_ID_LEN + 1];
    char ename[UPLOAD_ENAME_MAX + 1];
    char ctype[UPLOAD_CTYPE_MAX + 1];
    long long size;
};

static const char UPLOAD_SLOT_SQL[] =
    "WITH q AS (INSERT INTO upload_quota AS q (domain, username, bytes) VALUES ($1, $2, $3)"
    "  ON CONFLICT (domain, username) DO UPDATE SET bytes = q.bytes + EXCLUDED.bytes"
    "  WHERE q.bytes + EXCLUDED.bytes <= $4 RETURNING bytes)"
    " INSERT INTO upload_files (id, domain, username, size) SELECT $5, $1, $2, $3 FROM q"
    " RETURNING id";

static sb_rc upload_slot_reply(struct upload_slot *s)
{
    struct sm_job *j = s->j;
    char path[UPLOAD_ID_LEN + UPLOAD_ENAME_MAX + 2], sig[UPLOAD_SIG_HEX + 1];
    struct sb_buf put = SB_BUF_INIT, get = SB_BUF_INIT;
    long long expiry = (long long)time(NULL) + up_cfg.slot_ttl;
    snprintf(path, sizeof path, "%s/%s", s->id, s->ename);
    upload_sign(up_cfg.secret, path, s->size, s->ctype, expiry, sig);
    sb_buf_printf(&get, "%s/%s", up_cfg.url, path);
    sb_buf_printf(&put, "%s/%s?e=%lld&n=%lld&s=%s", up_cfg.url, path, expiry, s->size, sig);
    struct xml_doc *d = sm_iq_result_new(j);
    struct xml_node *slot = d ? xml_add_child(d, d->root, "slot") : NULL;
    struct xml_node *p = slot ? xml_add_child(d, slot, "put") : NULL;
    struct xml_node *g = slot ? xml_add_child(d, slot, "get") : NULL;
    sb_rc rc = put.data && get.data && p && g &&
               xml_set_attr(d, slot, "xmlns", NS_UPLOAD) == SB_OK &&
               xml_set_attr(d, p, "url", put.data) == SB_OK &&
               xml_set_attr(d, g, "url", get.data) == SB_OK ? SB_OK : SB_ERROR;
    sb_buf_free(&put);
    sb_buf_free(&get);
    log_info("upload_slot", "jid=%s id=%s size=%lld type=%s", sb_log_q(j->from), s->id, s->size,
             sb_log_q(s->ctype));
    return upload_send(j, d, rc);
}

static void upload_on_slot(PGresult *res, void *arg)
{
    struct upload_slot *s = arg;
    struct sm_job *j = s->j;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("upload_slot_failed", "jid=%s error=%s", sb_log_q(j->from),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else if (PQntuples(res) == 0) {
        log_info("upload_quota_exceeded", "jid=%s size=%lld quota=%lld", sb_log_q(j->from),
                 s->size, up_cfg.quota);
        sm_reply_error(j, "wait", "resource-constraint");
    } else {
        upload_slot_reply(s);
    }
    free(s);
    sm_job_done(j);
}

static sb_rc upload_request(struct sm_job *j, const char *domain, const struct xml_node *req)
{
    const char *at = strchr(j->from, '@'), *slash = strchr(j->from, '/');
    size_t dl = strlen(domain);
    if (!at || (slash ? (size_t)(slash - at - 1) : strlen(at + 1)) != dl ||
        strncmp(at + 1, domain, dl)) {
        sm_reply_error(j, "auth", "forbidden");     /* only D's users use upload.D */
        return SB_OK;
    }
    const char *name = xml_attr(req, "filename"), *ct = xml_attr(req, "content-type");
    long long size = upload_decimal(xml_attr(req, "size"));
    struct upload_slot *s = calloc(1, sizeof *s);
    if (!s) {
        sm_reply_error(j, "wait", "resource-constraint");
        return SB_OK;
    }
    s->j = j;
    s->size = size;
    snprintf(s->ctype, sizeof s->ctype, "%s", ct && *ct ? ct : "application/octet-stream");
    if (strcmp(j->type, "get") || !name || size <= 0 ||
        upload_name_encode(name, s->ename, sizeof s->ename) != SB_OK ||
        (ct && strlen(ct) > UPLOAD_CTYPE_MAX) || !upload_ctype_valid(s->ctype)) {
        log_info("upload_bad_request", "jid=%s size=%s", sb_log_q(j->from),
                 sb_log_q(xml_attr(req, "size") ? xml_attr(req, "size") : "-"));
        sm_reply_error(j, "modify", "bad-request");
    } else if (size > up_cfg.max_size) {
        log_info("upload_too_large", "jid=%s size=%lld max=%lld", sb_log_q(j->from), size,
                 up_cfg.max_size);
        upload_too_large(j);
    } else if (!upload_type_allowed(&up_cfg, s->ctype)) {
        log_info("upload_type_refused", "jid=%s type=%s", sb_log_q(j->from), sb_log_q(s->ctype));
        sm_reply_error(j, "modify", "not-acceptable");
    } else if (up_cfg.quota && size > up_cfg.quota) {
        log_info("upload_quota_exceeded", "jid=%s size=%lld quota=%lld", sb_log_q(j->from), size,
                 up_cfg.quota);
        sm_reply_error(j, "wait", "resource-constraint");
    } else {
        char user[1024], sz[24], quota[24];
        snprintf(user, sizeof user, "%.*s", (int)(at - j->from), j->from);
        snprintf(sz, sizeof sz, "%lld", size);
        snprintf(quota, sizeof quota, "%lld", up_cfg.quota ? up_cfg.quota : (long long)1 << 62);
        sb_random_id(s->id, UPLOAD_ID_LEN);
        const char *params[5] = {domain, user, sz, quota, s->id};
        if (sm_pg_query(j->core, UPLOAD_SLOT_SQL, 5, params, upload_on_slot, s) == SB_OK)
            return SB_AGAIN;
        sm_reply_error(j, "wait", "resource-constraint");
    }
    free(s);
    return SB_OK;
}

static sb_rc upload_iq(struct sm_job *j, const char *ns)
{
    const char *domain = upload_domain_of(j->to);
    if (!domain)
        return SB_DECLINED;
    const struct xml_node *q = xml_first_elem(j->st);
    int info = !strcmp(ns, NS_DISCO_INFO);
    if (info || !strcmp(ns, NS_DISCO_ITEMS)) {
        if (strcmp(j->type, "get"))
            sm_reply_error(j, "cancel", "feature-not-implemented");
        else if (xml_attr(q, "node"))
            sm_reply_error(j, "cancel", "item-not-found");
        else
            upload_disco(j, info);
        return SB_OK;
    }
    if (!strcmp(ns, NS_UPLOAD) && q && !strcmp(q->name, "request"))
        return upload_request(j, domain, q);
    sm_reply_error(j, "cancel", "service-unavailable");
    return SB_OK;
}

/* Anything else addressed to the service is not for the server behind it. */
static sb_rc upload_other(struct sm_job *j)
{
    if (!upload_domain_of(j->to))
        return SB_DECLINED;
    if (!strcmp(j->name, "message"))
        sm_reply_error(j, "cancel", "service-unavailable");
    return SB_OK;
}

static void upload_on_purge(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("upload_purge_failed", "error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
    else if (atol(PQcmdTuples(res)) > 0)
        log_info("upload_purged", "users=%s", PQcmdTuples(res));
}

static void upload_purge_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    char days[24];
    snprintf(days, sizeof days, "%ld", up_cfg.expire_days);
    const char *p[1] = {days};
    sm_pg_query(up_core, UPLOAD_PURGE_SQL, 1, p, upload_on_purge, NULL);
}

static void upload_start(struct sm_core *c)
{
    if (!upload_on() || !up_cfg.expire_days)
        return;
    up_core = c;
    ev_timer_init(&up_purge_timer, upload_purge_cb, 60.0, UPLOAD_PURGE_EVERY);
    ev_timer_start(c->loop, &up_purge_timer);
}

static void upload_stop(struct sm_core *c)
{
    if (up_core)
        ev_timer_stop(c->loop, &up_purge_timer);
    up_core = NULL;
    free(up_announce);
    up_announce = NULL;
}

const struct sm_module sm_mod_upload = {
    .name = "upload",
    .handle_iq = upload_iq,
    .handle_message = upload_other,
    .handle_presence = upload_other,
    .start = upload_start,
    .stop = upload_stop,
};
