/* fanout.c — one stanza in, many out: the two fan-out scenarios.
 *
 *   muc  `users` clients join one room (XEP-0045, no history), then the
 *        first `senders` of them send groupchat messages at `rate`/s in
 *        total for `secs`; every occupant (the sender too: the room
 *        reflects) should get each one. Counted: messages in, deliveries
 *        out, the latency of every delivery (sent → read by the occupant).
 *   pep  user `first` is the publisher, the other users-1 its contacts
 *        (the roster rows, subscription both, are made beforehand: bench.py
 *        writes them in PostgreSQL). Each contact shows XEP-0115 caps with
 *        http://jabber.org/protocol/tune+notify and answers the server's
 *        disco#info for them; once every contact got a warm-up event, the
 *        publisher publishes a tune at `rate`/s for `secs`: deliveries and
 *        their latency as above.
 * Bodies/titles carry "<seq> <send time>", so every delivery is timed by
 * the clock it was stamped with (one process, CLOCK_MONOTONIC). */
#define _GNU_SOURCE
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbbench.h"

#define NS_TUNE "http://jabber.org/protocol/tune"
#define CAPS_NODE "https://switchboard.test/sbbench"

static const struct sbb_fanout_cfg *fc;
static struct sbb_conn **uc;
static uint8_t *ready;                  /* muc: joined; pep: got an event */
static int next_login, inflight, online, failed, dropped, nready;
static long sent, delivered, errors, late;
static double t0;
static int measuring;
static struct sbb_hist hist;
static char last_error[64];
static char caps_ver[64];

/* ---- logging in ------------------------------------------------------------- */

static void fo_fill(void)
{
    while (inflight < fc->window && next_login < fc->users) {
        int i = next_login++;
        struct sbb_conn *c = sbb_conn_start(sbb_opt.first + i);
        if (!c) {
            failed++;
            snprintf(last_error, sizeof last_error, "connect");
            continue;
        }
        c->slot = i;
        c->peer = -1;
        uc[i] = c;
        inflight++;
    }
}

static void fo_online(struct sbb_conn *c)
{
    inflight--;
    online++;
    c->peer = -2;
    fo_fill();
}

static void fo_failed(struct sbb_conn *c, const char *why)
{
    uc[c->slot] = NULL;
    if (!(c->state == SBB_DEAD && c->closed_ok)) {
        snprintf(last_error, sizeof last_error, "%s", why);
        if (c->peer == -2) {
            dropped++;
            online--;
        } else {
            inflight--;
            failed++;
            fo_fill();
        }
    }
    sbb_conn_free(c);
}

/* Run the loop until cond() or secs passed; 1 when cond() held. */
static int fo_until(int (*cond)(void), double secs)
{
    double end = sbb_now() + secs;
    while (!cond() && sbb_now() < end)
        sbb_run_for(0.05);
    return cond();
}

static int all_logged(void)
{
    return online + failed + dropped >= fc->users;
}

static int all_ready(void)
{
    return nready >= fc->users - (fc->room ? 0 : 1);
}

static int fo_login(void)
{
    uc = calloc((size_t)fc->users, sizeof *uc);
    ready = calloc((size_t)fc->users, 1);
    if (!uc || !ready)
        return -1;
    sbb_ev.online = fo_online;
    sbb_ev.failed = fo_failed;
    double t = sbb_now();
    fo_fill();
    fo_until(all_logged, 30 + fc->users * 0.05);
    fprintf(stderr, "sbbench: %d/%d users online in %.1f s (%d failed%s%s)\n", online,
            fc->users, sbb_now() - t, failed, failed ? ", last: " : "", failed ? last_error : "");
    return online == fc->users ? 0 : -1;
}

static void fo_close(void)
{
    for (int i = 0; i < fc->users; i++)
        if (uc[i])
            sbb_conn_close(uc[i]);
    double end = sbb_now() + 3;
    while (sbb_now() < end) {
        int left = 0;
        for (int i = 0; i < fc->users; i++)
            left += uc[i] != NULL;
        if (!left)
            break;
        sbb_run_for(0.1);
    }
    for (int i = 0; i < fc->users; i++)
        if (uc[i])
            sbb_conn_free(uc[i]);
}

/* The value of attribute `name` in the element's start tag, into out. */
static int fo_attr(const char *el, size_t len, const char *name, char *out, size_t cap)
{
    const char *end = memchr(el, '>', len);
    size_t nl = strlen(name);
    for (const char *p = el + 1; end && p + nl + 2 < end; p++) {
        if (p[-1] == ' ' && !strncmp(p, name, nl) &&
            p[nl] == '=' && (p[nl + 1] == '\'' || p[nl + 1] == '"')) {
            const char *v = p + nl + 2, *q = memchr(v, p[nl + 1], (size_t)(end - v));
            if (!q || (size_t)(q - v) >= cap)
                return -1;
            memcpy(out, v, (size_t)(q - v));
            out[q - v] = '\0';
            return 0;
        }
    }
    return -1;
}

/* A delivery: "<marker><seq> <time>" somewhere in the stanza. */
static void fo_delivery(const char *el, size_t len, const char *marker)
{
    if (memmem(el, len, "type='error'", 12) || memmem(el, len, "type=\"error\"", 12)) {
        errors++;
        return;
    }
    const char *b = memmem(el, len, marker, strlen(marker));
    unsigned seq;
    double t;
    if (!b || sscanf(b + strlen(marker), "%u %lf", &seq, &t) != 2)
        return;
    if (!measuring || t < t0) {
        late++;
        return;
    }
    delivered++;
    sbb_hist_add(&hist, sbb_now() - t);
}

/* ---- the measured window (both scenarios) ---------------------------------------- */

typedef void (*fo_send_fn)(void);
static fo_send_fn fo_send;
static ev_timer fo_tick;

static void fo_tick_cb(struct ev_loop *l, ev_timer *w, int ev)
{
    long due = (long)(fc->rate * (sbb_now() - t0)) - sent;
    for (; due > 0; due--)
        fo_send();
}

static long fo_expected(void);

static int all_delivered(void)
{
    return delivered >= fo_expected();
}

static int fo_measure(const char *scenario, int receivers, double setup_s)
{
    memset(&hist, 0, sizeof hist);
    sbb_watch_begin();
    double cpu0 = sbb_self_cpu();
    measuring = 1;
    t0 = sbb_now();
    ev_timer_init(&fo_tick, fo_tick_cb, 0.001, 0.001);
    ev_timer_start(sbb_loop, &fo_tick);
    sbb_run_for(fc->secs);
    ev_timer_stop(sbb_loop, &fo_tick);
    double secs = sbb_now() - t0;
    fo_until(all_delivered, fc->drain);
    double span = sbb_now() - t0;
    sbb_watch_end();
    double gen = sbb_self_cpu() - cpu0;
    long expected = fo_expected();
    int ok = delivered == expected && !errors && !dropped;
    printf("{\"scenario\":\"%s\",\"label\":\"%s\",\"users\":%d,\"receivers\":%d,\"senders\":%d,"
           "\"rate\":%.0f,\"secs\":%.3f,\"span_s\":%.3f,\"setup_s\":%.1f,\"sent\":%ld,"
           "\"in_per_s\":%.1f,\"expected\":%ld,\"delivered\":%ld,\"out_per_s\":%.1f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%ld,\"dropped\":%d,"
           "\"ok\":%s,\"gen_cpu_s\":%.3f,",
           scenario, fc->label, fc->users, receivers, fc->room ? fc->senders : 1, fc->rate, secs,
           span, setup_s, sent, sent / secs, expected, delivered, delivered / span,
           sbb_hist_pct(&hist, 50) * 1e3, sbb_hist_pct(&hist, 99) * 1e3, hist.max * 1e3, errors,
           dropped, ok ? "true" : "false", gen);
    sbb_print_procs(stdout);
    printf("}\n");
    fflush(stdout);
    fprintf(stderr, "sbbench: %s %.0f/s in to %d: %.0f deliveries/s, p50 %.2f ms, p99 %.2f ms, "
            "%ld of %ld delivered\n", scenario, sent / secs, receivers, delivered / span,
            sbb_hist_pct(&hist, 50) * 1e3, sbb_hist_pct(&hist, 99) * 1e3, delivered, expected);
    return ok ? 0 : 1;
}

/* ---- muc -------------------------------------------------------------------------- */

static int join_next, mrr;
static int room_open;                   /* the creator accepted the defaults (or no 201) */

/* The first join alone: a new room is locked (XEP-0045 §10.1.2) until its
 * creator submits the instant-room form, and the others join after that. */
static void muc_join_fill(void)
{
    while (join_next < fc->users && join_next - nready < (room_open ? fc->window : 1)) {
        int i = join_next++;
        char p[512];
        int n = snprintf(p, sizeof p, "<presence to='%s/n%d'><x xmlns='http://jabber.org/"
                         "protocol/muc'><history maxstanzas='0'/></x></presence>", fc->room, i);
        if (uc[i])
            sbb_conn_stanza(uc[i], p, (size_t)n);
    }
}

static long join_errors;

static void muc_other(struct sbb_conn *c, const char *el, size_t len)
{
    if (!ready[c->slot] && (memmem(el, len, "type='error'", 12) || memmem(el, len, "type=\"error\"", 12))) {
        join_errors++;                  /* reported; the join is not retried */
        snprintf(last_error, sizeof last_error, "join-error");
        return;
    }
    if (!room_open && ready[c->slot] && len > 3 && !memcmp(el, "<iq", 3) &&
        memmem(el, len, "sbb-instant", 11)) {
        room_open = 1;                  /* answered (an error too: joins will say) */
        muc_join_fill();
        return;
    }
    if (ready[c->slot] || (!memmem(el, len, "code='110'", 10) && !memmem(el, len, "code=\"110\"", 10)))
        return;
    ready[c->slot] = 1;
    nready++;
    if (!room_open && (memmem(el, len, "code='201'", 10) || memmem(el, len, "code=\"201\"", 10))) {
        char q[600];
        int n = snprintf(q, sizeof q, "<iq type='set' id='sbb-instant' to='%s'><query xmlns='"
                         "http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' "
                         "type='submit'/></query></iq>", fc->room);
        sbb_conn_stanza(c, q, (size_t)n);
        return;
    }
    room_open = 1;
    muc_join_fill();
}

static void muc_message(struct sbb_conn *c, const char *el, size_t len)
{
    fo_delivery(el, len, "<body>G ");
}

static void muc_send(void)
{
    int i = mrr;
    mrr = (mrr + 1) % fc->senders;
    char m[600];
    int n = snprintf(m, sizeof m, "<message to='%s' type='groupchat'><body>G %ld %.9f "
                     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx</body></message>", fc->room, sent, sbb_now());
    sent++;
    if (uc[i])
        sbb_conn_stanza(uc[i], m, (size_t)n);
}

static long fo_expected(void)
{
    return sent * (fc->room ? nready : fc->users - 1);
}

int sbb_fanout_muc(const struct sbb_fanout_cfg *cfg)
{
    fc = cfg;
    if (fc->senders < 1 || fc->senders > fc->users || !fc->room)
        return 2;
    if (fo_login() < 0)
        goto setup_failed;
    sbb_ev.other = muc_other;
    sbb_ev.message = muc_message;
    double t = sbb_now();
    muc_join_fill();
    if (!fo_until(all_ready, 30 + fc->users * 0.1)) {
        snprintf(last_error, sizeof last_error, "joined %d of %d, %ld join errors", nready,
                 fc->users, join_errors);
        goto setup_failed;
    }
    double setup = sbb_now() - t;
    fprintf(stderr, "sbbench: %d occupants joined %s in %.1f s\n", nready, fc->room, setup);
    sbb_run_for(1.0);                   /* the join presences settle */
    fo_send = muc_send;
    int rc = fo_measure("muc", nready, setup);
    fo_close();
    return rc;
setup_failed:
    printf("{\"scenario\":\"muc\",\"label\":\"%s\",\"setup_failed\":true,\"online\":%d,"
           "\"joined\":%d,\"last_error\":\"%s\"}\n", fc->label, online, nready, last_error);
    return 2;
}

/* ---- pep -------------------------------------------------------------------------- */

static const char *const caps_features[] = {   /* sorted (XEP-0115 §5.1) */
    "http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info", NS_TUNE,
    NS_TUNE "+notify",
};

static void caps_compute(void)
{
    struct sha1_ctx s;
    uint8_t d[SHA1_DIGEST_SIZE];
    sha1_init(&s);
    const char *ident = "client/pc//sbbench<";
    sha1_update(&s, strlen(ident), (const uint8_t *)ident);
    for (size_t i = 0; i < sizeof caps_features / sizeof *caps_features; i++) {
        sha1_update(&s, strlen(caps_features[i]), (const uint8_t *)caps_features[i]);
        sha1_update(&s, 1, (const uint8_t *)"<");
    }
    sha1_digest(&s, sizeof d, d);
    base64_encode_raw((char *)caps_ver, sizeof d, d);
    caps_ver[BASE64_ENCODE_RAW_LENGTH(sizeof d)] = '\0';
}

static void pep_other(struct sbb_conn *c, const char *el, size_t len)
{
    char id[128], from[512];
    if (!memmem(el, len, "disco#info", 10) || (!memmem(el, len, "type='get'", 10) &&
                                              !memmem(el, len, "type=\"get\"", 10)) ||
        fo_attr(el, len, "id", id, sizeof id) < 0 || fo_attr(el, len, "from", from, sizeof from) < 0)
        return;
    char r[2048];
    int n = snprintf(r, sizeof r, "<iq type='result' id='%s' to='%s'><query xmlns='http://"
                     "jabber.org/protocol/disco#info' node='" CAPS_NODE "#%s'><identity "
                     "category='client' type='pc' name='sbbench'/>", id, from, caps_ver);
    for (size_t i = 0; i < sizeof caps_features / sizeof *caps_features; i++)
        n += snprintf(r + n, sizeof r - (size_t)n, "<feature var='%s'/>", caps_features[i]);
    n += snprintf(r + n, sizeof r - (size_t)n, "</query></iq>");
    sbb_conn_write(c, r, (size_t)n);
}

static void pep_message(struct sbb_conn *c, const char *el, size_t len)
{
    if (!memmem(el, len, NS_TUNE, strlen(NS_TUNE)))
        return;
    if (!ready[c->slot] && c->slot > 0) {
        ready[c->slot] = 1;
        nready++;
    }
    fo_delivery(el, len, "<title>P ");
}

static void pep_publish(const char *title)
{
    char m[600];
    int n = snprintf(m, sizeof m, "<iq type='set' id='p%ld'><pubsub xmlns='http://jabber.org/"
                     "protocol/pubsub'><publish node='" NS_TUNE "'><item id='current'><tune "
                     "xmlns='" NS_TUNE "'><title>%s</title></tune></item></publish></pubsub></iq>",
                     sent, title);
    if (uc[0])
        sbb_conn_stanza(uc[0], m, (size_t)n);
}

static void pep_send(void)
{
    char t[64];
    snprintf(t, sizeof t, "P %ld %.9f", sent, sbb_now());
    sent++;
    pep_publish(t);
}

int sbb_fanout_pep(const struct sbb_fanout_cfg *cfg)
{
    fc = cfg;
    caps_compute();
    if (fc->users < 2 || fo_login() < 0)
        goto setup_failed;
    sbb_ev.other = pep_other;
    sbb_ev.message = pep_message;
    double t = sbb_now();
    char p[400];
    int n = snprintf(p, sizeof p, "<presence><c xmlns='http://jabber.org/protocol/caps' "
                     "hash='sha-1' node='" CAPS_NODE "' ver='%s'/></presence>", caps_ver);
    for (int i = 1; i < fc->users; i++)
        if (uc[i])
            sbb_conn_stanza(uc[i], p, (size_t)n);
    /* warm-up: publish until every contact has had an event (caps known) */
    double end = sbb_now() + 30 + fc->users * 0.05;
    while (!all_ready() && sbb_now() < end) {
        pep_publish("warm-up");
        fo_until(all_ready, 0.5);
    }
    if (!all_ready()) {
        snprintf(last_error, sizeof last_error, "events reached %d of %d", nready, fc->users - 1);
        goto setup_failed;
    }
    double setup = sbb_now() - t;
    fprintf(stderr, "sbbench: %d contacts take the publisher's events after %.1f s\n", nready,
            setup);
    sbb_run_for(0.5);
    sent = 0;
    fo_send = pep_send;
    int rc = fo_measure("pep", fc->users - 1, setup);
    fo_close();
    return rc;
setup_failed:
    printf("{\"scenario\":\"pep\",\"label\":\"%s\",\"setup_failed\":true,\"online\":%d,"
           "\"ready\":%d,\"last_error\":\"%s\"}\n", fc->label, online, nready, last_error);
    return 2;
}
