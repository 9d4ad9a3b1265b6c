/* mod_push.c — XEP-0357 push notifications: the user's server side.
 *
 * A client registers an app server's push service (a JID and a pubsub node,
 * with an optional publish-options form) with an iq set to its own account:
 *   <enable xmlns='urn:xmpp:push:0' jid=… node=…>[<x publish-options/>]
 *   <disable xmlns='urn:xmpp:push:0' jid=… [node=…]/>
 * jid is required (XEP-0357 §5), and so is node, which the XEP only
 * recommends: a XEP-0060 publish cannot go without one. Missing, empty or
 * unparseable → bad-request, as is a form whose FORM_TYPE is not
 * publish-options; disabling what was never enabled is a result.
 * Registrations are rows of push_registrations (deploy/migrations/004),
 * loaded with the account (acct.c, 'n' rows) and cached in the user record,
 * so deciding to notify costs no query.
 *
 * What is notified: a chat or normal message with a <body/> (the messages
 * mod_offline keeps) that reached no live stream — it was stored offline
 * (mod_offline) or only queued for detached XEP-0198 streams (mod_deliver).
 * Not notified: messages without a body (chat states, receipts), headline
 * and groupchat, presence and subscription requests (re-sent at the next
 * login), iqs, and the unacknowledged messages of a detached stream that
 * timed out (op sm-replay: they were notified when they were queued).
 *
 * The notification is a pubsub publish from the user's bare JID to each
 * registered service, routed like any stanza (a remote service is reached
 * over s2s), carrying the urn:xmpp:push:summary form: message-count (the
 * stored offline messages, or what detached streams queued since the user
 * was last online; reset by an available presence or a resumption),
 * last-message-sender (full JID) and, only with [sm] push_include_body,
 * last-message-body (first PUSH_BODY_MAX bytes).
 *
 * Throttle ([sm] push_throttle seconds, default 10; 0 = off): the first
 * message sends at once; more within the window are folded into one
 * notification at its end, carrying the latest count and sender (a burst
 * of 20 messages wakes the device twice, and its badge ends right). The
 * window state lives in this module (push_waits), not in the user record,
 * which an offline user loses between messages; the trailing notification
 * runs as control `push-flush` on the user's queue, which reloads the
 * registrations.
 *
 * Disabling from the other side (§7.1, §8): an error reply to a
 * notification disables that registration, except type='wait' (transient);
 * so does an affiliation-none message from the service. */
#include "sm_int.h"
#include "acct.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PUSH "urn:xmpp:push:0"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_XDATA "jabber:x:data"
#define PUBLISH_OPTIONS "http://jabber.org/protocol/pubsub#publish-options"
#define PUSH_ID_PREFIX "sbpush-"
#define PUSH_REGS_MAX 10            /* registrations per account */
#define PUSH_NODE_MAX 1023          /* bytes of a node name */
#define PUSH_OPTIONS_MAX 8192       /* bytes of the serialised publish-options form */
#define PUSH_BODY_MAX 512           /* bytes of last-message-body */
#define PUSH_WAITS_MAX 10000        /* throttled users remembered; beyond: no throttle */
#define PUSH_THROTTLE_DEFAULT 10

extern const struct sm_module sm_mod_push;

static struct sb_buf push_out;      /* the notification being built */
static unsigned push_seq;

/* ---- the throttle window, per user --------------------------------------------- */

struct push_wait {
    char *bare;
    struct sm_core *core;
    long count;                     /* what a trailing notification says */
    char *sender, *body;
    double win;                     /* the window's length, seconds */
    unsigned pending : 1;           /* a message came inside the window */
    ev_timer timer;
    UT_hash_handle hh;
};
static struct push_wait *push_waits;

static void push_wait_free(struct push_wait *w)
{
    ev_timer_stop(w->core->loop, &w->timer);
    HASH_DEL(push_waits, w);
    free(w->bare);
    free(w->sender);
    free(w->body);
    free(w);
}

static struct push_wait *push_wait_find(const char *bare)
{
    struct push_wait *w;
    HASH_FIND_STR(push_waits, bare, w);
    return w;
}

/* The window ends: a trailing notification goes through the user's queue
 * (the record may be gone, it reloads); then one more window. */
static void push_on_window(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct push_wait *w = t->data;
    if (!w->pending) {
        push_wait_free(w);
        return;
    }
    w->pending = 0;
    struct env_hdr h;
    env_init(&h, ENV_CONTROL, ENV_ROUTE_JID);
    snprintf(h.key, sizeof h.key, "%s", w->bare);
    snprintf(h.sender, sizeof h.sender, "%s", link_instance(w->core->link));
    snprintf(h.op, sizeof h.op, "push-flush");
    ev_timer_set(&w->timer, w->win, 0.);
    ev_timer_start(loop, &w->timer);
    sm_core_submit(w->core, &h, "", 0);
}

static int push_window_start(struct sm_core *c, const char *bare, double win)
{
    if (HASH_COUNT(push_waits) >= PUSH_WAITS_MAX)
        return 0;
    struct push_wait *w = calloc(1, sizeof *w);
    if (!w || !(w->bare = strdup(bare))) {
        free(w);
        return 0;
    }
    w->core = c;
    w->win = win;
    ev_timer_init(&w->timer, push_on_window, win, 0.);
    w->timer.data = w;
    ev_timer_start(c->loop, &w->timer);
    HASH_ADD_KEYPTR(hh, push_waits, w->bare, strlen(w->bare), w);
    return 1;
}

static void push_set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = v ? strdup(v) : NULL;
}

/* ---- building and sending ------------------------------------------------------ */

static void push_field(struct sb_buf *b, const char *var, const char *val, size_t len)
{
    sb_buf_printf(b, "<field var='%s'><value>", var);
    xml_escape_text(b, val, len);
    sb_buf_adds(b, "</value></field>");
}

static void push_build(struct sb_buf *b, const struct sm_user *u, const struct sm_push_reg *r,
                       long count, const char *sender, const char *body)
{
    char n[24];
    sb_buf_reset(b);
    sb_buf_adds(b, "<iq type='set' from='");
    xml_escape_attr(b, u->bare, strlen(u->bare));
    sb_buf_adds(b, "' to='");
    xml_escape_attr(b, r->jid, strlen(r->jid));
    sb_buf_printf(b, "' id='" PUSH_ID_PREFIX "%lld-%u'><pubsub xmlns='" NS_PUBSUB
                  "'><publish node='", r->id, ++push_seq);
    xml_escape_attr(b, r->node, strlen(r->node));
    sb_buf_adds(b, "'><item><notification xmlns='" NS_PUSH "'><x xmlns='" NS_XDATA
                "' type='submit'>");
    push_field(b, "FORM_TYPE", "urn:xmpp:push:summary", 21);
    snprintf(n, sizeof n, "%ld", count);
    push_field(b, "message-count", n, strlen(n));
    if (sender && *sender)
        push_field(b, "last-message-sender", sender, strlen(sender));
    if (body)
        push_field(b, "last-message-body", body, strlen(body));
    sb_buf_adds(b, "</x></notification></item></publish>");
    if (*r->options) {
        sb_buf_adds(b, "<publish-options>");
        sb_buf_adds(b, r->options);
        sb_buf_adds(b, "</publish-options>");
    }
    sb_buf_adds(b, "</pubsub></iq>");
}

static void push_send_all(struct sm_user *u, long count, const char *sender, const char *body)
{
    int sent = 0;
    for (int i = 0; u->acct && i < u->acct->npush; i++) {
        const struct sm_push_reg *r = &u->acct->push[i];
        char key[ENV_STR_MAX + 1];
        push_build(&push_out, u, r, count, sender, body);
        if (!push_out.data || jid_bare_of(r->jid, key, sizeof key) < 0)
            continue;
        sent += sm_send_raw(u->core, key, u->bare, push_out.data, push_out.len) == SB_OK;
    }
    log_info("push_sent", "jid=%s services=%d count=%ld", sb_log_q(u->bare), sent, count);
}

/* The first bytes of the body, cut at a UTF-8 character boundary. */
static char *push_body_of(const struct sm_job *j)
{
    if (!sb_config_bool("push_include_body", 0))
        return NULL;
    struct sb_buf t = SB_BUF_INIT;
    xml_text(xml_child(j->st, "body", NULL), &t);
    size_t n = t.len;
    if (n > PUSH_BODY_MAX) {
        n = PUSH_BODY_MAX;
        while (n > 0 && ((unsigned char)t.data[n] & 0xC0) == 0x80)
            n--;
    }
    char *s = t.data ? strndup(t.data, n) : NULL;
    sb_buf_free(&t);
    return s;
}

static int push_worthy(const struct sm_job *j)
{
    return (!*j->type || !strcmp(j->type, "chat") || !strcmp(j->type, "normal")) &&
           xml_child(j->st, "body", NULL) && strcmp(j->op, "sm-replay");
}

void sm_push_notify(struct sm_job *j, long stored)
{
    struct sm_user *u = j->user;
    struct sm_acct *a = u ? u->acct : NULL;
    if (!a || !a->npush || !j->st || !push_worthy(j))
        return;
    long count = stored > 0 ? stored : ++a->push_count;
    char *body = push_body_of(j);
    double win = (double)sb_config_int("push_throttle", PUSH_THROTTLE_DEFAULT);
    struct push_wait *w = win > 0 ? push_wait_find(u->bare) : NULL;
    if (w) {                        /* inside the window: folded into its end */
        w->pending = 1;
        w->count = count;
        push_set_str(&w->sender, j->from);
        free(w->body);
        w->body = body;
        log_debug("push_throttled", "jid=%s count=%ld", sb_log_q(u->bare), count);
        return;
    }
    if (win > 0)
        push_window_start(u->core, u->bare, win);
    push_send_all(u, count, j->from, body);
    free(body);
}

void sm_push_online(struct sm_user *u)
{
    struct push_wait *w = push_wait_find(u->bare);
    if (w)
        push_wait_free(w);
    if (u->acct)
        u->acct->push_count = 0;
}

/* push-flush: the window's trailing notification, unless the user is back. */
static sb_rc push_flush(struct sm_job *j)
{
    struct push_wait *w = push_wait_find(j->key);
    if (!w || !j->user)
        return SB_OK;
    for (int i = 0; i < j->user->nsess; i++)
        if (j->user->sess[i].available && sm_session_live(j->core, &j->user->sess[i]))
            return SB_OK;
    push_send_all(j->user, w->count, w->sender, w->body);
    return SB_OK;
}

/* ---- forgetting a registration ------------------------------------------------- */

static void push_on_write(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_error("push_delete_failed", "error=%s",
                  sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
}

/* The service disabled it (an error reply, an affiliation change). */
static void push_forget(struct sm_job *j, struct sm_push_reg *r, const char *why)
{
    char id[24], *jid = strdup(r->jid), *node = strdup(r->node);
    snprintf(id, sizeof id, "%lld", r->id);
    log_info("push_disabled", "jid=%s service=%s node=%s reason=%s", sb_log_q(j->user->bare),
             sb_log_q(r->jid), sb_log_q(r->node), why);
    const char *params[1] = {id};
    if (sm_pg_query(j->core, "DELETE FROM push_registrations WHERE id = $1::bigint", 1, params,
                    push_on_write, NULL) != SB_OK)
        log_error("push_delete_failed", "error=queue");
    if (jid && node)
        sm_acct_push_del(j->user->acct, jid, node);
    free(jid);
    free(node);
}

/* A reply from the push service is from the registered JID itself (or, for
 * a bare registration, one of its resources). */
static int push_from_service(const char *reg_jid, const char *from)
{
    char bare[ENV_STR_MAX + 1];
    return !strcmp(reg_jid, from) ||
           (!strchr(reg_jid, '/') && jid_bare_of(from, bare, sizeof bare) >= 0 &&
            !strcmp(bare, reg_jid));
}

static struct sm_push_reg *push_by_id(struct sm_acct *a, long long id)
{
    for (int i = 0; a && i < a->npush; i++)
        if (a->push[i].id == id)
            return &a->push[i];
    return NULL;
}

/* A result or error to one of our notifications (id sbpush-ID-SEQ). */
static sb_rc push_reply(struct sm_job *j)
{
    if (!j->id || strncmp(j->id, PUSH_ID_PREFIX, strlen(PUSH_ID_PREFIX)) || !j->to ||
        strcmp(j->to, j->user->bare))
        return SB_DECLINED;
    if (strcmp(j->type, "error"))
        return SB_OK;
    struct sm_push_reg *r = push_by_id(j->user->acct,
                                       strtoll(j->id + strlen(PUSH_ID_PREFIX), NULL, 10));
    if (!r || !push_from_service(r->jid, j->from))
        return SB_OK;
    struct xml_node *e = xml_child(j->st, "error", NULL);
    struct xml_node *cond = e ? xml_first_elem(e) : NULL;
    const char *etype = e ? xml_attr(e, "type") : NULL;
    if (etype && !strcmp(etype, "wait")) {
        log_info("push_error_kept", "jid=%s service=%s cond=%s", sb_log_q(j->user->bare),
                 sb_log_q(r->jid), cond ? cond->name : "-");
        return SB_OK;
    }
    push_forget(j, r, cond ? cond->name : "error");
    return SB_OK;
}

/* §8: <message from=service><pubsub node=N><affiliation affiliation='none'/>. */
static sb_rc push_message(struct sm_job *j)
{
    if (!j->user || !j->user->acct || !j->user->acct->npush || !j->to ||
        strcmp(j->to, j->user->bare))
        return SB_DECLINED;
    struct xml_node *ps = xml_child(j->st, "pubsub", NS_PUBSUB);
    struct xml_node *aff = ps ? xml_child(ps, "affiliation", NULL) : NULL;
    const char *node = ps ? xml_attr(ps, "node") : NULL;
    const char *what = aff ? xml_attr(aff, "affiliation") : NULL;
    if (!node || !what || strcmp(what, "none"))
        return SB_DECLINED;
    struct sm_acct *a = j->user->acct;
    for (int i = 0; i < a->npush; i++) {
        if (!strcmp(a->push[i].node, node) && push_from_service(a->push[i].jid, j->from)) {
            push_forget(j, &a->push[i], "affiliation-none");
            return SB_OK;
        }
    }
    return SB_DECLINED;
}

/* ---- enable / disable ------------------------------------------------------------ */

struct push_op {
    struct sm_job *j;
    char *jid, *node, *options;     /* options NULL: a disable */
};

static void push_op_free(struct push_op *op)
{
    free(op->jid);
    free(op->node);
    free(op->options);
    free(op);
}

static sb_rc push_bad(struct sm_job *j, const char *etype, const char *cond, const char *why)
{
    log_info("push_bad_request", "jid=%s reason=%s", sb_log_q(j->key), why);
    sm_reply_error(j, etype, cond);
    return SB_OK;
}

static void push_reply_result(struct sm_job *j)
{
    struct xml_doc *d = sm_iq_result_new(j);
    if (!d || sm_send_node(j->core, d->root) != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    xml_doc_free(d);
}

static void push_on_stored(PGresult *res, void *arg)
{
    struct push_op *op = arg;
    struct sm_job *j = op->j;
    int enable = op->options != NULL;
    ExecStatusType want = enable ? PGRES_TUPLES_OK : PGRES_COMMAND_OK;
    if (!res || PQresultStatus(res) != want || (enable && PQntuples(res) != 1)) {
        log_error("push_store_failed", "jid=%s error=%s", sb_log_q(j->key),
                  sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else {
        struct sm_acct *a = j->user ? j->user->acct : NULL;
        if (a && enable)
            sm_acct_push_set(a, strtoll(PQgetvalue(res, 0, 0), NULL, 10), op->jid, op->node,
                             op->options);
        else if (a)
            sm_acct_push_del(a, op->jid, *op->node ? op->node : NULL);
        log_info(enable ? "push_enabled" : "push_disabled", "jid=%s service=%s node=%s%s",
                 sb_log_q(j->key), sb_log_q(op->jid), sb_log_q(op->node),
                 enable ? "" : " reason=client");
        push_reply_result(j);
    }
    push_op_free(op);
    sm_job_done(j);
}

static const char PUSH_ENABLE_SQL[] =
    "INSERT INTO push_registrations (domain, username, jid, node, options)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (domain, username, jid, node)"
    " DO UPDATE SET options = EXCLUDED.options RETURNING id";
/* $4 = '': every node of the service (an enabled node is never empty). */
static const char PUSH_DISABLE_SQL[] =
    "DELETE FROM push_registrations WHERE domain = $1 AND username = $2 AND jid = $3"
    " AND ($4 = '' OR node = $4)";

static sb_rc push_store(struct sm_job *j, struct push_op *op)
{
    char user[ENV_STR_MAX + 1];
    const char *params[5];
    if (!op->jid || !op->node || sm_acct_split(j->user->bare, user, sizeof user, &params[0]) !=
        SB_OK) {
        push_op_free(op);
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    params[1] = user;
    params[2] = op->jid;
    params[3] = op->node;
    params[4] = op->options;
    if (sm_pg_query(j->core, op->options ? PUSH_ENABLE_SQL : PUSH_DISABLE_SQL,
                    op->options ? 5 : 4, params, push_on_stored, op) != SB_OK) {
        push_op_free(op);
        sm_reply_error(j, "wait", "resource-constraint");
        return SB_OK;
    }
    return SB_AGAIN;
}

/* The value of the form's FORM_TYPE field, into t ("" when absent). */
static void push_form_type(const struct xml_node *x, struct sb_buf *t)
{
    sb_buf_reset(t);
    for (const struct xml_node *f = xml_first_elem(x); f; f = xml_next_elem(f)) {
        const char *var = xml_attr(f, "var");
        if (!strcmp(f->name, "field") && var && !strcmp(var, "FORM_TYPE")) {
            xml_text(xml_child(f, "value", NULL), t);
            return;
        }
    }
}

/* The publish-options form of an <enable/>, serialised into out ("" when
 * there is none). Returns why it is refused, or NULL. */
static const char *push_options(const struct xml_node *en, struct sb_buf *out)
{
    struct sb_buf t = SB_BUF_INIT;
    const char *why = NULL;
    int forms = 0;
    for (const struct xml_node *x = xml_first_elem(en); x && !why; x = xml_next_elem(x)) {
        const char *ns = xml_attr(x, "xmlns");
        if (strcmp(x->name, "x") || !ns || strcmp(ns, NS_XDATA))
            continue;
        push_form_type(x, &t);
        if (forms++)
            why = "two-forms";
        else if (!t.data || strcmp(t.data, PUBLISH_OPTIONS))
            why = "form-type";
        else if (xml_serialize(x, out) != SB_OK || out->len > PUSH_OPTIONS_MAX)
            why = "options-too-long";
    }
    sb_buf_free(&t);
    return why;
}

static sb_rc push_change(struct sm_job *j, const struct xml_node *en, int enable)
{
    const char *jid_in = xml_attr(en, "jid"), *node = xml_attr(en, "node");
    struct sm_acct *a = j->user->acct;
    struct jid pj;
    char jid[JID_FULL_MAX + 1];
    if (!jid_in || !*jid_in || jid_parse(&pj, jid_in) != SB_OK)
        return push_bad(j, "modify", "bad-request", "jid");
    if (enable ? !node || !*node || strlen(node) > PUSH_NODE_MAX : node && !*node)
        return push_bad(j, "modify", "bad-request", "node");
    jid_full(&pj, jid);
    if (!a || !a->loaded)
        return push_bad(j, "wait", "internal-server-error", "account-not-loaded");
    struct sb_buf opts = SB_BUF_INIT;
    const char *why = enable ? push_options(en, &opts) : NULL;
    if (why) {
        sb_buf_free(&opts);
        return push_bad(j, "modify", !strcmp(why, "options-too-long") ? "not-acceptable"
                                                                       : "bad-request", why);
    }
    if (enable && !a->exists) {
        sb_buf_free(&opts);         /* anonymous: rows would outlive the account */
        return push_bad(j, "cancel", "not-allowed", "no-account");
    }
    if (enable && !sm_acct_push_find(a, jid, node) && a->npush >= PUSH_REGS_MAX) {
        sb_buf_free(&opts);
        return push_bad(j, "wait", "resource-constraint", "too-many");
    }
    struct push_op *op = calloc(1, sizeof *op);
    if (!op) {
        sb_buf_free(&opts);
        return push_bad(j, "wait", "internal-server-error", "no-memory");
    }
    op->j = j;
    op->jid = strdup(jid);
    op->node = strdup(node ? node : "");
    op->options = enable ? (opts.data ? opts.data : strdup("")) : NULL;
    if (enable && !op->options) {
        push_op_free(op);
        return push_bad(j, "wait", "internal-server-error", "no-memory");
    }
    return push_store(j, op);
}

static sb_rc push_iq(struct sm_job *j, const char *ns)
{
    if (!j->user)
        return SB_DECLINED;
    if (!strcmp(j->type, "result") || !strcmp(j->type, "error"))
        return push_reply(j);
    if (strcmp(ns, NS_PUSH) || (j->to && strchr(j->to, '/')))
        return SB_DECLINED;             /* to a full JID: that client's business */
    if (!sm_job_to_own_account(j))
        return push_bad(j, "auth", "forbidden", "not-own-account");
    if (strcmp(j->type, "set"))
        return push_bad(j, "cancel", "feature-not-implemented", "get");
    const struct xml_node *q = xml_first_elem(j->st);
    if (!strcmp(q->name, "enable") || !strcmp(q->name, "disable"))
        return push_change(j, q, !strcmp(q->name, "enable"));
    return push_bad(j, "modify", "bad-request", "element");
}

/* An available presence of the user's own: back online, the count restarts. */
static sb_rc push_presence(struct sm_job *j)
{
    if (!j->to && j->user && !*j->type)
        sm_push_online(j->user);
    return SB_DECLINED;
}

static sb_rc push_control(struct sm_job *j, const char *op)
{
    return !strcmp(op, "push-flush") ? push_flush(j) : SB_DECLINED;
}

static void push_stop(struct sm_core *c)
{
    struct push_wait *w, *tmp;
    HASH_ITER(hh, push_waits, w, tmp)
        push_wait_free(w);
    sb_buf_free(&push_out);
}

const struct sm_module sm_mod_push = {
    .name = "push",
    .handle_iq = push_iq,
    .handle_message = push_message,
    .handle_presence = push_presence,
    .handle_control = push_control,
    .stop = push_stop,
};
