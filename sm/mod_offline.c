/* mod_offline.c — offline storage (RFC 6121 §8.5.2.1.1, XEP-0160). A chat
 * or normal message with a body, to a local account with no available
 * resource of non-negative priority (and not to a bound full JID), is kept
 * in PostgreSQL `offline`, stamped with XEP-0203 <delay/>. One statement
 * checks that the account exists, checks the per-user quota ([sm]
 * offline_max, default 100) and inserts:
 *   no such account → service-unavailable (remembered for 10 s, so floods
 *                     to unknown users cost no SQL)
 *   quota reached   → resource-constraint to the sender
 *   database down   → internal-server-error (the sender knows it failed)
 * sm_offline_flush() hands stored messages to a resource that became
 * available with priority ≥ 0, and deletes them only after they were
 * handed to the link (a failed delete means a duplicate, never a loss).
 * A stored message is handed to mod_push (sm_push_notify) with the count
 * of stored messages, which the same statement returns.
 * Everything else is left to mod_deliver. */
#include "im.h"
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

static void offline_on_store(PGresult *res, void *arg)
{
    struct sm_job *j = arg;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
        PQnfields(res) < 3) {
        log_error("offline_store_failed", "to=%s error=%s", sb_log_q(j->key),
                  sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
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
    snprintf(quota, sizeof quota, "%ld", sm_im_limits()->offline);
    const char *params[4] = {domain, node, stored.data, quota};
    sb_rc rc = sm_pg_query(j->core, OFFLINE_STORE_SQL, 4, params, offline_on_store, j);
    sb_buf_free(&stored);
    if (rc != SB_OK) {
        sm_reply_error(j, "wait", "resource-constraint");
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
    if (sm_pg_query(j->core, "SELECT id, stanza FROM offline WHERE domain = $1"
                    " AND username = $2 ORDER BY id", 2, params, offline_on_fetch, f) != SB_OK) {
        free(f);
        return SB_OK;
    }
    return SB_AGAIN;
}

static void offline_stop(struct sm_core *c)
{
    offline_unknown_clear();
}

/* XEP-0160 §4: a server that stores messages offline says so in disco. */
static const char *const offline_features[] = {"msgoffline", NULL};

const struct sm_module sm_mod_offline = {
    .name = "offline",
    .handle_message = offline_message,
    .stop = offline_stop,
    .features = offline_features,
};
