/* mod_presence.c — presence (RFC 6121 §3–4) on the owning sm of each side.
 * Front-ends route every client presence to the sender's own sm (key = the
 * sender's bare JID, sid set): that is the outbound side. What another sm
 * sends on (key = the recipient, no sid) is the inbound side.
 *
 * Outbound, no `to`: available → priority, pres:{bare}, broadcast to
 *   contacts with FROM/BOTH and the user's other available resources; the
 *   first one of a session (initial presence) also probes contacts with
 *   TO/BOTH, shows the other resources' presence, re-sends pending
 *   subscription requests and flushes offline messages (priority ≥ 0).
 *   unavailable → the same broadcast plus everyone that got directed
 *   presence from this resource.
 * Outbound, `to`: subscription stanzas run the state machine (sm/sub.h),
 *   push roster changes and go out stamped with the bare JID; available /
 *   unavailable are directed presence (tracked for the final unavailable);
 *   anything else is forwarded.
 * Inbound: subscription stanzas run the state machine for the recipient;
 *   probes are answered from the recipient's cached sessions (loaded from
 *   pres:{bare}, so any sm can answer); the rest is left to mod_deliver.
 * Controls end / session-gone: broadcast unavailable for a session that was
 *   available, then pass the control on to mod_session. */
#include "im.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const struct sm_module sm_mod_presence;

/* ---- helpers ----------------------------------------------------------------------- */

/* RFC 6121 §4.7.2.3: an integer in -128..127; anything else counts as 0. */
static int presence_priority(const struct xml_node *st)
{
    struct xml_node *p = xml_child(st, "priority", NULL);
    if (!p)
        return 0;
    struct sb_buf t = SB_BUF_INIT;
    xml_text(p, &t);
    char *end = NULL;
    long v = t.data ? strtol(t.data, &end, 10) : 0;
    int ok = t.data && end != t.data && *end == '\0' && v >= -128 && v <= 127;
    sb_buf_free(&t);
    return ok ? (int)v : 0;
}

static void presence_on_store(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("presence_store_failed", "detail=%s",
                 sb_log_q(r && r->str ? r->str : "redis unavailable"));
}

static void full_of(const struct sm_user *u, const struct sm_session *s, struct sb_buf *b)
{
    sb_buf_reset(b);
    sb_buf_adds(b, u->bare);
    sb_buf_adds(b, "/");
    sb_buf_adds(b, s->resource);
}

/* `<presence type='T' from='F' to='TO'/>` routed to TO's owner. */
static void presence_send_simple(struct sm_core *c, const char *type, const char *from,
                                 const char *to)
{
    char key[ENV_STR_MAX + 1];
    struct sb_buf b = SB_BUF_INIT;
    if (sm_im_bare(to, key, sizeof key) < 0)
        return;
    sb_buf_printf(&b, "<presence type='%s' from='", type);
    xml_escape_attr(&b, from, strlen(from));
    sb_buf_adds(&b, "' to='");
    xml_escape_attr(&b, to, strlen(to));
    sb_buf_adds(&b, "'/>");
    if (b.data)
        sm_send_raw(c, key, from, b.data, b.len);
    sb_buf_free(&b);
}

/* Each available session's last presence (or unavailable) to `to`. */
static void presence_send_current(struct sm_user *u, const char *to, int unavailable)
{
    struct sb_buf b = SB_BUF_INIT, full = SB_BUF_INIT;
    char key[ENV_STR_MAX + 1];
    if (sm_im_bare(to, key, sizeof key) < 0)
        return;
    for (int i = 0; i < u->nsess; i++) {
        struct sm_session *s = &u->sess[i];
        if (!s->available || (!unavailable && !s->pres))
            continue;
        full_of(u, s, &full);
        if (unavailable) {
            presence_send_simple(u->core, "unavailable", full.data, to);
            continue;
        }
        if (sm_im_with_to(&b, s->pres, s->pres_len, to) == SB_OK)
            sm_send_raw(u->core, key, full.data, b.data, b.len);
    }
    sb_buf_free(&b);
    sb_buf_free(&full);
}

/* A presence of session `self` to contacts with FROM and to the user's
 * other available resources (RFC 6121 §4.2.2, §4.4.2, §4.5.2). */
static void presence_broadcast(struct sm_user *u, const struct sm_session *self,
                               const char *body, size_t len)
{
    struct sb_buf b = SB_BUF_INIT, full = SB_BUF_INIT, to = SB_BUF_INIT;
    full_of(u, self, &full);
    for (struct sm_im_item *it = u->im ? u->im->items : NULL; it; it = it->hh.next) {
        if (!it->in_roster || !(it->state & SM_SUB_FROM))
            continue;
        if (sm_im_with_to(&b, body, len, it->jid) == SB_OK)
            sm_send_raw(u->core, it->jid, full.data, b.data, b.len);
    }
    for (int i = 0; i < u->nsess; i++) {
        struct sm_session *t = &u->sess[i];
        if (t == self || !t->available)
            continue;
        full_of(u, t, &to);
        if (sm_im_with_to(&b, body, len, to.data) == SB_OK)
            sm_deliver_raw(u->core, t, full.data, b.data, b.len);
    }
    sb_buf_free(&b);
    sb_buf_free(&full);
    sb_buf_free(&to);
}

/* ---- own presence ---------------------------------------------------------------------- */

/* What a newly available session learns: contacts' presence (probes), the
 * user's other resources, pending subscription requests. */
static void presence_initial(struct sm_user *u, struct sm_session *s)
{
    struct sb_buf b = SB_BUF_INIT, full = SB_BUF_INIT, other = SB_BUF_INIT;
    full_of(u, s, &full);
    for (struct sm_im_item *it = u->im ? u->im->items : NULL; it; it = it->hh.next) {
        if (it->in_roster && (it->state & SM_SUB_TO))
            presence_send_simple(u->core, "probe", u->bare, it->jid);
        if ((it->state & SM_SUB_PEND_IN) && it->pend)
            sm_deliver_raw(u->core, s, it->jid, it->pend, strlen(it->pend));
    }
    for (int i = 0; i < u->nsess; i++) {
        struct sm_session *t = &u->sess[i];
        if (t == s || !t->available || !t->pres)
            continue;
        full_of(u, t, &other);
        if (sm_im_with_to(&b, t->pres, t->pres_len, full.data) == SB_OK)
            sm_deliver_raw(u->core, s, other.data, b.data, b.len);
    }
    sb_buf_free(&b);
    sb_buf_free(&full);
    sb_buf_free(&other);
}

static sb_rc presence_available(struct sm_job *j, struct sm_session *s)
{
    struct sm_user *u = j->user;
    int first = !s->available, old_prio = s->prio;
    char *copy = malloc(j->body_len + 1);
    if (copy) {
        memcpy(copy, j->body, j->body_len);
        copy[j->body_len] = '\0';
    }
    free(s->pres);
    s->pres = copy;
    s->pres_len = copy ? j->body_len : 0;
    s->available = 1;
    s->prio = presence_priority(j->st);
    if (s->prio != old_prio)    /* sess: holds "instance sid prio": same prio, same value */
        sm_session_store(j->core, u, s);
    SM_RCMD(j->core, presence_on_store, NULL, "HSET pres:{%s} %s %b", u->bare, s->resource,
            j->body, j->body_len);
    presence_broadcast(u, s, j->body, j->body_len);
    if (first)
        presence_initial(u, s);
    log_debug("presence_available", "jid=%s prio=%d initial=%d", sb_log_q(j->aux), s->prio, first);
    /* Without a loaded count (database down) look anyway. */
    if (s->prio >= 0 && (first || old_prio < 0) && (!u->im || !u->im->loaded || u->im->offline))
        return sm_offline_flush(j, s->resource);
    return SB_OK;
}

/* Unavailable from a session (sent, or on its end): everyone who saw it
 * available hears it, then the directed-presence list is cleared. */
static void presence_unavailable(struct sm_user *u, struct sm_session *s, const char *body,
                                 size_t len)
{
    int was = s->available;
    s->available = 0;
    free(s->pres);
    s->pres = NULL;
    s->pres_len = 0;
    SM_RCMD(u->core, presence_on_store, NULL, "HDEL pres:{%s} %s", u->bare, s->resource);
    if (was)
        presence_broadcast(u, s, body, len);
    struct sm_im_res *r = u->im ? sm_im_res(u->im, s->resource, 0) : NULL;
    if (!r || !r->directed)
        return;
    struct sb_buf b = SB_BUF_INIT, full = SB_BUF_INIT;
    char key[ENV_STR_MAX + 1];
    full_of(u, s, &full);
    for (char *p = r->directed; *p;) {
        size_t n = strcspn(p, "\n");
        char save = p[n];
        p[n] = '\0';
        if (sm_im_bare(p, key, sizeof key) == 0 && sm_im_with_to(&b, body, len, p) == SB_OK)
            sm_send_raw(u->core, key, full.data, b.data, b.len);
        p[n] = save;
        p += n + (save ? 1 : 0);
    }
    free(r->directed);
    r->directed = NULL;
    SM_RCMD(u->core, presence_on_store, NULL, "HDEL im:{%s} dp:%s", u->bare, s->resource);
    sb_buf_free(&b);
    sb_buf_free(&full);
}

static sb_rc presence_own(struct sm_job *j, struct sm_session *s)
{
    int avail = !*j->type, unavail = !strcmp(j->type, "unavailable");
    if (!avail && !unavail)
        return SB_OK;   /* probe, subscribe… without `to` mean nothing */
    if (sm_im_ready(j, &sm_mod_presence) == SB_AGAIN)
        return SB_AGAIN;
    if (avail)
        return presence_available(j, s);
    presence_unavailable(j->user, s, j->body, j->body_len);
    return SB_OK;
}

/* ---- outbound with `to` ------------------------------------------------------------------ */

static void presence_item_settle(struct sm_user *u, struct sm_im_item *it, int old)
{
    if ((old ^ it->state) & SM_SUB_PEND_IN) {
        if (!(it->state & SM_SUB_PEND_IN))
            sm_im_set_str(&it->pend, NULL);
        sm_im_write_pending(u, it);
    }
    if (!it->in_roster && (it->state & (SM_SUB_TO | SM_SUB_FROM | SM_SUB_PEND_OUT))) {
        it->in_roster = 1;
        u->im->nroster++;
    }
    if (it->in_roster && it->state != old)
        sm_im_commit(u, it);
    if (!it->in_roster && !it->state)
        sm_im_drop(u->im, it);
}

static sb_rc presence_out_sub(struct sm_job *j, enum sm_sub_type t, const char *contact)
{
    struct sm_user *u = j->user;
    struct sm_im_item *it = sm_im_get(u->im, contact);
    if (!it)
        return SB_OK;
    int act, old = it->state;
    it->state = sm_sub_outbound(old, t, &act);
    log_info("subscription_out", "jid=%s contact=%s type=%s state=\"%s\" new=\"%s\"",
             sb_log_q(u->bare), sb_log_q(contact), sm_sub_type_name(t), sm_sub_state_name(old),
             sm_sub_state_name(it->state));
    if (act & SM_SUB_A_ROUTE) {
        /* §3.1.2: stamped with the bare JID, addressed to the bare JID. */
        if (xml_set_attr(j->doc, j->st, "from", u->bare) == SB_OK &&
            xml_set_attr(j->doc, j->st, "to", contact) == SB_OK)
            sm_send_node(j->core, j->st);
    }
    if (act & SM_SUB_A_PRESENCE)
        presence_send_current(u, contact, 0);
    if (act & SM_SUB_A_UNAVAIL)
        presence_send_current(u, contact, 1);
    presence_item_settle(u, it, old);
    return SB_OK;
}

static sb_rc presence_directed(struct sm_job *j, const char *contact)
{
    struct sm_user *u = j->user;
    const char *res = sm_job_sender_resource(j);
    sm_send_raw(j->core, contact, j->aux, j->body, j->body_len);
    if (!strcmp(contact, u->bare))
        return SB_OK;
    if (!*j->type) {
        struct sm_im_item *it = sm_im_find(u->im, contact);
        if (!it || !it->in_roster || !(it->state & SM_SUB_FROM))
            sm_im_directed_add(u, res, j->to);
    } else {
        sm_im_directed_del(u, res, j->to);
    }
    return SB_OK;
}

static sb_rc presence_outbound_to(struct sm_job *j)
{
    char contact[ENV_STR_MAX + 1];
    if (sm_im_bare(j->to, contact, sizeof contact) < 0)
        return SB_OK;
    enum sm_sub_type t = sm_sub_type_parse(j->type);
    int directed = !*j->type || !strcmp(j->type, "unavailable");
    if (t == SM_SUB_T_NONE && !directed) {       /* probe, error: pass along */
        sm_send_raw(j->core, contact, j->aux, j->body, j->body_len);
        return SB_OK;
    }
    sb_rc rc = sm_im_ready(j, &sm_mod_presence);
    if (rc == SB_AGAIN)
        return SB_AGAIN;
    if (rc != SB_OK && t != SM_SUB_T_NONE) {
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    if (t == SM_SUB_T_NONE)
        return presence_directed(j, contact);
    if (!strcmp(contact, j->user->bare))
        return SB_OK;   /* a subscription to oneself changes nothing */
    return presence_out_sub(j, t, contact);
}

/* ---- inbound ---------------------------------------------------------------------------- */

static void presence_deliver_all(struct sm_job *j)
{
    for (int i = 0; i < j->user->nsess; i++)
        if (j->user->sess[i].available)
            sm_deliver(j, &j->user->sess[i]);
}

static sb_rc presence_in_sub(struct sm_job *j, enum sm_sub_type t, const char *contact)
{
    struct sm_user *u = j->user;
    if (!u->im->exists && u->nsess == 0) {
        /* §3.1.3: no such account → unsubscribed on its behalf. */
        if (t == SM_SUB_T_SUBSCRIBE)
            presence_send_simple(j->core, "unsubscribed", u->bare, contact);
        return SB_OK;
    }
    struct sm_im_item *it = sm_im_get(u->im, contact);
    if (!it)
        return SB_OK;
    int act, old = it->state;
    it->state = sm_sub_inbound(old, t, &act);
    log_info("subscription_in", "jid=%s contact=%s type=%s state=\"%s\" new=\"%s\"",
             sb_log_q(u->bare), sb_log_q(contact), sm_sub_type_name(t), sm_sub_state_name(old),
             sm_sub_state_name(it->state));
    if (act & SM_SUB_A_AUTOREPLY) {
        presence_send_simple(j->core, "subscribed", u->bare, contact);
        presence_send_current(u, contact, 0);
    }
    if ((it->state & ~old) & SM_SUB_PEND_IN) {
        char *copy = strndup(j->body, j->body_len);
        free(it->pend);
        it->pend = copy;
    }
    if (act & SM_SUB_A_DELIVER)
        presence_deliver_all(j);
    if (act & SM_SUB_A_UNAVAIL)
        presence_send_current(u, contact, 1);
    presence_item_settle(u, it, old);
    return SB_OK;
}

/* §4.3.2: answered from the cached sessions (loaded from pres:{bare}). */
static sb_rc presence_in_probe(struct sm_job *j, const char *prober)
{
    struct sm_user *u = j->user;
    struct sm_im_item *it = sm_im_find(u->im, prober);
    if (!strcmp(prober, u->bare))
        return SB_OK;
    if (!it || !it->in_roster || !(it->state & SM_SUB_FROM)) {
        presence_send_simple(j->core, "unsubscribed", u->bare, j->from);
        return SB_OK;
    }
    int any = 0;
    for (int i = 0; i < u->nsess; i++)
        any |= u->sess[i].available && u->sess[i].pres;
    if (any)
        presence_send_current(u, j->from, 0);
    else
        presence_send_simple(j->core, "unavailable", u->bare, j->from);
    return SB_OK;
}

static sb_rc presence_inbound(struct sm_job *j)
{
    enum sm_sub_type t = sm_sub_type_parse(j->type);
    int probe = !strcmp(j->type, "probe");
    char contact[ENV_STR_MAX + 1];
    if ((t == SM_SUB_T_NONE && !probe) || !j->to)
        return SB_DECLINED;       /* mod_deliver: available/unavailable/error */
    if (!*j->from || sm_im_bare(j->from, contact, sizeof contact) < 0)
        return SB_OK;
    sb_rc rc = sm_im_ready(j, &sm_mod_presence);
    if (rc == SB_AGAIN)
        return SB_AGAIN;
    if (rc != SB_OK) {
        log_warn("presence_dropped", "reason=roster-unavailable to=%s type=%s",
                 sb_log_q(j->key), j->type);
        return SB_OK;
    }
    if (probe)
        return presence_in_probe(j, contact);
    return presence_in_sub(j, t, contact);
}

/* ---- dispatch ----------------------------------------------------------------------------- */

/* The front-end's own envelope for this user (not another sm's). */
static int presence_is_outbound(const struct sm_job *j)
{
    size_t n = strlen(j->key);
    return *j->sid && !strncmp(j->aux, j->key, n) && (j->aux[n] == '/' || !j->aux[n]);
}

static sb_rc presence_handle(struct sm_job *j)
{
    if (!j->user)
        return SB_DECLINED;
    if (!presence_is_outbound(j))
        return presence_inbound(j);
    struct sm_session *s = sm_user_session(j->user, sm_job_sender_resource(j));
    if (!s || strcmp(s->sid, j->sid)) {
        log_warn("presence_no_session", "jid=%s", sb_log_q(j->aux));
        return SB_OK;
    }
    return j->to ? presence_outbound_to(j) : presence_own(j, s);
}

/* A session that ends while available goes unavailable for everyone who
 * saw it; mod_session (next) then removes the binding. */
static sb_rc presence_control(struct sm_job *j, const char *op)
{
    if ((strcmp(op, "end") && strcmp(op, "session-gone")) || !j->user)
        return SB_DECLINED;
    const char *slash = strchr(j->aux, '/');
    struct sm_session *s = slash ? sm_user_session(j->user, slash + 1) : NULL;
    if (!s || strcmp(s->sid, j->sid))
        return SB_DECLINED;
    struct sm_im_res *r = j->user->im ? sm_im_res(j->user->im, s->resource, 0) : NULL;
    if (s->available || (r && r->directed)) {
        if (sm_im_ready(j, &sm_mod_presence) == SB_AGAIN)
            return SB_AGAIN;
        struct sb_buf b = SB_BUF_INIT;
        sb_buf_adds(&b, "<presence type='unavailable' from='");
        xml_escape_attr(&b, j->aux, strlen(j->aux));
        sb_buf_adds(&b, "'/>");
        if (b.data)
            presence_unavailable(j->user, s, b.data, b.len);
        sb_buf_free(&b);
        log_info("presence_gone", "jid=%s reason=%s", sb_log_q(j->aux), op);
    }
    sm_im_res_forget(j->user, s->resource);
    return SB_DECLINED;
}

const struct sm_module sm_mod_presence = {
    .name = "presence",
    .handle_presence = presence_handle,
    .handle_control = presence_control,
};
