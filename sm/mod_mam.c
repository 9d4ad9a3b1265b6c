/* mod_mam.c — the message archive (XEP-0313 MAM v2) with XEP-0359 stanza
 * ids and XEP-0431 full-text search, in PostgreSQL `archive`
 * (deploy/migrations/005_archive.sql).
 *
 * Archiving. A chat or normal message with a <body/> to a local user (no
 * <no-store/>/<no-permanent-store/> hint) is archived by the sm that owns
 * the recipient, before mod_offline and mod_deliver: the recipient's row if
 * its preferences (cached in acct.h) want it — its <stanza-id by=bare/> is
 * then added to the bytes delivered or stored offline — and, when the
 * sender is a local user too, the sender's row (the sender's sm never sees
 * the message; the insert checks the sender's preferences in SQL,
 * archive_wanted()). A <stanza-id/> a client put in with the `by` of either
 * owner is removed first. Rows wait in a buffer and go to PostgreSQL as one
 * multi-row INSERT every [sm] mam_flush_ms or mam_batch_rows rows: no
 * delivery waits for the database. A failed write is retried (1 s, doubling
 * to 30 s) with one log line saying how many rows wait; a full buffer
 * (mam_buffer_max rows) archives nothing more (no stanza-id added, counted)
 * until it drains. A graceful stop flushes (main.c waits for
 * sm_mam_waiting() == 0); a crash loses the rows buffered and in flight.
 *
 * Queries. iq get <query/> → the form; iq set <query/> → the rows as
 * <message><result><forwarded/></result></message> to the requesting
 * session, then <fin/> with RSM (mam.h parses); <prefs/> get/set. Only for
 * the own account (anyone else: forbidden). Results go through
 * sm_deliver_raw, so XEP-0198 numbers them. The query does not hold the
 * user's queue: its messages keep flowing while PostgreSQL answers. */
#include "acct.h"
#include "im.h"
#include "mam.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern const struct sm_module sm_mod_mam, sm_mod_mam_out;

#define NS_HINTS "urn:xmpp:hints"
#define MAM_SID_LEN 16
#define MAM_PURGE_BATCH 5000

/* ---- configuration ([sm]) ---------------------------------------------------------- */

static struct mam_cfg {
    int loaded, enabled;
    enum sm_mam_mode dflt;
    char fts[64];
    double flush_s;
    long batch_rows, buffer_max, retention_days;
    double purge_every;
} mam_cfg_v;

static const struct mam_cfg *mam_cfg(void)
{
    struct mam_cfg *k = &mam_cfg_v;
    if (k->loaded)
        return k;
    k->loaded = 1;
    k->enabled = sb_config_int("mam_enabled", 1) != 0;
    k->dflt = sm_mam_mode_parse(sb_config_str("mam_default", "always"));
    if (k->dflt == SM_MAM_UNSET)
        k->dflt = SM_MAM_ALWAYS;
    snprintf(k->fts, sizeof k->fts, "%s", sb_config_str("mam_fts_config", "simple"));
    k->flush_s = sb_config_int("mam_flush_ms", 100) / 1e3;
    k->batch_rows = sb_config_int("mam_batch_rows", 200);
    k->buffer_max = sb_config_int("mam_buffer_max", 50000);
    k->retention_days = sb_config_int("mam_retention_days", 0);
    k->purge_every = (double)sb_config_int("mam_purge_interval", 600);
    if (k->batch_rows < 1)
        k->batch_rows = 1;
    if (k->purge_every < 1)
        k->purge_every = 1;
    return k;
}

/* ---- the write buffer ----------------------------------------------------------------- */

enum { C_DOM, C_USER, C_SID, C_WBARE, C_WRES, C_OUT, C_TS, C_STANZA, C_BODY, C_CHECKED,
       MAM_NCOLS };

/* One multi-row INSERT: a PostgreSQL array literal per column. */
struct mam_batch {
    struct sb_buf col[MAM_NCOLS];
    long n;
};

#define MAM_SLOW_S 5.0       /* a batch unanswered this long is logged */

static struct mam_store {
    struct sm_core *core;
    struct mam_batch cur, fly;          /* filling; being written (or retried) */
    unsigned flying : 1, failing : 1, full : 1, slow : 1;
    ev_timer flush, retry, purge, watch;
    double backoff;
    long dropped;
} st;

static const char MAM_INSERT_SQL[] =
    "INSERT INTO archive (domain, username, stanza_id, with_bare, with_res, outgoing, ts,"
    " stanza, body_tsv)"
    " SELECT r.d, r.u, r.s, r.wb, r.wr, r.o, to_timestamp(r.t), r.st,"
    " to_tsvector($11::regconfig, r.b)"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[],"
    " $7::float8[], $8::text[], $9::text[], $10::boolean[]) AS r(d, u, s, wb, wr, o, t, st, b, c)"
    " WHERE r.c OR archive_wanted(r.d, r.u, r.wb, $12)"
    " ON CONFLICT DO NOTHING";

static void batch_clear(struct mam_batch *b)
{
    for (int i = 0; i < MAM_NCOLS; i++)
        sb_buf_reset(&b->col[i]);
    b->n = 0;
}

static void batch_free(struct mam_batch *b)
{
    for (int i = 0; i < MAM_NCOLS; i++)
        sb_buf_free(&b->col[i]);
    b->n = 0;
}

static void batch_put(struct mam_batch *b, int col, const char *s, size_t n)
{
    if (!b->col[col].len)
        sb_buf_adds(&b->col[col], "{");
    pgev_array_add(&b->col[col], s, n);
}

static void mam_query_fly(void);

static void mam_send(void)
{
    if (st.flying || !st.cur.n || !st.core || st.core->stopping)
        return;
    struct mam_batch t = st.fly;
    st.fly = st.cur;
    st.cur = t;
    batch_clear(&st.cur);
    for (int i = 0; i < MAM_NCOLS; i++)
        sb_buf_adds(&st.fly.col[i], "}");
    st.flying = 1;
    ev_timer_stop(st.core->loop, &st.flush);
    ev_timer_stop(st.core->loop, &st.watch);
    ev_timer_set(&st.watch, MAM_SLOW_S, 0.);
    ev_timer_start(st.core->loop, &st.watch);
    mam_query_fly();
}

/* A batch still unanswered after MAM_SLOW_S (PostgreSQL away: its queries
 * wait for the connection up to their deadline before they fail): say how
 * many rows wait, once, before the failure line would. */
static void mam_on_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (st.flying && !st.failing && !st.slow) {
        st.slow = 1;
        log_warn("mam_store_waiting", "waiting=%ld in_flight_s=%.0f", st.fly.n + st.cur.n,
                 MAM_SLOW_S);
    }
}

static void mam_failed(const char *why)
{
    struct sm_core *c = st.core;
    if (!st.failing)
        log_warn("mam_store_failed", "waiting=%ld error=%s", st.fly.n + st.cur.n, sb_log_q(why));
    st.failing = 1;
    st.backoff = st.backoff ? st.backoff * 2 : 1;
    if (st.backoff > 30)
        st.backoff = 30;
    if (c && !c->stopping) {
        ev_timer_set(&st.retry, st.backoff, 0.);
        ev_timer_start(c->loop, &st.retry);
    }
}

static void mam_on_stored(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        mam_failed(res ? PQresultErrorMessage(res) : "no connection");
        return;
    }
    if (st.core)
        ev_timer_stop(st.core->loop, &st.watch);
    if (st.failing || st.full || st.slow)
        log_info("mam_store_recovered", "rows=%ld waiting=%ld dropped=%ld", st.fly.n, st.cur.n,
                 st.dropped);
    st.failing = st.full = st.slow = 0;
    st.backoff = 0;
    st.dropped = 0;
    st.flying = 0;
    batch_clear(&st.fly);
    if (st.cur.n >= mam_cfg()->batch_rows)
        mam_send();
    else if (st.cur.n && st.core && !st.core->stopping)
        ev_timer_again(st.core->loop, &st.flush);
}

static void mam_query_fly(void)
{
    const struct mam_cfg *k = mam_cfg();
    const char *p[12];
    for (int i = 0; i < MAM_NCOLS; i++)
        p[i] = st.fly.col[i].data;
    p[10] = k->fts;
    p[11] = sm_mam_mode_name(k->dflt);
    for (int i = 0; i < MAM_NCOLS; i++)
        if (!p[i]) {
            mam_failed("nomem");
            return;
        }
    if (sm_pg_query(st.core, MAM_INSERT_SQL, 12, p, mam_on_stored, NULL) != SB_OK)
        mam_failed("queue");
}

static void mam_on_flush(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_timer_stop(loop, w);
    mam_send();
}

static void mam_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (st.flying)
        mam_query_fly();
}

/* One archive row into the buffer (the caller checked there is room). */
static void mam_row_add(const char *owner, const char *sid, const char *with, int out,
                        double ts, const char *stanza, size_t slen, const struct sb_buf *body,
                        int checked)
{
    char node[ENV_STR_MAX + 1], bare[ENV_STR_MAX + 1], tsbuf[32];
    const char *domain, *res;
    if (sm_acct_split(owner, node, sizeof node, &domain) != SB_OK ||
        jid_bare_of(with, bare, sizeof bare) < 0)
        return;
    res = strchr(with, '/');
    struct mam_batch *b = &st.cur;
    snprintf(tsbuf, sizeof tsbuf, "%.3f", ts);   /* ms, as the stamps clients see */
    batch_put(b, C_DOM, domain, strlen(domain));
    batch_put(b, C_USER, node, strlen(node));
    batch_put(b, C_SID, sid, strlen(sid));
    batch_put(b, C_WBARE, bare, strlen(bare));
    batch_put(b, C_WRES, res ? res + 1 : "", res ? strlen(res + 1) : 0);
    batch_put(b, C_OUT, out ? "t" : "f", 1);
    batch_put(b, C_TS, tsbuf, strlen(tsbuf));
    batch_put(b, C_STANZA, stanza, slen);
    batch_put(b, C_BODY, body->data ? body->data : "", body->len);
    batch_put(b, C_CHECKED, checked ? "t" : "f", 1);
    b->n++;
    if (b->n >= mam_cfg()->batch_rows)
        mam_send();
    else if (!ev_is_active(&st.flush) && !st.flying)
        ev_timer_again(st.core->loop, &st.flush);
}

/* Room for `rows` more? Else count them as not archived (logged once). */
static int mam_room(long rows)
{
    if (st.cur.n + st.fly.n + rows <= mam_cfg()->buffer_max)
        return 1;
    if (!st.full)
        log_warn("mam_buffer_full", "waiting=%ld max=%ld", st.cur.n + st.fly.n,
                 mam_cfg()->buffer_max);
    st.full = 1;
    st.dropped += rows;
    return 0;
}

void sm_mam_flush(struct sm_core *c)
{
    if (st.core == c)
        mam_send();
}

long sm_mam_waiting(const struct sm_core *c)
{
    return st.core == c ? st.cur.n + st.fly.n : 0;
}

/* ---- retention ----------------------------------------------------------------------- */

static void mam_on_purged(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_warn("mam_retention_failed", "error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        return;
    }
    long n = atol(PQcmdTuples(res));
    if (n)
        log_info("mam_retention_purged", "rows=%ld days=%ld", n, mam_cfg()->retention_days);
    if (n >= MAM_PURGE_BATCH && st.core && !st.core->stopping) {
        ev_timer_set(&st.purge, 1., mam_cfg()->purge_every);    /* more to go: soon */
        ev_timer_start(st.core->loop, &st.purge);
    }
}

/* A batched DELETE, off the hot path; every sm runs it (idempotent). */
static void mam_on_purge(struct ev_loop *loop, ev_timer *w, int revents)
{
    const struct mam_cfg *k = mam_cfg();
    char days[24], lim[24];
    if (k->retention_days <= 0)
        return;
    snprintf(days, sizeof days, "%ld", k->retention_days);
    snprintf(lim, sizeof lim, "%d", MAM_PURGE_BATCH);
    const char *p[2] = {days, lim};
    ev_timer_stop(loop, w);
    ev_timer_set(w, k->purge_every, k->purge_every);
    ev_timer_start(loop, w);
    if (sm_pg_query(st.core, "DELETE FROM archive WHERE id IN (SELECT id FROM archive"
                    " WHERE ts < now() - make_interval(days => $1::int) LIMIT $2::int)",
                    2, p, mam_on_purged, NULL) != SB_OK)
        log_warn("mam_retention_failed", "error=queue");
}

static void mam_start(struct sm_core *c)
{
    const struct mam_cfg *k = mam_cfg();
    st.core = c;
    ev_timer_init(&st.flush, mam_on_flush, 0., k->flush_s);
    ev_timer_init(&st.retry, mam_on_retry, 1., 0.);
    ev_timer_init(&st.watch, mam_on_watch, MAM_SLOW_S, 0.);
    ev_timer_init(&st.purge, mam_on_purge, 5., k->purge_every);
    if (k->retention_days > 0)
        ev_timer_start(c->loop, &st.purge);
}

static void mam_stop(struct sm_core *c)
{
    if (st.core != c)
        return;
    if (st.cur.n + st.fly.n)
        log_warn("mam_store_lost", "rows=%ld reason=stopping", st.cur.n + st.fly.n);
    ev_timer_stop(c->loop, &st.flush);
    ev_timer_stop(c->loop, &st.retry);
    ev_timer_stop(c->loop, &st.purge);
    ev_timer_stop(c->loop, &st.watch);
    batch_free(&st.cur);
    batch_free(&st.fly);
    st = (struct mam_store){0};
    mam_cfg_v.loaded = 0;
}

/* ---- archiving a message ------------------------------------------------------------- */

static int mam_archivable(const struct sm_job *j)
{
    if (*j->type && strcmp(j->type, "chat") && strcmp(j->type, "normal"))
        return 0;
    if (!xml_child(j->st, "body", NULL))
        return 0;
    return !xml_child(j->st, "no-store", NS_HINTS) &&
           !xml_child(j->st, "no-permanent-store", NS_HINTS);
}

/* XEP-0359 §3: a stanza-id claiming to be from an archive of ours is a
 * forgery. Returns how many were taken out of the tree. */
static int mam_strip_forged(struct xml_node *m, const char *owner, const char *sender)
{
    int n = 0;
    struct xml_node *c = xml_first_elem(m);
    while (c) {
        struct xml_node *next = xml_next_elem(c);
        const char *ns = xml_attr(c, "xmlns"), *by = xml_attr(c, "by");
        if (!strcmp(c->name, "stanza-id") && ns && !strcmp(ns, SM_NS_SID) && by &&
            (!strcmp(by, owner) || (sender && !strcmp(by, sender)))) {
            xml_unlink(c);
            n++;
        }
        c = next;
    }
    return n;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Does the owner (j->user) archive a message with `from_bare`? -1:
 * waiting for the roster (the job was kept, re-offered to module m). */
static int mam_owner_wants(struct sm_job *j, const char *from_bare, const struct sm_module *m)
{
    struct sm_acct *a = j->user->acct;
    if (!a || !a->exists)
        return 0;                       /* anonymous or no account: no archive */
    int w = sm_mam_wanted(&a->mam, mam_cfg()->dflt, from_bare, -1);
    if (w >= 0)
        return w;
    sb_rc rc = sm_im_ready(j, m);
    if (rc == SB_AGAIN)
        return -1;
    struct sm_im_item *it = rc == SB_OK ? sm_im_find(j->user->im, from_bare) : NULL;
    return sm_mam_wanted(&a->mam, mam_cfg()->dflt, from_bare, it && it->in_roster);
}

static sb_rc mam_message(struct sm_job *j)
{
    struct sm_core *c = j->core;
    if (!j->user || !mam_cfg()->enabled || !st.core)
        return SB_DECLINED;
    /* A message this sm already handled, coming round again (XEP-0198
     * replay sm-replay, a bounce redeliver, a stale stream): archived the
     * first time. Not "sent by this sm": a carbons user's message comes
     * from its own sm (mod_carbons forwards it), maybe this one. */
    if (*j->op || !strcmp(j->type, "error"))
        return SB_DECLINED;
    char from_bare[ENV_STR_MAX + 1], node[ENV_STR_MAX + 1];
    const char *fdom;
    if (jid_bare_of(j->from, from_bare, sizeof from_bare) < 0)
        return SB_DECLINED;
    int self = !strcmp(from_bare, j->user->bare);
    int sender_local = !self && sm_acct_split(from_bare, node, sizeof node, &fdom) == SB_OK &&
                       sm_is_local_domain(c, fdom);
    int archivable = mam_archivable(j);
    int want = archivable ? mam_owner_wants(j, from_bare, &sm_mod_mam) : 0;
    if (want < 0)
        return SB_AGAIN;                /* re-offered once the roster is loaded */
    int stripped = mam_strip_forged(j->st, j->user->bare, sender_local ? from_bare : NULL);
    if (stripped)
        log_info("mam_forged_stanza_id", "to=%s from=%s count=%d", sb_log_q(j->key),
                 sb_log_q(j->from), stripped);
    if (!want && !sender_local && !stripped)
        return SB_DECLINED;
    struct sb_buf orig = SB_BUF_INIT, out = SB_BUF_INIT, body = SB_BUF_INIT;
    const char *ob = j->body;
    size_t olen = j->body_len;
    if (stripped && xml_serialize(j->st, &orig) == SB_OK) {
        ob = orig.data;
        olen = orig.len;
    }
    long rows = (want ? 1 : 0) + (archivable && sender_local ? 1 : 0);
    if (rows && mam_room(rows)) {
        double now = wall_now();
        xml_text(xml_child(j->st, "body", NULL), &body);
        char sid[MAM_SID_LEN + 1];
        if (want) {
            struct sb_buf tag = SB_BUF_INIT;
            sb_random_id(sid, MAM_SID_LEN);
            sb_buf_adds(&tag, "<stanza-id xmlns='" SM_NS_SID "' by='");
            xml_escape_attr(&tag, j->user->bare, strlen(j->user->bare));
            sb_buf_printf(&tag, "' id='%s'/>", sid);
            if (tag.data && sm_stanza_add_child(ob, olen, tag.data, tag.len, &out) == SB_OK) {
                mam_row_add(j->user->bare, sid, j->from, 0, now, out.data, out.len, &body, 1);
                sm_job_set_body(j, &out);
            }
            sb_buf_free(&tag);
        }
        if (archivable && sender_local && j->to) {
            sb_random_id(sid, MAM_SID_LEN);
            mam_row_add(from_bare, sid, j->to, 1, now, ob, olen, &body, 0);
        }
    }
    if (stripped && !j->body_own && orig.data)
        sm_job_set_body(j, &orig);
    sb_buf_free(&orig);
    sb_buf_free(&out);
    sb_buf_free(&body);
    return SB_DECLINED;
}

/* op=outbound (c2s/route.c): the user's own message to a domain no sm
 * serves (a remote server, a component), seen by no sm but this, the
 * sender's: its row here, then declined so that mod_carbons forwards it.
 * To a local user the recipient's sm writes both rows (mam_message). */
static sb_rc mam_outbound(struct sm_job *j)
{
    char to_bare[ENV_STR_MAX + 1];
    if (!j->user || strcmp(j->op, "outbound") || !mam_cfg()->enabled || !st.core || !j->to ||
        jid_bare_of(j->to, to_bare, sizeof to_bare) < 0 || !mam_archivable(j))
        return SB_DECLINED;
    const char *at = strchr(to_bare, '@');
    if (sm_is_local_domain(j->core, at ? at + 1 : to_bare))
        return SB_DECLINED;
    int want = mam_owner_wants(j, to_bare, &sm_mod_mam_out);
    if (want < 0)
        return SB_AGAIN;
    if (want && mam_room(1)) {
        struct sb_buf body = SB_BUF_INIT;
        char sid[MAM_SID_LEN + 1];
        xml_text(xml_child(j->st, "body", NULL), &body);
        sb_random_id(sid, MAM_SID_LEN);
        mam_row_add(j->user->bare, sid, j->to, 1, wall_now(), j->body, j->body_len, &body, 1);
        sb_buf_free(&body);
    }
    return SB_DECLINED;
}

/* ---- replies ------------------------------------------------------------------------ */

/* Who asked, kept past the job (a query does not hold the user's queue). */
struct mam_asker {
    struct sm_core *core;
    char *bare, *resource, *full, *to, *iqid;
};

static void asker_free(struct mam_asker *a)
{
    if (!a)
        return;
    free(a->bare);
    free(a->resource);
    free(a->full);
    free(a->to);
    free(a->iqid);
    free(a);
}

static struct mam_asker *asker_new(const struct sm_job *j)
{
    struct mam_asker *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->core = j->core;
    a->bare = strdup(j->user->bare);
    a->resource = strdup(sm_job_sender_resource(j));
    a->full = strdup(j->from);
    a->to = j->to ? strdup(j->to) : NULL;
    a->iqid = strdup(j->id ? j->id : "");
    if (!a->bare || !a->resource || !a->full || (j->to && !a->to) || !a->iqid) {
        asker_free(a);
        return NULL;
    }
    return a;
}

/* Bytes to the asking session (XEP-0198 numbers them: sm_deliver_raw). */
static sb_rc asker_send(const struct mam_asker *a, const struct sb_buf *b)
{
    struct sm_user *u;
    HASH_FIND_STR(a->core->users, a->bare, u);
    struct sm_session *s = u ? sm_user_session(u, a->resource) : NULL;
    if (!s || !b->data) {
        log_info("mam_reply_dropped", "jid=%s res=%s reason=%s", sb_log_q(a->bare),
                 sb_log_q(a->resource), s ? "nomem" : "session-gone");
        return SB_ERROR;
    }
    return sm_deliver_raw(a->core, s, a->to ? a->to : a->bare, b->data, b->len);
}

static void attr_put(struct sb_buf *b, const char *name, const char *v)
{
    sb_buf_printf(b, " %s='", name);
    xml_escape_attr(b, v, strlen(v));
    sb_buf_adds(b, "'");
}

/* <iq type=TYPE id to from>payload</iq>. */
static void asker_iq(const struct mam_asker *a, const char *type, const char *payload,
                     size_t plen)
{
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_printf(&b, "<iq type='%s'", type);
    attr_put(&b, "id", a->iqid);
    attr_put(&b, "to", a->full);
    if (a->to)
        attr_put(&b, "from", a->to);
    sb_buf_adds(&b, ">");
    sb_buf_add(&b, payload, plen);
    sb_buf_adds(&b, "</iq>");
    asker_send(a, &b);
    sb_buf_free(&b);
}

static void asker_error(const struct mam_asker *a, const char *etype, const char *cond)
{
    char e[200];
    int n = snprintf(e, sizeof e, "<error type='%s'><%s xmlns='" SM_NS_STANZAS "'/></error>",
                     etype, cond);
    asker_iq(a, "error", e, (size_t)n);
}

/* ---- queries ----------------------------------------------------------------------- */

struct mam_run {
    struct mam_asker *a;
    char *queryid;
    long max;
    unsigned desc : 1, flip : 1;
};

/* The SQL of one query, with its parameters. */
struct mam_sql {
    struct sb_buf where, bounds;
    const char *p[16];
    char num[4][32];
    struct sb_buf refs;                 /* text[] of the ids named */
    char wbare[ENV_STR_MAX + 1];
    int np, nnum, nrefs;
};

static int sql_param(struct mam_sql *q, const char *v)
{
    q->p[q->np] = v;
    return ++q->np;
}

static const char *sql_num(struct mam_sql *q, const char *fmt, double v)
{
    snprintf(q->num[q->nnum], sizeof q->num[0], fmt, v);
    return q->num[q->nnum++];
}

static void sql_ref(struct mam_sql *q, const char *id, const char *op)
{
    int n = sql_param(q, id);
    sb_buf_printf(&q->bounds, " AND id %s (SELECT id FROM archive WHERE domain = $1"
                  " AND username = $2 AND stanza_id = $%d)", op, n);
    if (!q->refs.len)
        sb_buf_adds(&q->refs, "{");
    pgev_array_add(&q->refs, id, strlen(id));
    q->nrefs++;
}

static void sql_build(struct mam_sql *q, const struct sm_mam_query *m, struct sb_buf *ids,
                      struct sb_buf *sql, int desc)
{
    sb_buf_adds(&q->where, "domain = $1 AND username = $2");
    if (m->with) {
        const char *slash = strchr(m->with, '/');
        if (jid_bare_of(m->with, q->wbare, sizeof q->wbare) >= 0)
            sb_buf_printf(&q->where, " AND with_bare = $%d", sql_param(q, q->wbare));
        if (slash)
            sb_buf_printf(&q->where, " AND with_res = $%d", sql_param(q, slash + 1));
    }
    if (m->has_start)
        sb_buf_printf(&q->where, " AND ts >= to_timestamp($%d::float8)",
                      sql_param(q, sql_num(q, "%.6f", m->start)));
    if (m->has_end)
        sb_buf_printf(&q->where, " AND ts <= to_timestamp($%d::float8)",
                      sql_param(q, sql_num(q, "%.6f", m->end)));
    if (m->fulltext) {
        int cfg = sql_param(q, mam_cfg()->fts);
        sb_buf_printf(&q->where, " AND body_tsv @@ plainto_tsquery($%d::regconfig, $%d)", cfg,
                      sql_param(q, m->fulltext));
    }
    if (m->nids) {
        sb_buf_adds(ids, "{");
        for (int i = 0; i < m->nids; i++)
            pgev_array_add(ids, m->ids[i], strlen(m->ids[i]));
        sb_buf_adds(ids, "}");
        sb_buf_printf(&q->where, " AND stanza_id = ANY($%d::text[])", sql_param(q, ids->data));
    }
    if (m->after_id)
        sql_ref(q, m->after_id, ">");
    if (m->rsm_after)
        sql_ref(q, m->rsm_after, ">");
    if (m->before_id)
        sql_ref(q, m->before_id, "<");
    if (m->rsm_before && *m->rsm_before)
        sql_ref(q, m->rsm_before, "<");
    if (q->refs.len)
        sb_buf_adds(&q->refs, "}");
    int lim = sql_param(q, sql_num(q, "%.0f", (double)(m->max + 1)));
    const char *w = q->where.data;
    /* RSM count and the first item's index from one scan of the matching
     * rows (an index-only scan of archive_by_owner / archive_by_with once
     * the visibility map is set): both are exact, the index is the rows
     * before the page's oldest. */
    sb_buf_printf(sql, "WITH page AS (SELECT id, stanza_id, ts, stanza FROM archive"
                  " WHERE %s%s ORDER BY id %s LIMIT $%d::int),"
                  " n AS (SELECT count(*) AS total, count(*) FILTER (WHERE id <"
                  " (SELECT min(id) FROM page)) AS idx FROM archive WHERE %s)"
                  " SELECT n.total, n.idx,",
                  w, q->bounds.data ? q->bounds.data : "", desc ? "DESC" : "ASC", lim, w);
    if (q->nrefs) {
        int r = sql_param(q, q->refs.data);
        sb_buf_printf(sql, " (SELECT count(DISTINCT stanza_id) FROM archive WHERE domain = $1"
                      " AND username = $2 AND stanza_id = ANY($%d::text[])) = %d,", r,
                      q->nrefs);
    } else {
        sb_buf_adds(sql, " true,");
    }
    sb_buf_adds(sql, " p.stanza_id, extract(epoch FROM p.ts)::float8, p.stanza"
                " FROM n LEFT JOIN page p ON true ORDER BY p.id");
}

static void run_free(struct mam_run *r)
{
    asker_free(r->a);
    free(r->queryid);
    free(r);
}

static void mam_result(const struct mam_run *r, PGresult *res, int i, struct sb_buf *b)
{
    char stamp[32];
    sm_mam_format_time(atof(PQgetvalue(res, i, 4)), stamp);
    sb_buf_reset(b);
    sb_buf_adds(b, "<message");
    attr_put(b, "to", r->a->full);
    attr_put(b, "from", r->a->bare);
    sb_buf_adds(b, "><result xmlns='" SM_NS_MAM "'");
    if (r->queryid)
        attr_put(b, "queryid", r->queryid);
    attr_put(b, "id", PQgetvalue(res, i, 3));
    sb_buf_printf(b, "><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay'"
                  " stamp='%s'/>", stamp);
    /* XEP-0297: the forwarded stanza is in jabber:client, which the bytes
     * from the bus leave implicit (inside <forwarded/> they would not be). */
    const char *m = PQgetvalue(res, i, 5), *gt = strchr(m, '>');
    size_t len = (size_t)PQgetlength(res, i, 5);
    int has_ns = 0;
    for (const char *p = m; gt && p + 6 <= gt && !has_ns; p++)
        has_ns = !strncmp(p, "xmlns=", 6);
    if (!strncmp(m, "<message", 8) && gt && !has_ns) {
        sb_buf_adds(b, "<message xmlns='jabber:client'");
        sb_buf_add(b, m + 8, len - 8);
    } else {
        sb_buf_add(b, m, len);
    }
    sb_buf_adds(b, "</forwarded></result></message>");
}

static void mam_on_query(PGresult *res, void *arg)
{
    struct mam_run *r = arg;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        log_warn("mam_query_failed", "jid=%s error=%s", sb_log_q(r->a->bare),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        asker_error(r->a, "wait", "internal-server-error");
        run_free(r);
        return;
    }
    if (PQgetvalue(res, 0, 2)[0] != 't') {
        log_info("mam_query_bad", "jid=%s why=unknown-id", sb_log_q(r->a->bare));
        asker_error(r->a, "cancel", "item-not-found");
        run_free(r);
        return;
    }
    int rows = PQgetisnull(res, 0, 3) ? 0 : PQntuples(res);
    long count = atol(PQgetvalue(res, 0, 0)), idx = atol(PQgetvalue(res, 0, 1));
    int complete = rows <= r->max;
    int lo = 0, hi = rows;              /* the page: rows [lo, hi), ascending */
    if (!complete) {
        if (r->desc) {
            lo = 1;                     /* the extra row is the oldest */
            idx++;
        } else {
            hi = rows - 1;
        }
    }
    if (r->max == 0)
        hi = lo;
    struct sb_buf b = SB_BUF_INIT;
    for (int k = 0; k < hi - lo; k++)
        if ((mam_result(r, res, r->flip ? hi - 1 - k : lo + k, &b), asker_send(r->a, &b)) != SB_OK)
            break;
    sb_buf_reset(&b);
    sb_buf_adds(&b, "<fin xmlns='" SM_NS_MAM "'");
    if (r->queryid)
        attr_put(&b, "queryid", r->queryid);
    sb_buf_printf(&b, " complete='%s'><set xmlns='" SM_NS_RSM "'>", complete ? "true" : "false");
    if (hi > lo) {
        int first = r->flip ? hi - 1 : lo, last = r->flip ? lo : hi - 1;
        long fidx = r->flip ? idx + (hi - lo) - 1 : idx;
        sb_buf_printf(&b, "<first index='%ld'>", fidx);
        xml_escape_text(&b, PQgetvalue(res, first, 3), strlen(PQgetvalue(res, first, 3)));
        sb_buf_adds(&b, "</first><last>");
        xml_escape_text(&b, PQgetvalue(res, last, 3), strlen(PQgetvalue(res, last, 3)));
        sb_buf_adds(&b, "</last>");
    }
    sb_buf_printf(&b, "<count>%ld</count></set></fin>", count);
    if (b.data)
        asker_iq(r->a, "result", b.data, b.len);
    log_debug("mam_query", "jid=%s items=%d count=%ld complete=%d", sb_log_q(r->a->bare),
              hi - lo, count, complete);
    sb_buf_free(&b);
    run_free(r);
}

static sb_rc mam_query(struct sm_job *j, const struct xml_node *q)
{
    struct sm_mam_query m;
    const char *cond = NULL, *why = NULL;
    if (sm_mam_query_parse(q, &m, &cond, &why) != SB_OK) {
        log_info("mam_query_bad", "jid=%s why=%s", sb_log_q(j->key), why);
        sm_reply_error(j, !strcmp(cond, "feature-not-implemented") ? "cancel" : "modify", cond);
        sm_mam_query_free(&m);
        return SB_OK;
    }
    char node[ENV_STR_MAX + 1];
    const char *domain;
    struct mam_run *r = calloc(1, sizeof *r);
    if (!r || !(r->a = asker_new(j)) || sm_acct_split(j->user->bare, node, sizeof node,
                                                      &domain) != SB_OK) {
        if (r)
            run_free(r);
        sm_mam_query_free(&m);
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    r->queryid = m.queryid;
    m.queryid = NULL;
    r->max = m.max;
    r->flip = m.flip;
    r->desc = m.rsm_before != NULL;
    struct mam_sql s = {.where = SB_BUF_INIT, .bounds = SB_BUF_INIT, .refs = SB_BUF_INIT};
    struct sb_buf ids = SB_BUF_INIT, sql = SB_BUF_INIT;
    sql_param(&s, domain);
    sql_param(&s, node);
    sql_build(&s, &m, &ids, &sql, r->desc);
    mam_send();                         /* buffered rows first: the query sees them */
    sb_rc rc = sql.data ? sm_pg_query(j->core, sql.data, s.np, s.p, mam_on_query, r) : SB_ERROR;
    sb_buf_free(&s.where);
    sb_buf_free(&s.bounds);
    sb_buf_free(&s.refs);
    sb_buf_free(&ids);
    sb_buf_free(&sql);
    sm_mam_query_free(&m);
    if (rc != SB_OK) {
        run_free(r);
        sm_reply_error(j, "wait", "internal-server-error");
    }
    return SB_OK;
}

/* iq get <query/>: the fields a query form may hold (XEP-0313 §5.1.1). */
static const char MAM_FORM[] =
    "<query xmlns='" SM_NS_MAM "'><x xmlns='jabber:x:data' type='form'>"
    "<field type='hidden' var='FORM_TYPE'><value>" SM_NS_MAM "</value></field>"
    "<field type='jid-single' var='with'/>"
    "<field type='text-single' var='start'/>"
    "<field type='text-single' var='end'/>"
    "<field type='text-single' var='before-id'/>"
    "<field type='text-single' var='after-id'/>"
    "<field type='text-multi' var='ids'><validate xmlns='http://jabber.org/protocol/xdata-validate'"
    " datatype='xs:string'><open/></validate></field>"
    "<field type='text-single' var='{" SM_NS_FULLTEXT "}fulltext' label='Search for'/>"
    "</x></query>";

static sb_rc mam_form(struct sm_job *j)
{
    struct mam_asker *a = asker_new(j);
    if (!a) {
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    asker_iq(a, "result", MAM_FORM, sizeof MAM_FORM - 1);
    asker_free(a);
    return SB_OK;
}

/* ---- preferences ------------------------------------------------------------------- */

static void prefs_xml(const struct sm_mam_prefs *p, struct sb_buf *b)
{
    enum sm_mam_mode m = p->mode != SM_MAM_UNSET ? p->mode : mam_cfg()->dflt;
    sb_buf_printf(b, "<prefs xmlns='" SM_NS_MAM "' default='%s'><always>", sm_mam_mode_name(m));
    for (int i = 0; i < p->nalways; i++) {
        sb_buf_adds(b, "<jid>");
        xml_escape_text(b, p->always[i], strlen(p->always[i]));
        sb_buf_adds(b, "</jid>");
    }
    sb_buf_adds(b, "</always><never>");
    for (int i = 0; i < p->nnever; i++) {
        sb_buf_adds(b, "<jid>");
        xml_escape_text(b, p->never[i], strlen(p->never[i]));
        sb_buf_adds(b, "</jid>");
    }
    sb_buf_adds(b, "</never></prefs>");
}

static void prefs_reply(struct sm_job *j)
{
    struct mam_asker *a = asker_new(j);
    struct sb_buf b = SB_BUF_INIT;
    if (a)
        prefs_xml(&j->user->acct->mam, &b);
    if (a && b.data)
        asker_iq(a, "result", b.data, b.len);
    else
        sm_reply_error(j, "wait", "internal-server-error");
    sb_buf_free(&b);
    asker_free(a);
}

/* The <jid/>s of <always/> or <never/> into p (bare, prepared). */
static sb_rc prefs_list(const struct xml_node *l, struct sm_mam_prefs *p, int always)
{
    struct sb_buf t = SB_BUF_INIT;
    sb_rc rc = SB_OK;
    for (const struct xml_node *e = l ? xml_first_elem(l) : NULL; e && rc == SB_OK;
         e = xml_next_elem(e)) {
        struct jid jid;
        char bare[JID_BARE_MAX + 1];
        if (strcmp(e->name, "jid"))
            continue;
        xml_text(e, &t);
        if (!t.data || jid_parse(&jid, t.data) != SB_OK) {
            rc = SB_ERROR;
            break;
        }
        jid_bare(&jid, bare);
        rc = sm_mam_prefs_add(p, always, bare);
    }
    sb_buf_free(&t);
    return rc;
}

struct prefs_set {
    struct sm_job *j;
    struct sm_mam_prefs p;
};

static void prefs_on_stored(PGresult *res, void *arg)
{
    struct prefs_set *ps = arg;
    struct sm_job *j = ps->j;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_warn("mam_prefs_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
        sm_mam_prefs_clear(&ps->p);
    } else if (j->user && j->user->acct) {
        sm_mam_prefs_clear(&j->user->acct->mam);
        j->user->acct->mam = ps->p;
        log_info("mam_prefs_set", "jid=%s default=%s always=%d never=%d", sb_log_q(j->key),
                 sm_mam_mode_name(ps->p.mode), ps->p.nalways, ps->p.nnever);
        prefs_reply(j);
    } else {
        sm_mam_prefs_clear(&ps->p);
    }
    free(ps);
    sm_job_done(j);
}

static const char PREFS_SQL[] =
    "WITH d AS (DELETE FROM archive_prefs_jid WHERE domain = $1 AND username = $2"
    " AND NOT (jid = ANY($4::text[]))),"
    " p AS (INSERT INTO archive_prefs (domain, username, default_mode) VALUES ($1, $2, $3)"
    " ON CONFLICT (domain, username) DO UPDATE SET default_mode = excluded.default_mode)"
    " INSERT INTO archive_prefs_jid (domain, username, jid, always)"
    " SELECT $1, $2, t.j, t.a FROM unnest($4::text[], $5::boolean[]) AS t(j, a)"
    " ON CONFLICT (domain, username, jid) DO UPDATE SET always = excluded.always";

static sb_rc prefs_set(struct sm_job *j, const struct xml_node *pl)
{
    struct prefs_set *ps = calloc(1, sizeof *ps);
    if (!ps) {
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    ps->j = j;
    ps->p.mode = sm_mam_mode_parse(xml_attr(pl, "default"));
    if (ps->p.mode == SM_MAM_UNSET ||
        prefs_list(xml_child(pl, "always", NULL), &ps->p, 1) != SB_OK ||
        prefs_list(xml_child(pl, "never", NULL), &ps->p, 0) != SB_OK) {
        log_info("mam_prefs_bad", "jid=%s", sb_log_q(j->key));
        sm_mam_prefs_clear(&ps->p);
        free(ps);
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    /* A JID in both lists: never wins (one row per JID). */
    struct sb_buf jids = SB_BUF_INIT, alw = SB_BUF_INIT;
    sb_buf_adds(&jids, "{");
    sb_buf_adds(&alw, "{");
    for (int i = 0; i < ps->p.nalways; i++) {
        int both = 0;
        for (int k = 0; k < ps->p.nnever && !both; k++)
            both = !strcmp(ps->p.always[i], ps->p.never[k]);
        if (both)
            continue;
        pgev_array_add(&jids, ps->p.always[i], strlen(ps->p.always[i]));
        pgev_array_add(&alw, "t", 1);
    }
    for (int i = 0; i < ps->p.nnever; i++) {
        pgev_array_add(&jids, ps->p.never[i], strlen(ps->p.never[i]));
        pgev_array_add(&alw, "f", 1);
    }
    sb_buf_adds(&jids, "}");
    sb_buf_adds(&alw, "}");
    char node[ENV_STR_MAX + 1];
    const char *domain;
    sb_rc rc = sm_acct_split(j->user->bare, node, sizeof node, &domain);
    const char *p[5] = {domain, node, sm_mam_mode_name(ps->p.mode), jids.data, alw.data};
    if (rc == SB_OK && jids.data && alw.data)
        rc = sm_pg_query(j->core, PREFS_SQL, 5, p, prefs_on_stored, ps);
    else
        rc = SB_ERROR;
    sb_buf_free(&jids);
    sb_buf_free(&alw);
    if (rc != SB_OK) {
        sm_mam_prefs_clear(&ps->p);
        free(ps);
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    return SB_AGAIN;
}

/* ---- the iq --------------------------------------------------------------------------- */

static sb_rc mam_iq(struct sm_job *j, const char *ns)
{
    char bare[ENV_STR_MAX + 1];
    if (strcmp(ns, SM_NS_MAM) || !j->user || (j->to && strchr(j->to, '/')))
        return SB_DECLINED;             /* to a full JID: delivered as it is */
    if (strcmp(j->type, "get") && strcmp(j->type, "set"))
        return SB_OK;
    if (jid_bare_of(j->from, bare, sizeof bare) < 0 || strcmp(bare, j->user->bare)) {
        log_info("mam_forbidden", "jid=%s from=%s", sb_log_q(j->key), sb_log_q(j->from));
        sm_reply_error(j, "cancel", "forbidden");
        return SB_OK;
    }
    if (!j->user->acct || !j->user->acct->exists || !mam_cfg()->enabled) {
        sm_reply_error(j, "cancel", "service-unavailable");   /* anonymous: no archive */
        return SB_OK;
    }
    const struct xml_node *pl = xml_first_elem(j->st);
    int get = !strcmp(j->type, "get");
    if (!strcmp(pl->name, "query"))
        return get ? mam_form(j) : mam_query(j, pl);
    if (!strcmp(pl->name, "prefs")) {
        if (!get)
            return prefs_set(j, pl);
        prefs_reply(j);
        return SB_OK;
    }
    sm_reply_error(j, "modify", "bad-request");
    return SB_OK;
}

const struct sm_module sm_mod_mam_out = {
    .name = "mam-out",
    .handle_message = mam_outbound,
};

const struct sm_module sm_mod_mam = {
    .name = "mam",
    .handle_message = mam_message,
    .handle_iq = mam_iq,
    .start = mam_start,
    .stop = mam_stop,
};
