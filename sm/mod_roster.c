/* mod_roster.c — the roster (RFC 6121 §2) of the sender's own account, from
 * the user's cached IM state (sm/im.h):
 *   get   full roster; with `ver` (§2.6): the current version → empty
 *         result; an older one → empty result, then the changes since as
 *         pushes (tombstones as subscription='remove'); anything else → the
 *         full roster with the current ver. The asking resource becomes
 *         "interested" and receives later pushes.
 *   set   add/update one item (name, groups) or remove it (cancelling the
 *         subscriptions both ways, §2.5.2); the write is confirmed by
 *         PostgreSQL before the pushes and the result.
 * Errors (§2.3.3): bad-request (not exactly one item, bad or full JID,
 * duplicate group), not-acceptable (name/group too long, empty group, too
 * many groups or items), item-not-found (removing what is not there). */
#include "im.h"
#include "jid.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

extern const struct sm_module sm_mod_roster;

/* ---- get ---------------------------------------------------------------------- */

static sb_rc roster_send_iq(struct sm_job *j, struct sb_buf *b)
{
    struct sm_session *s = sm_user_session(j->user, sm_job_sender_resource(j));
    if (!b->data)
        return SB_ERROR;
    if (s)
        return sm_deliver_raw(j->core, s, "", b->data, b->len);
    return sm_send_raw(j->core, j->key, "", b->data, b->len);
}

static void roster_result_head(struct sm_job *j, struct sb_buf *b)
{
    sb_buf_adds(b, "<iq type='result'");
    if (j->id) {
        sb_buf_adds(b, " id='");
        xml_escape_attr(b, j->id, strlen(j->id));
        sb_buf_adds(b, "'");
    }
    sb_buf_adds(b, " to='");
    xml_escape_attr(b, j->aux, strlen(j->aux));
    sb_buf_adds(b, "'");
}

static sb_rc roster_send_full(struct sm_job *j, int with_ver)
{
    struct sm_im *im = j->user->im;
    struct sb_buf b = SB_BUF_INIT;
    roster_result_head(j, &b);
    sb_buf_adds(&b, "><query xmlns='" SM_NS_ROSTER "'");
    if (with_ver)
        sb_buf_printf(&b, " ver='%lld'", im->ver);
    sb_buf_adds(&b, ">");
    for (struct sm_im_item *it = im->items; it; it = it->hh.next)
        if (it->in_roster)
            sm_im_item_xml(&b, it->jid, it->name, it->groups, it->state, 0);
    sb_buf_adds(&b, "</query></iq>");
    sb_rc rc = roster_send_iq(j, &b);
    sb_buf_free(&b);
    return rc;
}

static sb_rc roster_send_empty(struct sm_job *j)
{
    struct sb_buf b = SB_BUF_INIT;
    roster_result_head(j, &b);
    sb_buf_adds(&b, "/>");
    sb_rc rc = roster_send_iq(j, &b);
    sb_buf_free(&b);
    return rc;
}

static const char ROSTER_SINCE_SQL[] =
    "SELECT contact, coalesce(name, ''), subscription, coalesce(ask, ''),"
    " array_to_string(groups, chr(31)), version, removed FROM roster"
    " WHERE domain = $1 AND username = $2 AND version > $3 ORDER BY version";

/* The changes since the client's version, each as a push to the asker. */
static void roster_on_since(PGresult *res, void *arg)
{
    struct sm_job *j = arg;
    struct sm_session *s = j->user ? sm_user_session(j->user, sm_job_sender_resource(j)) : NULL;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("roster_since_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
    } else if (s) {
        struct sb_buf item = SB_BUF_INIT, b = SB_BUF_INIT;
        for (int i = 0; i < PQntuples(res); i++) {
            int st = sm_sub_parse(PQgetvalue(res, i, 2));
            if (!strcmp(PQgetvalue(res, i, 3), "subscribe") && !(st & SM_SUB_TO))
                st |= SM_SUB_PEND_OUT;
            sb_buf_reset(&item);
            sm_im_item_xml(&item, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                           PQgetvalue(res, i, 4), st, PQgetvalue(res, i, 6)[0] == 't');
            char id[13];
            sb_random_id(id, 12);
            sb_buf_reset(&b);
            sb_buf_printf(&b, "<iq type='set' id='push%s' to='", id);
            xml_escape_attr(&b, j->aux, strlen(j->aux));
            sb_buf_printf(&b, "'><query xmlns='" SM_NS_ROSTER "' ver='%s'>",
                          PQgetvalue(res, i, 5));
            sb_buf_add(&b, item.data, item.len);
            sb_buf_adds(&b, "</query></iq>");
            if (b.data)
                sm_deliver_raw(j->core, s, "", b.data, b.len);
        }
        log_debug("roster_since", "jid=%s pushes=%d", sb_log_q(j->aux), PQntuples(res));
        sb_buf_free(&item);
        sb_buf_free(&b);
    }
    sm_job_done(j);
}

/* A version we issued: decimal digits only. -1 for anything else. */
static long long roster_parse_ver(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 18 || strspn(v, "0123456789") != n)
        return -1;
    return strtoll(v, NULL, 10);
}

static sb_rc roster_get(struct sm_job *j, const struct xml_node *q)
{
    struct sm_im *im = j->user->im;
    const char *ver = xml_attr(q, "ver");
    sm_im_set_roster_req(j->user, sm_job_sender_resource(j));
    long long v = ver ? roster_parse_ver(ver) : -1;
    if (!ver || v < 0 || v > im->ver)
        return roster_send_full(j, ver != NULL), SB_OK;
    roster_send_empty(j);
    if (v == im->ver)
        return SB_OK;
    char node[JID_PART_MAX + 1], since[24];
    const char *domain;
    if (sm_im_split(j->user->bare, node, sizeof node, &domain) < 0)
        return SB_OK;
    snprintf(since, sizeof since, "%lld", v);
    const char *params[3] = {domain, node, since};
    if (sm_pg_read(j->core, ROSTER_SINCE_SQL, 3, params, roster_on_since, j) != SB_OK)
        return SB_OK;
    return SB_AGAIN;
}

/* ---- set ------------------------------------------------------------------------ */

struct roster_set {
    struct sm_job *j;
    struct sm_im_row row;
    char *jid, *name, *groups;      /* owned copies for the row */
};

static void roster_set_free(struct roster_set *rs)
{
    free(rs->jid);
    free(rs->name);
    free(rs->groups);
    free(rs);
}

/* Removal cancels every subscription both ways before the item goes. */
static void roster_remove_notify(struct sm_job *j, const struct sm_im_item *it)
{
    struct sb_buf b = SB_BUF_INIT;
    static const struct { int bits; const char *type; } send[] = {
        {SM_SUB_TO | SM_SUB_PEND_OUT, "unsubscribe"},
        {SM_SUB_FROM | SM_SUB_PEND_IN, "unsubscribed"},
    };
    for (size_t i = 0; i < SB_ARRAY_LEN(send); i++) {
        if (!(it->state & send[i].bits))
            continue;
        sb_buf_reset(&b);
        sb_buf_printf(&b, "<presence type='%s' from='", send[i].type);
        xml_escape_attr(&b, j->user->bare, strlen(j->user->bare));
        sb_buf_adds(&b, "' to='");
        xml_escape_attr(&b, it->jid, strlen(it->jid));
        sb_buf_adds(&b, "'/>");
        if (b.data)
            sm_send_raw(j->core, it->jid, j->user->bare, b.data, b.len);
    }
    /* §3.2.2: a contact that loses FROM sees the user go unavailable. */
    for (int i = 0; (it->state & SM_SUB_FROM) && i < j->user->nsess; i++) {
        struct sm_session *s = &j->user->sess[i];
        if (!s->available)
            continue;
        sb_buf_reset(&b);
        sb_buf_adds(&b, "<presence type='unavailable' from='");
        xml_escape_attr(&b, j->user->bare, strlen(j->user->bare));
        sb_buf_adds(&b, "/");
        xml_escape_attr(&b, s->resource, strlen(s->resource));
        sb_buf_adds(&b, "' to='");
        xml_escape_attr(&b, it->jid, strlen(it->jid));
        sb_buf_adds(&b, "'/>");
        if (b.data)
            sm_send_raw(j->core, it->jid, "", b.data, b.len);
    }
    sb_buf_free(&b);
}

/* The write is durable: apply it to the cache, push, answer. */
static void roster_set_apply(struct roster_set *rs)
{
    struct sm_job *j = rs->j;
    struct sm_user *u = j->user;
    struct sm_im_item *it = sm_im_get(u->im, rs->jid);
    struct sb_buf b = SB_BUF_INIT;
    if (rs->row.removed) {
        if (it) {
            roster_remove_notify(j, it);
            if (it->state & SM_SUB_PEND_IN) {
                it->state = 0;
                sm_im_write_pending(u, it);
            }
            sm_im_drop(u->im, it);
        }
    } else if (it) {
        if (!it->in_roster)
            u->im->nroster++;
        it->in_roster = 1;
        sm_im_set_str(&it->name, rs->name);
        sm_im_set_str(&it->groups, rs->groups ? rs->groups : "");
    }
    sm_im_item_xml(&b, rs->jid, rs->name, rs->groups, rs->row.state, rs->row.removed);
    if (b.data)
        sm_im_push(u, b.data, b.len, rs->row.ver);
    sb_buf_free(&b);
    struct xml_doc *d = sm_iq_result_new(j);
    if (d)
        sm_send_node(j->core, d->root);
    xml_doc_free(d);
    log_info("roster_set", "jid=%s contact=%s remove=%d ver=%lld", sb_log_q(u->bare),
             sb_log_q(rs->jid), rs->row.removed, rs->row.ver);
}

static void roster_on_set(PGresult *res, void *arg)
{
    struct roster_set *rs = arg;
    struct sm_job *j = rs->j;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_error("roster_set_failed", "jid=%s error=%s", sb_log_q(j->key),
                  sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else if (j->user && j->user->im) {
        roster_set_apply(rs);
    }
    roster_set_free(rs);
    sm_job_done(j);
}

/* Groups joined by U+001F; returns the error condition or NULL. */
static const char *roster_groups(const struct xml_node *item, struct sb_buf *out)
{
    const struct sm_im_limits *lim = sm_im_limits();
    struct sb_buf t = SB_BUF_INIT;
    const char *err = NULL;
    long n = 0;
    sb_buf_adds(out, "");
    for (const struct xml_node *g = xml_first_elem(item); g && !err; g = xml_next_elem(g)) {
        if (strcmp(g->name, "group"))
            continue;
        xml_text(g, &t);
        if (!t.len || (long)t.len > lim->group || ++n > lim->groups)
            err = "not-acceptable";
        else if (memchr(t.data, '\x1f', t.len))
            err = "bad-request";
        for (const char *p = out->data; !err && p && *p;) {
            size_t len = strcspn(p, "\x1f");
            if (len == t.len && !memcmp(p, t.data, len))
                err = "bad-request";          /* the same group twice */
            p += len + (p[len] ? 1 : 0);
        }
        if (!err) {
            if (out->len)
                sb_buf_adds(out, "\x1f");
            sb_buf_add(out, t.data, t.len);
        }
    }
    sb_buf_free(&t);
    return err;
}

static const char *roster_check(struct sm_job *j, const struct xml_node *q,
                                const struct xml_node **item, char *bare)
{
    int n = 0;
    for (const struct xml_node *e = xml_first_elem(q); e; e = xml_next_elem(e))
        if (!strcmp(e->name, "item") && ++n == 1)
            *item = e;
    if (n != 1)
        return "bad-request";
    const char *jid = xml_attr(*item, "jid");
    struct jid parsed;
    if (!jid || jid_parse(&parsed, jid) != SB_OK || parsed.resource[0])
        return "bad-request";
    jid_bare(&parsed, bare);
    const char *name = xml_attr(*item, "name");
    if (name && (long)strlen(name) > sm_im_limits()->name)
        return "not-acceptable";
    return NULL;
}

static sb_rc roster_set(struct sm_job *j, const struct xml_node *q)
{
    static char bare[JID_BARE_MAX + 1];
    const struct xml_node *item = NULL;
    const char *err = roster_check(j, q, &item, bare);
    struct sb_buf groups = SB_BUF_INIT;
    const char *sub = item ? xml_attr(item, "subscription") : NULL;
    int remove = sub && !strcmp(sub, "remove");
    struct sm_im *im = j->user->im;
    struct sm_im_item *it = err ? NULL : sm_im_find(im, bare);
    if (!err && !remove)
        err = roster_groups(item, &groups);
    if (!err && remove && (!it || !it->in_roster))
        err = "item-not-found";
    if (!err && !remove && (!it || !it->in_roster) && im->nroster >= sm_im_limits()->items)
        err = "not-acceptable";
    if (err) {
        sb_buf_free(&groups);
        sm_reply_error(j, !strcmp(err, "item-not-found") ? "cancel" : "modify", err);
        return SB_OK;
    }
    struct roster_set *rs = calloc(1, sizeof *rs);
    const char *name = remove ? NULL : xml_attr(item, "name");
    if (!rs || !(rs->jid = strdup(bare)) || (name && *name && !(rs->name = strdup(name)))) {
        if (rs)
            roster_set_free(rs);
        sb_buf_free(&groups);
        sm_reply_error(j, "wait", "resource-constraint");
        return SB_OK;
    }
    rs->groups = remove ? NULL : groups.data;
    if (remove)
        sb_buf_free(&groups);
    rs->j = j;
    rs->row = (struct sm_im_row){rs->jid, rs->name, rs->groups, it ? it->state : 0, remove, 0};
    if (sm_im_write(j->user, &rs->row, roster_on_set, rs) != SB_OK) {
        roster_set_free(rs);
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    return SB_AGAIN;
}

/* ---- dispatch ----------------------------------------------------------------------- */

static sb_rc roster_iq(struct sm_job *j, const char *ns)
{
    if (strcmp(ns, SM_NS_ROSTER) || !j->user || !sm_job_to_own_account(j))
        return SB_DECLINED;
    int get = !strcmp(j->type, "get"), set = !strcmp(j->type, "set");
    if (!get && !set)
        return SB_OK;   /* results/errors to the account (push answers) */
    sb_rc rc = sm_im_ready(j, &sm_mod_roster);
    if (rc == SB_AGAIN)
        return SB_AGAIN;
    const char *ver = get ? xml_attr(xml_first_elem(j->st), "ver") : NULL;
    if (rc != SB_OK && ver && sm_pg_down(j->core) && roster_parse_ver(ver) >= 0) {
        /* PostgreSQL is away and the client has a copy: "your version is
         * current" (RFC 6121 §2.6.3) keeps it; the session is not marked
         * for pushes, so its next login asks with the same version and
         * gets what changed. */
        log_info("roster_degraded", "jid=%s reason=store-down", sb_log_q(j->from));
        roster_send_empty(j);
        return SB_OK;
    }
    if (rc != SB_OK) {
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    const struct xml_node *q = xml_first_elem(j->st);
    return get ? roster_get(j, q) : roster_set(j, q);
}

static const char *const roster_features[] = {SM_NS_ROSTER, NULL};

const struct sm_module sm_mod_roster = {
    .name = "roster",
    .handle_iq = roster_iq,
    .user_free = sm_im_user_free,
    .features = roster_features,
};
