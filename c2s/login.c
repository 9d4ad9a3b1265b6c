/* login.c — authentication and resource binding for one connection:
 * <auth/>/<response/>/<abort/> drive an auth/ SASL session (whose answer may
 * come later, after the database), and the bind iq becomes a control `bind`
 * to the owning sm, answered by `bound` or `bind-failed` (or our timeout). */
#include "c2s.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_SASL   "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND   "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_STANZA "urn:ietf:params:xml:ns:xmpp-stanzas"

static struct sb_buf login_out;     /* scratch for replies */
static struct sb_buf login_text;    /* scratch for element text */

/* ---- iq replies ------------------------------------------------------------ */

void c2s_iq_open(struct sb_buf *b, const char *id, const char *type)
{
    sb_buf_reset(b);
    sb_buf_printf(b, "<iq type='%s'", type);
    if (id) {
        sb_buf_adds(b, " id='");
        xml_escape_attr(b, id, strlen(id));
        sb_buf_adds(b, "'");
    }
}

void c2s_iq_result(struct c2s_conn *c, const char *id, const char *inner)
{
    struct sb_buf *b = &login_out;
    c2s_iq_open(b, id, "result");
    if (inner) {
        sb_buf_adds(b, ">");
        sb_buf_adds(b, inner);
        sb_buf_adds(b, "</iq>");
    } else {
        sb_buf_adds(b, "/>");
    }
    c2s_stanza_local(c, b->data, b->len);
}

void c2s_iq_error(struct c2s_conn *c, const char *id, const char *type, const char *cond)
{
    struct sb_buf *b = &login_out;
    c2s_iq_open(b, id, "error");
    sb_buf_printf(b, "><error type='%s'><%s xmlns='" NS_STANZA "'/></error></iq>", type, cond);
    c2s_stanza_local(c, b->data, b->len);
}

/* A condition from the wire becomes an element name: only [a-z-]. */
static const char *login_safe_cond(const char *cond)
{
    if (!cond || !*cond || strspn(cond, "abcdefghijklmnopqrstuvwxyz-") != strlen(cond))
        return "internal-server-error";
    return cond;
}

/* ---- SASL ------------------------------------------------------------------ */

static void login_sasl_reply(struct c2s_conn *c, const char *el, const char *b64)
{
    struct sb_buf *b = &login_out;
    sb_buf_reset(b);
    if (b64 && *b64)
        sb_buf_printf(b, "<%s xmlns='" NS_SASL "'>%s</%s>", el, b64, el);
    else
        sb_buf_printf(b, "<%s xmlns='" NS_SASL "'/>", el);
    c2s_conn_write(c, b->data, b->len);
}

static void login_sasl_failed(struct c2s_conn *c, const char *cond)
{
    struct sb_buf *b = &login_out;
    sb_buf_reset(b);
    sb_buf_printf(b, "<failure xmlns='" NS_SASL "'><%s/></failure>", cond);
    c2s_conn_write(c, b->data, b->len);
    /* RFC 6120 §6.4.5: a few retries, then policy-violation. */
    if (++c->auth_failures > c2s.cfg.max_auth_failures)
        c2s_stream_error(c, "policy-violation", "too-many-auth-failures");
}

static void login_sasl_success(struct c2s_conn *c, const struct sasl_result *r)
{
    struct sb_buf *b = &login_text;
    sb_buf_reset(b);
    if (sb_buf_printf(b, "%s@%s", r->username, c->domain) != SB_OK ||
        c2s_conn_set_jid(c, b->data) != SB_OK) {
        c2s_stream_error(c, "internal-server-error", "nomem");
        return;
    }
    if (r->anonymous)
        c->flags |= C2S_F_ANON;       /* the claim is released at close */
    c->token_id = r->token_id;        /* sbctl token revoke ends it (route.c) */
    login_sasl_reply(c, "success", r->data_b64);
    c2s_conn_set_state(c, C2S_S_AUTHENTICATED);
    c2s_stream_restart(c);
    log_info("authenticated", "peer=%s jid=%s tls=%d", c->peer, c->jid,
             (c->flags & C2S_F_TLS) != 0);
}

static void login_sasl_cb(void *ud, const struct sasl_result *r)
{
    struct c2s_conn *c = ud;
    if (c->state == C2S_S_CLOSING)
        return;                     /* the conn frees the session later */
    if (r->status == SASL_CONTINUE) {
        c->flags |= C2S_F_IN_SASL_CB;   /* a failed write must not free the session */
        login_sasl_reply(c, "challenge", r->data_b64);
        c->flags &= ~C2S_F_IN_SASL_CB;
        return;
    }
    /* Final answer: sasl.h allows freeing the session inside its callback. */
    sasl_free(c->sasl);
    c->sasl = NULL;
    c->flags &= ~C2S_F_SASL_RUN;
    const char *limited = c2s_limits_login_done(c, r);     /* limits.c: account locked */
    if (limited)
        login_sasl_failed(c, limited);
    else if (r->status == SASL_SUCCESS && r->username && *r->username)
        login_sasl_success(c, r);
    else
        login_sasl_failed(c, r->condition ? login_safe_cond(r->condition) : "not-authorized");
}

void c2s_sasl_element(struct c2s_conn *c, struct xml_node *n)
{
    const char *ns = xml_attr(n, "xmlns");
    if (!ns || strcmp(ns, NS_SASL) != 0) {
        c2s_stream_error(c, "invalid-namespace", n->name);
        return;
    }
    /* Where STARTTLS is possible it comes first; BOSH/WS over plain HTTP
     * offer only mechanisms that are safe there (sasl_mechanisms). */
    if (!(c->flags & C2S_F_TLS) && c2s_tls_available() && c->tp->starttls &&
        !c2s.cfg.allow_plain) {
        login_sasl_failed(c, "encryption-required");
        return;
    }
    xml_text(n, &login_text);
    const char *text = login_text.data ? login_text.data : "";
    if (strcmp(n->name, "auth") == 0) {
        const char *mech = xml_attr(n, "mechanism");
        if (!mech || !*mech) {
            login_sasl_failed(c, "invalid-mechanism");
            return;
        }
        if (!c2s_limits_login_allowed(c)) {      /* limits.c: the address failed too often */
            login_sasl_failed(c, "temporary-auth-failure");
            return;
        }
        if (c->s2) {                  /* a SASL2 exchange gives way to this one */
            c2s_sasl2_free(c);
            sasl_free(c->sasl);
            c->sasl = NULL;
        }
        if (!c->sasl) {
            struct sasl_cb cb;
            int has_cb = c2s_tls_channel_bindings(c, &cb);
            struct sasl_opts o = {c->domain, (c->flags & C2S_F_TLS) != 0, c2s.cfg.allow_plain,
                                  sb_domains_anonymous(c->domain), has_cb ? &cb : NULL};
            c->sasl = sasl_new(c2s.store, &o, login_sasl_cb, c);
            if (!c->sasl) {
                login_sasl_failed(c, "temporary-auth-failure");
                return;
            }
        }
        c->flags |= C2S_F_SASL_RUN;
        sasl_start(c->sasl, mech, text);
    } else if (!(c->flags & C2S_F_SASL_RUN) || c->s2) {
        login_sasl_failed(c, strcmp(n->name, "abort") == 0 ? "aborted" : "malformed-request");
    } else if (strcmp(n->name, "response") == 0) {
        sasl_step(c->sasl, text);
    } else {
        sasl_abort(c->sasl);
    }
}

/* ---- bind ---------------------------------------------------------------- */

void c2s_bind_iq(struct c2s_conn *c, struct xml_node *iq, struct xml_node *bind)
{
    const char *id = xml_attr(iq, "id");
    struct xml_node *res = xml_child(bind, "resource", NULL);
    const char *want = "";
    if (res) {
        xml_text(res, &login_text);
        want = login_text.data ? login_text.data : "";
        if (strlen(want) > JID_PART_MAX) {
            c2s_iq_error(c, id, "modify", "bad-request");
            return;
        }
    }
    free(c->bind_iq);
    c->bind_iq = strdup(id ? id : "");
    if (!c->bind_iq) {
        c2s_iq_error(c, id, "wait", "resource-constraint");
        return;
    }
    if (c2s_bind_request(c, want, NULL) != SB_OK)
        c2s_iq_error(c, id, "wait", "resource-constraint");
}

sb_rc c2s_bind_request(struct c2s_conn *c, const char *want, const char *body)
{
    c2s_table_add(c);
    if (c2s_route_control_body("bind", c->jid, c->sid, want, body ? body : "") != SB_OK) {
        c2s_table_del(c);
        return SB_ERROR;
    }
    c->flags |= C2S_F_BIND_WAIT;
    c->bind_deadline = ev_now(c2s.loop) + c2s.cfg.bind_timeout;
    c2s_conn_arm_timer(c);
    return SB_OK;
}

static void login_bind_done(struct c2s_conn *c)
{
    c->flags &= ~C2S_F_BIND_WAIT;
    free(c->bind_iq);
    c->bind_iq = NULL;
}

/* `bound` / `bind-failed` for this conn's sid. */
void c2s_bind_answer(struct c2s_conn *c, const char *op, const char *aux)
{
    int inline_bind = c2s_sasl2_binding(c);
    if (inline_bind && strcmp(op, "bound") == 0 && c2s_conn_set_jid(c, aux) == SB_OK) {
        login_bind_done(c);
        c2s_conn_set_state(c, C2S_S_BOUND);
        c2s_conn_arm_timer(c);
        log_info("bound", "peer=%s sid=%s jid=%s bind=2", c->peer, c->sid, c->jid);
        c2s_csi_bound(c);
        c2s_sasl2_bound(c, NULL);
        return;
    }
    if (inline_bind) {
        log_info("bind_failed", "peer=%s sid=%s jid=%s cond=%s bind=2", c->peer, c->sid, c->jid,
                 sb_log_q(aux));
        if (strcmp(op, "bound") == 0)
            c2s_route_control("end", c->jid, c->sid, aux);
        login_bind_done(c);
        c2s_table_del(c);
        c2s_sasl2_bound(c, strcmp(op, "bound") ? login_safe_cond(aux) : "resource-constraint");
        return;
    }
    if (strcmp(op, "bound") == 0) {
        if (c2s_conn_set_jid(c, aux) != SB_OK) {
            c2s_iq_error(c, c->bind_iq, "wait", "resource-constraint");
            login_bind_done(c);
            c2s_route_control("end", c->jid, c->sid, aux);
            return;
        }
        struct sb_buf *b = &login_text;
        sb_buf_reset(b);
        sb_buf_adds(b, "<bind xmlns='" NS_BIND "'><jid>");
        xml_escape_text(b, c->jid, strlen(c->jid));
        sb_buf_adds(b, "</jid></bind>");
        c2s_iq_result(c, c->bind_iq, b->data);
        login_bind_done(c);
        c2s_conn_set_state(c, C2S_S_BOUND);
        c2s_conn_arm_timer(c);            /* no more login deadline */
        log_info("bound", "peer=%s sid=%s jid=%s", c->peer, c->sid, c->jid);
        c2s_csi_bound(c);
        return;
    }
    log_info("bind_failed", "peer=%s sid=%s jid=%s cond=%s", c->peer, c->sid, c->jid,
             sb_log_q(aux));
    const char *cond = login_safe_cond(aux);
    c2s_iq_error(c, c->bind_iq, strcmp(cond, "resource-constraint") == 0 ? "wait" : "cancel",
                 cond);
    login_bind_done(c);
    c2s_table_del(c);
}

void c2s_bind_timeout(struct c2s_conn *c)
{
    if (c2s_sasl2_binding(c)) {
        log_warn("bind_timeout", "peer=%s sid=%s jid=%s bind=2", c->peer, c->sid, c->jid);
        login_bind_done(c);
        c2s_table_del(c);
        c2s_sasl2_bound(c, "internal-server-error");
        return;
    }
    if (!c->bind_iq) {              /* a <resume/> the sm did not answer */
        c->flags &= ~C2S_F_BIND_WAIT;
        c2s_table_del(c);
        c2s_sm_free(c);
        log_warn("sm_resume_timeout", "peer=%s sid=%s jid=%s", c->peer, c->sid, c->jid);
        c2s_sm_say(c, "<failed xmlns='urn:xmpp:sm:3'><internal-server-error "
                      "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
        return;
    }
    log_warn("bind_timeout", "peer=%s sid=%s jid=%s", c->peer, c->sid, c->jid);
    c2s_iq_error(c, c->bind_iq, "wait", "internal-server-error");
    login_bind_done(c);
    /* A late `bound` finds no sid and is answered with `end` (route.c). */
    c2s_table_del(c);
}
