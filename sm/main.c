/* main.c — sb-sm: the session manager daemon (`sb-sm -c FILE -n sm1`).
 * Everything lives in sm_core; this file only starts and stops it. */
#include "sm.h"
#include "config.h"
#include "log.h"
#include "proc.h"
#include "im.h"
#include "curve.h"
#include "metrics.h"

#define SM_STOP_GRACE 3.0    /* below stack.sh's 5 s before SIGKILL */

static ev_timer sm_drain;
static double sm_stop_at;

/* Writes already accepted (an offline message, a roster change, archive
 * rows) finish
 * before the process goes: wait until PostgreSQL and Redis owe nothing,
 * SM_STOP_GRACE at most. Envelopes arriving meanwhile are still served. */
static void sm_drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sm_core *c = w->data;
    sm_mam_flush(c);                    /* archive rows buffered off the hot path */
    size_t pg = pgev_pending(c->pg);
    long rd = rdev_pending(c->rd), mam = sm_mam_waiting(c) + sm_offline_waiting(c);
    double waited = ev_now(loop) - sm_stop_at;
    if ((pg == 0 && rd == 0 && mam == 0) || waited >= SM_STOP_GRACE) {
        if (pg || rd || mam)
            log_warn("shutdown_grace_over", "pg_pending=%zu redis_pending=%ld waiting=%ld",
                     pg, rd, mam);
        else
            log_info("shutdown_drained", "waited_ms=%.0f", waited * 1e3);
        ev_timer_stop(loop, w);
        ev_break(loop, EVBREAK_ALL);
    }
}

static void sm_on_stop(struct sb_proc *p, void *ud)
{
    if (ev_is_active(&sm_drain)) {
        ev_break(p->loop, EVBREAK_ALL);        /* second signal: now */
        return;
    }
    struct sm_core *c = ud;
    log_info("shutdown", "pg_pending=%zu redis_pending=%ld users=%u", pgev_pending(c->pg),
             rdev_pending(c->rd), HASH_COUNT(c->users));
    sm_stop_at = ev_now(p->loop);
    ev_timer_init(&sm_drain, sm_drain_cb, 0., 0.02);
    sm_drain.data = c;
    ev_timer_start(p->loop, &sm_drain);
}

/* SIGHUP (the log level is done by proc.c): IM limits now; vcard_max_size
 * and blocklist_max are read where used, so they follow the file already. */
static void sm_on_reload(struct sb_proc *p, void *ud)
{
    struct sm_core *c = ud;
    sb_curve_members_reload(c->curve);  /* who may connect to the direct socket */
    sm_im_limits_reload();
}

int main(int argc, char **argv)
{
    struct sb_proc p;
    if (sb_proc_init(&p, argc, argv, "sm") != SB_OK)
        return 2;
    struct sm_core *c = sm_core_new(p.loop, p.instance);
    if (!c)
        return 1;
    p.on_stop = sm_on_stop;
    p.on_reload = sm_on_reload;
    p.ud = c;
    sb_proc_signals(&p);
    ev_run(p.loop, 0);
    int rc = c->failed ? 1 : 0;
    sm_core_free(c);
    sb_metrics_stop();
    log_info("stop", "kind=sm rc=%d", rc);
    sb_config_free();
    return rc;
}
