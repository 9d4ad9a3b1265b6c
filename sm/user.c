/* user.c — per-user records: the session cache loaded from Redis and the
 * FIFO queue that keeps one user's stanzas in order while a job waits on
 * Redis or PostgreSQL. Lifecycle: created on the first envelope for the bare
 * JID, loaded (HGETALL sess + pres), then jobs run one at a time; freed when
 * idle with no sessions, when a load failed, or when the set of sm instances
 * changes (another sm may own the user now). */
#include "sm_int.h"
#include "im.h"
#include "log.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

static void user_free(struct sm_user *u)
{
    struct sm_core *c = u->core;
    struct sm_job *j, *next;
    for (j = u->qhead; j; j = next) {
        next = j->next;
        sm_job_free(j);
    }
    if (u->cur)
        u->cur->user = NULL;  /* a pending callback finishes it alone */
    for (size_t i = 0; i < sm_nmodules; i++)
        if (sm_modules[i]->user_free)
            sm_modules[i]->user_free(u);
    for (int i = 0; i < u->nsess; i++) {
        /* Held presence would be lost with the record: out it goes (the
         * sm taking the user over reads the inactive flag from sess:). */
        if (u->sess[i].csi && !c->stopping)
            sm_csi_activate(c, u, &u->sess[i], 0);
        sm_csi_free(u->sess[i].csi);
        sm_smq_free(u->sess[i].smq);
        free(u->sess[i].resource);
        free(u->sess[i].pres);
    }
    c->nsessions -= u->nsess;
    HASH_DEL(c->users, u);
    free(u->sess);
    free(u->bare);
    free(u);
}

void sm_users_free_all(struct sm_core *c)
{
    struct sm_user *u, *tmp;
    HASH_ITER(hh, c->users, u, tmp)
        user_free(u);
}

static void user_on_republish(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("redis_republish_failed", "error=%s",
                 sb_log_q(r ? r->str : "no connection"));
}

/* Idempotent when Redis kept its data (same values written again); when it
 * lost them, sessions bound here are found again by every sm (presence
 * probes, delivery after an ownership change, front-end clean-up). */
void sm_users_republish(void *core)
{
    struct sm_core *c = core;
    struct sm_user *u, *tmp;
    long users = 0, sessions = 0;
    if (c->stopping)
        return;
    HASH_ITER(hh, c->users, u, tmp) {
        if (!u->nsess)
            continue;
        users++;
        for (int i = 0; i < u->nsess; i++) {
            const struct sm_session *s = &u->sess[i];
            char val[2 * ENV_NAME_MAX + 24];
            sm_session_record(s, val, sizeof val);
            SM_RCMD(c, user_on_republish, NULL, "HSET sess:{%s} %s %s", u->bare,
                    s->resource, val);
            char member[ENV_STR_MAX + ENV_NAME_MAX + 2];   /* one argument: "full sid" */
            snprintf(member, sizeof member, "%s/%s %s", u->bare, s->resource, s->sid);
            SM_RCMD(c, user_on_republish, NULL, "SADD fe:%s %s", s->instance, member);
            if (s->available && s->pres)
                SM_RCMD(c, user_on_republish, NULL, "HSET pres:{%s} %s %b", u->bare,
                        s->resource, s->pres, s->pres_len);
            sessions++;
        }
    }
    if (users)
        log_info("redis_republished", "users=%ld sessions=%ld", users, sessions);
}

int sm_user_idle(const struct sm_user *u)
{
    return !u->cur && !u->qhead && !u->loading && !u->in_run;
}

long sm_users_drop_idle(struct sm_core *c, int keep_resumable)
{
    struct sm_user *u, *tmp;
    long n = 0;
    HASH_ITER(hh, c->users, u, tmp) {
        if (sm_user_idle(u) && !(keep_resumable && sm_user_resumable(u))) {
            if (!keep_resumable)
                c->handed_over += sm_smq_hand_over(c, u);
            user_free(u);
            n++;
        }
    }
    return n;
}

long sm_users_hand_over_moved(struct sm_core *c)
{
    struct sm_user *u, *tmp;
    long n = 0;
    HASH_ITER(hh, c->users, u, tmp) {
        if (sm_user_idle(u) && sm_user_resumable(u) && !sm_cluster_owns(c, u->bare)) {
            c->handed_over += sm_smq_hand_over(c, u);
            user_free(u);
            n++;
        }
    }
    return n;
}

struct sm_user *sm_user_get(struct sm_core *c, const char *bare)
{
    struct sm_user *u;
    HASH_FIND_STR(c->users, bare, u);
    if (u)
        return u;
    u = calloc(1, sizeof *u);
    if (!u || !(u->bare = strdup(bare))) {
        free(u);
        return NULL;
    }
    u->core = c;
    HASH_ADD_KEYPTR(hh, c->users, u->bare, strlen(u->bare), u);
    return u;
}

struct sm_session *sm_user_session(struct sm_user *u, const char *resource)
{
    for (int i = 0; i < u->nsess; i++)
        if (!strcmp(u->sess[i].resource, resource))
            return &u->sess[i];
    return NULL;
}

static int copy_name(char *dst, const char *src)
{
    size_t n = strlen(src);
    if (n > ENV_NAME_MAX)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

struct sm_session *sm_user_add_session(struct sm_user *u, const char *resource,
                                       const char *instance, const char *sid, int prio)
{
    struct sm_session *s = sm_user_session(u, resource);
    if (!s) {
        if (u->nsess == u->cap) {
            int cap = u->cap ? u->cap * 2 : 2;
            struct sm_session *ns = realloc(u->sess, (size_t)cap * sizeof *ns);
            if (!ns)
                return NULL;
            u->sess = ns;
            u->cap = cap;
        }
        s = &u->sess[u->nsess];
        memset(s, 0, sizeof *s);
        if (!(s->resource = strdup(resource)))
            return NULL;
        u->nsess++;
        u->core->nsessions++;
    }
    if (copy_name(s->instance, instance) < 0 || copy_name(s->sid, sid) < 0) {
        sm_user_del_session(u, resource);
        return NULL;
    }
    s->prio = prio;
    sm_frontend_alive(u->core, instance);   /* a bind from it: it is back */
    return s;
}

void sm_session_record(const struct sm_session *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s %s %d%s%s%s%s", s->instance, s->sid, s->prio,
             s->carbons || s->inactive || s->smq ? " " : "", s->carbons ? "c" : "",
             s->inactive ? "i" : "", s->smq ? "m" : "");
}

static void user_on_store(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("session_store_failed", "detail=%s",
                 sb_log_q(r && r->str ? r->str : "redis unavailable"));
}

/* Pipelined behind this user's earlier commands: nobody waits for it. */
void sm_session_store(struct sm_core *c, const struct sm_user *u, const struct sm_session *s)
{
    char val[2 * ENV_NAME_MAX + 24];
    sm_session_record(s, val, sizeof val);
    SM_RCMD(c, user_on_store, NULL, "HSET sess:{%s} %s %s", u->bare, s->resource, val);
}

void sm_user_del_session(struct sm_user *u, const char *resource)
{
    struct sm_session *s = sm_user_session(u, resource);
    if (!s)
        return;
    sm_csi_free(s->csi);
    sm_smq_free(s->smq);
    free(s->resource);
    free(s->pres);
    *s = u->sess[u->nsess - 1];
    u->nsess--;
    u->core->nsessions--;
}

/* ---- loading from Redis ------------------------------------------------------ */

/* "instance sid prio[ flags]" → session; malformed values are logged and
 * skipped. */
static void user_load_session(struct sm_user *u, const char *res, const char *val)
{
    char inst[ENV_NAME_MAX + 1], sid[ENV_NAME_MAX + 1], flags[8] = "";
    int prio = 0;
    if (sscanf(val, "%63s %63s %d %7s", inst, sid, &prio, flags) < 2) {
        log_warn("session_bad_record", "jid=%s res=%s value=%s", u->bare,
                 sb_log_q(res), sb_log_q(val));
        return;
    }
    struct sm_session *s = sm_user_add_session(u, res, inst, sid, prio);
    if (s) {
        s->carbons = strchr(flags, 'c') != NULL;
        s->inactive = strchr(flags, 'i') != NULL;
        if (strchr(flags, 'm'))     /* stream-managed: adopt it from its front-end */
            sm_smq_adopt_start(u->core, u, s);
    }
}

void sm_user_loaded(struct sm_user *u, int ok)
{
    if (!ok)
        u->stale = 1;
    if (--u->load_wait > 0)
        return;
    u->loading = 0;
    u->loaded = 1;
    if (u->stale)
        log_warn("user_load_failed", "jid=%s", u->bare);
    sm_user_run(u);
}

static void user_on_sess(redisReply *r, void *arg)
{
    struct sm_user *u = arg;
    int ok = r && r->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; ok && i + 1 < r->elements; i += 2)
        if (r->element[i]->str && r->element[i + 1]->str)
            user_load_session(u, r->element[i]->str, r->element[i + 1]->str);
    sm_user_loaded(u, ok);
}

static void user_on_pres(redisReply *r, void *arg)
{
    struct sm_user *u = arg;
    int ok = r && r->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; ok && i + 1 < r->elements; i += 2) {
        struct sm_session *s = r->element[i]->str
            ? sm_user_session(u, r->element[i]->str) : NULL;
        const redisReply *v = r->element[i + 1];
        if (!s)
            continue;
        s->available = 1;
        free(s->pres);
        s->pres = v->str ? strndup(v->str, v->len) : NULL;
        s->pres_len = s->pres ? v->len : 0;
    }
    sm_user_loaded(u, ok);
}

/* Modules with per-user state (blocklists…) load it beside the sessions. */
static void user_load_modules(struct sm_user *u)
{
    for (size_t i = 0; i < sm_nmodules; i++) {
        if (!sm_modules[i]->load_user)
            continue;
        u->load_wait++;
        sb_rc rc = sm_modules[i]->load_user(u);
        if (rc != SB_AGAIN)
            sm_user_loaded(u, rc == SB_OK);
    }
}

/* The record exists for a session that is starting: its roster and IM
 * flags are needed next, so they load with it (sm_im_preload). */
static int user_session_starts(const struct sm_user *u)
{
    const struct sm_job *j = u->qhead;
    return j && j->kind == ENV_CONTROL && !strcmp(j->op, "bind");
}

/* The HGETALLs are pipelined on one connection, so their replies come back
 * in order: sessions first, then the presence that marks them available
 * (then the IM flags, which name sessions). load_wait holds one extra count
 * until every load is issued, so an answer that arrives at once cannot
 * finish the load early. */
static void user_load(struct sm_user *u)
{
    struct sm_core *c = u->core;
    u->loading = 1;
    u->load_wait = 3;
    if (SM_RCMD(c, user_on_sess, u, "HGETALL sess:{%s}", u->bare) != SB_OK)
        sm_user_loaded(u, 0);
    if (SM_RCMD(c, user_on_pres, u, "HGETALL pres:{%s}", u->bare) != SB_OK)
        sm_user_loaded(u, 0);
    if (user_session_starts(u))
        sm_im_preload(u);
    user_load_modules(u);
    sm_user_loaded(u, 1);
}

/* ---- the queue ----------------------------------------------------------------- */

SB_HISTOGRAM(user_mx_wait, "sb_sm_queue_seconds", "",
             "Time an envelope waited in its user's queue before it ran")

void sm_user_push(struct sm_user *u, struct sm_job *j)
{
    j->user = u;
    j->next = NULL;
    if (u->qtail)
        u->qtail->next = j;
    else
        u->qhead = j;
    u->qtail = j;
    u->qlen++;
}

static void user_maybe_evict(struct sm_user *u)
{
    if (sm_user_idle(u) && (u->stale || u->nsess == 0))
        user_free(u);
}

/* Run queued jobs until one waits on I/O. Re-entrant calls (a reply that
 * arrives synchronously) return at once: the outer loop picks up. The user
 * may be freed on return, so callers must not touch it afterwards. */
void sm_user_run(struct sm_user *u)
{
    if (u->in_run)
        return;
    u->in_run = 1;
    while (!u->core->stopping) {
        if (!u->loaded) {
            if (!u->loading)
                user_load(u);
            if (!u->loaded)
                break;
            continue;
        }
        if (u->cur || !u->qhead)
            break;
        struct sm_job *j = u->qhead;
        u->qhead = j->next;
        u->qlen--;
        if (!u->qhead)
            u->qtail = NULL;
        j->next = NULL;
        u->cur = j;
        sb_metric_observe(&user_mx_wait, sb_now() - j->t_in);
        sm_job_run(j);
    }
    u->in_run = 0;
    if (!u->core->stopping)
        user_maybe_evict(u);
}
