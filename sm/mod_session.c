/* mod_session.c — session bindings in Redis (common/ENVELOPE.md):
 *   bind           claim `<prefix>.<16 random>` with HSETNX sess:{bare}
 *                  (body exact=1, XEP-0386 Bind 2: `<prefix>` itself first,
 *                  the random form only if that one is held),
 *                  record it in fe:<instance> (both pipelined: one round
 *                  trip), answer bound / bind-failed
 *   end            the front-end closed the session
 *   session-gone   the same, sent by the sm that cleaned up a dead front-end
 *   instance-down  a front-end died: fan out session-gone for its sessions
 * Broadcasting unavailable presence on end is the IM issue's job. */
#include "sm.h"
#include "jid.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define BIND_ATTEMPTS 5
#define BIND_PREFIX_MAX 32
#define BIND_RANDOM_LEN 16

struct bind_state {
    struct sm_job *j;
    int attempt;
    int claim;          /* HSETNX answer: 1 claimed, 0 taken, -1 failed */
    int queued;         /* 1 while the SADD is owed a reply */
    int exact;          /* body exact=1 (Bind 2): try the prefix alone first */
    char prefix[BIND_PREFIX_MAX + 1];
    char res[BIND_PREFIX_MAX + 2 + BIND_RANDOM_LEN];
};

/* The resourceprepped request cut to 32 bytes on a UTF-8 boundary; an
 * unusable request is ignored (RFC 6120 §7.7.2.1 lets the server choose). */
static void bind_prefix(const char *requested, char *out)
{
    char prepped[JID_PART_MAX + 1];
    out[0] = '\0';
    if (!*requested || jid_resourceprep(requested, prepped) != SB_OK)
        return;
    size_t n = strlen(prepped);
    if (n > BIND_PREFIX_MAX) {
        n = BIND_PREFIX_MAX;
        while (n > 0 && ((unsigned char)prepped[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(out, prepped, n);
    out[n] = '\0';
}

static void bind_finish(struct bind_state *b, const char *op, const char *aux)
{
    struct sm_job *j = b->j;
    sm_send_control(j->core, ENV_ROUTE_INSTANCE, j->sender, j->sid, op, aux);
    if (!strcmp(op, "bound") && j->user)    /* after bound: the stream is open */
        sm_carbons_session_up(j->core, j->user, sm_user_session(j->user, b->res));
    free(b);
    sm_job_done(j);
}

static void bind_fail(struct bind_state *b, const char *cond)
{
    log_warn("bind_failed", "jid=%s instance=%s sid=%s cond=%s", sb_log_q(b->j->key),
             b->j->sender, b->j->sid, cond);
    bind_finish(b, "bind-failed", cond);
}

static void bind_on_hsetnx(redisReply *r, void *arg);
static void bind_on_sadd(redisReply *r, void *arg);
static void bind_settle(struct bind_state *b, int added);

static void bind_member(const struct bind_state *b, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s %s", b->j->key, b->res, b->j->sid);
}

/* HSETNX and SADD go out back to back (replies come in that order); the
 * SADD's reply settles the attempt. A member added for a resource that
 * turned out to be taken is removed again: it names our sid, never the
 * holder's. */
static sb_rc bind_try(struct bind_state *b)
{
    char rnd[BIND_RANDOM_LEN + 1];
    sb_random_id(rnd, BIND_RANDOM_LEN);
    if (b->exact && b->attempt == 0 && *b->prefix)
        snprintf(b->res, sizeof b->res, "%s", b->prefix);   /* stable per device */
    else
        snprintf(b->res, sizeof b->res, "%s%s%s", b->prefix, *b->prefix ? "." : "", rnd);
    struct sm_job *j = b->j;
    char val[2 * ENV_NAME_MAX + 8], member[ENV_STR_MAX + ENV_NAME_MAX + 2];
    snprintf(val, sizeof val, "%s %s 0", j->sender, j->sid);
    b->claim = -1;
    if (SM_RCMD(j->core, bind_on_hsetnx, b, "HSETNX sess:{%s} %s %s", j->key, b->res, val) != SB_OK)
        return SB_ERROR;
    bind_member(b, member, sizeof member);
    b->queued = SM_RCMD(j->core, bind_on_sadd, b, "SADD fe:%s %s", j->sender, member) == SB_OK;
    return SB_OK;
}

static void bind_on_unclaim(redisReply *r, void *arg)
{
    if (!r)
        log_warn("bind_unclaim_failed", "detail=redis");
}

static void bind_on_hsetnx(redisReply *r, void *arg)
{
    struct bind_state *b = arg;
    b->claim = r && r->type == REDIS_REPLY_INTEGER ? (r->integer != 0) : -1;
    if (!b->queued)
        bind_settle(b, 0);      /* the SADD could not be queued */
}

static void bind_on_sadd(redisReply *r, void *arg)
{
    struct bind_state *b = arg;
    b->queued = 0;
    bind_settle(b, r && r->type == REDIS_REPLY_INTEGER);
}

static void bind_settle(struct bind_state *b, int added)
{
    struct sm_job *j = b->j;
    char member[ENV_STR_MAX + ENV_NAME_MAX + 2];
    bind_member(b, member, sizeof member);
    if (b->claim != 1 && added)
        SM_RCMD(j->core, bind_on_unclaim, NULL, "SREM fe:%s %s", j->sender, member);
    if (b->claim == 0) {        /* someone holds this resource: draw again */
        log_info("bind_collision", "jid=%s res=%s", sb_log_q(j->key), sb_log_q(b->res));
        if (++b->attempt >= BIND_ATTEMPTS || bind_try(b) != SB_OK)
            bind_fail(b, "internal-server-error");
        return;
    }
    if (b->claim < 0) {
        bind_fail(b, "internal-server-error");
        return;
    }
    if (!added) {
        /* Without the fe: record the session could not be cleaned up. */
        SM_RCMD(j->core, bind_on_unclaim, NULL, "HDEL sess:{%s} %s", j->key, b->res);
        bind_fail(b, "internal-server-error");
        return;
    }
    if (j->user && !sm_user_add_session(j->user, b->res, j->sender, j->sid, 0)) {
        bind_fail(b, "internal-server-error");
        return;
    }
    char full[ENV_STR_MAX + 1];
    snprintf(full, sizeof full, "%s/%s", j->key, b->res);
    log_info("session_bound", "jid=%s instance=%s sid=%s", sb_log_q(full), j->sender, j->sid);
    bind_finish(b, "bound", full);
}

static sb_rc session_bind(struct sm_job *j)
{
    struct bind_state *b = calloc(1, sizeof *b);
    if (!b) {
        sm_send_control(j->core, ENV_ROUTE_INSTANCE, j->sender, j->sid, "bind-failed",
                        "resource-constraint");
        return SB_OK;
    }
    b->j = j;
    if (!j->user || !*j->sid) {
        bind_fail(b, "bad-request");
        return SB_AGAIN;
    }
    bind_prefix(j->aux, b->prefix);
    b->exact = !strcmp(j->body, "exact=1");
    if (bind_try(b) != SB_OK)
        bind_fail(b, "internal-server-error");
    return SB_AGAIN;
}

/* ---- end / session-gone ------------------------------------------------------------ */

static void session_on_cleanup(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("session_cleanup_failed", "detail=%s",
                 sb_log_q(r && r->str ? r->str : "redis unavailable"));
}

/* Remove one binding. Redis commands are pipelined behind everything this
 * user did before, so later jobs need not wait for the replies. */
static sb_rc session_end(struct sm_job *j, const char *op)
{
    struct sm_core *c = j->core;
    const char *slash = strchr(j->aux, '/');
    if (!j->user || !slash || !slash[1]) {
        log_warn("session_end_bad", "op=%s key=%s aux=%s", op, sb_log_q(j->key), sb_log_q(j->aux));
        return SB_OK;
    }
    const char *res = slash + 1;
    struct sm_session *s = sm_user_session(j->user, res);
    if (s && strcmp(s->sid, j->sid)) {
        log_info("session_end_stale", "jid=%s sid=%s current_sid=%s", sb_log_q(j->aux),
                 j->sid, s->sid);
        return SB_OK;
    }
    const char *instance = s ? s->instance : j->sender;
    SM_RCMD(c, session_on_cleanup, NULL, "HDEL sess:{%s} %s", j->key, res);
    /* A cached session's pres: field exists exactly while it is available;
     * mod_presence already deleted it (and cleared the flag) when it was. */
    if (!s || s->available)
        SM_RCMD(c, session_on_cleanup, NULL, "HDEL pres:{%s} %s", j->key, res);
    if (instance) {
        char member[ENV_STR_MAX + ENV_NAME_MAX + 2];
        snprintf(member, sizeof member, "%s %s", j->aux, j->sid);
        SM_RCMD(c, session_on_cleanup, NULL, "SREM fe:%s %s", instance, member);
    }
    log_info("session_end", "jid=%s sid=%s instance=%s reason=%s cached=%d", sb_log_q(j->aux),
             j->sid, instance ? instance : "-", op, s != NULL);
    if (s)
        sm_user_del_session(j->user, res);
    return SB_OK;
}

/* ---- instance-down ------------------------------------------------------------------ */

/* The router sends instance-down once, so a clean-up that meets a Redis
 * outage is retried here (every 5 s for 5 minutes) instead of leaving the
 * dead front-end's sessions bound forever. */
#define DOWN_RETRY_AFTER 5.0
#define DOWN_RETRY_MAX 60

struct down_req {
    struct down_req *next;       /* in down_waiting while the timer runs */
    struct sm_core *core;
    struct sm_job *job;          /* the instance-down job, first attempt only */
    ev_timer retry;
    int tries;
    char instance[ENV_NAME_MAX + 1];
};
static struct down_req *down_waiting;

static void down_req_free(struct down_req *d)
{
    struct down_req **pp = &down_waiting;
    while (*pp && *pp != d)
        pp = &(*pp)->next;
    if (*pp)
        *pp = d->next;
    ev_timer_stop(d->core->loop, &d->retry);
    free(d);
}

static void down_on_members(redisReply *r, void *arg);

static void down_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct down_req *d = w->data;
    if (SM_RCMD(d->core, down_on_members, d, "SMEMBERS fe:%s", d->instance) != SB_OK) {
        log_error("instance_down_failed", "instance=%s detail=redis-queue", d->instance);
        down_req_free(d);
    }
}

/* Returns 1 when the request lives on (a retry is armed). */
static int down_retry_later(struct down_req *d)
{
    struct sm_core *c = d->core;
    if (c->stopping || ++d->tries > DOWN_RETRY_MAX) {
        log_error("instance_down_failed", "instance=%s detail=redis tries=%d", d->instance, d->tries);
        return 0;
    }
    log_warn("instance_down_retry", "instance=%s tries=%d after=%.0f", d->instance, d->tries,
             DOWN_RETRY_AFTER);
    d->next = down_waiting;
    down_waiting = d;
    ev_timer_set(&d->retry, DOWN_RETRY_AFTER, 0.);
    ev_timer_start(c->loop, &d->retry);
    return 1;
}

/* One fe: member "fulljid sid" (the resource may hold spaces, the sid not). */
static void down_member_gone(struct sm_core *c, const char *m)
{
    char full[ENV_STR_MAX + 1], bare[ENV_STR_MAX + 1];
    const char *sp = m ? strrchr(m, ' ') : NULL;
    if (!sp || (size_t)(sp - m) > ENV_STR_MAX || strlen(sp + 1) > ENV_NAME_MAX)
        return;
    memcpy(full, m, (size_t)(sp - m));
    full[sp - m] = '\0';
    if (jid_bare_of(full, bare, sizeof bare) < 0)
        return;
    sm_send_control(c, ENV_ROUTE_JID, bare, sp + 1, "session-gone", full);
}

static void down_on_members(redisReply *r, void *arg)
{
    struct down_req *d = arg;
    struct sm_core *c = d->core;
    struct sm_job *j = d->job;
    d->job = NULL;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (!down_retry_later(d))
            free(d);
    } else {
        /* Only the members read: a new incarnation of the same name may
         * already have bound sessions of its own under fe:NAME. */
        for (size_t i = 0; i < r->elements; i++) {
            down_member_gone(c, r->element[i]->str);
            SM_RCMD(c, session_on_cleanup, NULL, "SREM fe:%s %s", d->instance,
                    r->element[i]->str);
        }
        log_info("instance_down", "instance=%s sessions=%zu", d->instance, r->elements);
        free(d);
    }
    if (j)
        sm_job_done(j);
}

static sb_rc session_instance_down(struct sm_job *j)
{
    if (!*j->aux || strchr(j->aux, ' ') || strlen(j->aux) > ENV_NAME_MAX)
        return SB_OK;
    if (!strncmp(j->body, "kind=sm", 7) && (j->body[7] == ' ' || j->body[7] == '\0'))
        return SB_OK;   /* a dead sm held no sessions; its users rehash */
    struct down_req *d = calloc(1, sizeof *d);
    if (!d) {
        log_error("instance_down_failed", "instance=%s detail=nomem", j->aux);
        return SB_OK;
    }
    d->core = j->core;
    d->job = j;
    strcpy(d->instance, j->aux);
    ev_timer_init(&d->retry, down_on_retry, DOWN_RETRY_AFTER, 0.);
    d->retry.data = d;
    if (SM_RCMD(j->core, down_on_members, d, "SMEMBERS fe:%s", j->aux) != SB_OK) {
        d->job = NULL;
        if (!down_retry_later(d))
            free(d);
        return SB_OK;
    }
    return SB_AGAIN;
}

/* After Redis is gone: drop retries that are still waiting. */
static void session_stop(struct sm_core *c)
{
    while (down_waiting)
        down_req_free(down_waiting);
}

static sb_rc session_control(struct sm_job *j, const char *op)
{
    if (!strcmp(op, "bind"))
        return session_bind(j);
    if (!strcmp(op, "end") || !strcmp(op, "session-gone"))
        return session_end(j, op);
    if (!strcmp(op, "instance-down"))
        return session_instance_down(j);
    return SB_DECLINED;
}

const struct sm_module sm_mod_session = {
    .name = "session",
    .handle_control = session_control,
    .stop = session_stop,
};
