/* acct.c — per-account facts cached in the owning sm (see acct.h): one
 * PostgreSQL query when the user record loads, then pure memory lookups on
 * every stanza (the blocklist is checked for each one between two users). */
#include "acct.h"
#include "im.h"
#include "pep.h"
#include "jid.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

/* 'u': the account exists; 'b': one of its blocklist items; 'r': a local
 * user whose blocklist names this account (by bare or full JID); 'n': a
 * push registration (id, jid, node, options); 'm' its archiving default,
 * 'j' a JID of its always ('a') / never list (XEP-0313 preferences,
 * mod_mam.c); 'q' a PEP node, 'k' one of its items (pep.h). When a session starts,
 * SM_IM_ACCT_SQL (im.c) returns these and the IM rows in one statement;
 * acct_fill skips the IM kinds. */
static const char ACCT_SQL[] =
    "SELECT 'u', '', '', '', '' FROM users WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'b', item, '', '', '' FROM blocklist WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'r', username || '@' || domain, item, '', '' FROM blocklist"
    " WHERE item_bare = $3"
    " UNION ALL SELECT 'n', id::text, jid, node, options FROM push_registrations"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'm', default_mode, '', '', '' FROM archive_prefs"
    " WHERE domain = $1 AND username = $2"
    " UNION ALL SELECT 'j', jid, CASE WHEN always THEN 'a' ELSE 'n' END, '', ''"
    " FROM archive_prefs_jid WHERE domain = $1 AND username = $2"
    SM_PEP_ACCT_SQL("");

sb_rc sm_acct_split(const char *bare, char *node, size_t cap, const char **domain)
{
    const char *at = strchr(bare, '@');
    if (!at || at == bare || !at[1] || strchr(at, '/') || (size_t)(at - bare) >= cap)
        return SB_ERROR;
    memcpy(node, bare, (size_t)(at - bare));
    node[at - bare] = '\0';
    *domain = at + 1;
    return SB_OK;
}

/* ---- matching ------------------------------------------------------------------ */

/* The domain part of a JID: after '@' (if any), up to '/'. */
static const char *jid_domain_part(const char *jid, size_t *len)
{
    const char *slash = strchr(jid, '/');
    const char *at = strchr(jid, '@');
    if (at && slash && at > slash)
        at = NULL;                      /* '@' inside the resource */
    const char *d = at ? at + 1 : jid;
    *len = slash ? (size_t)(slash - d) : strlen(d);
    return d;
}

int sm_acct_jid_match(const char *item, const char *jid)
{
    if (!*item)
        return 0;
    if (strchr(item, '/'))
        return !strcmp(item, jid);
    if (strchr(item, '@')) {            /* bare: the same bare JID, any resource */
        size_t n = strlen(item);
        return !strncmp(item, jid, n) && (jid[n] == '\0' || jid[n] == '/');
    }
    size_t dlen;                        /* domain: anything at that domain */
    const char *d = jid_domain_part(jid, &dlen);
    return dlen == strlen(item) && !strncmp(d, item, dlen);
}

int sm_acct_blocks(const struct sm_acct *a, const char *jid)
{
    for (int i = 0; a && i < a->nblock; i++)
        if (sm_acct_jid_match(a->block[i], jid))
            return 1;
    return 0;
}

int sm_acct_blocked_by(const struct sm_acct *a, const char *owner, const char *to)
{
    for (int i = 0; a && i < a->nby; i++)
        if (!strcmp(a->by[i].owner, owner) && sm_acct_jid_match(a->by[i].item, to))
            return 1;
    return 0;
}

/* ---- cache edits ------------------------------------------------------------------ */

static sb_rc grow(void **arr, int *cap, int n, size_t elem)
{
    if (n < *cap)
        return SB_OK;
    int ncap = *cap ? *cap * 2 : 4;
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (!p)
        return SB_ERROR;
    *arr = p;
    *cap = ncap;
    return SB_OK;
}

sb_rc sm_acct_block_add(struct sm_acct *a, const char *item)
{
    for (int i = 0; i < a->nblock; i++)
        if (!strcmp(a->block[i], item))
            return SB_OK;
    char *s = strdup(item);
    if (!s || grow((void **)&a->block, &a->capblock, a->nblock, sizeof *a->block) != SB_OK) {
        free(s);
        return SB_ERROR;
    }
    a->block[a->nblock++] = s;
    return SB_OK;
}

void sm_acct_block_del(struct sm_acct *a, const char *item)
{
    for (int i = 0; i < a->nblock; i++) {
        if (!strcmp(a->block[i], item)) {
            free(a->block[i]);
            a->block[i] = a->block[--a->nblock];
            return;
        }
    }
}

void sm_acct_block_clear(struct sm_acct *a)
{
    for (int i = 0; i < a->nblock; i++)
        free(a->block[i]);
    a->nblock = 0;
}

sb_rc sm_acct_by_add(struct sm_acct *a, const char *owner, const char *item)
{
    for (int i = 0; i < a->nby; i++)
        if (!strcmp(a->by[i].owner, owner) && !strcmp(a->by[i].item, item))
            return SB_OK;
    char *o = strdup(owner), *it = strdup(item);
    if (!o || !it || grow((void **)&a->by, &a->capby, a->nby, sizeof *a->by) != SB_OK) {
        free(o);
        free(it);
        return SB_ERROR;
    }
    a->by[a->nby++] = (struct sm_acct_by){o, it};
    return SB_OK;
}

void sm_acct_by_del(struct sm_acct *a, const char *owner, const char *item)
{
    for (int i = 0; i < a->nby; i++) {
        if (!strcmp(a->by[i].owner, owner) && !strcmp(a->by[i].item, item)) {
            free(a->by[i].owner);
            free(a->by[i].item);
            a->by[i] = a->by[--a->nby];
            return;
        }
    }
}

void sm_acct_set_last_status(struct sm_acct *a, const char *status)
{
    free(a->last_status);
    a->last_status = status && *status ? strdup(status) : NULL;
}

/* ---- push registrations (XEP-0357, mod_push) ---------------------------------- */

struct sm_push_reg *sm_acct_push_find(const struct sm_acct *a, const char *jid,
                                      const char *node)
{
    for (int i = 0; a && i < a->npush; i++)
        if (!strcmp(a->push[i].jid, jid) && !strcmp(a->push[i].node, node))
            return &a->push[i];
    return NULL;
}

sb_rc sm_acct_push_set(struct sm_acct *a, long long id, const char *jid, const char *node,
                       const char *options)
{
    struct sm_push_reg *r = sm_acct_push_find(a, jid, node);
    char *o = strdup(options ? options : "");
    if (!o)
        return SB_ERROR;
    if (r) {
        free(r->options);
        r->options = o;
        r->id = id;
        return SB_OK;
    }
    char *j = strdup(jid), *n = strdup(node);
    if (!j || !n || grow((void **)&a->push, &a->cappush, a->npush, sizeof *a->push) != SB_OK) {
        free(j);
        free(n);
        free(o);
        return SB_ERROR;
    }
    a->push[a->npush++] = (struct sm_push_reg){id, j, n, o};
    return SB_OK;
}

void sm_acct_push_del(struct sm_acct *a, const char *jid, const char *node)
{
    for (int i = 0; a && i < a->npush;) {
        struct sm_push_reg *r = &a->push[i];
        if (strcmp(r->jid, jid) || (node && strcmp(r->node, node))) {
            i++;
            continue;
        }
        free(r->jid);
        free(r->node);
        free(r->options);
        *r = a->push[--a->npush];
    }
}

/* ---- load / free ------------------------------------------------------------------ */

static void acct_destroy(struct sm_acct *a)
{
    if (!a)
        return;
    sm_acct_block_clear(a);
    free(a->block);
    for (int i = 0; i < a->nby; i++) {
        free(a->by[i].owner);
        free(a->by[i].item);
    }
    free(a->by);
    for (int i = 0; i < a->npush; i++) {
        free(a->push[i].jid);
        free(a->push[i].node);
        free(a->push[i].options);
    }
    free(a->push);
    free(a->last_status);
    mam_prefs_clear(&a->mam);
    sm_pep_free(a->pep);
    free(a);
}

void sm_acct_free(struct sm_user *u)
{
    acct_destroy(u->acct);
    u->acct = NULL;
}

static int acct_fill(struct sm_acct *a, PGresult *res)
{
    for (int i = 0; i < PQntuples(res); i++) {
        const char *kind = PQgetvalue(res, i, 0);
        sb_rc rc = SB_OK;
        if (kind[0] == 'u')
            a->exists = 1;
        else if (kind[0] == 'b')
            rc = sm_acct_block_add(a, PQgetvalue(res, i, 1));
        else if (kind[0] == 'r')
            rc = sm_acct_by_add(a, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
        else if (kind[0] == 'n')
            rc = sm_acct_push_set(a, strtoll(PQgetvalue(res, i, 1), NULL, 10),
                                  PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                                  PQgetvalue(res, i, 4));
        else if (kind[0] == 'm')
            a->mam.mode = mam_mode_parse(PQgetvalue(res, i, 1));
        else if (kind[0] == 'q' || kind[0] == 'k')
            rc = sm_pep_row(&a->pep, kind[0], PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                            PQgetvalue(res, i, 3), PQgetvalue(res, i, 4));
        else if (kind[0] == 'j')
            rc = mam_prefs_add(&a->mam, PQgetvalue(res, i, 2)[0] == 'a',
                                  PQgetvalue(res, i, 1));
        if (rc != SB_OK)
            return 0;
    }
    return 1;
}

static void acct_on_rows(PGresult *res, void *arg)
{
    struct sm_user *u = arg;
    sm_im_preload_rows(u, res);         /* SM_IM_ACCT_SQL: the IM rows too */
    int ok = res && PQresultStatus(res) == PGRES_TUPLES_OK && u->acct && acct_fill(u->acct, res);
    if (ok) {
        u->acct->loaded = 1;
    } else {
        log_warn("account_load_failed", "jid=%s error=%s", sb_log_q(u->bare),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
    }
    sm_user_loaded(u, ok);
}

/* The record is created for any `node@domain` key; only well-formed ones
 * are looked up (others can have no account). */
sb_rc sm_acct_load(struct sm_user *u)
{
    char node[ENV_STR_MAX + 1];
    const char *domain;
    if (!u->acct && !(u->acct = calloc(1, sizeof *u->acct)))
        return SB_ERROR;
    if (sm_acct_split(u->bare, node, sizeof node, &domain) != SB_OK) {
        sm_im_preload_rows(u, NULL);
        u->acct->loaded = 1;
        return SB_OK;
    }
    const char *params[3] = {domain, node, u->bare};
    const char *sql = sm_im_preloading(u) ? SM_IM_ACCT_SQL : ACCT_SQL;
    if (sm_pg_read(u->core, sql, 3, params, acct_on_rows, u) != SB_OK) {
        sm_im_preload_rows(u, NULL);
        return SB_ERROR;
    }
    return SB_AGAIN;
}

int sm_acct_user_exists(const struct sm_user *u)
{
    return u && ((u->acct && u->acct->exists) || u->nsess > 0);
}

sb_rc sm_acct_authorize(struct sm_job *j, const struct sm_module *m)
{
    char bare[ENV_STR_MAX + 1];
    if (!j->user || !*j->from || jid_bare_of(j->from, bare, sizeof bare) < 0)
        return SB_DECLINED;
    if (!strcmp(bare, j->user->bare))
        return SB_OK;
    sb_rc rc = sm_im_ready(j, m);
    if (rc != SB_OK)
        return rc;
    struct sm_im_item *it = sm_im_find(j->user->im, bare);
    return it && it->in_roster && (it->state & SM_SUB_FROM) ? SB_OK : SB_DECLINED;
}
