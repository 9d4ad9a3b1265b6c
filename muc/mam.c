/* mam.c — the room archive: XEP-0313 on room@service, in the same
 * PostgreSQL `archive` as the user archive (005_archive.sql), the room
 * being its owner (domain = the service, username = the room's node,
 * with = room/nick of the sender). A room archives when its owner set
 * muc#roomconfig_enablearchiving; every groupchat message with a <body/>
 * then gets a <stanza-id by=room/> (XEP-0359) before it is broadcast, and
 * its row waits in a buffer that goes to PostgreSQL as one multi-row INSERT
 * every [muc] mam_flush_ms or mam_batch_rows rows (common/mam.c builds it,
 * as for sm/mod_mam.c): no message waits for the database. A failed write
 * is retried (1 s doubling to 30 s), a full buffer (mam_buffer_max rows)
 * archives nothing more until it drains (counted, one log line). A graceful
 * stop flushes; a crash loses the rows of the last mam_flush_ms.
 *
 * Queries (iq set <query xmlns=urn:xmpp:mam:2/> to the room) by anyone who
 * may see the room's messages: not an outcast; in a members-only room a
 * member (or higher) or a current occupant. The results go to the asking
 * full JID, from the room. */
#include "muc.h"
#include "mam.h"
#include "config.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A room gone for good whose rows may still be buffered: its DELETE runs
 * once the batch holding its last row is stored (else those rows would
 * outlive it and show in a new room of the same name). */
struct mm_del {
    struct mm_del *next;
    char *room;
    unsigned long after;                /* the batch generation to wait for */
};

static struct {
    struct mam_batch cur, fly;
    unsigned long gen_sent, fly_gen;    /* batches sent so far; the one flying */
    struct mm_del *dels;
    unsigned flying : 1, failing : 1, full : 1, started : 1, stopping : 1;
    ev_timer flush, retry;
    double backoff, flush_s;
    long dropped, batch_rows, buffer_max;
    char fts[64];
} mm;

static void mm_query_fly(void);
static void mm_delete_now(const char *room);

static void mm_send(void)
{
    if (mm.flying || !mm.cur.n || !mm.started)
        return;
    struct mam_batch t = mm.fly;
    mm.fly = mm.cur;
    mm.cur = t;
    mam_batch_clear(&mm.cur);
    mm.flying = 1;
    mm.fly_gen = ++mm.gen_sent;
    ev_timer_stop(muc.loop, &mm.flush);
    mm_query_fly();
}

static void mm_failed(const char *why)
{
    if (!mm.failing)
        log_warn("room_archive_store_failed", "waiting=%ld error=%s", mm.fly.n + mm.cur.n,
                 sb_log_q(why));
    mm.failing = 1;
    mm.backoff = mm.backoff ? mm.backoff * 2 : 1;
    if (mm.backoff > 30)
        mm.backoff = 30;
    if (mm.stopping) {
        log_warn("room_archive_lost", "rows=%ld reason=stopping", mm.fly.n + mm.cur.n);
        ev_break(muc.loop, EVBREAK_ALL);
        return;
    }
    ev_timer_set(&mm.retry, mm.backoff, 0.);
    ev_timer_start(muc.loop, &mm.retry);
}

static void mm_on_stored(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        mm_failed(res ? PQresultErrorMessage(res) : "no connection");
        return;
    }
    if (mm.failing || mm.full)
        log_info("room_archive_recovered", "rows=%ld waiting=%ld dropped=%ld", mm.fly.n,
                 mm.cur.n, mm.dropped);
    mm.failing = mm.full = 0;
    mm.backoff = 0;
    mm.dropped = 0;
    mm.flying = 0;
    mam_batch_clear(&mm.fly);
    for (struct mm_del **d = &mm.dels; *d;) {
        struct mm_del *x = *d;
        if (x->after > mm.fly_gen) {
            d = &x->next;
            continue;
        }
        *d = x->next;
        mm_delete_now(x->room);
        free(x->room);
        free(x);
    }
    if (mm.cur.n >= mm.batch_rows || (mm.stopping && mm.cur.n))
        mm_send();
    else if (mm.cur.n)
        ev_timer_again(muc.loop, &mm.flush);
    if (mm.stopping && !muc_mam_waiting())
        muc_stop_check();
}

static void mm_query_fly(void)
{
    const char *p[MAM_INSERT_NPARAMS];
    if (mam_batch_params(&mm.fly, mm.fts, "always", p) != SB_OK) {
        mm_failed("nomem");
        return;
    }
    if (pgev_query(muc.pg, MAM_INSERT_SQL, MAM_INSERT_NPARAMS, p, mm_on_stored, NULL) != SB_OK)
        mm_failed("queue");
}

static void mm_on_flush(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_timer_stop(loop, w);
    mm_send();
}

static void mm_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (mm.flying)
        mm_query_fly();
}

void muc_mam_start(void)
{
    mm.flush_s = sb_config_int("mam_flush_ms", 100) / 1e3;
    mm.batch_rows = sb_config_int("mam_batch_rows", 200);
    mm.buffer_max = sb_config_int("mam_buffer_max", 50000);
    snprintf(mm.fts, sizeof mm.fts, "%s", sb_config_str("mam_fts_config", "simple"));
    if (mm.batch_rows < 1)
        mm.batch_rows = 1;
    ev_timer_init(&mm.flush, mm_on_flush, 0., mm.flush_s > 0 ? mm.flush_s : 0.001);
    ev_timer_init(&mm.retry, mm_on_retry, 1., 0.);
    mm.started = 1;
}

void muc_mam_flush(int stopping)
{
    mm.stopping = stopping != 0;
    mm_send();
}

long muc_mam_waiting(void)
{
    return mm.cur.n + mm.fly.n;
}

void muc_mam_stop(void)
{
    if (!mm.started)
        return;
    if (mm.cur.n + mm.fly.n)
        log_warn("room_archive_lost", "rows=%ld reason=stopped", mm.cur.n + mm.fly.n);
    ev_timer_stop(muc.loop, &mm.flush);
    ev_timer_stop(muc.loop, &mm.retry);
    mam_batch_free(&mm.cur);
    mam_batch_free(&mm.fly);
    while (mm.dels) {
        struct mm_del *x = mm.dels;
        mm.dels = x->next;
        log_warn("room_archive_not_deleted", "room=%s reason=stopped", sb_log_q(x->room));
        free(x->room);
        free(x);
    }
    mm.started = 0;
}

/* The archive owner of a room: (service, node). */
static int mm_owner(const char *room, struct jid *j)
{
    return jid_parse(j, room) == SB_OK && *j->node ? 0 : -1;
}

int muc_mam_add(struct muc_room *r, const char *nick, const char *stanza, size_t len,
                const char *body, size_t blen, const char *sid)
{
    struct jid j;
    if (!r->cfg.archiving || !mm.started || mm_owner(r->jid, &j) < 0)
        return 0;
    if (mm.cur.n + mm.fly.n + 1 > mm.buffer_max) {
        if (!mm.full)
            log_warn("room_archive_buffer_full", "waiting=%ld max=%ld", mm.cur.n + mm.fly.n,
                     mm.buffer_max);
        mm.full = 1;
        mm.dropped++;
        return 0;
    }
    mam_batch_row(&mm.cur, j.domain, j.node, sid, r->jid, nick, 0, muc_wall(), stanza, len,
                  body, blen, 1);
    if (mm.cur.n >= mm.batch_rows)
        mm_send();
    else if (!ev_is_active(&mm.flush) && !mm.flying)
        ev_timer_again(muc.loop, &mm.flush);
    return 1;
}

static void mm_on_deleted(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("room_archive_delete_failed", "error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
}

/* A room gone for good takes its archive along (a new room of that name
 * starts empty). */
void muc_mam_delete(const char *room)
{
    unsigned long after = mm.cur.n ? mm.gen_sent + 1 : mm.flying ? mm.fly_gen : 0;
    struct mm_del *x = NULL;
    if (!after || !mm.started || !(x = calloc(1, sizeof *x)) || !(x->room = strdup(room))) {
        free(x);
        mm_delete_now(room);
        return;
    }
    x->after = after;
    x->next = mm.dels;
    mm.dels = x;
    mm_send();
}

static void mm_delete_now(const char *room)
{
    struct jid j;
    if (mm_owner(room, &j) < 0)
        return;
    const char *p[2] = {j.domain, j.node};
    pgev_query(muc.pg, "DELETE FROM archive WHERE domain = $1 AND username = $2", 2, p,
               mm_on_deleted, NULL);
}

/* ---- queries -------------------------------------------------------------------- */

struct mm_run {
    char *room, *to, *iqid, *queryid;
    long max;
    unsigned desc : 1, flip : 1;
};

static void run_free(struct mm_run *q)
{
    free(q->room);
    free(q->to);
    free(q->iqid);
    free(q->queryid);
    free(q);
}

static void run_iq(const struct mm_run *q, const char *type, const char *payload, size_t len)
{
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_printf(&b, "<iq type='%s'", type);
    muc_attr(&b, "id", q->iqid);
    muc_attr(&b, "from", q->room);
    muc_attr(&b, "to", q->to);
    sb_buf_adds(&b, ">");
    sb_buf_add(&b, payload, len);
    sb_buf_adds(&b, "</iq>");
    if (b.data)
        muc_send(q->to, q->room, b.data, b.len);
    sb_buf_free(&b);
}

static sb_rc run_emit(void *ud, const struct sb_buf *m)
{
    const struct mm_run *q = ud;
    muc_send(q->to, q->room, m->data, m->len);
    return SB_OK;
}

static void mm_on_query(PGresult *res, void *arg)
{
    struct mm_run *q = arg;
    struct mam_page pg = {.to = q->to, .from = q->room, .queryid = q->queryid, .max = q->max,
                          .desc = q->desc, .flip = q->flip};
    struct sb_buf fin = SB_BUF_INIT;
    const char *cond = NULL;
    int items;
    long count;
    if (mam_page_reply(&pg, res, run_emit, q, &fin, &items, &count, &cond) != SB_OK) {
        int nf = cond && !strcmp(cond, "item-not-found");
        char e[160];
        int n = snprintf(e, sizeof e, "<error type='%s'><%s xmlns='" NS_STANZAS "'/></error>",
                         nf ? "cancel" : "wait", nf ? cond : "internal-server-error");
        log_info("room_archive_query_failed", "room=%s jid=%s error=%s", sb_log_q(q->room),
                 sb_log_q(q->to),
                 sb_log_q(nf ? "unknown-id" : res ? PQresultErrorMessage(res) : "no connection"));
        run_iq(q, "error", e, (size_t)n);
    } else {
        run_iq(q, "result", fin.data, fin.len);
        log_debug("room_archive_query", "room=%s jid=%s items=%d count=%ld", sb_log_q(q->room),
                  sb_log_q(q->to), items, count);
    }
    sb_buf_free(&fin);
    run_free(q);
}

/* May `from` read the room's archive? */
static int mm_may_read(const struct muc_room *r, const char *from)
{
    char bare[JID_BARE_MAX + 1];
    if (jid_bare_of(from, bare, sizeof bare) < 0)
        return 0;
    int aff = muc_aff_of(r, bare);
    if (aff == MUC_A_OUTCAST)
        return 0;
    if (r->cfg.members_only && aff < MUC_A_MEMBER && !muc_occ_by_jid(r, from))
        return 0;
    return 1;
}

void muc_mam_iq(struct muc_room *r, const struct xml_node *st, const char *from,
                const struct xml_node *q, int get)
{
    if (!r->cfg.archiving) {
        muc_error(st, from, r->jid, "cancel", "service-unavailable", "this room keeps no archive");
        return;
    }
    if (!mm_may_read(r, from)) {
        muc_error(st, from, r->jid, "auth", "forbidden", "you may not read this room");
        log_info("room_archive_refused", "room=%s jid=%s", sb_log_q(r->jid), sb_log_q(from));
        return;
    }
    if (get) {
        muc_iq_result(st, from, r->jid, MAM_FORM, strlen(MAM_FORM));
        return;
    }
    struct mam_query m;
    const char *cond = NULL, *why = NULL;
    if (mam_query_parse(q, &m, &cond, &why) != SB_OK) {
        log_info("room_archive_query_bad", "room=%s jid=%s why=%s", sb_log_q(r->jid),
                 sb_log_q(from), why);
        muc_error(st, from, r->jid, !strcmp(cond, "feature-not-implemented") ? "cancel" : "modify",
                  cond, NULL);
        mam_query_free(&m);
        return;
    }
    struct jid j;
    struct mm_run *run = calloc(1, sizeof *run);
    const char *id = xml_attr(st, "id");
    if (!run || mm_owner(r->jid, &j) < 0 || !(run->room = strdup(r->jid)) ||
        !(run->to = strdup(from)) || !(run->iqid = strdup(id ? id : ""))) {
        if (run)
            run_free(run);
        mam_query_free(&m);
        muc_error(st, from, r->jid, "wait", "internal-server-error", NULL);
        return;
    }
    run->queryid = m.queryid;
    m.queryid = NULL;
    run->max = m.max;
    run->flip = m.flip;
    run->desc = m.rsm_before != NULL;
    struct mam_sql s;
    mam_sql_build(&s, &m, j.domain, j.node, mm.fts, run->desc);
    mm_send();                          /* buffered rows first: the query sees them */
    sb_rc rc = s.sql.data ? pgev_query(muc.pg, s.sql.data, s.np, s.p, mm_on_query, run)
                          : SB_ERROR;
    mam_sql_free(&s);
    mam_query_free(&m);
    if (rc != SB_OK) {
        run_free(run);
        muc_error(st, from, r->jid, "wait", "internal-server-error", NULL);
    }
}
