/* web_prebind.c — pre-bound BOSH sessions: a web page's own back-end POSTs
 * to /http-pre-bind with `Authorization: Bearer <prebind_secret>` and
 * `jid=DOMAIN` (anonymous login on an anonymous domain) or
 * `jid=USER@DOMAIN` (an existing account, trusted because the back-end
 * knows the secret), and gets `{"jid":"…","sid":"…","rid":N}`: a logged-in,
 * bound BOSH session the browser attaches to (Converse.js `prebind_url`,
 * Strophe `attach`), using rid N for its next request.
 *
 * The login runs through the same session core as any client: this module
 * plays the client on a BOSH session (stream, SASL ANONYMOUS or a checked
 * account, restart, bind), watching what the core writes. Steps run from a
 * zero timer, never inside the core's own write. */
#include "web.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREBIND_TIMEOUT 10.0

enum pb_stage {
    PB_START,       /* stream opened, login not started */
    PB_LOOKUP,      /* named user: account lookup in flight */
    PB_AUTH,        /* SASL ANONYMOUS sent */
    PB_RESTART,     /* <success/> seen: restart and bind next */
    PB_BIND,        /* bind iq sent */
    PB_DONE,        /* answered */
};

struct prebind {
    struct web_conn *h;          /* NULL once the requester is gone */
    struct web_bosh *b;          /* NULL once handed over or ended */
    enum pb_stage stage;
    int failed;
    unsigned lookup_pending : 1;
    ev_timer step, deadline;
    char domain[JID_PART_MAX + 1];
    char node[JID_PART_MAX + 1];  /* "" for anonymous */
};

static void pb_free(struct prebind *pb)
{
    ev_timer_stop(c2s.loop, &pb->step);
    ev_timer_stop(c2s.loop, &pb->deadline);
    if (pb->lookup_pending) {
        pb->h = NULL;
        pb->b = NULL;
        pb->stage = PB_DONE;     /* the database callback frees it */
        return;
    }
    free(pb);
}

static void pb_reply(struct web_conn *h, int status, const char *json)
{
    web_respond(h, status, "application/json", json, strlen(json), 0);
}

/* Done: answer the requester (if still there), hand the session over or end it. */
static void pb_finish(struct prebind *pb, int status, const char *json)
{
    pb->stage = PB_DONE;
    if (pb->h) {
        struct web_conn *h = pb->h;
        pb->h = NULL;
        pb_reply(h, status, json);
    }
    if (pb->b) {
        struct web_bosh *b = pb->b;
        pb->b = NULL;
        web_bosh_prebind_done(b, status == 200);
    }
    pb_free(pb);
}

static void pb_fail(struct prebind *pb, int status, const char *why)
{
    char json[160];
    snprintf(json, sizeof json, "{\"error\":\"%s\"}", why);
    log_info("prebind_failed", "domain=%s node=%s status=%d why=%s", pb->domain,
             *pb->node ? pb->node : "-", status, why);
    pb_finish(pb, status, json);
}

static void pb_json_str(struct sb_buf *b, const char *s)
{
    sb_buf_adds(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_buf_printf(b, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            sb_buf_printf(b, "\\u%04x", *s);
        else
            sb_buf_add(b, s, 1);
    }
    sb_buf_adds(b, "\"");
}

static void pb_success(struct prebind *pb)
{
    struct c2s_conn *c = web_bosh_conn(pb->b);
    struct sb_buf j = SB_BUF_INIT;
    sb_buf_adds(&j, "{\"jid\":");
    pb_json_str(&j, c->jid);
    sb_buf_printf(&j, ",\"sid\":\"%s\",\"rid\":%llu}", web_bosh_sid(pb->b),
                  (unsigned long long)web_bosh_next_rid(pb->b));
    log_info("prebind", "jid=%s sid=%s", c->jid, web_bosh_sid(pb->b));
    if (!j.data)
        pb_fail(pb, 503, "nomem");
    else
        pb_finish(pb, 200, j.data);
    sb_buf_free(&j);
}

/* Feed one element to the session as if the client had sent it. */
static void pb_feed(struct prebind *pb, const char *xml)
{
    enum xml_err err;
    struct xml_doc *d = xml_doc_parse(xml, strlen(xml), &c2s.cfg.limits, &err);
    struct c2s_conn *c = pb->b ? web_bosh_conn(pb->b) : NULL;
    if (d && c)
        c2s_stream_element(c, d->root);
    xml_doc_free(d);
}

static void pb_step_soon(struct prebind *pb)
{
    ev_timer_stop(c2s.loop, &pb->step);
    ev_timer_set(&pb->step, 0., 0.);
    ev_timer_start(c2s.loop, &pb->step);
}

static void pb_step_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct prebind *pb = w->data;
    struct c2s_conn *c = pb->b ? web_bosh_conn(pb->b) : NULL;
    if (pb->failed || !c) {
        pb_fail(pb, 503, "login-failed");
        return;
    }
    switch (pb->stage) {
    case PB_START:
        pb->stage = PB_AUTH;
        pb_feed(pb, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>");
        return;
    case PB_RESTART:
        if (c2s_stream_begin(c, pb->domain, "1.0", NULL) != SB_OK)
            return;                      /* closing: pb_closed follows */
        pb->stage = PB_BIND;
        pb_feed(pb, "<iq type='set' id='prebind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
        return;
    default:
        return;
    }
}

void web_prebind_event(void *obj, const char *data, size_t len)
{
    struct prebind *pb = obj;
    if (pb->stage == PB_AUTH && len > 8 && strncmp(data, "<success", 8) == 0) {
        pb->stage = PB_RESTART;
        pb_step_soon(pb);
    } else if (pb->stage == PB_AUTH && len > 8 && strncmp(data, "<failure", 8) == 0) {
        pb->failed = 1;
        pb_step_soon(pb);
    } else if (pb->stage == PB_BIND && len > 3 && strncmp(data, "<iq", 3) == 0) {
        char type[16];
        if (c2s_scan_attr(data, len, "type", type, sizeof type) >= 0 && strcmp(type, "result") == 0)
            pb_success(pb);              /* the conn is bound: c->jid is the full JID */
        else
            pb->failed = 1, pb_step_soon(pb);
    }
}

void web_prebind_closed(void *obj)
{
    struct prebind *pb = obj;
    pb->b = NULL;                        /* the BOSH session ends by itself */
    if (pb->stage != PB_DONE)
        pb_fail(pb, 503, "session-closed");
}

void web_prebind_gone(void *obj)
{
    struct prebind *pb = obj;
    pb->h = NULL;
    if (pb->stage != PB_DONE)
        pb_fail(pb, 503, "requester-gone");
}

static void pb_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    pb_fail(w->data, 504, "timeout");
}

/* The account exists: log it in without SASL (the secret vouched for it). */
static void pb_lookup_cb(PGresult *res, void *arg)
{
    struct prebind *pb = arg;
    pb->lookup_pending = 0;
    if (pb->stage == PB_DONE) {
        free(pb);
        return;
    }
    struct c2s_conn *c = pb->b ? web_bosh_conn(pb->b) : NULL;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || !c) {
        pb_fail(pb, 503, "database");
        return;
    }
    if (PQntuples(res) != 1) {
        pb_fail(pb, 404, "no-such-user");
        return;
    }
    char bare[JID_BARE_MAX + 1];
    snprintf(bare, sizeof bare, "%s@%s", pb->node, pb->domain);
    if (c2s_conn_set_jid(c, bare) != SB_OK) {
        pb_fail(pb, 503, "nomem");
        return;
    }
    log_info("authenticated", "peer=%s jid=%s via=prebind", c->peer, c->jid);
    c2s_conn_set_state(c, C2S_S_AUTHENTICATED);
    c2s_stream_restart(c);
    pb->stage = PB_RESTART;
    pb_step_soon(pb);
}

/* `jid=` from an application/x-www-form-urlencoded body or the query. */
static int pb_param(const char *src, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = src; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (strncmp(p, name, n) != 0 || p[n] != '=')
            continue;
        const char *v = p + n + 1;
        size_t o = 0;
        for (; *v && *v != '&'; v++) {
            char ch = *v;
            if (ch == '+')
                ch = ' ';
            else if (ch == '%' && v[1] && v[2]) {
                char hex[3] = {v[1], v[2], 0};
                ch = (char)strtol(hex, NULL, 16);
                v += 2;
            }
            if (o + 1 >= cap)
                return -1;
            out[o++] = ch;
        }
        out[o] = '\0';
        return 0;
    }
    return -1;
}

static int pb_authorized(const struct web_req *r)
{
    if (!*web_cfg.prebind_secret || strncmp(r->auth, "Bearer ", 7) != 0)
        return 0;
    return sb_secret_matches(web_cfg.prebind_digest, r->auth + 7, strlen(r->auth + 7));
}

void web_prebind_request(struct web_conn *h, struct web_req *r)
{
    char want[JID_BARE_MAX + 1], body[1024];
    if (!pb_authorized(r)) {
        log_warn("prebind_unauthorized", "peer=%s", web_http_peer(h));
        pb_reply(h, 401, "{\"error\":\"unauthorized\"}");
        return;
    }
    snprintf(body, sizeof body, "%.*s", (int)(r->body.len < 1023 ? r->body.len : 1023),
             r->body.data ? r->body.data : "");
    struct jid j;
    if ((pb_param(body, "jid", want, sizeof want) != 0 &&
         pb_param(r->query, "jid", want, sizeof want) != 0) ||
        jid_parse(&j, want) != SB_OK || *j.resource) {
        pb_reply(h, 400, "{\"error\":\"jid=DOMAIN or jid=USER@DOMAIN required\"}");
        return;
    }
    const char *dom = sb_domains_find(j.domain);
    int anon = dom && sb_domains_anonymous(dom);
    if (!dom || (anon != !*j.node)) {
        pb_reply(h, dom ? 400 : 404, dom ? "{\"error\":\"anonymous domains take jid=DOMAIN, "
                                            "others jid=USER@DOMAIN\"}"
                                          : "{\"error\":\"unknown domain\"}");
        return;
    }
    struct prebind *pb = calloc(1, sizeof *pb);
    if (!pb) {
        pb_reply(h, 503, "{\"error\":\"nomem\"}");
        return;
    }
    snprintf(pb->domain, sizeof pb->domain, "%s", dom);
    snprintf(pb->node, sizeof pb->node, "%s", j.node);
    pb->h = h;
    ev_init(&pb->step, pb_step_cb);
    pb->step.data = pb;
    ev_timer_init(&pb->deadline, pb_deadline_cb, PREBIND_TIMEOUT, 0.);
    pb->deadline.data = pb;
    ev_timer_start(c2s.loop, &pb->deadline);
    web_http_wait(h, WEB_WAIT_PREBIND, pb);
    pb->b = web_bosh_new_prebind(dom, web_http_peer(h), web_http_secure(h), pb);
    struct c2s_conn *c = pb->b ? web_bosh_conn(pb->b) : NULL;
    if (!c) {
        pb_fail(pb, 503, "session");
        return;
    }
    if (c2s_stream_begin(c, dom, "1.0", NULL) != SB_OK)
        return;                          /* closed: web_prebind_closed answered */
    if (anon) {
        pb->stage = PB_START;
        pb_step_soon(pb);
        return;
    }
    const char *params[2] = {pb->domain, pb->node};
    pb->stage = PB_LOOKUP;
    pb->lookup_pending = 1;
    if (pgev_query(c2s.pg, "SELECT 1 FROM users WHERE domain=$1 AND username=$2", 2, params,
                   pb_lookup_cb, pb) != SB_OK) {
        pb->lookup_pending = 0;
        pb_fail(pb, 503, "database");
    }
}
