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
 * caller can line losses and drops up with its kills. */
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
};

struct ch_msg {
    uint32_t sgen, rgen;    /* sender's / recipient's connection generation at send */
    uint32_t sec;           /* timeline second it was sent in */
    uint8_t flags;
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
};

/* One named counter (error conditions, reasons connections ended). */
#define CH_NAMES 16
struct ch_count {
    char name[48];
    long n;
};

struct ch_sec {
    long sent, delivered, bounced, lost, lost_conn, drops, relogins, online;
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
    inflight++;
}

static void ch_online(struct sbb_conn *c)
{
    struct ch_user *u = &users[user_of(c)];
    inflight--;
    u->online = 1;
    u->attempts = 0;
    if (u->dropped_at > 0) {
        relogins++;
        sec_now()->relogins++;
        sbb_hist_add(&relogin_lat, sbb_now() - u->dropped_at);
        u->dropped_at = 0;
    }
}

static void ch_failed(struct sbb_conn *c, const char *why)
{
    struct ch_user *u = &users[user_of(c)];
    int closing = c->closed_ok;
    u->c = NULL;
    sbb_conn_free(c);
    if (closing)
        return;                      /* our own close at the end */
    if (!u->online) {
        inflight--;
        count_name(reasons, why);
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
    m->sgen = u->gen;
    m->rgen = r->gen;
    m->sec = (uint32_t)(now - t0);
    m->flags = r->online ? 0 : CH_RCPT_OFFLINE;
    char body[512], msg[1024];
    int bl = snprintf(body, sizeof(body), "B %d %u %.9f ", i, seq, now);
    if (bl < cfg->body) {
        memset(body + bl, 'x', (size_t)(cfg->body - bl));
        bl = cfg->body;
    }
    body[bl] = 0;
    int n = snprintf(msg, sizeof(msg), "<message to='%s' type='chat' id='m%u'><body>%s</body>"
                     "</message>", to_jid[i], seq, body);
    sbb_conn_write(u->c, msg, (size_t)n);
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

static void got_message(struct ch_user *r, const char *el, size_t len)
{
    const char *b = memmem(el, len, "<body>B ", 8);
    int sender;
    unsigned seq;
    double t;
    if (!b || sscanf(b + 8, "%d %u %lf", &sender, &seq, &t) != 3 || sender < 0 ||
        sender >= cfg->users || seq >= users[sender].tx_seq)
        return;
    struct ch_msg *m = &users[sender].msgs[seq];
    if (m->flags & CH_DELIVERED) {
        duplicates++;
        return;
    }
    if (!(m->flags & CH_BOUNCED))
        pending--;
    m->flags |= CH_DELIVERED;
    sec_now()->delivered++;
    if (memmem(el, len, "urn:xmpp:delay", 14))
        from_offline++;              /* stored while the recipient was away */
    else
        sbb_hist_add(&lat, sbb_now() - t);
    if (seq == r->rx_next)
        r->rx_next++;
    else if (seq > r->rx_next)
        r->rx_next = seq + 1;        /* a gap: bounced, lost or still to come */
    else
        reordered++;
}

static void ch_message(struct sbb_conn *c, const char *el, size_t len)
{
    struct ch_user *u = &users[user_of(c)];
    /* an error bounce carries the original body (sm/send.c): test it first */
    size_t vl;
    const char *type = start_attr(el, len, "type", &vl);
    if (type && vl == 5 && memcmp(type, "error", 5) == 0)
        got_error(u, el, len);
    else
        got_message(u, el, len);
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
};

/* Each message once, by what finally happened to it. */
static void tally(struct ch_tally *t)
{
    memset(t, 0, sizeof(*t));
    for (int s = 0; s < cfg->users; s++) {
        struct ch_user *u = &users[s], *r = &users[(s + 1) % cfg->users];
        for (uint32_t q = 0; q < u->tx_seq; q++) {
            struct ch_msg *m = &u->msgs[q];
            struct ch_sec *sec = m->sec < (uint32_t)ntl ? &tl[m->sec] : NULL;
            if (m->flags & CH_DELIVERED) {
                t->delivered++;
            } else if (m->flags & CH_BOUNCED) {
                t->bounced++;
            } else if (m->sgen != u->gen) {
                t->lost_conn++;
                if (sec)
                    sec->lost_conn++;
            } else {
                t->lost++;
                if (m->flags & CH_RCPT_OFFLINE)
                    t->lost_rcpt_offline++;
                else if (m->rgen != r->gen)
                    t->lost_rcpt_dropped++;
                if (sec)
                    sec->lost++;
                if (t->lost <= 10)
                    fprintf(stderr, "sbbench: chaos: lost %d→%d seq %u sent at %u s%s\n", s,
                            (s + 1) % cfg->users, q, m->sec,
                            m->flags & CH_RCPT_OFFLINE ? " (recipient offline)" :
                            m->rgen != r->gen ? " (recipient's connection ended since)" : "");
            }
        }
    }
}

static void report(double secs, double gen_cpu, double t0_unix)
{
    struct ch_tally t;
    tally(&t);
    printf("{\"scenario\":\"chaos\",\"label\":\"%s\",\"users\":%d,\"rate\":%.0f,\"secs\":%.3f,"
           "\"t0_unix\":%.3f,\"sent\":%ld,\"delivered\":%ld,\"bounced_error\":%ld,\"lost\":%ld,"
           "\"lost_with_connection\":%ld,\"lost_rcpt_offline\":%ld,\"lost_rcpt_dropped\":%ld,"
           "\"duplicates\":%ld,\"reordered\":%ld,\"from_offline\":%ld,\"skipped\":%ld,"
           "\"drops\":%ld,\"relogins\":%ld,\"login_attempts_failed\":%ld,\"gave_up\":%ld,"
           "\"errors_for_delivered\":%ld,\"errors_twice\":%ld,\"errors_unmatched\":%ld,"
           "\"online_at_end\":%d,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,"
           "\"relogin_p50_ms\":%.1f,\"relogin_max_ms\":%.1f,\"gen_cpu_s\":%.3f,",
           cfg->label, cfg->users, cfg->rate, secs, t0_unix, sent, t.delivered, t.bounced,
           t.lost, t.lost_conn, t.lost_rcpt_offline, t.lost_rcpt_dropped, duplicates, reordered,
           from_offline, skipped, drops, relogins, attempts_failed, gave_up, err_delivered,
           err_twice, err_unmatched, users_online(),
           sbb_hist_pct(&lat, 50) * 1e3, sbb_hist_pct(&lat, 99) * 1e3, lat.max * 1e3,
           sbb_hist_pct(&relogin_lat, 50) * 1e3, relogin_lat.max * 1e3, gen_cpu);
    print_counts("error_conditions", conds);
    printf(",");
    print_counts("drop_reasons", reasons);
    /* [second, sent, delivered, bounced, lost, lost_with_connection, drops, relogins, online] */
    printf(",\"timeline\":[");
    for (int s = 0; s < ntl; s++)
        printf("%s[%d,%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld]", s ? "," : "", s, tl[s].sent,
               tl[s].delivered, tl[s].bounced, tl[s].lost, tl[s].lost_conn, tl[s].drops,
               tl[s].relogins, tl[s].online);
    printf("],");
    sbb_print_procs(stdout);
    printf("}\n");
    fflush(stdout);
    fprintf(stderr, "sbbench: chaos: sent %ld, delivered %ld, bounced %ld, lost %ld, lost with "
            "connection %ld, duplicates %ld, reordered %ld, drops %ld, re-logins %ld\n", sent,
            t.delivered, t.bounced, t.lost, t.lost_conn, duplicates, reordered, drops, relogins);
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
    for (int i = 0; i < cfg->users; i++)
        if (users[i].c)
            sbb_conn_free(users[i].c);
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
    fprintf(stderr, "sbbench: chaos: %d users online; %.0f msg/s for %.0f s\n", cfg->users,
            cfg->rate, cfg->secs);
    sbb_run_for(1.0);                /* initial presences settle */
    sbb_watch_begin();
    double cpu0 = sbb_self_cpu();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
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
    sbb_watch_end();
    report(secs, sbb_self_cpu() - cpu0,
           (double)wall.tv_sec + (double)wall.tv_nsec / 1e9);
    ev_timer_stop(sbb_loop, &ch_tick);
    close_all();
    return 0;
}
