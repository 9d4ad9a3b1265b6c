/* im.c — a cached user's IM state (see im.h): loading it once, the roster
 * items and their write-through to PostgreSQL, roster pushes, and the
 * per-resource flags mirrored in Redis `im:{bare}` (fields `rq:<res>` =
 * asked for the roster, `dp:<res>` = directed presence recipients). */
#include "im.h"
#include "pep.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct sm_im_limits im_limits;
static int im_limits_done;

static void im_limits_read(struct sm_im_limits *l)
{
    l->items = sb_config_int("roster_max_items", 1000);
    l->name = sb_config_int("roster_max_name", 1023);
    l->group = sb_config_int("roster_max_group", 1023);
    l->groups = sb_config_int("roster_max_groups", 64);
    l->offline = sb_config_int("offline_max", 100);
    l->contacts = sb_config_int("contacts_roster_max", 1000);
}

const struct sm_im_limits *sm_im_limits(void)
{
    if (!im_limits_done) {
        im_limits_read(&im_limits);
        im_limits_done = 1;
    }
    return &im_limits;
}

void sm_im_limits_reload(void)
{
    struct sm_im_limits o = *sm_im_limits(), *n = &im_limits;
    im_limits_read(n);
    if (memcmp(&o, n, sizeof o) != 0)
        log_info("reload", "what=sm_limits roster_max_items=%ld roster_max_name=%ld "
                 "roster_max_group=%ld roster_max_groups=%ld offline_max=%ld "
                 "contacts_roster_max=%ld", n->items, n->name, n->group, n->groups, n->offline,
                 n->contacts);
}

/* ---- helpers --------------------------------------------------------------------- */

int sm_im_split(const char *bare, char *node, size_t cap, const char **domain)
{
    const char *at = strchr(bare, '@');
    if (!at || at == bare || (size_t)(at - bare) >= cap || !at[1])
        return -1;
    memcpy(node, bare, (size_t)(at - bare));
    node[at - bare] = '\0';
    *domain = at + 1;
    return 0;
}

int sm_im_bare(const char *s, char *out, size_t cap)
{
    return jid_bare_of(s, out, cap) < 0 ? -1 : 0;
}

sb_rc sm_im_with_to(struct sb_buf *b, const char *body, size_t len, const char *to)
{
    size_t n = 1;
    sb_buf_reset(b);
    if (len < 2 || body[0] != '<')
        return SB_ERROR;
    while (n < len && body[n] != ' ' && body[n] != '>' && body[n] != '/')
        n++;
    sb_buf_add(b, body, n);
    sb_buf_adds(b, " to='");
    xml_escape_attr(b, to, strlen(to));
    sb_buf_adds(b, "'");
    sb_buf_add(b, body + n, len - n);
    return b->data ? SB_OK : SB_ERROR;
}

sb_rc sm_im_set_str(char **dst, const char *v)
{
    char *copy = v ? strdup(v) : NULL;
    if (v && !copy)
        return SB_ERROR;
    free(*dst);
    *dst = copy;
    return SB_OK;
}

/* ---- items ---------------------------------------------------------------------- */

struct sm_im_item *sm_im_find(struct sm_im *im, const char *jid)
{
    struct sm_im_item *it = NULL;
    if (im)
        HASH_FIND_STR(im->items, jid, it);
    return it;
}

struct sm_im_item *sm_im_get(struct sm_im *im, const char *jid)
{
    struct sm_im_item *it = sm_im_find(im, jid);
    if (it)
        return it;
    it = calloc(1, sizeof *it);
    if (!it || !(it->jid = strdup(jid)) || !(it->groups = strdup(""))) {
        if (it)
            free(it->jid);
        free(it);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, im->items, it->jid, strlen(it->jid), it);
    return it;
}

static void item_free(struct sm_im_item *it)
{
    free(it->jid);
    free(it->name);
    free(it->groups);
    free(it->pend);
    free(it);
}

void sm_im_drop(struct sm_im *im, struct sm_im_item *it)
{
    if (it->in_roster)
        im->nroster--;
    HASH_DEL(im->items, it);
    item_free(it);
}

/* ---- loading ---------------------------------------------------------------------- */

static void im_on_flag(redisReply *r, void *arg);

static const char IM_LOAD_SQL[] =
    "SELECT 'i', contact, coalesce(name, ''), subscription, coalesce(ask, ''),"
    " array_to_string(groups, chr(31)) FROM roster"
    " WHERE domain = $1 AND username = $2 AND NOT removed"
    " UNION ALL SELECT 'p', contact, stanza, '', '', '' FROM roster_pending"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'v', version::text, '', '', '', '' FROM roster_version"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'u', '', '', '', '', '' FROM users WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'o', count(*)::text, '', '', '', '' FROM offline"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'n', id::text, jid, node, options, '' FROM push_registrations"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'm', default_mode, '', '', '', '' FROM archive_prefs"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'j', jid, CASE WHEN always THEN 'a' ELSE 'n' END, '', '', ''"
    " FROM archive_prefs_jid WHERE domain = $1 AND username = $2";

/* While PostgreSQL is down, jobs that need the roster fail at once for a
 * while instead of each waiting out a query deadline. */
#define IM_RETRY_AFTER 5.0

static void im_free(struct sm_im *im)
{
    struct sm_im_item *it, *tmp;
    HASH_ITER(hh, im->items, it, tmp) {
        HASH_DEL(im->items, it);
        item_free(it);
    }
    for (int i = 0; i < im->nres; i++) {
        free(im->res[i].resource);
        free(im->res[i].directed);
    }
    free(im->res);
    free(im);
}

void sm_im_user_free(struct sm_user *u)
{
    struct sm_im *im = u->im;
    u->im = NULL;
    if (!im)
        return;
    if (im->wait > 0) {     /* replies still to come: they free it */
        im->user = NULL;
        return;
    }
    im_free(im);
}

static void im_load_row(struct sm_im *im, PGresult *res, int i)
{
    const char *kind = PQgetvalue(res, i, 0), *c1 = PQgetvalue(res, i, 1);
    if (kind[0] != 'v' && kind[0] != 'u' && kind[0] != 'o' && kind[0] != 'p' && kind[0] != 'i')
        return;                 /* the account's rows (SM_IM_ACCT_SQL) */
    if (kind[0] == 'v') {
        im->ver = strtoll(c1, NULL, 10);
        return;
    }
    if (kind[0] == 'u') {
        im->exists = 1;
        return;
    }
    if (kind[0] == 'o') {
        im->offline = strtol(c1, NULL, 10);
        return;
    }
    struct sm_im_item *it = sm_im_get(im, c1);
    if (!it)
        return;
    if (kind[0] == 'p') {
        it->state |= SM_SUB_PEND_IN;
        sm_im_set_str(&it->pend, PQgetvalue(res, i, 2));
        return;
    }
    const char *name = PQgetvalue(res, i, 2), *ask = PQgetvalue(res, i, 4);
    it->state |= sm_sub_parse(PQgetvalue(res, i, 3));
    if (!strcmp(ask, "subscribe") && !(it->state & SM_SUB_TO))
        it->state |= SM_SUB_PEND_OUT;
    sm_im_set_str(&it->name, *name ? name : NULL);
    sm_im_set_str(&it->groups, PQgetvalue(res, i, 5));
    if (!it->in_roster)
        im->nroster++;
    it->in_roster = 1;
}

static void im_load_done(struct sm_im *im)
{
    struct sm_job *j = im->job;
    const struct sm_module *m = im->mod;
    im->job = NULL;
    if (!im->user) {            /* the user record went away meanwhile */
        im_free(im);
        if (j)
            sm_job_done(j);
        return;
    }
    if (im->failed) {
        /* Keep nothing half-loaded: the next attempt starts clean. */
        struct sm_user *u = im->user;
        u->im = NULL;
        im_free(im);
        struct sm_im *fresh = calloc(1, sizeof *fresh);
        if (fresh) {
            fresh->user = u;
            fresh->failed = 1;
            fresh->retry_at = sb_now() + IM_RETRY_AFTER;
            u->im = fresh;
        }
    } else {
        im->loaded = 1;
        log_debug("im_loaded", "jid=%s items=%d ver=%lld exists=%d", sb_log_q(im->user->bare),
                  im->nroster, im->ver, im->exists);
    }
    if (j)
        sm_job_rerun(j, m);
}

static void im_on_sql(PGresult *res, void *arg)
{
    struct sm_im *im = arg;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("im_load_failed", "jid=%s error=%s", im->user ? sb_log_q(im->user->bare) : "-",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        im->failed = 1;
    } else {
        for (int i = 0; i < PQntuples(res); i++)
            im_load_row(im, res, i);
    }
    if (--im->wait == 0)
        im_load_done(im);
}

static void im_load_field(struct sm_im *im, const char *field, const char *val, size_t len)
{
    if (!im->user || !sm_user_session(im->user, field + 3)) {
        /* left behind by a session that ended where the state was not loaded */
        if (im->user)
            SM_RCMD(im->user->core, im_on_flag, NULL, "HDEL im:{%s} %s", im->user->bare, field);
        return;
    }
    struct sm_im_res *r = sm_im_res(im, field + 3, 1);
    if (!r)
        return;
    if (!strncmp(field, "rq:", 3))
        r->roster_req = 1;
    else if (!strncmp(field, "dp:", 3) && len)
        r->directed = strndup(val, len);
}

/* Per-resource flags are a convenience: without Redis the roster still
 * loads, and the flags start empty. */
static void im_redis_fields(struct sm_im *im, redisReply *r)
{
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const char *f = r->element[i]->str;
            if (f && strlen(f) > 3 && r->element[i + 1]->str)
                im_load_field(im, f, r->element[i + 1]->str, r->element[i + 1]->len);
        }
    } else {
        log_warn("im_flags_load_failed", "jid=%s", im->user ? sb_log_q(im->user->bare) : "-");
    }
}

static void im_on_redis(redisReply *r, void *arg)
{
    struct sm_im *im = arg;
    im_redis_fields(im, r);
    if (--im->wait == 0)
        im_load_done(im);
}

static sb_rc im_load(struct sm_job *j, struct sm_im *im, const struct sm_module *m)
{
    struct sm_user *u = j->user;
    char node[JID_PART_MAX + 1];
    const char *domain;
    if (sm_im_split(u->bare, node, sizeof node, &domain) < 0)
        return SB_ERROR;
    const char *params[2] = {domain, node};
    im->failed = 0;
    im->job = j;
    im->mod = m;
    im->wait = 2;
    if (sm_pg_read(j->core, IM_LOAD_SQL, 2, params, im_on_sql, im) != SB_OK) {
        im->job = NULL;
        im->wait = 0;
        return SB_ERROR;
    }
    if (SM_RCMD(j->core, im_on_redis, im, "HGETALL im:{%s}", u->bare) != SB_OK)
        im->wait--;
    return SB_AGAIN;
}

/* ---- eager load at a session's start ------------------------------------------------ */

/* The account query of acct.c with the IM rows joined (same kinds as
 * IM_LOAD_SQL; its 'u' row serves both). $1 domain, $2 node, $3 bare JID. */
const char SM_IM_ACCT_SQL[] =
    "SELECT 'u', '', '', '', '', '' FROM users WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'b', item, '', '', '', '' FROM blocklist"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'r', username || '@' || domain, item, '', '', '' FROM blocklist"
    " WHERE item_bare = $3"
    " UNION ALL SELECT 'i', contact, coalesce(name, ''), subscription, coalesce(ask, ''),"
    " array_to_string(groups, chr(31)) FROM roster"
    " WHERE domain = $1 AND username = $2 AND NOT removed"
    " UNION ALL SELECT 'p', contact, stanza, '', '', '' FROM roster_pending"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'v', version::text, '', '', '', '' FROM roster_version"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'o', count(*)::text, '', '', '', '' FROM offline"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'n', id::text, jid, node, options, '' FROM push_registrations"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'm', default_mode, '', '', '', '' FROM archive_prefs"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'j', jid, CASE WHEN always THEN 'a' ELSE 'n' END, '', '', ''"
    " FROM archive_prefs_jid WHERE domain = $1 AND username = $2"
    SM_PEP_ACCT_SQL(", ''");

/* Both halves answered: keep the state, or drop it after a failed query
 * (the first sm_im_ready() then loads it, flags included, as usual). */
static void im_preload_step(struct sm_user *u)
{
    struct sm_im *im = u->im;
    if (--im->preload > 0)
        return;
    if (im->preload_failed) {
        u->im = NULL;
        im_free(im);
        return;
    }
    im->loaded = 1;
    log_debug("im_loaded", "jid=%s items=%d ver=%lld exists=%d eager=1", sb_log_q(u->bare),
              im->nroster, im->ver, im->exists);
}

/* Replies come after the session load's (same connection, in order), so
 * the flags of live resources are recognised. */
static void im_on_preload_redis(redisReply *r, void *arg)
{
    struct sm_user *u = arg;
    if (u->im && u->im->preload > 0) {
        im_redis_fields(u->im, r);
        im_preload_step(u);
    }
    sm_user_loaded(u, 1);       /* flags are a convenience (see im_on_redis) */
}

void sm_im_preload(struct sm_user *u)
{
    char node[JID_PART_MAX + 1];
    const char *domain;
    if (u->im || sm_im_split(u->bare, node, sizeof node, &domain) < 0)
        return;
    struct sm_im *im = calloc(1, sizeof *im);
    if (!im)
        return;
    im->user = u;
    u->im = im;
    u->load_wait++;
    if (SM_RCMD(u->core, im_on_preload_redis, u, "HGETALL im:{%s}", u->bare) != SB_OK) {
        u->load_wait--;
        u->im = NULL;
        im_free(im);
        return;
    }
    im->preload = 2;            /* the Redis reply and the account query's rows */
}

int sm_im_preloading(const struct sm_user *u)
{
    return u->im && u->im->preload > 0 && !u->im->loaded;
}

void sm_im_preload_rows(struct sm_user *u, PGresult *res)
{
    struct sm_im *im = u->im;
    if (!im || im->preload <= 0)
        return;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(res); i++)
            im_load_row(im, res, i);
    } else {
        im->preload_failed = 1;
    }
    im_preload_step(u);
}

sb_rc sm_im_ready(struct sm_job *j, const struct sm_module *m)
{
    struct sm_user *u = j->user;
    if (!u)
        return SB_ERROR;
    if (!u->im) {
        if (!(u->im = calloc(1, sizeof *u->im)))
            return SB_ERROR;
        u->im->user = u;
    }
    struct sm_im *im = u->im;
    if (im->loaded)
        return SB_OK;
    if (im->failed) {       /* the rerun after a failed load sees it once */
        im->failed = 0;
        return SB_ERROR;
    }
    if (im->retry_at > sb_now())
        return SB_ERROR;
    return im_load(j, im, m);
}

/* ---- writing ----------------------------------------------------------------------- */

/* The version row and the item row in one statement; tombstones keep their
 * row with removed = true and the version of the removal. */
static const char IM_WRITE_SQL[] =
    "WITH v AS (INSERT INTO roster_version (domain, username, version) VALUES ($1, $2, $8)"
    " ON CONFLICT (domain, username) DO UPDATE"
    " SET version = GREATEST(roster_version.version, EXCLUDED.version))"
    " INSERT INTO roster (domain, username, contact, name, subscription, ask, groups, version,"
    " removed) VALUES ($1, $2, $3, nullif($4, ''), $5, nullif($6, ''),"
    " coalesce(string_to_array(nullif($7, ''), chr(31)), '{}'), $8, $9)"
    " ON CONFLICT (domain, username, contact) DO UPDATE SET name = EXCLUDED.name,"
    " subscription = EXCLUDED.subscription, ask = EXCLUDED.ask, groups = EXCLUDED.groups,"
    " version = EXCLUDED.version, removed = EXCLUDED.removed";

static void im_on_write(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_error("roster_write_failed", "error=%s",
                  sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
}

sb_rc sm_im_write(struct sm_user *u, struct sm_im_row *row, pgev_cb cb, void *arg)
{
    char node[JID_PART_MAX + 1], ver[24];
    const char *domain;
    if (!u->im || sm_im_split(u->bare, node, sizeof node, &domain) < 0)
        return SB_ERROR;
    row->ver = u->im->ver + 1;
    snprintf(ver, sizeof ver, "%lld", row->ver);
    int st = row->removed ? 0 : row->state;
    const char *params[9] = {
        domain, node, row->jid, row->name ? row->name : "", sm_sub_name(st),
        (st & SM_SUB_PEND_OUT) ? "subscribe" : "", row->groups ? row->groups : "", ver,
        row->removed ? "t" : "f",
    };
    if (sm_pg_query(u->core, IM_WRITE_SQL, 9, params, cb ? cb : im_on_write, arg) != SB_OK)
        return SB_ERROR;
    u->im->ver = row->ver;
    return SB_OK;
}

void sm_im_commit(struct sm_user *u, struct sm_im_item *it)
{
    struct sm_im_row row = {it->jid, it->name, it->groups, it->state, 0, 0};
    if (sm_im_write(u, &row, NULL, NULL) != SB_OK) {
        log_error("roster_write_failed", "jid=%s contact=%s error=queue", sb_log_q(u->bare),
                  sb_log_q(it->jid));
        return;
    }
    struct sb_buf b = SB_BUF_INIT;
    sm_im_item_xml(&b, it->jid, it->name, it->groups, it->state, 0);
    if (b.data)
        sm_im_push(u, b.data, b.len, row.ver);
    sb_buf_free(&b);
}

void sm_im_write_pending(struct sm_user *u, const struct sm_im_item *it)
{
    char node[JID_PART_MAX + 1];
    const char *domain;
    if (sm_im_split(u->bare, node, sizeof node, &domain) < 0)
        return;
    const char *params[4] = {domain, node, it->jid, it->pend ? it->pend : ""};
    sb_rc rc;
    if (it->state & SM_SUB_PEND_IN)
        rc = sm_pg_query(u->core,
                         "INSERT INTO roster_pending (domain, username, contact, stanza)"
                         " VALUES ($1, $2, $3, $4) ON CONFLICT (domain, username, contact)"
                         " DO UPDATE SET stanza = EXCLUDED.stanza",
                         4, params, im_on_write, NULL);
    else
        rc = sm_pg_query(u->core,
                         "DELETE FROM roster_pending WHERE domain = $1 AND username = $2"
                         " AND contact = $3", 3, params, im_on_write, NULL);
    if (rc != SB_OK)
        log_error("pending_write_failed", "jid=%s contact=%s", sb_log_q(u->bare),
                  sb_log_q(it->jid));
}

/* ---- roster XML and pushes ------------------------------------------------------------ */

static void add_attr(struct sb_buf *b, const char *name, const char *v)
{
    sb_buf_printf(b, " %s='", name);
    xml_escape_attr(b, v, strlen(v));
    sb_buf_adds(b, "'");
}

void sm_im_item_xml(struct sb_buf *b, const char *jid, const char *name, const char *groups,
                    int state, int removed)
{
    sb_buf_adds(b, "<item");
    add_attr(b, "jid", jid);
    if (removed) {
        sb_buf_adds(b, " subscription='remove'/>");
        return;
    }
    if (name && *name)
        add_attr(b, "name", name);
    add_attr(b, "subscription", sm_sub_name(state));
    if (state & SM_SUB_PEND_OUT)
        sb_buf_adds(b, " ask='subscribe'");
    if (!groups || !*groups) {
        sb_buf_adds(b, "/>");
        return;
    }
    sb_buf_adds(b, ">");
    for (const char *p = groups; *p;) {
        size_t n = strcspn(p, "\x1f");
        sb_buf_adds(b, "<group>");
        xml_escape_text(b, p, n);
        sb_buf_adds(b, "</group>");
        p += n;
        if (*p)
            p++;
    }
    sb_buf_adds(b, "</item>");
}

void sm_im_push(struct sm_user *u, const char *item_xml, size_t len, long long ver)
{
    struct sb_buf b = SB_BUF_INIT;
    for (int i = 0; u->im && i < u->nsess; i++) {
        struct sm_session *s = &u->sess[i];
        struct sm_im_res *r = sm_im_res(u->im, s->resource, 0);
        if (!r || !r->roster_req)
            continue;
        char id[13];
        sb_random_id(id, 12);
        sb_buf_reset(&b);
        sb_buf_printf(&b, "<iq type='set' id='push%s' to='", id);
        xml_escape_attr(&b, u->bare, strlen(u->bare));
        sb_buf_adds(&b, "/");
        xml_escape_attr(&b, s->resource, strlen(s->resource));
        sb_buf_printf(&b, "'><query xmlns='" SM_NS_ROSTER "' ver='%lld'>", ver);
        sb_buf_add(&b, item_xml, len);
        sb_buf_adds(&b, "</query></iq>");
        if (b.data)
            sm_deliver_raw(u->core, s, "", b.data, b.len);
    }
    sb_buf_free(&b);
}

/* ---- resources ------------------------------------------------------------------------ */

struct sm_im_res *sm_im_res(struct sm_im *im, const char *resource, int create)
{
    for (int i = 0; i < im->nres; i++)
        if (!strcmp(im->res[i].resource, resource))
            return &im->res[i];
    if (!create)
        return NULL;
    if (im->nres == im->capres) {
        int cap = im->capres ? im->capres * 2 : 2;
        struct sm_im_res *n = realloc(im->res, (size_t)cap * sizeof *n);
        if (!n)
            return NULL;
        im->res = n;
        im->capres = cap;
    }
    struct sm_im_res *r = &im->res[im->nres];
    memset(r, 0, sizeof *r);
    if (!(r->resource = strdup(resource)))
        return NULL;
    im->nres++;
    return r;
}

static void im_on_flag(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("im_flag_store_failed", "detail=%s",
                 sb_log_q(r && r->str ? r->str : "redis unavailable"));
}

void sm_im_res_forget(struct sm_user *u, const char *resource)
{
    struct sm_im_res *r = u->im ? sm_im_res(u->im, resource, 0) : NULL;
    /* Also when nothing is cached: the state may never have been loaded. */
    SM_RCMD(u->core, im_on_flag, NULL, "HDEL im:{%s} rq:%s dp:%s", u->bare, resource, resource);
    if (!r)
        return;
    free(r->resource);
    free(r->directed);
    *r = u->im->res[--u->im->nres];
}

void sm_im_set_roster_req(struct sm_user *u, const char *resource)
{
    struct sm_im_res *r = u->im ? sm_im_res(u->im, resource, 1) : NULL;
    if (!r || r->roster_req)
        return;
    r->roster_req = 1;
    SM_RCMD(u->core, im_on_flag, NULL, "HSET im:{%s} rq:%s 1", u->bare, resource);
}

/* Is jid one line of the "\n"-joined list? Returns its start or NULL. */
static char *directed_find(char *list, const char *jid)
{
    size_t n = strlen(jid);
    for (char *p = list; p && *p;) {
        size_t len = strcspn(p, "\n");
        if (len == n && !strncmp(p, jid, n))
            return p;
        p += len;
        if (*p)
            p++;
    }
    return NULL;
}

static void directed_store(struct sm_user *u, const char *resource, const char *list)
{
    if (list && *list)
        SM_RCMD(u->core, im_on_flag, NULL, "HSET im:{%s} dp:%s %s", u->bare, resource, list);
    else
        SM_RCMD(u->core, im_on_flag, NULL, "HDEL im:{%s} dp:%s", u->bare, resource);
}

void sm_im_directed_add(struct sm_user *u, const char *resource, const char *jid)
{
    struct sm_im_res *r = u->im ? sm_im_res(u->im, resource, 1) : NULL;
    if (!r || directed_find(r->directed, jid))
        return;
    size_t old = r->directed ? strlen(r->directed) : 0;
    char *n = realloc(r->directed, old + strlen(jid) + 2);
    if (!n)
        return;
    if (old)
        n[old++] = '\n';
    strcpy(n + old, jid);
    r->directed = n;
    directed_store(u, resource, n);
}

void sm_im_directed_del(struct sm_user *u, const char *resource, const char *jid)
{
    struct sm_im_res *r = u->im ? sm_im_res(u->im, resource, 0) : NULL;
    char *p = r ? directed_find(r->directed, jid) : NULL;
    if (!p)
        return;
    char *end = p + strlen(jid);
    if (*end == '\n')
        end++;
    else if (p > r->directed)
        p--;                    /* last line: drop the newline before it */
    memmove(p, end, strlen(end) + 1);
    directed_store(u, resource, r->directed);
}
