/* mod_sm.c — XEP-0198 stream management, the part that must outlive a
 * front-end. The front-end (c2s/sm.c) speaks <enable/>, <r/>, <a/> and
 * <resume/> with the client; this module holds what resumption needs: every
 * stanza sent to a stream-managed session since <enabled/>, numbered
 * (1, 2, … mod 2^32, the client's `h`), until the client acknowledges it,
 * and the count of stanzas the front-end received from the client. So a
 * client whose front-end was killed resumes on any other front-end: the
 * token names a session of this user, not a process, and the user's sm is
 * the same whichever front-end asks.
 *
 * Controls (common/ENVELOPE.md):
 *   sm-enable     front-end → sm   aux full JID, body `resume=1 max=N`
 *   sm-enabled    sm → front-end   aux token ("" not resumable), body `max=N`
 *   sm-ack        front-end → sm   aux h acknowledged by the client
 *   sm-h          front-end → sm   aux stanzas received from the client
 *   session-gone  front-end → sm   the stream broke: a resumable session is
 *                 detached (kept, presence unchanged, stanzas queued) for
 *                 `max` seconds instead of ended; body `h=N`
 *   sm-resume     front-end → sm   aux `token h` on a new authenticated stream
 *   sm-resumed    sm → front-end   aux full JID, body `h=N max=M`; then the
 *                 unacknowledged stanzas follow, in order
 *   sm-failed     sm → front-end   aux condition, body `h=N` when known
 *   sm-takeover   sm → old front-end  the stream was resumed elsewhere
 *   sm-query      sm → front-end   aux full JID: this sm owns the user now
 *                 and has no queue for the stream (its owner died); the
 *                 session was loaded with flag `m` (sess:)
 *   sm-state      front-end → sm   the answer: aux token, body `max= in= out=
 *                 acked=` and the stanzas the client has not acknowledged
 *                 (the front-end's copies), or `gone`; the session is adopted
 *   sm-moved      front-end → sm   aux full JID: a numbered stanza of ours
 *                 arrived after another sm adopted the stream
 *   sm-elsewhere  front-end → sm   aux full JID: the answer to sm-query from
 *                 an sm the cluster does not route the user to
 * Stanzas: op sm:N to an attached stream; sm-detached:N to the front-end
 * of a detached one (kept beside its ghost there, not written);
 * sm-handover:N between sms when the user changes owner.
 * Stanzas a front-end answers itself for such a session (a bind error, a
 * bounce) come here as STANZA op=sm-local and are numbered like the rest.
 * When the session ends (clean close, timeout), what the client never
 * acknowledged runs again through the user's queue: messages go to another
 * session or offline storage, iq requests get an error, presence is dropped
 * (as op sm-replay jobs: mod_push notified them when they were queued).
 * The front-end keeps its own copy of everything numbered for the stream
 * until acknowledged, so when this sm dies the next owner adopts the
 * stream from there (sm/README.md, "Surviving the death of an sm"). */
#include "sm_int.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SM_ID_LEN 24
#define SM_MAX_DEFAULT 300
#define SM_QUEUE_MAX 10000      /* a detached session holding more ends */
#define SM_ADOPT_EVERY 1.       /* sm-query again after this many seconds, */
#define SM_ADOPT_TRIES 10       /* this many times before the session ends */

struct sm_qent {
    struct sm_qent *next;
    uint32_t seq;
    uint32_t oseq;              /* held while adopting: its number at the old owner, 0 none */
    size_t len;
    char *from;                 /* points into data, after the body */
    char data[];                /* body NUL, from NUL */
};

struct sm_smq {
    struct sm_core *core;
    struct sm_user *user;
    char *resource;             /* owned copy: finds the session again */
    char id[SM_ID_LEN + 1];     /* "" when not resumable */
    uint32_t out, acked, in_h;  /* last numbered, last acknowledged, client's */
    char prev_instance[ENV_NAME_MAX + 1];   /* the stream it was last resumed from: */
    char prev_sid[ENV_NAME_MAX + 1];        /* what bounces from there was resent */
    char adopt_sid[ENV_NAME_MAX + 1];       /* the stream adopted, "" none, and */
    uint32_t adopt_out;                     /* the last number its front-end had */
    struct sm_qent *head, *tail;
    long n;
    int max;                    /* seconds a detached session is kept */
    unsigned detached : 1, ending : 1;
    unsigned adopting : 1;      /* waiting for sm-state: hold, send nothing */
    int adopt_tries;            /* sm-query sent so far */
    unsigned elsewhere : 1;     /* another sm owns the stream: pass stanzas on */
    ev_timer timer;
};

static int sm_seq_after(uint32_t a, uint32_t b)   /* a later than b, mod 2^32 */
{
    return (int32_t)(a - b) > 0;
}

static void sm_on_redis(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("sm_redis_failed", "detail=%s", sb_log_q(r && r->str ? r->str : "unavailable"));
}

void sm_smq_free(struct sm_smq *q)
{
    if (!q)
        return;
    ev_timer_stop(q->core->loop, &q->timer);
    for (struct sm_qent *e = q->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    free(q->resource);
    free(q);
}

int sm_user_resumable(const struct sm_user *u)
{
    for (int i = 0; i < u->nsess; i++)
        if (u->sess[i].smq && u->sess[i].smq->id[0])
            return 1;
    return 0;
}

int sm_session_live(const struct sm_core *c, const struct sm_session *s)
{
    return !s->smq || (!s->smq->detached && !sm_frontend_gone(c, s->instance));
}

static struct sm_session *sm_session_by_sid(struct sm_user *u, const char *sid)
{
    for (int i = 0; u && i < u->nsess; i++)
        if (!strcmp(u->sess[i].sid, sid))
            return &u->sess[i];
    return NULL;
}

/* The session named by a full JID, if its sid is `sid`. */
static struct sm_session *sm_session_of(struct sm_user *u, const char *full, const char *sid)
{
    const char *slash = full ? strchr(full, '/') : NULL;
    struct sm_session *s = u && slash ? sm_user_session(u, slash + 1) : NULL;
    return s && (!sid || !strcmp(s->sid, sid)) ? s : NULL;
}

static void sm_full_of(const struct sm_user *u, const struct sm_session *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", u->bare, s->resource);
}

static void sm_send_entry(struct sm_core *c, const struct sm_session *s, const struct sm_qent *e)
{
    char op[16];
    snprintf(op, sizeof op, "sm:%u", e->seq);
    sm_send_to_session(c, s, op, e->from, e->data, e->len);
}

/* The same for a detached session: the old front-end keeps it beside the
 * stream's ghost (c2s/sm.c), so the queue has a second copy. */
static void sm_send_detached(struct sm_core *c, const struct sm_session *s,
                             const struct sm_qent *e)
{
    char op[24];
    snprintf(op, sizeof op, "sm-detached:%u", e->seq);
    sm_send_to_session(c, s, op, e->from, e->data, e->len);
}

static void sm_end_later(struct sm_smq *q, const char *why);
static sb_rc sm_pass_on(struct sm_core *c, const struct sm_user *u, const char *sid,
                        uint32_t oseq, const char *from, const char *body, size_t len);
static void sm_adopt_ask(struct sm_smq *q);

/* A new entry at the end of q, numbered next. */
static struct sm_qent *sm_qent_add(struct sm_smq *q, const char *from, const char *body,
                                   size_t len)
{
    size_t flen = from ? strlen(from) : 0;
    struct sm_qent *e = malloc(sizeof *e + len + flen + 2);
    if (!e)
        return NULL;
    e->next = NULL;
    e->seq = ++q->out;
    e->oseq = 0;
    e->len = len;
    memcpy(e->data, body, len);
    e->data[len] = '\0';
    e->from = e->data + len + 1;
    memcpy(e->from, from ? from : "", flen + 1);
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    q->n++;
    return e;
}

sb_rc sm_smq_push(struct sm_core *c, struct sm_session *s, const char *from,
                  const char *body, size_t len)
{
    struct sm_smq *q = s->smq;
    if (q->elsewhere && !sm_cluster_owns(c, q->user->bare))
        return sm_pass_on(c, q->user, s->sid, 0, from, body, len);
    if (q->elsewhere) {         /* ours again: adopt the stream after all */
        q->elsewhere = 0;
        q->adopting = 1;
        q->adopt_tries = 0;
        sm_adopt_ask(q);
    }
    struct sm_qent *e = sm_qent_add(q, from, body, len);
    if (!e) {
        log_error("sm_queue_nomem", "res=%s", sb_log_q(s->resource));
        return SB_ERROR;
    }
    if (q->adopting)
        ;                       /* numbered again when adopted */
    else if (!q->detached && !sm_frontend_gone(c, s->instance))
        sm_send_entry(c, s, e);
    else if (!sm_frontend_gone(c, s->instance))
        sm_send_detached(c, s, e);
    if (q->n > SM_QUEUE_MAX && (q->detached || q->adopting))
        sm_end_later(q, "queue-full");
    return SB_OK;
}

int sm_smq_holds(struct sm_core *c, const char *to, const char *instance, const char *sid)
{
    char bare[ENV_STR_MAX + 1];
    struct sm_user *u;
    if (jid_bare_of(to, bare, sizeof bare) < 0)
        return 0;
    HASH_FIND_STR(c->users, bare, u);
    for (int i = 0; u && i < u->nsess; i++) {
        const struct sm_session *s = &u->sess[i];
        const struct sm_smq *q = s->smq;
        if (!q)
            continue;
        if (!strcmp(s->sid, sid) && !strcmp(s->instance, instance))
            return SM_HELD_QUEUED;
        if (!strcmp(q->prev_sid, sid) && !strcmp(q->prev_instance, instance))
            return SM_HELD_RESENT;
    }
    return 0;
}

/* Everything up to h is with the client. */
static void sm_trim(struct sm_smq *q, uint32_t h)
{
    while (q->head && !sm_seq_after(q->head->seq, h)) {
        struct sm_qent *e = q->head;
        q->head = e->next;
        free(e);
        q->n--;
    }
    if (!q->head)
        q->tail = NULL;
    q->acked = h;
}

/* May the client say it received h? Between the last ack and the last sent. */
static int sm_h_valid(const struct sm_smq *q, uint32_t h)
{
    return (uint32_t)(h - q->acked) <= (uint32_t)(q->out - q->acked);
}

static uint32_t sm_parse_h(const char *s)
{
    return (uint32_t)strtoul(s, NULL, 10);
}

static const char *sm_body_value(const char *body, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = body; p && *p; p = strchr(p, ' '), p = p ? p + 1 : NULL)
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            size_t n = strcspn(p + kl + 1, " ");
            if (n >= cap)
                n = cap - 1;
            memcpy(out, p + kl + 1, n);
            out[n] = '\0';
            return out;
        }
    return NULL;
}

/* ---- the session ends: what the client did not acknowledge runs again ------ */

static void sm_replay_unacked(struct sm_core *c, struct sm_user *u, struct sm_smq *q)
{
    long msgs = 0, iqs = 0;
    for (struct sm_qent *e = q->head; e; e = e->next) {
        int msg = !strncmp(e->data, "<message", 8), iq = !strncmp(e->data, "<iq", 3);
        if (!msg && !iq)
            continue;           /* presence: the next session gets it fresh */
        struct env_hdr h;
        env_init(&h, ENV_STANZA, ENV_ROUTE_JID);
        snprintf(h.key, sizeof h.key, "%s", u->bare);
        snprintf(h.sender, sizeof h.sender, "%s", link_instance(c->link));
        snprintf(h.op, sizeof h.op, "sm-replay");   /* already notified (mod_push) */
        snprintf(h.aux, sizeof h.aux, "%s", e->from);
        sm_core_submit(c, &h, e->data, e->len);
        msgs += msg;
        iqs += iq;
    }
    if (msgs || iqs)
        log_info("sm_unacked_replayed", "jid=%s res=%s messages=%ld iqs=%ld", sb_log_q(u->bare),
                 sb_log_q(q->resource), msgs, iqs);
}

long sm_smq_hand_over(struct sm_core *c, struct sm_user *u)
{
    long n = 0;
    for (int i = 0; i < u->nsess; i++) {
        struct sm_smq *q = u->sess[i].smq;
        if (q && !q->detached && !q->adopting && !sm_frontend_gone(c, u->sess[i].instance))
            continue;   /* all of it is on the stream, whose front-end keeps a
                           copy until acknowledged: the next owner adopts it */
        for (struct sm_qent *e = q ? q->head : NULL; e; e = e->next) {
            if (strncmp(e->data, "<message", 8) && strncmp(e->data, "<iq", 3))
                continue;       /* presence: the next session gets it fresh */
            struct env_hdr h;
            env_init(&h, ENV_STANZA, ENV_ROUTE_JID);
            snprintf(h.key, sizeof h.key, "%s", u->bare);
            snprintf(h.sender, sizeof h.sender, "%s", link_instance(c->link));
            /* numbered: the next owner may adopt the stream from a front-end
             * that holds these already (sm_handover) */
            snprintf(h.op, sizeof h.op, "sm-handover:%u", e->seq);
            snprintf(h.sid, sizeof h.sid, "%s", u->sess[i].sid);
            snprintf(h.aux, sizeof h.aux, "%s", e->from);
            if (link_send(c->link, &h, e->data, e->len) == SB_OK)
                n++;
            else
                log_warn("sm_hand_over_failed", "jid=%s res=%s", sb_log_q(u->bare),
                         sb_log_q(q->resource));
        }
    }
    return n;
}

/* An `end` through the user's queue, as if the front-end had sent it. */
static void sm_end_later(struct sm_smq *q, const char *why)
{
    struct sm_core *c = q->core;
    struct sm_session *s = sm_user_session(q->user, q->resource);
    if (!s || q->ending)
        return;
    q->ending = 1;
    ev_timer_stop(c->loop, &q->timer);
    log_info("sm_session_expired", "jid=%s res=%s sid=%s reason=%s unacked=%ld",
             sb_log_q(q->user->bare), sb_log_q(q->resource), s->sid, why, q->n);
    struct env_hdr h;
    env_init(&h, ENV_CONTROL, ENV_ROUTE_JID);
    snprintf(h.key, sizeof h.key, "%s", q->user->bare);
    snprintf(h.sender, sizeof h.sender, "%s", link_instance(c->link));
    snprintf(h.sid, sizeof h.sid, "%s", s->sid);
    snprintf(h.op, sizeof h.op, "end");
    snprintf(h.aux, sizeof h.aux, "%s/%s", q->user->bare, q->resource);
    sm_core_submit(c, &h, "", 0);
}

static void sm_on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sm_smq *q = w->data;
    if (q->adopting && q->adopt_tries < SM_ADOPT_TRIES && !q->ending) {
        sm_adopt_ask(q);        /* the query or its answer may have been lost (no
                                   router yet after a freeze): ask again */
        return;
    }
    sm_end_later(q, q->adopting ? "adopt-timeout" : "timeout");
}

/* ---- adoption: the previous owner of the user died with the queue ------------ */

static struct sm_smq *sm_smq_new(struct sm_core *c, struct sm_user *u,
                                 const struct sm_session *s, int max)
{
    struct sm_smq *q = calloc(1, sizeof *q);
    if (!q || !(q->resource = strdup(s->resource))) {
        free(q);
        return NULL;
    }
    q->core = c;
    q->user = u;
    q->max = max;
    ev_timer_init(&q->timer, sm_on_timeout, max, 0.);
    q->timer.data = q;
    return q;
}

/* A session loaded from Redis with flag `m` (stream-managed) that has no
 * queue here: the sm that had it is gone (or forgot the user). Its
 * front-end kept a copy of what it wrote and not yet saw acknowledged;
 * ask for it. Meanwhile stanzas for the session are queued, unsent. */
void sm_smq_adopt_start(struct sm_core *c, struct sm_user *u, struct sm_session *s)
{
    if (s->smq)
        return;
    struct sm_smq *q = sm_smq_new(c, u, s, (int)sb_config_int("sm_resume_max", SM_MAX_DEFAULT));
    if (!q) {
        log_error("sm_adopt_nomem", "jid=%s res=%s", sb_log_q(u->bare), sb_log_q(s->resource));
        return;
    }
    q->adopting = 1;
    s->smq = q;
    sm_adopt_ask(q);
}

/* sm-query to the session's front-end; again every SM_ADOPT_EVERY s. */
static void sm_adopt_ask(struct sm_smq *q)
{
    struct sm_core *c = q->core;
    struct sm_session *s = sm_user_session(q->user, q->resource);
    if (!s)
        return;
    char full[ENV_STR_MAX + 1];
    sm_full_of(q->user, s, full, sizeof full);
    q->adopt_tries++;
    log_info("sm_adopt_asked", "jid=%s instance=%s sid=%s try=%d", sb_log_q(full), s->instance,
             s->sid, q->adopt_tries);
    sm_send_control(c, ENV_ROUTE_INSTANCE, s->instance, s->sid, "sm-query", full);
    ev_timer_stop(c->loop, &q->timer);
    ev_timer_set(&q->timer, SM_ADOPT_EVERY, 0.);
    ev_timer_start(c->loop, &q->timer);
}

/* One "seq fromlen len\n" line and its bytes from p (end at end): an
 * entry, or NULL on a malformed body. */
static struct sm_qent *sm_copy_parse(const char **p, const char *end)
{
    unsigned long seq;
    size_t flen, len;
    int used = 0;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl || sscanf(*p, "%lu %zu %zu%n", &seq, &flen, &len, &used) != 3 || *p + used != nl ||
        flen > ENV_STR_MAX || len > (size_t)(end - nl - 1) || flen > (size_t)(end - nl - 1) - len)
        return NULL;
    struct sm_qent *e = malloc(sizeof *e + len + flen + 2);
    if (!e)
        return NULL;
    e->next = NULL;
    e->seq = (uint32_t)seq;
    e->len = len;
    e->from = e->data + len + 1;
    memcpy(e->from, nl + 1, flen);
    e->from[flen] = '\0';
    memcpy(e->data, nl + 1 + flen, len);
    e->data[len] = '\0';
    *p = nl + 1 + flen + len;
    return e;
}

static void sm_entries_free(struct sm_qent *e)
{
    for (struct sm_qent *next; e; e = next) {
        next = e->next;
        free(e);
    }
}

/* The copies as a list numbered acked+1 … out, or SB_ERROR. */
static sb_rc sm_copies_parse(const char *p, const char *end, uint32_t acked, uint32_t out,
                             struct sm_qent **head, struct sm_qent **tail, long *n)
{
    *head = *tail = NULL;
    *n = 0;
    uint32_t want = acked + 1;
    while (p < end) {
        struct sm_qent *e = sm_copy_parse(&p, end);
        if (!e || e->seq != want) {
            free(e);
            sm_entries_free(*head);
            return SB_ERROR;
        }
        if (*tail)
            (*tail)->next = e;
        else
            *head = e;
        *tail = e;
        (*n)++;
        want++;
    }
    if (want - 1 != out) {
        sm_entries_free(*head);
        return SB_ERROR;
    }
    return SB_OK;
}

/* sm-state: the front-end's numbering goes on here. Its copies (already on
 * the stream) come first in the queue; what was held meanwhile follows,
 * numbered after them, and is sent now. */
static sb_rc sm_adopt(struct sm_job *j)
{
    struct sm_session *s = sm_session_by_sid(j->user, j->sid);
    struct sm_smq *q = s ? s->smq : NULL;
    if (!q || !q->adopting || q->ending || strcmp(s->instance, j->sender)) {
        log_info("sm_state_ignored", "jid=%s sid=%s sender=%s", sb_log_q(j->key), j->sid,
                 j->sender);
        return SB_OK;
    }
    const char *nl = memchr(j->body, '\n', j->body_len);
    char v[24], head[128];
    size_t hl = nl ? (size_t)(nl - j->body) : 0;
    struct sm_qent *ch = NULL, *ct = NULL;
    long cn = 0;
    if (hl && hl < sizeof head) {
        memcpy(head, j->body, hl);
        head[hl] = '\0';
    }
    if (!hl || hl >= sizeof head || !sm_body_value(head, "out", v, sizeof v)) {
        q->adopting = 0;
        sm_end_later(q, strncmp(j->body, "gone", 4) ? "adopt-bad-state" : "adopt-gone");
        return SB_OK;
    }
    uint32_t out = sm_parse_h(v), acked = sm_body_value(head, "acked", v, sizeof v)
                   ? sm_parse_h(v) : out;
    if (sm_body_value(head, "detached", v, sizeof v) && !strcmp(v, "1"))
        q->detached = 1;        /* the stream broke; its front-end keeps a ghost */
    if (sm_copies_parse(nl + 1, j->body + j->body_len, acked, out, &ch, &ct, &cn) != SB_OK) {
        log_warn("sm_state_malformed", "jid=%s sid=%s", sb_log_q(j->key), j->sid);
        q->adopting = 0;
        sm_end_later(q, "adopt-bad-state");
        return SB_OK;
    }
    if (sm_body_value(head, "in", v, sizeof v))
        q->in_h = sm_parse_h(v);
    if (sm_body_value(head, "max", v, sizeof v) && atoi(v) > 0 && atoi(v) < q->max)
        q->max = atoi(v);
    if (*j->aux && strlen(j->aux) <= SM_ID_LEN &&
        strspn(j->aux, "abcdefghijklmnopqrstuvwxyz0123456789") == strlen(j->aux))
        memcpy(q->id, j->aux, strlen(j->aux) + 1);
    /* held ones were numbered from 0: after the copies now; one the old
     * owner handed over that the front-end has already is dropped */
    struct sm_qent **pp = &q->head, *last = NULL;
    long held = 0, dropped = 0;
    q->out = out;
    while (*pp) {
        struct sm_qent *e = *pp;
        if (e->oseq && !sm_seq_after(e->oseq, out)) {
            *pp = e->next;
            free(e);
            dropped++;
            continue;
        }
        e->seq = ++q->out;
        held++;
        last = e;
        pp = &e->next;
    }
    q->tail = last;
    q->n = held;
    if (ct) {
        ct->next = q->head;
        if (!q->head)
            q->tail = ct;
        q->head = ch;
    }
    struct sm_qent *first_held = ct ? ct->next : q->head;
    q->n += cn;
    q->acked = acked;
    snprintf(q->adopt_sid, sizeof q->adopt_sid, "%s", s->sid);
    q->adopt_out = out;
    q->adopting = 0;
    ev_timer_stop(j->core->loop, &q->timer);
    if (q->detached) {
        ev_timer_set(&q->timer, q->max, 0.);
        ev_timer_start(j->core->loop, &q->timer);
    }
    char full[ENV_STR_MAX + 1];
    sm_full_of(j->user, s, full, sizeof full);
    log_info("sm_adopted", "jid=%s sid=%s instance=%s copies=%ld held=%ld duplicates=%ld "
             "out=%u acked=%u h=%u resumable=%d detached=%d", sb_log_q(full), s->sid,
             s->instance, cn, held, dropped, q->out, acked, q->in_h, q->id[0] != 0, q->detached);
    if (!q->id[0] && q->detached) {
        sm_end_later(q, "adopt-detached");      /* nobody can resume it */
        return SB_OK;
    }
    if (!sm_frontend_gone(j->core, s->instance))
        for (const struct sm_qent *e = first_held; e; e = e->next) {
            if (q->detached)
                sm_send_detached(j->core, s, e);
            else
                sm_send_entry(j->core, s, e);
        }
    return SB_OK;
}

/* sm-moved: a front-end got a numbered stanza of ours after another sm
 * adopted the stream (this one was frozen past its lease, or the set of
 * sms changed). If the user is ours now, adopt the stream again from the
 * front-end (it holds everything we sent); if not, forget the queue: it
 * is all on the stream and the owner adopted it. */
/* The session with a managed stream that a front-end's control (aux = the
 * user's JID, sid) names, when the stream is on that front-end; NULL
 * otherwise. */
static struct sm_session *job_smq_session(struct sm_job *j, struct sm_user **up)
{
    char bare[ENV_STR_MAX + 1];
    struct sm_user *u = NULL;
    if (jid_bare_of(j->aux, bare, sizeof bare) >= 0)
        HASH_FIND_STR(j->core->users, bare, u);
    struct sm_session *s = sm_session_by_sid(u, j->sid);
    *up = u;
    return s && s->smq && !strcmp(s->instance, j->sender) ? s : NULL;
}

static sb_rc sm_moved(struct sm_job *j)
{
    struct sm_user *u;
    struct sm_session *s = job_smq_session(j, &u);
    struct sm_smq *q = s ? s->smq : NULL;
    if (!q || q->adopting || q->detached || q->ending)
        return SB_OK;
    int own = sm_cluster_owns(j->core, u->bare);
    log_info("sm_moved", "jid=%s sid=%s unacked=%ld readopt=%d", sb_log_q(j->aux), s->sid,
             q->n, own);
    s->smq = NULL;
    sm_smq_free(q);
    if (own)
        sm_smq_adopt_start(j->core, u, s);
    return SB_OK;
}

/* ---- controls ----------------------------------------------------------------------- */

static void sm_fail(struct sm_job *j, const char *cond, const struct sm_smq *q)
{
    char body[24] = "";
    if (q)
        snprintf(body, sizeof body, "h=%u", q->in_h);
    log_info("sm_failed", "jid=%s sid=%s cond=%s", sb_log_q(j->key), j->sid, cond);
    sm_send_control_body(j->core, ENV_ROUTE_INSTANCE, j->sender, j->sid, "sm-failed", cond, body);
}

static sb_rc sm_enable(struct sm_job *j)
{
    struct sm_session *s = sm_session_of(j->user, j->aux, j->sid);
    if (!s || s->smq) {
        sm_fail(j, s ? "unexpected-request" : "item-not-found", NULL);
        return SB_OK;
    }
    char v[16];
    int max = (int)sb_config_int("sm_resume_max", SM_MAX_DEFAULT);
    if (sm_body_value(j->body, "max", v, sizeof v) && atoi(v) > 0 && atoi(v) < max)
        max = atoi(v);
    struct sm_smq *q = sm_smq_new(j->core, j->user, s, max);
    if (!q) {
        sm_fail(j, "resource-constraint", NULL);
        return SB_OK;
    }
    if (sm_body_value(j->body, "resume", v, sizeof v) && !strcmp(v, "1"))
        sb_random_id(q->id, SM_ID_LEN);
    s->smq = q;
    sm_session_store(j->core, j->user, s);     /* flag m: a next owner adopts it */
    char body[24];
    snprintf(body, sizeof body, "max=%d", max);
    log_info("sm_enabled", "jid=%s sid=%s resumable=%d max=%d", sb_log_q(j->aux), j->sid,
             q->id[0] != 0, max);
    sm_send_control_body(j->core, ENV_ROUTE_INSTANCE, j->sender, j->sid, "sm-enabled", q->id, body);
    return SB_OK;
}

static sb_rc sm_ack(struct sm_job *j, int is_ack)
{
    struct sm_session *s = sm_session_by_sid(j->user, j->sid);
    if (!s || !s->smq || s->smq->adopting || strcmp(s->instance, j->sender))
        return SB_OK;           /* adopting: sm-state brings the counts */
    uint32_t h = sm_parse_h(j->aux);
    if (!is_ack)
        s->smq->in_h = h;
    else if (sm_h_valid(s->smq, h))
        sm_trim(s->smq, h);
    return SB_OK;
}

/* session-gone / end for a stream-managed session. SB_DECLINED: the
 * session ends as any other (presence, Redis: the next modules). */
static sb_rc sm_gone(struct sm_job *j, const char *op)
{
    struct sm_session *s = sm_session_of(j->user, j->aux, j->sid);
    struct sm_smq *q = s ? s->smq : NULL;
    if (!q)
        return SB_DECLINED;
    char v[16];
    if (sm_body_value(j->body, "h", v, sizeof v) && !strcmp(j->sender, s->instance))
        q->in_h = sm_parse_h(v);
    if (!strcmp(op, "session-gone") && q->adopting && !q->ending) {
        q->detached = 1;    /* its front-end keeps a ghost: the state still comes */
        return SB_OK;
    }
    if (!strcmp(op, "session-gone") && q->id[0] && !q->ending) {
        if (!q->detached) {
            q->detached = 1;
            ev_timer_set(&q->timer, q->max, 0.);
            ev_timer_start(j->core->loop, &q->timer);
            log_info("sm_detached", "jid=%s sid=%s instance=%s unacked=%ld max=%d",
                     sb_log_q(j->aux), j->sid, s->instance, q->n, q->max);
        }
        return SB_OK;       /* kept: no unavailable presence, nothing removed */
    }
    sm_replay_unacked(j->core, j->user, q);
    s->smq = NULL;
    sm_smq_free(q);
    return SB_DECLINED;
}

static sb_rc sm_resume(struct sm_job *j)
{
    struct sm_core *c = j->core;
    struct sm_user *u = j->user;
    char previd[SM_ID_LEN + 2] = "";
    const char *sp = strchr(j->aux, ' ');
    struct sm_session *s = NULL;
    if (sp && (size_t)(sp - j->aux) <= SM_ID_LEN) {
        memcpy(previd, j->aux, (size_t)(sp - j->aux));
        previd[sp - j->aux] = '\0';
        for (int i = 0; u && i < u->nsess && *previd; i++)
            if (u->sess[i].smq && !strcmp(u->sess[i].smq->id, previd))
                s = &u->sess[i];
    }
    if (!s || s->smq->ending || s->smq->adopting) {
        sm_fail(j, "item-not-found", NULL);
        return SB_OK;
    }
    struct sm_smq *q = s->smq;
    uint32_t h = sm_parse_h(sp + 1);
    if (!sm_h_valid(q, h)) {
        sm_fail(j, "undefined-condition", q);
        return SB_OK;
    }
    char full[ENV_STR_MAX + 1], member[ENV_STR_MAX + ENV_NAME_MAX + 2];
    sm_full_of(u, s, full, sizeof full);
    /* the old stream, if still open, gives way; if it broke, its front-end
     * drops the ghost of it */
    if (!q->detached || !sm_frontend_gone(c, s->instance))
        sm_send_control(c, ENV_ROUTE_INSTANCE, s->instance, s->sid, "sm-takeover", full);
    snprintf(member, sizeof member, "%s %s", full, s->sid);
    SM_RCMD(c, sm_on_redis, NULL, "SREM fe:%s %s", s->instance, member);
    log_info("sm_resumed", "jid=%s from_instance=%s from_sid=%s instance=%s sid=%s h=%u "
             "resent=%u detached=%d", sb_log_q(full), s->instance, s->sid, j->sender, j->sid, h,
             q->out - h, q->detached);
    memcpy(q->prev_instance, s->instance, sizeof q->prev_instance);
    memcpy(q->prev_sid, s->sid, sizeof q->prev_sid);
    snprintf(s->instance, sizeof s->instance, "%s", j->sender);
    snprintf(s->sid, sizeof s->sid, "%s", j->sid);
    s->inactive = 0;            /* XEP-0352 §5: a resumed stream starts active */
    sm_session_store(c, u, s);
    snprintf(member, sizeof member, "%s %s", full, s->sid);
    SM_RCMD(c, sm_on_redis, NULL, "SADD fe:%s %s", s->instance, member);
    sm_frontend_alive(c, s->instance);
    q->detached = 0;
    ev_timer_stop(c->loop, &q->timer);
    sm_push_online(u);
    sm_trim(q, h);
    char body[40];
    snprintf(body, sizeof body, "h=%u max=%d", q->in_h, q->max);
    sm_send_control_body(c, ENV_ROUTE_INSTANCE, s->instance, s->sid, "sm-resumed", full, body);
    for (const struct sm_qent *e = q->head; e; e = e->next)
        sm_send_entry(c, s, e);
    sm_csi_activate(c, u, s, 0);        /* what was held follows, numbered */
    sm_carbons_session_up(c, u, s);     /* the new front-end learns the route */
    return SB_OK;
}

/* A message or iq for a stream another sm owns, to the user's key: the
 * owner delivers it (numbered there). oseq: its number at an earlier owner. */
static sb_rc sm_pass_on(struct sm_core *c, const struct sm_user *u, const char *sid,
                        uint32_t oseq, const char *from, const char *body, size_t len)
{
    if (strncmp(body, "<message", 8) && strncmp(body, "<iq", 3))
        return SB_OK;           /* presence: the owner has its own */
    struct env_hdr h;
    env_init(&h, ENV_STANZA, ENV_ROUTE_JID);
    snprintf(h.key, sizeof h.key, "%s", u->bare);
    snprintf(h.sender, sizeof h.sender, "%s", link_instance(c->link));
    if (oseq) {
        snprintf(h.op, sizeof h.op, "sm-handover:%u", oseq);
        snprintf(h.sid, sizeof h.sid, "%s", sid);
    } else {
        snprintf(h.op, sizeof h.op, "sm-replay");
    }
    snprintf(h.aux, sizeof h.aux, "%s", from);
    return link_send(c->link, &h, body, len);
}

/* sm-elsewhere: the front-end says another sm owns the user (we asked
 * sm-query after a freeze, for what waited in our socket). What we held
 * and what comes for the session later goes to the user's key (the owner:
 * delivered there, numbered after the front-end's copies). */
static sb_rc sm_elsewhere(struct sm_job *j)
{
    struct sm_user *u;
    struct sm_session *s = job_smq_session(j, &u);
    struct sm_smq *q = s ? s->smq : NULL;
    if (!q || !q->adopting || q->ending)
        return SB_OK;
    if (sm_cluster_owns(j->core, u->bare))
        return SB_OK;           /* our views differ for a moment: asked again in 1 s */
    long n = q->n;
    for (struct sm_qent *e = q->head; e; e = e->next)
        sm_pass_on(j->core, u, s->sid, e->oseq, e->from, e->data, e->len);
    sm_entries_free(q->head);
    q->head = q->tail = NULL;
    q->n = 0;
    q->adopting = 0;
    q->elsewhere = 1;
    ev_timer_stop(j->core->loop, &q->timer);
    log_info("sm_adopt_elsewhere", "jid=%s sid=%s passed_on=%ld", sb_log_q(j->aux), s->sid, n);
    return SB_OK;
}

static sb_rc sm_control(struct sm_job *j, const char *op)
{
    if (!strcmp(op, "sm-moved"))
        return sm_moved(j);     /* routed to this instance: not on a user's queue */
    if (!strcmp(op, "sm-elsewhere"))
        return sm_elsewhere(j);
    if (!j->user)
        return SB_DECLINED;
    if (!strcmp(op, "sm-enable"))
        return sm_enable(j);
    if (!strcmp(op, "sm-ack"))
        return sm_ack(j, 1);
    if (!strcmp(op, "sm-h"))
        return sm_ack(j, 0);
    if (!strcmp(op, "sm-resume"))
        return sm_resume(j);
    if (!strcmp(op, "sm-state"))
        return sm_adopt(j);
    if (!strcmp(op, "end") || !strcmp(op, "session-gone"))
        return sm_gone(j, op);
    return SB_DECLINED;
}

/* ---- stanzas ------------------------------------------------------------------------- */

/* op=sm-local: a stanza the front-end answered its own client with, for a
 * stream-managed session (numbered with the rest); op=stale for such a
 * session: already in its queue, resent on resumption. */
/* sm-handover:N — an unacknowledged stanza of stream `sid` (number N there)
 * from the sm that had the user. If this sm adopts that stream (or has),
 * the front-end's copies decide: one it has already is not delivered again.
 * Otherwise it is an ordinary replay. */
static sb_rc sm_handover(struct sm_job *j)
{
    uint32_t oseq = sm_parse_h(j->op + 12);
    for (int i = 0; i < j->user->nsess; i++) {
        struct sm_session *s = &j->user->sess[i];
        struct sm_smq *q = s->smq;
        if (!q)
            continue;
        if (q->adopting && !strcmp(s->sid, j->sid)) {
            struct sm_qent *e = sm_qent_add(q, j->aux, j->body, j->body_len);
            if (e)
                e->oseq = oseq;
            return SB_OK;       /* sorted out when the state comes (sm_adopt) */
        }
        if (*q->adopt_sid && !strcmp(q->adopt_sid, j->sid) && !sm_seq_after(oseq, q->adopt_out)) {
            log_debug("sm_handover_dropped", "jid=%s sid=%s seq=%u", sb_log_q(j->key), j->sid,
                      oseq);
            return SB_OK;       /* the adopted copies had it */
        }
    }
    j->op = "sm-replay";        /* the next modules: an ordinary replay */
    return SB_DECLINED;
}

static sb_rc sm_stanza(struct sm_job *j)
{
    if (!*j->op || !j->user)
        return SB_DECLINED;
    if (!strncmp(j->op, "sm-handover:", 12))
        return sm_handover(j);
    if (!strcmp(j->op, "sm-local")) {
        struct sm_session *s = sm_session_by_sid(j->user, j->sid);
        if (s)
            sm_deliver_raw(j->core, s, j->aux, j->body, j->body_len);
        return SB_OK;
    }
    if (!strcmp(j->op, "stale")) {
        struct sm_session *s = sm_session_of(j->user, j->to, NULL);
        if (s && s->smq) {
            log_debug("sm_stale_queued", "to=%s sid=%s", sb_log_q(j->to), j->sid);
            return SB_OK;
        }
    }
    return SB_DECLINED;
}

static sb_rc sm_iq(struct sm_job *j, const char *ns)
{
    return sm_stanza(j);
}

const struct sm_module sm_mod_sm = {
    .name = "sm",
    .handle_control = sm_control,
    .handle_message = sm_stanza,
    .handle_presence = sm_stanza,
    .handle_iq = sm_iq,
};
