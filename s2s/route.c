/* route.c — the router side of s2s. From the router: STANZA envelopes for
 * remote domains (the sender's domain must be served here and the policy
 * must allow the pair, else the sender gets an error), ping answers that
 * another instance received, admin status requests, and bounces of what
 * we sent. To the router: stanzas from authenticated peers, keyed by the
 * recipient's bare JID with `aux` = from (like c2s), and errors for local
 * senders keyed by their bare JID. */
#include "s2s.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

static struct env_hdr route_hdr;
static struct sb_buf route_buf;
static struct jid route_from, route_to;
static char route_bare[JID_BARE_MAX + 1];

static sb_rc route_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return SB_ERROR;
    memcpy(dst, src, n + 1);
    return SB_OK;
}

static sb_rc route_send(enum env_kind kind, enum env_route rt, const char *key, const char *op,
                        const char *aux, const char *body, size_t len)
{
    struct env_hdr *h = &route_hdr;
    env_init(h, kind, rt);
    if (route_copy(h->key, sizeof h->key, key) != SB_OK ||
        route_copy(h->sender, sizeof h->sender, s2s.instance) != SB_OK ||
        route_copy(h->op, sizeof h->op, op) != SB_OK ||
        route_copy(h->aux, sizeof h->aux, aux) != SB_OK)
        return SB_ERROR;
    return link_send(s2s.link, h, body, len);
}

sb_rc s2s_route_inbound(const char *to_bare, const char *from, const char *body, size_t len)
{
    return route_send(ENV_STANZA, ENV_ROUTE_JID, to_bare, "", from, body, len);
}

sb_rc s2s_route_local(const char *to, const char *from, const char *body, size_t len)
{
    if (jid_bare_of(to, route_bare, sizeof route_bare) < 0)
        return SB_ERROR;
    sb_rc rc = route_send(ENV_STANZA, ENV_ROUTE_JID, route_bare, "", from, body, len);
    if (rc != SB_OK)
        log_warn("local_send_failed", "to=%s", sb_log_q(to));
    return rc;
}

sb_rc s2s_route_pong(const char *instance, const char *remote, const char *id)
{
    char aux[ENV_NAME_MAX + S2S_DOMAIN_MAX + 2];
    snprintf(aux, sizeof aux, "%s %s", remote, id);
    return route_send(ENV_CONTROL, ENV_ROUTE_INSTANCE, instance, "s2s-pong", aux, "", 0);
}

void s2s_sessions_changed(void)
{
    if (s2s.link)
        link_set_sessions(s2s.link, s2s.nconns);
}

/* The stanza as it goes on the wire: jabber:server is the stream's default
 * namespace, so a jabber:client xmlns the client put on it is dropped. */
static const char *route_wire(const struct xml_node *st, const char *body, size_t *len)
{
    const char *x = xml_attr(st, "xmlns");
    if (!x)
        return body;
    struct sb_buf *b = &route_buf;
    sb_buf_reset(b);
    sb_buf_printf(b, "<%s", st->name);
    for (int i = 0; i < st->nattrs; i++) {
        if (!strcmp(st->attrs[i].name, "xmlns"))
            continue;
        sb_buf_printf(b, " %s='", st->attrs[i].name);
        xml_escape_attr(b, st->attrs[i].value, strlen(st->attrs[i].value));
        sb_buf_adds(b, "'");
    }
    if (!st->children) {
        sb_buf_adds(b, "/>");
    } else {
        sb_buf_adds(b, ">");
        for (const struct xml_node *ch = st->children; ch; ch = ch->next)
            xml_serialize(ch, b);
        sb_buf_printf(b, "</%s>", st->name);
    }
    if (!b->data)
        return NULL;
    *len = b->len;
    return b->data;
}

static void route_outbound(const char *body, size_t len)
{
    enum xml_err err;
    struct xml_doc *d = xml_doc_parse(body, len, &s2s.cfg.limits, &err);
    if (!d) {
        log_warn("outbound_unparsable", "bytes=%zu error=%s", len, xml_err_name(err));
        return;
    }
    const struct xml_node *st = d->root;
    const char *from = xml_attr(st, "from"), *to = xml_attr(st, "to");
    const char *local;
    if (!from || !to || jid_parse(&route_from, from) != SB_OK ||
        jid_parse(&route_to, to) != SB_OK ||
        !(local = sb_domains_find(route_from.domain))) {
        log_warn("outbound_unaddressed", "from=%s to=%s", sb_log_q(from ? from : "-"),
                 sb_log_q(to ? to : "-"));
        xml_doc_free(d);
        return;
    }
    if (s2s_comp_configured(route_to.domain)) {
        /* XEP-0114: a component's domain is ours, never federated. */
        size_t wlen = len;
        const char *wire = route_wire(st, body, &wlen);
        char bare[JID_BARE_MAX + 1];
        jid_bare(&route_to, bare);
        if (!wire || s2s_comp_deliver(route_to.domain, bare, wire, wlen) != SB_OK)
            s2s_bounce(body, len, "service-unavailable", "the component is not connected");
    } else if (sb_domains_muc_parent(route_to.domain)) {
        /* Our MUC service (sb-muc) with no live instance announcing it:
         * the routers send it here as if remote. Never federate it. */
        s2s_bounce(body, len, "service-unavailable", "the MUC service is not available");
    } else if (sb_domains_find(route_to.domain)) {
        /* The router only sends us remote domains; a domain just added may
         * not be announced yet. Never loop it back out. */
        s2s_bounce(body, len, "service-unavailable", NULL);
    } else if (!s2s_policy_allows(local, route_to.domain)) {
        log_info("policy_refused", "dir=out local=%s remote=%s from=%s", local,
                 route_to.domain, sb_log_q(from));
        s2s_bounce(body, len, "not-allowed", "federation with this domain is not allowed");
    } else {
        size_t wlen = len;
        const char *wire = route_wire(st, body, &wlen);
        if (wire)
            s2s_out_stanza(local, route_to.domain, wire, wlen);
    }
    xml_doc_free(d);
}

static void route_admin(const struct env_hdr *h)
{
    if (strcmp(h->op, "s2s") != 0)
        return;
    struct sb_buf b = SB_BUF_INIT;
    s2s_out_status(&b);
    s2s_in_status(&b);
    s2s_comp_status(&b);
    struct env_hdr *r = &route_hdr;
    env_init(r, ENV_ADMIN, ENV_ROUTE_INSTANCE);
    if (route_copy(r->key, sizeof r->key, h->sender) == SB_OK &&
        route_copy(r->sender, sizeof r->sender, s2s.instance) == SB_OK) {
        strcpy(r->op, "s2s");
        link_send(s2s.link, r, b.data ? b.data : "", b.len);
    }
    sb_buf_free(&b);
}

static void route_control(const struct env_hdr *h)
{
    if (strcmp(h->op, "s2s-pong") != 0)
        return;
    char remote[S2S_DOMAIN_MAX + 1];
    const char *sp = strchr(h->aux, ' ');
    if (!sp || (size_t)(sp - h->aux) >= sizeof remote)
        return;
    memcpy(remote, h->aux, (size_t)(sp - h->aux));
    remote[sp - h->aux] = '\0';
    s2s_out_pong(remote, sp + 1);
}

void s2s_route_recv(struct link *l, const struct env_hdr *h, const char *body,
                    size_t len, void *ud)
{
    switch (h->kind) {
    case ENV_STANZA:
        route_outbound(body, len);
        return;
    case ENV_CONTROL:
        route_control(h);
        return;
    case ENV_ADMIN:
        route_admin(h);
        return;
    case ENV_BOUNCE:
        /* A stanza from a peer found no sm (or a bounce of ours found no
         * owner): nothing reaches the remote sender from here, so say so. */
        log_warn("bounced", "reason=%s key=%s kind=%s", h->op, sb_log_q(h->aux),
                 env_kind_name(h->flags));
        return;
    default:
        return;
    }
}
