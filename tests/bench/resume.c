/* resume.c — the resumption storm (XEP-0198). K users log in on the first
 * port and enable resumable stream management; S senders log in on the
 * second. Then:
 *   before   every user gets `before` messages (each from sender i mod S),
 *            read and counted by the user, acknowledged when the server asks
 *   kill     the users' front-end is SIGKILLed (--kill PID); at once every
 *            user is sent `dead` more messages: they wait in the sm's queue
 *   storm    each user whose connection ended reconnects on the second port
 *            (at most `window` in flight), authenticates and presents
 *            <resume previd h/> with the h it counted; latency is connect →
 *            <resumed/>
 *   after    once the dead front-end's lease is surely over (`settle` s),
 *            one more message per user, live
 * Every message names its recipient and a sequence number, so at the end
 * each user must have seen 0..before+dead exactly once and in order: lost,
 * duplicates and reordered are counted. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbbench.h"

struct rs_user {
    struct sbb_conn *c;
    uint64_t seen;          /* bit per sequence number received */
    int max_seen;           /* highest sequence number received, -1 */
    uint32_t sent;          /* messages sent to it */
    uint32_t h;             /* its count when its connection ended */
    char id[64];            /* the session's resumption id */
    uint8_t resumed;
};

static const struct sbb_resume_cfg *cfg;
static struct rs_user *users;
static struct sbb_conn **senders;
static char **user_jid;
static int *rq, rq_head, rq_tail;    /* users waiting to resume, in order of their EOF */
static int next_login, inflight, online, failed_logins, phase;
static int resumed, resume_failed, drops_after, sender_drops;
static long delivered, duplicates, reordered, errors, sent_total;
static double t_start, t_kill, t_first, t_last;
static struct sbb_hist rlat;
static char last_error[64];

enum { RS_LOGIN, RS_BEFORE, RS_STORM, RS_AFTER };

static int total(void)
{
    return cfg->users + cfg->senders;
}

/* ---- logging in, resuming ---------------------------------------------------- */

static void login_fill(void)
{
    while (inflight < cfg->window && next_login < total()) {
        int i = next_login++;
        int sender = i >= cfg->users;
        struct sbb_conn *c = sbb_conn_start_on(sbb_opt.first + i, sender ? 1 : 0);
        if (!c) {
            failed_logins++;
            snprintf(last_error, sizeof(last_error), "connect");
            continue;
        }
        c->sm_want = !sender;
        c->slot = i;
        if (sender)
            senders[i - cfg->users] = c;
        else
            users[i].c = c;
        inflight++;
    }
}

static void resume_fill(void)
{
    while (inflight < cfg->window && rq_head < rq_tail) {
        int i = rq[rq_head++];
        struct rs_user *u = &users[i];
        struct sbb_conn *c = sbb_conn_start_on(sbb_opt.first + i, 1);
        if (!t_first)
            t_first = sbb_now();
        if (!c) {
            resume_failed++;
            snprintf(last_error, sizeof(last_error), "connect");
            continue;
        }
        c->slot = i;
        c->sm_want = 0;
        c->resume = 1;
        c->resume_h = u->h;
        snprintf(c->sm_id, sizeof(c->sm_id), "%s", u->id);
        u->c = c;
        inflight++;
    }
}

static void rs_online(struct sbb_conn *c)
{
    inflight--;
    c->peer = -2;
    if (c->resume) {
        struct rs_user *u = &users[c->slot];
        u->resumed = 1;
        resumed++;
        t_last = sbb_now();
        sbb_hist_add(&rlat, t_last - c->t0);
        resume_fill();
        return;
    }
    if (c->slot < cfg->users && !c->sm_on) {
        failed_logins++;                  /* logged in, but not managed */
        snprintf(last_error, sizeof(last_error), "sm-not-enabled");
    }
    online++;
    login_fill();
}

static void rs_failed(struct sbb_conn *c, const char *why)
{
    int i = c->slot, was_online = c->peer == -2;
    if (i >= cfg->users)
        senders[i - cfg->users] = NULL;
    else
        users[i].c = NULL;
    if (c->closed_ok) {
        sbb_conn_free(c);
        return;
    }
    snprintf(last_error, sizeof(last_error), "%s", why);
    if (!was_online && c->resume) {
        inflight--;
        resume_failed++;              /* <failed/>, or the attempt broke */
        resume_fill();
    } else if (!was_online) {
        inflight--;
        failed_logins++;
        login_fill();
    } else if (i >= cfg->users) {
        sender_drops++;
    } else if (phase == RS_STORM && !c->resume) {
        struct rs_user *u = &users[i];
        u->h = c->sm_h;               /* what it has read: its <resume h/> */
        snprintf(u->id, sizeof(u->id), "%s", c->sm_id);
        rq[rq_tail++] = i;
        resume_fill();
    } else {
        drops_after++;                /* lost outside the storm */
    }
    sbb_conn_free(c);
}

/* ---- messages ---------------------------------------------------------------- */

static void send_to(int i)
{
    struct rs_user *u = &users[i];
    struct sbb_conn *s = senders[i % cfg->senders];
    if (!s || s->state != SBB_ONLINE)
        return;
    char body[512], msg[1024];
    int bl = snprintf(body, sizeof(body), "B %d %u %.9f ", i, u->sent, sbb_now());
    if (bl < cfg->body) {
        memset(body + bl, 'x', (size_t)(cfg->body - bl));
        bl = cfg->body;
    }
    body[bl] = 0;
    int n = snprintf(msg, sizeof(msg), "<message to='%s' type='chat' id='r%d-%u'><body>%s</body>"
                     "</message>", user_jid[i], i, u->sent, body);
    sbb_conn_stanza(s, msg, (size_t)n);
    u->sent++;
    sent_total++;
}

static void rs_message(struct sbb_conn *c, const char *el, size_t len)
{
    if (memmem(el, len, "type='error'", 12) || memmem(el, len, "type=\"error\"", 12)) {
        errors++;
        snprintf(last_error, sizeof(last_error), "message-error");
        return;
    }
    const char *b = memmem(el, len, "<body>B ", 8);
    int rcpt;
    unsigned seq;
    double t;
    if (!b || sscanf(b + 8, "%d %u %lf", &rcpt, &seq, &t) != 3 || rcpt != c->slot || seq >= 64 ||
        t < t_start)
        return;                       /* not ours, or left offline by an earlier run */
    struct rs_user *u = &users[rcpt];
    uint64_t bit = (uint64_t)1 << seq;
    if (u->seen & bit) {
        duplicates++;
        return;
    }
    u->seen |= bit;
    delivered++;
    if ((int)seq < u->max_seen)
        reordered++;
    else
        u->max_seen = (int)seq;
}

/* Run the loop until every user has seen what was sent to it, or secs pass. */
static void wait_delivered(double secs)
{
    double end = sbb_now() + secs;
    while (delivered + errors < sent_total && sbb_now() < end)
        sbb_run_for(0.02);
}

static void send_round(int per_user)
{
    for (int k = 0; k < per_user; k++)
        for (int i = 0; i < cfg->users; i++)
            send_to(i);
}

/* ---- the run ----------------------------------------------------------------------- */

static int setup(void)
{
    users = calloc((size_t)cfg->users, sizeof(*users));
    senders = calloc((size_t)cfg->senders, sizeof(*senders));
    user_jid = calloc((size_t)cfg->users, sizeof(*user_jid));
    rq = calloc((size_t)cfg->users, sizeof(*rq));
    if (!users || !senders || !user_jid || !rq)
        return -1;
    for (int i = 0; i < cfg->users; i++) {
        users[i].max_seen = -1;
        if (asprintf(&user_jid[i], "%s%d@%s", sbb_opt.prefix, sbb_opt.first + i,
                     sbb_opt.domain) < 0)
            return -1;
    }
    sbb_ev.online = rs_online;
    sbb_ev.failed = rs_failed;
    sbb_ev.message = rs_message;
    login_fill();
    double end = sbb_now() + sbb_opt.login_timeout + total() / 100.0;
    while ((inflight > 0 || next_login < total()) && sbb_now() < end)
        sbb_run_for(0.05);
    fprintf(stderr, "sbbench: resume: %d/%d online (%d users managed on port %d, %d senders "
            "on port %d), %d failed%s%s\n", online, total(), cfg->users, sbb_opt.ports[0],
            cfg->senders, sbb_opt.ports[1 % sbb_opt.nports], failed_logins,
            failed_logins ? ", last: " : "", failed_logins ? last_error : "");
    return online == total() && !failed_logins ? 0 : -1;
}

static void close_all(void)
{
    for (int i = 0; i < cfg->users; i++)
        if (users[i].c)
            sbb_conn_close(users[i].c);
    for (int j = 0; j < cfg->senders; j++)
        if (senders[j])
            sbb_conn_close(senders[j]);
    double end = sbb_now() + 3;
    while (sbb_now() < end) {
        int left = 0;
        for (int i = 0; i < cfg->users; i++)
            left += users[i].c != NULL;
        for (int j = 0; j < cfg->senders; j++)
            left += senders[j] != NULL;
        if (!left)
            break;
        sbb_run_for(0.1);
    }
}

static void report(double gen_cpu)
{
    long expected = 0, lost = 0;
    for (int i = 0; i < cfg->users; i++) {
        expected += users[i].sent;
        lost += (long)users[i].sent - __builtin_popcountll(users[i].seen);
    }
    double storm = t_last > t_first ? t_last - t_first : 0;
    printf("{\"scenario\":\"resume\",\"label\":\"%s\",\"users\":%d,\"senders\":%d,"
           "\"window\":%d,\"before\":%d,\"dead\":%d,\"resumed\":%d,\"resume_failed\":%d,"
           "\"storm_s\":%.3f,\"per_s\":%.1f,\"first_after_kill_ms\":%.2f,\"p50_ms\":%.2f,"
           "\"p99_ms\":%.2f,\"max_ms\":%.2f,\"sent\":%ld,\"expected\":%ld,\"delivered\":%ld,"
           "\"lost\":%ld,\"duplicates\":%ld,\"reordered\":%ld,\"errors\":%ld,"
           "\"drops_after\":%d,\"sender_drops\":%d,\"last_error\":\"%s\",\"gen_cpu_s\":%.3f,",
           cfg->label, cfg->users, cfg->senders, cfg->window, cfg->before, cfg->dead, resumed,
           resume_failed, storm, storm > 0 ? resumed / storm : 0,
           t_first > 0 ? (t_first - t_kill) * 1e3 : 0, sbb_hist_pct(&rlat, 50) * 1e3,
           sbb_hist_pct(&rlat, 99) * 1e3, rlat.max * 1e3, sent_total, expected, delivered, lost,
           duplicates, reordered, errors, drops_after, sender_drops, last_error, gen_cpu);
    sbb_print_procs(stdout);
    printf("}\n");
    fflush(stdout);
    fprintf(stderr, "sbbench: resume: %d/%d resumed in %.2f s (%.0f/s), p50 %.1f ms, p99 %.1f ms, "
            "%ld/%ld delivered, lost %ld, duplicates %ld, reordered %ld, errors %ld\n",
            resumed, cfg->users, storm, storm > 0 ? resumed / storm : 0,
            sbb_hist_pct(&rlat, 50) * 1e3, sbb_hist_pct(&rlat, 99) * 1e3, delivered, expected,
            lost, duplicates, reordered, errors);
}

int sbb_resume_run(const struct sbb_resume_cfg *c)
{
    cfg = c;
    t_start = sbb_now();
    if (sbb_opt.nports < 2 || c->senders < 1 || c->kill_pid <= 0 ||
        c->before + c->dead + 1 > 64) {
        fprintf(stderr, "sbbench: resume needs two ports, --senders ≥ 1, --kill PID and at "
                "most 63 messages per user\n");
        return 2;
    }
    if (setup() < 0) {
        printf("{\"scenario\":\"resume\",\"label\":\"%s\",\"setup_failed\":true,\"online\":%d,"
               "\"failed\":%d,\"last_error\":\"%s\"}\n", c->label, online, failed_logins,
               last_error);
        return 2;
    }
    sbb_run_for(1.0);                          /* initial presences settle */
    phase = RS_BEFORE;
    send_round(c->before);
    wait_delivered(c->drain);
    sbb_run_for(0.5);                          /* the server's <r/>, our <a/> */

    sbb_watch_begin();
    double cpu0 = sbb_self_cpu();
    phase = RS_STORM;
    t_kill = sbb_now();
    if (kill(c->kill_pid, SIGKILL) < 0) {
        perror("sbbench: kill");
        return 2;
    }
    send_round(c->dead);                       /* queued in the sm while nobody holds them */
    double end = sbb_now() + c->drain + c->users / 50.0;
    while ((resumed + resume_failed < c->users || inflight) && sbb_now() < end)
        sbb_run_for(0.02);
    wait_delivered(c->drain);
    sbb_watch_end();
    double gen = sbb_self_cpu() - cpu0;

    phase = RS_AFTER;
    sbb_run_for(c->settle);                    /* past the dead front-end's lease */
    send_round(1);
    wait_delivered(c->drain);
    report(gen);
    close_all();
    return resume_failed || resumed < c->users || delivered < sent_total || duplicates ||
           reordered ? 1 : 0;
}
