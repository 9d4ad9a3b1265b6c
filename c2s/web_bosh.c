/* web_bosh.c — BOSH (XEP-0124) carrying an XMPP session (XEP-0206): the
 * BOSH session (sid, the rid window, held requests, cached responses for
 * resends, wait/hold/inactivity/pause/polling, acks, terminate) and the
 * BOSH transport of the c2s session core. A request's payloads go to the
 * core in rid order; what the core writes collects in `out` and leaves in
 * the response to the oldest held request, batched per loop iteration.
 *
 * Session creation runs c2s_stream_begin (checks, features); `xmpp:restart`
 * runs it again after SASL. Terminal conditions: item-not-found (unknown
 * sid, rid outside the window or a resend we no longer have), bad-request
 * (no/invalid rid, not a <body/>), host-unknown, policy-violation (pause over
 * maxpause, polling too fast), remote-stream-error (the core sent a stream
 * error, carried in the body). */
#include "web.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define BOSH_NS       "http://jabber.org/protocol/httpbind"
#define BOSH_XMPP_NS  "urn:xmpp:xbosh"
#define NS_STREAM     "http://etherx.jabber.org/streams"
#define BOSH_MAX_REQ  8          /* held requests and cached responses per session */
#define BOSH_CTYPE    "text/xml; charset=utf-8"

struct bosh_req {
    struct web_conn *h;          /* NULL: the connection went away */
    uint64_t rid;
    double until;                /* answer (empty) by then: wait */
    struct xml_doc *doc;         /* not yet processed (arrived out of order) */
};

struct bosh_cached {
    uint64_t rid;
    char *data;                  /* the whole <body/> we answered with */
    size_t len;
};

struct web_bosh {
    UT_hash_handle hh;
    char sid[33];
    struct c2s_conn *c;          /* NULL once the XMPP session is gone */
    void *prebind;               /* a pre-bind drives the login */
    uint64_t rid_next;           /* lowest rid not received yet */
    int wait, hold, requests, pause;
    unsigned ack : 1, terminated : 1, stream_error : 1, in_request : 1, dirty : 1,
             dead : 1, secure : 1, last_empty : 1;
    const char *term_cond;       /* condition of our terminate, or NULL */
    struct bosh_req held[BOSH_MAX_REQ];   /* ascending rid */
    int nheld;
    struct bosh_cached cache[BOSH_MAX_REQ];
    int ncache_next;
    struct sb_buf out;           /* elements for the next response */
    size_t out_counted;          /* out.cap as counted in sb_mem_owned */
    ev_timer timer;
    double idle_until;           /* inactivity deadline while nothing is held */
    double last_poll;
    struct web_bosh *dnext;      /* dirty list */
};

static struct web_bosh *bosh_sessions;   /* uthash by sid */
static struct web_bosh *bosh_dirty;
static ev_prepare bosh_prepare;
static struct sb_buf bosh_resp;

static void bosh_tp_open(struct c2s_conn *c, const char *from, const char *to);
static void bosh_tp_write(struct c2s_conn *c, const char *data, size_t len);
static void bosh_tp_end(struct c2s_conn *c);
static void bosh_tp_close(struct c2s_conn *c, enum c2s_state was);
static void bosh_tp_release(struct c2s_conn *c);

static const struct c2s_transport bosh_transport = {
    .name = "bosh",
    .framed = 0,                 /* the <body/> declares the stream: prefix */
    .starttls = 0,
    .open = bosh_tp_open,
    .write = bosh_tp_write,
    .end = bosh_tp_end,
    .close = bosh_tp_close,
    .release = bosh_tp_release,
};

/* ---- the session -------------------------------------------------------------- */

static void bosh_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void bosh_flush(struct web_bosh *b);

static void bosh_mark(struct web_bosh *b)
{
    if (b->dirty)
        return;
    b->dirty = 1;
    b->dnext = bosh_dirty;
    bosh_dirty = b;
}

static struct web_bosh *bosh_new(int secure)
{
    struct web_bosh *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    do
        sb_random_id(b->sid, 32);
    while (({ struct web_bosh *o; HASH_FIND_STR(bosh_sessions, b->sid, o); o != NULL; }));
    b->secure = secure != 0;
    b->wait = web_cfg.wait_max;
    b->hold = web_cfg.hold_max;
    b->requests = b->hold + 1;
    ev_init(&b->timer, bosh_timer_cb);
    b->timer.data = b;
    HASH_ADD_STR(bosh_sessions, sid, b);
    return b;
}

static void bosh_free(struct web_bosh *b)
{
    HASH_DEL(bosh_sessions, b);
    ev_timer_stop(c2s.loop, &b->timer);
    for (int i = 0; i < b->nheld; i++) {
        xml_doc_free(b->held[i].doc);
        if (b->held[i].h)
            web_http_wait(b->held[i].h, WEB_WAIT_NONE, NULL);
    }
    for (int i = 0; i < BOSH_MAX_REQ; i++)
        free(b->cache[i].data);
    sb_buf_free(&b->out);
    sb_mem_sync(&b->out_counted, 0);
    if (b->c) {
        b->c->tctx = NULL;
        c2s_conn_close(b->c, "bosh-gone");
    }
    free(b);
}

/* Freed from the prepare watcher, never under a caller's feet. */
static void bosh_kill(struct web_bosh *b)
{
    b->dead = 1;
    ev_timer_stop(c2s.loop, &b->timer);
    bosh_mark(b);
}

static void bosh_cache(struct web_bosh *b, uint64_t rid, const char *data, size_t len)
{
    struct bosh_cached *k = &b->cache[b->ncache_next];
    int keep = b->requests < BOSH_MAX_REQ ? b->requests : BOSH_MAX_REQ;
    b->ncache_next = (b->ncache_next + 1) % keep;
    free(k->data);
    k->data = malloc(len ? len : 1);
    k->rid = k->data ? rid : 0;
    k->len = k->data ? len : 0;
    if (k->data)
        memcpy(k->data, data, len);
}

static const struct bosh_cached *bosh_cached_find(const struct web_bosh *b, uint64_t rid)
{
    for (int i = 0; i < BOSH_MAX_REQ; i++)
        if (b->cache[i].data && b->cache[i].rid == rid)
            return &b->cache[i];
    return NULL;
}

/* The body of a response; `out` moves into it. */
static void bosh_body(struct web_bosh *b, struct sb_buf *r, uint64_t rid, int terminate)
{
    sb_buf_reset(r);
    sb_buf_adds(r, "<body xmlns='" BOSH_NS "' xmlns:stream='" NS_STREAM "'");
    if (terminate) {
        sb_buf_adds(r, " type='terminate'");
        if (b->term_cond)
            sb_buf_printf(r, " condition='%s'", b->term_cond);
    }
    if (b->ack && rid != b->rid_next - 1)
        sb_buf_printf(r, " ack='%" PRIu64 "'", b->rid_next - 1);
    if (!b->out.len) {
        sb_buf_adds(r, "/>");
        return;
    }
    sb_buf_adds(r, ">");
    sb_buf_add(r, b->out.data, b->out.len);
    sb_buf_adds(r, "</body>");
    sb_buf_free(&b->out);
    sb_mem_sync(&b->out_counted, 0);
}

/* A bare terminate for a request that has no session (or whose session dies). */
static void bosh_terminate_reply(struct web_conn *h, const char *cond)
{
    char body[192];
    int n = snprintf(body, sizeof body, "<body xmlns='" BOSH_NS "' type='terminate' "
                     "condition='%s'/>", cond);
    web_respond(h, 200, BOSH_CTYPE, body, (size_t)n, 1);
}

/* Answer held[i] now with what is in `out` and drop it from the list. */
static void bosh_answer(struct web_bosh *b, int i, int terminate)
{
    struct bosh_req q = b->held[i];
    memmove(&b->held[i], &b->held[i + 1], (size_t)(b->nheld - i - 1) * sizeof q);
    b->nheld--;
    if (q.doc) {                       /* never processed: nothing to say to it */
        xml_doc_free(q.doc);
        if (q.h)
            bosh_terminate_reply(q.h, b->term_cond ? b->term_cond : "item-not-found");
        return;
    }
    bosh_body(b, &bosh_resp, q.rid, terminate);
    if (!bosh_resp.data)
        return;
    bosh_cache(b, q.rid, bosh_resp.data, bosh_resp.len);
    b->last_empty = bosh_resp.len < 100;
    if (q.h)
        web_respond(q.h, 200, BOSH_CTYPE, bosh_resp.data, bosh_resp.len, 1);
}

static int bosh_nprocessed(const struct web_bosh *b)
{
    int n = 0;
    for (int i = 0; i < b->nheld; i++)
        n += b->held[i].doc == NULL;
    return n;
}

static int bosh_oldest_processed(const struct web_bosh *b)
{
    for (int i = 0; i < b->nheld; i++)
        if (!b->held[i].doc)
            return i;
    return -1;
}

static void bosh_arm(struct web_bosh *b)
{
    double now = ev_now(c2s.loop), next = 0;
    int any = 0;
    for (int i = 0; i < b->nheld; i++) {
        if (!b->held[i].doc && (!any || b->held[i].until < next)) {
            next = b->held[i].until;
            any = 1;
        }
    }
    if (!bosh_nprocessed(b) && !b->prebind) {
        if (b->idle_until <= 0)
            b->idle_until = now + (b->pause ? b->pause : web_cfg.inactivity);
        if (!any || b->idle_until < next)
            next = b->idle_until;
        any = 1;
    } else {
        b->idle_until = 0;
    }
    ev_timer_stop(c2s.loop, &b->timer);
    if (!any)
        return;
    ev_timer_set(&b->timer, next > now ? next - now : 0., 0.);
    ev_timer_start(c2s.loop, &b->timer);
}

/* Answer what must be answered: everything once terminated; else the
 * oldest held request when there is output, and any beyond `hold`. */
static void bosh_flush(struct web_bosh *b)
{
    if (b->in_request || b->dead)
        return;
    if (b->terminated) {
        int first = 1;
        while (b->nheld) {
            bosh_answer(b, 0, 1);
            if (first) {
                sb_buf_free(&b->out);
                sb_mem_sync(&b->out_counted, 0);
            }
            first = 0;
        }
        bosh_kill(b);
        return;
    }
    if (b->prebind)
        return;
    int i;
    while ((i = bosh_oldest_processed(b)) >= 0 && (b->out.len || bosh_nprocessed(b) > b->hold))
        bosh_answer(b, i, 0);
    bosh_arm(b);
}

static void bosh_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct web_bosh *b = w->data;
    double now = ev_now(loop);
    for (int i = 0; i < b->nheld;) {
        if (!b->held[i].doc && b->held[i].until <= now)
            bosh_answer(b, i, 0);        /* `wait` is over: empty answer */
        else
            i++;
    }
    if (!bosh_nprocessed(b) && b->idle_until > 0 && now >= b->idle_until) {
        log_info("bosh_inactive", "sid=%s jid=%s", b->sid, b->c && b->c->jid ? b->c->jid : "-");
        if (b->c)
            c2s_conn_close(b->c, "bosh-inactivity");
        else
            bosh_kill(b);
        return;
    }
    bosh_arm(b);
}

static void bosh_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    while (bosh_dirty) {
        struct web_bosh *b = bosh_dirty;
        bosh_dirty = b->dnext;
        b->dirty = 0;
        if (b->dead)
            bosh_free(b);
        else
            bosh_flush(b);
    }
}

/* ---- the transport ------------------------------------------------------------- */

static void bosh_tp_open(struct c2s_conn *c, const char *from, const char *to)
{
    /* The session attributes travel in the creation response instead. */
}

static void bosh_tp_write(struct c2s_conn *c, const char *data, size_t len)
{
    struct web_bosh *b = c->tctx;
    if (!b)
        return;
    if (b->prebind) {
        web_prebind_event(b->prebind, data, len);
        return;
    }
    if (len > 13 && strncmp(data, "<stream:error", 13) == 0)
        b->stream_error = 1;
    if (b->out.len + len > c2s.cfg.max_pending) {
        log_warn("slow_reader", "sid=%s jid=%s pending=%zu", b->sid, c->jid ? c->jid : "-",
                 b->out.len);
        b->term_cond = "policy-violation";
        c2s_conn_close(c, "slow-reader");
        return;
    }
    if (web_add_element(&b->out, data, len) != SB_OK) {
        c2s_conn_close(c, "nomem");
        return;
    }
    sb_mem_sync(&b->out_counted, b->out.cap);
    bosh_mark(b);
}

static void bosh_tp_end(struct c2s_conn *c)
{
    /* Our side of the stream ends with the terminate body (bosh_tp_close). */
}

static void bosh_tp_close(struct c2s_conn *c, enum c2s_state was)
{
    struct web_bosh *b = c->tctx;
    c->tctx = NULL;
    c2s_conn_free_soon(c);
    if (!b)
        return;
    b->c = NULL;
    b->terminated = 1;
    if (!b->term_cond && b->stream_error)
        b->term_cond = "remote-stream-error";
    if (b->prebind) {
        void *pb = b->prebind;
        b->prebind = NULL;
        web_prebind_closed(pb);
    }
    bosh_mark(b);
}

static void bosh_tp_release(struct c2s_conn *c)
{
    struct web_bosh *b = c->tctx;
    if (b)
        b->c = NULL;
}

/* ---- requests -------------------------------------------------------------------- */

/* The payloads of one request, in order. b stays allocated (in_request). */
static void bosh_process(struct web_bosh *b, const struct xml_node *body)
{
    const char *v;
    uint64_t ack;
    if (b->ack && web_bosh_rid(xml_attr(body, "ack"), &ack) == 0) {
        for (int i = 0; i < BOSH_MAX_REQ; i++)
            if (b->cache[i].data && b->cache[i].rid <= ack) {
                free(b->cache[i].data);
                b->cache[i].data = NULL;
            }
    }
    if ((v = xml_attr(body, "pause"))) {
        int p = web_bosh_int_attr(body, "pause", -1);
        if (p < 0 || p > web_cfg.maxpause) {
            b->term_cond = "policy-violation";
            if (b->c)
                c2s_conn_close(b->c, "bosh-pause-too-long");
            return;
        }
        b->pause = p;                    /* inactivity becomes `pause` until the next request */
        for (int i; (i = bosh_oldest_processed(b)) >= 0;)
            bosh_answer(b, i, 0);
        return;
    }
    b->pause = 0;
    v = xml_attr(body, "xmpp:restart");
    if (b->c && v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)) {
        const char *ver = xml_attr(body, "xmpp:version");
        if (c2s_stream_begin(b->c, xml_attr(body, "to"), ver ? ver : "1.0",
                             xml_attr(body, "from")) != SB_OK)
            return;
    }
    for (struct xml_node *n = xml_first_elem(body); n && b->c; n = xml_next_elem(n))
        c2s_stream_element(b->c, n);
    v = xml_attr(body, "type");
    if (v && strcmp(v, "terminate") == 0 && b->c)
        c2s_conn_close(b->c, "bosh-terminate");
}

/* Polling sessions (hold 0) may not send empty requests faster than `polling`. */
static int bosh_poll_too_fast(struct web_bosh *b, const struct xml_node *body)
{
    double now = ev_now(c2s.loop);
    int empty = !xml_first_elem(body) && !xml_attr(body, "type") && !xml_attr(body, "pause") &&
                !xml_attr(body, "xmpp:restart");
    int bad = b->hold == 0 && empty && b->last_empty && b->last_poll > 0 &&
              now - b->last_poll < web_cfg.polling;
    if (empty)
        b->last_poll = now;
    return bad;
}

/* Hold the request (rid order) and run every request now in sequence. */
static void bosh_accept(struct web_bosh *b, struct web_conn *h, uint64_t rid, struct xml_doc *d)
{
    if (b->nheld == BOSH_MAX_REQ) {
        int i = bosh_oldest_processed(b);
        if (i < 0) {
            xml_doc_free(d);
            bosh_terminate_reply(h, "policy-violation");
            return;
        }
        bosh_answer(b, i, 0);
    }
    int at = b->nheld;
    while (at > 0 && b->held[at - 1].rid > rid)
        at--;
    memmove(&b->held[at + 1], &b->held[at], (size_t)(b->nheld - at) * sizeof b->held[0]);
    b->held[at] = (struct bosh_req){h, rid, ev_now(c2s.loop) + b->wait, d};
    b->nheld++;
    web_http_wait(h, WEB_WAIT_BOSH, b);
    b->idle_until = 0;
    b->in_request = 1;
    for (int i = 0; i < b->nheld && !b->terminated; i++) {
        struct bosh_req *q = &b->held[i];
        if (!q->doc || q->rid != b->rid_next)
            continue;
        struct xml_doc *doc = q->doc;
        q->doc = NULL;
        q->until = ev_now(c2s.loop) + b->wait;
        b->rid_next++;
        if (bosh_poll_too_fast(b, doc->root)) {
            b->term_cond = "policy-violation";
            if (b->c)
                c2s_conn_close(b->c, "bosh-polling-too-fast");
        } else {
            bosh_process(b, doc->root);
        }
        xml_doc_free(doc);
        i = -1;                          /* a later one may be next now */
    }
    b->in_request = 0;
    bosh_flush(b);
}

/* A rid we already saw: the same answer again, or the session is over. */
static void bosh_resend(struct web_bosh *b, struct web_conn *h, uint64_t rid)
{
    for (int i = 0; i < b->nheld; i++) {
        if (b->held[i].rid == rid && !b->held[i].doc) {
            struct web_conn *old = b->held[i].h;   /* the client gave up on that one */
            b->held[i].h = h;
            web_http_wait(h, WEB_WAIT_BOSH, b);
            if (old && old != h) {
                web_http_wait(old, WEB_WAIT_NONE, NULL);
                web_http_close(old, "bosh-resent");
            }
            log_debug("bosh_rehold", "sid=%s rid=%" PRIu64, b->sid, rid);
            return;
        }
    }
    const struct bosh_cached *k = bosh_cached_find(b, rid);
    if (k) {
        log_info("bosh_resend", "sid=%s rid=%" PRIu64, b->sid, rid);
        web_respond(h, 200, BOSH_CTYPE, k->data, k->len, 1);
        return;
    }
    log_info("bosh_rid_unknown", "sid=%s rid=%" PRIu64 " next=%" PRIu64, b->sid, rid, b->rid_next);
    bosh_terminate_reply(h, "item-not-found");
    b->term_cond = "item-not-found";
    if (b->c)
        c2s_conn_close(b->c, "bosh-rid-unknown");
}

/* Strophe names the mechanism's domain with `to`; the session attributes
 * follow XEP-0124 §7 and XEP-0206 §4. */
static void bosh_create(struct web_conn *h, struct xml_doc *d, uint64_t rid)
{
    const struct xml_node *body = d->root;
    char prepared[JID_PART_MAX + 1];
    const char *to = xml_attr(body, "to");
    if (!to || jid_nameprep(to, prepared) != SB_OK || !sb_domains_find(prepared)) {
        log_info("bosh_host_unknown", "peer=%s to=%s", web_http_peer(h), sb_log_q(to ? to : ""));
        xml_doc_free(d);
        bosh_terminate_reply(h, "host-unknown");
        return;
    }
    struct web_bosh *b = bosh_new(web_http_secure(h));
    struct c2s_conn *c = b ? c2s_conn_new_session(&bosh_transport, b, web_http_peer(h),
                                                 web_http_secure(h), C2S_NEW_COUNTED) : NULL;
    if (!c) {
        if (b)
            bosh_free(b);
        xml_doc_free(d);
        bosh_terminate_reply(h, "internal-server-error");
        return;
    }
    b->c = c;
    int wait = web_bosh_int_attr(body, "wait", web_cfg.wait_max);
    int hold = web_bosh_int_attr(body, "hold", web_cfg.hold_max);
    b->wait = wait < web_cfg.wait_max ? wait : web_cfg.wait_max;
    b->hold = hold < web_cfg.hold_max ? hold : web_cfg.hold_max;
    b->requests = b->hold + 1;
    b->ack = xml_attr(body, "ack") && strcmp(xml_attr(body, "ack"), "1") == 0;
    b->rid_next = rid + 1;
    const char *ver = xml_attr(body, "xmpp:version");
    b->in_request = 1;
    sb_rc rc = c2s_stream_begin(c, to, ver ? ver : "1.0", xml_attr(body, "from"));
    b->in_request = 0;
    xml_doc_free(d);
    struct sb_buf *r = &bosh_resp;
    if (rc != SB_OK || b->terminated) {
        if (!b->term_cond)
            b->term_cond = "remote-stream-error";
        bosh_body(b, r, rid, 1);
        web_respond(h, 200, BOSH_CTYPE, r->data, r->len, 1);
        bosh_kill(b);
        return;
    }
    sb_buf_reset(r);
    sb_buf_printf(r, "<body xmlns='" BOSH_NS "' xmlns:xmpp='" BOSH_XMPP_NS "' xmlns:stream='"
                  NS_STREAM "' sid='%s' wait='%d' requests='%d' hold='%d' inactivity='%d' "
                  "polling='%d' maxpause='%d' ver='1.11' from='%s' authid='%s' secure='%s' "
                  "xmpp:version='1.0' xmpp:restartlogic='true'",
                  b->sid, b->wait, b->requests, b->hold, web_cfg.inactivity, web_cfg.polling,
                  web_cfg.maxpause, c->domain, c->sid, b->secure ? "true" : "false");
    if (b->ack)
        sb_buf_printf(r, " ack='%" PRIu64 "'", rid);
    sb_buf_adds(r, ">");
    sb_buf_add(r, b->out.data, b->out.len);
    sb_buf_adds(r, "</body>");
    sb_buf_free(&b->out);
    sb_mem_sync(&b->out_counted, 0);
    if (!r->data) {
        bosh_terminate_reply(h, "internal-server-error");
        c2s_conn_close(c, "nomem");
        return;
    }
    bosh_cache(b, rid, r->data, r->len);
    log_info("bosh_session", "sid=%s peer=%s domain=%s wait=%d hold=%d secure=%d", b->sid,
             web_http_peer(h), c->domain, b->wait, b->hold, b->secure);
    web_respond(h, 200, BOSH_CTYPE, r->data, r->len, 1);
    bosh_arm(b);
}

void web_bosh_request(struct web_conn *h, struct web_req *req)
{
    struct xml_limits lim = {web_cfg.max_body, c2s.cfg.limits.max_depth + 1};
    struct xml_doc *d = web_bosh_parse(req->body.data, req->body.len, &lim);
    if (!d) {
        log_info("bosh_bad_request", "peer=%s", web_http_peer(h));
        bosh_terminate_reply(h, "bad-request");
        return;
    }
    uint64_t rid;
    const char *sid = xml_attr(d->root, "sid");
    struct web_bosh *b = NULL;
    if (sid)
        HASH_FIND_STR(bosh_sessions, sid, b);
    if (sid && (!b || b->dead || b->prebind)) {
        xml_doc_free(d);
        bosh_terminate_reply(h, "item-not-found");
        return;
    }
    if (web_bosh_rid(xml_attr(d->root, "rid"), &rid) != 0) {
        xml_doc_free(d);
        bosh_terminate_reply(h, "bad-request");
        if (b) {
            b->term_cond = "bad-request";
            if (b->c)
                c2s_conn_close(b->c, "bosh-bad-rid");
        }
        return;
    }
    if (!b) {
        bosh_create(h, d, rid);
        return;
    }
    if (rid < b->rid_next) {
        xml_doc_free(d);
        bosh_resend(b, h, rid);
        return;
    }
    if (rid >= b->rid_next + (uint64_t)b->requests) {
        log_info("bosh_rid_window", "sid=%s rid=%" PRIu64 " next=%" PRIu64 " requests=%d",
                 b->sid, rid, b->rid_next, b->requests);
        xml_doc_free(d);
        bosh_terminate_reply(h, "item-not-found");
        b->term_cond = "item-not-found";
        if (b->c)
            c2s_conn_close(b->c, "bosh-rid-window");
        return;
    }
    for (int i = 0; i < b->nheld; i++) {
        if (b->held[i].rid == rid) {       /* the same rid twice before it ran */
            xml_doc_free(d);
            bosh_resend(b, h, rid);
            return;
        }
    }
    bosh_accept(b, h, rid, d);
}

void web_bosh_conn_gone(void *obj, struct web_conn *h)
{
    struct web_bosh *b = obj;
    for (int i = 0; i < b->nheld; i++) {
        if (b->held[i].h != h)
            continue;
        b->held[i].h = NULL;
        if (!b->held[i].doc) {
            /* Its answer is lost with the connection; a resend gets an
             * empty body and the payloads wait for the next request. */
            struct bosh_req q = b->held[i];
            memmove(&b->held[i], &b->held[i + 1], (size_t)(b->nheld - i - 1) * sizeof q);
            b->nheld--;
            static const char empty[] = "<body xmlns='" BOSH_NS "'/>";
            bosh_cache(b, q.rid, empty, sizeof empty - 1);
            bosh_mark(b);
        }
        return;
    }
}

/* ---- pre-bind ---------------------------------------------------------------------- */

struct web_bosh *web_bosh_new_prebind(const char *domain, const char *peer, int secure, void *pb)
{
    struct web_bosh *b = bosh_new(secure);
    if (!b)
        return NULL;
    /* Not counted per address: peer is the application server (pre-bind
     * is its secret's to ask for), not the user's browser. */
    struct c2s_conn *c = c2s_conn_new_session(&bosh_transport, b, peer, secure, C2S_NEW_TRUSTED);
    if (!c) {
        bosh_free(b);
        return NULL;
    }
    b->c = c;
    b->prebind = pb;
    uint64_t r;
    sb_random(&r, sizeof r);
    b->rid_next = (r % 4000000000ULL) + 1000;   /* the client goes on from here */
    return b;
}

struct c2s_conn *web_bosh_conn(struct web_bosh *b) { return b->c; }
const char *web_bosh_sid(const struct web_bosh *b) { return b->sid; }
uint64_t web_bosh_next_rid(const struct web_bosh *b) { return b->rid_next; }

void web_bosh_prebind_done(struct web_bosh *b, int ok)
{
    b->prebind = NULL;
    sb_buf_free(&b->out);
    sb_mem_sync(&b->out_counted, 0);
    if (!ok) {
        if (b->c)
            c2s_conn_close(b->c, "prebind-failed");
        else
            bosh_kill(b);
        return;
    }
    bosh_arm(b);                         /* the client must attach within `inactivity` */
}

/* ---- process ---------------------------------------------------------------------- */

void web_bosh_init(void)
{
    ev_prepare_init(&bosh_prepare, bosh_prepare_cb);
    ev_prepare_start(c2s.loop, &bosh_prepare);
    ev_unref(c2s.loop);                  /* the prepare watcher alone keeps nothing alive */
}

void web_bosh_free_all(void)
{
    struct web_bosh *b, *tmp;
    bosh_dirty = NULL;
    HASH_ITER(hh, bosh_sessions, b, tmp) {
        b->dirty = 0;
        bosh_free(b);
    }
    if (ev_is_active(&bosh_prepare)) {
        ev_ref(c2s.loop);
        ev_prepare_stop(c2s.loop, &bosh_prepare);
    }
    sb_buf_free(&bosh_resp);
}
