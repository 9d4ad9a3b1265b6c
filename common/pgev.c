/* pgev.c — one non-blocking libpq connection driven by libev (see pgev.h).
 *
 * States: DOWN (waiting for the back-off timer), CONNECTING (PQconnectPoll
 * steps on the socket), READY (queries flow, one in flight). A broken
 * connection fails only the query in flight; the queue waits for the next
 * connection or its deadline.
 *
 * Statements are prepared transparently: the first time a connection sees a
 * SQL text it sends Parse (PQsendPrepare) and remembers text → name; from
 * then on only Bind/Execute (PQsendQueryPrepared), which spares PostgreSQL
 * the parse and plan of every login's handful of queries. The map lives and
 * dies with the connection (a new session knows no statements). A failed
 * prepare is not cached: the query then runs unprepared, so the caller sees
 * the same result or error as before. */
#include "pgev.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define PGEV_MAX_QUEUE 10000
#define PGEV_TIMEOUT 30.0
#define PGEV_BACKOFF_MIN 0.5
#define PGEV_BACKOFF_MAX 5.0
#define PGEV_MAX_STMTS 512    /* beyond this (dynamic SQL?) run unprepared */

enum pgev_state { PGEV_DOWN, PGEV_CONNECTING, PGEV_READY };

struct pgev_query {
    struct pgev_query *next;
    char *sql;
    char **params;
    int nparams;
    pgev_cb cb;          /* NULL once answered (deadline passed in flight) */
    void *arg;
    double deadline;     /* ev_now() + PGEV_TIMEOUT */
    int preparing;       /* in flight is the Parse of stmt_name, not the query */
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
    PGconn *conn;
    enum pgev_state state;
    int logged_up;       /* -1 nothing logged yet, 0 down, 1 up: log transitions once */
    double backoff;
    ev_io io;
    ev_timer retry, tick;
    struct pgev_query *head, *tail, *inflight;
    PGresult *result;    /* first result of the query in flight */
    size_t queued;
    int closing;         /* in pgev_free: refuse new queries */
    struct pgev_stmt *stmts;    /* prepared on this connection, by SQL text */
    unsigned nstmts;
    unsigned long stmt_seq;     /* statement names: never reused per pgev */
};

static void pgev_connect(struct pgev *pg);
static void pgev_pump(struct pgev *pg);

/* ---- queries -------------------------------------------------------------- */

static void pgev_query_free(struct pgev_query *q)
{
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->sql);
    free(q);
}

static void pgev_answer(struct pgev_query *q, PGresult *res)
{
    if (q->cb)
        q->cb(res, q->arg);
    q->cb = NULL;
}

static struct pgev_query *pgev_query_new(const char *sql, int nparams,
                                         const char *const *params, pgev_cb cb, void *arg)
{
    struct pgev_query *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
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
        if (pg && pg->queued >= PGEV_MAX_QUEUE)
            log_warn("pg_queue_full", "queued=%zu", pg->queued);
        return SB_ERROR;
    }
    struct pgev_query *q = pgev_query_new(sql, nparams, params, cb, arg);
    if (!q)
        return SB_ERROR;
    q->deadline = ev_now(pg->loop) + PGEV_TIMEOUT;
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
    pg->logged_up = up;
    if (up)
        log_info("pg_connected", "queued=%zu", pg->queued);
    else
        log_error("pg_disconnected", "err=%s queued=%zu", sb_log_q(why), pg->queued);
}

/* Drop the connection, fail the query in flight, retry after back-off. */
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
    if (pg->result)
        PQclear(pg->result);
    pg->result = NULL;
    struct pgev_query *q = pg->inflight;
    pg->inflight = NULL;
    if (q) {
        pgev_answer(q, NULL);
        pgev_query_free(q);
    }
    ev_timer_set(&pg->retry, pg->backoff, 0);
    ev_timer_start(pg->loop, &pg->retry);
    pg->backoff = pg->backoff * 2 > PGEV_BACKOFF_MAX ? PGEV_BACKOFF_MAX : pg->backoff * 2;
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
    if (PQsetnonblocking(pg->conn, 1) != 0) {
        pgev_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    PQsetNoticeProcessor(pg->conn, pgev_notice, pg);
    pg->state = PGEV_READY;
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
    pg->conn = PQconnectStart(pg->conninfo);
    if (!pg->conn || PQstatus(pg->conn) == CONNECTION_BAD) {
        pgev_down(pg, pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
        return;
    }
    pg->state = PGEV_CONNECTING;
    pgev_watch(pg, EV_WRITE);    /* PQconnectStart: as if POLLING_WRITING */
}

/* ---- query flow -------------------------------------------------------------- */

/* Send q (already in flight): execute its prepared statement, or prepare
 * it first (allow_prepare), or run it unprepared. 0 when the connection broke. */
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
        ok = PQsendPrepare(pg->conn, q->stmt_name, q->sql, q->nparams, NULL);
    } else {
        ok = PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL, params, NULL, NULL, 0);
    }
    if (!ok) {
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

static void pgev_send_next(struct pgev *pg)
{
    struct pgev_query *q = pg->head;
    pg->head = q->next;
    if (!pg->head)
        pg->tail = NULL;
    pg->queued--;
    q->next = NULL;
    pg->inflight = q;
    pgev_send(pg, q, 1);
}

/* The Parse of the query in flight is answered: cache it when it worked,
 * then send the query itself (unprepared if the Parse failed, so the caller
 * gets the real result or error). 0 when the connection broke. */
static int pgev_prepared(struct pgev *pg)
{
    struct pgev_query *q = pg->inflight;
    int ok = pg->result && PQresultStatus(pg->result) == PGRES_COMMAND_OK;
    if (pg->result)
        PQclear(pg->result);
    pg->result = NULL;
    q->preparing = 0;
    if (ok)
        pgev_stmts_add(pg, q);
    return pgev_send(pg, q, 0);
}

/* Start the next query if the connection is idle. */
static void pgev_pump(struct pgev *pg)
{
    if (pg->state == PGEV_READY && !pg->inflight && pg->head)
        pgev_send_next(pg);
}

static void pgev_finish_query(struct pgev *pg)
{
    struct pgev_query *q = pg->inflight;
    PGresult *res = pg->result;
    pg->inflight = NULL;
    pg->result = NULL;
    pgev_answer(q, res);
    if (res)
        PQclear(res);
    pgev_query_free(q);
    pgev_pump(pg);
}

static void pgev_read(struct pgev *pg)
{
    if (!PQconsumeInput(pg->conn)) {
        pgev_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    while (pg->inflight && !PQisBusy(pg->conn)) {
        PGresult *r = PQgetResult(pg->conn);
        if (!r && pg->inflight->preparing) {
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
        if (!pg->result)
            pg->result = r;    /* one statement per query: keep the first */
        else
            PQclear(r);
    }
    /* Results without a query (e.g. after the server closed) drain here. */
    if (!pg->inflight && PQstatus(pg->conn) == CONNECTION_BAD)
        pgev_down(pg, PQerrorMessage(pg->conn));
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
    if (pg->inflight && pg->inflight->deadline <= now) {
        log_warn("pg_query_timeout", "where=in_flight action=reconnect");
        pgev_down(pg, "query timed out");
    }
    if (!pg->head && !pg->inflight)
        ev_timer_stop(loop, w);
}

/* ---- life cycle ---------------------------------------------------------- */

struct pgev *pgev_new(struct ev_loop *loop, const char *conninfo)
{
    struct pgev *pg = calloc(1, sizeof *pg);
    if (!pg)
        return NULL;
    pg->conninfo = strdup(conninfo ? conninfo : "");
    if (!pg->conninfo) {
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
    struct pgev_query *q = pg->inflight;
    pg->inflight = NULL;
    if (q) {
        pgev_answer(q, NULL);
        pgev_query_free(q);
    }
    while ((q = pg->head)) {
        pg->head = q->next;
        pgev_answer(q, NULL);
        pgev_query_free(q);
    }
    if (pg->result)
        PQclear(pg->result);
    if (pg->conn)
        PQfinish(pg->conn);
    pgev_stmts_clear(pg);
    free(pg->conninfo);
    free(pg);
}

int pgev_connected(const struct pgev *pg)
{
    return pg && pg->state == PGEV_READY;
}

size_t pgev_pending(const struct pgev *pg)
{
    return pg ? pg->queued + (pg->inflight != NULL) : 0;
}
