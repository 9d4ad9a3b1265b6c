/* pgev.c — one non-blocking libpq connection driven by libev (see pgev.h).
 *
 * States: DOWN (waiting for the back-off timer), CONNECTING (PQconnectPoll
 * steps on the socket), READY (queries flow). A broken connection fails only
 * the queries in flight; the queue waits for the next connection or its
 * deadline.
 *
 * Queries are pipelined (libpq pipeline mode): up to PGEV_MAX_FLIGHT are
 * sent without waiting for the answers before them, so the throughput of
 * one connection is not one query per round trip (a login storm queued
 * behind each c2s's single connection). Every query is followed by its own
 * Sync, so each still runs in its own implicit transaction and an error
 * fails only that query, exactly as one query at a time did. Answers come
 * back, and callbacks run, in the order the queries were made.
 *
 * Statements are prepared transparently: the first time a connection sees a
 * SQL text it sends Parse (PQsendPrepare) and remembers text → name; from
 * then on only Bind/Execute (PQsendQueryPrepared), which spares PostgreSQL
 * the parse and plan of every login's handful of queries. The map lives and
 * dies with the connection (a new session knows no statements). A failed
 * prepare is not cached: the query then runs unprepared, so the caller sees
 * the same result or error as before. While a Parse is in flight nothing is
 * sent behind it (its query must follow it, in order); that happens once
 * per statement and connection. */
#include "pgev.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define PGEV_MAX_QUEUE 10000
#define PGEV_TIMEOUT 30.0
#define PGEV_BACKOFF_MIN 0.5
#define PGEV_BACKOFF_MAX 5.0
#define PGEV_MAX_STMTS 512    /* beyond this (dynamic SQL?) run unprepared */
#define PGEV_MAX_FLIGHT 64    /* queries sent and not yet answered */

enum pgev_state { PGEV_DOWN, PGEV_CONNECTING, PGEV_READY };

struct pgev_query {
    struct pgev_query *next;
    char *sql;
    char **params;
    int nparams;
    pgev_cb cb;          /* NULL once answered (deadline passed in flight) */
    void *arg;
    double deadline;     /* ev_now() + PGEV_TIMEOUT */
    double t0;           /* queued (sb_now): the round trip the caller sees */
    int preparing;       /* in flight is the Parse of stmt_name, not the query */
    PGresult *result;    /* first result of the query, while in flight */
    char stmt_name[24];
};

/* One statement prepared on the current connection. */
struct pgev_stmt {
    char *sql;           /* key */
    char name[24];
    UT_hash_handle hh;
};

struct pgev {
    struct ev_loop *loop;
    char *conninfo;
    struct sb_pg_params params;     /* kw/val point into conninfo, the config, password */
    PGconn *conn;
    enum pgev_state state;
    int logged_up;       /* -1 nothing logged yet, 0 down, 1 up: log transitions once */
    int ever_up;         /* has been READY at least once (pgev_lost) */
    double backoff;
    double tried;        /* loop time of the last connection attempt (pgev_kick) */
    ev_io io;
    ev_timer retry, tick;
    struct pgev_query *head, *tail;     /* waiting to be sent */
    struct pgev_query *fhead, *ftail;   /* sent, answers owed in this order */
    int nflight;
    int barrier;         /* a Parse is in flight: send nothing behind it */
    size_t queued;
    int closing;         /* in pgev_free: refuse new queries */
    struct pgev_stmt *stmts;    /* prepared on this connection, by SQL text */
    unsigned nstmts;
    unsigned long stmt_seq;     /* statement names: never reused per pgev */
};

static void pgev_connect(struct pgev *pg);
static void pgev_pump(struct pgev *pg);

#define PGEV_MX_ERR_HELP "PostgreSQL queries that failed: no result (down, connection lost, " \
                         "deadline), an error result, refused (queue full)"
SB_COUNTER(pgev_mx_queries, "sb_pg_queries_total", "", "PostgreSQL queries issued")
SB_COUNTER(pgev_mx_err_none, "sb_pg_errors_total", "reason=\"no_result\"", PGEV_MX_ERR_HELP)
SB_COUNTER(pgev_mx_err_query, "sb_pg_errors_total", "reason=\"query\"", PGEV_MX_ERR_HELP)
SB_COUNTER(pgev_mx_err_full, "sb_pg_errors_total", "reason=\"queue_full\"", PGEV_MX_ERR_HELP)
SB_COUNTER(pgev_mx_disconnects, "sb_pg_disconnects_total", "",
           "Times a PostgreSQL connection went down")
SB_GAUGE(pgev_mx_pending, "sb_pg_pending", "", "PostgreSQL queries queued or in flight")
SB_HISTOGRAM(pgev_mx_rtt, "sb_pg_round_trip_seconds", "",
             "PostgreSQL query round trips, queued to answered")

/* ---- queries -------------------------------------------------------------- */

static void pgev_query_free(struct pgev_query *q)
{
    sb_metric_dec(&pgev_mx_pending);
    if (q->result)
        PQclear(q->result);
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->sql);
    free(q);
}

static void pgev_answer(struct pgev_query *q, PGresult *res)
{
    if (!q->cb)
        return;
    if (!res)
        sb_metric_inc(&pgev_mx_err_none);
    else if (PQresultStatus(res) == PGRES_FATAL_ERROR || PQresultStatus(res) == PGRES_BAD_RESPONSE)
        sb_metric_inc(&pgev_mx_err_query);
    else
        sb_metric_observe(&pgev_mx_rtt, sb_now() - q->t0);
    q->cb(res, q->arg);
    q->cb = NULL;
}

static struct pgev_query *pgev_query_new(const char *sql, int nparams,
                                         const char *const *params, pgev_cb cb, void *arg)
{
    struct pgev_query *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    sb_metric_inc(&pgev_mx_pending);      /* pgev_query_free takes it back */
    q->sql = strdup(sql);
    q->params = nparams > 0 ? calloc((size_t)nparams, sizeof *q->params) : NULL;
    q->nparams = nparams;
    q->cb = cb;
    q->arg = arg;
    int ok = q->sql && (nparams == 0 || q->params);
    for (int i = 0; ok && i < nparams; i++)
        ok = !params[i] || (q->params[i] = strdup(params[i])) != NULL;    /* NULL = SQL NULL */
    if (!ok) {
        if (!q->params)
            q->nparams = 0;
        pgev_query_free(q);
        return NULL;
    }
    return q;
}

sb_rc pgev_query(struct pgev *pg, const char *sql, int nparams,
                 const char *const *params, pgev_cb cb, void *arg)
{
    if (!pg || pg->closing || !sql || nparams < 0 || pg->queued >= PGEV_MAX_QUEUE) {
        if (pg && pg->queued >= PGEV_MAX_QUEUE) {
            log_warn("pg_queue_full", "queued=%zu", pg->queued);
            sb_metric_inc(&pgev_mx_err_full);
        }
        return SB_ERROR;
    }
    struct pgev_query *q = pgev_query_new(sql, nparams, params, cb, arg);
    if (!q)
        return SB_ERROR;
    q->deadline = ev_now(pg->loop) + PGEV_TIMEOUT;
    q->t0 = sb_now();
    sb_metric_inc(&pgev_mx_queries);
    if (pg->tail)
        pg->tail->next = q;
    else
        pg->head = q;
    pg->tail = q;
    pg->queued++;
    if (!ev_is_active(&pg->tick))
        ev_timer_start(pg->loop, &pg->tick);
    pgev_pump(pg);
    return SB_OK;
}

/* ---- prepared statements --------------------------------------------------- */

static void pgev_stmts_clear(struct pgev *pg)
{
    struct pgev_stmt *s, *tmp;
    HASH_ITER(hh, pg->stmts, s, tmp) {
        HASH_DEL(pg->stmts, s);
        free(s->sql);
        free(s);
    }
    pg->nstmts = 0;
}

/* The Parse of q succeeded: remember its name for this SQL text. */
static void pgev_stmts_add(struct pgev *pg, const struct pgev_query *q)
{
    struct pgev_stmt *s = calloc(1, sizeof *s);
    if (!s || !(s->sql = strdup(q->sql))) {
        free(s);
        return;    /* out of memory: the next query simply prepares again */
    }
    snprintf(s->name, sizeof s->name, "%s", q->stmt_name);
    HASH_ADD_KEYPTR(hh, pg->stmts, s->sql, strlen(s->sql), s);
    pg->nstmts++;
}

/* ---- connection ------------------------------------------------------------ */

static void pgev_watch(struct pgev *pg, int events)
{
    int fd = PQsocket(pg->conn);
    if (ev_is_active(&pg->io) && pg->io.fd == fd && (pg->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(pg->loop, &pg->io);
    if (fd < 0)
        return;
    ev_io_set(&pg->io, fd, events);
    ev_io_start(pg->loop, &pg->io);
}

static void pgev_log_state(struct pgev *pg, int up, const char *why)
{
    if (pg->logged_up == up)
        return;
    if (!up && pg->logged_up == 1)
        sb_metric_inc(&pgev_mx_disconnects);
    pg->logged_up = up;
    if (up)
        log_info("pg_connected", "queued=%zu", pg->queued);
    else
        log_error("pg_disconnected", "err=%s queued=%zu", sb_log_q(why), pg->queued);
}

/* Answer every query in flight with NULL, in order. Each is unlinked before
 * its callback, which may queue new queries (they wait in the queue). */
static void pgev_fail_flight(struct pgev *pg)
{
    struct pgev_query *q;
    pg->barrier = 0;
    while ((q = pg->fhead)) {
        pg->fhead = q->next;
        if (!pg->fhead)
            pg->ftail = NULL;
        pg->nflight--;
        pgev_answer(q, NULL);
        pgev_query_free(q);
    }
}

/* Drop the connection, fail the queries in flight, retry after back-off. */
static void pgev_down(struct pgev *pg, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s", why && *why ? why : "unknown");
    msg[strcspn(msg, "\n")] = '\0';
    ev_io_stop(pg->loop, &pg->io);
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->state = PGEV_DOWN;
    pgev_stmts_clear(pg);    /* they died with the server session */
    pgev_log_state(pg, 0, msg);
    ev_timer_set(&pg->retry, pg->backoff, 0);
    ev_timer_start(pg->loop, &pg->retry);
    pg->backoff = pg->backoff * 2 > PGEV_BACKOFF_MAX ? PGEV_BACKOFF_MAX : pg->backoff * 2;
    pgev_fail_flight(pg);
}

static void pgev_notice(void *arg, const char *msg)
{
    char m[256];
    snprintf(m, sizeof m, "%s", msg);
    m[strcspn(m, "\n")] = '\0';
    log_debug("pg_notice", "msg=%s", sb_log_q(m));
}

static void pgev_ready(struct pgev *pg)
{
    if (PQsetnonblocking(pg->conn, 1) != 0 || PQenterPipelineMode(pg->conn) != 1) {
        pgev_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    PQsetNoticeProcessor(pg->conn, pgev_notice, pg);
    pg->state = PGEV_READY;
    pg->ever_up = 1;
    pg->backoff = PGEV_BACKOFF_MIN;
    pgev_log_state(pg, 1, NULL);
    pgev_watch(pg, EV_READ);
    pgev_pump(pg);
}

static void pgev_connect_step(struct pgev *pg)
{
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_READING: pgev_watch(pg, EV_READ); break;
    case PGRES_POLLING_WRITING: pgev_watch(pg, EV_WRITE); break;
    case PGRES_POLLING_OK: pgev_ready(pg); break;
    default: pgev_down(pg, PQerrorMessage(pg->conn)); break;
    }
}

static void pgev_connect(struct pgev *pg)
{
    /* Host names are resolved here, synchronously: give an address. */
    pg->tried = ev_now(pg->loop);
    pg->conn = PQconnectStartParams(pg->params.kw, pg->params.val, 1);
    if (!pg->conn || PQstatus(pg->conn) == CONNECTION_BAD) {
        pgev_down(pg, pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
        return;
    }
    pg->state = PGEV_CONNECTING;
    pgev_watch(pg, EV_WRITE);    /* PQconnectStart: as if POLLING_WRITING */
}

/* ---- query flow -------------------------------------------------------------- */

/* Send q (already in flight) and its Sync: execute its prepared statement,
 * or prepare it first (allow_prepare), or run it unprepared. 0 when the
 * connection broke (q has then been answered NULL with the rest). */
static int pgev_send(struct pgev *pg, struct pgev_query *q, int allow_prepare)
{
    const char *const *params = (const char *const *)q->params;
    struct pgev_stmt *s = NULL;
    HASH_FIND_STR(pg->stmts, q->sql, s);
    int ok;
    if (s) {
        ok = PQsendQueryPrepared(pg->conn, s->name, q->nparams, params, NULL, NULL, 0);
    } else if (allow_prepare && pg->nstmts < PGEV_MAX_STMTS) {
        snprintf(q->stmt_name, sizeof q->stmt_name, "sb_%lu", ++pg->stmt_seq);
        q->preparing = 1;
        pg->barrier = 1;
        ok = PQsendPrepare(pg->conn, q->stmt_name, q->sql, q->nparams, NULL);
    } else {
        ok = PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL, params, NULL, NULL, 0);
    }
    if (!ok || PQpipelineSync(pg->conn) != 1) {
        pgev_down(pg, PQerrorMessage(pg->conn));
        return 0;
    }
    int f = PQflush(pg->conn);
    if (f < 0) {
        pgev_down(pg, PQerrorMessage(pg->conn));
        return 0;
    }
    pgev_watch(pg, f ? EV_READ | EV_WRITE : EV_READ);
    return 1;
}

/* Send queued queries while the pipeline has room and no Parse blocks it. */
static void pgev_pump(struct pgev *pg)
{
    while (pg->state == PGEV_READY && pg->head && !pg->barrier &&
           pg->nflight < PGEV_MAX_FLIGHT) {
        struct pgev_query *q = pg->head;
        pg->head = q->next;
        if (!pg->head)
            pg->tail = NULL;
        pg->queued--;
        q->next = NULL;
        if (pg->ftail)
            pg->ftail->next = q;
        else
            pg->fhead = q;
        pg->ftail = q;
        pg->nflight++;
        if (!pgev_send(pg, q, 1))
            return;
    }
}

/* The Parse of the first query in flight (the only one: the barrier) is
 * answered: cache it when it worked, then send the query itself
 * (unprepared if the Parse failed, so the caller gets the real result or
 * error). 0 when the connection broke. */
static int pgev_prepared(struct pgev *pg)
{
    struct pgev_query *q = pg->fhead;
    int ok = q->result && PQresultStatus(q->result) == PGRES_COMMAND_OK;
    if (q->result)
        PQclear(q->result);
    q->result = NULL;
    q->preparing = 0;
    pg->barrier = 0;
    if (ok)
        pgev_stmts_add(pg, q);
    return pgev_send(pg, q, 0);
}

/* The first query in flight has all its results: unlink it, answer it. */
static void pgev_finish_query(struct pgev *pg)
{
    struct pgev_query *q = pg->fhead;
    pg->fhead = q->next;
    if (!pg->fhead)
        pg->ftail = NULL;
    pg->nflight--;
    pgev_answer(q, q->result);
    pgev_query_free(q);
}

/* In pipeline mode each query yields its results, then NULL, then the
 * PIPELINE_SYNC of its own Sync (skipped; a trailing one may wait in libpq
 * until the next read, harmlessly). */
static void pgev_read(struct pgev *pg)
{
    if (!PQconsumeInput(pg->conn)) {
        pgev_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    while (pg->fhead && !PQisBusy(pg->conn)) {
        PGresult *r = PQgetResult(pg->conn);
        struct pgev_query *q = pg->fhead;
        if (!r && q->preparing) {
            if (!pgev_prepared(pg))
                return;
            continue;
        }
        if (!r) {
            pgev_finish_query(pg);
            if (pg->state != PGEV_READY)
                return;
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC || q->result)
            PQclear(r);        /* one statement per query: keep the first */
        else
            q->result = r;
    }
    /* Results without a query (e.g. after the server closed) drain here. */
    if (!pg->fhead && PQstatus(pg->conn) == CONNECTION_BAD) {
        pgev_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    pgev_pump(pg);
}

static void pgev_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgev *pg = w->data;
    if (pg->state == PGEV_CONNECTING) {
        pgev_connect_step(pg);
        return;
    }
    if (pg->state != PGEV_READY)
        return;
    if (revents & EV_WRITE) {
        int f = PQflush(pg->conn);
        if (f < 0) {
            pgev_down(pg, PQerrorMessage(pg->conn));
            return;
        }
        pgev_watch(pg, f ? EV_READ | EV_WRITE : EV_READ);
    }
    if (revents & EV_READ)
        pgev_read(pg);
}

static void pgev_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    pgev_connect(w->data);
}

/* Fail queries whose deadline passed. FIFO with one timeout means deadlines
 * grow along the queue, so only the front needs looking at. A query stuck
 * in flight past its deadline means a hung server or network: drop the
 * connection, which is the only non-blocking way to abandon it. */
static void pgev_on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgev *pg = w->data;
    double now = ev_now(loop);
    long expired = 0;
    while (pg->head && pg->head->deadline <= now) {
        struct pgev_query *q = pg->head;
        pg->head = q->next;
        if (!pg->head)
            pg->tail = NULL;
        pg->queued--;
        expired++;
        pgev_answer(q, NULL);
        pgev_query_free(q);
    }
    if (expired)
        log_warn("pg_query_timeout", "where=queue count=%ld connected=%d", expired,
                 pg->state == PGEV_READY);
    if (pg->fhead && pg->fhead->deadline <= now) {
        log_warn("pg_query_timeout", "where=in_flight action=reconnect");
        pgev_down(pg, "query timed out");
    }
    if (!pg->head && !pg->fhead)
        ev_timer_stop(loop, w);
}

/* ---- life cycle ---------------------------------------------------------- */

struct pgev *pgev_new(struct ev_loop *loop, const char *conninfo)
{
    struct pgev *pg = calloc(1, sizeof *pg);
    if (!pg)
        return NULL;
    pg->conninfo = strdup(conninfo ? conninfo : "");
    if (!pg->conninfo || sb_pg_params_from_config(&pg->params, pg->conninfo) != SB_OK) {
        free(pg->conninfo);
        free(pg);
        return NULL;
    }
    pg->loop = loop;
    pg->logged_up = -1;
    pg->backoff = PGEV_BACKOFF_MIN;
    ev_init(&pg->io, pgev_on_io);
    ev_init(&pg->retry, pgev_on_retry);
    ev_timer_init(&pg->tick, pgev_on_tick, 1.0, 1.0);
    pg->io.data = pg->retry.data = pg->tick.data = pg;
    pgev_connect(pg);
    return pg;
}

void pgev_free(struct pgev *pg)
{
    if (!pg)
        return;
    ev_io_stop(pg->loop, &pg->io);
    ev_timer_stop(pg->loop, &pg->retry);
    ev_timer_stop(pg->loop, &pg->tick);
    pg->state = PGEV_DOWN;
    pg->closing = 1;          /* callbacks below must not queue new work */
    pgev_fail_flight(pg);
    struct pgev_query *q;
    while ((q = pg->head)) {
        pg->head = q->next;
        pgev_answer(q, NULL);
        pgev_query_free(q);
    }
    if (pg->conn)
        PQfinish(pg->conn);
    pgev_stmts_clear(pg);
    sb_pg_params_wipe(&pg->params);
    free(pg->conninfo);
    free(pg);
}

sb_rc sb_pg_params_from_config(struct sb_pg_params *p, const char *conninfo)
{
    static const char *const opt[][2] = {
        {"postgres_sslmode", "sslmode"},         {"postgres_sslrootcert", "sslrootcert"},
        {"postgres_sslcert", "sslcert"},         {"postgres_sslkey", "sslkey"},
    };
    int n = 0;
    memset(p, 0, sizeof *p);
    p->kw[n] = "dbname";            /* expand_dbname: the whole conninfo string */
    p->val[n++] = conninfo ? conninfo : "";
    sb_rc rc = sb_config_secret("postgres_password", p->password, sizeof p->password);
    if (rc == SB_ERROR)
        return SB_ERROR;
    if (rc == SB_OK) {
        p->kw[n] = "password";
        p->val[n++] = p->password;
    }
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
        const char *v = sb_config_str(opt[i][0], NULL);
        if (v && *v) {
            p->kw[n] = opt[i][1];
            p->val[n++] = v;
        }
    }
    p->kw[n] = p->val[n] = NULL;
    return SB_OK;
}

void sb_pg_params_wipe(struct sb_pg_params *p)
{
    memset(p->password, 0, sizeof p->password);
}

/* Someone needs the database now: while down and waiting out a back-off
 * longer than the shortest, try at once (at most every PGEV_BACKOFF_MIN),
 * so a server that came back is seen within half a second of being asked
 * for instead of up to PGEV_BACKOFF_MAX later. The caller's own query still
 * fails fast; the next one finds the connection. */
void pgev_kick(struct pgev *pg)
{
    if (!pg || pg->state != PGEV_DOWN || pg->closing || !ev_is_active(&pg->retry) ||
        ev_now(pg->loop) - pg->tried < PGEV_BACKOFF_MIN)
        return;
    ev_timer_stop(pg->loop, &pg->retry);
    pgev_connect(pg);
}

int pgev_connected(const struct pgev *pg)
{
    return pg && pg->state == PGEV_READY;
}

int pgev_lost(const struct pgev *pg)
{
    return pg && pg->ever_up && pg->state != PGEV_READY;
}

size_t pgev_pending(const struct pgev *pg)
{
    return pg ? pg->queued + (size_t)pg->nflight : 0;
}
