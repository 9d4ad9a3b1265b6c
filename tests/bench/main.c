/* main.c — sbbench: options and the scenarios. Each step prints one JSON
 * line on stdout (progress goes to stderr); tests/bench/bench.py turns the
 * lines into the results file and the table.
 *   login  arrivals at fixed rates (steps); each logs in fully, then closes
 *          (--mech: any SASL mechanism of client.c; fast gets its tokens first)
 *   msg    K users online, each sending to the next one at a total rate
 *   idle   N users logged in and present, held; memory per connection
 *   chaos  K users chatting at one rate while processes are killed (chaos.c)
 *   resume K users with XEP-0198 sessions on one front-end, which is killed;
 *          they resume on the other (resume.c)
 * --sm makes every client of login/msg/idle enable stream management.
 * Exit status: 0, or 1 when a message was lost or reordered (the smoke test
 * of `make test` relies on it), 2 on bad usage or a setup failure. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sbbench.h"

struct sbb_opts sbb_opt = {
    .host = "127.0.0.1", .domain = "localhost", .prefix = "bench", .passprefix = "pw",
    .ports = {5222}, .nports = 1, .first = 1, .login_timeout = 10, .sm_ack_every = 5,
};
struct ev_loop *sbb_loop;

static struct {
    const char *scenario, *label;
    int users, window, body, stop_on_fail;
    double rates[64];
    int nrates;
    double step, hold, settle, p99_limit, drain, duration;
    int max_attempts;
    int senders, before, dead, kill_pid, check;
    const char *room;
    int workers;             /* idle: worker processes (0: 1, or 2 above 15,000) */
    double chat_rate, chat_pct; /* idle: that share of the users chat at that total rate */
} cfg = {.chat_pct = 1, .users = 1000, .window = 200, .body = 64, .stop_on_fail = 1,
         .step = 5, .hold = 10, .settle = 3, .p99_limit = -1, .drain = 5, .duration = 120,
         .max_attempts = 40, .senders = 50, .before = 3, .dead = 3};

/* ---- shared phase state ---------------------------------------------------- */

static struct sbb_conn **conns;      /* by slot (user - first) for msg/idle */
static int nonline, nfailed, ndropped, nstarted, ninflight;
static char last_error[64];
static struct sbb_hist login_hist;
static ev_timer tick, deadline;

const char *sbb_mech_name(void)
{
    return sbb_opt.plain ? "PLAIN" : sbb_opt.xoauth2 ? "X-OAUTH2" :
           sbb_opt.oauthbearer ? "OAUTHBEARER" : sbb_opt.fast ? "HT-SHA-256-NONE" :
           sbb_opt.plus ? "SCRAM-SHA-256-PLUS" : sbb_opt.sha256 ? "SCRAM-SHA-256" : "SCRAM-SHA-1";
}

static void loop_break(void)
{
    ev_break(sbb_loop, EVBREAK_ALL);
}

void sbb_run_for(double secs)
{
    ev_timer_set(&deadline, secs, 0);
    ev_timer_start(sbb_loop, &deadline);
    ev_run(sbb_loop, 0);
    ev_timer_stop(sbb_loop, &deadline);
}

static void deadline_cb(struct ev_loop *l, ev_timer *w, int ev)
{
    loop_break();
}

void sbb_print_procs(FILE *f)
{
    fprintf(f, "\"procs\":{");
    for (int i = 0; i < sbb_nwatch; i++)
        fprintf(f, "%s\"%s\":{\"cpu_s\":%.3f,\"rss_kb\":%ld,\"rss0_kb\":%ld}", i ? "," : "",
                sbb_watch[i].name, sbb_watch[i].cpu, sbb_watch[i].rss_kb, sbb_watch[i].rss0_kb);
    fprintf(f, "}");
}

static void note_error(const char *why)
{
    snprintf(last_error, sizeof(last_error), "%s", why);
}

/* ---- logging a set of users in (msg, idle) ------------------------------------ */

static int login_next, login_end;

static void login_fill(void)
{
    while (ninflight < cfg.window && login_next < login_end) {
        int slot = login_next - sbb_opt.first;
        struct sbb_conn *c = sbb_conn_start(login_next++);
        nstarted++;
        if (!c) {
            nfailed++;
            note_error(strerror(errno));
            continue;
        }
        c->slot = slot;
        conns[slot] = c;
        ninflight++;
    }
    if (ninflight == 0 && login_next >= login_end)
        loop_break();
}

static void set_online(struct sbb_conn *c)
{
    ninflight--;
    nonline++;
    sbb_hist_add(&login_hist, sbb_now() - c->t0);
    login_fill();
}

static void set_failed(struct sbb_conn *c, const char *why)
{
    if (c->state == SBB_DEAD && c->closed_ok) {
        conns[c->slot] = NULL;
        sbb_conn_free(c);
        return;
    }
    note_error(why);
    conns[c->slot] = NULL;
    if (c->peer == -2) {               /* was online */
        ndropped++;
        nonline--;
    } else {
        ninflight--;
        nfailed++;
        login_fill();
    }
    sbb_conn_free(c);
}

static void timeouts_cb(struct ev_loop *l, ev_timer *w, int ev)
{
    double now = sbb_now();
    for (int i = 0; i < cfg.users; i++) {
        struct sbb_conn *c = conns[i];
        if (c && c->state < SBB_ONLINE && now - c->t0 > sbb_opt.login_timeout) {
            sbb_conn_free(c);
            conns[i] = NULL;
            ninflight--;
            nfailed++;
            note_error("login-timeout");
            login_fill();
        }
    }
}

static void mark_online(struct sbb_conn *c)
{
    c->peer = -2;
    set_online(c);
}

/* Log users first..first+users-1 in, at most `window` at a time. */
static int login_all(void)
{
    static ev_timer tmo;
    conns = calloc((size_t)cfg.users, sizeof(*conns));
    if (!conns)
        return -1;
    sbb_ev.online = mark_online;
    sbb_ev.failed = set_failed;
    login_next = sbb_opt.first;
    login_end = sbb_opt.first + cfg.users;
    double t0 = sbb_now();
    ev_timer_init(&tmo, timeouts_cb, 0.5, 0.5);
    ev_timer_start(sbb_loop, &tmo);
    login_fill();
    if (ninflight)
        ev_run(sbb_loop, 0);
    ev_timer_stop(sbb_loop, &tmo);
    double t = sbb_now() - t0;
    fprintf(stderr, "sbbench: %d/%d users online in %.1f s (%d failed%s%s), %ld SCRAM derivations\n",
            nonline, cfg.users, t, nfailed, nfailed ? ", last: " : "", nfailed ? last_error : "",
            sbb_scram_derived());
    return nfailed ? -1 : 0;
}

static void close_all(void)
{
    int open = 0;
    for (int i = 0; i < cfg.users; i++)
        if (conns[i]) {
            sbb_conn_close(conns[i]);
            open++;
        }
    /* give the server a moment to answer the closes, then drop the rest */
    double end = sbb_now() + (open ? 3 : 0);
    while (sbb_now() < end) {
        int left = 0;
        for (int i = 0; i < cfg.users; i++)
            left += conns[i] != NULL;
        if (!left)
            break;
        sbb_run_for(0.1);
    }
    for (int i = 0; i < cfg.users; i++)
        if (conns[i])
            sbb_conn_free(conns[i]);
}

/* ---- scenario: login storm ----------------------------------------------------- */

struct storm_step {
    double rate, t0;
    long started, ok, errors;
    struct sbb_hist hist;
};
static struct storm_step *storm;
static int storm_cur, storm_user;
static ev_timer storm_tick;
/* Every storm connection alive (c->slot is its index), so that the logins
 * of a step still unfinished at its end are closed rather than left to
 * hold server descriptors into the next steps. */
static struct sbb_conn **storm_live;
static int storm_nlive, storm_cap;

static int live_add(struct sbb_conn *c)
{
    if (storm_nlive == storm_cap) {
        int n = storm_cap ? 2 * storm_cap : 4096;
        struct sbb_conn **p = realloc(storm_live, (size_t)n * sizeof(*p));
        if (!p)
            return -1;
        storm_live = p;
        storm_cap = n;
    }
    c->slot = storm_nlive;
    storm_live[storm_nlive++] = c;
    return 0;
}

static void live_del(struct sbb_conn *c)
{
    int i = c->slot;
    if (i < 0 || i >= storm_nlive || storm_live[i] != c)
        return;
    storm_live[i] = storm_live[--storm_nlive];
    if (i < storm_nlive)
        storm_live[i]->slot = i;
    c->slot = -1;
}

static void storm_online(struct sbb_conn *c)
{
    struct storm_step *s = &storm[c->step];
    s->ok++;
    sbb_hist_add(&s->hist, sbb_now() - c->t0);
    ninflight--;
    sbb_conn_close(c);
}

static void storm_failed(struct sbb_conn *c, const char *why)
{
    if (!c->closed_ok) {
        if (c->state == SBB_DEAD && c->peer != -2) {
            storm[c->step].errors++;
            ninflight--;
            note_error(why);
        }
    }
    live_del(c);
    sbb_conn_free(c);
}

static void storm_tick_cb(struct ev_loop *l, ev_timer *w, int ev)
{
    struct storm_step *s = &storm[storm_cur];
    long due = (long)(s->rate * (sbb_now() - s->t0)) - s->started;
    for (; due > 0; due--) {
        struct sbb_conn *c = sbb_conn_start(sbb_opt.first + storm_user);
        storm_user = (storm_user + 1) % cfg.users;
        s->started++;
        if (!c) {
            s->errors++;
            note_error(strerror(errno));
            continue;
        }
        c->step = storm_cur;
        c->slot = -1;
        live_add(c);
        ninflight++;
    }
}

/* fast: every user of the pool logs in once with SASL2 PLAIN and
 * <request-token/>, keeping the token the steps then log in with. */
static int fast_tokens(void)
{
    sbb_opt.fast_prep = 1;
    int rc = login_all();
    close_all();
    sbb_opt.fast_prep = 0;
    free(conns);
    conns = NULL;
    if (rc < 0)
        printf("{\"scenario\":\"login\",\"label\":\"%s\",\"mech\":\"%s\",\"setup_failed\":true,"
               "\"online\":%d,\"failed\":%d,\"last_error\":\"%s\"}\n", cfg.label,
               sbb_mech_name(), nonline, nfailed, last_error);
    nonline = nfailed = ninflight = nstarted = 0;
    last_error[0] = 0;
    return rc;
}

static int scenario_login(void)
{
    int failed_steps = 0;
    if (sbb_opt.fast && fast_tokens() < 0)
        return 2;
    storm = calloc((size_t)cfg.nrates, sizeof(*storm));
    sbb_ev.online = storm_online;
    sbb_ev.failed = storm_failed;
    ev_timer_init(&storm_tick, storm_tick_cb, 0.001, 0.001);
    double limit = cfg.p99_limit > 0 ? cfg.p99_limit : 0.5;
    for (storm_cur = 0; storm_cur < cfg.nrates; storm_cur++) {
        struct storm_step *s = &storm[storm_cur];
        s->rate = cfg.rates[storm_cur];
        sbb_watch_begin();
        double cpu0 = sbb_self_cpu();
        s->t0 = sbb_now();
        ev_timer_start(sbb_loop, &storm_tick);
        sbb_run_for(cfg.step);
        ev_timer_stop(sbb_loop, &storm_tick);
        double secs = sbb_now() - s->t0;
        /* let this step's logins finish (or time out) before reporting */
        double end = sbb_now() + sbb_opt.login_timeout;
        while (ninflight > 0 && sbb_now() < end)
            sbb_run_for(0.05);
        /* logins still unfinished: given up (counted below), closed now */
        for (int i = storm_nlive - 1; i >= 0; i--) {
            struct sbb_conn *c = storm_live[i];
            if (c->state < SBB_ONLINE) {
                live_del(c);
                sbb_conn_free(c);
                ninflight--;
            }
        }
        sbb_watch_end();
        long lost = s->started - s->ok - s->errors;   /* still pending: timed out */
        s->errors += lost > 0 ? lost : 0;
        double gen = sbb_self_cpu() - cpu0;
        double p99 = sbb_hist_pct(&s->hist, 99);
        int ok = s->errors == 0 && p99 < limit && s->ok >= 0.97 * s->rate * secs;
        printf("{\"scenario\":\"login\",\"label\":\"%s\",\"mech\":\"%s\",\"tls\":%d,\"step\":%d,"
               "\"rate\":%.0f,\"secs\":%.3f,\"started\":%ld,\"completed\":%ld,\"per_s\":%.1f,"
               "\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,\"errors\":%ld,\"last_error\":\"%s\","
               "\"ok\":%s,\"gen_cpu_s\":%.3f,",
               cfg.label, sbb_mech_name(), sbb_opt.tls, storm_cur, s->rate,
               secs, s->started, s->ok, (double)s->ok / secs, sbb_hist_pct(&s->hist, 50) * 1e3,
               p99 * 1e3, s->hist.max * 1e3, s->errors, s->errors ? last_error : "",
               ok ? "true" : "false", gen);
        sbb_print_procs(stdout);
        printf("}\n");
        fflush(stdout);
        fprintf(stderr, "sbbench: login %.0f/s: %.1f/s done, p50 %.1f ms, p99 %.1f ms, %ld errors%s\n",
                s->rate, (double)s->ok / secs, sbb_hist_pct(&s->hist, 50) * 1e3, p99 * 1e3,
                s->errors, ok ? "" : " (not sustained)");
        if (!ok && ++failed_steps >= 1 && cfg.stop_on_fail)
            break;
        ninflight = 0;
        sbb_run_for(0.5);                 /* closes settle */
    }
    return 0;
}

/* ---- scenario: message throughput ---------------------------------------------- */

struct msg_step {
    double rate, t0;
    long sent, delivered, reordered, gaps, errors;
    struct sbb_hist hist;
};
static struct msg_step mstep;
static int msg_rr, msg_n;              /* next sender; senders are slots 0..msg_n-1 */
static long total_sent, total_recv, total_reordered;
static char **to_jid;

static void msg_send_one(void)
{
    int i = msg_rr;
    msg_rr = (msg_rr + 1) % msg_n;
    struct sbb_conn *c = conns[i];
    if (!c || c->state != SBB_ONLINE)
        return;
    char body[512], msg[1024];
    int bl = snprintf(body, sizeof(body), "B %d %u %.9f ", i, c->tx_seq++, sbb_now());
    if (bl < cfg.body) {
        memset(body + bl, 'x', (size_t)(cfg.body - bl));
        bl = cfg.body;
    }
    body[bl] = 0;
    int n = snprintf(msg, sizeof(msg), "<message to='%s' type='chat' id='m%u'><body>%s</body></message>",
                     to_jid[i], c->tx_seq, body);
    sbb_conn_stanza(c, msg, (size_t)n);
    mstep.sent++;
    total_sent++;
}

static void msg_tick_cb(struct ev_loop *l, ev_timer *w, int ev)
{
    long due = (long)(mstep.rate * (sbb_now() - mstep.t0)) - mstep.sent;
    for (; due > 0; due--)
        msg_send_one();
}

static void msg_received(struct sbb_conn *c, const char *el, size_t len)
{
    /* an error bounce carries the original body (sm/send.c): test it first */
    if (memmem(el, len, "type='error'", 12) || memmem(el, len, "type=\"error\"", 12)) {
        mstep.errors++;
        note_error("message-error");
        return;
    }
    const char *b = memmem(el, len, "<body>B ", 8);
    if (!b)
        return;
    int sender;
    unsigned seq;
    double t;
    if (sscanf(b + 8, "%d %u %lf", &sender, &seq, &t) != 3)
        return;
    double now = sbb_now();
    total_recv++;
    if (t < mstep.t0)
        return;                        /* a late one of an earlier step */
    mstep.delivered++;
    sbb_hist_add(&mstep.hist, now - t);
    if (seq == c->rx_next) {
        c->rx_next++;
    } else if (seq > c->rx_next) {
        mstep.gaps++;
        c->rx_next = seq + 1;
    } else {
        mstep.reordered++;
        total_reordered++;
    }
}

static void msg_failed(struct sbb_conn *c, const char *why)
{
    set_failed(c, why);
}

static int scenario_msg(void)
{
    if (login_all() < 0) {
        printf("{\"scenario\":\"msg\",\"label\":\"%s\",\"setup_failed\":true,\"online\":%d,"
               "\"failed\":%d,\"last_error\":\"%s\"}\n", cfg.label, nonline, nfailed, last_error);
        return 2;
    }
    to_jid = calloc((size_t)cfg.users, sizeof(*to_jid));
    msg_n = cfg.users;
    for (int i = 0; i < cfg.users; i++) {
        int peer = (i + 1) % cfg.users;
        if (asprintf(&to_jid[i], "%s%d@%s", sbb_opt.prefix, sbb_opt.first + peer, sbb_opt.domain) < 0)
            return 2;
    }
    sbb_ev.message = msg_received;
    sbb_ev.failed = msg_failed;
    sbb_run_for(1.0);                      /* initial presences settle */
    ev_timer_init(&tick, msg_tick_cb, 0.001, 0.001);
    double limit = cfg.p99_limit > 0 ? cfg.p99_limit : 0.05;
    int rc = 0;
    for (int st = 0; st < cfg.nrates; st++) {
        memset(&mstep, 0, sizeof(mstep));
        mstep.rate = cfg.rates[st];
        long recv0 = total_recv;
        sbb_watch_begin();
        double cpu0 = sbb_self_cpu();
        mstep.t0 = sbb_now();
        ev_timer_start(sbb_loop, &tick);
        sbb_run_for(cfg.step);
        ev_timer_stop(sbb_loop, &tick);
        double secs = sbb_now() - mstep.t0;
        double end = sbb_now() + cfg.drain;
        while (total_recv - recv0 < mstep.sent && sbb_now() < end && nonline > 0)
            sbb_run_for(0.02);
        sbb_watch_end();
        double gen = sbb_self_cpu() - cpu0;
        long lost = mstep.sent - mstep.delivered;
        double p99 = sbb_hist_pct(&mstep.hist, 99);
        int ok = lost == 0 && mstep.reordered == 0 && mstep.errors == 0 && ndropped == 0 &&
                 p99 < limit && mstep.sent >= 0.97 * mstep.rate * secs;
        if (lost || mstep.reordered || ndropped)
            rc = 1;
        printf("{\"scenario\":\"msg\",\"label\":\"%s\",\"users\":%d,\"step\":%d,\"rate\":%.0f,"
               "\"secs\":%.3f,\"sent\":%ld,\"delivered\":%ld,\"per_s\":%.1f,\"p50_ms\":%.3f,"
               "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"lost\":%ld,\"reordered\":%ld,"
               "\"gaps\":%ld,\"errors\":%ld,\"dropped\":%d,\"ok\":%s,\"gen_cpu_s\":%.3f,"
               "\"sm\":%d,\"sm_ack_every\":%d,",
               cfg.label, cfg.users, st, mstep.rate, secs, mstep.sent, mstep.delivered,
               (double)mstep.delivered / secs, sbb_hist_pct(&mstep.hist, 50) * 1e3, p99 * 1e3,
               sbb_hist_pct(&mstep.hist, 99.9) * 1e3, mstep.hist.max * 1e3, lost, mstep.reordered,
               mstep.gaps, mstep.errors, ndropped, ok ? "true" : "false", gen, sbb_opt.sm,
               sbb_opt.sm ? sbb_opt.sm_ack_every : 0);
        sbb_print_procs(stdout);
        printf("}\n");
        fflush(stdout);
        fprintf(stderr, "sbbench: msg %.0f/s: %.0f/s delivered, p50 %.2f ms, p99 %.2f ms, "
                "p99.9 %.2f ms, lost %ld, reordered %ld, gen cpu %.0f%%%s\n",
                mstep.rate, (double)mstep.delivered / secs, sbb_hist_pct(&mstep.hist, 50) * 1e3,
                p99 * 1e3, sbb_hist_pct(&mstep.hist, 99.9) * 1e3, lost, mstep.reordered,
                100 * gen / secs, ok ? "" : " (not sustained)");
        if (!ok && cfg.stop_on_fail)
            break;
        if (nonline == 0)
            break;
    }
    close_all();
    return rc;
}

/* ---- scenario: idle connections ------------------------------------------------- */

/* One worker's share: log in, report "online failed" on `up`, hold until
 * `ctl` reaches EOF (the parent is done measuring), report "dropped". */
static ev_io ctl_io;

static void ctl_cb(struct ev_loop *l, ev_io *w, int ev)
{
    char b[16];
    if (read(w->fd, b, sizeof(b)) <= 0) {
        ev_io_stop(l, w);
        loop_break();
    }
}

static int idle_worker(int up, int ctl, double rate)
{
    int lrc = login_all();
    dprintf(up, "%d %d %s\n", nonline, nfailed, last_error[0] ? last_error : "-");
    /* --chat-rate: the first chat_pct % of this worker's users send to the
     * next one of them (a ring) while the others stay idle */
    int chat = rate > 0 && lrc >= 0;
    if (chat) {
        msg_n = (int)(cfg.users * cfg.chat_pct / 100.0 + 0.5);
        if (msg_n < 2)
            msg_n = 2 <= cfg.users ? 2 : cfg.users;
        to_jid = calloc((size_t)msg_n, sizeof(*to_jid));
        for (int i = 0; i < msg_n; i++)
            if (asprintf(&to_jid[i], "%s%d@%s", sbb_opt.prefix,
                         sbb_opt.first + (i + 1) % msg_n, sbb_opt.domain) < 0)
                return 2;
        sbb_ev.message = msg_received;
        sbb_ev.failed = msg_failed;
        memset(&mstep, 0, sizeof(mstep));
        mstep.rate = rate;
        sbb_run_for(1.0);                  /* initial presences settle */
        mstep.t0 = sbb_now();
        ev_timer_init(&tick, msg_tick_cb, 0.001, 0.001);
        ev_timer_start(sbb_loop, &tick);
    }
    ev_io_init(&ctl_io, ctl_cb, ctl, EV_READ);
    ev_io_start(sbb_loop, &ctl_io);
    ev_run(sbb_loop, 0);
    if (chat) {
        ev_timer_stop(sbb_loop, &tick);
        double end = sbb_now() + cfg.drain;
        while (mstep.delivered < mstep.sent && sbb_now() < end && nonline > 0)
            sbb_run_for(0.02);
    }
    /* dropped, then the chat: sent delivered reordered errors secs, histogram */
    dprintf(up, "%d %ld %ld %ld %ld %.3f", ndropped, mstep.sent, mstep.delivered,
            mstep.reordered, mstep.errors, chat ? sbb_now() - mstep.t0 : 0.0);
    for (int b = 0; b < SBB_HBUCKETS; b++)
        dprintf(up, " %llu", (unsigned long long)mstep.hist.b[b]);
    dprintf(up, " %.6f\n", mstep.hist.max);
    sbb_scram_save(sbb_opt.scram_cache);
    close_all();
    return lrc < 0 ? 1 : 0;
}

/* Fork `procs` workers (one process holds fewer fds than RLIMIT_NOFILE
 * allows); the parent only measures. */
static int scenario_idle(int procs)
{
    sbb_watch_begin();
    long base[SBB_MAXWATCH];
    for (int i = 0; i < sbb_nwatch; i++)
        base[i] = sbb_watch[i].rss0_kb;
    double t0 = sbb_now();
    int up[64], ctl[64], total = cfg.users, first = sbb_opt.first;
    pid_t pids[64];
    fflush(NULL);
    for (int w = 0; w < procs; w++) {
        int a[2], b[2];
        if (pipe(a) < 0 || pipe(b) < 0)
            return 2;
        int lo = first + (int)((long)total * w / procs), hi = first + (int)((long)total * (w + 1) / procs);
        pids[w] = fork();
        if (pids[w] == 0) {
            close(a[0]);
            close(b[1]);
            for (int k = 0; k < w; k++)
                close(ctl[k]);
            sbb_opt.first = lo;
            cfg.users = hi - lo;
            ev_loop_fork(sbb_loop);
            _exit(idle_worker(a[1], b[0], cfg.chat_rate / procs));
        }
        close(a[1]);
        close(b[0]);
        up[w] = a[0];
        ctl[w] = b[1];
    }
    int online = 0, failed = 0;
    char line[256], err[64] = "";
    FILE *f[64];
    for (int w = 0; w < procs; w++) {
        int on = 0, fl = 0;
        f[w] = fdopen(up[w], "r");
        if (fgets(line, sizeof(line), f[w]) && sscanf(line, "%d %d %63s", &on, &fl, err) >= 2) {
            online += on;
            failed += fl;
        } else {
            failed += total / procs;
        }
    }
    double login_secs = sbb_now() - t0;
    fprintf(stderr, "sbbench: idle %d/%d online in %.1f s, holding %.0f s\n", online, total,
            login_secs, cfg.settle + cfg.hold);
    sbb_run_for(cfg.settle);
    sbb_run_for(cfg.hold);
    sbb_watch_end();
    for (int i = 0; i < sbb_nwatch; i++)
        sbb_watch[i].rss0_kb = base[i];
    int dropped = 0;
    long csent = 0, cdeliv = 0, creord = 0, cerr = 0;
    double csecs = 0;
    static struct sbb_hist chist;
    static char big[SBB_HBUCKETS * 24 + 256];
    for (int w = 0; w < procs; w++)
        close(ctl[w]);                 /* every worker stops chatting at once */
    for (int w = 0; w < procs; w++) {
        int d = 0, off = 0;
        long a1, a2, a3, a4;
        double sc;
        if (fgets(big, sizeof(big), f[w]) &&
            sscanf(big, "%d %ld %ld %ld %ld %lf%n", &d, &a1, &a2, &a3, &a4, &sc, &off) == 6) {
            dropped += d;
            csent += a1; cdeliv += a2; creord += a3; cerr += a4;
            if (sc > csecs)
                csecs = sc;
            char *p = big + off;
            for (int b = 0; b < SBB_HBUCKETS; b++) {
                unsigned long long v = strtoull(p, &p, 10);
                chist.b[b] += v;
                chist.n += v;
            }
            double mx = strtod(p, NULL);
            if (mx > chist.max)
                chist.max = mx;
        }
        fclose(f[w]);
    }
    for (int w = 0; w < procs; w++)
        waitpid(pids[w], NULL, 0);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    double gen = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    static const char *const tpn[] = {"tcp", "ws", "bosh"};
    printf("{\"scenario\":\"idle\",\"label\":\"%s\",\"transport\":\"%s\",\"tls\":%d,"
           "\"mech\":\"%s\",\"users\":%d,"
           "\"online\":%d,\"failed\":%d,\"dropped\":%d,\"held_s\":%.0f,\"login_s\":%.2f,"
           "\"last_error\":\"%s\",\"gen_cpu_s\":%.3f,\"workers\":%d,\"sources\":%d,"
           "\"chat_rate\":%.0f,\"chat_pct\":%g,\"chat_secs\":%.1f,\"chat_sent\":%ld,"
           "\"chat_delivered\":%ld,\"chat_reordered\":%ld,\"chat_errors\":%ld,"
           "\"chat_p50_ms\":%.3f,\"chat_p99_ms\":%.3f,\"chat_max_ms\":%.3f,",
           cfg.label, tpn[sbb_opt.transport], sbb_opt.tls, sbb_mech_name(), total, online, failed,
           dropped, cfg.hold, login_secs, strcmp(err, "-") ? err : "", gen, procs, sbb_opt.nsrc,
           cfg.chat_rate, cfg.chat_pct, csecs, csent, cdeliv, creord, cerr,
           sbb_hist_pct(&chist, 50) * 1e3, sbb_hist_pct(&chist, 99) * 1e3, chist.max * 1e3);
    sbb_print_procs(stdout);
    printf("}\n");
    fflush(stdout);
    fprintf(stderr, "sbbench: idle %d/%d online after %.0f s hold, %d dropped, %d failed\n",
            online - dropped, total, cfg.hold, dropped, failed);
    if (cfg.chat_rate > 0)
        fprintf(stderr, "sbbench: idle chat %.0f/s: %ld sent, %ld delivered, p50 %.2f ms, "
                "p99 %.2f ms\n", cfg.chat_rate, csent, cdeliv, sbb_hist_pct(&chist, 50) * 1e3,
                sbb_hist_pct(&chist, 99) * 1e3);
    return failed || dropped ? 1 : 0;
}

/* ---- scenario: chaos (chaos.c) ------------------------------------------------- */

static int scenario_chaos(void)
{
    struct sbb_chaos_cfg c = {
        .users = cfg.users, .window = cfg.window, .body = cfg.body,
        .max_attempts = cfg.max_attempts, .rate = cfg.rates[0], .secs = cfg.duration,
        .drain = cfg.drain, .check = cfg.check, .label = cfg.label};
    return sbb_chaos_run(&c);
}

/* ---- scenario: resumption storm (resume.c) --------------------------------------- */

static int scenario_resume(void)
{
    struct sbb_resume_cfg c = {
        .users = cfg.users, .senders = cfg.senders, .window = cfg.window, .body = cfg.body,
        .before = cfg.before, .dead = cfg.dead, .kill_pid = cfg.kill_pid, .drain = cfg.drain,
        .settle = cfg.settle,
        .label = cfg.label};
    return sbb_resume_run(&c);
}

/* ---- scenarios: fan-out (fanout.c) ------------------------------------------------ */

static int scenario_fanout(int muc)
{
    struct sbb_fanout_cfg c = {
        .users = cfg.users, .window = cfg.window, .senders = cfg.senders, .rate = cfg.rates[0],
        .secs = cfg.step, .drain = cfg.drain, .room = muc ? cfg.room : NULL, .label = cfg.label};
    if (muc && !cfg.room) {
        fprintf(stderr, "sbbench: muc needs --room ROOM@SERVICE\n");
        return 2;
    }
    return muc ? sbb_fanout_muc(&c) : sbb_fanout_pep(&c);
}

/* ---- options --------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
        "usage: sbbench [options] login|msg|idle|chaos|resume|muc|pep\n"
        "  -H HOST  -p PORT[,PORT..]  -d DOMAIN  -u USERPREFIX  -w PASSPREFIX  --first N\n"
        "  --tls (STARTTLS)  --plain (SASL PLAIN; default SCRAM-SHA-1)\n"
        "  --transport tcp|tls|ws|bosh   ws: RFC 7395 over -p (the bosh port), bosh:\n"
        "                 XEP-0206 hold=1; tls = --tls   --path P  the ws/bosh URL path\n"
        "  --mech scram-sha-1|scram-sha-256|scram-sha-256-plus|plain|x-oauth2|oauthbearer|fast\n"
        "                 the SASL mechanism (-plus: tls-exporter binding, needs --tls)\n"
        "  --token-file F x-oauth2: \"USER_NUMBER TOKEN\" lines (sbctl token issue)\n"
        "  --jwt-key F    oauthbearer: HS256 secret; the generator signs a JWT per login\n"
        "  fast: login first logs every user in once with SASL2 PLAIN asking for a\n"
        "        XEP-0484 token, then the steps log in with HT-SHA-256-NONE (SASL2, Bind 2)\n"
        "  --src A,B,..   source addresses (user i binds to the (i mod n)th)\n"
        "  idle: --workers N  processes holding the connections [1; 2 above 15,000]\n"
        "        --chat-rate R  messages/s in total among --chat-pct P %% of them [1]\n"
        "  --users N      users online (msg), held (idle), pool (login)   [1000]\n"
        "  --rates A,B,.. arrivals/s (login) or messages/s (msg), one step each\n"
        "  --step S       seconds per step [5]     --hold S  idle hold [10]\n"
        "  --p99 MS       a step fails above this p99 [login 500, msg 50]\n"
        "  --no-stop      keep stepping after a failed step\n"
        "  --window N     logins in flight while connecting users [200]\n"
        "  --body N       message body bytes [64]   --drain S  wait for stragglers [5]\n"
        "  --watch NAME:PID[+]   report CPU/RSS of a process (+: with children)\n"
        "  --scram-cache FILE    keep derived SCRAM keys across runs\n"
        "  --label TEXT   copied into every JSON line\n"
        "  chaos: --rates R (the first rate)  --duration S [120]  --drain S\n"
        "         --relogin-max N  login attempts per lost connection [40]\n"
        "         --check  at the end, log the recipients of what is missing in anew\n"
        "         (offline storage) and look for it in their archive (MAM)\n"
        "         with --sm: resume after a drop, re-send what was not acknowledged\n"
        "  --sm           XEP-0198: enable (resumable) after bind, answer <r/>\n"
        "  --sm-ack-every N  with --sm: an <r/> after every N stanzas sent [5]\n"
        "  resume: --users N resumable on the first port, --senders N [50] on the\n"
        "         second; --before N / --dead N messages per user before / after\n"
        "         the kill [3/3]; --kill PID  the front-end to SIGKILL; --drain S;\n"
        "         --settle S  wait before the last message (past the lease) [3]\n"
        "  muc:   --users N occupants of --room ROOM@SERVICE, --senders N of them\n"
        "         sending --rates R groupchat messages/s in total for --step S\n"
        "  pep:   user --first publishes --rates R tunes/s for --step S to the other\n"
        "         users-1 (its contacts: roster rows made beforehand)\n");
    exit(2);
}

static void parse_rates(const char *s)
{
    cfg.nrates = 0;
    for (const char *p = s; *p && cfg.nrates < 64;) {
        cfg.rates[cfg.nrates++] = strtod(p, (char **)&p);
        while (*p == ',' || *p == ' ')
            p++;
    }
}

static void parse_ports(const char *s)
{
    sbb_opt.nports = 0;
    for (const char *p = s; *p && sbb_opt.nports < 16;) {
        sbb_opt.ports[sbb_opt.nports++] = (int)strtol(p, (char **)&p, 10);
        while (*p == ',')
            p++;
    }
}

/* --src A,B,..: loopback (or other local) source addresses */
static int parse_src(const char *s)
{
    char buf[2048], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", s);
    sbb_opt.nsrc = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (sbb_opt.nsrc >= 64 || inet_pton(AF_INET, t, &sbb_opt.src[sbb_opt.nsrc]) != 1)
            return -1;
        sbb_opt.nsrc++;
    }
    return sbb_opt.nsrc ? 0 : -1;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"first", 1, 0, 'f'}, {"tls", 0, 0, 'T'}, {"plain", 0, 0, 'P'}, {"users", 1, 0, 'n'},
        {"rates", 1, 0, 'r'}, {"step", 1, 0, 's'}, {"hold", 1, 0, 'h'}, {"p99", 1, 0, '9'},
        {"no-stop", 0, 0, 'N'}, {"window", 1, 0, 'W'}, {"body", 1, 0, 'b'}, {"drain", 1, 0, 'D'},
        {"watch", 1, 0, 'A'}, {"scram-cache", 1, 0, 'C'}, {"label", 1, 0, 'L'},
        {"settle", 1, 0, 'S'}, {"login-timeout", 1, 0, 't'},
        {"duration", 1, 0, 'U'}, {"relogin-max", 1, 0, 'R'}, {"sm", 0, 0, 'M'},
        {"sm-ack-every", 1, 0, 'K'}, {"senders", 1, 0, 'E'}, {"before", 1, 0, 'B'},
        {"dead", 1, 0, 'X'}, {"kill", 1, 0, 'k'}, {"room", 1, 0, 'O'}, {"mech", 1, 0, 'm'},
        {"src", 1, 0, 'I'}, {"workers", 1, 0, 'J'}, {"chat-rate", 1, 0, 'c'},
        {"chat-pct", 1, 0, 'Q'}, {"check", 0, 0, 'Z'}, {"token-file", 1, 0, 'F'},
        {"jwt-key", 1, 0, 'G'}, {"transport", 1, 0, 'y'}, {"path", 1, 0, 'x'}, {0, 0, 0, 0}};
    int o;
    cfg.label = "";
    parse_rates("1000");
    while ((o = getopt_long(argc, argv, "H:p:d:u:w:", lo, NULL)) != -1) {
        switch (o) {
        case 'H': sbb_opt.host = optarg; break;
        case 'p': parse_ports(optarg); break;
        case 'd': sbb_opt.domain = optarg; break;
        case 'u': sbb_opt.prefix = optarg; break;
        case 'w': sbb_opt.passprefix = optarg; break;
        case 'f': sbb_opt.first = atoi(optarg); break;
        case 'T': sbb_opt.tls = 1; break;
        case 'P': sbb_opt.plain = 1; break;
        case 'n': cfg.users = atoi(optarg); break;
        case 'r': parse_rates(optarg); break;
        case 's': cfg.step = atof(optarg); break;
        case 'h': cfg.hold = atof(optarg); break;
        case '9': cfg.p99_limit = atof(optarg) / 1e3; break;
        case 'N': cfg.stop_on_fail = 0; break;
        case 'W': cfg.window = atoi(optarg); break;
        case 'b': cfg.body = atoi(optarg); break;
        case 'D': cfg.drain = atof(optarg); break;
        case 'A': if (sbb_watch_add(optarg) < 0) usage(); break;
        case 'C': sbb_opt.scram_cache = optarg; break;
        case 'L': cfg.label = optarg; break;
        case 'S': cfg.settle = atof(optarg); break;
        case 't': sbb_opt.login_timeout = atof(optarg); break;
        case 'U': cfg.duration = atof(optarg); break;
        case 'R': cfg.max_attempts = atoi(optarg); break;
        case 'M': sbb_opt.sm = 1; break;
        case 'K': sbb_opt.sm_ack_every = atoi(optarg); break;
        case 'E': cfg.senders = atoi(optarg); break;
        case 'B': cfg.before = atoi(optarg); break;
        case 'X': cfg.dead = atoi(optarg); break;
        case 'k': cfg.kill_pid = atoi(optarg); break;
        case 'O': cfg.room = optarg; break;
        case 'm':
            if (strcasecmp(optarg, "scram-sha-256") == 0)
                sbb_opt.sha256 = 1;
            else if (strcasecmp(optarg, "scram-sha-256-plus") == 0)
                sbb_opt.sha256 = sbb_opt.plus = 1;
            else if (strcasecmp(optarg, "plain") == 0)
                sbb_opt.plain = 1;
            else if (strcasecmp(optarg, "x-oauth2") == 0)
                sbb_opt.xoauth2 = 1;
            else if (strcasecmp(optarg, "oauthbearer") == 0)
                sbb_opt.oauthbearer = 1;
            else if (strcasecmp(optarg, "fast") == 0 || strcasecmp(optarg, "ht-sha-256-none") == 0)
                sbb_opt.fast = 1;
            else if (strcasecmp(optarg, "scram-sha-1") != 0)
                usage();
            break;
        case 'F':
            if (sbb_token_load(optarg) < 0) {
                fprintf(stderr, "sbbench: cannot read %s\n", optarg);
                return 2;
            }
            break;
        case 'G':
            if (sbb_jwt_key_load(optarg) < 0) {
                fprintf(stderr, "sbbench: cannot read a key from %s\n", optarg);
                return 2;
            }
            break;
        case 'I': if (parse_src(optarg) < 0) usage(); break;
        case 'J': cfg.workers = atoi(optarg); break;
        case 'c': cfg.chat_rate = atof(optarg); break;
        case 'Q': cfg.chat_pct = atof(optarg); break;
        case 'Z': cfg.check = 1; break;
        case 'y':
            if (strcmp(optarg, "tcp") == 0)
                sbb_opt.transport = SBB_TP_TCP;
            else if (strcmp(optarg, "tls") == 0)
                sbb_opt.tls = 1;
            else if (strcmp(optarg, "ws") == 0)
                sbb_opt.transport = SBB_TP_WS;
            else if (strcmp(optarg, "bosh") == 0)
                sbb_opt.transport = SBB_TP_BOSH;
            else
                usage();
            break;
        case 'x': sbb_opt.path = optarg; break;
        default: usage();
        }
    }
    if (sbb_opt.transport != SBB_TP_TCP && sbb_opt.tls) {
        fprintf(stderr, "sbbench: --tls is for TCP only (no wss/https here)\n");
        return 2;
    }
    if (optind != argc - 1 || cfg.users < 1 || cfg.body < 40 || cfg.body > 400 || sbb_opt.nports < 1)
        usage();
    cfg.scenario = argv[optind];
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (sbb_tls_init() < 0) {
        fprintf(stderr, "sbbench: cannot set up TLS\n");
        return 2;
    }
    sbb_loop = ev_default_loop(EVFLAG_AUTO);
    ev_timer_init(&deadline, deadline_cb, 1, 0);
    sbb_scram_load(sbb_opt.scram_cache);
    int rc;
    if (strcmp(cfg.scenario, "login") == 0)
        rc = scenario_login();
    else if (strcmp(cfg.scenario, "msg") == 0)
        rc = scenario_msg();
    else if (strcmp(cfg.scenario, "idle") == 0)
        rc = scenario_idle(cfg.workers > 0 ? (cfg.workers > 64 ? 64 : cfg.workers)
                                           : cfg.users > 15000 ? 2 : 1);
    else if (strcmp(cfg.scenario, "chaos") == 0)
        rc = scenario_chaos();
    else if (strcmp(cfg.scenario, "resume") == 0)
        rc = scenario_resume();
    else if (strcmp(cfg.scenario, "muc") == 0 || strcmp(cfg.scenario, "pep") == 0)
        rc = scenario_fanout(cfg.scenario[0] == 'm');
    else
        usage();
    if (strcmp(cfg.scenario, "idle") != 0)
        sbb_scram_save(sbb_opt.scram_cache);
    return rc;
}
