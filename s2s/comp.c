/* comp.c — external components (XEP-0114, jabber:component:accept) on the
 * s2s process's `component_port`. A component is a domain of its own
 * (`[component.DOMAIN] secret` or `secret_file`): it opens a stream to that
 * domain, we answer with a header and a fresh id, it proves the secret with
 * <handshake>hex(SHA-1(id ‖ secret))</handshake>, and from then on its
 * stanzas (from its domain only) go to the router keyed by the recipient,
 * like a remote server's. The instance announces the domains it holds in
 * its HELLO (`domains=`), so every router sends it the stanzas for them;
 * several connections for one domain share the load, one recipient always
 * on the same connection (order kept). A configured component with no
 * connection anywhere: its stanzas bounce with service-unavailable.
 *
 * Why in s2s: it is the process that already speaks server-side XML streams
 * to other servers (limits, stream errors, TLS-less listeners, the bus
 * path for stanzas from outside the cluster), and it scales out the same
 * way; a process of its own would repeat all of that. */
#include "s2s.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <nettle/memops.h>
#include <nettle/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMP_MAX 64
#define COMP_SECRET_MAX 256

struct comp_dom {
    char name[JID_PART_MAX + 1];
    char secret[COMP_SECRET_MAX];
    int nconns;                    /* authenticated connections here */
};

static struct comp_dom comp_doms[COMP_MAX];
static int comp_n;
static struct sb_buf comp_buf, comp_hello;
static struct jid comp_from, comp_to;
static char comp_full_from[JID_FULL_MAX + 1], comp_full_to[JID_FULL_MAX + 1];
static char comp_bare[JID_BARE_MAX + 1];

static struct comp_dom *comp_find(const char *domain)
{
    for (int i = 0; i < comp_n; i++)
        if (!strcmp(comp_doms[i].name, domain))
            return &comp_doms[i];
    return NULL;
}

static void comp_config_one(const char *section, const char *value, void *ud)
{
    int *bad = ud;
    if (strncmp(section, "component.", 10) != 0)
        return;
    char name[JID_PART_MAX + 1];
    if (jid_nameprep(section + 10, name) != SB_OK) {
        log_error("component_bad_domain", "section=%s", sb_log_q(section));
        (*bad)++;
        return;
    }
    if (comp_find(name))
        return;                    /* secret and secret_file: one entry */
    if (comp_n >= COMP_MAX) {
        log_error("component_too_many", "max=%d section=%s", COMP_MAX, sb_log_q(section));
        (*bad)++;
        return;
    }
    struct comp_dom *d = &comp_doms[comp_n];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    if (sb_config_secret_section(section, "secret", d->secret, sizeof d->secret) != SB_OK) {
        log_error("component_no_secret", "domain=%s", name);
        (*bad)++;
        return;
    }
    if (sb_domains_find(name))
        log_warn("component_domain_is_local", "domain=%s note=\"users of this domain win\"", name);
    comp_n++;
}

sb_rc s2s_comp_init(void)
{
    int bad = 0;
    comp_n = 0;
    sb_config_each_key("secret", comp_config_one, &bad);
    sb_config_each_key("secret_file", comp_config_one, &bad);
    if (bad)
        return SB_ERROR;
    for (int i = 0; i < comp_n; i++)
        log_info("component_configured", "domain=%s", comp_doms[i].name);
    return SB_OK;
}

int s2s_comp_configured(const char *domain)
{
    return comp_find(domain) != NULL;
}

/* HELLO domains=: the components this instance holds now. */
static void comp_announce(void)
{
    struct sb_buf *b = &comp_hello;
    sb_buf_reset(b);
    for (int i = 0; i < comp_n; i++)
        if (comp_doms[i].nconns > 0)
            sb_buf_printf(b, "%s%s", b->len ? "," : "", comp_doms[i].name);
    if (s2s.link)
        link_set_domains(s2s.link, b->data ? b->data : "");
}

/* ---- the stream --------------------------------------------------------------- */

void s2s_comp_send_header(struct s2s_conn *c)
{
    if (!*c->sid)
        sb_random_id(c->sid, 20);
    struct sb_buf *b = &comp_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<?xml version='1.0'?><stream:stream xmlns='" S2S_NS_COMPONENT
                   "' xmlns:stream='" S2S_NS_STREAM "'");
    sb_buf_printf(b, " id='%s'", c->sid);
    if (c->local) {
        sb_buf_adds(b, " from='");
        xml_escape_attr(b, c->local, strlen(c->local));
        sb_buf_adds(b, "'");
    }
    sb_buf_adds(b, ">");
    c->flags |= S2S_F_HDR_SENT;
    s2s_conn_write(c, b->data, b->len);
}

void s2s_comp_header(struct s2s_conn *c, struct xml_node *hdr)
{
    const char *ns = xml_attr(hdr, "xmlns"), *sns = xml_attr(hdr, "xmlns:stream");
    const char *to = xml_attr(hdr, "to");
    char name[JID_PART_MAX + 1];
    struct comp_dom *d = to && jid_nameprep(to, name) == SB_OK ? comp_find(name) : NULL;
    if (d)
        c->local = strdup(d->name);
    s2s_comp_send_header(c);
    if (strcmp(hdr->name, "stream:stream") != 0 || !ns || strcmp(ns, S2S_NS_COMPONENT) != 0 ||
        !sns || strcmp(sns, S2S_NS_STREAM) != 0) {
        s2s_stream_error(c, "invalid-namespace", "component-header");
        return;
    }
    if (!d) {
        log_info("component_unknown", "peer=%s to=%s", c->peer, sb_log_q(to ? to : "-"));
        s2s_stream_error(c, "host-unknown", "component-not-configured");
        return;
    }
    c->state = S2S_S_WAIT_FEATURES;       /* here: the handshake to come */
}

static void comp_handshake(struct s2s_conn *c, struct xml_node *n)
{
    struct comp_dom *d = c->local ? comp_find(c->local) : NULL;
    sb_buf_reset(&comp_buf);
    xml_text(n, &comp_buf);
    const char *given = comp_buf.data;
    uint8_t dig[SHA1_DIGEST_SIZE];
    char want[2 * SHA1_DIGEST_SIZE + 1];
    struct sha1_ctx h;
    sha1_init(&h);
    sha1_update(&h, strlen(c->sid), (const uint8_t *)c->sid);
    if (d)
        sha1_update(&h, strlen(d->secret), (const uint8_t *)d->secret);
    sha1_digest(&h, sizeof dig, dig);
    for (size_t i = 0; i < sizeof dig; i++)
        snprintf(want + 2 * i, 3, "%02x", dig[i]);
    char got[2 * SHA1_DIGEST_SIZE + 1] = {0};
    size_t glen = given ? strlen(given) : 0;
    if (glen == 2 * SHA1_DIGEST_SIZE)          /* hex either case; compared in constant time */
        for (size_t i = 0; i < glen; i++)
            got[i] = (char)(given[i] >= 'A' && given[i] <= 'F' ? given[i] + 32 : given[i]);
    if (!d || glen != 2 * SHA1_DIGEST_SIZE ||
        !memeql_sec(got, want, 2 * SHA1_DIGEST_SIZE)) {
        log_info("component_auth_failed", "peer=%s domain=%s", c->peer, c->local ? c->local : "-");
        s2s_stream_error(c, "not-authorized", "component-handshake");
        return;
    }
    c->state = S2S_S_OPEN;
    c->auth = S2S_AUTH_COMPONENT;
    c->last_active = ev_now(s2s.loop);
    s2s_conn_writes(c, "<handshake/>");
    d->nconns++;
    log_info("component_connected", "peer=%s domain=%s conns=%d", c->peer, d->name, d->nconns);
    s2s_conn_arm_timer(c);
    comp_announce();
}


static void comp_stanza(struct s2s_conn *c, struct xml_node *st)
{
    const char *from = xml_attr(st, "from"), *to = xml_attr(st, "to");
    if (!from || !*from || !to || !*to) {
        s2s_stream_error(c, "improper-addressing", st->name);
        return;
    }
    if (jid_parse(&comp_from, from) != SB_OK || strcmp(comp_from.domain, c->local) != 0) {
        log_info("component_spoofed_from", "peer=%s domain=%s from=%s", c->peer, c->local,
                 sb_log_q(from));
        s2s_stream_error(c, "invalid-from", "component-from");
        return;
    }
    if (jid_parse(&comp_to, to) != SB_OK) {
        s2s_stream_error(c, "improper-addressing", "to-malformed");
        return;
    }
    c->last_active = ev_now(s2s.loop);
    jid_full(&comp_from, comp_full_from);
    jid_full(&comp_to, comp_full_to);
    jid_bare(&comp_to, comp_bare);
    if (xml_serialize_stamped(st, comp_full_from, comp_full_to, "*", &comp_buf) != SB_OK)
        return;
    /* Another component held here: straight to it; anything else (local
     * users, other instances' components) through the router. */
    if (comp_find(comp_to.domain) && s2s_comp_deliver(comp_to.domain, comp_bare,
                                                      comp_buf.data, comp_buf.len) == SB_OK)
        return;
    if (s2s_route_inbound(comp_bare, comp_full_from, comp_buf.data, comp_buf.len) != SB_OK)
        log_warn("component_route_failed", "from=%s to=%s", sb_log_q(from), sb_log_q(to));
}

void s2s_comp_element(struct s2s_conn *c, struct xml_node *n)
{
    const char *name = s2s_local_name(n->name);
    if (c->state == S2S_S_WAIT_FEATURES) {
        if (!strcmp(name, "handshake"))
            comp_handshake(c, n);
        else
            s2s_stream_error(c, "not-authorized", n->name);      /* before the handshake */
        return;
    }
    if (c->state != S2S_S_OPEN)
        return;
    const char *ns = xml_attr(n, "xmlns");
    if ((!strcmp(name, "message") || !strcmp(name, "presence") || !strcmp(name, "iq")) &&
        !strchr(n->name, ':') && (!ns || !strcmp(ns, S2S_NS_COMPONENT)))
        comp_stanza(c, n);
    else
        s2s_stream_error(c, "unsupported-stanza-type", n->name);
}

void s2s_comp_closed(struct s2s_conn *c)
{
    if (c->auth != S2S_AUTH_COMPONENT || !c->local)
        return;
    struct comp_dom *d = comp_find(c->local);
    if (d && d->nconns > 0) {
        d->nconns--;
        log_info("component_disconnected", "peer=%s domain=%s conns=%d", c->peer, d->name,
                 d->nconns);
        comp_announce();
    }
}

/* ---- to a component ------------------------------------------------------------ */

static uint64_t comp_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

sb_rc s2s_comp_deliver(const char *domain, const char *to_bare, const char *body, size_t len)
{
    struct comp_dom *d = comp_find(domain);
    if (!d || d->nconns == 0)
        return SB_DONE;
    /* One recipient, one connection: stanzas to it stay in order. */
    long pick = (long)(comp_hash(to_bare) % (uint64_t)d->nconns), i = 0;
    for (struct s2s_conn *c = s2s.conns; c; c = c->next) {
        if (c->dir != S2S_COMP || c->state != S2S_S_OPEN || c->auth != S2S_AUTH_COMPONENT ||
            strcmp(c->local, d->name) != 0)
            continue;
        if (i++ == pick) {
            s2s_conn_write(c, body, len);
            c->last_active = ev_now(s2s.loop);
            return SB_OK;
        }
    }
    return SB_DONE;
}

void s2s_comp_status(struct sb_buf *b)
{
    double now = ev_now(s2s.loop);
    for (struct s2s_conn *c = s2s.conns; c; c = c->next)
        if (c->dir == S2S_COMP && c->state != S2S_S_CLOSING)
            sb_buf_printf(b, "instance=%s remote=- local=%s dir=component state=%s tls=0 "
                          "auth=%s idle_s=%.0f peer=%s\n", s2s.instance,
                          c->local ? c->local : "-", s2s_state_name(c->state),
                          s2s_auth_name(c->auth), now - c->last_active, c->peer);
}
