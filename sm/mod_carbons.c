/* mod_carbons.c — XEP-0280 message carbons (urn:xmpp:carbons:2), with the
 * XEP-0334 <no-copy/> hint. The user's sm holds all of the user's sessions,
 * so it makes every copy:
 *   enable/disable  an iq set to the own account sets the session's flag,
 *                   kept in the cache and in sess:{bare} (flag `c`, written
 *                   with the record, pipelined), so it survives an sm
 *                   restart or a change of owner
 *   received        mod_deliver delivered a message to some sessions (the
 *                   ones it marked `got`): every other carbons-enabled,
 *                   available session gets <received/> (sm_carbons_received)
 *   sent            a message the user sends normally goes from the
 *                   front-end straight to the recipient's sm; the sender's
 *                   sm never sees it. So while the user has a carbons-enabled
 *                   session, the sm tells each *other* session's front-end
 *                   (control `carbons-route`, body 1/0) to route that
 *                   session's outbound messages by the sender's own bare JID
 *                   with op `outbound`; this module copies them <sent/> to
 *                   the other carbons-enabled sessions and forwards the
 *                   original by the recipient's bare JID. A user without
 *                   carbons-enabled sessions pays nothing: no control, no
 *                   extra hop, no lookup.
 * Eligible (§6): type chat, or normal with a <body/>; never a message with
 * Control `carbons` (aux the full JID, body 1/0) is the same switch
 * asked by the front-end for a Bind 2 inline <enable/> (XEP-0386).
 * <private/> (carbons) or <no-copy/> (hints), a carbon copy itself, a MUC
 * message (<x/> muc#user), an error, groupchat or headline. The receiving
 * side strips <private/> before delivery (§8) when it is written as our
 * serialiser writes it (unprefixed).
 * Copies go through sm_deliver_raw, so XEP-0198 numbers them and XEP-0352
 * treats them like any message. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* memmem */
#endif
#include "sm.h"
#include "jid.h"
#include "log.h"

#include <string.h>

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_HINTS "urn:xmpp:hints"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"

static const char *const carbons_features[] = {NS_CARBONS, NULL};
static struct sb_buf carbons_out;      /* one copy at a time */

static int carbons_any(const struct sm_user *u)
{
    for (int i = 0; i < u->nsess; i++)
        if (u->sess[i].carbons)
            return 1;
    return 0;
}

static int carbons_eligible(const struct sm_job *j)
{
    const struct xml_node *st = j->st;
    int chat = !strcmp(j->type, "chat");
    int normal = !*j->type || !strcmp(j->type, "normal");
    if (!st || strcmp(j->name, "message") || !(chat || (normal && xml_child(st, "body", NULL))))
        return 0;
    return !xml_child(st, "private", NS_CARBONS) && !xml_child(st, "no-copy", NS_HINTS) &&
           !xml_child(st, "received", NS_CARBONS) && !xml_child(st, "sent", NS_CARBONS) &&
           !xml_child(st, "x", NS_MUC_USER);
}

/* Does the start tag of body declare a default namespace? */
static int carbons_has_xmlns(const char *body, size_t len)
{
    const char *gt = memchr(body, '>', len);
    size_t tl = gt ? (size_t)(gt - body) : len;
    return memmem(body, tl, " xmlns=", 7) != NULL;
}

/* <message from=bare to=full type=…><DIR xmlns=carbons><forwarded>the
 * original, in jabber:client</forwarded></DIR></message> to s. */
static void carbons_copy(struct sm_job *j, const struct sm_session *s, const char *dir)
{
    struct sm_user *u = j->user;
    struct sb_buf *b = &carbons_out;
    sb_buf_reset(b);
    sb_buf_adds(b, "<message from='");
    xml_escape_attr(b, u->bare, strlen(u->bare));
    sb_buf_adds(b, "' to='");
    xml_escape_attr(b, u->bare, strlen(u->bare));
    sb_buf_adds(b, "/");
    xml_escape_attr(b, s->resource, strlen(s->resource));
    sb_buf_adds(b, "'");
    if (*j->type) {
        sb_buf_adds(b, " type='");
        xml_escape_attr(b, j->type, strlen(j->type));
        sb_buf_adds(b, "'");
    }
    sb_buf_printf(b, "><%s xmlns='" NS_CARBONS "'><forwarded xmlns='" NS_FORWARD "'>", dir);
    if (carbons_has_xmlns(j->body, j->body_len)) {
        sb_buf_add(b, j->body, j->body_len);
    } else {
        sb_buf_adds(b, "<message xmlns='jabber:client'");
        sb_buf_add(b, j->body + 8, j->body_len - 8);
    }
    sb_buf_printf(b, "</forwarded></%s></message>", dir);
    if (!b->data) {
        log_error("carbons_nomem", "jid=%s", sb_log_q(u->bare));
        return;
    }
    sm_deliver_raw(j->core, s, u->bare, b->data, b->len);
}

/* The sending session (a message from the user itself) gets no copy. */
static int carbons_is_sender(const struct sm_job *j, const struct sm_session *s)
{
    const char *bare = j->user->bare;
    size_t bl = strlen(bare);
    return !strncmp(j->from, bare, bl) && j->from[bl] == '/' && !strcmp(j->from + bl + 1, s->resource);
}

void sm_carbons_received(struct sm_job *j)
{
    struct sm_user *u = j->user;
    int copy = u && carbons_any(u) && carbons_eligible(j);
    for (int i = 0; u && i < u->nsess; i++) {
        struct sm_session *s = &u->sess[i];
        if (copy && !s->got && s->carbons && s->available && sm_job_reaches(j, s) &&
            !carbons_is_sender(j, s))
            carbons_copy(j, s, "received");
        s->got = 0;
    }
}

/* ---- the route of outbound messages --------------------------------------------------- */

/* Must s's outbound messages pass through here? When another session of
 * the user (other than `gone`, which is ending) has carbons on. */
static int carbons_wanted(const struct sm_user *u, const struct sm_session *s,
                          const struct sm_session *gone)
{
    for (int i = 0; i < u->nsess; i++)
        if (&u->sess[i] != s && &u->sess[i] != gone && u->sess[i].carbons)
            return 1;
    return 0;
}

static void carbons_route(struct sm_core *c, const struct sm_user *u, const struct sm_session *s,
                          int on)
{
    char full[ENV_STR_MAX + 1];
    snprintf(full, sizeof full, "%s/%s", u->bare, s->resource);
    sm_send_control_body(c, ENV_ROUTE_INSTANCE, s->instance, s->sid, "carbons-route", full,
                         on ? "1" : "0");
}

/* The set of carbons-enabled sessions changed: every session hears its
 * route again (rare: enable, disable, the end of such a session). */
static void carbons_routes(struct sm_core *c, const struct sm_user *u, const struct sm_session *gone)
{
    for (int i = 0; i < u->nsess; i++)
        if (&u->sess[i] != gone && !sm_frontend_gone(c, u->sess[i].instance))
            carbons_route(c, u, &u->sess[i], carbons_wanted(u, &u->sess[i], gone));
}

void sm_carbons_session_up(struct sm_core *c, struct sm_user *u, const struct sm_session *s)
{
    if (u && s && carbons_wanted(u, s, NULL))
        carbons_route(c, u, s, 1);
}

/* ---- stanzas ------------------------------------------------------------------------- */

static void carbons_set(struct sm_job *j, struct sm_session *s, int on)
{
    if (s->carbons != on) {     /* enabling twice is not an error (§7.1) */
        s->carbons = (unsigned)on;
        sm_session_store(j->core, j->user, s);
        carbons_routes(j->core, j->user, NULL);
        log_info("carbons", "jid=%s enabled=%d", sb_log_q(j->aux), on);
    }
}

static sb_rc carbons_iq(struct sm_job *j, const char *ns)
{
    if (strcmp(ns, NS_CARBONS) || !j->user || !sm_job_to_own_account(j))
        return SB_DECLINED;
    if (strcmp(j->type, "get") && strcmp(j->type, "set"))
        return SB_OK;                       /* a result or error to the server */
    if (strcmp(j->type, "set")) {
        sm_reply_error(j, "cancel", "feature-not-implemented");
        return SB_OK;
    }
    const char *what = xml_first_elem(j->st)->name;
    int on = !strcmp(what, "enable");
    if (!on && strcmp(what, "disable")) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    struct sm_session *s = sm_user_session(j->user, sm_job_sender_resource(j));
    if (!s) {
        sm_reply_error(j, "cancel", "not-allowed");
        return SB_OK;
    }
    carbons_set(j, s, on);
    struct xml_doc *d = sm_iq_result_new(j);
    if (!d || sm_send_node(j->core, d->root) != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    xml_doc_free(d);
    return SB_OK;
}

/* Remove an unprefixed <private xmlns=carbons/> from the bytes that will
 * be delivered (§8: the receiving server SHOULD); the job owns them. */
static void carbons_strip_private(struct sm_job *j)
{
    char *body = (char *)j->body, *p = body;
    size_t len = j->body_len;
    while ((p = memmem(p, len - (size_t)(p - body), "<private", 8))) {
        char *gt = memchr(p, '>', len - (size_t)(p - body));
        if (!gt)
            return;
        char *end = gt + 1;
        if (!memmem(p, (size_t)(gt - p), NS_CARBONS, strlen(NS_CARBONS)) ||
            (p[8] != ' ' && p[8] != '/' && p[8] != '>')) {
            p = end;
            continue;
        }
        if (gt[-1] != '/') {
            char *close = memmem(end, len - (size_t)(end - body), "</private>", 10);
            if (!close)
                return;
            end = close + 10;
        }
        memmove(p, end, len - (size_t)(end - body) + 1);       /* with the NUL */
        j->body_len = len - (size_t)(end - p);
        return;
    }
}

/* op=outbound: the user's own message on its way out (the front-end was
 * told carbons-route 1). Copies <sent/>, then on to the recipient. */
static sb_rc carbons_outbound(struct sm_job *j)
{
    struct sm_user *u = j->user;
    char key[ENV_STR_MAX + 1];
    if (!j->to || jid_bare_of(j->to, key, sizeof key) < 0) {
        log_warn("carbons_outbound_bad", "jid=%s to=%s", sb_log_q(j->aux),
                 sb_log_q(j->to ? j->to : "-"));
        return SB_OK;
    }
    if (carbons_any(u) && carbons_eligible(j))
        for (int i = 0; i < u->nsess; i++) {
            struct sm_session *s = &u->sess[i];
            if (s->carbons && s->available && !carbons_is_sender(j, s) && sm_job_reaches(j, s))
                carbons_copy(j, s, "sent");
        }
    sm_send_raw(j->core, key, j->aux, j->body, j->body_len);
    return SB_OK;
}

static sb_rc carbons_message(struct sm_job *j)
{
    if (!j->user)
        return SB_DECLINED;
    if (!strcmp(j->op, "outbound"))
        return carbons_outbound(j);
    if (xml_child(j->st, "private", NS_CARBONS))
        carbons_strip_private(j);
    return SB_DECLINED;
}

/* The end of a carbons-enabled session may turn the others' route off.
 * Observed only (declined): mod_presence and mod_session end it. */
static sb_rc carbons_control(struct sm_job *j, const char *op)
{
    if (j->user && !strcmp(op, "carbons")) {
        /* XEP-0386 inline <enable/> in Bind 2: the front-end asks right
         * after `bound`, on this queue, so the session exists. */
        struct sm_session *s = sm_user_session(j->user, sm_job_sender_resource(j));
        if (s && !strcmp(s->sid, j->sid))
            carbons_set(j, s, !strcmp(j->body, "1"));
        else
            log_info("carbons_no_session", "jid=%s sid=%s", sb_log_q(j->aux), j->sid);
        return SB_OK;
    }
    if (!j->user || (strcmp(op, "end") && strcmp(op, "session-gone")))
        return SB_DECLINED;
    struct sm_session *s = sm_user_session(j->user, sm_job_sender_resource(j));
    if (s && s->carbons && !strcmp(s->sid, j->sid))
        carbons_routes(j->core, j->user, s);
    return SB_DECLINED;
}

static void carbons_stop(struct sm_core *c)
{
    sb_buf_free(&carbons_out);
}

const struct sm_module sm_mod_carbons = {
    .name = "carbons",
    .handle_iq = carbons_iq,
    .handle_message = carbons_message,
    .handle_control = carbons_control,
    .stop = carbons_stop,
    .features = carbons_features,
};
