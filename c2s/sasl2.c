/* sasl2.c — XEP-0388 SASL2 for every transport (TCP, WebSocket, BOSH),
 * with XEP-0386 Bind 2, XEP-0198 inline enable/resume, XEP-0280 inline
 * carbons and XEP-0484 FAST. The mechanisms are the ones legacy SASL runs
 * (auth/sasl.h, one sasl_sess), only the wrapping differs:
 *   <authenticate mechanism><initial-response/> → sasl_start
 *   <response/> → sasl_step, <abort/> → sasl_abort
 *   CONTINUE → <challenge/>, FAILURE → <failure><cond/><text/></failure>
 *   SUCCESS → no stream restart; then, each step waiting for the last:
 *     a FAST token (auth_fast_issue) if <request-token/> asked,
 *     inline <resume/> (c2s_sm_resume; resumed: done, failed: go on),
 *     Bind 2 (control bind, body exact=1: the resource is derived from the
 *     user-agent id, c2s_sasl2_resource), inline carbons (control
 *     `carbons` to the sm) and inline <enable/> (c2s_sm_enable),
 *   and finally one <success/> with <authorization-identifier/> and every
 *   inline answer. Stanzas the router sends the session before the
 *   <success/> is out are held and follow it.
 * Failed logins count against the address and the account as legacy
 * SASL's do (limits.c): a drained address bucket or a locked account gets
 * temporary-auth-failure. */
#include "c2s.h"
#include "sasl2.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_SASL_COND "urn:ietf:params:xml:ns:xmpp-sasl"

enum s2_stage { S2_SASL, S2_TOKEN, S2_RESUME, S2_BIND, S2_SM, S2_DONE };

struct s2_issue {                   /* a FAST token being issued; c cleared if c goes */
    struct c2s_conn *c;
};

struct c2s_sasl2 {
    struct c2s_sasl2_req rq;
    enum s2_stage stage;
    int resumed, bound;
    char *addl;                     /* the mechanism's additional data (base64) */
    struct sb_buf extra;            /* <token/>, inline <resumed/>/<failed/> */
    struct sb_buf inl;              /* inside <bound/>: <enabled/>/<failed/> */
    struct sb_buf held;             /* stanzas held until the <success/> */
    struct s2_issue *issue;
};

static struct sb_buf s2_out, s2_text;
static void s2_next(struct c2s_conn *c);

/* ---- features ------------------------------------------------------------------ */

void c2s_sasl2_features(struct c2s_conn *c, struct sb_buf *b, const char *mechs,
                        const struct sasl_cb *cb)
{
    sb_buf_adds(b, "<authentication xmlns='" NS_SASL2 "'>");
    c2s_mechanism_elements(b, mechs);
    int sm = c2s_sm_offered(c);
    sb_buf_adds(b, "<inline><bind xmlns='" NS_BIND2 "'><inline>"
                   "<feature var='" NS_CARBONS2 "'/>");
    if (sm)
        sb_buf_adds(b, "<feature var='" NS_SM3 "'/>");
    sb_buf_adds(b, "</inline></bind>");
    if (sm)
        sb_buf_adds(b, "<sm xmlns='" NS_SM3 "'/>");
    /* A token is a password for one device: only under TLS. */
    if (!sb_domains_anonymous(c->domain) && auth_fast_available() &&
        ((c->flags & C2S_F_TLS) || c2s.cfg.allow_plain)) {
        const char *m = sasl_fast_mechanisms(cb);
        sb_buf_adds(b, "<fast xmlns='" NS_FAST "'>");
        while (*m) {
            size_t n = strcspn(m, " ");
            sb_buf_adds(b, "<mechanism>");
            sb_buf_add(b, m, n);
            sb_buf_adds(b, "</mechanism>");
            m += n;
            m += strspn(m, " ");
        }
        sb_buf_adds(b, "</fast>");
    }
    sb_buf_adds(b, "</inline></authentication>");
}

/* ---- state ------------------------------------------------------------------------ */

void c2s_sasl2_free(struct c2s_conn *c)
{
    struct c2s_sasl2 *s = c->s2;
    if (!s)
        return;
    if (s->issue)
        s->issue->c = NULL;         /* its answer is dropped */
    free(s->addl);
    sb_buf_free(&s->extra);
    sb_buf_free(&s->inl);
    sb_buf_free(&s->held);
    free(s);
    c->s2 = NULL;
}

int c2s_sasl2_binding(const struct c2s_conn *c)
{
    return c->s2 && c->s2->stage == S2_BIND && (c->flags & C2S_F_BIND_WAIT);
}

int c2s_sasl2_hold(struct c2s_conn *c, const char *data, size_t len)
{
    struct c2s_sasl2 *s = c->s2;
    if (!s || s->stage == S2_SASL)
        return 0;
    /* Each held stanza is one element; a NUL after each keeps them apart. */
    sb_buf_add(&s->held, data, len);
    sb_buf_add(&s->held, "", 1);
    return 1;
}

/* <failure/> with a SASL condition and optional text; counts as a failed
 * login like legacy SASL (RFC 6120 §6.4.5). */
static void s2_failure(struct c2s_conn *c, const char *cond, const char *text)
{
    struct sb_buf *b = &s2_out;
    sb_buf_reset(b);
    sb_buf_printf(b, "<failure xmlns='" NS_SASL2 "'><%s xmlns='" NS_SASL_COND "'/>", cond);
    if (text && *text) {
        sb_buf_adds(b, "<text>");
        xml_escape_text(b, text, strlen(text));
        sb_buf_adds(b, "</text>");
    }
    sb_buf_adds(b, "</failure>");
    c2s_conn_write(c, b->data, b->len);
    if (++c->auth_failures > c2s.cfg.max_auth_failures)
        c2s_stream_error(c, "policy-violation", "too-many-auth-failures");
}

static const char *s2_safe_cond(const char *cond)
{
    if (!cond || !*cond || strspn(cond, "abcdefghijklmnopqrstuvwxyz-") != strlen(cond))
        return "not-authorized";
    return cond;
}

/* ---- the exchange ------------------------------------------------------------------ */

static void s2_authenticated(struct c2s_conn *c, const struct sasl_result *r)
{
    struct c2s_sasl2 *s = c->s2;
    struct sb_buf *b = &s2_text;
    sb_buf_reset(b);
    if (sb_buf_printf(b, "%s@%s", r->username, c->domain) != SB_OK ||
        c2s_conn_set_jid(c, b->data) != SB_OK ||
        (r->data_b64 && *r->data_b64 && !(s->addl = strdup(r->data_b64)))) {
        c2s_stream_error(c, "internal-server-error", "nomem");
        return;
    }
    if (r->anonymous)
        c->flags |= C2S_F_ANON;
    c->token_id = r->token_id;
    c2s_conn_set_state(c, C2S_S_AUTHENTICATED);     /* SASL2: no stream restart */
    log_info("authenticated", "peer=%s jid=%s tls=%d sasl=2 mech=%s fast=%d software=%s",
             c->peer, c->jid, (c->flags & C2S_F_TLS) != 0, s->rq.mech, r->fast,
             sb_log_q(s->rq.software));
    if (r->fast && s->rq.invalidate)
        auth_fast_invalidate(c2s.store, c->domain, r->username, s->rq.ua);
    s->stage = S2_TOKEN;
    s2_next(c);
}

static void s2_sasl_cb(void *ud, const struct sasl_result *r)
{
    struct c2s_conn *c = ud;
    if (c->state == C2S_S_CLOSING)
        return;
    if (r->status == SASL_CONTINUE) {
        struct sb_buf *b = &s2_out;
        sb_buf_reset(b);
        sb_buf_printf(b, "<challenge xmlns='" NS_SASL2 "'>%s</challenge>",
                      r->data_b64 ? r->data_b64 : "");
        c->flags |= C2S_F_IN_SASL_CB;
        c2s_conn_write(c, b->data, b->len);
        c->flags &= ~C2S_F_IN_SASL_CB;
        return;
    }
    sasl_free(c->sasl);
    c->sasl = NULL;
    c->flags &= ~C2S_F_SASL_RUN;
    const char *limited = c2s_limits_login_done(c, r);     /* limits.c: account locked */
    if (limited) {
        c2s_sasl2_free(c);
        s2_failure(c, limited, "too many failed logins");
        return;
    }
    if (r->status == SASL_SUCCESS && r->username && *r->username && c->s2) {
        s2_authenticated(c, r);
        return;
    }
    c2s_sasl2_free(c);
    s2_failure(c, s2_safe_cond(r->condition), NULL);
}

static void s2_authenticate(struct c2s_conn *c, struct xml_node *n)
{
    const char *cond;
    struct c2s_sasl2 *s = c->s2;
    if (!s && !(s = c->s2 = calloc(1, sizeof *s))) {
        s2_failure(c, "temporary-auth-failure", NULL);
        return;
    }
    const char *why = c2s_sasl2_parse(n, &s2_text, &s->rq, &cond);
    if (why) {
        log_info("sasl2_malformed", "peer=%s reason=%s", c->peer, sb_log_q(why));
        c2s_sasl2_free(c);
        s2_failure(c, cond, why);
        return;
    }
    if (!c2s_limits_login_allowed(c)) {      /* limits.c: the address failed too often */
        c2s_sasl2_free(c);
        s2_failure(c, "temporary-auth-failure", "too many failed logins from your address");
        return;
    }
    /* A fresh mechanism session each time: one a legacy <auth/> made
     * answers through login.c (a pending lookup's answer is dropped). */
    sasl_free(c->sasl);
    c->sasl = NULL;
    {
        struct sasl_cb cb;
        int has_cb = c2s_tls_channel_bindings(c, &cb);
        struct sasl_opts o = {c->domain, (c->flags & C2S_F_TLS) != 0, c2s.cfg.allow_plain,
                              sb_domains_anonymous(c->domain), has_cb ? &cb : NULL};
        c->sasl = sasl_new(c2s.store, &o, s2_sasl_cb, c);
        if (!c->sasl) {
            c2s_sasl2_free(c);
            s2_failure(c, "temporary-auth-failure", NULL);
            return;
        }
    }
    sasl_set_fast(c->sasl, s->rq.ua[0] ? s->rq.ua : NULL, s->rq.count);
    c->flags |= C2S_F_SASL_RUN;
    s->stage = S2_SASL;
    sasl_start(c->sasl, s->rq.mech, s->rq.initial ? s->rq.initial : "");
}

void c2s_sasl2_element(struct c2s_conn *c, struct xml_node *n)
{
    /* Where STARTTLS is possible it comes first (as for legacy SASL). */
    if (!(c->flags & C2S_F_TLS) && c2s_tls_available() && c->tp->starttls &&
        !c2s.cfg.allow_plain) {
        s2_failure(c, "encryption-required", NULL);
        return;
    }
    if (!strcmp(n->name, "authenticate")) {
        s2_authenticate(c, n);
        return;
    }
    if (strcmp(n->name, "response") && strcmp(n->name, "abort")) {
        c2s_stream_error(c, "unsupported-stanza-type", n->name);
        return;
    }
    if (!(c->flags & C2S_F_SASL_RUN) || !c->s2) {
        const char *why = strcmp(n->name, "abort") ? "response-without-authenticate"
                                                   : "abort-without-authenticate";
        log_info("sasl2_malformed", "peer=%s reason=%s", c->peer, why);
        s2_failure(c, strcmp(n->name, "abort") ? "malformed-request" : "aborted", why);
        return;
    }
    if (!strcmp(n->name, "abort")) {
        sasl_abort(c->sasl);
        return;
    }
    xml_text(n, &s2_text);
    sasl_step(c->sasl, s2_text.data ? s2_text.data : "");
}

/* ---- after the mechanism: the inline requests, one at a time ------------------------ */

static void s2_issued(void *arg, const struct auth_fast_issued *t)
{
    struct s2_issue *is = arg;
    struct c2s_conn *c = is->c;
    free(is);
    if (!c || !c->s2 || c->state == C2S_S_CLOSING)
        return;
    c->s2->issue = NULL;
    if (t->ok) {
        struct sb_buf *b = &c->s2->extra;
        sb_buf_printf(b, "<token xmlns='" NS_FAST "' expiry='%s' token='%s'/>", t->expiry,
                      t->token);
    }
    c->s2->stage = S2_RESUME;
    s2_next(c);
}

static int s2_token(struct c2s_conn *c)
{
    struct c2s_sasl2 *s = c->s2;
    char user[JID_PART_MAX + 1];
    const char *at = strchr(c->jid, '@');
    if (!s->rq.token_mech[0] || (c->flags & C2S_F_ANON) || !at ||
        (!(c->flags & C2S_F_TLS) && !c2s.cfg.allow_plain) ||
        (size_t)(at - c->jid) > JID_PART_MAX)
        return 0;
    memcpy(user, c->jid, (size_t)(at - c->jid));
    user[at - c->jid] = '\0';
    struct s2_issue *is = calloc(1, sizeof *is);
    if (!is)
        return 0;
    is->c = c;
    if (auth_fast_issue(c2s.store, c->domain, user, s->rq.ua, s->rq.token_mech,
                        c2s.cfg.fast_ttl, s2_issued, is) != SB_OK) {
        free(is);
        log_warn("fast_issue_failed", "peer=%s jid=%s", c->peer, c->jid);
        return 0;                   /* logged in all the same, without a token */
    }
    s->issue = is;
    return 1;
}

static int s2_bind(struct c2s_conn *c)
{
    struct c2s_sasl2 *s = c->s2;
    char res[33];
    if (!s->rq.bind)
        return 0;
    int stable = c2s_sasl2_resource(c->jid, s->rq.ua, s->rq.tag, res);
    if (c2s_bind_request(c, res, stable ? "exact=1" : "") != SB_OK) {
        c2s_sasl2_bound(c, "resource-constraint");
        return 1;
    }
    return 1;
}

/* Everything asked is answered: one <success/>, then what was held. */
static void s2_success(struct c2s_conn *c)
{
    struct c2s_sasl2 *s = c->s2;
    struct sb_buf *b = &s2_out;
    sb_buf_reset(b);
    sb_buf_adds(b, "<success xmlns='" NS_SASL2 "'>");
    if (s->addl)
        sb_buf_printf(b, "<additional-data>%s</additional-data>", s->addl);
    sb_buf_adds(b, "<authorization-identifier>");
    xml_escape_text(b, c->jid, strlen(c->jid));
    sb_buf_adds(b, "</authorization-identifier>");
    if (s->extra.len)
        sb_buf_add(b, s->extra.data, s->extra.len);
    if (s->bound) {
        sb_buf_adds(b, "<bound xmlns='" NS_BIND2 "'>");
        if (s->inl.len)
            sb_buf_add(b, s->inl.data, s->inl.len);
        sb_buf_adds(b, "</bound>");
    }
    sb_buf_adds(b, "</success>");
    c2s_conn_write(c, b->data, b->len);
    struct sb_buf held = s->held;
    s->held = (struct sb_buf){0};
    c2s_sasl2_free(c);
    for (size_t off = 0; off < held.len && c->state != C2S_S_CLOSING;) {
        size_t n = strlen(held.data + off);
        c2s_conn_write(c, held.data + off, n);
        off += n + 1;
    }
    sb_buf_free(&held);
}

static void s2_next(struct c2s_conn *c)
{
    struct c2s_sasl2 *s = c->s2;
    while (s && c->state != C2S_S_CLOSING) {
        switch (s->stage) {
        case S2_SASL:
            return;
        case S2_TOKEN:
            if (s2_token(c))
                return;
            s->stage = S2_RESUME;
            break;
        case S2_RESUME:
            if (s->rq.resume && c2s_sm_offered(c)) {
                c2s_sm_resume(c, s->rq.previd, s->rq.resume_h);
                return;             /* c2s_sasl2_sm_said goes on */
            }
            s->stage = S2_BIND;
            break;
        case S2_BIND:
            if (s2_bind(c))
                return;             /* c2s_sasl2_bound goes on */
            s->stage = S2_DONE;
            break;
        case S2_SM:
            if (s->rq.sm_enable && c2s_sm_offered(c)) {
                c2s_sm_enable(c, s->rq.sm_resumable, s->rq.sm_max);
                return;
            }
            s->stage = S2_DONE;
            break;
        case S2_DONE:
            s2_success(c);
            return;
        }
    }
}

void c2s_sasl2_bound(struct c2s_conn *c, const char *cond)
{
    struct c2s_sasl2 *s = c->s2;
    if (!s)
        return;
    if (cond) {
        /* Authenticated but unbound: say why and end the stream; the
         * client logs in again (nothing half-made is left behind). */
        c2s_sasl2_free(c);
        struct sb_buf *b = &s2_out;
        sb_buf_reset(b);
        sb_buf_printf(b, "<failure xmlns='" NS_SASL2 "'><temporary-auth-failure xmlns='"
                      NS_SASL_COND "'/><text>resource binding failed: %s</text></failure>", cond);
        c2s_conn_write(c, b->data, b->len);
        c2s_stream_error(c, "internal-server-error", "bind2-failed");
        return;
    }
    s->bound = 1;
    if (s->rq.carbons) {
        const char *at = strchr(c->jid, '/');
        char bare[JID_BARE_MAX + 1];
        if (at && (size_t)(at - c->jid) <= JID_BARE_MAX) {
            memcpy(bare, c->jid, (size_t)(at - c->jid));
            bare[at - c->jid] = '\0';
            c2s_route_control_body("carbons", bare, c->sid, c->jid, "1");
        }
    }
    s->stage = S2_SM;
    s2_next(c);
}

int c2s_sasl2_sm_said(struct c2s_conn *c, const char *xml)
{
    struct c2s_sasl2 *s = c->s2;
    if (!s || (s->stage != S2_RESUME && s->stage != S2_SM))
        return 0;
    if (s->stage == S2_RESUME) {
        sb_buf_adds(&s->extra, xml);
        if (!strncmp(xml, "<resumed", 8)) {
            s->resumed = 1;
            s->stage = S2_DONE;
        } else {
            s->stage = S2_BIND;     /* XEP-0198 §5 with SASL2: bind instead */
        }
    } else {
        sb_buf_adds(&s->inl, xml);
        s->stage = S2_DONE;
    }
    s2_next(c);
    return 1;
}
