/* pgwait.c — retries, back-off and the log lines of a write the sm has
 * accepted and PostgreSQL has not taken yet (pgwait.h). */
#include "pgwait.h"
#include "log.h"

#include <stddef.h>
#include <stdio.h>

#define PGWAIT_BACKOFF_MAX 30.0

static void pgwait_on_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct sm_pgwait *w = (struct sm_pgwait *)((char *)t - offsetof(struct sm_pgwait, retry));
    ev_timer_stop(loop, t);
    if (w->core && !w->core->stopping)
        w->send(w);
}

static void pgwait_on_watch(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct sm_pgwait *w = (struct sm_pgwait *)((char *)t - offsetof(struct sm_pgwait, watch));
    if (w->flying && !w->failing && !w->slow) {
        char ev[48];
        w->slow = 1;
        snprintf(ev, sizeof ev, "%s_waiting", w->name);
        log_warn(ev, "waiting=%ld in_flight_s=%.0f", w->waiting(w), SM_PGWAIT_SLOW_S);
    }
}

void sm_pgwait_init(struct sm_pgwait *w, struct sm_core *c, const char *name,
                    void (*send)(struct sm_pgwait *), long (*waiting)(const struct sm_pgwait *))
{
    *w = (struct sm_pgwait){.name = name, .core = c, .send = send, .waiting = waiting};
    ev_timer_init(&w->retry, pgwait_on_retry, 1., 0.);
    ev_timer_init(&w->watch, pgwait_on_watch, SM_PGWAIT_SLOW_S, 0.);
}

void sm_pgwait_sent(struct sm_pgwait *w)
{
    w->flying = 1;
    if (!w->core)
        return;
    ev_timer_stop(w->core->loop, &w->watch);
    ev_timer_set(&w->watch, SM_PGWAIT_SLOW_S, 0.);
    ev_timer_start(w->core->loop, &w->watch);
}

void sm_pgwait_failed(struct sm_pgwait *w, const char *why)
{
    if (!w->failing) {
        char ev[48];
        snprintf(ev, sizeof ev, "%s_failed", w->name);
        log_warn(ev, "waiting=%ld error=%s", w->waiting(w), sb_log_q(why));
    }
    w->failing = 1;
    w->backoff = w->backoff ? w->backoff * 2 : 1;
    if (w->backoff > PGWAIT_BACKOFF_MAX)
        w->backoff = PGWAIT_BACKOFF_MAX;
    if (w->core && !w->core->stopping) {
        ev_timer_stop(w->core->loop, &w->retry);
        ev_timer_set(&w->retry, w->backoff, 0.);
        ev_timer_start(w->core->loop, &w->retry);
    }
}

void sm_pgwait_later(struct sm_pgwait *w)
{
    if (!w->core || w->core->stopping || ev_is_active(&w->retry))
        return;
    ev_timer_set(&w->retry, 1., 0.);
    ev_timer_start(w->core->loop, &w->retry);
}

int sm_pgwait_ok(struct sm_pgwait *w)
{
    int was = w->failing || w->slow;
    if (w->core)
        ev_timer_stop(w->core->loop, &w->watch);
    w->flying = w->failing = w->slow = 0;
    w->backoff = 0;
    return was;
}

void sm_pgwait_stop(struct sm_pgwait *w)
{
    if (w->core) {
        ev_timer_stop(w->core->loop, &w->retry);
        ev_timer_stop(w->core->loop, &w->watch);
    }
    w->core = NULL;
}
