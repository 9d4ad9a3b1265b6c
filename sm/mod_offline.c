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
 * available meanwhile gets the spooled messages from memory. Lost if this
 * sm is killed or stopped before the database returns (logged
 * offline_spool_lost).
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

static const char OFFLINE_STORE_SQL[] =
    "WITH u AS (SELECT EXISTS (SELECT 1 FROM users WHERE domain = $1 AND username = $2) AS ok),"
    " n AS (SELECT count(*) AS c FROM offline WHERE domain = $1 AND username = $2),"
    " ins AS (INSERT INTO offline (domain, username, stanza) SELECT $1, $2, $3 FROM u, n"
    " WHERE u.ok AND n.c < $4::bigint RETURNING id)"
    " SELECT u.ok, (SELECT count(*) FROM ins), (SELECT c FROM n) FROM u";

/* ---- the spool (PostgreSQL cannot take the message now) ---------------------------- */

struct spool_item {
    struct spool_item *next;
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
    long stored, refused;       /* since the last recovered line */
    struct sm_pgwait w;         /* head in flight (pgwait.h) */
} spool;

static void spool_item_free(struct spool_item *it)
{
    if (!it)
        return;
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

/* The stamped message into the spool; SB_LIMIT when full, SB_ERROR out of memory. */
static sb_rc spool_add(const struct sm_job *j, const char *stanza, size_t len)
{
    if (!spool.core)
        return SB_ERROR;
    if (spool.n >= spool.max || spool.bytes + (long)len > spool.max_bytes)
        return SB_LIMIT;
    struct spool_item *it = calloc(1, sizeof *it);
    if (!it || !(it->bare = strdup(j->key)) || !(it->from = strdup(j->from)) ||
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
    int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) >= 3;
    if (!ok) {
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
    spool_pop();
    sm_pgwait_ok(&spool.w);
    if (!spool.head) {
        log_info("offline_spool_recovered", "stored=%ld refused=%ld", spool.stored,
                 spool.refused);
        spool.stored = spool.refused = 0;
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
        spool_pop();            /* cannot be: the job key was checked */
        spool_send(w);
        return;
    }
    snprintf(quota, sizeof quota, "%ld", sm_im_limits()->offline);
    const char *params[4] = {domain, node, it->stanza, quota};
    if (!w->flying || w->failing)
        sm_pgwait_sent(w);
    if (sm_pg_query(spool.core, OFFLINE_STORE_SQL, 4, params, spool_on_stored, NULL) != SB_OK)
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
}

/* What is still spooled is lost with the process: said once, counted. */
static void offline_stop(struct sm_core *c)
{
    offline_unknown_clear();
    if (spool.core != c)
        return;
    if (spool.n)
        log_warn("offline_spool_lost", "messages=%ld bytes=%ld reason=stopping", spool.n,
                 spool.bytes);
    sm_pgwait_stop(&spool.w);
    while (spool.head)
        spool_pop();
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
