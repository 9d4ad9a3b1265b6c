/* in.c — incoming server-to-server streams: the header checks (`to` must
 * be served here, `from` a valid domain the policy allows), features
 * (STARTTLS, SASL EXTERNAL when the peer's certificate is valid for its
 * `from`, dialback), SASL EXTERNAL itself (RFC 6120 §6.4, XEP-0178), and
 * the stanzas of an authenticated peer: `from` must be in a domain the
 * peer authenticated as, `to` in a local domain it authenticated for;
 * then they go to the router keyed by the recipient. What a peer
 * authenticated as is a list of (remote, local) pairs, since dialback may
 * add several over one stream. */
#include "s2s.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"

#include <nettle/base64.h>
#include <stdlib.h>
#include <string.h>

static struct sb_buf in_buf;
static struct sb_buf in_text;
static struct jid in_from, in_to;
static char in_full_from[JID_FULL_MAX + 1], in_full_to[JID_FULL_MAX + 1];
static char in_bare[JID_BARE_MAX + 1];

/* ---- authenticated pairs ----------------------------------------------------- */

struct s2s_pair *s2s_in_pair(struct s2s_conn *c, const char *remote, const char *local)
{
    for (struct s2s_pair *p = c->pairs; p; p = p->next)
        if (!strcmp(p->remote, remote) && (!local || !strcmp(p->local, local)))
            return p;
    return NULL;
}

sb_rc s2s_in_add_pair(struct s2s_conn *c, const char *remote, const char *local, int auth)
{
    if (s2s_in_pair(c, remote, local))
        return SB_OK;
    struct s2s_pair *p = calloc(1, sizeof *p);
    if (!p || !(p->remote = strdup(remote)) || !(p->local = strdup(local))) {
        if (p)
            free(p->remote);
        free(p);
        return SB_ERROR;
    }
    p->auth = (uint8_t)auth;
    p->next = c->pairs;
    c->pairs = p;
    if (!c->auth)
        c->auth = (uint8_t)auth;
    log_info("authenticated", "peer=%s dir=in remote=%s local=%s auth=%s", c->peer, remote,
             local, s2s_auth_name(auth));
    s2s_conn_arm_timer(c);
    return SB_OK;
}

void s2s_in_free_pairs(struct s2s_conn *c)
{
    while (c->pairs) {
        struct s2s_pair *p = c->pairs;
        c->pairs = p->next;
        free(p->remote);
        free(p->local);
        free(p);
    }
}

/* ---- header and features -------------------------------------------------------- */

static int in_external_possible(struct s2s_conn *c)
{
    if (!(c->flags & S2S_F_TLS) || !c->remote || s2s_in_pair(c, c->remote, c->local))
        return 0;
    if (c->cert_ok < 0)
        c->cert_ok = (int8_t)s2s_tls_peer_valid(c, c->remote);
    return c->cert_ok == 1;
}

static void in_features(struct s2s_conn *c)
{
    struct sb_buf *b = &in_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<stream:features>");
    int tls = (c->flags & S2S_F_TLS) != 0;
    if (!tls && s2s_tls_available())
        sb_buf_adds(b, s2s.cfg.require_tls ? "<starttls xmlns='" S2S_NS_TLS "'><required/></starttls>"
                                           : "<starttls xmlns='" S2S_NS_TLS "'/>");
    if (tls || !s2s.cfg.require_tls) {
        if (in_external_possible(c))
            sb_buf_adds(b, "<mechanisms xmlns='" S2S_NS_SASL "'><mechanism>EXTERNAL</mechanism>"
                           "</mechanisms>");
        if (!s2s.cfg.require_valid_certs)
            sb_buf_adds(b, "<dialback xmlns='" S2S_NS_DB_FEAT "'><errors/></dialback>");
    }
    sb_buf_adds(b, "</stream:features>");
    s2s_conn_write(c, b->data, b->len);
}

/* A header `to`/`from` domain prepared into out; SB_ERROR when invalid. */
static sb_rc in_domain(const char *v, char *out)
{
    if (!v || !*v || strchr(v, '@') || strchr(v, '/'))
        return SB_ERROR;
    return jid_nameprep(v, out);
}

void s2s_in_header(struct s2s_conn *c, struct xml_node *hdr)
{
    static char to[JID_PART_MAX + 1], from[JID_PART_MAX + 1];
    sb_random_id(c->sid, 20);
    const char *local = in_domain(xml_attr(hdr, "to"), to) == SB_OK ? sb_domains_find(to) : NULL;
    if (!local) {
        s2s_stream_error(c, "host-unknown", "to");
        return;
    }
    const char *f = xml_attr(hdr, "from");
    if (f && in_domain(f, from) != SB_OK) {
        s2s_stream_error(c, "invalid-from", "from");
        return;
    }
    if (!c->local && !c->pairs && s2s_limits_refused(c, f ? from : NULL)) {
        s2s_stream_error(c, "policy-violation", "limit");
        return;
    }
    /* After SASL the restarted stream must keep the same addresses. */
    if (c->pairs && c->local && strcmp(c->local, local) != 0) {
        s2s_stream_error(c, "host-unknown", "to-changed");
        return;
    }
    if (c->pairs && c->remote && (!f || strcmp(c->remote, from) != 0)) {
        s2s_stream_error(c, "invalid-from", "from-changed");
        return;
    }
    if (!c->local && !(c->local = strdup(local))) {
        s2s_stream_error(c, "resource-constraint", "nomem");
        return;
    }
    if (f && !c->remote && !(c->remote = strdup(from))) {
        s2s_stream_error(c, "resource-constraint", "nomem");
        return;
    }
    if (f && !s2s_policy_allows(local, from)) {
        log_info("policy_refused", "dir=in local=%s remote=%s", local, from);
        s2s_stream_error(c, "policy-violation", "policy");
        return;
    }
    s2s_stream_send_header(c);
    c->state = S2S_S_OPEN;
    log_debug("stream_open", "peer=%s sid=%s local=%s remote=%s tls=%d", c->peer, c->sid,
              c->local, c->remote ? c->remote : "-", (c->flags & S2S_F_TLS) != 0);
    in_features(c);
}

/* ---- STARTTLS and SASL EXTERNAL ------------------------------------------------------ */

static void in_starttls(struct s2s_conn *c)
{
    if ((c->flags & S2S_F_TLS) || !s2s_tls_available()) {
        s2s_conn_writes(c, "<failure xmlns='" S2S_NS_TLS "'/></stream:stream>");
        s2s_conn_close(c, "starttls-refused");
        return;
    }
    s2s_conn_writes(c, "<proceed xmlns='" S2S_NS_TLS "'/>");
    s2s_stream_restart(c);   /* drops anything sent after <starttls/> in clear */
    s2s_conn_starttls(c);
}

static void in_sasl_failure(struct s2s_conn *c, const char *cond)
{
    struct sb_buf *b = &in_buf;
    sb_buf_reset(b);
    sb_buf_printf(b, "<failure xmlns='" S2S_NS_SASL "'><%s/></failure>", cond);
    s2s_conn_write(c, b->data, b->len);
    log_info("sasl_failed", "peer=%s remote=%s cond=%s", c->peer, c->remote ? c->remote : "-",
             cond);
}

/* The authorization identity: "=" or empty means "as the certificate says";
 * otherwise it must be the stream's `from` (XEP-0178 §3). */
static int in_authzid_ok(struct s2s_conn *c, const char *b64)
{
    if (!*b64 || !strcmp(b64, "="))
        return 1;
    size_t n = strlen(b64);
    char dec[S2S_DOMAIN_MAX + 1];
    if (BASE64_DECODE_LENGTH(n) >= sizeof dec)
        return 0;
    struct base64_decode_ctx ctx;
    size_t outlen = sizeof dec - 1;
    base64_decode_init(&ctx);
    if (!base64_decode_update(&ctx, &outlen, (uint8_t *)dec, n, b64) ||
        !base64_decode_final(&ctx))
        return 0;
    dec[outlen] = '\0';
    char prepared[JID_PART_MAX + 1];
    return jid_nameprep(dec, prepared) == SB_OK && !strcmp(prepared, c->remote);
}

static void in_sasl(struct s2s_conn *c, struct xml_node *n)
{
    if (strcmp(s2s_local_name(n->name), "auth") != 0) {
        in_sasl_failure(c, "aborted");
        return;
    }
    const char *mech = xml_attr(n, "mechanism");
    if (!mech || strcmp(mech, "EXTERNAL") != 0) {
        in_sasl_failure(c, "invalid-mechanism");
        return;
    }
    if (!in_external_possible(c)) {
        in_sasl_failure(c, "not-authorized");
        return;
    }
    xml_text(n, &in_text);
    if (!in_authzid_ok(c, in_text.data ? in_text.data : "")) {
        in_sasl_failure(c, "invalid-authzid");
        return;
    }
    if (s2s_in_add_pair(c, c->remote, c->local, S2S_AUTH_EXTERNAL) != SB_OK) {
        s2s_stream_error(c, "resource-constraint", "nomem");
        return;
    }
    s2s_conn_writes(c, "<success xmlns='" S2S_NS_SASL "'/>");
    s2s_stream_restart(c);
    c->state = S2S_S_WAIT_HEADER;
}

/* ---- stanzas ------------------------------------------------------------------------ */

static int in_is_stanza(const char *name)
{
    return !strcmp(name, "message") || !strcmp(name, "presence") || !strcmp(name, "iq");
}

/* The stanza with prepared from/to and without a jabber:server xmlns
 * (the sm and c2s write it into jabber:client streams). */
static sb_rc in_serialize(const struct xml_node *st, struct sb_buf *b)
{
    return xml_serialize_stamped(st, in_full_from, in_full_to, S2S_NS_SERVER, b);
}

/* An answer to one of our XEP-0199 pings: ids name the instance that sent
 * the ping, since the answer may arrive at any instance. */
static int in_pong(const struct xml_node *st, const char *type)
{
    const char *id = xml_attr(st, "id");
    if (strcmp(st->name, "iq") != 0 || !id || strncmp(id, "sbping-", 7) != 0 ||
        (strcmp(type, "result") != 0 && strcmp(type, "error") != 0) || *in_to.node)
        return 0;
    const char *inst = id + 7, *dash = strrchr(inst, '-');
    if (!dash || dash == inst || (size_t)(dash - inst) > ENV_NAME_MAX)
        return 1;
    char name[ENV_NAME_MAX + 1];
    memcpy(name, inst, (size_t)(dash - inst));
    name[dash - inst] = '\0';
    if (!strcmp(name, s2s.instance))
        s2s_out_pong(in_from.domain, id);
    else
        s2s_route_pong(name, in_from.domain, id);
    return 1;
}

SB_STANZA_COUNTERS(in_mx, "sb_stanzas_in_total", "Stanzas received from remote servers, by type")

static void in_stanza(struct s2s_conn *c, struct xml_node *st)
{
    sb_metric_inc(in_mx[sb_stanza_kind_of(st->name)]);
    const char *from = xml_attr(st, "from"), *to = xml_attr(st, "to");
    const char *type = xml_attr(st, "type");
    if (!from || !*from || !to || !*to) {
        s2s_stream_error(c, "improper-addressing", st->name);
        return;
    }
    if (jid_parse(&in_from, from) != SB_OK) {
        s2s_stream_error(c, "invalid-from", "from-malformed");
        return;
    }
    if (jid_parse(&in_to, to) != SB_OK) {
        s2s_stream_error(c, "improper-addressing", "to-malformed");
        return;
    }
    if (!s2s_in_pair(c, in_from.domain, NULL)) {
        log_info("spoofed_from", "peer=%s from=%s", c->peer, sb_log_q(from));
        s2s_stream_error(c, "invalid-from", "from-not-authenticated");
        return;
    }
    if (!sb_domains_find(in_to.domain)) {
        s2s_stream_error(c, "host-unknown", "to-not-served");
        return;
    }
    if (!s2s_in_pair(c, in_from.domain, in_to.domain)) {
        s2s_stream_error(c, "not-authorized", "pair-not-authenticated");
        return;
    }
    c->last_active = ev_now(s2s.loop);
    if (in_pong(st, type ? type : ""))
        return;
    if (!s2s_policy_allows(in_to.domain, in_from.domain)) {
        log_info("policy_dropped", "dir=in from=%s to=%s name=%s", sb_log_q(from),
                 sb_log_q(to), st->name);
        return;
    }
    jid_full(&in_from, in_full_from);
    jid_full(&in_to, in_full_to);
    jid_bare(&in_to, in_bare);
    if (in_serialize(st, &in_buf) != SB_OK ||
        s2s_route_inbound(in_bare, in_full_from, in_buf.data, in_buf.len) != SB_OK)
        log_warn("inbound_route_failed", "from=%s to=%s", sb_log_q(from), sb_log_q(to));
}

void s2s_in_element(struct s2s_conn *c, struct xml_node *n)
{
    if (c->state != S2S_S_OPEN)
        return;
    const char *name = s2s_local_name(n->name);
    if (!strcmp(name, "starttls") && s2s_elem_ns(n, S2S_NS_TLS)) {
        in_starttls(c);
    } else if (s2s_elem_ns(n, S2S_NS_SASL)) {
        in_sasl(c, n);
    } else if (s2s_elem_ns(n, S2S_NS_DB) && !strcmp(name, "result")) {
        s2s_db_in_result(c, n);
    } else if (s2s_elem_ns(n, S2S_NS_DB) && !strcmp(name, "verify")) {
        s2s_db_in_verify(c, n);
    } else if (in_is_stanza(n->name) && s2s_elem_ns(n, S2S_NS_SERVER)) {
        if (!c->pairs)
            s2s_stream_error(c, "not-authorized", n->name);   /* RFC 6120 §6.4 */
        else
            in_stanza(c, n);
    } else {
        s2s_stream_error(c, "unsupported-stanza-type", n->name);
    }
}

void s2s_in_status(struct sb_buf *b)
{
    double now = ev_now(s2s.loop);
    for (struct s2s_conn *c = s2s.conns; c; c = c->next) {
        if (c->dir != S2S_IN || c->state == S2S_S_CLOSING)
            continue;
        if (!c->pairs) {
            sb_buf_printf(b, "instance=%s remote=%s local=%s dir=in state=%s tls=%d auth=none "
                          "idle_s=%.0f peer=%s\n", s2s.instance, c->remote ? c->remote : "-",
                          c->local ? c->local : "-", s2s_state_name(c->state),
                          (c->flags & S2S_F_TLS) != 0, now - c->last_active, c->peer);
            continue;
        }
        for (struct s2s_pair *p = c->pairs; p; p = p->next)
            sb_buf_printf(b, "instance=%s remote=%s local=%s dir=in state=%s tls=%d auth=%s "
                          "idle_s=%.0f peer=%s\n", s2s.instance, p->remote, p->local,
                          s2s_state_name(c->state), (c->flags & S2S_F_TLS) != 0,
                          s2s_auth_name(p->auth), now - c->last_active, c->peer);
    }
}
