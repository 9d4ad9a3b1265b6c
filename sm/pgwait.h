/* pgwait.h — how the sm waits for PostgreSQL to take what it has already
 * accepted: the archive rows of mod_mam and the offline spool of
 * mod_offline. One write in flight at a time; while it fails it is sent
 * again after 1 s, doubling to 30 s (while PostgreSQL is known to be down
 * nothing is sent: the owner is asked again every second, so the first
 * write goes out within a second of the database's return). Log lines,
 * NAME being the owner's word (`mam_store`, `offline_spool`):
 *   NAME_waiting   once, a write unanswered after SM_PGWAIT_SLOW_S
 *   NAME_failed    once, at the first failure of an outage
 * and the owner logs its own `NAME_recovered` line when sm_pgwait_ok says
 * the outage is over (it knows the figures worth printing). */
#ifndef SB_SM_PGWAIT_H
#define SB_SM_PGWAIT_H

#include "sm.h"

#define SM_PGWAIT_SLOW_S 5.0

struct sm_pgwait {
    const char *name;
    struct sm_core *core;
    void (*send)(struct sm_pgwait *w);      /* (re)send the write in flight */
    long (*waiting)(const struct sm_pgwait *w);   /* for the log lines */
    ev_timer retry, watch;
    double backoff;
    unsigned flying : 1, failing : 1, slow : 1;
};

void sm_pgwait_init(struct sm_pgwait *w, struct sm_core *c, const char *name,
                    void (*send)(struct sm_pgwait *), long (*waiting)(const struct sm_pgwait *));
/* A write went out (flying): watch how long it takes. */
void sm_pgwait_sent(struct sm_pgwait *w);
/* It failed (why: the error, "no connection", "queue"): retry later. */
void sm_pgwait_failed(struct sm_pgwait *w, const char *why);
/* Nothing could be sent (PostgreSQL down): ask send() again in 1 s. */
void sm_pgwait_later(struct sm_pgwait *w);
/* It was stored. 1 when an outage (failure or slowness) just ended. */
int sm_pgwait_ok(struct sm_pgwait *w);
void sm_pgwait_stop(struct sm_pgwait *w);

#endif
