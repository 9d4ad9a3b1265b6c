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
 * session, then <fin/> with RSM (common/mam.h parses, builds the SQL and
 * the page; muc/mam.c shares it for rooms); <prefs/> get/set. Only for
 * the own account (anyone else: forbidden). Results go through
 * sm_deliver_raw, so XEP-0198 numbers them. The query does not hold the
 * user's queue: its messages keep flowing while PostgreSQL answers. */
#include "acct.h"
#include "im.h"
#include "mam.h"
#include "pgwait.h"
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
    enum mam_mode dflt;
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
    k->dflt = mam_mode_parse(sb_config_str("mam_default", "always"));
    if (k->dflt == MAM_UNSET)
        k->dflt = MAM_ALWAYS;
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

static struct mam_store {
    struct sm_core *core;
    struct mam_batch cur, fly;          /* filling; being written (or retried) */
    unsigned full : 1;
    struct sm_pgwait w;                 /* the batch in flight (pgwait.h) */
    ev_timer flush, purge;
    long dropped;
} st;

static void batch_clear(struct mam_batch *b) { mam_batch_clear(b); }

static void mam_query_fly(struct sm_pgwait *w);

static void mam_send(void)
{
    if (st.w.flying || !st.cur.n || !st.core || st.core->stopping)
        return;
    struct mam_batch t = st.fly;
    st.fly = st.cur;
    st.cur = t;
    batch_clear(&st.cur);
    ev_timer_stop(st.core->loop, &st.flush);
    sm_pgwait_sent(&st.w);
    mam_query_fly(&st.w);
}

static long mam_waiting_rows(const struct sm_pgwait *w)
{
    return st.fly.n + st.cur.n;
}

static void mam_on_stored(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        sm_pgwait_failed(&st.w, res ? PQresultErrorMessage(res) : "no connection");
        return;
    }
    if (sm_pgwait_ok(&st.w) || st.full)
        log_info("mam_store_recovered", "rows=%ld waiting=%ld dropped=%ld", st.fly.n, st.cur.n,
                 st.dropped);
    st.full = 0;
    st.dropped = 0;
    batch_clear(&st.fly);
    if (st.cur.n >= mam_cfg()->batch_rows)
        mam_send();
    else if (st.cur.n && st.core && !st.core->stopping)
        ev_timer_again(st.core->loop, &st.flush);
}

/* (Re)send the batch in flight (pgwait's retry calls this too). */
static void mam_query_fly(struct sm_pgwait *w)
{
    const struct mam_cfg *k = mam_cfg();
    const char *p[MAM_INSERT_NPARAMS];
    if (!w->flying)
        return;
    if (mam_batch_params(&st.fly, k->fts, mam_mode_name(k->dflt), p) != SB_OK) {
        sm_pgwait_failed(w, "nomem");
        return;
    }
    if (sm_pg_query(st.core, MAM_INSERT_SQL, MAM_INSERT_NPARAMS, p, mam_on_stored, NULL) != SB_OK)
        sm_pgwait_failed(w, "queue");
}

static void mam_on_flush(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_timer_stop(loop, w);
    mam_send();
}

/* One archive row into the buffer (the caller checked there is room). */
static void mam_row_add(const char *owner, const char *sid, const char *with, int out,
                        double ts, const char *stanza, size_t slen, const struct sb_buf *body,
                        int checked)
{
    char node[ENV_STR_MAX + 1], bare[ENV_STR_MAX + 1];
    const char *domain, *res;
    if (sm_acct_split(owner, node, sizeof node, &domain) != SB_OK ||
        jid_bare_of(with, bare, sizeof bare) < 0)
        return;
    res = strchr(with, '/');
    struct mam_batch *b = &st.cur;
    mam_batch_row(b, domain, node, sid, bare, res ? res + 1 : "", out, ts, stanza, slen,
                  body->data, body->len, checked);
    if (b->n >= mam_cfg()->batch_rows)
        mam_send();
    else if (!ev_is_active(&st.flush) && !st.w.flying)
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
    sm_pgwait_init(&st.w, c, "mam_store", mam_query_fly, mam_waiting_rows);
    ev_timer_init(&st.flush, mam_on_flush, 0., k->flush_s);
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
    sm_pgwait_stop(&st.w);
    ev_timer_stop(c->loop, &st.purge);
    mam_batch_free(&st.cur);
    mam_batch_free(&st.fly);
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
        if (!strcmp(c->name, "stanza-id") && ns && !strcmp(ns, MAM_NS_SID) && by &&
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
    int w = mam_wanted(&a->mam, mam_cfg()->dflt, from_bare, -1);
    if (w >= 0)
        return w;
    sb_rc rc = sm_im_ready(j, m);
    if (rc == SB_AGAIN)
        return -1;
    struct sm_im_item *it = rc == SB_OK ? sm_im_find(j->user->im, from_bare) : NULL;
    return mam_wanted(&a->mam, mam_cfg()->dflt, from_bare, it && it->in_roster);
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
            sb_buf_adds(&tag, "<stanza-id xmlns='" MAM_NS_SID "' by='");
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

static void run_free(struct mam_run *r)
{
    asker_free(r->a);
    free(r->queryid);
    free(r);
}

static sb_rc run_emit(void *ud, const struct sb_buf *b)
{
    return asker_send(ud, b);
}

static void mam_on_query(PGresult *res, void *arg)
{
    struct mam_run *r = arg;
    struct mam_page pg = {.to = r->a->full, .from = r->a->bare, .queryid = r->queryid,
                          .max = r->max, .desc = r->desc, .flip = r->flip};
    struct sb_buf fin = SB_BUF_INIT;
    const char *cond = NULL;
    int items;
    long count;
    if (mam_page_reply(&pg, res, run_emit, r->a, &fin, &items, &count, &cond) != SB_OK) {
        if (cond && !strcmp(cond, "item-not-found")) {
            log_info("mam_query_bad", "jid=%s why=unknown-id", sb_log_q(r->a->bare));
            asker_error(r->a, "cancel", "item-not-found");
        } else {
            log_warn("mam_query_failed", "jid=%s error=%s", sb_log_q(r->a->bare),
                     sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
            asker_error(r->a, "wait", "internal-server-error");
        }
    } else {
        asker_iq(r->a, "result", fin.data, fin.len);
        log_debug("mam_query", "jid=%s items=%d count=%ld", sb_log_q(r->a->bare), items,
                  count);
    }
    sb_buf_free(&fin);
    run_free(r);
}

static sb_rc mam_query(struct sm_job *j, const struct xml_node *q)
{
    struct mam_query m;
    const char *cond = NULL, *why = NULL;
    if (mam_query_parse(q, &m, &cond, &why) != SB_OK) {
        log_info("mam_query_bad", "jid=%s why=%s", sb_log_q(j->key), why);
        sm_reply_error(j, !strcmp(cond, "feature-not-implemented") ? "cancel" : "modify", cond);
        mam_query_free(&m);
        return SB_OK;
    }
    char node[ENV_STR_MAX + 1];
    const char *domain;
    struct mam_run *r = calloc(1, sizeof *r);
    if (!r || !(r->a = asker_new(j)) || sm_acct_split(j->user->bare, node, sizeof node,
                                                      &domain) != SB_OK) {
        if (r)
            run_free(r);
        mam_query_free(&m);
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    r->queryid = m.queryid;
    m.queryid = NULL;
    r->max = m.max;
    r->flip = m.flip;
    r->desc = m.rsm_before != NULL;
    struct mam_sql s;
    mam_sql_build(&s, &m, domain, node, mam_cfg()->fts, r->desc);
    mam_send();                         /* buffered rows first: the query sees them */
    sb_rc rc = s.sql.data ? sm_pg_query(j->core, s.sql.data, s.np, s.p, mam_on_query, r)
                          : SB_ERROR;
    mam_sql_free(&s);
    mam_query_free(&m);
    if (rc != SB_OK) {
        run_free(r);
        sm_reply_error(j, "wait", "internal-server-error");
    }
    return SB_OK;
}

static sb_rc mam_form(struct sm_job *j)
{
    struct mam_asker *a = asker_new(j);
    if (!a) {
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    asker_iq(a, "result", MAM_FORM, strlen(MAM_FORM));
    asker_free(a);
    return SB_OK;
}

/* ---- preferences ------------------------------------------------------------------- */

static void prefs_xml(const struct mam_prefs *p, struct sb_buf *b)
{
    enum mam_mode m = p->mode != MAM_UNSET ? p->mode : mam_cfg()->dflt;
    sb_buf_printf(b, "<prefs xmlns='" MAM_NS "' default='%s'><always>", mam_mode_name(m));
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
static sb_rc prefs_list(const struct xml_node *l, struct mam_prefs *p, int always)
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
        rc = mam_prefs_add(p, always, bare);
    }
    sb_buf_free(&t);
    return rc;
}

struct prefs_set {
    struct sm_job *j;
    struct mam_prefs p;
};

static void prefs_on_stored(PGresult *res, void *arg)
{
    struct prefs_set *ps = arg;
    struct sm_job *j = ps->j;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_warn("mam_prefs_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
        mam_prefs_clear(&ps->p);
    } else if (j->user && j->user->acct) {
        mam_prefs_clear(&j->user->acct->mam);
        j->user->acct->mam = ps->p;
        log_info("mam_prefs_set", "jid=%s default=%s always=%d never=%d", sb_log_q(j->key),
                 mam_mode_name(ps->p.mode), ps->p.nalways, ps->p.nnever);
        prefs_reply(j);
    } else {
        mam_prefs_clear(&ps->p);
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
    ps->p.mode = mam_mode_parse(xml_attr(pl, "default"));
    if (ps->p.mode == MAM_UNSET ||
        prefs_list(xml_child(pl, "always", NULL), &ps->p, 1) != SB_OK ||
        prefs_list(xml_child(pl, "never", NULL), &ps->p, 0) != SB_OK) {
        log_info("mam_prefs_bad", "jid=%s", sb_log_q(j->key));
        mam_prefs_clear(&ps->p);
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
    const char *p[5] = {domain, node, mam_mode_name(ps->p.mode), jids.data, alw.data};
    if (rc == SB_OK && jids.data && alw.data)
        rc = sm_pg_query(j->core, PREFS_SQL, 5, p, prefs_on_stored, ps);
    else
        rc = SB_ERROR;
    sb_buf_free(&jids);
    sb_buf_free(&alw);
    if (rc != SB_OK) {
        mam_prefs_clear(&ps->p);
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
    if (strcmp(ns, MAM_NS) || !j->user || (j->to && strchr(j->to, '/')))
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
