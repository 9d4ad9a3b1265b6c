/* mod_pep.c — PEP (XEP-0163): every account is a pubsub service with its
 * own nodes (the XEP-0060 subset PEP clients use), cached in the owning sm
 * (pep.h, loaded with the account) and written through to PostgreSQL
 * (pep_nodes, pep_items; migration 008) before the iq is answered.
 *
 *   pubsub   publish (+ publish-options, auto-create), retract (notify),
 *            items (all, max_items, by id)          own: publish/retract
 *   #owner   configure get/set (form), delete       own account only
 *
 * Access models: presence (the owner and contacts with a subscription to
 * the owner's presence), open (anyone), whitelist (the owner only; no
 * member list yet). Errors as XEP-0060 §7/§6.5/§8: forbidden for another
 * account's node, item-not-found (a whitelist node is invisible to
 * others), not-authorized + presence-subscription-required, conflict +
 * precondition-not-met, not-acceptable + payload-too-big (`[sm]
 * pep_max_item_bytes`), bad-request + nodeid-required/item-required/
 * invalid-payload.
 *
 * Notifications: the sm sees the available presence of the owner's own
 * resources and of contacts (inbound), keeps each full JID with its
 * XEP-0115 caps key (peers, pep.h; caps.c resolves the key), and sends
 * events to the peers whose caps list NODE+notify and whom the access
 * model allows; a peer's first available presence (or its caps becoming
 * known) brings it the last item of each such node. This module only
 * observes presence (declines it, so it sits before mod_presence). */
#include "acct.h"
#include "im.h"
#include "pep.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_OWNER SM_NS_PUBSUB "#owner"
#define NS_EVENT SM_NS_PUBSUB "#event"
#define NS_ERRORS SM_NS_PUBSUB "#errors"
#define NS_XDATA "jabber:x:data"
#define FORM_PUBLISH_OPTIONS SM_NS_PUBSUB "#publish-options"
#define FORM_NODE_CONFIG SM_NS_PUBSUB "#node_config"

/* Advertised by the server (mod_disco) and on every account (mod_account). */
const char *const sm_pep_features[] = {
    NS_PUBSUB,
    NS_PUBSUB "#publish",
    NS_PUBSUB "#publish-options",
    NS_PUBSUB "#auto-create",
    NS_PUBSUB "#retract-items",
    NS_PUBSUB "#retrieve-items",
    NS_PUBSUB "#item-ids",
    NS_PUBSUB "#delete-nodes",
    NS_PUBSUB "#config-node",
    NS_PUBSUB "#persistent-items",
    NS_PUBSUB "#last-published",
    NS_PUBSUB "#access-presence",
    NS_PUBSUB "#access-open",
    NS_PUBSUB "#access-whitelist",
    NULL,
};

extern const struct sm_module sm_mod_pep;

static const char PEP_PUBLISH_SQL[] =
    "WITH n AS (INSERT INTO pep_nodes (domain, username, node, access_model, persist_items,"
    " max_items) VALUES ($1, $2, $3, $4, $5::boolean, $6::integer)"
    " ON CONFLICT (domain, username, node) DO NOTHING),"
    " i AS (INSERT INTO pep_items (domain, username, node, item_id, payload, seq)"
    " SELECT $1, $2, $3, $7, $8, $9::bigint WHERE $5::boolean"
    " ON CONFLICT (domain, username, node, item_id) DO UPDATE SET payload = EXCLUDED.payload,"
    " seq = EXCLUDED.seq, published_at = now()),"
    " d AS (DELETE FROM pep_items WHERE domain = $1 AND username = $2 AND node = $3"
    " AND item_id = ANY($10::text[]))"
    " SELECT 1";
static const char PEP_RETRACT_SQL[] =
    "DELETE FROM pep_items WHERE domain = $1 AND username = $2 AND node = $3 AND item_id = $4";
static const char PEP_DELETE_SQL[] =
    "WITH i AS (DELETE FROM pep_items WHERE domain = $1 AND username = $2 AND node = $3)"
    " DELETE FROM pep_nodes WHERE domain = $1 AND username = $2 AND node = $3";
/* $7: the item ids to drop (a lower max_items, or no longer persistent). */
static const char PEP_CONFIG_SQL[] =
    "WITH i AS (DELETE FROM pep_items WHERE domain = $1 AND username = $2 AND node = $3"
    " AND (NOT $5::boolean OR item_id = ANY($7::text[])))"
    " UPDATE pep_nodes SET access_model = $4, persist_items = $5::boolean,"
    " max_items = $6::integer WHERE domain = $1 AND username = $2 AND node = $3";

/* A node configuration, as given (has_*) or in force. */
struct pep_cfg {
    int access, persist;
    long max;                           /* -1: max */
    unsigned has_access : 1, has_persist : 1, has_max : 1;
};

enum pep_op_kind { PEP_OP_PUBLISH, PEP_OP_RETRACT, PEP_OP_DELETE, PEP_OP_CONFIG };

/* What a write changes in the cache once PostgreSQL has it. */
struct pep_op {
    struct sm_job *j;
    enum pep_op_kind kind;
    char *node, *id, *payload;
    long long seq;
    struct pep_cfg cfg;
    int notify;
    struct sb_buf trim;                 /* PostgreSQL array of the ids dropped */
    sm_pep_done_cb done;                /* set: made by the server (sm_pep_publish_as) */
    void *done_arg;
};

/* ---- small helpers ------------------------------------------------------------------- */

static sb_rc pep_error(struct sm_job *j, const char *etype, const char *cond, const char *app)
{
    sm_reply_error_app(j, etype, cond, app, app ? NS_ERRORS : NULL);
    return SB_OK;
}

static int pep_to_bare(const struct sm_job *j)
{
    return !j->to || !*j->to || !strchr(j->to, '/');
}

/* The requester's bare JID into out; -1 when there is none. */
static int pep_from_bare(const struct sm_job *j, char *out, size_t cap)
{
    return *j->from && jid_bare_of(j->from, out, cap) >= 0 ? 0 : -1;
}

static int pep_allowed(const struct sm_user *u, const struct pep_node *n, const char *bare)
{
    if (!strcmp(bare, u->bare) || n->access == PEP_ACCESS_OPEN)
        return 1;
    if (n->access != PEP_ACCESS_PRESENCE || !u->im || !u->im->loaded)
        return 0;
    struct sm_im_item *it = sm_im_find(u->im, bare);
    return it && it->in_roster && (it->state & SM_SUB_FROM);
}

static struct sm_pep *pep_of(struct sm_user *u, int create)
{
    if (!u || !u->acct)
        return NULL;
    if (!u->acct->pep && create)
        u->acct->pep = calloc(1, sizeof *u->acct->pep);
    return u->acct->pep;
}

static long pep_max_bytes(void)
{
    return sb_config_int("pep_max_item_bytes", 131072);
}

static int pep_bool(const char *v, int *out)
{
    if (!strcmp(v, "1") || !strcmp(v, "true"))
        *out = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false"))
        *out = 0;
    else
        return -1;
    return 0;
}

/* Text of a form field's first value (empty when none) into t. */
static void pep_field_value(const struct xml_node *f, struct sb_buf *t)
{
    const struct xml_node *v = xml_child(f, "value", NULL);
    sb_buf_reset(t);
    if (v)
        xml_text(v, t);
    if (!t->data)
        sb_buf_adds(t, "");
}

/* A submitted form (publish-options or node_config) into o: 0, or -1 for
 * a wrong FORM_TYPE or a value out of range. Other fields are ignored. */
static int pep_form_parse(const struct xml_node *x, const char *form_type, struct pep_cfg *o)
{
    struct sb_buf t = SB_BUF_INIT;
    int bad = 0;
    for (const struct xml_node *f = xml_first_elem(x); f && !bad; f = xml_next_elem(f)) {
        const char *var = xml_attr(f, "var");
        if (strcmp(f->name, "field") || !var)
            continue;
        pep_field_value(f, &t);
        if (!strcmp(var, "FORM_TYPE")) {
            bad = strcmp(t.data, form_type) != 0;
        } else if (!strcmp(var, "pubsub#access_model")) {
            o->access = pep_access_parse(t.data);
            o->has_access = 1;
            bad = o->access < 0;
        } else if (!strcmp(var, "pubsub#persist_items")) {
            o->has_persist = 1;
            bad = pep_bool(t.data, &o->persist) < 0;
        } else if (!strcmp(var, "pubsub#max_items")) {
            char *end = NULL;
            o->has_max = 1;
            o->max = !strcmp(t.data, "max") ? -1 : strtol(t.data, &end, 10);
            bad = o->max != -1 && (!end || *end || o->max < 1);
        }
    }
    sb_buf_free(&t);
    return bad ? -1 : 0;
}

static struct pep_cfg pep_cfg_of(const struct pep_node *n)
{
    return (struct pep_cfg){.access = n->access, .persist = n->persist, .max = n->max_items};
}

static void pep_cfg_apply(struct pep_cfg *to, const struct pep_cfg *o)
{
    if (o->has_access)
        to->access = o->access;
    if (o->has_persist)
        to->persist = o->persist;
    if (o->has_max)
        to->max = o->max;
}

/* XEP-0060 §7.1.5: does an existing node satisfy the publish-options? */
static int pep_cfg_meets(const struct pep_node *n, const struct pep_cfg *o)
{
    struct pep_node want = *n;
    want.max_items = o->max;
    return (!o->has_access || o->access == (int)n->access) &&
           (!o->has_persist || o->persist == (int)n->persist) &&
           (!o->has_max || sm_pep_max_items(&want) == sm_pep_max_items(n));
}

/* ---- sending -------------------------------------------------------------------------- */

/* `<item id='ID'>PAYLOAD</item>` appended. */
static void pep_item_xml(struct sb_buf *b, const struct pep_item *it)
{
    sb_buf_adds(b, "<item id='");
    xml_escape_attr(b, it->id, strlen(it->id));
    sb_buf_adds(b, "'>");
    sb_buf_adds(b, it->payload);
    sb_buf_adds(b, "</item>");
}

/* An iq result to j's sender whose payload is `inner` (may be NULL). */
static void pep_reply(struct sm_job *j, const char *inner, size_t len)
{
    char key[ENV_STR_MAX + 1];
    struct sb_buf b = SB_BUF_INIT;
    if (pep_from_bare(j, key, sizeof key) < 0)
        return;
    sb_buf_adds(&b, "<iq type='result' id='");
    xml_escape_attr(&b, j->id ? j->id : "", j->id ? strlen(j->id) : 0);
    sb_buf_adds(&b, "' to='");
    xml_escape_attr(&b, j->from, strlen(j->from));
    if (j->to && *j->to) {
        sb_buf_adds(&b, "' from='");
        xml_escape_attr(&b, j->to, strlen(j->to));
    }
    if (inner && len) {
        sb_buf_adds(&b, "'>");
        sb_buf_add(&b, inner, len);
        sb_buf_adds(&b, "</iq>");
    } else {
        sb_buf_adds(&b, "'/>");
    }
    if (!b.data || sm_send_raw(j->core, key, j->to && *j->to ? j->to : NULL, b.data, b.len) != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    sb_buf_free(&b);
}

/* One event message (`inner` goes inside <event/>) to one full JID. */
static void pep_send_event(struct sm_user *u, const char *to, const char *id, const char *inner,
                           size_t len)
{
    char bare[ENV_STR_MAX + 1];
    struct sb_buf b = SB_BUF_INIT;
    if (jid_bare_of(to, bare, sizeof bare) < 0)
        return;
    sb_buf_adds(&b, "<message type='headline' from='");
    xml_escape_attr(&b, u->bare, strlen(u->bare));
    sb_buf_adds(&b, "' to='");
    xml_escape_attr(&b, to, strlen(to));
    sb_buf_printf(&b, "' id='%s'><event xmlns='" NS_EVENT "'>", id);
    sb_buf_add(&b, inner, len);
    sb_buf_adds(&b, "</event></message>");
    if (b.data) {
        struct sm_session *s = NULL;
        if (!strcmp(bare, u->bare))
            s = sm_user_session(u, to + strlen(bare) + 1);
        if (s)
            sm_deliver_raw(u->core, s, u->bare, b.data, b.len);
        else
            sm_send_raw(u->core, bare, u->bare, b.data, b.len);
    }
    sb_buf_free(&b);
}

/* Would this peer take events of node n? */
static int pep_peer_wants(struct sm_user *u, const struct pep_peer *pe,
                          const struct pep_node *n, const char *notify_var)
{
    char bare[ENV_STR_MAX + 1];
    if (!pe->caps || jid_bare_of(pe->jid, bare, sizeof bare) < 0)
        return 0;
    if (!strcmp(bare, u->bare)) {       /* own resource: only while it is bound */
        const struct sm_session *s = sm_user_session(u, pe->jid + strlen(bare) + 1);
        if (!s)
            return 0;
    }
    return pep_allowed(u, n, bare) && sm_caps_has(pe->caps, notify_var);
}

/* `inner` to every peer interested in node n and allowed to see it. */
static void pep_notify(struct sm_user *u, const struct pep_node *n, const char *inner, size_t len)
{
    struct sm_pep *p = pep_of(u, 0);
    char id[17], var[1100];
    if (!p || snprintf(var, sizeof var, "%s+notify", n->name) >= (int)sizeof var)
        return;
    sb_random_id(id, 16);
    id[16] = '\0';
    long sent = 0;
    for (struct pep_peer *pe = p->peers; pe; pe = pe->hh.next) {
        if (pep_peer_wants(u, pe, n, var)) {
            pep_send_event(u, pe->jid, id, inner, len);
            sent++;
        }
    }
    log_debug("pep_notified", "jid=%s node=%s sent=%ld", sb_log_q(u->bare), sb_log_q(n->name),
              sent);
}

static void pep_items_event(struct sb_buf *b, const struct pep_node *n)
{
    sb_buf_adds(b, "<items node='");
    xml_escape_attr(b, n->name, strlen(n->name));
    sb_buf_adds(b, "'>");
}

/* The last item of every node the peer wants (XEP-0163 §6.2). */
static void pep_send_last(struct sm_user *u, struct pep_peer *pe)
{
    struct sm_pep *p = pep_of(u, 0);
    struct sb_buf b = SB_BUF_INIT;
    char var[1100], id[17];
    pe->got_last = 1;
    for (int i = 0; p && i < p->nnodes; i++) {
        const struct pep_node *n = &p->nodes[i];
        if (!n->nitems || snprintf(var, sizeof var, "%s+notify", n->name) >= (int)sizeof var ||
            !pep_peer_wants(u, pe, n, var))
            continue;
        sb_buf_reset(&b);
        pep_items_event(&b, n);
        pep_item_xml(&b, &n->items[n->nitems - 1]);
        sb_buf_adds(&b, "</items>");
        sb_random_id(id, 16);
        id[16] = '\0';
        if (b.data)
            pep_send_event(u, pe->jid, id, b.data, b.len);
    }
    sb_buf_free(&b);
}

void sm_pep_caps_known(struct sm_core *c, const char *key)
{
    struct sm_user *u, *tmp;
    HASH_ITER(hh, c->users, u, tmp) {
        struct sm_pep *p = pep_of(u, 0);
        for (struct pep_peer *pe = p ? p->peers : NULL; pe; pe = pe->hh.next)
            if (!pe->got_last && pe->caps && !strcmp(pe->caps, key))
                pep_send_last(u, pe);
    }
}

/* ---- presence: who is there, with which caps ------------------------------------------ */

static void pep_peer_del(struct sm_pep *p, const char *jid)
{
    struct pep_peer *pe = NULL;
    if (p)
        HASH_FIND_STR(p->peers, jid, pe);
    if (!pe)
        return;
    HASH_DEL(p->peers, pe);
    free(pe->jid);
    free(pe->caps);
    free(pe);
}

/* The peer for jid with caps key `caps` (NULL: none); *changed when it is
 * new or its caps differ. */
static struct pep_peer *pep_peer_set(struct sm_pep *p, const char *jid, const char *caps,
                                     int *changed)
{
    struct pep_peer *pe = NULL;
    HASH_FIND_STR(p->peers, jid, pe);
    *changed = 0;
    if (!pe) {
        if (!(pe = calloc(1, sizeof *pe)) || !(pe->jid = strdup(jid))) {
            free(pe);
            return NULL;
        }
        HASH_ADD_KEYPTR(hh, p->peers, pe->jid, strlen(pe->jid), pe);
        *changed = 1;
    }
    if ((pe->caps == NULL) != (caps == NULL) || (caps && strcmp(pe->caps, caps))) {
        free(pe->caps);
        pe->caps = caps ? strdup(caps) : NULL;
        *changed = 1;
        pe->got_last = 0;
    }
    return pe;
}

static sb_rc pep_presence(struct sm_job *j)
{
    int avail = !*j->type, unavail = !strcmp(j->type, "unavailable");
    char bare[ENV_STR_MAX + 1];
    if (!j->user || !j->st || (!avail && !unavail) || !strchr(j->from, '/') ||
        pep_from_bare(j, bare, sizeof bare) < 0)
        return SB_DECLINED;
    int own = !strcmp(bare, j->user->bare);
    if (own && avail && j->sid && *j->sid)   /* from the user's own stream */
        sm_pep_compat_presence(j);      /* XEP-0398 §4, broadcast and directed */
    if (own && j->to && *j->to && strcmp(j->to, j->user->bare))
        return SB_DECLINED;             /* directed presence: not a broadcast */
    if (unavail) {
        pep_peer_del(pep_of(j->user, 0), j->from);
        return SB_DECLINED;
    }
    const struct xml_node *c = xml_child(j->st, "c", SM_NS_CAPS);
    const char *hash = c ? xml_attr(c, "hash") : NULL, *ver = c ? xml_attr(c, "ver") : NULL;
    const char *cnode = c ? xml_attr(c, "node") : NULL;
    char key[512];
    int has_key = hash && ver && cnode && *ver &&
                  snprintf(key, sizeof key, "%s:%s", hash, ver) < (int)sizeof key;
    struct sm_pep *p = pep_of(j->user, has_key);
    if (!p)
        return SB_DECLINED;
    int changed;
    struct pep_peer *pe = pep_peer_set(p, j->from, has_key ? key : NULL, &changed);
    if (!pe || !pe->caps || pe->got_last)
        return SB_DECLINED;
    if (sm_caps_lookup(j->core, pe->caps, cnode, j->from, j->user->bare) != CAPS_KNOWN)
        return SB_DECLINED;             /* sm_pep_caps_known() sends them later */
    sb_rc rc = own ? SB_OK : sm_im_ready(j, &sm_mod_pep);
    if (rc == SB_AGAIN)
        return SB_AGAIN;                /* re-offered here once the roster is loaded */
    pep_send_last(j->user, pe);
    return SB_DECLINED;
}

static sb_rc pep_control(struct sm_job *j, const char *op)
{
    if (j->user && j->aux && (!strcmp(op, "end") || !strcmp(op, "session-gone")))
        pep_peer_del(pep_of(j->user, 0), j->aux);     /* aux: the session's full JID */
    return SB_DECLINED;
}

/* ---- writes --------------------------------------------------------------------------- */

static void pep_op_free(struct pep_op *op)
{
    free(op->node);
    free(op->id);
    free(op->payload);
    sb_buf_free(&op->trim);
    free(op);
}

static struct pep_op *pep_op_new(struct sm_job *j, enum pep_op_kind kind, const char *node)
{
    struct pep_op *op = calloc(1, sizeof *op);
    if (!op || !(op->node = strdup(node))) {
        free(op);
        return NULL;
    }
    op->j = j;
    op->kind = kind;
    sb_buf_adds(&op->trim, "{");
    return op;
}

/* PUBLISH: the cache after PostgreSQL stored it; answers and notifies. */
static void pep_apply_publish(struct sm_user *u, struct pep_op *op)
{
    struct sm_pep *p = pep_of(u, 1);
    struct pep_node *n = p ? sm_pep_node(p, op->node) : NULL;
    if (p && !n && (n = sm_pep_node_add(p, op->node))) {
        n->access = (enum pep_access)op->cfg.access;
        n->persist = op->cfg.persist != 0;
        n->max_items = op->cfg.max;
    }
    if (!n || sm_pep_item_put(n, op->id, op->payload, op->seq) != SB_OK)
        return;
    if (op->seq > p->seq)
        p->seq = op->seq;
    while (n->nitems > sm_pep_max_items(n))
        sm_pep_item_del(n, n->items[0].id);
    struct sb_buf b = SB_BUF_INIT;
    pep_items_event(&b, n);
    pep_item_xml(&b, &n->items[n->nitems - 1]);
    sb_buf_adds(&b, "</items>");
    if (b.data)
        pep_notify(u, n, b.data, b.len);
    sb_buf_free(&b);
}

static void pep_apply_retract(struct sm_user *u, struct pep_op *op)
{
    struct pep_node *n = sm_pep_node(pep_of(u, 0), op->node);
    if (!n)
        return;
    sm_pep_item_del(n, op->id);
    if (!op->notify)
        return;
    struct sb_buf b = SB_BUF_INIT;
    pep_items_event(&b, n);
    sb_buf_adds(&b, "<retract id='");
    xml_escape_attr(&b, op->id, strlen(op->id));
    sb_buf_adds(&b, "'/></items>");
    if (b.data)
        pep_notify(u, n, b.data, b.len);
    sb_buf_free(&b);
}

static void pep_apply_delete(struct sm_user *u, struct pep_op *op)
{
    struct sm_pep *p = pep_of(u, 0);
    struct pep_node *n = sm_pep_node(p, op->node);
    if (!n)
        return;
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_adds(&b, "<delete node='");
    xml_escape_attr(&b, n->name, strlen(n->name));
    sb_buf_adds(&b, "'/>");
    if (b.data)
        pep_notify(u, n, b.data, b.len);
    sb_buf_free(&b);
    sm_pep_node_del(p, op->node);
}

static void pep_apply_config(struct sm_user *u, struct pep_op *op)
{
    struct pep_node *n = sm_pep_node(pep_of(u, 0), op->node);
    if (!n)
        return;
    n->access = (enum pep_access)op->cfg.access;
    n->persist = op->cfg.persist != 0;
    n->max_items = op->cfg.max;
    while (n->nitems > sm_pep_max_items(n))
        sm_pep_item_del(n, n->items[0].id);
}

static void pep_on_write(PGresult *res, void *arg)
{
    struct pep_op *op = arg;
    struct sm_job *j = op->j;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        log_warn("pep_write_failed", "jid=%s node=%s error=%s", sb_log_q(j->key),
                 sb_log_q(op->node), sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        if (!op->done)
            sm_reply_error(j, "wait", "internal-server-error");
    } else {
        if (op->done) {
            /* made by the server: nobody asked, nobody is answered */
        } else if (op->kind == PEP_OP_PUBLISH) {
            struct sb_buf b = SB_BUF_INIT;
            sb_buf_adds(&b, "<pubsub xmlns='" NS_PUBSUB "'><publish node='");
            xml_escape_attr(&b, op->node, strlen(op->node));
            sb_buf_adds(&b, "'><item id='");
            xml_escape_attr(&b, op->id, strlen(op->id));
            sb_buf_adds(&b, "'/></publish></pubsub>");
            if (b.data)
                pep_reply(j, b.data, b.len);
            sb_buf_free(&b);
        } else {
            pep_reply(j, NULL, 0);
        }
        if (j->user) {                  /* NULL: the record went meanwhile (reloads from PG) */
            if (op->kind == PEP_OP_PUBLISH)
                pep_apply_publish(j->user, op);
            else if (op->kind == PEP_OP_RETRACT)
                pep_apply_retract(j->user, op);
            else if (op->kind == PEP_OP_DELETE)
                pep_apply_delete(j->user, op);
            else
                pep_apply_config(j->user, op);
        }
    }
    sm_pep_done_cb done = op->done;
    void *done_arg = op->done_arg;
    char *node = op->node;
    op->node = NULL;
    int own_write = !done && ok && j->user && op->kind != PEP_OP_CONFIG;
    pep_op_free(op);
    if (done)
        done(j, ok, done_arg);          /* owns the job from here */
    else if (!own_write || sm_pep_compat_after(j, node) != SB_AGAIN)
        sm_job_done(j);
    free(node);
}

static sb_rc pep_write(struct pep_op *op, const char *sql, int n, const char *const *params)
{
    if (sm_pg_query(op->j->core, sql, n, params, pep_on_write, op) != SB_OK) {
        if (op->done) {
            pep_op_free(op);
            return SB_ERROR;
        }
        sm_reply_error(op->j, "wait", "resource-constraint");
        pep_op_free(op);
        return SB_OK;
    }
    return SB_AGAIN;
}

/* ---- pubsub: publish, retract, items ---------------------------------------------------- */

static sb_rc pep_publish_write(struct pep_op *op, const struct pep_node *n,
                               const char *const *acc);

static int pep_count(const struct xml_node *n, const char *name)
{
    int k = 0;
    for (const struct xml_node *c = xml_first_elem(n); c; c = xml_next_elem(c))
        k += !strcmp(c->name, name);
    return k;
}

/* The ids beyond the node's limit once `id` is added, oldest first. */
static void pep_trim_list(const struct pep_node *n, const char *id, long max, struct sb_buf *arr)
{
    int keep = n ? n->nitems : 0;
    if (n && sm_pep_item((struct pep_node *)n, id))
        keep--;
    long drop = keep + 1 - max;
    for (int i = 0; n && i < n->nitems && drop > 0; i++) {
        if (!strcmp(n->items[i].id, id))
            continue;
        pgev_array_add(arr, n->items[i].id, strlen(n->items[i].id));
        drop--;
    }
}

static sb_rc pep_publish(struct sm_job *j, const struct xml_node *ps, const struct xml_node *pub,
                         const char *node, const char *const *acc)
{
    if (!sm_job_to_own_account(j))
        return pep_error(j, "auth", "forbidden", NULL);
    int nitems = pep_count(pub, "item");
    if (nitems != 1)
        return pep_error(j, "modify", "bad-request", nitems ? "invalid-payload" : "item-required");
    const struct xml_node *item = xml_child(pub, "item", NULL);
    const struct xml_node *pl = xml_first_elem(item);
    if (!pl)
        return pep_error(j, "modify", "bad-request", "payload-required");
    if (xml_next_elem(pl))
        return pep_error(j, "modify", "bad-request", "invalid-payload");
    struct pep_cfg o = {0};
    const struct xml_node *po = xml_child(ps, "publish-options", NULL);
    const struct xml_node *x = po ? xml_child(po, "x", NS_XDATA) : NULL;
    if (po && (!x || pep_form_parse(x, FORM_PUBLISH_OPTIONS, &o) < 0))
        return pep_error(j, "cancel", "conflict", "precondition-not-met");
    struct pep_node *n = sm_pep_node(pep_of(j->user, 0), node);
    if (n && !pep_cfg_meets(n, &o)) {
        log_info("pep_precondition_not_met", "jid=%s node=%s", sb_log_q(j->user->bare),
                 sb_log_q(node));
        return pep_error(j, "cancel", "conflict", "precondition-not-met");
    }
    struct pep_op *op = pep_op_new(j, PEP_OP_PUBLISH, node);
    if (!op)
        return pep_error(j, "wait", "internal-server-error", NULL);
    struct sb_buf payload = SB_BUF_INIT;
    if (xml_serialize(pl, &payload) != SB_OK || !payload.data) {
        sb_buf_free(&payload);
        pep_op_free(op);
        return pep_error(j, "wait", "internal-server-error", NULL);
    }
    if ((long)payload.len > pep_max_bytes()) {
        log_info("pep_payload_too_big", "jid=%s node=%s bytes=%zu max=%ld",
                 sb_log_q(j->user->bare), sb_log_q(node), payload.len, pep_max_bytes());
        sb_buf_free(&payload);
        pep_op_free(op);
        return pep_error(j, "modify", "not-acceptable", "payload-too-big");
    }
    op->payload = (char *)payload.data; /* taken over */
    const char *id = xml_attr(item, "id");
    char gen[17];
    if (!id || !*id) {
        sb_random_id(gen, 16);
        gen[16] = '\0';
        id = gen;
    }
    op->id = strdup(id);
    op->cfg = (struct pep_cfg){.access = PEP_ACCESS_PRESENCE, .persist = 1, .max = 1};
    if (n)
        op->cfg = pep_cfg_of(n);
    else
        pep_cfg_apply(&op->cfg, &o);
    return pep_publish_write(op, n, acc);
}

/* The statement of a publish whose op has its id, payload and cfg. */
static sb_rc pep_publish_write(struct pep_op *op, const struct pep_node *n,
                               const char *const *acc)
{
    struct sm_job *j = op->j;
    const char *node = op->node;
    const char *id = op->id ? op->id : "";
    struct pep_node probe = {.max_items = op->cfg.max};
    pep_trim_list(n, id, sm_pep_max_items(&probe), &op->trim);
    sb_buf_adds(&op->trim, "}");
    struct sm_pep *p = pep_of(j->user, 0);
    op->seq = (p ? p->seq : 0) + 1;
    if (p)
        p->seq = op->seq;
    char seq[24], max[24];
    snprintf(seq, sizeof seq, "%lld", op->seq);
    snprintf(max, sizeof max, "%ld", op->cfg.max);
    if (!op->id || !op->trim.data) {
        if (op->done) {
            pep_op_free(op);
            return SB_ERROR;
        }
        pep_op_free(op);
        return pep_error(j, "wait", "internal-server-error", NULL);
    }
    const char *params[10] = {acc[0], acc[1], node, pep_access_name(op->cfg.access),
                              op->cfg.persist ? "true" : "false", max, op->id, op->payload, seq,
                              op->trim.data};
    return pep_write(op, PEP_PUBLISH_SQL, 10, params);
}

static sb_rc pep_retract(struct sm_job *j, const struct xml_node *r, const char *node,
                         const char *const *acc)
{
    if (!sm_job_to_own_account(j))
        return pep_error(j, "auth", "forbidden", NULL);
    const struct xml_node *item = xml_child(r, "item", NULL);
    const char *id = item ? xml_attr(item, "id") : NULL;
    if (!id || !*id)
        return pep_error(j, "modify", "bad-request", "item-required");
    struct pep_node *n = sm_pep_node(pep_of(j->user, 0), node);
    if (!n || !sm_pep_item(n, id))
        return pep_error(j, "cancel", "item-not-found", NULL);
    struct pep_op *op = pep_op_new(j, PEP_OP_RETRACT, node);
    if (!op || !(op->id = strdup(id))) {
        if (op)
            pep_op_free(op);
        return pep_error(j, "wait", "internal-server-error", NULL);
    }
    const char *nt = xml_attr(r, "notify");
    op->notify = nt && (!strcmp(nt, "1") || !strcmp(nt, "true"));
    const char *params[4] = {acc[0], acc[1], node, id};
    return pep_write(op, PEP_RETRACT_SQL, 4, params);
}

/* Items to someone allowed: all, the last max_items, or the ids asked. */
static sb_rc pep_items(struct sm_job *j, const struct xml_node *req, const char *node)
{
    char bare[ENV_STR_MAX + 1];
    struct pep_node *n = sm_pep_node(pep_of(j->user, 0), node);
    if (!n || pep_from_bare(j, bare, sizeof bare) < 0)
        return pep_error(j, "cancel", "item-not-found", NULL);
    if (!pep_allowed(j->user, n, bare)) {
        if (n->access == PEP_ACCESS_PRESENCE)
            return pep_error(j, "auth", "not-authorized", "presence-subscription-required");
        return pep_error(j, "cancel", "item-not-found", NULL);   /* whitelist: not shown */
    }
    const char *mi = xml_attr(req, "max_items");
    long max = n->nitems;
    if (mi) {
        char *end = NULL;
        max = strtol(mi, &end, 10);
        if (!*mi || *end || max < 1)
            return pep_error(j, "modify", "bad-request", NULL);
    }
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_adds(&b, "<pubsub xmlns='" NS_PUBSUB "'>");
    pep_items_event(&b, n);
    if (pep_count(req, "item")) {
        for (const struct xml_node *it = xml_first_elem(req); it; it = xml_next_elem(it)) {
            const char *id = strcmp(it->name, "item") ? NULL : xml_attr(it, "id");
            struct pep_item *found = id ? sm_pep_item(n, id) : NULL;
            if (found)
                pep_item_xml(&b, found);
        }
    } else {
        for (int i = n->nitems > max ? n->nitems - (int)max : 0; i < n->nitems; i++)
            pep_item_xml(&b, &n->items[i]);
    }
    sb_buf_adds(&b, "</items></pubsub>");
    if (b.data)
        pep_reply(j, b.data, b.len);
    else
        pep_error(j, "wait", "internal-server-error", NULL);
    sb_buf_free(&b);
    return SB_OK;
}

/* ---- pubsub#owner: configure, delete ---------------------------------------------------- */

static void pep_form_field(struct sb_buf *b, const char *var, const char *type, const char *val)
{
    sb_buf_printf(b, "<field var='%s' type='%s'>", var, type);
    if (!strcmp(var, "pubsub#access_model"))
        for (int a = PEP_ACCESS_PRESENCE; a <= PEP_ACCESS_WHITELIST; a++)
            sb_buf_printf(b, "<option><value>%s</value></option>", pep_access_name(a));
    sb_buf_printf(b, "<value>%s</value></field>", val);
}

static sb_rc pep_config_get(struct sm_job *j, const struct pep_node *n)
{
    struct sb_buf b = SB_BUF_INIT;
    char max[24];
    snprintf(max, sizeof max, "%ld", n->max_items);
    sb_buf_adds(&b, "<pubsub xmlns='" NS_OWNER "'><configure node='");
    xml_escape_attr(&b, n->name, strlen(n->name));
    sb_buf_adds(&b, "'><x xmlns='" NS_XDATA "' type='form'>");
    pep_form_field(&b, "FORM_TYPE", "hidden", FORM_NODE_CONFIG);
    pep_form_field(&b, "pubsub#access_model", "list-single", pep_access_name(n->access));
    pep_form_field(&b, "pubsub#persist_items", "boolean", n->persist ? "1" : "0");
    pep_form_field(&b, "pubsub#max_items", "text-single", n->max_items < 0 ? "max" : max);
    sb_buf_adds(&b, "</x></configure></pubsub>");
    if (b.data)
        pep_reply(j, b.data, b.len);
    sb_buf_free(&b);
    return SB_OK;
}

static sb_rc pep_config_set(struct sm_job *j, const struct xml_node *cf, struct pep_node *n,
                            const char *const *acc)
{
    const struct xml_node *x = xml_child(cf, "x", NS_XDATA);
    const char *type = x ? xml_attr(x, "type") : NULL;
    if (type && !strcmp(type, "cancel")) {
        pep_reply(j, NULL, 0);
        return SB_OK;
    }
    struct pep_cfg o = {0};
    if (!x || (type && strcmp(type, "submit")) || pep_form_parse(x, FORM_NODE_CONFIG, &o) < 0)
        return pep_error(j, "modify", "not-acceptable", NULL);
    struct pep_op *op = pep_op_new(j, PEP_OP_CONFIG, n->name);
    if (!op)
        return pep_error(j, "wait", "internal-server-error", NULL);
    op->cfg = pep_cfg_of(n);
    pep_cfg_apply(&op->cfg, &o);
    struct pep_node probe = {.max_items = op->cfg.max};
    long keep = sm_pep_max_items(&probe);
    for (int i = 0; i < n->nitems - keep; i++) {     /* oldest beyond the new limit */
        pgev_array_add(&op->trim, n->items[i].id, strlen(n->items[i].id));
    }
    sb_buf_adds(&op->trim, "}");
    char max[24];
    snprintf(max, sizeof max, "%ld", op->cfg.max);
    const char *params[7] = {acc[0], acc[1], n->name, pep_access_name(op->cfg.access),
                             op->cfg.persist ? "true" : "false", max,
                             op->trim.data ? op->trim.data : "{}"};
    return pep_write(op, PEP_CONFIG_SQL, 7, params);
}

static sb_rc pep_owner(struct sm_job *j, const char *const *acc)
{
    const struct xml_node *ps = xml_first_elem(j->st);
    const struct xml_node *op = ps ? xml_first_elem(ps) : NULL;
    if (!sm_job_to_own_account(j))
        return pep_error(j, "auth", "forbidden", NULL);
    if (!op || strcmp(ps->name, "pubsub"))
        return pep_error(j, "modify", "bad-request", NULL);
    int get = !strcmp(j->type, "get");
    const char *node = xml_attr(op, "node");
    int configure = !strcmp(op->name, "configure"), del = !strcmp(op->name, "delete");
    if ((!configure && !del) || (del && get))
        return pep_error(j, "cancel", "feature-not-implemented", NULL);
    if (!node || !*node)
        return pep_error(j, "modify", "bad-request", "nodeid-required");
    struct pep_node *n = sm_pep_node(pep_of(j->user, 0), node);
    if (!n)
        return pep_error(j, "cancel", "item-not-found", NULL);
    if (configure)
        return get ? pep_config_get(j, n) : pep_config_set(j, op, n, acc);
    struct pep_op *w = pep_op_new(j, PEP_OP_DELETE, node);
    if (!w)
        return pep_error(j, "wait", "internal-server-error", NULL);
    const char *params[3] = {acc[0], acc[1], node};
    return pep_write(w, PEP_DELETE_SQL, 3, params);
}

static sb_rc pep_pubsub(struct sm_job *j, const char *const *acc)
{
    const struct xml_node *ps = xml_first_elem(j->st);
    if (strcmp(ps->name, "pubsub"))
        return pep_error(j, "modify", "bad-request", NULL);
    const struct xml_node *op = xml_first_elem(ps);
    int get = !strcmp(j->type, "get");
    if (!op)
        return pep_error(j, "modify", "bad-request", NULL);
    const char *node = xml_attr(op, "node");
    int publish = !strcmp(op->name, "publish"), retract = !strcmp(op->name, "retract");
    int items = !strcmp(op->name, "items");
    if (!(publish && !get) && !(retract && !get) && !(items && get))
        return pep_error(j, "cancel", "feature-not-implemented", NULL);
    if (!node || !*node)
        return pep_error(j, "modify", "bad-request", "nodeid-required");
    if (publish)
        return pep_publish(j, ps, op, node, acc);
    if (retract)
        return pep_retract(j, op, node, acc);
    return pep_items(j, op, node);
}

static sb_rc pep_iq(struct sm_job *j, const char *ns)
{
    if (!j->user)
        return SB_DECLINED;
    if (!strcmp(j->type, "result") || !strcmp(j->type, "error"))
        return sm_caps_answer(j);       /* only our own caps queries */
    int owner = !strcmp(ns, NS_OWNER);
    if ((!owner && strcmp(ns, NS_PUBSUB)) || !pep_to_bare(j))
        return SB_DECLINED;             /* to a full JID: that client's business */
    if (strcmp(j->type, "get") && strcmp(j->type, "set"))
        return SB_OK;
    if (!sm_acct_user_exists(j->user))
        return pep_error(j, "cancel", "service-unavailable", NULL);
    sb_rc rc = sm_im_ready(j, &sm_mod_pep);     /* access checks need the roster */
    if (rc == SB_AGAIN)
        return SB_AGAIN;
    if (rc != SB_OK)
        return pep_error(j, "wait", "internal-server-error", NULL);
    char node[ENV_STR_MAX + 1];
    const char *acc[2] = {NULL, node};
    if (sm_acct_split(j->user->bare, node, sizeof node, &acc[0]) != SB_OK)
        return pep_error(j, "cancel", "service-unavailable", NULL);
    return owner ? pep_owner(j, acc) : pep_pubsub(j, acc);
}

/* ---- on the user's behalf (pep_compat.c) ------------------------------------------------ */

sb_rc sm_pep_publish_as(struct sm_job *j, const char *node, const char *id, const char *payload,
                        int access, long max_items, sm_pep_done_cb done, void *arg)
{
    char user[ENV_STR_MAX + 1];
    const char *acc[2] = {NULL, user};
    if (!j->user || sm_acct_split(j->user->bare, user, sizeof user, &acc[0]) != SB_OK ||
        (long)strlen(payload) > pep_max_bytes())
        return SB_ERROR;
    struct pep_op *op = pep_op_new(j, PEP_OP_PUBLISH, node);
    if (!op)
        return SB_ERROR;
    op->done = done;
    op->done_arg = arg;
    op->id = strdup(id);
    op->payload = strdup(payload);
    struct pep_node *n = sm_pep_node(pep_of(j->user, 0), node);
    op->cfg = n ? pep_cfg_of(n)
                : (struct pep_cfg){.access = access, .persist = 1, .max = max_items};
    if (!op->payload) {
        pep_op_free(op);
        return SB_ERROR;
    }
    sb_rc rc = pep_publish_write(op, n, acc);
    return rc == SB_AGAIN ? SB_AGAIN : SB_ERROR;
}

sb_rc sm_pep_retract_as(struct sm_job *j, const char *node, const char *id, sm_pep_done_cb done,
                        void *arg)
{
    char user[ENV_STR_MAX + 1];
    const char *acc[2] = {NULL, user};
    if (!j->user || sm_acct_split(j->user->bare, user, sizeof user, &acc[0]) != SB_OK)
        return SB_ERROR;
    struct pep_op *op = pep_op_new(j, PEP_OP_RETRACT, node);
    if (!op || !(op->id = strdup(id))) {
        if (op)
            pep_op_free(op);
        return SB_ERROR;
    }
    op->done = done;
    op->done_arg = arg;
    op->notify = 1;
    const char *params[4] = {acc[0], acc[1], node, id};
    return pep_write(op, PEP_RETRACT_SQL, 4, params) == SB_AGAIN ? SB_AGAIN : SB_ERROR;
}

struct sm_pep *sm_pep_of(struct sm_user *u)
{
    return pep_of(u, 0);
}

/* ---- disco ------------------------------------------------------------------------------ */

sb_rc sm_pep_disco_items(struct sm_job *j, struct xml_doc *d, struct xml_node *q)
{
    char bare[ENV_STR_MAX + 1];
    struct sm_pep *p = pep_of(j->user, 0);
    if (!p || pep_from_bare(j, bare, sizeof bare) < 0)
        return SB_OK;
    for (int i = 0; i < p->nnodes; i++) {
        if (!pep_allowed(j->user, &p->nodes[i], bare))
            continue;
        struct xml_node *it = xml_add_child(d, q, "item");
        if (!it || xml_set_attr(d, it, "jid", j->user->bare) != SB_OK ||
            xml_set_attr(d, it, "node", p->nodes[i].name) != SB_OK)
            return SB_ERROR;
    }
    return SB_OK;
}

static void pep_stop(struct sm_core *c)
{
    sm_caps_stop();
}

const struct sm_module sm_mod_pep = {
    .name = "pep",
    .handle_iq = pep_iq,
    .handle_presence = pep_presence,
    .handle_control = pep_control,
    .stop = pep_stop,
    .features = sm_pep_features,
};
