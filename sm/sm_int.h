/* sm_int.h — what the core files of the sm share among themselves (jobs,
 * the user table, the link callback); modules include only sm.h. */
#ifndef SB_SM_INT_H
#define SB_SM_INT_H

#include "sm.h"

/* jobs (core.c) */
struct sm_job *sm_job_new(struct sm_core *c, const struct env_hdr *h,
                          const char *body, size_t body_len);
void sm_job_free(struct sm_job *j);
sb_rc sm_job_parse(struct sm_job *j);
/* Offer the job to the modules and finish it unless one kept it. */
void sm_job_run(struct sm_job *j);
/* Queue an envelope's work: on its user's queue for a user's bare JID, at
 * once otherwise. */
void sm_core_submit(struct sm_core *c, const struct env_hdr *h, const char *body, size_t len);
void sm_core_on_recv(struct link *l, const struct env_hdr *h,
                     const char *body, size_t body_len, void *ud);

/* users (user.c) */
struct sm_user *sm_user_get(struct sm_core *c, const char *bare);
void sm_user_push(struct sm_user *u, struct sm_job *j);
void sm_user_run(struct sm_user *u);
int sm_user_idle(const struct sm_user *u);
/* Free every idle record; keep_resumable: not those holding a stream that
 * may be resumed (its queue lives only here: mod_sm.c). */
long sm_users_drop_idle(struct sm_core *c, int keep_resumable);
/* The set of sms changed: an idle user with resumable sessions that
 * another sm owns now can no longer be resumed here (resumptions go to the
 * owner), so its queues' unacknowledged stanzas go to that owner
 * (sm_smq_hand_over) and the user is forgotten. The number of users. */
long sm_users_hand_over_moved(struct sm_core *c);
/* Does the current set of sms (c->sm_members) hash bare to this sm? The
 * routers' rendezvous rule (common/route.h): highest rt_score, ties to the
 * smaller name. 1 while the set is unknown. */
int sm_cluster_owns(const struct sm_core *c, const char *bare);
void sm_users_free_all(struct sm_core *c);
/* Redis (re)connected: write the cached sessions back (sess:, pres:, fe:),
 * so a Redis that restarted empty knows who is online again. */
void sm_users_republish(void *core);

/* cluster (cluster.c): domains, members, bounces */
void sm_cluster_start(struct sm_core *c);
void sm_cluster_stop(struct sm_core *c);
void sm_cluster_on_members(struct sm_core *c, const char *body, size_t len);
void sm_cluster_on_bounce(struct sm_core *c, const struct env_hdr *h,
                          const char *body, size_t len);

#endif
