/* chaos.c — the chaos scenario: K users chat at a fixed total rate (user i
 * to user i+1, as in msg) while something outside — tests/bench/bench.py —
 * kills and restarts routers, sms and front-ends. Every message is
 * accounted for at the end, after a drain:
 *   delivered             reached its recipient, live or from offline
 *                         storage after the recipient logged in again
 *   bounced_error         not delivered, and its sender got a
 *                         <message type='error'> for it (matched by id m<seq>)
 *   lost_with_connection  neither, and the sender's connection died after
 *                         sending it (the server may never have read it)
 *   lost                  neither, and the sender's connection stayed up:
 *                         the server accepted it and said nothing
 * A connection that ends (EOF, reset, stream error) logs in again on the
 * next port — its front-end may be the one that died — with back-off and a
 * bound on attempts. The JSON line also has a per-second timeline so the
 * caller can line losses and drops up with its kills.
 *
 * With --sm every client is a XEP-0198 client, and "accepted" means
 * acknowledged: each keeps the messages the server has not acknowledged
 * (<a h/>), resumes after a drop (<resume previd h/>, on the next port)
 * and re-sends what <resumed h/> says the server lacks; when resumption
 * fails (<failed/>) it binds anew and re-sends everything unacknowledged
 * (XEP-0198 §5: duplicates are then possible, and counted). Then
 *   lost                  acknowledged by the server, never delivered nor
 *                         bounced, nor — with --check — given by offline
 *                         storage at a fresh login of the recipient or
 *                         found in the recipient's archive (MAM)
 *   unacked_at_end        never acknowledged (the sender still holds it)
 * Delivery stalls: every message's latency is kept (first send → first
 * delivery) and the timeline has, per send second, the largest one, and
 * per second the longest gap between two deliveries cluster-wide that
 * began in it. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sbbench.h"

/* ---- what is known about each message and user ---------------------------- */

enum {
    CH_DELIVERED = 1,
    CH_BOUNCED = 2,
    CH_RCPT_OFFLINE = 4,    /* the recipient had no connection when it was sent */
    CH_ACKED = 8,           /* XEP-0198: the server said it has it */
    CH_ARCHIVED = 16,       /* --check: found in the recipient's archive */
    CH_AT_CHECK = 32,       /* --check: delivered by the fresh login of the check */
};

struct ch_msg {
    double t;               /* first sent (monotonic), also in its body */
    float lat;              /* first send → first delivery */
    uint32_t sgen, rgen;    /* sender's / recipient's connection generation at send */
    uint32_t sec;           /* timeline second it was sent in */
    uint8_t flags;
};

/* XEP-0198: a message sent and not yet acknowledged, by stanza number. */
struct ch_unacked {
    uint32_t num, seq;
};

struct ch_user {
    struct sbb_conn *c;     /* NULL while waiting to log in again */
    int online;
    uint32_t gen;           /* +1 whenever one of its connections ends */
    uint32_t tx_seq;        /* next sequence number it sends */
    uint32_t rx_next;       /* next sequence number expected from its sender */
    struct ch_msg *msgs;    /* by sequence number */
    size_t cap;
    int port_ix, attempts;
    double retry_at;        /* > 0: log in at that time */
    double dropped_at;      /* when its last online connection ended */
    /* XEP-0198 */
    struct ch_unacked *uq;  /* [uq_head, uq_len): unacknowledged, in order */
    size_t uq_head, uq_len, uq_cap;
    char sm_id[64];         /* the session to resume */
    uint32_t sm_h;          /* what we had received of it */
    uint8_t resumable;
    /* --check */
    uint8_t checking, mam_done;
    char mam_after[96];
    int mam_page;
};

/* One named counter (error conditions, reasons connections ended). */
#define CH_NAMES 16
struct ch_count {
    char name[48];
    long n;
};

struct ch_sec {
    long sent, delivered, bounced, lost, lost_conn, drops, relogins, online;
    double max_lat, max_gap;    /* by send second / by the second the gap began */
};

static const struct sbb_chaos_cfg *cfg;
static struct ch_user *users;
static char **to_jid;
static struct ch_sec *tl;
static int ntl;
static double t0;                    /* start of sending; timeline second 0 */
static int sending, inflight;
static long sent, pending, duplicates, reordered, from_offline, skipped;
static long drops, relogins, attempts_failed, gave_up;
static long resumed, resume_failed, resent, at_check, mam_found, mam_queries, mam_failed;
static double t_start, last_delivery, max_gap;
static time_t wall_start;
static int checking;
static long err_delivered, err_twice, err_unmatched;   /* errors that bounce nothing new */
static struct sbb_hist lat, relogin_lat;
static struct ch_count conds[CH_NAMES], reasons[CH_NAMES];
static ev_timer ch_tick;
static int rr;

static void count_name(struct ch_count *t, const char *name)
{
    for (int i = 0; i < CH_NAMES; i++) {
        if (!t[i].name[0])
            snprintf(t[i].name, sizeof(t[i].name), "%s", name);
        if (strcmp(t[i].name, name) == 0) {
            t[i].n++;
            return;
        }
    }
}

static struct ch_sec *sec_now(void)
{
    static struct ch_sec spare;
    int s = (int)(sbb_now() - t0);
    if (!sending && t0 == 0)
        return &spare;               /* before the timeline starts */
    return s >= 0 && s < ntl ? &tl[s] : &spare;
}

static int user_of(const struct sbb_conn *c)
{
    return c->slot;
}

/* ---- logging in and again ---------------------------------------------------- */

static double backoff(int attempt)
{
    double d = 0.1;
    for (int i = 0; i < attempt && d < 2.0; i++)
        d *= 2;
    if (d > 2.0)
        d = 2.0;
    return d * (0.5 + 0.5 * drand48());    /* spread a herd of re-logins */
}

/* A login attempt ended without reaching online. */
static void login_retry(struct ch_user *u)
{
    attempts_failed++;
    u->port_ix++;                    /* its front-end may be the dead one */
    if (++u->attempts >= cfg->max_attempts) {
        gave_up++;
        return;
    }
    u->retry_at = sbb_now() + backoff(u->attempts);
}

static void login_start(int i)
{
    struct ch_user *u = &users[i];
    u->retry_at = 0;
    u->c = sbb_conn_start_on(sbb_opt.first + i, u->port_ix);
    if (!u->c) {
        count_name(reasons, "connect-now");
        login_retry(u);
        return;
    }
    u->c->slot = i;
    if (checking)
        u->c->sm_want = 0;           /* the check's fresh logins: plain sessions */
    else if (sbb_opt.sm && u->resumable) {
        u->c->sm_want = 0;
        u->c->resume = 1;
        u->c->resume_h = u->sm_h;
        snprintf(u->c->sm_id, sizeof(u->c->sm_id), "%s", u->sm_id);
    }
    inflight++;
}

/* ---- XEP-0198: what the server has, and re-sending the rest ---------------- */

static int msg_text(int i, uint32_t seq, double t, char *msg, size_t cap);

static void uq_push(struct ch_user *u, uint32_t num, uint32_t seq)
{
    if (u->uq_head == u->uq_len)
        u->uq_head = u->uq_len = 0;
    if (u->uq_len == u->uq_cap) {
        if (u->uq_head > 0) {        /* room at the front: compact */
            memmove(u->uq, u->uq + u->uq_head, (u->uq_len - u->uq_head) * sizeof(*u->uq));
            u->uq_len -= u->uq_head;
            u->uq_head = 0;
        } else {
            size_t cap = u->uq_cap ? u->uq_cap * 2 : 32;
            struct ch_unacked *q = realloc(u->uq, cap * sizeof(*q));
            if (!q) {
                fprintf(stderr, "sbbench: out of memory\n");
                exit(2);
            }
            u->uq = q;
            u->uq_cap = cap;
        }
    }
    u->uq[u->uq_len++] = (struct ch_unacked){num, seq};
}

/* The server has handled h stanzas of this session (mod 2^32). */
static void ch_acked(struct sbb_conn *c, uint32_t h)
{
    struct ch_user *u = &users[user_of(c)];
    while (u->uq_head < u->uq_len && (int32_t)(h - u->uq[u->uq_head].num) >= 0) {
        u->msgs[u->uq[u->uq_head].seq].flags |= CH_ACKED;
        u->uq_head++;
    }
}

/* After <resumed h/> (the acknowledged part is gone already) or a new
 * session after <failed/>: everything still unacknowledged, again, in
 * order, numbered in this session. */
static void resend_unacked(struct ch_user *u, int i)
{
    char msg[1024];
    for (size_t k = u->uq_head; k < u->uq_len && u->c; k++) {
        uint32_t seq = u->uq[k].seq;
        int n = msg_text(i, seq, u->msgs[seq].t, msg, sizeof(msg));
        u->uq[k].num = u->c->sm_out + (u->c->sm_on ? 1 : 0);
        sbb_conn_stanza(u->c, msg, (size_t)n);   /* a failed write clears u->c */
        resent++;
    }
}

static void ch_online(struct sbb_conn *c)
{
    struct ch_user *u = &users[user_of(c)];
    inflight--;
    u->online = 1;
    u->attempts = 0;
    if (c->resume)
        resumed++;
    if (u->dropped_at > 0) {
        relogins++;
        sec_now()->relogins++;
        sbb_hist_add(&relogin_lat, sbb_now() - u->dropped_at);
        u->dropped_at = 0;
    }
    if (sbb_opt.sm && !checking) {
        u->resumable = 0;            /* this one now, once it is enabled */
        resend_unacked(u, user_of(c));
    }
}

static void ch_failed(struct sbb_conn *c, const char *why)
{
    struct ch_user *u = &users[user_of(c)];
    int closing = c->closed_ok;
    if (c->sm_on && c->sm_id[0] && !checking) {
        snprintf(u->sm_id, sizeof(u->sm_id), "%s", c->sm_id);
        u->sm_h = c->sm_h;
        u->resumable = 1;
    }
    u->c = NULL;
    sbb_conn_free(c);
    if (closing) {
        u->online = 0;
        return;                      /* our own close at the end */
    }
    if (!u->online) {
        inflight--;
        count_name(reasons, why);
        if (strcmp(why, "resume-failed") == 0) {
            resume_failed++;         /* the session is gone: bind anew at once */
            u->resumable = 0;
            u->retry_at = sbb_now();
            return;
        }
        login_retry(u);
        return;
    }
    u->online = 0;
    u->gen++;
    u->dropped_at = sbb_now();
    u->attempts = 0;
    u->port_ix++;
    u->retry_at = sbb_now() + backoff(0);
    drops++;
    sec_now()->drops++;
    count_name(reasons, why);
}

/* Start the logins that are due (at most `window` in flight) and give up
 * on the ones that take too long. */
static void logins_due(double now)
{
    for (int i = 0; i < cfg->users; i++) {
        struct ch_user *u = &users[i];
        if (u->c && !u->online && now - u->c->t0 > sbb_opt.login_timeout) {
            sbb_conn_free(u->c);
            u->c = NULL;
            inflight--;
            count_name(reasons, "login-timeout");
            login_retry(u);
        }
    }
    for (int i = 0; i < cfg->users && inflight < cfg->window; i++) {
        struct ch_user *u = &users[i];
        if (!u->c && u->retry_at > 0 && now >= u->retry_at)
            login_start(i);
    }
}

/* ---- sending and receiving -------------------------------------------------- */

static struct ch_msg *msg_slot(struct ch_user *u, uint32_t seq)
{
    if (seq >= u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 64;
        while (cap <= seq)
            cap *= 2;
        struct ch_msg *m = realloc(u->msgs, cap * sizeof(*m));
        if (!m) {
            fprintf(stderr, "sbbench: out of memory\n");
            exit(2);
        }
        memset(m + u->cap, 0, (cap - u->cap) * sizeof(*m));
        u->msgs = m;
        u->cap = cap;
    }
    return &u->msgs[seq];
}

static int msg_text(int i, uint32_t seq, double t, char *msg, size_t cap)
{
    char body[512];
    int bl = snprintf(body, sizeof(body), "B %d %u %.9f ", i, seq, t);
    if (bl < cfg->body) {
        memset(body + bl, 'x', (size_t)(cfg->body - bl));
        bl = cfg->body;
    }
    body[bl] = 0;
    return snprintf(msg, cap, "<message to='%s' type='chat' id='m%u'><body>%s</body>"
                    "</message>", to_jid[i], seq, body);
}

/* The next online user in turn sends one message (the total rate holds
 * while some users are logging in again). */
static void send_one(void)
{
    int i = -1;
    for (int k = 0; k < cfg->users; k++) {
        int j = (rr + k) % cfg->users;
        if (users[j].online) {
            i = j;
            break;
        }
    }
    if (i < 0) {
        skipped++;
        return;
    }
    rr = (i + 1) % cfg->users;
    struct ch_user *u = &users[i], *r = &users[(i + 1) % cfg->users];
    uint32_t seq = u->tx_seq++;
    struct ch_msg *m = msg_slot(u, seq);
    double now = sbb_now();
    m->t = now;
    m->sgen = u->gen;
    m->rgen = r->gen;
    m->sec = (uint32_t)(now - t0);
    m->flags = r->online ? 0 : CH_RCPT_OFFLINE;
    char msg[1024];
    int n = msg_text(i, seq, now, msg, sizeof(msg));
    if (sbb_opt.sm) {
        /* its XEP-0198 number; a write that fails ends the stream and
         * clears u->c, and the message stays unacked for the resumption */
        uint32_t num = u->c->sm_out + (u->c->sm_on ? 1 : 0);
        sbb_conn_stanza(u->c, msg, (size_t)n);
        uq_push(u, num, seq);
    } else {
        sbb_conn_write(u->c, msg, (size_t)n);
    }
    sent++;
    pending++;
    sec_now()->sent++;
}

static void tick_cb(struct ev_loop *l, ev_timer *w, int ev)
{
    double now = sbb_now();
    logins_due(now);
    if (!sending)
        return;
    long due = (long)(cfg->rate * (now - t0)) - sent - skipped;
    for (; due > 0; due--)
        send_one();
}

/* Value of attribute name in the start tag of el (first match), or NULL. */
static const char *start_attr(const char *el, size_t len, const char *name, size_t *vl)
{
    const char *end = memchr(el, '>', len);
    size_t nl = strlen(name);
    for (const char *p = el + 1; end && p + nl + 2 < end; p++) {
        if (p[-1] == ' ' && memcmp(p, name, nl) == 0 && p[nl] == '=' &&
            (p[nl + 1] == '\'' || p[nl + 1] == '"')) {
            const char *v = p + nl + 2, *q = memchr(v, p[nl + 1], (size_t)(end - v));
            if (!q)
                return NULL;
            *vl = (size_t)(q - v);
            return v;
        }
    }
    return NULL;
}

/* The defined condition of a stanza error: the first child of <error>. */
static void error_condition(const char *el, size_t len, char *out, size_t cap)
{
    const char *e = memmem(el, len, "<error", 6);
    const char *end = el + len;
    const char *gt = e ? memchr(e, '>', (size_t)(end - e)) : NULL;
    const char *lt = gt ? memchr(gt, '<', (size_t)(end - gt)) : NULL;
    size_t n = 0;
    if (lt && lt[1] != '/') {
        lt++;
        while (lt + n < end && n + 1 < cap && lt[n] != ' ' && lt[n] != '/' && lt[n] != '>')
            n++;
    }
    snprintf(out, cap, "%.*s", (int)n, n ? lt : "none");
}

static void got_error(struct ch_user *u, const char *el, size_t len)
{
    char cond[48];
    size_t vl;
    const char *id = start_attr(el, len, "id", &vl);
    error_condition(el, len, cond, sizeof(cond));
    count_name(conds, cond);
    unsigned long seq = id && vl >= 2 && id[0] == 'm' ? strtoul(id + 1, NULL, 10) : ~0UL;
    if (seq >= u->tx_seq) {
        err_unmatched++;
        return;
    }
    struct ch_msg *m = &u->msgs[seq];
    if (m->flags & CH_DELIVERED)
        err_delivered++;             /* a client that re-sent it would duplicate it */
    else if (m->flags & CH_BOUNCED)
        err_twice++;
    if (!(m->flags & (CH_DELIVERED | CH_BOUNCED))) {
        pending--;
        sec_now()->bounced++;
    }
    m->flags |= CH_BOUNCED;
}

/* sender, seq and send time of one of our bodies; 0 when it is not one of
 * this run's */
static int our_body(const char *el, size_t len, int *sender, unsigned *seq)
{
    const char *b = memmem(el, len, "<body>B ", 8);
    double t;
    if (!b || sscanf(b + 8, "%d %u %lf", sender, seq, &t) != 3 || *sender < 0 ||
        *sender >= cfg->users || *seq >= users[*sender].tx_seq || t < t_start)
        return 0;                    /* not ours, or left offline by an earlier run */
    return 1;
}

static void got_message(struct ch_user *r, const char *el, size_t len)
{
    int sender;
    unsigned seq;
    if (!our_body(el, len, &sender, &seq))
        return;
    struct ch_msg *m = &users[sender].msgs[seq];
    if (m->flags & CH_DELIVERED) {
        duplicates++;
        return;
    }
    if (!(m->flags & CH_BOUNCED))
        pending--;
    m->flags |= CH_DELIVERED;
    double now = sbb_now();
    m->lat = (float)(now - m->t);
    if (checking) {
        m->flags |= CH_AT_CHECK;
        at_check++;
    } else {
        /* the longest silence cluster-wide, by the second it began in */
        double gap = now - last_delivery;
        int s0 = (int)(last_delivery - t0);
        if (last_delivery > 0 && s0 >= 0 && s0 < ntl && gap > tl[s0].max_gap)
            tl[s0].max_gap = gap;
        if (last_delivery > 0 && gap > max_gap)
            max_gap = gap;
        last_delivery = now;
    }
    sec_now()->delivered++;
    if (memmem(el, len, "urn:xmpp:delay", 14))
        from_offline++;              /* stored while the recipient was away */
    else
        sbb_hist_add(&lat, m->lat);
    if (seq == r->rx_next)
        r->rx_next++;
    else if (seq > r->rx_next)
        r->rx_next = seq + 1;        /* a gap: bounced, lost or still to come */
    else
        reordered++;
}

/* --check: a message forwarded from the recipient's archive (XEP-0313). */
static void got_archived(const char *el, size_t len)
{
    int sender;
    unsigned seq;
    if (!our_body(el, len, &sender, &seq))
        return;
    struct ch_msg *m = &users[sender].msgs[seq];
    if (!(m->flags & CH_ARCHIVED) && !(m->flags & (CH_DELIVERED | CH_BOUNCED)))
        mam_found++;
    m->flags |= CH_ARCHIVED;
}

static void ch_message(struct sbb_conn *c, const char *el, size_t len)
{
    struct ch_user *u = &users[user_of(c)];
    /* an error bounce carries the original body (sm/send.c): test it first */
    size_t vl;
    const char *type = start_attr(el, len, "type", &vl);
    if (memmem(el, len, "urn:xmpp:mam:2", 14) && memmem(el, len, "<result", 7))
        got_archived(el, len);
    else if (type && vl == 5 && memcmp(type, "error", 5) == 0)
        got_error(u, el, len);
    else
        got_message(u, el, len);
}

/* ---- --check: the archive of each recipient still missing something ------- */

static void mam_query(int r)
{
    struct ch_user *u = &users[r];
    int s = (r + cfg->users - 1) % cfg->users;
    char start[32], after[160] = "", q[1400];
    struct tm tm;
    time_t ws = wall_start - 2;
    gmtime_r(&ws, &tm);
    strftime(start, sizeof(start), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (u->mam_after[0])
        snprintf(after, sizeof(after), "<after>%s</after>", u->mam_after);
    int n = snprintf(q, sizeof(q),
        "<iq type='set' id='mam%d'><query xmlns='urn:xmpp:mam:2' queryid='q%d'>"
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        "<value>urn:xmpp:mam:2</value></field><field var='with'><value>%s%d@%s</value></field>"
        "<field var='start'><value>%s</value></field></x>"
        "<set xmlns='http://jabber.org/protocol/rsm'><max>250</max>%s</set></query></iq>",
        r, r, sbb_opt.prefix, sbb_opt.first + s, sbb_opt.domain, start, after);
    sbb_conn_write(u->c, q, (size_t)n);
    mam_queries++;
    u->mam_page++;
}

static void ch_iq(struct sbb_conn *c, const char *el, size_t len)
{
    struct ch_user *u = &users[user_of(c)];
    size_t vl;
    const char *id = start_attr(el, len, "id", &vl);
    if (!u->checking || u->mam_done || !id || vl < 4 || memcmp(id, "mam", 3) != 0)
        return;
    const char *type = start_attr(el, len, "type", &vl);
    if (!type || vl != 6 || memcmp(type, "result", 6) != 0) {
        mam_failed++;
        u->mam_done = 1;
        return;
    }
    const char *last = memmem(el, len, "<last>", 6);
    const char *end = last ? memmem(last, len - (size_t)(last - el), "</last>", 7) : NULL;
    if (memmem(el, len, "complete='true'", 15) || memmem(el, len, "complete=\"true\"", 15) ||
        !last || !end || u->mam_page >= 400) {
        u->mam_done = 1;
        return;
    }
    snprintf(u->mam_after, sizeof(u->mam_after), "%.*s", (int)(end - last - 6), last + 6);
    mam_query(user_of(c));
}

/* ---- the run ------------------------------------------------------------------ */

static int users_online(void)
{
    int n = 0;
    for (int i = 0; i < cfg->users; i++)
        n += users[i].online;
    return n;
}

static int relogins_pending(void)
{
    for (int i = 0; i < cfg->users; i++)
        if (!users[i].online && (users[i].c || users[i].retry_at > 0))
            return 1;
    return 0;
}

static int setup(void)
{
    users = calloc((size_t)cfg->users, sizeof(*users));
    to_jid = calloc((size_t)cfg->users, sizeof(*to_jid));
    ntl = (int)(cfg->secs + cfg->drain) + 2;
    tl = calloc((size_t)ntl, sizeof(*tl));
    if (!users || !to_jid || !tl)
        return -1;
    double now = sbb_now();
    t_start = now;
    for (int i = 0; i < cfg->users; i++) {
        users[i].port_ix = i;
        users[i].retry_at = now;
        if (asprintf(&to_jid[i], "%s%d@%s", sbb_opt.prefix,
                     sbb_opt.first + (i + 1) % cfg->users, sbb_opt.domain) < 0)
            return -1;
    }
    srand48((long)time(NULL));
    sbb_ev.online = ch_online;
    sbb_ev.failed = ch_failed;
    sbb_ev.message = ch_message;
    sbb_ev.acked = ch_acked;
    sbb_ev.iq = ch_iq;
    ev_timer_init(&ch_tick, tick_cb, 0.001, 0.001);
    ev_timer_start(sbb_loop, &ch_tick);
    return 0;
}

static void print_counts(const char *key, const struct ch_count *t)
{
    printf("\"%s\":{", key);
    for (int i = 0; i < CH_NAMES && t[i].name[0]; i++)
        printf("%s\"%s\":%ld", i ? "," : "", t[i].name, t[i].n);
    printf("}");
}

struct ch_tally {
    long delivered, bounced, lost, lost_conn, lost_rcpt_offline, lost_rcpt_dropped;
    long acked, unacked, archived_only, missing;
    double max_lat;
};

static int missing(const struct ch_msg *m)
{
    return !(m->flags & (CH_DELIVERED | CH_BOUNCED | CH_ARCHIVED));
}

/* Each message once, by what finally happened to it. */
static void tally(struct ch_tally *t)
{
    memset(t, 0, sizeof(*t));
    for (int s = 0; s < ntl; s++)
        tl[s].lost = tl[s].lost_conn = 0, tl[s].max_lat = 0;
    for (int s = 0; s < cfg->users; s++) {
        struct ch_user *u = &users[s], *r = &users[(s + 1) % cfg->users];
        for (uint32_t q = 0; q < u->tx_seq; q++) {
            struct ch_msg *m = &u->msgs[q];
            struct ch_sec *sec = m->sec < (uint32_t)ntl ? &tl[m->sec] : NULL;
            t->acked += !!(m->flags & CH_ACKED);
            if (m->flags & CH_DELIVERED) {
                t->delivered++;
                if (sec && m->lat > sec->max_lat)
                    sec->max_lat = m->lat;
                if (m->lat > t->max_lat)
                    t->max_lat = m->lat;
                continue;
            }
            if (m->flags & CH_BOUNCED) {
                t->bounced++;
                continue;
            }
            if (m->flags & CH_ARCHIVED) {
                t->archived_only++;
                continue;
            }
            t->missing++;
            if (sbb_opt.sm ? !(m->flags & CH_ACKED) : m->sgen != u->gen) {
                /* sm: the sender still holds it; else: sent on a connection
                 * that died, the server may never have read it */
                if (sbb_opt.sm)
                    t->unacked++;
                else
                    t->lost_conn++;
                if (sec)
                    sec->lost_conn++;
                continue;
            }
            t->lost++;
            if (m->flags & CH_RCPT_OFFLINE)
                t->lost_rcpt_offline++;
            else if (m->rgen != r->gen)
                t->lost_rcpt_dropped++;
            if (sec)
                sec->lost++;
            if (t->lost <= 10)
                fprintf(stderr, "sbbench: chaos: lost %d→%d seq %u sent at %u s%s%s\n", s,
                        (s + 1) % cfg->users, q, m->sec,
                        m->flags & CH_RCPT_OFFLINE ? " (recipient offline)" :
                        m->rgen != r->gen ? " (recipient's connection ended since)" : "",
                        m->flags & CH_ACKED ? " acked" : "");
        }
    }
}

static void report(double secs, double gen_cpu, double t0_unix)
{
    struct ch_tally t;
    tally(&t);
    printf("{\"scenario\":\"chaos\",\"label\":\"%s\",\"users\":%d,\"rate\":%.0f,\"secs\":%.3f,"
           "\"sm\":%d,\"check\":%d,"
           "\"t0_unix\":%.3f,\"sent\":%ld,\"delivered\":%ld,\"bounced_error\":%ld,\"lost\":%ld,"
           "\"lost_with_connection\":%ld,\"lost_rcpt_offline\":%ld,\"lost_rcpt_dropped\":%ld,"
           "\"acked\":%ld,\"unacked_at_end\":%ld,\"archived_only\":%ld,"
           "\"delivered_at_check\":%ld,\"mam_queries\":%ld,\"mam_failed\":%ld,"
           "\"resumed\":%ld,\"resume_failed\":%ld,\"resent\":%ld,"
           "\"duplicates\":%ld,\"reordered\":%ld,\"from_offline\":%ld,\"skipped\":%ld,"
           "\"drops\":%ld,\"relogins\":%ld,\"login_attempts_failed\":%ld,\"gave_up\":%ld,"
           "\"errors_for_delivered\":%ld,\"errors_twice\":%ld,\"errors_unmatched\":%ld,"
           "\"online_at_end\":%d,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,"
           "\"max_latency_ms\":%.1f,\"max_gap_ms\":%.1f,"
           "\"relogin_p50_ms\":%.1f,\"relogin_max_ms\":%.1f,\"gen_cpu_s\":%.3f,",
           cfg->label, cfg->users, cfg->rate, secs, sbb_opt.sm, cfg->check, t0_unix, sent,
           t.delivered, t.bounced, t.lost, t.lost_conn, t.lost_rcpt_offline,
           t.lost_rcpt_dropped, t.acked, t.unacked, t.archived_only, at_check, mam_queries,
           mam_failed, resumed, resume_failed, resent, duplicates, reordered,
           from_offline, skipped, drops, relogins, attempts_failed, gave_up, err_delivered,
           err_twice, err_unmatched, users_online(),
           sbb_hist_pct(&lat, 50) * 1e3, sbb_hist_pct(&lat, 99) * 1e3, lat.max * 1e3,
           t.max_lat * 1e3, max_gap * 1e3,
           sbb_hist_pct(&relogin_lat, 50) * 1e3, relogin_lat.max * 1e3, gen_cpu);
    print_counts("error_conditions", conds);
    printf(",");
    print_counts("drop_reasons", reasons);
    /* [second, sent, delivered, bounced, lost, lost_with_connection (sm: unacked),
     *  drops, relogins, online, max_latency_ms (by send second),
     *  max_gap_ms (by the second it began)] */
    printf(",\"timeline\":[");
    for (int s = 0; s < ntl; s++)
        printf("%s[%d,%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld,%.0f,%.0f]", s ? "," : "", s, tl[s].sent,
               tl[s].delivered, tl[s].bounced, tl[s].lost, tl[s].lost_conn, tl[s].drops,
               tl[s].relogins, tl[s].online, tl[s].max_lat * 1e3, tl[s].max_gap * 1e3);
    printf("],");
    sbb_print_procs(stdout);
    printf("}\n");
    fflush(stdout);
    fprintf(stderr, "sbbench: chaos: sent %ld, delivered %ld (%ld at the check), bounced %ld, "
            "archived only %ld, lost %ld, %s %ld, duplicates %ld, reordered %ld, drops %ld, "
            "re-logins %ld (resumed %ld, resumption failed %ld, re-sent %ld), longest gap "
            "%.0f ms\n", sent, t.delivered, at_check, t.bounced, t.archived_only, t.lost,
            sbb_opt.sm ? "unacknowledged" : "lost with connection",
            sbb_opt.sm ? t.unacked : t.lost_conn, duplicates, reordered, drops, relogins,
            resumed, resume_failed, resent, max_gap * 1e3);
}

static void close_all(void)
{
    for (int i = 0; i < cfg->users; i++)
        if (users[i].c)
            sbb_conn_close(users[i].c);
    double end = sbb_now() + 3;
    while (sbb_now() < end) {
        int left = 0;
        for (int i = 0; i < cfg->users; i++)
            left += users[i].c != NULL;
        if (!left)
            break;
        sbb_run_for(0.1);
    }
    for (int i = 0; i < cfg->users; i++) {
        if (users[i].c)
            sbb_conn_free(users[i].c);
        users[i].c = NULL;
        users[i].online = 0;
        users[i].retry_at = 0;
    }
}

/* --check: every stream is closed (what a stream held goes to offline
 * storage), the recipients of what is still missing log in anew (offline
 * storage is given at the initial presence) and query their archive for
 * this run's messages from their sender. */
static void check_missing(void)
{
    int flagged = 0;
    for (int s = 0; s < cfg->users; s++)
        for (uint32_t q = 0; q < users[s].tx_seq; q++)
            if (missing(&users[s].msgs[q]) && !users[(s + 1) % cfg->users].checking) {
                users[(s + 1) % cfg->users].checking = 1;
                flagged++;
                break;
            }
    fprintf(stderr, "sbbench: chaos: check: %d recipients with something missing\n", flagged);
    if (!flagged)
        return;
    close_all();
    inflight = 0;                    /* close_all ended the logins in flight too */
    checking = 1;
    double now = sbb_now();
    for (int i = 0; i < cfg->users; i++)
        if (users[i].checking) {
            users[i].attempts = 0;
            users[i].resumable = 0;
            users[i].dropped_at = 0;
            users[i].retry_at = now;
        }
    double end = sbb_now() + 30;
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < cfg->users; i++)
            waiting += users[i].checking && !users[i].online && users[i].retry_at + !!users[i].c > 0;
        if (!waiting || sbb_now() > end)
            break;
        sbb_run_for(0.1);
    }
    sbb_run_for(2.0);                /* offline storage, given after the initial presence */
    for (int i = 0; i < cfg->users; i++) {
        if (users[i].checking && users[i].online)
            mam_query(i);
        else if (users[i].checking)
            users[i].mam_done = 1, mam_failed++;
    }
    end = sbb_now() + 30;
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < cfg->users; i++)
            waiting += users[i].checking && !users[i].mam_done;
        if (!waiting || sbb_now() > end)
            break;
        sbb_run_for(0.1);
    }
    sbb_run_for(0.5);
}

int sbb_chaos_run(const struct sbb_chaos_cfg *c)
{
    cfg = c;
    if (setup() < 0)
        return 2;
    double end = sbb_now() + 60;
    while (users_online() < cfg->users && sbb_now() < end)
        sbb_run_for(0.1);
    if (users_online() < cfg->users) {
        printf("{\"scenario\":\"chaos\",\"label\":\"%s\",\"setup_failed\":true,\"online\":%d}\n",
               cfg->label, users_online());
        return 2;
    }
    fprintf(stderr, "sbbench: chaos: %d users online; %.0f msg/s for %.0f s%s\n", cfg->users,
            cfg->rate, cfg->secs, sbb_opt.sm ? " over XEP-0198" : "");
    sbb_run_for(1.0);                /* initial presences settle */
    sbb_watch_begin();
    double cpu0 = sbb_self_cpu();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    wall_start = wall.tv_sec;
    t0 = sbb_now();
    sending = 1;
    tl[0].online = users_online();
    while (sbb_now() - t0 < cfg->secs) {
        sbb_run_for(1.0);
        sec_now()->online = users_online();
    }
    sending = 0;
    double secs = sbb_now() - t0;
    /* stragglers, bounces, re-logins and what offline storage gives back */
    end = sbb_now() + cfg->drain;
    while (sbb_now() < end && (pending > 0 || relogins_pending())) {
        sbb_run_for(0.1);
        sec_now()->online = users_online();
    }
    if (cfg->check)
        check_missing();
    sbb_watch_end();
    report(secs, sbb_self_cpu() - cpu0,
           (double)wall.tv_sec + (double)wall.tv_nsec / 1e9);
    ev_timer_stop(sbb_loop, &ch_tick);
    close_all();
    return 0;
}
