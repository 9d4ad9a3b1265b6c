/* out.c — outgoing routes. A route is one (local domain, remote domain)
 * pair this instance talks to; the router sends every stanza for a remote
 * domain to one instance, so a pair has one route cluster-wide. Its life:
 *
 *   IDLE ──stanza──► RESOLVING (SRV, then A/AAAA per target)
 *        ──► CONNECTING (TCP, TLS, stream, SASL EXTERNAL or dialback;
 *            on failure the next address, then the next target)
 *        ──► READY (queue flushed, stanzas written as they come)
 *        ──idle / peer closed──► IDLE
 *
 * One deadline (connect_timeout) covers the whole attempt. Stanzas wait in
 * a bounded queue meanwhile; when the attempt fails they are bounced to
 * their senders (remote-server-not-found, or remote-server-timeout when the
 * deadline passed), never dropped. Verify-only routes carry XEP-0220
 * db:verify requests for incoming streams instead of stanzas. */
#include "s2s.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"

#include <netinet/in.h>
#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_TICK 1.0             /* READY routes: idle and ping checks */
#define OUT_VERIFY_IDLE 10.0     /* a verify-only stream lingers this long */

struct s2s_qent {
    struct s2s_qent *next;
    size_t len;
    char data[];
};

struct s2s_vreq {
    struct s2s_vreq *next;
    unsigned long serial;        /* the incoming stream waiting for the answer */
    int sent;
    char id[41];
    char key[256];
};

static struct s2s_out *out_routes;
static unsigned long out_ping_seq;
static struct sb_buf out_buf;

static void out_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void out_next_target(struct s2s_out *r);
static void out_next_addr(struct s2s_out *r);
static void out_fail(struct s2s_out *r, const char *cond, const char *why);

static const char *out_state_name(int s)
{
    switch (s) {
    case S2S_R_RESOLVING:  return "resolving";
    case S2S_R_CONNECTING: return "connecting";
    case S2S_R_READY:      return "ready";
    default:               return "idle";
    }
}

/* ---- route objects ---------------------------------------------------------- */

static struct s2s_out *out_find(const char *local, const char *remote, int verify)
{
    for (struct s2s_out *r = out_routes; r; r = r->next)
        if (r->verify_only == verify && !strcmp(r->remote, remote) && !strcmp(r->local, local))
            return r;
    return NULL;
}

static struct s2s_out *out_new(const char *local, const char *remote, int verify)
{
    struct s2s_out *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->local = strdup(local);
    r->remote = strdup(remote);
    if (!r->local || !r->remote) {
        free(r->local);
        free(r->remote);
        free(r);
        return NULL;
    }
    r->verify_only = verify;
    ev_init(&r->timer, out_timer_cb);
    r->timer.data = r;
    r->next = out_routes;
    out_routes = r;
    return r;
}

static void out_reset_attempt(struct s2s_out *r)
{
    s2s_dns_cancel(r->dns);
    r->dns = NULL;
    free(r->targets);
    free(r->addrs);
    r->targets = NULL;
    r->addrs = NULL;
    r->ntargets = r->naddrs = r->ti = r->ai = 0;
}

static void out_free(struct s2s_out *r)
{
    struct s2s_out **pp = &out_routes;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    ev_timer_stop(s2s.loop, &r->timer);
    out_reset_attempt(r);
    if (r->conn) {
        r->conn->route = NULL;
        if (r->conn->flags & S2S_F_HDR_SENT)
            s2s_conn_writes(r->conn, "</stream:stream>");
        s2s_conn_close(r->conn, "route-closed");
    }
    while (r->qhead) {
        struct s2s_qent *q = r->qhead;
        r->qhead = q->next;
        free(q);
    }
    while (r->vhead) {
        struct s2s_vreq *v = r->vhead;
        r->vhead = v->next;
        free(v);
    }
    free(r->local);
    free(r->remote);
    free(r);
}

/* An idle route with nothing waiting is forgotten (routes are cheap to
 * make again). Callers must not touch r afterwards. */
static void out_maybe_free(struct s2s_out *r)
{
    if (r->state == S2S_R_IDLE && !r->qhead && !r->vhead && !r->conn)
        out_free(r);
}

static void out_arm(struct s2s_out *r, double after)
{
    ev_timer_stop(s2s.loop, &r->timer);
    ev_timer_set(&r->timer, after > 0 ? after : 0., 0.);
    ev_timer_start(s2s.loop, &r->timer);
}

/* ---- bounces ---------------------------------------------------------------------- */

void s2s_bounce(const char *body, size_t len, const char *cond, const char *text)
{
    enum xml_err err;
    struct xml_doc *d = xml_doc_parse(body, len, &s2s.cfg.limits, &err);
    if (!d)
        return;
    const struct xml_node *st = d->root;
    const char *type = xml_attr(st, "type"), *from = xml_attr(st, "from");
    const char *to = xml_attr(st, "to"), *id = xml_attr(st, "id");
    int iq = !strcmp(st->name, "iq");
    if ((type && !strcmp(type, "error")) || !from || !to ||
        (iq && (!type || (strcmp(type, "get") && strcmp(type, "set"))))) {
        log_info("bounce_skipped", "name=%s type=%s from=%s", st->name, type ? type : "-",
                 sb_log_q(from ? from : "-"));
        xml_doc_free(d);
        return;
    }
    const char *etype = !strcmp(cond, "remote-server-timeout") ||
                        !strcmp(cond, "resource-constraint") ? "wait" : "cancel";
    struct sb_buf *b = &out_buf;
    sb_buf_reset(b);
    sb_buf_printf(b, "<%s type='error'", st->name);
    if (id) {
        sb_buf_adds(b, " id='");
        xml_escape_attr(b, id, strlen(id));
        sb_buf_adds(b, "'");
    }
    sb_buf_adds(b, " from='");
    xml_escape_attr(b, to, strlen(to));
    sb_buf_adds(b, "' to='");
    xml_escape_attr(b, from, strlen(from));
    sb_buf_printf(b, "'><error type='%s'><%s xmlns='" S2S_NS_STANZAS "'/>", etype, cond);
    if (text) {
        sb_buf_adds(b, "<text xmlns='" S2S_NS_STANZAS "'>");
        xml_escape_text(b, text, strlen(text));
        sb_buf_adds(b, "</text>");
    }
    sb_buf_printf(b, "</error></%s>", st->name);
    log_info("bounce", "name=%s from=%s to=%s cond=%s", st->name, sb_log_q(from), sb_log_q(to),
             cond);
    if (b->data)
        s2s_route_local(from, to, b->data, b->len);
    xml_doc_free(d);
}

static void out_bounce_all(struct s2s_out *r, const char *cond, const char *text)
{
    while (r->qhead) {
        struct s2s_qent *q = r->qhead;
        r->qhead = q->next;
        s2s_bounce(q->data, q->len, cond, text);
        free(q);
    }
    r->qtail = NULL;
    r->qlen = 0;
}

/* ---- attempt: DNS, targets, addresses ---------------------------------------------- */

static void out_srv_cb(void *ud, const struct s2s_target *t, int n, int fallback)
{
    struct s2s_out *r = ud;
    r->dns = NULL;
    if (r->state != S2S_R_RESOLVING)
        return;
    if (fallback) {
        r->targets = calloc(1, sizeof *r->targets);
        if (r->targets) {
            snprintf(r->targets[0].host, sizeof r->targets[0].host, "%s", r->remote);
            r->targets[0].port = s2s.cfg.default_port;
            r->ntargets = 1;
        }
    } else if (n > 0 && (r->targets = calloc((size_t)n, sizeof *r->targets))) {
        memcpy(r->targets, t, (size_t)n * sizeof *t);
        r->ntargets = n;
    }
    if (!r->ntargets) {
        out_fail(r, "remote-server-not-found", "no xmpp-server service");
        return;
    }
    r->ti = -1;
    r->state = S2S_R_CONNECTING;
    out_next_target(r);
}

static void out_addr_cb(void *ud, const struct sockaddr_storage *a, int n)
{
    struct s2s_out *r = ud;
    r->dns = NULL;
    if (r->state != S2S_R_CONNECTING)
        return;
    free(r->addrs);
    r->addrs = n > 0 ? malloc((size_t)n * sizeof *a) : NULL;
    r->naddrs = r->addrs ? n : 0;
    if (r->addrs)
        memcpy(r->addrs, a, (size_t)n * sizeof *a);
    r->ai = -1;
    out_next_addr(r);
}

static void out_next_target(struct s2s_out *r)
{
    if (++r->ti >= r->ntargets) {
        out_fail(r, "remote-server-not-found", r->why ? r->why : "no target reachable");
        return;
    }
    const struct s2s_target *t = &r->targets[r->ti];
    free(r->addrs);
    r->addrs = NULL;
    r->naddrs = 0;
    /* NULL: the callback already ran inside the call (r may be gone). */
    struct s2s_dns_req *q = s2s_dns_addr(t->host, t->port, out_addr_cb, r);
    if (q)
        r->dns = q;
}

static void out_next_addr(struct s2s_out *r)
{
    while (++r->ai < r->naddrs) {
        const struct s2s_target *t = &r->targets[r->ti];
        const struct sockaddr_storage *sa = &r->addrs[r->ai];
        socklen_t sl = sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in);
        struct s2s_conn *c = s2s_conn_connect(r, (const struct sockaddr *)sa, sl, t->direct_tls);
        if (!c)
            continue;
        r->conn = c;
        c->deadline = r->deadline + 1.0;  /* the route's deadline fires first */
        s2s_conn_arm_timer(c);
        return;
    }
    out_next_target(r);
}

static void out_start(struct s2s_out *r)
{
    out_reset_attempt(r);
    r->state = S2S_R_RESOLVING;
    r->reached = 0;
    r->why = NULL;
    r->deadline = ev_now(s2s.loop) + s2s.cfg.connect_timeout;
    out_arm(r, s2s.cfg.connect_timeout);
    log_info("route_start", "local=%s remote=%s verify=%d queued=%d", r->local, r->remote,
             r->verify_only, r->qlen);
    struct s2s_dns_req *q = s2s_dns_srv(r->remote, out_srv_cb, r);
    if (q)
        r->dns = q;
}

/* The attempt is over without success: answer everyone who waited. */
static void out_fail(struct s2s_out *r, const char *cond, const char *why)
{
    log_info("route_failed", "local=%s remote=%s verify=%d cond=%s why=%s queued=%d", r->local,
             r->remote, r->verify_only, cond, sb_log_q(why ? why : "-"), r->qlen);
    out_reset_attempt(r);
    ev_timer_stop(s2s.loop, &r->timer);
    r->state = S2S_R_IDLE;
    if (r->conn) {
        struct s2s_conn *c = r->conn;
        r->conn = NULL;
        c->route = NULL;
        s2s_conn_close(c, cond);
    }
    out_bounce_all(r, cond, why);
    while (r->vhead) {
        struct s2s_vreq *v = r->vhead;
        r->vhead = v->next;
        s2s_db_verdict(v->serial, r->remote, r->local, "error");
        free(v);
    }
    out_maybe_free(r);
}

/* ---- the connection's progress -------------------------------------------------------- */

static void out_send_verifies(struct s2s_out *r)
{
    struct s2s_conn *c = r->conn;
    for (struct s2s_vreq *v = r->vhead; v && c; v = v->next) {
        if (v->sent)
            continue;
        struct sb_buf *b = &out_buf;
        sb_buf_reset(b);
        sb_buf_adds(b, "<db:verify from='");
        xml_escape_attr(b, r->local, strlen(r->local));
        sb_buf_adds(b, "' to='");
        xml_escape_attr(b, r->remote, strlen(r->remote));
        sb_buf_adds(b, "' id='");
        xml_escape_attr(b, v->id, strlen(v->id));
        sb_buf_printf(b, "'>%s</db:verify>", v->key);
        v->sent = 1;
        s2s_conn_write(c, b->data, b->len);
    }
}

void s2s_out_conn_ready(struct s2s_conn *c, enum s2s_auth how)
{
    struct s2s_out *r = c->route;
    c->state = S2S_S_OPEN;
    c->auth = (uint8_t)how;
    s2s_conn_arm_timer(c);
    if (!r)
        return;
    r->state = S2S_R_READY;
    r->last_used = ev_now(s2s.loop);
    r->ping_sent = 0;
    log_info("authenticated", "peer=%s dir=out local=%s remote=%s auth=%s tls=%d verify=%d "
             "flushed=%d ms=%.0f", c->peer, r->local, r->remote, s2s_auth_name(how),
             (c->flags & S2S_F_TLS) != 0, r->verify_only, r->qlen,
             (ev_now(s2s.loop) - (r->deadline - s2s.cfg.connect_timeout)) * 1e3);
    out_reset_attempt(r);
    while (r->qhead && r->conn) {
        struct s2s_qent *q = r->qhead;
        r->qhead = q->next;
        s2s_conn_write(r->conn, q->data, q->len);
        free(q);
    }
    if (!r->qhead) {
        r->qtail = NULL;
        r->qlen = 0;
    }
    out_send_verifies(r);
    out_arm(r, OUT_TICK);
}

void s2s_out_conn_closed(struct s2s_conn *c, const char *why)
{
    struct s2s_out *r = c->route;
    c->route = NULL;
    if (!r || r->conn != c)
        return;
    r->conn = NULL;
    if (r->state == S2S_R_CONNECTING) {
        r->why = why;
        out_next_addr(r);            /* the next address, then target */
        return;
    }
    if (r->state == S2S_R_READY) {
        log_info("route_closed", "local=%s remote=%s why=%s", r->local, r->remote, why);
        ev_timer_stop(s2s.loop, &r->timer);
        r->state = S2S_R_IDLE;
        /* Unanswered verify requests and newly queued stanzas: try again. */
        for (struct s2s_vreq *v = r->vhead; v; v = v->next)
            v->sent = 0;
        if (r->qhead || r->vhead)
            out_start(r);
        else
            out_maybe_free(r);
    }
}

/* Stream features of the peer decide how we go on (RFC 6120 §4.3.2). */
void s2s_out_features(struct s2s_conn *c, struct xml_node *feat)
{
    for (struct xml_node *e = xml_first_elem(feat); e; e = xml_next_elem(e)) {
        const char *name = s2s_local_name(e->name);
        if (!strcmp(name, "starttls") && s2s_elem_ns(e, S2S_NS_TLS))
            c->flags |= S2S_F_FEAT_TLS;
        else if (!strcmp(name, "dialback") && s2s_elem_ns(e, S2S_NS_DB_FEAT))
            c->flags |= S2S_F_FEAT_DB;
        else if (!strcmp(name, "mechanisms") && s2s_elem_ns(e, S2S_NS_SASL))
            for (struct xml_node *m = xml_first_elem(e); m; m = xml_next_elem(m)) {
                xml_text(m, &out_buf);
                if (out_buf.data && !strcmp(out_buf.data, "EXTERNAL"))
                    c->flags |= S2S_F_FEAT_EXT;
            }
    }
    if (c->auth == S2S_AUTH_EXTERNAL) {          /* the stream after SASL success */
        s2s_out_conn_ready(c, S2S_AUTH_EXTERNAL);
        return;
    }
    if (!(c->flags & S2S_F_TLS)) {
        if ((c->flags & S2S_F_FEAT_TLS) && s2s_tls_available()) {
            s2s_conn_writes(c, "<starttls xmlns='" S2S_NS_TLS "'/>");
            c->state = S2S_S_STARTTLS;
            return;
        }
        if (s2s.cfg.require_tls) {
            s2s_conn_writes(c, "</stream:stream>");
            s2s_conn_close(c, "peer-offers-no-tls");
            return;
        }
    }
    if (c->cert_ok < 0)
        c->cert_ok = (int8_t)((c->flags & S2S_F_TLS) ? s2s_tls_peer_valid(c, c->remote) : 0);
    if (s2s.cfg.require_valid_certs && c->cert_ok != 1) {
        s2s_conn_writes(c, "</stream:stream>");
        s2s_conn_close(c, "invalid-certificate");
        return;
    }
    if (c->route && c->route->verify_only) {
        s2s_out_conn_ready(c, S2S_AUTH_NONE);
        return;
    }
    if (c->cert_ok == 1 && (c->flags & S2S_F_FEAT_EXT) && !(c->flags & S2S_F_EXT_TRIED)) {
        /* XEP-0178: authzid = our domain. */
        struct sb_buf *b = &out_buf;
        sb_buf_reset(b);
        sb_buf_adds(b, "<auth xmlns='" S2S_NS_SASL "' mechanism='EXTERNAL'>");
        char b64[BASE64_ENCODE_RAW_LENGTH(S2S_DOMAIN_MAX) + 1];
        size_t n = strlen(c->local);
        if (n > S2S_DOMAIN_MAX)
            n = S2S_DOMAIN_MAX;
        base64_encode_raw(b64, n, (const uint8_t *)c->local);
        sb_buf_add(b, b64, BASE64_ENCODE_RAW_LENGTH(n));
        sb_buf_adds(b, "</auth>");
        c->state = S2S_S_SASL;
        s2s_conn_write(c, b->data, b->len);
        return;
    }
    if (c->flags & S2S_F_FEAT_DB) {
        s2s_db_send_result(c);
        return;
    }
    s2s_conn_writes(c, "</stream:stream>");
    s2s_conn_close(c, "no-authentication-method");
}

static void out_db_result(struct s2s_conn *c, struct xml_node *n)
{
    const char *type = xml_attr(n, "type");
    if (c->state != S2S_S_DIALBACK || !type)
        return;
    if (!strcmp(type, "valid")) {
        s2s_out_conn_ready(c, S2S_AUTH_DIALBACK);
        return;
    }
    struct xml_node *e = xml_child(n, "error", NULL);
    struct xml_node *cond = e ? xml_first_elem(e) : NULL;
    log_info("dialback_refused", "local=%s remote=%s type=%s cond=%s", c->local, c->remote,
             type, cond ? cond->name : "-");
    s2s_conn_writes(c, "</stream:stream>");
    s2s_conn_close(c, !strcmp(type, "invalid") ? "dialback-invalid" : "dialback-error");
}

void s2s_out_element(struct s2s_conn *c, struct xml_node *n)
{
    const char *name = s2s_local_name(n->name);
    if (s2s_elem_ns(n, S2S_NS_DB) && !strcmp(name, "verify")) {
        s2s_out_verify_answer(c, xml_attr(n, "id"), xml_attr(n, "type"));
        return;
    }
    switch (c->state) {
    case S2S_S_WAIT_FEATURES:
        if (!strcmp(name, "features") && s2s_elem_ns(n, S2S_NS_STREAM))
            s2s_out_features(c, n);
        else
            s2s_stream_error(c, "unsupported-stanza-type", n->name);
        return;
    case S2S_S_STARTTLS:
        if (!strcmp(name, "proceed") && s2s_elem_ns(n, S2S_NS_TLS)) {
            s2s_stream_restart(c);
            s2s_conn_starttls(c);
        } else {
            s2s_conn_close(c, "starttls-refused");
        }
        return;
    case S2S_S_SASL:
        if (!strcmp(name, "success") && s2s_elem_ns(n, S2S_NS_SASL)) {
            c->auth = S2S_AUTH_EXTERNAL;
            s2s_stream_restart(c);
            c->state = S2S_S_WAIT_HEADER;
            s2s_stream_send_header(c);
        } else {
            log_info("sasl_external_refused", "local=%s remote=%s", c->local, c->remote);
            c->flags |= S2S_F_EXT_TRIED;
            c->state = S2S_S_WAIT_FEATURES;
            if (c->flags & S2S_F_FEAT_DB)
                s2s_db_send_result(c);
            else
                s2s_conn_close(c, "sasl-external-refused");
        }
        return;
    case S2S_S_DIALBACK:
        if (!strcmp(name, "result") && s2s_elem_ns(n, S2S_NS_DB))
            out_db_result(c, n);
        return;
    default:
        /* Nothing is expected on our sending stream once it is open. */
        log_debug("out_unexpected", "remote=%s name=%s", c->remote, n->name);
        return;
    }
}

/* ---- stanzas and verify requests in ---------------------------------------------------- */

SB_STANZA_COUNTERS(out_mx, "sb_stanzas_out_total",
                   "Stanzas for remote servers, written or queued, by type")
SB_COUNTER(out_mx_refused, "sb_s2s_queue_refused_total", "",
           "Stanzas for a remote domain bounced because its queue was full")

void s2s_out_stanza(const char *local, const char *remote, const char *body, size_t len)
{
    struct s2s_out *r = out_find(local, remote, 0);
    if (!r && !(r = out_new(local, remote, 0))) {
        s2s_bounce(body, len, "resource-constraint", NULL);
        return;
    }
    r->last_used = ev_now(s2s.loop);
    if (r->state == S2S_R_READY && r->conn) {
        sb_metric_inc(out_mx[sb_stanza_kind_of_xml(body, len)]);
        s2s_conn_write(r->conn, body, len);
        return;
    }
    if (r->qlen >= s2s.cfg.max_queue) {
        sb_metric_inc(&out_mx_refused);
        s2s_bounce(body, len, "resource-constraint", "too many stanzas waiting for this domain");
        return;
    }
    struct s2s_qent *q = malloc(sizeof *q + len + 1);
    if (!q) {
        s2s_bounce(body, len, "resource-constraint", NULL);
        return;
    }
    q->next = NULL;
    q->len = len;
    memcpy(q->data, body, len);
    q->data[len] = '\0';
    if (r->qtail)
        r->qtail->next = q;
    else
        r->qhead = q;
    r->qtail = q;
    r->qlen++;
    sb_metric_inc(out_mx[sb_stanza_kind_of_xml(body, len)]);
    if (r->state == S2S_R_IDLE)
        out_start(r);
}

void s2s_out_verify(const char *local, const char *remote, unsigned long serial,
                    const char *id, const char *key)
{
    struct s2s_out *r = out_find(local, remote, 1);
    if (!r)
        r = out_new(local, remote, 1);
    struct s2s_vreq *v = r ? calloc(1, sizeof *v) : NULL;
    if (!v) {
        s2s_db_verdict(serial, remote, local, "error");
        return;
    }
    v->serial = serial;
    snprintf(v->id, sizeof v->id, "%s", id);
    snprintf(v->key, sizeof v->key, "%s", key);
    v->next = r->vhead;
    r->vhead = v;
    r->last_used = ev_now(s2s.loop);
    if (r->state == S2S_R_READY)
        out_send_verifies(r);
    else if (r->state == S2S_R_IDLE)
        out_start(r);
}

void s2s_out_verify_answer(struct s2s_conn *c, const char *id, const char *type)
{
    struct s2s_out *r = c->route;
    if (!r || !id || !type)
        return;
    for (struct s2s_vreq **pp = &r->vhead; *pp; pp = &(*pp)->next) {
        struct s2s_vreq *v = *pp;
        if (!v->sent || strcmp(v->id, id) != 0)
            continue;
        *pp = v->next;
        r->last_used = ev_now(s2s.loop);
        s2s_db_verdict(v->serial, r->remote, r->local, type);
        free(v);
        return;
    }
    log_info("verify_answer_unknown", "remote=%s id=%s", r->remote, sb_log_q(id));
}

/* ---- idle, ping ------------------------------------------------------------------------------ */

static void out_ping(struct s2s_out *r)
{
    snprintf(r->ping_id, sizeof r->ping_id, "sbping-%s-%lu", s2s.instance, ++out_ping_seq);
    struct sb_buf *b = &out_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<iq type='get' id='");
    sb_buf_adds(b, r->ping_id);
    sb_buf_adds(b, "' from='");
    xml_escape_attr(b, r->local, strlen(r->local));
    sb_buf_adds(b, "' to='");
    xml_escape_attr(b, r->remote, strlen(r->remote));
    sb_buf_adds(b, "'><ping xmlns='" S2S_NS_PING "'/></iq>");
    r->ping_sent = ev_now(s2s.loop);
    s2s_conn_write(r->conn, b->data, b->len);
}

void s2s_out_pong(const char *remote, const char *id)
{
    for (struct s2s_out *r = out_routes; r; r = r->next)
        if (r->ping_sent > 0 && !strcmp(r->ping_id, id) && !strcmp(r->remote, remote)) {
            log_info("pong", "remote=%s ms=%.0f", remote, (ev_now(s2s.loop) - r->ping_sent) * 1e3);
            r->ping_sent = 0;
            return;
        }
}

static void out_close_idle(struct s2s_out *r, const char *why)
{
    struct s2s_conn *c = r->conn;
    log_info("route_close", "local=%s remote=%s why=%s", r->local, r->remote, why);
    r->conn = NULL;
    c->route = NULL;
    r->state = S2S_R_IDLE;
    s2s_conn_writes(c, "</stream:stream>");
    s2s_conn_close(c, why);
    if (r->qhead || r->vhead)
        out_start(r);
    else
        out_maybe_free(r);
}

static void out_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct s2s_out *r = w->data;
    double now = ev_now(loop);
    if (r->state == S2S_R_RESOLVING || r->state == S2S_R_CONNECTING) {
        if (now >= r->deadline)
            out_fail(r, "remote-server-timeout", "no answer in time");
        else
            out_arm(r, r->deadline - now);
        return;
    }
    if (r->state != S2S_R_READY || !r->conn)
        return;
    double idle_limit = r->verify_only ? OUT_VERIFY_IDLE : s2s.cfg.idle_timeout;
    if (!r->vhead && now - r->last_used >= idle_limit) {
        out_close_idle(r, "idle");
        return;
    }
    if (r->ping_sent > 0 && now - r->ping_sent >= s2s.cfg.ping_timeout) {
        out_close_idle(r, "ping-timeout");
        return;
    }
    if (!r->verify_only && s2s.cfg.ping_interval > 0 && r->ping_sent == 0 &&
        now - r->conn->last_active >= s2s.cfg.ping_interval)
        out_ping(r);
    out_arm(r, OUT_TICK);
}

/* ---- status, shutdown ---------------------------------------------------------------------- */

void s2s_out_status(struct sb_buf *b)
{
    double now = ev_now(s2s.loop);
    for (struct s2s_out *r = out_routes; r; r = r->next) {
        struct s2s_conn *c = r->conn;
        sb_buf_printf(b, "instance=%s remote=%s local=%s dir=%s state=%s tls=%d auth=%s "
                      "idle_s=%.0f queued=%d peer=%s\n", s2s.instance, r->remote, r->local,
                      r->verify_only ? "out-verify" : "out", out_state_name(r->state),
                      c && (c->flags & S2S_F_TLS) ? 1 : 0,
                      s2s_auth_name(c && r->state == S2S_R_READY ? c->auth : 0),
                      now - r->last_used, r->qlen, c ? c->peer : "-");
    }
}

long s2s_out_count(void)
{
    long n = 0;
    for (struct s2s_out *r = out_routes; r; r = r->next)
        n += r->state == S2S_R_READY;
    return n;
}

void s2s_out_free_all(void)
{
    while (out_routes) {
        struct s2s_out *r = out_routes;
        out_bounce_all(r, "remote-server-timeout", "server shutting down");
        out_free(r);
    }
}
