/* mod_offline.c — offline storage (RFC 6121 §8.5.2.1.1, XEP-0160). A chat
 * or normal message with a body, to a local account with no available
 * resource of non-negative priority (and not to a bound full JID), is kept
 * in PostgreSQL `offline`, stamped with XEP-0203 <delay/>. One statement
 * checks that the account exists, checks the per-user quota ([sm]
 * offline_max, default 100) and inserts:
 *   no such account → service-unavailable (remembered for 10 s, so floods
 *                     to unknown users cost no SQL)
 *   quota reached   → resource-constraint to the sender
 *   database down   → the spool (below); only a full spool answers
 *                     resource-constraint (wait)
 * The spool: while PostgreSQL is known to be down (or a store got no
 * answer, or earlier messages still wait there) a message is kept in this
 * sm's memory, in arrival order, bounded by [sm] offline_spool_max
 * messages and offline_spool_bytes, and written in that order, one at a
 * time, once the database is back (sm/pgwait.h: the same retries and log
 * lines as the archive's). What the statement then refuses (no such
 * account, quota) is answered to the sender late. A user who becomes
 * available meanwhile gets the spooled messages from memory. Every spooled
 * message is also kept in Redis (a list per sm, below), so an sm killed or
 * stopped before the database returns loses nothing: the same sm started
 * again takes its list back, and once its liveness key is gone another sm
 * adopts it; the store skips a message PostgreSQL already has.
 * sm_offline_flush() hands stored messages to a resource that became
 * available with priority ≥ 0, and deletes them only after they were
 * handed to the link (a failed delete means a duplicate, never a loss).
 * A stored message is handed to mod_push (sm_push_notify) with the count
 * of stored messages, which the same statement returns.
 * Everything else is left to mod_deliver. */
#include "im.h"
#include "pgwait.h"
#include "jid.h"
#include "config.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern const struct sm_module sm_mod_offline;

#define OFFLINE_UNKNOWN_TTL 10.0
#define OFFLINE_UNKNOWN_MAX 10000

/* ---- unknown accounts, briefly remembered ------------------------------------------ */

struct offline_unknown {
    char *bare;
    double until;
    UT_hash_handle hh;
};
static struct offline_unknown *offline_unknown;

static void offline_unknown_clear(void)
{
    struct offline_unknown *e, *tmp;
    HASH_ITER(hh, offline_unknown, e, tmp) {
        HASH_DEL(offline_unknown, e);
        free(e->bare);
        free(e);
    }
}

static int offline_is_unknown(const char *bare)
{
    struct offline_unknown *e;
    HASH_FIND_STR(offline_unknown, bare, e);
    if (!e)
        return 0;
    if (e->until > sb_now())
        return 1;
    HASH_DEL(offline_unknown, e);
    free(e->bare);
    free(e);
    return 0;
}

static void offline_mark_unknown(const char *bare)
{
    if (offline_is_unknown(bare))
        return;
    if (HASH_COUNT(offline_unknown) >= OFFLINE_UNKNOWN_MAX)
        offline_unknown_clear();
    struct offline_unknown *e = calloc(1, sizeof *e);
    if (!e || !(e->bare = strdup(bare))) {
        free(e);
        return;
    }
    e->until = sb_now() + OFFLINE_UNKNOWN_TTL;
    HASH_ADD_KEYPTR(hh, offline_unknown, e->bare, strlen(e->bare), e);
}

/* ---- storing ------------------------------------------------------------------------ */

/* The spool's statement: the same, and a message PostgreSQL already holds
 * (the same bytes, <delay/> stamp to the millisecond included: written
 * before an sm died with its Redis copy, or by two sms) is not stored
 * twice: 4th column. */
static const char SPOOL_STORE_SQL[] =
    "WITH u AS (SELECT EXISTS (SELECT 1 FROM users WHERE domain = $1 AND username = $2) AS ok),"
    " d AS (SELECT EXISTS (SELECT 1 FROM offline WHERE domain = $1 AND username = $2"
    " AND stanza = $3) AS dup),"
    " n AS (SELECT count(*) AS c FROM offline WHERE domain = $1 AND username = $2),"
    " ins AS (INSERT INTO offline (domain, username, stanza) SELECT $1, $2, $3 FROM u, n, d"
    " WHERE u.ok AND NOT d.dup AND n.c < $4::bigint RETURNING id)"
    " SELECT u.ok, (SELECT count(*) FROM ins), (SELECT c FROM n), d.dup FROM u, d";

static const char OFFLINE_STORE_SQL[] =
    "WITH u AS (SELECT EXISTS (SELECT 1 FROM users WHERE domain = $1 AND username = $2) AS ok),"
    " n AS (SELECT count(*) AS c FROM offline WHERE domain = $1 AND username = $2),"
    " ins AS (INSERT INTO offline (domain, username, stanza) SELECT $1, $2, $3 FROM u, n"
    " WHERE u.ok AND n.c < $4::bigint RETURNING id)"
    " SELECT u.ok, (SELECT count(*) FROM ins), (SELECT c FROM n) FROM u";

/* ---- the spool (PostgreSQL cannot take the message now) ---------------------------- */

struct spool_item {
    struct spool_item *next;
    char *sid;                  /* "SM.INCARNATION.N": unique, names the Redis copy's maker */
    char *bare;                 /* the recipient's account */
    char *from, *to, *id;       /* for a late error: the sender, the original to, id */
    char *stanza;               /* as it will be stored: with <delay/> */
    size_t len;
};

static struct offline_spool {
    struct sm_core *core;
    struct spool_item *head, *tail;
    long n, bytes;
    long max, max_bytes;
    long stored, refused, dups; /* since the last recovered line */
    struct sm_pgwait w;         /* head in flight (pgwait.h) */
    /* the copy in Redis */
    char key[ENV_NAME_MAX + 32], live[ENV_NAME_MAX + 32];
    char inc[17];               /* this process's incarnation, in every sid it makes */
    unsigned long seq;
    int loaded;                 /* own list read back (after a restart) */
    int redis_failing;          /* logged once per run of failures */
    long unmirrored;            /* items whose copy Redis refused */
    struct sb_buf ser;          /* scratch: one item as stored in Redis */
    ev_timer tick;
} spool;

static void spool_item_free(struct spool_item *it)
{
    if (!it)
        return;
    free(it->sid);
    free(it->bare);
    free(it->from);
    free(it->to);
    free(it->id);
    free(it->stanza);
    free(it);
}

static long spool_waiting(const struct sm_pgwait *w)
{
    return spool.n;
}

static void spool_limits(void)
{
    spool.max = sb_config_int("offline_spool_max", 10000);
    spool.max_bytes = sb_config_int("offline_spool_bytes", 64L << 20);
}

/* ---- the spool's copy in Redis ------------------------------------------------------
 * {sb:spool}:SM is a list of this sm's spooled messages, in order, each
 * "S1\0sid\0bare\0from\0to\0id\0stanza"; {sb:spool}:names the sms that have
 * one; {sb:spool}:live:SM exists while SM runs (renewed every SPOOL_TICK,
 * gone SPOOL_LIVE_MS after it stopped). A message is pushed when spooled
 * and removed (LREM, found at the head in the usual order) once PostgreSQL
 * took it or it went to the user from memory. One hash tag: the adoption
 * script moves between lists in one slot. */
#define SPOOL_TAG "{sb:spool}:"
#define SPOOL_TICK 5.0
#define SPOOL_LIVE_MS 15000

/* A dead sm's list (its live key gone) moved to the head of ours (older
 * than what we spooled), returned in order. Atomic: one adopter per list,
 * and none once the sm started again (it sets its live key first). */
static const char SPOOL_ADOPT_LUA[] =
    "local out = {} "
    "for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
    "  if n ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. 'live:' .. n) == 0 then "
    "    local src = ARGV[2] .. n "
    "    local items = redis.call('LRANGE', src, 0, -1) "
    "    for i = #items, 1, -1 do redis.call('LPUSH', KEYS[2], items[i]) end "
    "    for i = 1, #items do out[#out + 1] = items[i] end "
    "    redis.call('DEL', src) "
    "    redis.call('SREM', KEYS[1], n) "
    "  end "
    "end "
    "return out";

static void spool_serialise(const struct spool_item *it, struct sb_buf *b)
{
    const char *f[6] = {"S1", it->sid, it->bare, it->from, it->to, it->id};
    sb_buf_reset(b);
    for (int i = 0; i < 6; i++)
        sb_buf_add(b, f[i], strlen(f[i]) + 1);
    sb_buf_add(b, it->stanza, it->len);
}

/* One Redis copy back into an item; NULL when malformed. */
static struct spool_item *spool_parse(const char *p, size_t len)
{
    const char *f[6];
    size_t at = 0;
    for (int i = 0; i < 6; i++) {
        const char *z = at < len ? memchr(p + at, '\0', len - at) : NULL;
        if (!z)
            return NULL;
        f[i] = p + at;
        at = (size_t)(z - p) + 1;
    }
    if (strcmp(f[0], "S1") || !*f[2] || at >= len)
        return NULL;
    struct spool_item *it = calloc(1, sizeof *it);
    if (!it || !(it->sid = strdup(f[1])) || !(it->bare = strdup(f[2])) ||
        !(it->from = strdup(f[3])) || !(it->to = strdup(f[4])) || !(it->id = strdup(f[5])) ||
        !(it->stanza = malloc(len - at + 1))) {
        spool_item_free(it);
        return NULL;
    }
    it->len = len - at;
    memcpy(it->stanza, p + at, it->len);
    it->stanza[it->len] = '\0';
    return it;
}

static void spool_on_redis(redisReply *r, void *arg)
{
    const char *what = arg;
    if (r && r->type != REDIS_REPLY_ERROR) {
        if (spool.redis_failing)
            log_info("offline_spool_redis_ok", "what=%s", what);
        spool.redis_failing = 0;
        return;
    }
    if (!strcmp(what, "push"))
        spool.unmirrored++;
    if (!spool.redis_failing)
        log_warn("offline_spool_redis_failed", "what=%s error=%s", what,
                 sb_log_q(r && r->str ? r->str : "redis unavailable"));
    spool.redis_failing = 1;
}

static void spool_mirror(const struct spool_item *it)
{
    spool_serialise(it, &spool.ser);
    if (!spool.ser.data || SM_RCMD(spool.core, spool_on_redis, "push", "RPUSH %s %b",
                                   spool.key, spool.ser.data, spool.ser.len) != SB_OK)
        spool_on_redis(NULL, "push");
}

/* PostgreSQL has it, or the user got it: the copy goes. */
static void spool_unmirror(const struct spool_item *it)
{
    spool_serialise(it, &spool.ser);
    if (spool.ser.data)
        SM_RCMD(spool.core, spool_on_redis, "remove", "LREM %s 1 %b", spool.key,
                spool.ser.data, spool.ser.len);
}

/* Older messages (read back or adopted) before what the spool holds, after
 * the one in flight. */
static void spool_insert_older(struct spool_item *first, struct spool_item *last, long n,
                               long bytes)
{
    struct spool_item **at = spool.head && spool.w.flying ? &spool.head->next : &spool.head;
    last->next = *at;
    if (!*at)
        spool.tail = last;
    *at = first;
    spool.n += n;
    spool.bytes += bytes;
}

static void spool_kick(void);

/* Items of a Redis reply (skip: sids of this incarnation, already here). */
static void spool_take(redisReply *r, const char *why)
{
    struct spool_item *first = NULL, *last = NULL;
    long n = 0, bytes = 0, bad = 0;
    char own[ENV_NAME_MAX + 40];
    snprintf(own, sizeof own, "%s.%s.", link_instance(spool.core->link), spool.inc);
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        struct spool_item *it = e->type == REDIS_REPLY_STRING ? spool_parse(e->str, e->len)
                                                               : NULL;
        if (!it) {
            bad++;
            continue;
        }
        if (!strncmp(it->sid, own, strlen(own))) {
            spool_item_free(it);
            continue;
        }
        if (last)
            last->next = it;
        else
            first = it;
        last = it;
        n++;
        bytes += (long)it->len;
    }
    if (n)
        spool_insert_older(first, last, n, bytes);
    if (n || bad)
        log_warn("offline_spool_taken", "messages=%ld malformed=%ld why=%s waiting=%ld", n,
                 bad, why, spool.n);
    spool_kick();
}

static void spool_on_own(redisReply *r, void *arg)
{
    if (!spool.core || spool.loaded || !r || r->type != REDIS_REPLY_ARRAY)
        return;                 /* the next tick asks again */
    spool.loaded = 1;
    spool.tick.repeat = SPOOL_TICK;     /* asked every second until now */
    spool_take(r, "restart");
}

static void spool_on_adopted(redisReply *r, void *arg)
{
    if (spool.core && r && r->type == REDIS_REPLY_ARRAY && r->elements)
        spool_take(r, "adopted");
}

/* Renew the live key; read our own list back once; adopt dead sms' lists. */
static void spool_on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct sm_core *c = spool.core;
    if (!c || c->stopping || !rdev_connected(c->rd))
        return;
    const char *me = link_instance(c->link);
    SM_RCMD(c, spool_on_redis, "live", "SET %s 1 PX %d", spool.live, SPOOL_LIVE_MS);
    if (!spool.loaded) {
        SM_RCMD(c, spool_on_redis, "names", "SADD " SPOOL_TAG "names %s", me);
        SM_RCMD(c, spool_on_own, NULL, "LRANGE %s 0 -1", spool.key);
        return;
    }
    SM_RCMD(c, spool_on_adopted, NULL, "EVAL %s 2 " SPOOL_TAG "names %s %s " SPOOL_TAG,
            SPOOL_ADOPT_LUA, spool.key, me);
}

static void spool_mirror_start(struct sm_core *c)
{
    const char *me = link_instance(c->link);
    snprintf(spool.key, sizeof spool.key, SPOOL_TAG "%s", me);
    snprintf(spool.live, sizeof spool.live, SPOOL_TAG "live:%s", me);
    sb_random_id(spool.inc, sizeof spool.inc - 1);
    ev_timer_init(&spool.tick, spool_on_tick, 0.2, 1.0);
    ev_timer_start(c->loop, &spool.tick);
}

/* The stamped message into the spool; SB_LIMIT when full, SB_ERROR out of memory. */
static sb_rc spool_add(const struct sm_job *j, const char *stanza, size_t len)
{
    if (!spool.core)
        return SB_ERROR;
    if (spool.n >= spool.max || spool.bytes + (long)len > spool.max_bytes)
        return SB_LIMIT;
    struct spool_item *it = calloc(1, sizeof *it);
    char sid[ENV_NAME_MAX + 48];
    snprintf(sid, sizeof sid, "%s.%s.%lu", link_instance(spool.core->link), spool.inc,
             ++spool.seq);
    if (!it || !(it->sid = strdup(sid)) || !(it->bare = strdup(j->key)) ||
        !(it->from = strdup(j->from)) ||
        !(it->to = strdup(j->to ? j->to : j->key)) || !(it->id = strdup(j->id ? j->id : "")) ||
        !(it->stanza = malloc(len + 1))) {
        spool_item_free(it);
        return SB_ERROR;
    }
    memcpy(it->stanza, stanza, len);
    it->stanza[len] = '\0';
    it->len = len;
    if (spool.tail)
        spool.tail->next = it;
    else
        spool.head = it;
    spool.tail = it;
    spool.n++;
    spool.bytes += (long)len;
    spool_mirror(it);
    return SB_OK;
}

static void spool_pop(void)
{
    struct spool_item *it = spool.head;
    if (!it)
        return;
    spool.head = it->next;
    if (!spool.head)
        spool.tail = NULL;
    spool.n--;
    spool.bytes -= (long)it->len;
    spool_item_free(it);
}

/* What the database refused once it could answer: the sender learns it now. */
static void spool_late_error(const struct spool_item *it, const char *etype, const char *cond)
{
    char bare[ENV_STR_MAX + 1];
    struct sb_buf b = SB_BUF_INIT;
    if (!*it->from || jid_bare_of(it->from, bare, sizeof bare) < 0)
        return;
    sb_buf_adds(&b, "<message type='error' from='");
    xml_escape_attr(&b, it->to, strlen(it->to));
    sb_buf_adds(&b, "' to='");
    xml_escape_attr(&b, it->from, strlen(it->from));
    if (*it->id) {
        sb_buf_adds(&b, "' id='");
        xml_escape_attr(&b, it->id, strlen(it->id));
    }
    sb_buf_printf(&b, "'><error type='%s'><%s xmlns='" SM_NS_STANZAS "'/></error></message>",
                  etype, cond);
    if (b.data)
        sm_send_raw(spool.core, bare, it->to, b.data, b.len);
    log_info("stanza_error", "cond=%s name=message to=%s from=%s late=spool", cond,
             sb_log_q(it->from), sb_log_q(it->to));
    sb_buf_free(&b);
}

static void spool_send(struct sm_pgwait *w);

static void spool_on_stored(PGresult *res, void *arg)
{
    struct spool_item *it = spool.head;
    if (!it || !spool.core)
        return;
    if (!res) {
        sm_pgwait_failed(&spool.w, "no connection");
        return;
    }
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) >= 4;
    if (ok && PQgetvalue(res, 0, 3)[0] == 't') {
        log_info("offline_spool_duplicate", "to=%s from=%s sid=%s", sb_log_q(it->bare),
                 sb_log_q(it->from), sb_log_q(it->sid));
        spool.dups++;
    } else if (!ok) {
        log_error("offline_store_failed", "to=%s error=%s from=spool", sb_log_q(it->bare),
                  sb_log_q(PQresultErrorMessage(res)));
        spool_late_error(it, "wait", "internal-server-error");
        spool.refused++;
    } else if (PQgetvalue(res, 0, 0)[0] != 't') {
        offline_mark_unknown(it->bare);
        log_info("deliver_fail", "to=%s reason=no-such-user from=spool", sb_log_q(it->bare));
        spool_late_error(it, "cancel", "service-unavailable");
        spool.refused++;
    } else if (strcmp(PQgetvalue(res, 0, 1), "1")) {
        log_info("offline_full", "to=%s max=%ld from=spool", sb_log_q(it->bare),
                 sm_im_limits()->offline);
        spool_late_error(it, "wait", "resource-constraint");
        spool.refused++;
    } else {
        log_info("offline_stored", "to=%s from=%s spooled=1", sb_log_q(it->bare),
                 sb_log_q(it->from));
        spool.stored++;
    }
    spool_unmirror(it);
    spool_pop();
    sm_pgwait_ok(&spool.w);
    if (!spool.head) {
        log_info("offline_spool_recovered", "stored=%ld refused=%ld duplicates=%ld",
                 spool.stored, spool.refused, spool.dups);
        spool.stored = spool.refused = spool.dups = 0;
    }
    spool_send(&spool.w);
}

/* The head to PostgreSQL, unless it is in flight or the database is down. */
static void spool_send(struct sm_pgwait *w)
{
    struct spool_item *it = spool.head;
    char node[ENV_STR_MAX + 1], quota[24];
    const char *domain;
    if (!it || !spool.core || spool.core->stopping)
        return;
    if (sm_pg_down(spool.core)) {
        sm_pgwait_later(w);
        return;
    }
    if (sm_im_split(it->bare, node, sizeof node, &domain) < 0) {
        spool_unmirror(it);
        spool_pop();            /* cannot be: the job key was checked */
        spool_send(w);
        return;
    }
    snprintf(quota, sizeof quota, "%ld", sm_im_limits()->offline);
    const char *params[4] = {domain, node, it->stanza, quota};
    if (!w->flying || w->failing)
        sm_pgwait_sent(w);
    if (sm_pg_query(spool.core, SPOOL_STORE_SQL, 4, params, spool_on_stored, NULL) != SB_OK)
        sm_pgwait_failed(w, "queue");
}

static void spool_kick(void)
{
    if (spool.head && !spool.w.flying)
        spool_send(&spool.w);
}

/* A user became available: the spooled messages for it go to session s
 * now, in order, except the one being written (it reaches PostgreSQL, and
 * so the next flush). */
static int spool_flush_to(struct sm_core *c, const struct sm_session *s, const char *bare)
{
    struct spool_item **pp = &spool.head, *prev = NULL;
    int n = 0;
    while (*pp) {
        struct spool_item *it = *pp;
        if ((it == spool.head && spool.w.flying) || strcmp(it->bare, bare)) {
            prev = it;
            pp = &it->next;
            continue;
        }
        if (sm_deliver_raw(c, s, "", it->stanza, it->len) != SB_OK)
            break;
        spool_unmirror(it);
        *pp = it->next;
        if (spool.tail == it)
            spool.tail = prev;
        spool.n--;
        spool.bytes -= (long)it->len;
        spool_item_free(it);
        n++;
    }
    if (n)
        log_info("offline_delivered", "jid=%s res=%s count=%d from=spool", sb_log_q(bare),
                 sb_log_q(s->resource), n);
    return n;
}

long sm_offline_waiting(const struct sm_core *c)
{
    return spool.core == c ? spool.n : 0;
}

/* Into the spool; answers the sender only when it is full. */
static void offline_spool_job(struct sm_job *j, const char *stanza, size_t len, const char *why)
{
    sb_rc rc = spool_add(j, stanza, len);
    if (rc != SB_OK) {
        log_warn("offline_spool_full", "to=%s waiting=%ld bytes=%ld why=%s", sb_log_q(j->key),
                 spool.n, spool.bytes, rc == SB_LIMIT ? "full" : "nomem");
        sm_reply_error(j, "wait", "resource-constraint");
        return;
    }
    if (spool.n == 1)
        log_warn("offline_spool_started", "to=%s why=%s", sb_log_q(j->key), why);
    log_info("offline_spooled", "to=%s from=%s waiting=%ld", sb_log_q(j->key),
             sb_log_q(j->from), spool.n);
    if (j->user && j->user->im)
        j->user->im->offline++;
    if (j->user)
        sm_push_notify(j, j->user->im ? j->user->im->offline : 1);
    spool_kick();
}

/* Would mod_deliver hand this message to some session? */
static int offline_deliverable(const struct sm_job *j)
{
    const struct sm_user *u = j->user;
    const char *slash = j->to ? strchr(j->to, '/') : NULL;
    const struct sm_session *s = slash ? sm_user_session((struct sm_user *)u, slash + 1) : NULL;
    if (s && sm_job_reaches(j, s))
        return 1;
    for (int i = 0; i < u->nsess; i++)
        if (u->sess[i].available && u->sess[i].prio >= 0 &&
            sm_job_reaches(j, &u->sess[i]))
            return 1;
    return 0;
}

/* The stanza as received with <delay/> before its end tag. */
static sb_rc offline_stamp(const struct sm_job *j, const char *domain, struct sb_buf *out)
{
    char stamp[40];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
    struct sb_buf delay = SB_BUF_INIT;
    sb_buf_adds(&delay, "<delay xmlns='urn:xmpp:delay' from='");
    xml_escape_attr(&delay, domain, strlen(domain));
    sb_buf_printf(&delay, "' stamp='%s'/>", stamp);
    sb_rc rc = delay.data ? sm_stanza_add_child(j->body, j->body_len, delay.data, delay.len, out)
                          : SB_ERROR;
    sb_buf_free(&delay);
    if (rc != SB_OK)
        return SB_ERROR;    /* a self-closed message has no body to keep */
    return out->data ? SB_OK : SB_ERROR;
}

struct offline_store {
    struct sm_job *j;
    size_t len;
    char stanza[];              /* kept for the spool, should no answer come */
};

static void offline_on_store(PGresult *res, void *arg)
{
    struct offline_store *os = arg;
    struct sm_job *j = os->j;
    if (!res) {
        /* No answer (connection lost, deadline): it waits in the spool. */
        offline_spool_job(j, os->stanza, os->len, "no-answer");
    } else if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
        PQnfields(res) < 3) {
        log_error("offline_store_failed", "to=%s error=%s", sb_log_q(j->key),
                  sb_log_q(PQresultErrorMessage(res)));
        sm_reply_error(j, "wait", "internal-server-error");
    } else if (PQgetvalue(res, 0, 0)[0] != 't') {
        offline_mark_unknown(j->key);
        log_info("deliver_fail", "to=%s reason=no-such-user", sb_log_q(j->key));
        sm_reply_error(j, "cancel", "service-unavailable");
    } else if (strcmp(PQgetvalue(res, 0, 1), "1")) {
        log_info("offline_full", "to=%s max=%ld", sb_log_q(j->key), sm_im_limits()->offline);
        sm_reply_error(j, "wait", "resource-constraint");
    } else {
        if (j->user && j->user->im)
            j->user->im->offline++;
        log_info("offline_stored", "to=%s from=%s", sb_log_q(j->key), sb_log_q(j->from));
        if (j->user)
            sm_push_notify(j, strtol(PQgetvalue(res, 0, 2), NULL, 10) + 1);
    }
    free(os);
    sm_job_done(j);
}

static sb_rc offline_message(struct sm_job *j)
{
    if (!j->user || !strcmp(j->type, "error") || !strcmp(j->type, "groupchat") ||
        !strcmp(j->type, "headline") || offline_deliverable(j) ||
        !xml_child(j->st, "body", NULL))
        return SB_DECLINED;
    if (offline_is_unknown(j->key)) {
        sm_reply_error(j, "cancel", "service-unavailable");
        return SB_OK;
    }
    char node[ENV_STR_MAX + 1], quota[24];
    const char *domain;
    struct sb_buf stored = SB_BUF_INIT;
    if (sm_im_split(j->key, node, sizeof node, &domain) < 0 ||
        offline_stamp(j, domain, &stored) != SB_OK) {
        sb_buf_free(&stored);
        return SB_DECLINED;
    }
    /* Behind what the spool holds (order), or the database is away. */
    if (spool.head || sm_pg_down(j->core)) {
        offline_spool_job(j, stored.data, stored.len, spool.head ? "behind" : "down");
        sb_buf_free(&stored);
        return SB_OK;
    }
    struct offline_store *os = malloc(sizeof *os + stored.len + 1);
    if (!os) {
        sb_buf_free(&stored);
        sm_reply_error(j, "wait", "resource-constraint");
        return SB_OK;
    }
    os->j = j;
    os->len = stored.len;
    memcpy(os->stanza, stored.data, stored.len + 1);
    sb_buf_free(&stored);
    snprintf(quota, sizeof quota, "%ld", sm_im_limits()->offline);
    const char *params[4] = {domain, node, os->stanza, quota};
    if (sm_pg_query(j->core, OFFLINE_STORE_SQL, 4, params, offline_on_store, os) != SB_OK) {
        offline_spool_job(j, os->stanza, os->len, "queue");
        free(os);
        return SB_OK;
    }
    return SB_AGAIN;
}

/* ---- flushing ------------------------------------------------------------------------ */

struct offline_flush {
    struct sm_job *j;
    char resource[];
};

static void offline_on_delete(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_error("offline_delete_failed", "error=%s",
                  sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
}

static void offline_on_fetch(PGresult *res, void *arg)
{
    struct offline_flush *f = arg;
    struct sm_job *j = f->j;
    struct sm_session *s = j->user ? sm_user_session(j->user, f->resource) : NULL;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("offline_fetch_failed", "jid=%s error=%s", sb_log_q(j->key),
                  sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
    } else if (s && PQntuples(res) == 0 && j->user->im) {
        j->user->im->offline = 0;
    } else if (s && PQntuples(res) > 0) {
        struct sb_buf ids = SB_BUF_INIT;
        sb_buf_adds(&ids, "{");
        int n = 0;
        for (int i = 0; i < PQntuples(res); i++) {
            const char *st = PQgetvalue(res, i, 1);
            if (sm_deliver_raw(j->core, s, "", st, strlen(st)) != SB_OK)
                break;      /* keep the rest for the next time */
            sb_buf_printf(&ids, "%s%s", n++ ? "," : "", PQgetvalue(res, i, 0));
        }
        if (j->user->im && n == PQntuples(res))
            j->user->im->offline = 0;
        sb_buf_adds(&ids, "}");
        const char *params[1] = {ids.data};
        if (n && sm_pg_query(j->core, "DELETE FROM offline WHERE id = ANY($1::bigint[])", 1,
                             params, offline_on_delete, NULL) != SB_OK)
            log_error("offline_delete_failed", "error=queue");
        log_info("offline_delivered", "jid=%s res=%s count=%d", sb_log_q(j->key),
                 sb_log_q(f->resource), n);
        sb_buf_free(&ids);
    }
    /* newer than anything stored: what the spool holds for the user */
    s = j->user ? sm_user_session(j->user, f->resource) : NULL;
    if (s)
        spool_flush_to(j->core, s, j->key);
    free(f);
    sm_job_done(j);
}

sb_rc sm_offline_flush(struct sm_job *j, const char *resource)
{
    char node[ENV_STR_MAX + 1];
    const char *domain;
    if (sm_im_split(j->key, node, sizeof node, &domain) < 0)
        return SB_OK;
    struct offline_flush *f = malloc(sizeof *f + strlen(resource) + 1);
    if (!f)
        return SB_OK;
    f->j = j;
    strcpy(f->resource, resource);
    const char *params[2] = {domain, node};
    spool_kick();
    if (sm_pg_read(j->core, "SELECT id, stanza FROM offline WHERE domain = $1"
                   " AND username = $2 ORDER BY id", 2, params, offline_on_fetch, f) != SB_OK) {
        /* PostgreSQL is away: what it has waits; the spool's messages go now */
        struct sm_session *s = j->user ? sm_user_session(j->user, resource) : NULL;
        if (s)
            spool_flush_to(j->core, s, j->key);
        free(f);
        return SB_OK;
    }
    return SB_AGAIN;
}

static void offline_start(struct sm_core *c)
{
    spool.core = c;
    spool_limits();
    sm_pgwait_init(&spool.w, c, "offline_spool", spool_send, spool_waiting);
    spool_mirror_start(c);
}

/* What is still spooled stays in Redis for the next of us (or another sm);
 * what Redis refused is lost with the process: said once, counted. */
static void offline_stop(struct sm_core *c)
{
    offline_unknown_clear();
    if (spool.core != c)
        return;
    if (spool.n)
        log_warn("offline_spool_left", "messages=%ld bytes=%ld kept=redis lost=%ld "
                 "reason=stopping", spool.n, spool.bytes,
                 spool.unmirrored < spool.n ? spool.unmirrored : spool.n);
    ev_timer_stop(c->loop, &spool.tick);
    sm_pgwait_stop(&spool.w);
    while (spool.head)
        spool_pop();
    sb_buf_free(&spool.ser);
    spool = (struct offline_spool){0};
}

/* XEP-0160 §4: a server that stores messages offline says so in disco. */
static const char *const offline_features[] = {"msgoffline", NULL};

const struct sm_module sm_mod_offline = {
    .name = "offline",
    .handle_message = offline_message,
    .start = offline_start,
    .stop = offline_stop,
    .features = offline_features,
};
