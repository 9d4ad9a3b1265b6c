/* sm.c — XEP-0198 stream management, the front-end's half. The client
 * speaks to us; what must survive us lives in the user's sm (sm/mod_sm.c):
 * the numbered queue of stanzas sent to the session and the count of
 * stanzas we received from it. So:
 *   <enable/>     asks the sm (sm-enable); <enabled/> when it answers
 *   stanzas out   arrive from the sm numbered (op "sm:N"): N is the h the
 *                 client will acknowledge; a stanza we answer ourselves goes
 *                 through the sm first (c2s_stanza_local), so every stanza
 *                 the client counts has the sm's number
 *   <r/>          answered here: <a h=stanzas received/>
 *   <a h/>        checked (never above what was sent) and passed on
 *                 (sm-ack), so the sm frees what the client has
 *   stanzas in    counted; the count goes to the sm at most once per loop
 *                 turn (sm-h), so a resumption elsewhere reports it exactly
 *   <resume/>     on a new authenticated stream, here or on any front-end:
 *                 sm-resume to the user's sm, which moves the session to this
 *                 stream and sends back everything unacknowledged
 *   a broken stream of a resumable session is reported as session-gone (the
 *   sm keeps the session `max` seconds); a clean </stream:stream> as end.
 * We also keep a copy of every numbered stanza we wrote until the client
 * acknowledges it, so the sm's queue is not the only one: when the user's
 * sm dies, the sm that owns the user next asks us (sm-query) and we hand it
 * the stream's state and the copies (sm-state); it adopts the session and
 * the stream goes on. From then on only its numbers are written here
 * (`owner`); a numbered stanza from another sm is handed back to the
 * user's sm (sm-replay) and its sender told sm-moved. A resumable stream
 * that breaks leaves its copies as a ghost (by sid), which also keeps what
 * the sm numbers for the detached session (sm-detached:N), so a detached
 * queue has two copies too.
 * We ask for acks after `sm_ack_every` unacknowledged stanzas, or when one
 * has waited `sm_ack_after` seconds; the keepalive ping of a managed TCP
 * session is an <r/>. BOSH is not offered stream management (XEP-0124
 * acknowledges requests already); WebSocket is. */
#include "c2s.h"
#include "jid.h"
#include "link.h"
#include "log.h"
#include "route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define NS_SM "urn:xmpp:sm:3"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define SM_TICK 1.0             /* how often waiting acks are looked at */

/* A stanza written to the client, not yet acknowledged by it. */
struct c2s_smcopy {
    struct c2s_smcopy *next;
    uint32_t seq;
    size_t len, flen;
    char data[];                    /* the stanza, then its from (envelope aux) */
};

/* What a managed stream's client has not acknowledged, and whose numbers. */
struct c2s_smcopies {
    char id[ENV_NAME_MAX + 1];      /* the resumption token, "" none */
    char owner[ENV_NAME_MAX + 1];   /* the sm whose numbers we take */
    long max;                       /* resumption time the sm gave, 0 unknown */
    struct c2s_smcopy *head, *tail; /* in order */
    long n;
    size_t bytes, counted;          /* counted: our share of sb_mem_owned */
};

struct c2s_smst {
    struct c2s_conn *c;
    struct c2s_smst *prev, *next;   /* every managed conn (ack timer) */
    struct c2s_smst *dnext;         /* owes the sm its sm-h, this turn */
    uint32_t in_h;                  /* stanzas received since <enable/> */
    uint32_t out;                   /* number of the last stanza written */
    uint32_t acked;                 /* the client's last h */
    uint32_t resume_h;              /* <resume h/> while it is asked */
    double unacked_since;           /* oldest unacknowledged, 0 none */
    unsigned enabled : 1, waiting : 1, resuming : 1, resumable : 1;
    unsigned r_out : 1, dirty : 1, clean : 1, taken : 1;
    unsigned orphan : 1;            /* we numbered one ourselves: no sm's numbers
                                       until one adopts the stream (sm-query) */
    char previd[ENV_NAME_MAX + 1];
    struct c2s_smcopies q;
};

/* A resumable stream that broke: what it had not acknowledged (and what
 * its sm numbered for it since) stays here until it is resumed or `max`
 * has passed, so it outlives its sm too. uthash by sid. */
struct c2s_smghost {
    UT_hash_handle hh;
    char sid[ENV_NAME_MAX + 1];
    char jid[JID_FULL_MAX + 1];
    uint32_t in_h, out, acked;
    struct c2s_smcopies q;
    ev_timer timer;
};

static struct c2s_smst *sm_all, *sm_dirty;
static struct c2s_smghost *sm_ghosts;
static ev_prepare sm_prepare;
static ev_timer sm_tick;
static char sm_bare[JID_BARE_MAX + 1];

int c2s_sm_enabled(const struct c2s_conn *c)
{
    return c->sm && c->sm->enabled;
}

int c2s_sm_offered(const struct c2s_conn *c)
{
    return strcmp(c->tp->name, "bosh") != 0;
}

static struct c2s_smst *sm_new(struct c2s_conn *c)
{
    struct c2s_smst *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->c = c;
    m->next = sm_all;
    if (sm_all)
        sm_all->prev = m;
    sm_all = m;
    c->sm = m;
    return m;
}

/* The client has everything up to h. */
static void sm_copies_trim(struct c2s_smcopies *q, uint32_t h)
{
    while (q->head && (int32_t)(q->head->seq - h) <= 0) {
        struct c2s_smcopy *e = q->head;
        q->head = e->next;
        q->n--;
        q->bytes -= sizeof *e + e->len + e->flen;
        free(e);
    }
    if (!q->head)
        q->tail = NULL;
    sb_mem_sync(&q->counted, q->bytes);
}

static void sm_copies_free(struct c2s_smcopies *q)
{
    for (struct c2s_smcopy *e = q->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    q->head = q->tail = NULL;
    q->n = 0;
    q->bytes = 0;
    sb_mem_sync(&q->counted, 0);
}

static void sm_ghost_free(struct c2s_smghost *g)
{
    HASH_DEL(sm_ghosts, g);
    ev_timer_stop(c2s.loop, &g->timer);
    sm_copies_free(&g->q);
    free(g);
}

static struct c2s_smghost *sm_ghost_find(const char *sid)
{
    struct c2s_smghost *g;
    HASH_FIND_STR(sm_ghosts, sid, g);
    return g;
}

static void sm_ghost_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct c2s_smghost *g = w->data;
    log_debug("sm_ghost_expired", "sid=%s copies=%ld", g->sid, g->q.n);
    sm_ghost_free(g);
}

/* The stream of c broke and its session is only detached (session-gone):
 * keep its copies as a ghost, `max` seconds and a little more. */
void c2s_sm_ghost(struct c2s_conn *c)
{
    struct c2s_smst *m = c->sm;
    if (!m || !m->enabled || !m->resumable || !*m->q.owner || !c->jid || sm_ghost_find(c->sid))
        return;
    struct c2s_smghost *g = calloc(1, sizeof *g);
    if (!g)
        return;
    snprintf(g->sid, sizeof g->sid, "%s", c->sid);
    snprintf(g->jid, sizeof g->jid, "%s", c->jid);
    g->in_h = m->in_h;
    g->out = m->out;
    g->acked = m->acked;
    g->q = m->q;                        /* the copies move over */
    if (m->orphan)
        g->q.owner[0] = '\001';         /* nobody's numbers until adopted */
    memset(&m->q, 0, sizeof m->q);
    HASH_ADD_STR(sm_ghosts, sid, g);
    ev_timer_init(&g->timer, sm_ghost_on_timer, (g->q.max > 0 ? g->q.max : 300) + 10., 0.);
    g->timer.data = g;
    ev_timer_start(c2s.loop, &g->timer);
}

void c2s_sm_free(struct c2s_conn *c)
{
    struct c2s_smst *m = c->sm;
    if (!m)
        return;
    sm_copies_free(&m->q);
    if (m->dirty)
        for (struct c2s_smst **pp = &sm_dirty; *pp; pp = &(*pp)->dnext)
            if (*pp == m) {
                *pp = m->dnext;
                break;
            }
    if (m->prev)
        m->prev->next = m->next;
    else
        sm_all = m->next;
    if (m->next)
        m->next->prev = m->prev;
    free(m);
    c->sm = NULL;
}

static const char *sm_bare_of(const struct c2s_conn *c)
{
    return c->jid && jid_bare_of(c->jid, sm_bare, sizeof sm_bare) >= 0 ? sm_bare : NULL;
}

/* What we answer an <enable/>/<resume/> with: asked inline in a SASL2
 * <authenticate/>, it goes into the <success/> (sasl2.c). */
void c2s_sm_say(struct c2s_conn *c, const char *xml)
{
    if (c->s2 && c2s_sasl2_sm_said(c, xml))
        return;
    c2s_conn_writes(c, xml);
}

static void sm_failed(struct c2s_conn *c, const char *cond, const char *h)
{
    char buf[256];
    snprintf(buf, sizeof buf, "<failed xmlns='" NS_SM "'%s%s%s><%s xmlns='" NS_STANZAS
             "'/></failed>", h ? " h='" : "", h ? h : "", h ? "'" : "", cond);
    log_info("sm_failed", "peer=%s sid=%s cond=%s", c->peer, c->sid, cond);
    c2s_sm_say(c, buf);
}

static void sm_request_ack(struct c2s_smst *m)
{
    m->r_out = 1;
    c2s_conn_writes(m->c, "<r xmlns='" NS_SM "'/>");
}

/* ---- elements from the client ------------------------------------------------ */

static void sm_enable(struct c2s_conn *c, struct xml_node *n)
{
    const char *resume = xml_attr(n, "resume"), *max = xml_attr(n, "max");
    c2s_sm_enable(c, resume && (!strcmp(resume, "true") || !strcmp(resume, "1")),
                  max ? strtol(max, NULL, 10) : 0);
}

void c2s_sm_enable(struct c2s_conn *c, int resume, long max)
{
    const char *bare = sm_bare_of(c);
    if (c->state != C2S_S_BOUND || c->sm || !c2s_sm_offered(c) || !bare) {
        sm_failed(c, "unexpected-request", NULL);
        return;
    }
    char body[48];
    snprintf(body, sizeof body, "resume=%d max=%ld", resume, max);
    struct c2s_smst *m = sm_new(c);
    if (!m || c2s_route_control_body("sm-enable", bare, c->sid, c->jid, body) != SB_OK) {
        c2s_sm_free(c);
        sm_failed(c, "resource-constraint", NULL);
        return;
    }
    m->waiting = 1;             /* stanzas from now on count */
}

static void sm_resume(struct c2s_conn *c, struct xml_node *n)
{
    c2s_sm_resume(c, xml_attr(n, "previd"), xml_attr(n, "h"));
}

void c2s_sm_resume(struct c2s_conn *c, const char *previd, const char *h)
{
    const char *bare = sm_bare_of(c);
    if (c->state != C2S_S_AUTHENTICATED || c->sm || (c->flags & C2S_F_BIND_WAIT) ||
        !c2s_sm_offered(c) || !bare) {
        sm_failed(c, "unexpected-request", NULL);
        return;
    }
    if (!previd || !*previd || strlen(previd) > ENV_NAME_MAX || strchr(previd, ' ') || !h ||
        strspn(h, "0123456789") != strlen(h) || !*h) {
        sm_failed(c, "bad-request", NULL);
        return;
    }
    struct c2s_smst *m = sm_new(c);
    char aux[ENV_NAME_MAX + 16];
    if (!m) {
        sm_failed(c, "resource-constraint", NULL);
        return;
    }
    m->resume_h = (uint32_t)strtoul(h, NULL, 10);
    snprintf(m->previd, sizeof m->previd, "%s", previd);
    snprintf(aux, sizeof aux, "%s %u", previd, m->resume_h);
    m->resuming = 1;
    c2s_table_add(c);
    if (c2s_route_control("sm-resume", bare, c->sid, aux) != SB_OK) {
        c2s_table_del(c);
        c2s_sm_free(c);
        sm_failed(c, "resource-constraint", NULL);
        return;
    }
    c->flags |= C2S_F_BIND_WAIT;        /* bind_iq NULL: the resume deadline */
    c->bind_deadline = ev_now(c2s.loop) + c2s.cfg.bind_timeout;
    c2s_conn_arm_timer(c);
}

static void sm_ack_in(struct c2s_conn *c, struct xml_node *n)
{
    struct c2s_smst *m = c->sm;
    const char *hs = xml_attr(n, "h");
    if (!m || !m->enabled)
        return;                 /* an <a/> we never asked for: nothing to do */
    uint32_t h = hs ? (uint32_t)strtoul(hs, NULL, 10) : 0;
    if (!hs || (uint32_t)(h - m->acked) > (uint32_t)(m->out - m->acked)) {
        log_info("sm_bad_ack", "peer=%s sid=%s h=%s sent=%u", c->peer, c->sid,
                 sb_log_q(hs ? hs : "-"), m->out);
        /* XEP-0198 §6: undefined-condition with <handled-count-too-high/>;
         * h as we parsed it (a number), never the client's bytes. */
        char app[160];
        snprintf(app, sizeof app, "<handled-count-too-high xmlns='" NS_SM "' h='%u' "
                 "send-count='%u'/>", h, m->out);
        c2s_stream_error_full(c, "undefined-condition", NULL, NULL, app, "sm-bad-ack");
        return;
    }
    m->r_out = 0;
    if (h == m->acked)
        return;
    m->acked = h;
    sm_copies_trim(&m->q, h);
    m->unacked_since = h == m->out ? 0 : ev_now(c2s.loop);
    char aux[16];
    snprintf(aux, sizeof aux, "%u", h);
    const char *bare = sm_bare_of(c);
    if (bare)
        c2s_route_control("sm-ack", bare, c->sid, aux);
}

int c2s_sm_element(struct c2s_conn *c, struct xml_node *n)
{
    const char *ns = xml_attr(n, "xmlns");
    if (!ns || strcmp(ns, NS_SM) != 0)
        return 0;
    if (!strcmp(n->name, "r")) {
        if (!c->sm || (!c->sm->enabled && !c->sm->waiting)) {
            sm_failed(c, "unexpected-request", NULL);
            return 1;
        }
        char buf[64];
        snprintf(buf, sizeof buf, "<a xmlns='" NS_SM "' h='%u'/>", c->sm->in_h);
        c2s_conn_writes(c, buf);
    } else if (!strcmp(n->name, "a")) {
        sm_ack_in(c, n);
    } else if (!strcmp(n->name, "enable")) {
        sm_enable(c, n);
    } else if (!strcmp(n->name, "resume")) {
        sm_resume(c, n);
    } else {
        c2s_stream_error(c, "unsupported-stanza-type", n->name);
    }
    return 1;
}

/* ---- counting --------------------------------------------------------------------- */

void c2s_sm_stanza_in(struct c2s_conn *c)
{
    struct c2s_smst *m = c->sm;
    if (!m || (!m->enabled && !m->waiting))
        return;
    m->in_h++;
    if (!m->dirty) {
        m->dirty = 1;
        m->dnext = sm_dirty;
        sm_dirty = m;
    }
}

/* Before the loop sleeps: one sm-h per session that received stanzas. */
static void sm_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    while (sm_dirty) {
        struct c2s_smst *m = sm_dirty;
        sm_dirty = m->dnext;
        m->dirty = 0;
        const char *bare = sm_bare_of(m->c);
        char aux[16];
        snprintf(aux, sizeof aux, "%u", m->in_h);
        if (bare && m->c->state == C2S_S_BOUND)
            c2s_route_control("sm-h", bare, m->c->sid, aux);
    }
}

int c2s_sm_foreign(const struct c2s_conn *c, const struct env_hdr *h)
{
    const struct c2s_smst *m = c->sm;
    return m && m->enabled && !strncmp(h->op, "sm:", 3) &&
           (m->orphan || (*m->q.owner && strcmp(h->sender, m->q.owner) != 0));
}

static void sm_copy_keep(struct c2s_smcopies *q, uint32_t seq, const char *from,
                         const char *body, size_t len);

/* One of our own answers to the client (c2s_stanza_local) came back from
 * the router: the user's sm, which numbers them, is unreachable (dead, its
 * lease still running). Number it here, after the last one written, write
 * it and keep its copy; its sm has lost count, so until an sm adopts the
 * stream again (sm-query, which gets this copy too) no sm's number is
 * written (c2s_sm_foreign: each such stanza goes back to the user's sm,
 * which is told sm-moved and adopts the stream anew). */
void c2s_sm_write_local(struct c2s_conn *c, const char *body, size_t len)
{
    struct c2s_smst *m = c->sm;
    m->out++;
    c2s_conn_write(c, body, len);
    sm_copy_keep(&m->q, m->out, c->domain ? c->domain : "", body, len);
    if (!m->orphan)
        log_info("sm_local_numbered", "sid=%s jid=%s seq=%u owner=%s", c->sid, c->jid, m->out,
                 *m->q.owner ? m->q.owner : "-");
    m->orphan = 1;
    if (!m->unacked_since)
        m->unacked_since = ev_now(c2s.loop);
    if (!m->r_out && (uint32_t)(m->out - m->acked) >= (uint32_t)c2s.cfg.sm_ack_every)
        sm_request_ack(m);
}

static void sm_copy_keep(struct c2s_smcopies *q, uint32_t seq, const char *from,
                         const char *body, size_t len)
{
    size_t flen = strlen(from);
    struct c2s_smcopy *e = malloc(sizeof *e + len + flen);
    if (!e) {
        log_error("sm_copy_nomem", "seq=%u", seq);
        return;             /* the sm's queue still has it */
    }
    e->next = NULL;
    e->seq = seq;
    e->len = len;
    e->flen = flen;
    memcpy(e->data, body, len);
    memcpy(e->data + len, from, flen);
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    q->n++;
    q->bytes += sizeof *e + len + flen;
    sb_mem_sync(&q->counted, q->bytes);
}

/* A stanza numbered for a stream that is no longer open here (op sm:N
 * arriving after the close, or sm-detached:N: numbered while the session
 * is detached): kept in the stream's ghost, never written. 1 when there
 * is a ghost (handled), 0 when not. One from an sm that is not the
 * ghost's owner is foreign (c2s_sm_foreign): *foreign set, not kept. */
int c2s_sm_ghost_keep(const struct env_hdr *h, const char *body, size_t len, int *foreign)
{
    struct c2s_smghost *g = sm_ghost_find(h->sid);
    const char *num = strchr(h->op, ':');
    *foreign = 0;
    if (!g || !num)
        return 0;
    if (strcmp(h->sender, g->q.owner)) {
        *foreign = 1;
        return 1;
    }
    uint32_t seq = (uint32_t)strtoul(num + 1, NULL, 10);
    if (seq != g->out + 1)
        log_warn("sm_out_of_order", "sid=%s seq=%u expected=%u ghost=1", g->sid, seq, g->out + 1);
    if ((int32_t)(seq - g->out) > 0) {
        g->out = seq;
        sm_copy_keep(&g->q, seq, h->aux, body, len);
    }
    return 1;
}

const char *c2s_sm_ghost_jid(const char *sid)
{
    struct c2s_smghost *g = sm_ghost_find(sid);
    return g ? g->jid : NULL;
}

void c2s_sm_stanza_out(struct c2s_conn *c, const struct env_hdr *h, const char *body,
                       size_t len)
{
    struct c2s_smst *m = c->sm;
    const char *op = h->op;
    if (!m || !m->enabled || strncmp(op, "sm:", 3) != 0)
        return;
    uint32_t seq = (uint32_t)strtoul(op + 3, NULL, 10);
    sm_copy_keep(&m->q, seq, h->aux, body, len);
    if (seq != m->out + 1)
        log_warn("sm_out_of_order", "sid=%s seq=%u expected=%u", c->sid, seq, m->out + 1);
    if ((int32_t)(seq - m->out) > 0)
        m->out = seq;
    if (!m->unacked_since)
        m->unacked_since = ev_now(c2s.loop);
    if (!m->r_out && (uint32_t)(m->out - m->acked) >= (uint32_t)c2s.cfg.sm_ack_every)
        sm_request_ack(m);
}

/* Unacknowledged for sm_ack_after seconds and not asked yet: ask. */
static void sm_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    double now = ev_now(loop), after = c2s.cfg.sm_ack_after;
    if (after <= 0)
        return;
    for (struct c2s_smst *m = sm_all; m; m = m->next)
        if (m->enabled && !m->r_out && m->unacked_since && now - m->unacked_since >= after &&
            m->c->state == C2S_S_BOUND)
            sm_request_ack(m);
}

/* ---- controls from the sm ----------------------------------------------------------- */

/* The value of `key` in a control body `k=v k=v` ("" when absent). */
static void sm_body_value(const char *body, size_t len, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key), i = 0;
    out[0] = '\0';
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != ' ')
            end++;
        if (end - i > kl && !strncmp(body + i, key, kl) && body[i + kl] == '=') {
            size_t n = end - i - kl - 1;
            if (n < cap) {
                memcpy(out, body + i + kl + 1, n);
                out[n] = '\0';
            }
            return;
        }
        i = end + 1;
    }
}

/* sm-query from the sm that owns the user now (its predecessor is gone):
 * our state of the stream and the copies the client has not acknowledged,
 * as control sm-state (aux the token; body `max= in= out= acked=
 * detached=`, then per copy a line `seq fromlen len` and those bytes).
 * From now on only that sm's numbers are taken. A stream we do not hold
 * (open or as a ghost) answers `gone`. */
static sb_rc sm_state_send(const char *bare, const char *sid, struct c2s_smcopies *q,
                           uint32_t in, uint32_t out, uint32_t acked, int detached)
{
    struct sb_buf b = SB_BUF_INIT;
    char line[128];
    int n = snprintf(line, sizeof line, "max=%ld in=%u out=%u acked=%u detached=%d\n", q->max,
                     in, out, acked, detached);
    sb_rc rc = sb_buf_add(&b, line, (size_t)n);
    for (const struct c2s_smcopy *e = q->head; e && rc == SB_OK; e = e->next) {
        n = snprintf(line, sizeof line, "%u %zu %zu\n", e->seq, e->flen, e->len);
        if ((rc = sb_buf_add(&b, line, (size_t)n)) == SB_OK &&
            (rc = sb_buf_add(&b, e->data + e->len, e->flen)) == SB_OK)
            rc = sb_buf_add(&b, e->data, e->len);
    }
    if (rc == SB_OK)
        rc = c2s_route_control_data("sm-state", bare, sid, q->id, b.data, b.len);
    sb_buf_free(&b);
    return rc;
}

static void sm_query(struct c2s_conn *c, const struct env_hdr *h)
{
    struct c2s_smst *m = c ? c->sm : NULL;
    struct c2s_smghost *g = c ? NULL : sm_ghost_find(h->sid);
    char bare[JID_BARE_MAX + 1];
    struct c2s_smcopies *q = m ? &m->q : g ? &g->q : NULL;
    if (jid_bare_of(h->aux, bare, sizeof bare) < 0)
        return;
    const char *why;
    const struct rt_inst *own = rt_route_jid(link_members(c2s.link), bare, strlen(bare), 0, &why);
    if (q && own && strcmp(own->name, h->sender)) {
        /* An sm that does not own the user (by the cluster's routing) asks:
         * one thawed past its lease serving what waited in its socket. Not
         * ours to hand over; it passes what it holds on to the owner. */
        c2s_route_control_to(h->sender, "sm-elsewhere", h->sid, h->aux);
        log_info("sm_query_elsewhere", "sid=%s sender=%s owner=%s", h->sid, h->sender, own->name);
        return;
    }
    if (!q || (m && (!m->enabled || m->taken || c->state != C2S_S_BOUND))) {
        c2s_route_control_body("sm-state", bare, h->sid, "", "gone");
        log_info("sm_query_gone", "sid=%s sender=%s", h->sid, h->sender);
        return;
    }
    sb_rc rc = m ? sm_state_send(bare, h->sid, q, m->in_h, m->out, m->acked, 0)
                 : sm_state_send(bare, h->sid, q, g->in_h, g->out, g->acked, 1);
    if (rc != SB_OK) {
        log_warn("sm_state_send_failed", "sid=%s", h->sid);
        return;
    }
    log_info("sm_state_handed", "sid=%s jid=%s from=%s to=%s copies=%ld detached=%d", h->sid,
             sb_log_q(h->aux), *q->owner ? q->owner : "-", h->sender, q->n, g != NULL);
    snprintf(q->owner, sizeof q->owner, "%s", h->sender);
    if (m)
        m->orphan = 0;
}

int c2s_sm_control(const struct env_hdr *h, const char *body, size_t len)
{
    if (strncmp(h->op, "sm-", 3) != 0)
        return 0;
    struct c2s_conn *c = c2s_table_find(h->sid);
    struct c2s_smst *m = c ? c->sm : NULL;
    char hv[16], buf[ENV_NAME_MAX + 128];
    if (!strcmp(h->op, "sm-takeover")) {
        struct c2s_smghost *g = c ? NULL : sm_ghost_find(h->sid);
        if (g)
            sm_ghost_free(g);       /* resumed: its copies are in the sm's queue */
        if (c && c->state == C2S_S_BOUND) {
            if (m)
                m->taken = 1;
            c2s_stream_error(c, "conflict", "resumed-elsewhere");
        }
        return 1;
    }
    if (!strcmp(h->op, "sm-query")) {
        sm_query(c && c->state != C2S_S_CLOSING ? c : NULL, h);
        return 1;
    }
    if (!m || c->state == C2S_S_CLOSING) {
        log_info("sm_answer_late", "op=%s sid=%s", h->op, h->sid);
        return 1;
    }
    if (!strcmp(h->op, "sm-enabled") && m->waiting) {
        char max[16];
        sm_body_value(body, len, "max", max, sizeof max);
        m->waiting = 0;
        m->enabled = 1;
        m->resumable = *h->aux && strlen(h->aux) <= ENV_NAME_MAX &&
                       strspn(h->aux, "abcdefghijklmnopqrstuvwxyz0123456789") == strlen(h->aux);
        if (m->resumable)
            snprintf(m->q.id, sizeof m->q.id, "%.63s", h->aux);
        snprintf(m->q.owner, sizeof m->q.owner, "%s", h->sender);
        m->q.max = strtol(max, NULL, 10);
        if (m->resumable)
            snprintf(buf, sizeof buf, "<enabled xmlns='" NS_SM "' id='%.63s' resume='true' max='%s'/>",
                     h->aux, *max ? max : "300");
        else
            snprintf(buf, sizeof buf, "<enabled xmlns='" NS_SM "'/>");
        c2s_sm_say(c, buf);
        log_info("sm_enabled", "peer=%s sid=%s jid=%s resumable=%d", c->peer, c->sid, c->jid,
                 m->resumable);
    } else if (!strcmp(h->op, "sm-resumed") && m->resuming) {
        sm_body_value(body, len, "h", hv, sizeof hv);
        c->flags &= ~C2S_F_BIND_WAIT;
        if (c2s_conn_set_jid(c, h->aux) != SB_OK) {
            c2s_stream_error(c, "internal-server-error", "nomem");
            return 1;
        }
        m->resuming = 0;
        m->enabled = m->resumable = 1;
        m->in_h = (uint32_t)strtoul(hv, NULL, 10);
        m->out = m->acked = m->resume_h;
        snprintf(m->q.id, sizeof m->q.id, "%s", m->previd);
        snprintf(m->q.owner, sizeof m->q.owner, "%s", h->sender);
        sm_body_value(body, len, "max", hv, sizeof hv);
        m->q.max = strtol(hv, NULL, 10);
        snprintf(buf, sizeof buf, "<resumed xmlns='" NS_SM "' previd='%s' h='%u'/>", m->previd,
                 m->in_h);
        c2s_conn_set_state(c, C2S_S_BOUND);
        c2s_conn_arm_timer(c);
        c2s_sm_say(c, buf);
        log_info("sm_resumed", "peer=%s sid=%s jid=%s h=%u", c->peer, c->sid, c->jid, m->in_h);
        c2s_csi_bound(c);           /* the sm restarted it active (XEP-0352 §5) */
    } else if (!strcmp(h->op, "sm-failed") && (m->waiting || m->resuming)) {
        sm_body_value(body, len, "h", hv, sizeof hv);
        if (m->resuming) {
            c->flags &= ~C2S_F_BIND_WAIT;
            c2s_table_del(c);
            c2s_conn_arm_timer(c);
        }
        c2s_sm_free(c);
        const char *cond = h->aux;
        if (!*cond || strspn(cond, "abcdefghijklmnopqrstuvwxyz-") != strlen(cond))
            cond = "internal-server-error";
        sm_failed(c, cond, *hv ? hv : NULL);
    }
    return 1;
}

/* ---- what c2s says itself ------------------------------------------------------------ */

void c2s_stanza_local(struct c2s_conn *c, const char *data, size_t len)
{
    struct c2s_smst *m = c->sm;
    const char *bare = m && (m->enabled || m->waiting) && c->state == C2S_S_BOUND
                       ? sm_bare_of(c) : NULL;
    if (bare && c2s_route_send_stanza("sm-local", bare, c->sid, c->domain ? c->domain : "",
                                      data, len) == SB_OK)
        return;
    c2s_conn_write(c, data, len);
}

void c2s_sm_closed_by_client(struct c2s_conn *c)
{
    if (c->sm)
        c->sm->clean = 1;
}

const char *c2s_sm_end_op(struct c2s_conn *c, char *body, size_t cap)
{
    struct c2s_smst *m = c->sm;
    if (!m)
        return "end";
    if (m->taken)
        return NULL;            /* the session lives on another stream now */
    snprintf(body, cap, "h=%u", m->in_h);
    return m->enabled && m->resumable && !m->clean ? "session-gone" : "end";
}

void c2s_sm_init(void)
{
    ev_prepare_init(&sm_prepare, sm_on_prepare);
    ev_set_priority(&sm_prepare, EV_MAXPRI);    /* before the link flushes */
    ev_prepare_start(c2s.loop, &sm_prepare);
    ev_timer_init(&sm_tick, sm_on_tick, SM_TICK, SM_TICK);
    ev_timer_start(c2s.loop, &sm_tick);
}

void c2s_sm_stop(void)
{
    while (sm_ghosts)
        sm_ghost_free(sm_ghosts);
    ev_prepare_stop(c2s.loop, &sm_prepare);
    ev_timer_stop(c2s.loop, &sm_tick);
}
