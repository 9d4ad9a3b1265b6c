/* mam.c — XEP-0313 query parsing, XEP-0082 times, the preferences rule, the
 * archive's INSERT rows, query SQL and result pages (see mam.h); no I/O here. */
#include "mam.h"
#include "jid.h"
#include "pgev.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_DATA "jabber:x:data"

/* ---- times (XEP-0082) ------------------------------------------------------------ */

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

sb_rc mam_parse_time(const char *s, double *out)
{
    int Y, M, D, h, m, sec, oh = 0, om = 0;
    if (strlen(s) < 20 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) ||
        s[7] != '-' || digits(s + 8, 2, &D) || s[10] != 'T' || digits(s + 11, 2, &h) ||
        s[13] != ':' || digits(s + 14, 2, &m) || s[16] != ':' || digits(s + 17, 2, &sec))
        return SB_ERROR;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return SB_ERROR;
    const char *p = s + 19;
    double frac = 0, scale = 0.1;
    if (*p == '.') {
        if (!isdigit((unsigned char)*++p))
            return SB_ERROR;
        for (; isdigit((unsigned char)*p); p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    int sign = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return SB_ERROR;
        p += 6;
    } else {
        return SB_ERROR;
    }
    if (*p)
        return SB_ERROR;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D,
                    .tm_hour = h, .tm_min = m, .tm_sec = sec};
    *out = (double)timegm(&tm) + frac - sign * (oh * 3600 + om * 60);
    return SB_OK;
}

void mam_format_time(double t, char out[32])
{
    time_t secs = (time_t)t;
    long ms = (long)((t - (double)secs) * 1000 + 0.5);
    if (ms >= 1000) {
        secs++;
        ms -= 1000;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", ms);
}

/* ---- the query form and RSM ------------------------------------------------------- */

void mam_query_free(struct mam_query *q)
{
    free(q->queryid);
    free(q->with);
    free(q->before_id);
    free(q->after_id);
    for (int i = 0; i < q->nids; i++)
        free(q->ids[i]);
    free(q->ids);
    free(q->fulltext);
    free(q->rsm_after);
    free(q->rsm_before);
    memset(q, 0, sizeof *q);
}

/* The text of n (concatenated), as a new string. */
static char *text_dup(const struct xml_node *n)
{
    struct sb_buf b = SB_BUF_INIT;
    xml_text(n, &b);
    char *s = strdup(b.data ? b.data : "");
    sb_buf_free(&b);
    return s;
}

/* The single <value/> of a field, NULL when it has none (or out of memory). */
static char *field_value(const struct xml_node *f)
{
    const struct xml_node *v = xml_child(f, "value", NULL);
    return v ? text_dup(v) : NULL;
}

#define FAIL(c, w) do { *cond = (c); *why = (w); return SB_ERROR; } while (0)

static sb_rc id_field(const struct xml_node *f, char **dst, const char **cond, const char **why)
{
    free(*dst);
    *dst = field_value(f);
    if (!*dst || !**dst || strlen(*dst) > MAM_ID_MAX)
        FAIL("bad-request", "bad-id");
    return SB_OK;
}

static sb_rc time_field(const struct xml_node *f, int *has, double *t,
                        const char **cond, const char **why)
{
    char *v = field_value(f);
    sb_rc rc = v ? mam_parse_time(v, t) : SB_ERROR;
    free(v);
    if (rc != SB_OK)
        FAIL("bad-request", "bad-time");
    *has = 1;
    return SB_OK;
}

static sb_rc ids_field(const struct xml_node *f, struct mam_query *q,
                       const char **cond, const char **why)
{
    for (const struct xml_node *v = xml_first_elem(f); v; v = xml_next_elem(v)) {
        if (strcmp(v->name, "value"))
            continue;
        if (q->nids == MAM_IDS_MAX)
            FAIL("policy-violation", "too-many-ids");
        char **n = realloc(q->ids, (size_t)(q->nids + 1) * sizeof *n);
        if (!n)
            FAIL("internal-server-error", "nomem");
        q->ids = n;
        if (!(q->ids[q->nids] = text_dup(v)))
            FAIL("internal-server-error", "nomem");
        if (!*q->ids[q->nids] || strlen(q->ids[q->nids]) > MAM_ID_MAX) {
            free(q->ids[q->nids]);
            FAIL("bad-request", "bad-id");
        }
        q->nids++;
    }
    return SB_OK;
}

static sb_rc with_field(const struct xml_node *f, struct mam_query *q,
                        const char **cond, const char **why)
{
    char *v = field_value(f);
    struct jid jid;
    if (!v || jid_parse(&jid, v) != SB_OK) {
        free(v);
        FAIL("bad-request", "bad-with");
    }
    free(v);
    char full[JID_FULL_MAX + 1];
    jid_full(&jid, full);
    free(q->with);
    if (!(q->with = strdup(full)))
        FAIL("internal-server-error", "nomem");
    return SB_OK;
}

static sb_rc form_parse(const struct xml_node *x, struct mam_query *q,
                        const char **cond, const char **why)
{
    const char *type = xml_attr(x, "type");
    if (type && strcmp(type, "submit"))
        FAIL("bad-request", "form-type");
    int typed = 0;
    for (const struct xml_node *f = xml_first_elem(x); f; f = xml_next_elem(f)) {
        if (strcmp(f->name, "field"))
            continue;
        const char *var = xml_attr(f, "var");
        sb_rc rc = SB_OK;
        if (!var) {
            FAIL("bad-request", "field-without-var");
        } else if (!strcmp(var, "FORM_TYPE")) {
            char *v = field_value(f);
            typed = v && !strcmp(v, MAM_NS);
            free(v);
            if (!typed)
                FAIL("bad-request", "form-type");
        } else if (!strcmp(var, "with")) {
            rc = with_field(f, q, cond, why);
        } else if (!strcmp(var, "start")) {
            rc = time_field(f, &q->has_start, &q->start, cond, why);
        } else if (!strcmp(var, "end")) {
            rc = time_field(f, &q->has_end, &q->end, cond, why);
        } else if (!strcmp(var, "before-id")) {
            rc = id_field(f, &q->before_id, cond, why);
        } else if (!strcmp(var, "after-id")) {
            rc = id_field(f, &q->after_id, cond, why);
        } else if (!strcmp(var, "ids")) {
            rc = ids_field(f, q, cond, why);
        } else if (!strcmp(var, "{" MAM_NS_FULLTEXT "}fulltext")) {
            free(q->fulltext);
            q->fulltext = field_value(f);
            if (q->fulltext && !*q->fulltext) {
                free(q->fulltext);      /* XEP-0431: only a non-empty value searches */
                q->fulltext = NULL;
            }
        } else {
            FAIL("feature-not-implemented", "unknown-field");
        }
        if (rc != SB_OK)
            return rc;
    }
    if (!typed)
        FAIL("bad-request", "form-type");
    return SB_OK;
}

static sb_rc rsm_parse(const struct xml_node *set, struct mam_query *q,
                       const char **cond, const char **why)
{
    for (const struct xml_node *e = xml_first_elem(set); e; e = xml_next_elem(e)) {
        if (!strcmp(e->name, "max")) {
            char *v = text_dup(e), *end = NULL;
            long n = v ? strtol(v, &end, 10) : -1;
            int bad = !v || !*v || *end || n < 0;
            free(v);
            if (bad)
                FAIL("bad-request", "bad-max");
            q->max = n > MAM_PAGE_MAX ? MAM_PAGE_MAX : n;
        } else if (!strcmp(e->name, "after") || !strcmp(e->name, "before")) {
            char **dst = e->name[0] == 'a' ? &q->rsm_after : &q->rsm_before;
            free(*dst);
            if (!(*dst = text_dup(e)))
                FAIL("internal-server-error", "nomem");
            if (strlen(*dst) > MAM_ID_MAX || (e->name[0] == 'a' && !**dst))
                FAIL("bad-request", "bad-id");
        } else if (!strcmp(e->name, "index")) {
            FAIL("feature-not-implemented", "rsm-index");
        }
    }
    return SB_OK;
}

sb_rc mam_query_parse(const struct xml_node *q, struct mam_query *out,
                         const char **cond, const char **why)
{
    memset(out, 0, sizeof *out);
    out->max = MAM_PAGE_DEFAULT;
    const char *qid = xml_attr(q, "queryid");
    if (qid && strlen(qid) > MAM_ID_MAX)
        FAIL("bad-request", "bad-queryid");
    if (qid && !(out->queryid = strdup(qid)))
        FAIL("internal-server-error", "nomem");
    for (const struct xml_node *e = xml_first_elem(q); e; e = xml_next_elem(e)) {
        const char *ns = xml_attr(e, "xmlns");
        sb_rc rc = SB_OK;
        if (!strcmp(e->name, "x") && ns && !strcmp(ns, NS_DATA))
            rc = form_parse(e, out, cond, why);
        else if (!strcmp(e->name, "set") && ns && !strcmp(ns, MAM_NS_RSM))
            rc = rsm_parse(e, out, cond, why);
        else if (!strcmp(e->name, "flip-page"))
            out->flip = 1;
        else
            FAIL("bad-request", "unknown-element");
        if (rc != SB_OK)
            return rc;
    }
    return SB_OK;
}

/* ---- preferences --------------------------------------------------------------- */

enum mam_mode mam_mode_parse(const char *s)
{
    if (!s)
        return MAM_UNSET;
    if (!strcmp(s, "always"))
        return MAM_ALWAYS;
    if (!strcmp(s, "never"))
        return MAM_NEVER;
    if (!strcmp(s, "roster"))
        return MAM_ROSTER;
    return MAM_UNSET;
}

const char *mam_mode_name(enum mam_mode m)
{
    return m == MAM_NEVER ? "never" : m == MAM_ROSTER ? "roster" : "always";
}

static int in_list(char *const *l, int n, const char *jid)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(l[i], jid))
            return 1;
    return 0;
}

int mam_wanted(const struct mam_prefs *p, enum mam_mode dflt, const char *with,
                  int in_roster)
{
    if (p && in_list(p->never, p->nnever, with))
        return 0;
    if (p && in_list(p->always, p->nalways, with))
        return 1;
    enum mam_mode m = p && p->mode != MAM_UNSET ? p->mode : dflt;
    if (m == MAM_NEVER)
        return 0;
    if (m == MAM_ROSTER)
        return in_roster;
    return 1;
}

sb_rc mam_prefs_add(struct mam_prefs *p, int always, const char *jid)
{
    char ***l = always ? &p->always : &p->never;
    int *n = always ? &p->nalways : &p->nnever;
    if (in_list(*l, *n, jid))
        return SB_OK;
    char **nl = realloc(*l, (size_t)(*n + 1) * sizeof *nl);
    if (!nl)
        return SB_ERROR;
    *l = nl;
    if (!(nl[*n] = strdup(jid)))
        return SB_ERROR;
    (*n)++;
    return SB_OK;
}

void mam_prefs_clear(struct mam_prefs *p)
{
    for (int i = 0; i < p->nalways; i++)
        free(p->always[i]);
    for (int i = 0; i < p->nnever; i++)
        free(p->never[i]);
    free(p->always);
    free(p->never);
    memset(p, 0, sizeof *p);
}

/* ---- writing ------------------------------------------------------------------- */

const char MAM_INSERT_SQL[] =
    "INSERT INTO archive (domain, username, stanza_id, with_bare, with_res, outgoing, ts,"
    " stanza, body_tsv)"
    " SELECT r.d, r.u, r.s, r.wb, r.wr, r.o, to_timestamp(r.t), r.st,"
    " to_tsvector($11::regconfig, r.b)"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[],"
    " $7::float8[], $8::text[], $9::text[], $10::boolean[]) AS r(d, u, s, wb, wr, o, t, st, b, c)"
    " WHERE r.c OR archive_wanted(r.d, r.u, r.wb, $12)"
    " ON CONFLICT DO NOTHING";

static void mam_batch_put(struct mam_batch *b, int col, const char *s, size_t n)
{
    if (!b->col[col].len)
        sb_buf_adds(&b->col[col], "{");
    pgev_array_add(&b->col[col], s, n);
}

void mam_batch_row(struct mam_batch *b, const char *domain, const char *user, const char *sid,
                   const char *with_bare, const char *with_res, int outgoing, double ts,
                   const char *stanza, size_t slen, const char *body, size_t blen, int checked)
{
    char tsbuf[32];
    snprintf(tsbuf, sizeof tsbuf, "%.3f", ts);   /* ms, as the stamps clients see */
    mam_batch_put(b, MAM_C_DOM, domain, strlen(domain));
    mam_batch_put(b, MAM_C_USER, user, strlen(user));
    mam_batch_put(b, MAM_C_SID, sid, strlen(sid));
    mam_batch_put(b, MAM_C_WBARE, with_bare, strlen(with_bare));
    mam_batch_put(b, MAM_C_WRES, with_res, strlen(with_res));
    mam_batch_put(b, MAM_C_OUT, outgoing ? "t" : "f", 1);
    mam_batch_put(b, MAM_C_TS, tsbuf, strlen(tsbuf));
    mam_batch_put(b, MAM_C_STANZA, stanza, slen);
    mam_batch_put(b, MAM_C_BODY, body ? body : "", body ? blen : 0);
    mam_batch_put(b, MAM_C_CHECKED, checked ? "t" : "f", 1);
    b->n++;
}

sb_rc mam_batch_params(struct mam_batch *b, const char *fts, const char *dflt,
                       const char *p[MAM_INSERT_NPARAMS])
{
    for (int i = 0; i < MAM_NCOLS; i++) {
        struct sb_buf *c = &b->col[i];
        if (!c->len || c->data[c->len - 1] != '}')
            sb_buf_adds(c, "}");
        if (!(p[i] = c->data))
            return SB_ERROR;
    }
    p[10] = fts;
    p[11] = dflt;
    return SB_OK;
}

void mam_batch_clear(struct mam_batch *b)
{
    for (int i = 0; i < MAM_NCOLS; i++)
        sb_buf_reset(&b->col[i]);
    b->n = 0;
}

void mam_batch_free(struct mam_batch *b)
{
    for (int i = 0; i < MAM_NCOLS; i++)
        sb_buf_free(&b->col[i]);
    b->n = 0;
}

/* ---- querying ------------------------------------------------------------------ */

static int mam_sql_param(struct mam_sql *q, const char *v)
{
    q->p[q->np] = v;
    return ++q->np;
}

static const char *mam_sql_num(struct mam_sql *q, const char *fmt, double v)
{
    snprintf(q->num[q->nnum], sizeof q->num[0], fmt, v);
    return q->num[q->nnum++];
}

static void mam_sql_ref(struct mam_sql *q, const char *id, const char *op)
{
    int n = mam_sql_param(q, id);
    sb_buf_printf(&q->bounds, " AND id %s (SELECT id FROM archive WHERE domain = $1"
                  " AND username = $2 AND stanza_id = $%d)", op, n);
    if (!q->refs.len)
        sb_buf_adds(&q->refs, "{");
    pgev_array_add(&q->refs, id, strlen(id));
    q->nrefs++;
}

void mam_sql_build(struct mam_sql *q, const struct mam_query *m, const char *domain,
                   const char *user, const char *fts, int desc)
{
    memset(q, 0, sizeof *q);
    mam_sql_param(q, domain);
    mam_sql_param(q, user);
    struct sb_buf *sql = &q->sql, *ids = &q->ids;
    sb_buf_adds(&q->where, "domain = $1 AND username = $2");
    if (m->with) {
        const char *slash = strchr(m->with, '/');
        if (jid_bare_of(m->with, q->wbare, sizeof q->wbare) >= 0)
            sb_buf_printf(&q->where, " AND with_bare = $%d", mam_sql_param(q, q->wbare));
        if (slash)
            sb_buf_printf(&q->where, " AND with_res = $%d", mam_sql_param(q, slash + 1));
    }
    if (m->has_start)
        sb_buf_printf(&q->where, " AND ts >= to_timestamp($%d::float8)",
                      mam_sql_param(q, mam_sql_num(q, "%.6f", m->start)));
    if (m->has_end)
        sb_buf_printf(&q->where, " AND ts <= to_timestamp($%d::float8)",
                      mam_sql_param(q, mam_sql_num(q, "%.6f", m->end)));
    if (m->fulltext) {
        int cfg = mam_sql_param(q, fts);
        sb_buf_printf(&q->where, " AND body_tsv @@ plainto_tsquery($%d::regconfig, $%d)", cfg,
                      mam_sql_param(q, m->fulltext));
    }
    if (m->nids) {
        sb_buf_adds(ids, "{");
        for (int i = 0; i < m->nids; i++)
            pgev_array_add(ids, m->ids[i], strlen(m->ids[i]));
        sb_buf_adds(ids, "}");
        sb_buf_printf(&q->where, " AND stanza_id = ANY($%d::text[])", mam_sql_param(q, ids->data));
    }
    if (m->after_id)
        mam_sql_ref(q, m->after_id, ">");
    if (m->rsm_after)
        mam_sql_ref(q, m->rsm_after, ">");
    if (m->before_id)
        mam_sql_ref(q, m->before_id, "<");
    if (m->rsm_before && *m->rsm_before)
        mam_sql_ref(q, m->rsm_before, "<");
    if (q->refs.len)
        sb_buf_adds(&q->refs, "}");
    int lim = mam_sql_param(q, mam_sql_num(q, "%.0f", (double)(m->max + 1)));
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
        int r = mam_sql_param(q, q->refs.data);
        sb_buf_printf(sql, " (SELECT count(DISTINCT stanza_id) FROM archive WHERE domain = $1"
                      " AND username = $2 AND stanza_id = ANY($%d::text[])) = %d,", r,
                      q->nrefs);
    } else {
        sb_buf_adds(sql, " true,");
    }
    sb_buf_adds(sql, " p.stanza_id, extract(epoch FROM p.ts)::float8, p.stanza"
                " FROM n LEFT JOIN page p ON true ORDER BY p.id");
}

void mam_sql_free(struct mam_sql *s)
{
    sb_buf_free(&s->where);
    sb_buf_free(&s->bounds);
    sb_buf_free(&s->refs);
    sb_buf_free(&s->ids);
    sb_buf_free(&s->sql);
}

static void mam_attr_put(struct sb_buf *b, const char *name, const char *v)
{
    sb_buf_printf(b, " %s='", name);
    xml_escape_attr(b, v, strlen(v));
    sb_buf_adds(b, "'");
}

static void mam_page_result(const struct mam_page *pg, PGresult *res, int i, struct sb_buf *b)
{
    char stamp[32];
    mam_format_time(atof(PQgetvalue(res, i, 4)), stamp);
    sb_buf_reset(b);
    sb_buf_adds(b, "<message");
    mam_attr_put(b, "to", pg->to);
    mam_attr_put(b, "from", pg->from);
    sb_buf_adds(b, "><result xmlns='" MAM_NS "'");
    if (pg->queryid)
        mam_attr_put(b, "queryid", pg->queryid);
    mam_attr_put(b, "id", PQgetvalue(res, i, 3));
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

sb_rc mam_page_reply(const struct mam_page *pg, PGresult *res, mam_emit_fn emit, void *ud,
                     struct sb_buf *fin, int *items, long *count_out, const char **cond)
{
    *items = 0;
    *count_out = 0;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        *cond = "internal-server-error";
        return SB_ERROR;
    }
    if (PQgetvalue(res, 0, 2)[0] != 't') {
        *cond = "item-not-found";
        return SB_ERROR;
    }
    int rows = PQgetisnull(res, 0, 3) ? 0 : PQntuples(res);
    long count = atol(PQgetvalue(res, 0, 0)), idx = atol(PQgetvalue(res, 0, 1));
    int complete = rows <= pg->max;
    int lo = 0, hi = rows;              /* the page: rows [lo, hi), ascending */
    if (!complete) {
        if (pg->desc) {
            lo = 1;                     /* the extra row is the oldest */
            idx++;
        } else {
            hi = rows - 1;
        }
    }
    if (pg->max == 0)
        hi = lo;
    struct sb_buf b = SB_BUF_INIT;
    for (int k = 0; k < hi - lo; k++) {
        mam_page_result(pg, res, pg->flip ? hi - 1 - k : lo + k, &b);
        if (emit(ud, &b) != SB_OK)
            break;
    }
    sb_buf_free(&b);
    sb_buf_reset(fin);
    sb_buf_adds(fin, "<fin xmlns='" MAM_NS "'");
    if (pg->queryid)
        mam_attr_put(fin, "queryid", pg->queryid);
    sb_buf_printf(fin, " complete='%s'><set xmlns='" MAM_NS_RSM "'>",
                  complete ? "true" : "false");
    if (hi > lo) {
        int first = pg->flip ? hi - 1 : lo, last = pg->flip ? lo : hi - 1;
        long fidx = pg->flip ? idx + (hi - lo) - 1 : idx;
        sb_buf_printf(fin, "<first index='%ld'>", fidx);
        xml_escape_text(fin, PQgetvalue(res, first, 3), strlen(PQgetvalue(res, first, 3)));
        sb_buf_adds(fin, "</first><last>");
        xml_escape_text(fin, PQgetvalue(res, last, 3), strlen(PQgetvalue(res, last, 3)));
        sb_buf_adds(fin, "</last>");
    }
    sb_buf_printf(fin, "<count>%ld</count></set></fin>", count);
    *items = hi - lo;
    *count_out = count;
    return fin->data ? SB_OK : SB_ERROR;
}

const char MAM_FORM[] =
    "<query xmlns='" MAM_NS "'><x xmlns='jabber:x:data' type='form'>"
    "<field type='hidden' var='FORM_TYPE'><value>" MAM_NS "</value></field>"
    "<field type='jid-single' var='with'/>"
    "<field type='text-single' var='start'/>"
    "<field type='text-single' var='end'/>"
    "<field type='text-single' var='before-id'/>"
    "<field type='text-single' var='after-id'/>"
    "<field type='text-multi' var='ids'><validate xmlns='http://jabber.org/protocol/xdata-validate'"
    " datatype='xs:string'><open/></validate></field>"
    "<field type='text-single' var='{" MAM_NS_FULLTEXT "}fulltext' label='Search for'/>"
    "</x></query>";
