/* route.c — the router side of c2s: client stanzas leave as STANZA
 * envelopes (from stamped with the session's full JID, to prepared, keyed by
 * the recipient's bare JID or domain), stanzas for a session are written to
 * its connection byte for byte, bind answers reach login.c, and bounces of
 * what we sent become stanza errors for the client. */
#include "c2s.h"
#include "jid.h"
#include "log.h"
#include "rdev.h"
#include "route.h"

#include <stdlib.h>
#include <string.h>

#define NS_STANZA "urn:ietf:params:xml:ns:xmpp-stanzas"

static struct env_hdr route_hdr;    /* 6 KiB: one for the process, not per call */
static struct sb_buf route_body;
static struct jid route_jid;
static char route_full[JID_FULL_MAX + 1];
static char route_bare[JID_BARE_MAX + 1];
static char route_own[JID_BARE_MAX + 1];

static sb_rc route_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return SB_ERROR;
    memcpy(dst, src, n + 1);
    return SB_OK;
}

static sb_rc route_send_via(enum env_route route, enum env_kind kind, const char *op,
                            const char *key, const char *sid, const char *aux,
                            const char *body, size_t len)
{
    struct env_hdr *h = &route_hdr;
    env_init(h, kind, route);
    if (route_copy(h->key, sizeof h->key, key) != SB_OK ||
        route_copy(h->sender, sizeof h->sender, c2s.instance) != SB_OK ||
        route_copy(h->sid, sizeof h->sid, sid) != SB_OK ||
        route_copy(h->op, sizeof h->op, op) != SB_OK ||
        route_copy(h->aux, sizeof h->aux, aux) != SB_OK)
        return SB_ERROR;
    return link_send(c2s.link, h, body, len);
}

static sb_rc route_send(enum env_kind kind, const char *op, const char *key,
                        const char *sid, const char *aux, const char *body, size_t len)
{
    return route_send_via(ENV_ROUTE_JID, kind, op, key, sid, aux, body, len);
}

sb_rc c2s_route_send_stanza(const char *op, const char *key, const char *sid,
                            const char *aux, const char *body, size_t len)
{
    return route_send(ENV_STANZA, op, key, sid, aux, body, len);
}

sb_rc c2s_route_control(const char *op, const char *key, const char *sid, const char *aux)
{
    return c2s_route_control_body(op, key, sid, aux, "");
}

sb_rc c2s_route_control_body(const char *op, const char *key, const char *sid,
                             const char *aux, const char *body)
{
    sb_rc rc = route_send(ENV_CONTROL, op, key, sid, aux, body, strlen(body));
    if (rc != SB_OK)
        log_warn("control_send_failed", "op=%s key=%s sid=%s", op, sb_log_q(key), sid);
    return rc;
}

sb_rc c2s_route_control_data(const char *op, const char *key, const char *sid,
                             const char *aux, const char *body, size_t len)
{
    sb_rc rc = route_send(ENV_CONTROL, op, key, sid, aux, body, len);
    if (rc != SB_OK)
        log_warn("control_send_failed", "op=%s key=%s sid=%s", op, sb_log_q(key), sid);
    return rc;
}

sb_rc c2s_route_control_to(const char *instance, const char *op, const char *sid,
                           const char *aux)
{
    return route_send_via(ENV_ROUTE_INSTANCE, ENV_CONTROL, op, instance, sid, aux, "", 0);
}

void c2s_route_end(struct c2s_conn *c)
{
    char body[24] = "";
    const char *op = c2s_sm_end_op(c, body, sizeof body);
    if (!op || !c->jid || jid_bare_of(c->jid, route_bare, sizeof route_bare) < 0)
        return;
    c2s_route_control_body(op, route_bare, c->sid, c->jid, body);
    if (!strcmp(op, "session-gone"))
        c2s_sm_ghost(c);        /* its copies outlive the stream, for the sm's sake */
}

/* An error stanza to the client about a stanza it sent (RFC 6120 §8.3). */
static void route_error_reply(struct c2s_conn *c, const char *name, const char *id,
                              const char *from, const char *type, const char *cond)
{
    struct sb_buf *b = &route_body;
    sb_buf_reset(b);
    sb_buf_printf(b, "<%s type='error'", name);
    if (id) {
        sb_buf_adds(b, " id='");
        xml_escape_attr(b, id, strlen(id));
        sb_buf_adds(b, "'");
    }
    if (from && *from) {
        sb_buf_adds(b, " from='");
        xml_escape_attr(b, from, strlen(from));
        sb_buf_adds(b, "'");
    }
    sb_buf_adds(b, " to='");
    xml_escape_attr(b, c->jid, strlen(c->jid));
    sb_buf_printf(b, "'><error type='%s'><%s xmlns='" NS_STANZA "'/></error></%s>",
                  type, cond, name);
    c2s_stanza_local(c, b->data, b->len);
}

/* Errors are never answered with errors; iq results neither. */
static int route_may_answer(const char *name, const char *type)
{
    if (type && strcmp(type, "error") == 0)
        return 0;
    if (strcmp(name, "iq") == 0)
        return type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0);
    return 1;
}

void c2s_route_stanza(struct c2s_conn *c, struct xml_node *st)
{
    const char *to = xml_attr(st, "to");
    const char *type = xml_attr(st, "type");
    const char *id = xml_attr(st, "id");
    const char *key, *op = "";
    const char *to_out = NULL;
    if (to && *to) {
        if (jid_parse(&route_jid, to) != SB_OK) {
            log_debug("jid_malformed", "sid=%s to=%s", c->sid, sb_log_q(to));
            if (route_may_answer(st->name, type))
                route_error_reply(c, st->name, id, NULL, "modify", "jid-malformed");
            return;
        }
        if ((c->flags & C2S_F_ANON) && !c2s_anon_may_reach(c->domain, route_jid.domain)) {
            log_info("anon_refused", "sid=%s jid=%s to=%s", c->sid, c->jid,
                     sb_log_q(route_jid.domain));
            if (route_may_answer(st->name, type))
                route_error_reply(c, st->name, id, to, "cancel", "not-allowed");
            return;
        }
        jid_full(&route_jid, route_full);
        jid_bare(&route_jid, route_bare);
        to_out = route_full;
        key = route_bare;
        /* Presence goes to the sender's own sm first (RFC 6121 outbound
         * processing: subscription state, directed presence), which
         * forwards it to the recipient's. */
        if (strcmp(st->name, "presence") == 0 &&
            jid_bare_of(c->jid, route_bare, sizeof route_bare) < 0)
            return;
        /* XEP-0280: while another session of the user has carbons on, the
         * user's sm sees our messages first (sent copies) and forwards
         * them (op outbound); a message to the own account goes there
         * anyway. */
        /* XEP-0313: a message with a body to a domain this cluster does
         * not serve (federation, a component) passes the sender's sm too,
         * the only one that can archive the sender's copy. */
        if (strcmp(st->name, "message") == 0 &&
            ((c->flags & C2S_F_VIA_SM) ||
             (!sb_domains_has(route_jid.domain) && xml_child(st, "body", NULL))) &&
            jid_bare_of(c->jid, route_own, sizeof route_own) >= 0 && strcmp(route_own, key))
            op = "outbound", key = route_own;
    } else {
        if (jid_bare_of(c->jid, route_bare, sizeof route_bare) < 0)
            return;
        key = route_bare;
    }
    if (c2s_stanza_stamp(st, c->jid, to_out, &route_body) != SB_OK ||
        route_send(ENV_STANZA, op, key, c->sid, c->jid, route_body.data,
                   route_body.len) != SB_OK) {
        log_warn("stanza_send_failed", "sid=%s key=%s name=%s", c->sid, sb_log_q(key),
                 st->name);
        if (route_may_answer(st->name, type))
            route_error_reply(c, st->name, id, to_out, "wait", "resource-constraint");
    }
}

/* ---- from the router ------------------------------------------------------ */

/* A stanza for a sid we do not hold: tell the sm the session is gone. Only
 * the `to` attribute is read (the full JID the sm thinks is here). A
 * message (not an error) goes back to the user's queue behind the end,
 * marked `stale` with that sid, so the sm delivers it elsewhere or stores
 * it instead of it being lost with a stream that just closed. */
static void route_stale(const struct env_hdr *h, const char *body, size_t len)
{
    static char from[ENV_STR_MAX + 1], type[16];
    if (c2s_scan_attr(body, len, "to", route_full, sizeof route_full) < 0 ||
        jid_bare_of(route_full, route_bare, sizeof route_bare) < 0) {
        log_info("stale_sid_unaddressed", "sid=%s", h->sid);
        return;
    }
    log_info("stale_sid", "sid=%s to=%s", h->sid, sb_log_q(route_full));
    /* session-gone, not end: a stream-managed session is only detached
     * (its client may resume it elsewhere), any other one ends. */
    c2s_route_control("session-gone", route_bare, h->sid, route_full);
    if (len < 8 || memcmp(body, "<message", 8) != 0 ||
        c2s_scan_attr(body, len, "from", from, sizeof from) < 0)
        return;
    if (c2s_scan_attr(body, len, "type", type, sizeof type) >= 0 && !strcmp(type, "error"))
        return;
    if (route_send(ENV_STANZA, "stale", route_bare, h->sid, from, body, len) == SB_OK)
        log_info("stale_handed_back", "sid=%s to=%s", h->sid, sb_log_q(route_bare));
}

/* A message or iq numbered by an sm that no longer holds the stream: back
 * to the user's sm as op sm-replay (delivered again there, not archived or
 * notified twice). Presence is dropped, as a replay drops it. */
static void route_foreign(const struct env_hdr *h, const char *body, size_t len)
{
    if (c2s_scan_attr(body, len, "to", route_full, sizeof route_full) < 0 ||
        jid_bare_of(route_full, route_bare, sizeof route_bare) < 0 ||
        ((len < 8 || memcmp(body, "<message", 8)) && (len < 3 || memcmp(body, "<iq", 3))))
        return;
    if (route_send(ENV_STANZA, "sm-replay", route_bare, "", h->aux, body, len) == SB_OK)
        log_info("foreign_handed_back", "sid=%s to=%s", h->sid, sb_log_q(route_bare));
}

/* Tell the sm that numbered it that the stream is no longer its own
 * (sm/mod_sm.c sm-moved): once per such stanza, to that instance. */
static void route_moved(const struct env_hdr *h, const char *jid)
{
    if (jid)
        route_send_via(ENV_ROUTE_INSTANCE, ENV_CONTROL, "sm-moved", h->sender, h->sid, jid,
                       "", 0);
}

/* A numbered stanza for a stream that is no longer open: its ghost keeps
 * it (c2s_sm_ghost_keep). 1 when handled. */
static int route_ghost(const struct env_hdr *h, const char *body, size_t len)
{
    int foreign;
    if (!c2s_sm_ghost_keep(h, body, len, &foreign))
        return 0;
    if (foreign) {
        log_info("sm_foreign_numbered", "sid=%s jid=%s sender=%s ghost=1", h->sid,
                 sb_log_q(c2s_sm_ghost_jid(h->sid)), h->sender);
        route_moved(h, c2s_sm_ghost_jid(h->sid));
        route_foreign(h, body, len);
    }
    return 1;
}

/* carbons-route (sm/mod_carbons.c): aux the session's full JID, body 1
 * (route outbound messages through the user's sm) or 0. */
static void route_carbons(const struct env_hdr *h, const char *body, size_t len)
{
    struct c2s_conn *c = c2s_table_find(h->sid);
    if (!c || c->state != C2S_S_BOUND || !c->jid || strcmp(c->jid, h->aux))
        return;
    if (len == 1 && body[0] == '1')
        c->flags |= C2S_F_VIA_SM;
    else
        c->flags &= ~C2S_F_VIA_SM;
    log_debug("carbons_route", "sid=%s via_sm=%d", c->sid, (c->flags & C2S_F_VIA_SM) != 0);
}

/* ---- credentials lent between front-ends (auth/README.md) ------------------- */

/* Only a client front-end may ask for or lend SCRAM keys: not an sm, an
 * s2s or a component, whatever it sends. The name is the router's word
 * (checked against the CURVE key it came with). */
static int route_fe_peer(const char *name)
{
    const struct rt_inst *in = c2s.link ? rt_reg_find(link_members(c2s.link), name,
                                                      strlen(name)) : NULL;
    return in && strcmp(name, c2s.instance) && (!strcmp(in->kind, "c2s") ||
                                                !strcmp(in->kind, "bosh"));
}

/* auth_peer_ask_fn: one cred-ask to every live c2s and bosh but us. */
static int route_cred_ask(void *ud, const char *id, const char *bare)
{
    static const char *const kinds[] = {"c2s", "bosh"};
    const struct rt_registry *reg = c2s.link ? link_members(c2s.link) : NULL;
    int asked = 0;

    for (size_t k = 0; reg && k < sizeof kinds / sizeof *kinds; k++) {
        int n = 0;
        for (size_t i = 0; i < reg->n; i++)
            n += !strcmp(reg->v[i].kind, kinds[k]) && strcmp(reg->v[i].name, c2s.instance);
        if (n && route_send_via(ENV_ROUTE_KIND, ENV_CONTROL, "cred-ask", kinds[k], id, bare,
                                "", 0) == SB_OK)
            asked += n;
    }
    return asked;
}

void c2s_route_cred_init(void)
{
    auth_cache_set_peers(c2s.loop, route_cred_ask, NULL);
}

/* cred-ask (aux = user@domain, sid = the question): cred-have with the
 * keys, or cred-none, to the asker. cred-have / cred-none: to the cache. */
static int route_cred(const struct env_hdr *h, const char *body, size_t len)
{
    int ask = !strcmp(h->op, "cred-ask"), have = !strcmp(h->op, "cred-have");

    if (!ask && !have && strcmp(h->op, "cred-none"))
        return 0;
    if (!strcmp(h->sender, c2s.instance))
        return 1;                   /* our own question, sent to every c2s */
    if (!route_fe_peer(h->sender)) {
        log_warn("auth_cache_peer_refused", "peer=%s op=%s why=not-a-front-end",
                 sb_log_q(h->sender), h->op);
        return 1;
    }
    if (!ask) {
        auth_cache_lent(h->sid, h->aux, h->sender, have ? body : NULL, have ? len : 0);
        return 1;
    }
    struct sb_buf *b = &route_body;
    sb_buf_reset(b);
    int lend = auth_cache_lend(h->aux, b);
    log_info("auth_cache_peer_asked", "user=%s peer=%s lent=%d", sb_log_q(h->aux),
             sb_log_q(h->sender), lend);
    if (route_send_via(ENV_ROUTE_INSTANCE, ENV_CONTROL, lend ? "cred-have" : "cred-none",
                       h->sender, h->sid, h->aux, lend ? b->data : "", lend ? b->len : 0) !=
        SB_OK)
        log_warn("control_send_failed", "op=cred-have key=%s", sb_log_q(h->sender));
    if (b->data)
        memset(b->data, 0, b->len);     /* keys do not linger in the buffer */
    sb_buf_reset(b);
    return 1;
}

static void route_control(const struct env_hdr *h, const char *body, size_t len)
{
    if (c2s_sm_control(h, body, len))
        return;
    if (!strncmp(h->op, "cred-", 5) && route_cred(h, body, len))
        return;
    if (strcmp(h->op, "carbons-route") == 0) {
        route_carbons(h, body, len);
        return;
    }
    if (strcmp(h->op, "bound") != 0 && strcmp(h->op, "bind-failed") != 0)
        return;                      /* members etc.: nothing for c2s */
    struct c2s_conn *c = c2s_table_find(h->sid);
    if (c && (c->flags & C2S_F_BIND_WAIT)) {
        c2s_bind_answer(c, h->op, h->aux);
        return;
    }
    if (strcmp(h->op, "bound") == 0 && jid_bare_of(h->aux, route_bare, sizeof route_bare) >= 0) {
        /* Too late (timeout or gone): release the binding. */
        log_info("late_bound", "sid=%s jid=%s", h->sid, sb_log_q(h->aux));
        c2s_route_control("end", route_bare, h->sid, h->aux);
    }
}

/* A bounced stanza addressed to the session's own client with type error
 * or result: one of our own answers sent through its sm (c2s_stanza_local,
 * STANZA op sm-local), not a stanza the client sent. */
static int route_own_answer(const struct c2s_conn *c, const char *body, size_t len)
{
    static char type[16];
    return c->jid && c2s_scan_attr(body, len, "to", route_full, sizeof route_full) >= 0 &&
           !strcmp(route_full, c->jid) &&
           c2s_scan_attr(body, len, "type", type, sizeof type) >= 0 &&
           (!strcmp(type, "error") || !strcmp(type, "result"));
}

static void route_bounce(const struct env_hdr *h, const char *body, size_t len)
{
    struct c2s_conn *c = c2s_table_find(h->sid);
    log_info("bounce", "sid=%s reason=%s key=%s kind=%s", h->sid, h->op, sb_log_q(h->aux),
             env_kind_name(h->flags));
    if (!c)
        return;
    if (h->flags == ENV_CONTROL) {
        if (c->flags & C2S_F_BIND_WAIT)
            c2s_bind_answer(c, "bind-failed", "internal-server-error");
        return;
    }
    if (h->flags != ENV_STANZA || c->state != C2S_S_BOUND)
        return;
    if (c2s_sm_enabled(c) && route_own_answer(c, body, len)) {
        c2s_sm_write_local(c, body, len);       /* its sm is unreachable */
        return;
    }
    enum xml_err err;
    struct xml_doc *d = xml_doc_parse(body, len, &c2s.cfg.limits, &err);
    if (!d)
        return;
    const struct xml_node *st = d->root;
    if (strcmp(st->name, "presence") != 0 && route_may_answer(st->name, xml_attr(st, "type")))
        route_error_reply(c, st->name, xml_attr(st, "id"), xml_attr(st, "to"), "cancel",
                          strcmp(h->op, "remote-domain") == 0 ? "remote-server-not-found"
                                                             : "service-unavailable");
    xml_doc_free(d);
}

/* An ADMIN answer to the asker (sbctl), through the link. */
static void route_admin_reply(const struct env_hdr *h, const char *op, const char *reply,
                              size_t n)
{
    struct env_hdr *r = &route_hdr;
    env_init(r, ENV_ADMIN, ENV_ROUTE_INSTANCE);
    if (route_copy(r->key, sizeof r->key, h->sender) == SB_OK &&
        route_copy(r->sender, sizeof r->sender, c2s.instance) == SB_OK &&
        route_copy(r->op, sizeof r->op, op) == SB_OK)
        link_send(c2s.link, r, reply, n);
}

/* Stream errors an operator may end a session with (sbctl session kick,
 * user del, domain del); anything else becomes policy-violation. */
static const char *route_kick_cond(const char *w, size_t n)
{
    static const char *const ok[] = {"policy-violation", "not-authorized", "host-unknown",
                                     "conflict", "reset", "system-shutdown"};
    for (size_t i = 0; i < SB_ARRAY_LEN(ok); i++)
        if (strlen(ok[i]) == n && !memcmp(ok[i], w, n))
            return ok[i];
    return "policy-violation";
}

/* op=kick-token: body "ID CONDITION [TEXT]", the session only if it
 * logged in with our token ID ("*": with any of ours). 1 when it did; the
 * body is moved past the ID. */
static int route_kick_token_ok(const struct c2s_conn *c, const char **body, size_t *len)
{
    const char *sp = memchr(*body, ' ', *len);
    char id[24];
    size_t n = sp ? (size_t)(sp - *body) : *len;
    if (n == 0 || n >= sizeof id)
        return 0;
    memcpy(id, *body, n);
    id[n] = '\0';
    *body += sp ? n + 1 : n;
    *len -= sp ? n + 1 : n;
    if (!c || c->token_id <= 0)
        return 0;
    return !strcmp(id, "*") || strtoll(id, NULL, 10) == c->token_id;
}

/* op=kick, sid = the session, aux = its full JID (checked: a sid is only
 * unique per front-end and may have been reused), body "CONDITION [TEXT]":
 * that stream ends with the stream error, TEXT as its <text/>. op=kick-token
 * (sbctl token revoke) puts the token id first. */
static void route_kick(const struct env_hdr *h, const char *body, size_t len)
{
    static char say[1024];
    struct c2s_conn *c = c2s_table_find(h->sid);
    int token_ok = strcmp(h->op, "kick-token") != 0 || route_kick_token_ok(c, &body, &len);
    const char *sp = memchr(body, ' ', len);
    size_t wl = sp ? (size_t)(sp - body) : len;
    const char *cond = route_kick_cond(body, wl);
    size_t tl = sp ? len - wl - 1 : 0;
    if (tl >= sizeof say)
        tl = sizeof say - 1;
    memcpy(say, sp ? sp + 1 : "", tl);
    say[tl] = '\0';
    int hit = token_ok && c && c->jid && c->state == C2S_S_BOUND && !strcmp(c->jid, h->aux);
    log_info("admin_kick", "sid=%s jid=%s cond=%s found=%d by=%s", h->sid, sb_log_q(h->aux),
             cond, hit, sb_log_q(h->sender));
    if (hit)
        c2s_stream_error_full(c, cond, NULL, say, NULL, "kicked");
    if (!strcmp(h->op, "kick-session"))
        return;                       /* one-way: a front-end asked, not sbctl */
    const char *reply = hit ? "kicked=1" : "kicked=0";
    route_admin_reply(h, h->op, reply, strlen(reply));
}

/* ---- ending the other sessions of an account (passwd_ends_sessions) ---- */

struct route_end {
    char bare[JID_BARE_MAX + 1];
    char keep_sid[ENV_NAME_MAX + 1];  /* this front-end's session that stays */
    char body[160];                   /* "CONDITION TEXT" */
};

static void route_end_one(const struct route_end *e, const char *full, const char *inst,
                          const char *sid)
{
    if (!strcmp(inst, c2s.instance)) {
        struct c2s_conn *c = strcmp(sid, e->keep_sid) ? c2s_table_find(sid) : NULL;
        if (c && c->jid && c->state == C2S_S_BOUND && !strcmp(c->jid, full)) {
            const char *sp = strchr(e->body, ' ');
            char cond[32];
            snprintf(cond, sizeof cond, "%.*s", sp ? (int)(sp - e->body) : 31, e->body);
            c2s_stream_error_full(c, cond, NULL, sp ? sp + 1 : "", NULL, "kicked");
        }
        return;
    }
    struct env_hdr *h = &route_hdr;
    env_init(h, ENV_ADMIN, ENV_ROUTE_INSTANCE);
    if (route_copy(h->key, sizeof h->key, inst) == SB_OK &&
        route_copy(h->sender, sizeof h->sender, c2s.instance) == SB_OK &&
        route_copy(h->sid, sizeof h->sid, sid) == SB_OK &&
        route_copy(h->aux, sizeof h->aux, full) == SB_OK &&
        route_copy(h->op, sizeof h->op, "kick-session") == SB_OK)
        link_send(c2s.link, h, e->body, strlen(e->body));
}

static void route_end_reply(redisReply *r, void *arg)
{
    struct route_end *e = arg;
    int n = 0;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        char inst[ENV_NAME_MAX + 1] = "", sid[ENV_NAME_MAX + 1] = "", full[JID_FULL_MAX + 1];
        if (r->element[i]->type != REDIS_REPLY_STRING ||
            r->element[i + 1]->type != REDIS_REPLY_STRING ||
            sscanf(r->element[i + 1]->str, "%63s %63s", inst, sid) != 2 ||
            (size_t)snprintf(full, sizeof full, "%s/%s", e->bare, r->element[i]->str) >=
                sizeof full)
            continue;
        if (!strcmp(inst, c2s.instance) && !strcmp(sid, e->keep_sid))
            continue;
        route_end_one(e, full, inst, sid);
        n++;
    }
    log_info("sessions_ended", "user=%s sessions=%d reason=%s%s", sb_log_q(e->bare), n,
             sb_log_q(e->body), r ? "" : " error=redis");
    free(e);
}

void c2s_route_end_other_sessions(const char *bare, const char *keep_sid, const char *cond,
                                  const char *text)
{
    struct route_end *e = calloc(1, sizeof(*e));
    if (!e)
        return;
    snprintf(e->bare, sizeof e->bare, "%s", bare);
    snprintf(e->keep_sid, sizeof e->keep_sid, "%s", keep_sid ? keep_sid : "");
    snprintf(e->body, sizeof e->body, "%s %s", cond, text);
    if (!c2s.rd || rdev_cmd(c2s.rd, route_end_reply, e, "HGETALL sess:{%s}", bare) != SB_OK) {
        log_warn("sessions_end_failed", "user=%s error=redis", sb_log_q(bare));
        free(e);
    }
}

/* sbctl through a router (common/ENVELOPE.md): op=drain [body timeout=S]
 * is confirmed to the asker with the streams that will be sent away, then
 * done; op=kick ends one session. */
static void route_admin(const struct env_hdr *h, const char *body, size_t len)
{
    if (strcmp(h->op, "kick") == 0 || strcmp(h->op, "kick-token") == 0 ||
        strcmp(h->op, "kick-session") == 0) {
        route_kick(h, body, len);
        return;
    }
    if (strcmp(h->op, "drain") != 0) {
        log_warn("admin_unknown", "op=%s sender=%s", sb_log_q(h->op), sb_log_q(h->sender));
        return;
    }
    char arg[32] = "";
    double timeout = 0;
    if (len < sizeof arg) {
        memcpy(arg, body, len);
        arg[len] = '\0';
        if (!strncmp(arg, "timeout=", 8))
            timeout = atof(arg + 8);
    }
    char reply[96];
    int n = snprintf(reply, sizeof reply, "conns=%ld sessions=%ld already=%d", c2s.nconns,
                     c2s.nsessions, c2s.draining || c2s.stopping);
    route_admin_reply(h, "drain", reply, (size_t)n);
    c2s_drain(timeout);
}

void c2s_route_recv(struct link *l, const struct env_hdr *h, const char *body,
                    size_t len, void *ud)
{
    switch (h->kind) {
    case ENV_STANZA: {
        if (!*h->sid)
            return;
        struct c2s_conn *c = c2s_table_find(h->sid);
        if (!strncmp(h->op, "sm-detached:", 12)) {
            /* numbered while the session is detached: only its ghost wants
             * it (the sm's queue has it for the resumption) */
            route_ghost(h, body, len);
            return;
        }
        if (!c && !strncmp(h->op, "sm:", 3) && route_ghost(h, body, len))
            return;             /* arrived just after the stream broke */
        if (c && c->state == C2S_S_BOUND && !*h->op && c2s_sm_enabled(c)) {
            /* A managed stream's stanza without its XEP-0198 number: the
             * user's sm no longer holds this stream's queue (it went with
             * the sm that had it). Counting on here would make the
             * client's h wrong (handled-count-too-high) and what we wrote
             * now could not be re-sent after a drop. End the stream — the
             * client resumes or binds anew — and hand this stanza back as
             * for a stream just closed (stored offline or delivered to
             * another session). */
            log_info("sm_state_lost", "sid=%s jid=%s", c->sid, c->jid ? c->jid : "-");
            c2s_stream_error_text(c, "reset", "stream management state lost", "sm-state-lost");
            route_stale(h, body, len);
            return;
        }
        if (c && c->state == C2S_S_BOUND && c2s_sm_foreign(c, h)) {
            /* Numbered by an sm that lost the user (frozen past its lease)
             * after another sm adopted the stream: its number may be taken,
             * so it is not written. It goes to the user's sm as a replay
             * (numbered there), not as `stale` (that would take it for one
             * already queued there), and its sm is told (sm-moved). */
            log_info("sm_foreign_numbered", "sid=%s jid=%s sender=%s", c->sid,
                     c->jid ? c->jid : "-", h->sender);
            route_moved(h, c->jid);
            route_foreign(h, body, len);
            return;
        }
        if (c && c->state == C2S_S_BOUND) {
            if (!c->s2 || !c2s_sasl2_hold(c, body, len))
                c2s_conn_write(c, body, len);
            if (*h->op)
                c2s_sm_stanza_out(c, h, body, len);
        }
        else if (!c)
            route_stale(h, body, len);
        else
            log_debug("stanza_before_bound", "sid=%s", h->sid);
        return;
    }
    case ENV_CONTROL:
        route_control(h, body, len);
        return;
    case ENV_BOUNCE:
        route_bounce(h, body, len);
        return;
    case ENV_ADMIN:
        route_admin(h, body, len);
        return;
    default:
        return;
    }
}

/* ---- stale fe: set at start ------------------------------------------------ */

/* What an earlier incarnation of this name left in fe:NAME (a kill -9 whose
 * clean-up by the routers was lost: no router up, the chosen sm gone, Redis
 * down past the sm's retries) would stay bound for ever. So at its first
 * lease the front-end reads the set and, for every session that is not one
 * of its own live ones, tells the user's sm (`session-gone`: it ends the
 * binding, contacts see unavailable; a resumable session is kept for its
 * client) and removes the member itself. A member whose sid is in the
 * session table is this incarnation's (a bind may already be under way). */
#define SWEEP_RETRY 2.0
#define SWEEP_TRIES 30

static ev_timer sweep_timer;
static int sweep_tries;
static void sweep_run(void);

static void sweep_on_srem(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("stale_session_srem_failed", "detail=%s",
                 sb_log_q(r && r->str ? r->str : "redis unavailable"));
}

/* "fulljid sid": the resource may hold spaces, the sid does not. */
static int sweep_member(const char *m)
{
    const char *sp = strrchr(m, ' ');
    if (!sp || sp == m || (size_t)(sp - m) > JID_FULL_MAX || strlen(sp + 1) > ENV_NAME_MAX)
        return 0;
    if (c2s_table_find(sp + 1))
        return 0;
    memcpy(route_full, m, (size_t)(sp - m));
    route_full[sp - m] = '\0';
    if (jid_bare_of(route_full, route_bare, sizeof route_bare) >= 0)
        c2s_route_control("session-gone", route_bare, sp + 1, route_full);
    rdev_cmd(c2s.rd, sweep_on_srem, NULL, "SREM fe:%s %s", c2s.instance, m);
    return 1;
}

static void sweep_on_members(redisReply *r, void *arg)
{
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (++sweep_tries >= SWEEP_TRIES || c2s.stopping) {
            log_error("stale_sessions_failed", "instance=%s tries=%d", c2s.instance, sweep_tries);
            return;
        }
        ev_timer_start(c2s.loop, &sweep_timer);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING)
            n += (size_t)sweep_member(r->element[i]->str);
    log_info("stale_sessions_cleared", "instance=%s sessions=%zu kept=%zu", c2s.instance, n,
             r->elements - n);
}

static void sweep_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    sweep_run();
}

static void sweep_run(void)
{
    if (rdev_cmd(c2s.rd, sweep_on_members, NULL, "SMEMBERS fe:%s", c2s.instance) != SB_OK)
        log_error("stale_sessions_failed", "instance=%s detail=redis-queue", c2s.instance);
}

void c2s_route_sweep_stale(void)
{
    static int done;
    if (done++)
        return;                      /* at start only: later leases are the routers' job */
    ev_timer_init(&sweep_timer, sweep_on_timer, SWEEP_RETRY, 0.);
    sweep_run();
}

void c2s_route_stop(void)
{
    ev_timer_stop(c2s.loop, &sweep_timer);
}
