/* mam.c — XEP-0313 query parsing, XEP-0082 times and the preferences rule
 * (see mam.h); no I/O here. */
#include "mam.h"
#include "jid.h"

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

sb_rc sm_mam_parse_time(const char *s, double *out)
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

void sm_mam_format_time(double t, char out[32])
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

void sm_mam_query_free(struct sm_mam_query *q)
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
    if (!*dst || !**dst || strlen(*dst) > SM_MAM_ID_MAX)
        FAIL("bad-request", "bad-id");
    return SB_OK;
}

static sb_rc time_field(const struct xml_node *f, int *has, double *t,
                        const char **cond, const char **why)
{
    char *v = field_value(f);
    sb_rc rc = v ? sm_mam_parse_time(v, t) : SB_ERROR;
    free(v);
    if (rc != SB_OK)
        FAIL("bad-request", "bad-time");
    *has = 1;
    return SB_OK;
}

static sb_rc ids_field(const struct xml_node *f, struct sm_mam_query *q,
                       const char **cond, const char **why)
{
    for (const struct xml_node *v = xml_first_elem(f); v; v = xml_next_elem(v)) {
        if (strcmp(v->name, "value"))
            continue;
        if (q->nids == SM_MAM_IDS_MAX)
            FAIL("policy-violation", "too-many-ids");
        char **n = realloc(q->ids, (size_t)(q->nids + 1) * sizeof *n);
        if (!n)
            FAIL("internal-server-error", "nomem");
        q->ids = n;
        if (!(q->ids[q->nids] = text_dup(v)))
            FAIL("internal-server-error", "nomem");
        if (!*q->ids[q->nids] || strlen(q->ids[q->nids]) > SM_MAM_ID_MAX) {
            free(q->ids[q->nids]);
            FAIL("bad-request", "bad-id");
        }
        q->nids++;
    }
    return SB_OK;
}

static sb_rc with_field(const struct xml_node *f, struct sm_mam_query *q,
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

static sb_rc form_parse(const struct xml_node *x, struct sm_mam_query *q,
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
            typed = v && !strcmp(v, SM_NS_MAM);
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
        } else if (!strcmp(var, "{" SM_NS_FULLTEXT "}fulltext")) {
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

static sb_rc rsm_parse(const struct xml_node *set, struct sm_mam_query *q,
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
            q->max = n > SM_MAM_PAGE_MAX ? SM_MAM_PAGE_MAX : n;
        } else if (!strcmp(e->name, "after") || !strcmp(e->name, "before")) {
            char **dst = e->name[0] == 'a' ? &q->rsm_after : &q->rsm_before;
            free(*dst);
            if (!(*dst = text_dup(e)))
                FAIL("internal-server-error", "nomem");
            if (strlen(*dst) > SM_MAM_ID_MAX || (e->name[0] == 'a' && !**dst))
                FAIL("bad-request", "bad-id");
        } else if (!strcmp(e->name, "index")) {
            FAIL("feature-not-implemented", "rsm-index");
        }
    }
    return SB_OK;
}

sb_rc sm_mam_query_parse(const struct xml_node *q, struct sm_mam_query *out,
                         const char **cond, const char **why)
{
    memset(out, 0, sizeof *out);
    out->max = SM_MAM_PAGE_DEFAULT;
    const char *qid = xml_attr(q, "queryid");
    if (qid && strlen(qid) > SM_MAM_ID_MAX)
        FAIL("bad-request", "bad-queryid");
    if (qid && !(out->queryid = strdup(qid)))
        FAIL("internal-server-error", "nomem");
    for (const struct xml_node *e = xml_first_elem(q); e; e = xml_next_elem(e)) {
        const char *ns = xml_attr(e, "xmlns");
        sb_rc rc = SB_OK;
        if (!strcmp(e->name, "x") && ns && !strcmp(ns, NS_DATA))
            rc = form_parse(e, out, cond, why);
        else if (!strcmp(e->name, "set") && ns && !strcmp(ns, SM_NS_RSM))
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

enum sm_mam_mode sm_mam_mode_parse(const char *s)
{
    if (!s)
        return SM_MAM_UNSET;
    if (!strcmp(s, "always"))
        return SM_MAM_ALWAYS;
    if (!strcmp(s, "never"))
        return SM_MAM_NEVER;
    if (!strcmp(s, "roster"))
        return SM_MAM_ROSTER;
    return SM_MAM_UNSET;
}

const char *sm_mam_mode_name(enum sm_mam_mode m)
{
    return m == SM_MAM_NEVER ? "never" : m == SM_MAM_ROSTER ? "roster" : "always";
}

static int in_list(char *const *l, int n, const char *jid)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(l[i], jid))
            return 1;
    return 0;
}

int sm_mam_wanted(const struct sm_mam_prefs *p, enum sm_mam_mode dflt, const char *with,
                  int in_roster)
{
    if (p && in_list(p->never, p->nnever, with))
        return 0;
    if (p && in_list(p->always, p->nalways, with))
        return 1;
    enum sm_mam_mode m = p && p->mode != SM_MAM_UNSET ? p->mode : dflt;
    if (m == SM_MAM_NEVER)
        return 0;
    if (m == SM_MAM_ROSTER)
        return in_roster;
    return 1;
}

sb_rc sm_mam_prefs_add(struct sm_mam_prefs *p, int always, const char *jid)
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

void sm_mam_prefs_clear(struct sm_mam_prefs *p)
{
    for (int i = 0; i < p->nalways; i++)
        free(p->always[i]);
    for (int i = 0; i < p->nnever; i++)
        free(p->never[i]);
    free(p->always);
    free(p->never);
    memset(p, 0, sizeof *p);
}
