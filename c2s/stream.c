/* stream.c — the XML stream of one session (RFC 6120 §4): checking the
 * client's stream header, answering it with ours and the features for the
 * current stage, sending stream errors, and dispatching each top-level
 * element by session state (STARTTLS and SASL before authentication, bind
 * after it, stanzas once bound). The checks and the dispatch are transport-
 * neutral (c2s_stream_begin/element/closed, also used by BOSH and
 * WebSocket); the Expat parser feeding them belongs to the TCP transport. */
#include "c2s.h"
#include "sasl2.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#define NS_STREAM  "http://etherx.jabber.org/streams"
#define NS_CLIENT  "jabber:client"
#define NS_TLS     "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL    "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND    "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STREAMS "urn:ietf:params:xml:ns:xmpp-streams"

static struct sb_buf stream_out;    /* scratch for what we write; reused */

static void stream_on_open(void *ud, struct xml_node *hdr);
static void stream_on_stanza(void *ud, struct xml_node *n);
static void stream_on_close(void *ud);

static const struct xml_stream_cb stream_cbs = {
    stream_on_open, stream_on_stanza, stream_on_close,
};

sb_rc c2s_stream_new(struct c2s_conn *c)
{
    c->xs = xml_stream_new(&c2s.cfg.limits, &stream_cbs, c);
    return c->xs ? SB_OK : SB_ERROR;
}

/* An idle bound connection holds no parser (Expat costs ~10 KiB): free it
 * between stanzas, and on new input prime a fresh one with a header that
 * stream_on_open ignores. Names are kept as written, so nothing from the
 * original header is needed to parse what follows. */
void c2s_stream_hibernate(struct c2s_conn *c)
{
    if (c->xs && c->state == C2S_S_BOUND && xml_stream_idle(c->xs)) {
        xml_stream_free(c->xs);
        c->xs = NULL;
        log_debug("parser_freed", "sid=%s", c->sid);
        c2s_trim_soon();
    }
}

static sb_rc stream_wake(struct c2s_conn *c)
{
    static const char hdr[] = "<stream:stream xmlns='" NS_CLIENT "' xmlns:stream='" NS_STREAM "'>";
    if (c2s_stream_new(c) != SB_OK)
        return SB_ERROR;
    c->flags |= C2S_F_WAKING;
    sb_rc rc = xml_stream_feed(c->xs, hdr, sizeof hdr - 1);
    c->flags &= ~C2S_F_WAKING;
    return rc;
}

void c2s_stream_input(struct c2s_conn *c, const char *data, size_t len)
{
    if (!c->xs && stream_wake(c) != SB_OK) {
        c2s_stream_error(c, "resource-constraint", "parser");
        return;
    }
    c->flags |= C2S_F_IN_FEED;
    sb_rc rc = xml_stream_feed(c->xs, data, len);
    c->flags &= ~C2S_F_IN_FEED;
    if (rc == SB_ERROR && c->state != C2S_S_CLOSING) {
        enum xml_err e = xml_stream_error(c->xs);
        c2s_stream_error(c, xml_err_stream_cond(e), xml_err_name(e));
        return;
    }
    if (c->state == C2S_S_BOUND)
        c2s_conn_arm_timer(c);      /* the parser idle countdown starts over */
}

void c2s_stream_restart(struct c2s_conn *c)
{
    if (c->xs && (c->flags & C2S_F_IN_FEED))
        xml_stream_restart(c->xs);
    else if (c->xs)
        xml_stream_reset(c->xs);
    c->flags &= ~C2S_F_HDR_SENT;
}

/* Our stream header, through the transport. */
static void stream_send_header(struct c2s_conn *c, const char *from, const char *to)
{
    c->flags |= C2S_F_HDR_SENT;
    if (c->state != C2S_S_CLOSING)
        c->tp->open(c, from, to);
}

/* The stream: prefix, declared again where elements travel alone (RFC 7395). */
static const char *stream_prefix_decl(const struct c2s_conn *c)
{
    return c->tp->framed ? " xmlns:stream='" NS_STREAM "'" : "";
}

void c2s_stream_error(struct c2s_conn *c, const char *cond, const char *why)
{
    c2s_stream_error_full(c, cond, NULL, NULL, NULL, why);
}

void c2s_stream_error_text(struct c2s_conn *c, const char *cond, const char *text,
                           const char *why)
{
    c2s_stream_error_full(c, cond, text, NULL, NULL, why);
}

/* RFC 6120 §4.9: the defined condition, its text, then <text/>, then an
 * application-specific condition. */
void c2s_stream_error_full(struct c2s_conn *c, const char *cond, const char *text,
                           const char *say, const char *extra, const char *why)
{
    if (c->state == C2S_S_CLOSING)
        return;
    sb_log(c->flags & C2S_F_REFUSED ? SB_LOG_DEBUG : SB_LOG_INFO, "stream_error",
           "peer=%s sid=%s cond=%s detail=%s", c->peer,
             *c->sid ? c->sid : "-", cond, why ? why : "-");
    if (c->state == C2S_S_TLS_HANDSHAKE) {   /* no stream to speak on yet */
        c2s_conn_close(c, cond);
        return;
    }
    if (!(c->flags & C2S_F_HDR_SENT)) {
        if (!*c->sid)
            sb_random_id(c->sid, 20);
        stream_send_header(c, c->domain, NULL);
    }
    struct sb_buf *b = &stream_out;
    sb_buf_reset(b);
    if (text) {
        sb_buf_printf(b, "<stream:error%s><%s xmlns='" NS_STREAMS "'>", stream_prefix_decl(c), cond);
        xml_escape_text(b, text, strlen(text));
        sb_buf_printf(b, "</%s>", cond);
    } else {
        sb_buf_printf(b, "<stream:error%s><%s xmlns='" NS_STREAMS "'/>", stream_prefix_decl(c), cond);
    }
    if (say && *say) {          /* RFC 6120 §4.9.2: descriptive text for the user */
        sb_buf_adds(b, "<text xmlns='" NS_STREAMS "'>");
        xml_escape_text(b, say, strlen(say));
        sb_buf_adds(b, "</text>");
    }
    sb_buf_printf(b, "%s</stream:error>", extra ? extra : "");
    c2s_conn_write(c, b->data, b->len);
    c->tp->end(c);
    c2s_conn_close(c, cond);
}

/* "A B C" (sasl_mechanisms) as <mechanism/> elements: legacy SASL's
 * <mechanisms/> and SASL2's <authentication/> list the same ones. */
void c2s_mechanism_elements(struct sb_buf *b, const char *mechs)
{
    while (*mechs) {
        size_t n = strcspn(mechs, " ");
        if (n) {
            sb_buf_adds(b, "<mechanism>");
            sb_buf_add(b, mechs, n);
            sb_buf_adds(b, "</mechanism>");
        }
        mechs += n;
        mechs += strspn(mechs, " ");
    }
}

/* XEP-0440: the channel-binding types the -PLUS mechanisms accept here. */
static void stream_channel_bindings(struct sb_buf *b, const struct sasl_cb *cb)
{
    sb_buf_adds(b, "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>");
    if (cb->exporter_len)
        sb_buf_adds(b, "<channel-binding type='tls-exporter'/>");
    if (cb->endpoint_len)
        sb_buf_adds(b, "<channel-binding type='tls-server-end-point'/>");
    sb_buf_adds(b, "</sasl-channel-binding>");
}

void c2s_stream_features(struct c2s_conn *c)
{
    struct sb_buf *b = &stream_out;
    sb_buf_reset(b);
    sb_buf_printf(b, "<stream:features%s>", stream_prefix_decl(c));
    if (c->state == C2S_S_AUTHENTICATED) {
        /* XEP-0237 / RFC 6121 §2.6: the sm answers roster gets with `ver`. */
        sb_buf_adds(b, "<bind xmlns='" NS_BIND "'/>"
                       "<session xmlns='" NS_SESSION "'><optional/></session>"
                       "<ver xmlns='urn:xmpp:features:rosterver'/>");
        if (c2s_sm_offered(c))
            sb_buf_adds(b, "<sm xmlns='urn:xmpp:sm:3'/>");
        sb_buf_adds(b, "<csi xmlns='urn:xmpp:csi:0'/>");     /* XEP-0352 (csi.c) */
    } else {
        int tls = (c->flags & C2S_F_TLS) != 0;
        int can_starttls = c->tp->starttls && c2s_tls_available();
        if (!tls && can_starttls)
            sb_buf_adds(b, c2s.cfg.allow_plain ? "<starttls xmlns='" NS_TLS "'/>"
                           : "<starttls xmlns='" NS_TLS "'><required/></starttls>");
        if (tls || c2s.cfg.allow_plain || !can_starttls) {
            struct sasl_cb cb;
            int has_cb = tls && c2s_tls_channel_bindings(c, &cb);
            struct sasl_opts o = {c->domain, tls, c2s.cfg.allow_plain,
                                  sb_domains_anonymous(c->domain), has_cb ? &cb : NULL};
            const char *m0 = sasl_mechanisms(&o);
            sb_buf_adds(b, "<mechanisms xmlns='" NS_SASL "'>");
            c2s_mechanism_elements(b, m0);
            sb_buf_adds(b, "</mechanisms>");
            if (has_cb && strstr(m0, "-PLUS"))     /* only where a -PLUS is offered */
                stream_channel_bindings(b, &cb);
            c2s_sasl2_features(c, b, sasl_mechanisms(&o), has_cb ? &cb : NULL);  /* XEP-0388 */
            if (c2s_register_offered(c))      /* XEP-0077 (register.c) */
                sb_buf_adds(b, "<register xmlns='http://jabber.org/features/iq-register'/>");
        }
    }
    sb_buf_adds(b, "</stream:features>");
    c2s_conn_write(c, b->data, b->len);
}

/* Returns the stream error condition for a bad `to`/`version`, NULL when
 * fine; *domain is the served domain when `to` named one. */
static const char *stream_check_header(struct c2s_conn *c, const char *v,
                                       const char *version, const char **domain)
{
    *domain = NULL;
    static char prepared[JID_PART_MAX + 1];
    if (!v || jid_nameprep(v, prepared) != SB_OK)
        return "host-unknown";
    *domain = sb_domains_find(prepared);
    if (!*domain)
        return "host-unknown";
    /* After authentication the stream stays with the account's domain. */
    if (c->state == C2S_S_AUTHENTICATED && *domain != c->domain) {
        *domain = NULL;
        return "host-unknown";
    }
    if (!xml_stream_version_ok(version))
        return "unsupported-version";
    return NULL;
}

/* Near [c2s] max_memory_mb (90 % of it) in the buffers this process
 * counts: new streams are refused, so the sessions already up keep room to
 * work. One line per 10 s with the count refused meanwhile. */
static int stream_memory_full(void)
{
    static double last_log;
    static long refused;
    size_t cap = c2s.cfg.max_memory;
    if (!cap || sb_mem_owned < cap / 10 * 9)
        return 0;
    refused++;
    double now = ev_now(c2s.loop);
    if (now - last_log >= 10) {
        log_warn("memory_refused", "owned=%zu max=%zu refused=%ld", sb_mem_owned, cap, refused);
        last_log = now;
        refused = 0;
    }
    return 1;
}

sb_rc c2s_stream_begin(struct c2s_conn *c, const char *to, const char *version,
                       const char *from)
{
    if (c->state == C2S_S_CLOSING)
        return SB_ERROR;
    if (!(c->flags & C2S_F_IN_TABLE))
        sb_random_id(c->sid, 20);    /* a fresh id for every (re)started stream */
    const char *domain;
    const char *cond = stream_check_header(c, to, version, &domain);
    if (domain)
        c->domain = domain;
    if (!cond && (c->flags & C2S_F_REFUSED) && c->state == C2S_S_CONNECTED) {
        c2s_limits_refuse_stream(c);       /* over a per-address limit */
        return SB_ERROR;
    }
    if (!cond && c->state == C2S_S_CONNECTED && stream_memory_full())
        cond = "resource-constraint";  /* a new connection only: restarts go on */
    if (cond) {
        c2s_stream_error(c, cond, *cond == 'r' ? "memory" : "bad-header");
        return SB_ERROR;
    }
    stream_send_header(c, c->domain, from && *from ? from : NULL);
    if (c->state == C2S_S_CONNECTED)
        c2s_conn_set_state(c, C2S_S_STREAM_OPEN);
    log_debug("stream_open", "peer=%s sid=%s domain=%s state=%s tp=%s", c->peer, c->sid,
              c->domain, c2s_state_name(c->state), c->tp->name);
    c2s_stream_features(c);
    return SB_OK;
}

static void stream_on_open(void *ud, struct xml_node *hdr)
{
    struct c2s_conn *c = ud;
    if (c->state == C2S_S_CLOSING || (c->flags & C2S_F_WAKING))
        return;
    const char *cond = c2s_stream_check_names(hdr);
    if (cond) {
        if (!(c->flags & C2S_F_IN_TABLE))
            sb_random_id(c->sid, 20);
        c2s_stream_error(c, cond, "bad-header");
        return;
    }
    c2s_stream_begin(c, xml_attr(hdr, "to"), xml_attr(hdr, "version"), xml_attr(hdr, "from"));
}

void c2s_stream_closed(struct c2s_conn *c)
{
    if (c->state == C2S_S_CLOSING)
        return;
    if (c->flags & C2S_F_HDR_SENT)
        c->tp->end(c);
    c2s_sm_closed_by_client(c);         /* XEP-0198 §5: not resumable */
    c2s_conn_close(c, "client-closed");
}

static void stream_on_close(void *ud)
{
    c2s_stream_closed(ud);
}

static int stream_is_stanza(const char *name)
{
    return strcmp(name, "message") == 0 || strcmp(name, "presence") == 0 ||
           strcmp(name, "iq") == 0;
}

/* A stanza inherits jabber:client (TCP stream, BOSH/WS framing); one that
 * declares another default namespace is something else. */
static int stream_client_ns(const struct xml_node *n)
{
    const char *ns = xml_attr(n, "xmlns");
    return !ns || strcmp(ns, NS_CLIENT) == 0;
}

static void stream_starttls(struct c2s_conn *c, struct xml_node *n)
{
    const char *ns = xml_attr(n, "xmlns");
    if (!ns || strcmp(ns, NS_TLS) != 0) {
        c2s_stream_error(c, "invalid-namespace", "starttls-ns");
        return;
    }
    if ((c->flags & C2S_F_TLS) || !c2s_tls_available() || !c->tp->starttls) {
        c2s_conn_writes(c, "<failure xmlns='" NS_TLS "'/></stream:stream>");
        c2s_conn_close(c, "starttls-refused");
        return;
    }
    c2s_conn_writes(c, "<proceed xmlns='" NS_TLS "'/>");
    /* Bytes after <starttls/> in this read are plaintext the client must
     * not have sent; the restart drops them (no STARTTLS injection). */
    c2s_stream_restart(c);
    c2s_conn_starttls(c);
}

/* Before SASL success: only STARTTLS and SASL. */
static void stream_preauth(struct c2s_conn *c, struct xml_node *n)
{
    const char *name = n->name;
    const char *ns = xml_attr(n, "xmlns");
    if (ns && strcmp(ns, NS_SASL2) == 0) {
        c2s_sasl2_element(c, n);                       /* XEP-0388 */
    } else if (strcmp(name, "starttls") == 0) {
        stream_starttls(c, n);
    } else if (strcmp(name, "auth") == 0 || strcmp(name, "response") == 0 ||
               strcmp(name, "abort") == 0) {
        c2s_sasl_element(c, n);
    } else if (!strcmp(name, "iq") && stream_client_ns(n) && c2s_register_iq(c, n)) {
        return;                                        /* XEP-0077 registration */
    } else if (stream_is_stanza(name)) {
        c2s_stream_error(c, "not-authorized", name);   /* RFC 6120 §6.4 */
    } else {
        c2s_stream_error(c, "unsupported-stanza-type", name);
    }
}

static int stream_is_iq_request(struct xml_node *n)
{
    const char *t = xml_attr(n, "type");
    return t && (strcmp(t, "get") == 0 || strcmp(t, "set") == 0);
}

/* iqs c2s answers itself: bind and the legacy session (RFC 3921 §3);
 * answers to its keepalive pings are consumed.
 * Returns 1 when handled. */
static int stream_local_iq(struct c2s_conn *c, struct xml_node *n)
{
    if (c2s_keepalive_answer(c, n))
        return 1;                   /* the answer to our keepalive ping */
    if (strcmp(n->name, "iq") != 0 || !stream_is_iq_request(n))
        return 0;
    const char *to = xml_attr(n, "to");
    if (to && *to && (!c->domain || strcmp(to, c->domain) != 0))
        return 0;
    const char *id = xml_attr(n, "id");
    struct xml_node *ch = xml_child(n, "bind", NS_BIND);
    if (ch) {
        if (c->state == C2S_S_BOUND || (c->flags & C2S_F_BIND_WAIT))
            c2s_iq_error(c, id, "cancel", "not-allowed");
        else
            c2s_bind_iq(c, n, ch);
        return 1;
    }
    if (xml_child(n, "session", NS_SESSION)) {
        c2s_iq_result(c, id, NULL);
        return 1;
    }
    if (xml_child(n, "query", "jabber:iq:register"))
        return c2s_register_iq(c, n);      /* own password, <remove/> */
    return 0;
}

static void stream_on_stanza(void *ud, struct xml_node *n)
{
    c2s_stream_element(ud, n);
}

SB_STANZA_COUNTERS(stream_mx_in, "sb_stanzas_in_total",
                   "Stanzas read from clients after authentication, by type")

void c2s_stream_element(struct c2s_conn *c, struct xml_node *n)
{
    if (c->state != C2S_S_CLOSING && c2s_rate_stanza(c))
        return;                                       /* policy-violation sent */
    switch (c->state) {
    case C2S_S_STREAM_OPEN:
        stream_preauth(c, n);
        return;
    case C2S_S_AUTHENTICATED:
    case C2S_S_BOUND:
        if (c2s_sm_element(c, n))
            return;                                   /* XEP-0198 nonza */
        if (c2s_csi_element(c, n))
            return;                                   /* XEP-0352 nonza */
        if (!stream_is_stanza(n->name) || !stream_client_ns(n)) {
            /* RFC 6120 §4.9.3.22: {urn:x}message is not a stanza either. */
            c2s_stream_error(c, "unsupported-stanza-type", n->name);
            return;
        }
        if (c->state == C2S_S_BOUND)
            c2s_sm_stanza_in(c);
        sb_metric_inc(stream_mx_in[sb_stanza_kind_of(n->name)]);
        if (stream_local_iq(c, n))
            return;
        if (c->state == C2S_S_BOUND) {
            c2s_route_stanza(c, n);
            return;
        }
        /* Authenticated but not bound: nothing is routed (RFC 6120 §7.1). */
        if (strcmp(n->name, "presence") != 0 && !stream_is_iq_request(n) &&
            strcmp(n->name, "iq") == 0)
            return;                                   /* stray result/error */
        log_info("stanza_before_bind", "peer=%s sid=%s name=%s", c->peer, c->sid, n->name);
        if (stream_is_iq_request(n))
            c2s_iq_error(c, xml_attr(n, "id"), "cancel", "not-allowed");
        return;
    default:
        return;                                       /* closing: ignore */
    }
}
