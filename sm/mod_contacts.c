/* mod_contacts.c — contacts already in place, and anonymous accounts that
 * leave nothing behind.
 *
 * `[domain.NAME] contacts = support@localhost, …` lists bare JIDs every new
 * account of that domain starts with, subscribed both ways: on the bind of
 * an account whose roster was never used (version 0; every anonymous
 * account), the items are added here (state both, written through and
 * pushed) and each contact's own sm is told with the control `contact-add`
 * (key: the contact, aux: the new account), which adds the account to the
 * contact's roster the same way — so presence flows at once: the support
 * desk sees the visitor come online and the visitor sees the desk.
 * A contact whose roster already holds `[sm] contacts_roster_max` items
 * takes no new account: it answers `contact-del` so the account's side
 * is undone too (logged `contacts_roster_full`).
 *
 * When the last session of an anonymous account ends (after mod_presence
 * has sent its unavailable presence), the contacts get `contact-del` (the
 * item is removed and the removal pushed) and every row the account left
 * (roster, pending requests, offline messages, vCard, private storage, last
 * activity, blocklist) and its im:{bare} hash are deleted: the visitor's
 * data disappears at logout. Order: after mod_presence, before mod_session. */
#include "sm.h"
#include "im.h"
#include "config.h"
#include "domains.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const struct sm_module sm_mod_contacts;

#define CONTACTS_MAX 16

/* Parsed `contacts` of the domains seen so far (config is read once). */
static struct contacts_dom {
    char *domain;
    char *list[CONTACTS_MAX];
    int n;
} contacts_doms[16];
static int contacts_ndoms;

static const struct contacts_dom *contacts_of(const char *domain)
{
    for (int i = 0; i < contacts_ndoms; i++)
        if (strcmp(contacts_doms[i].domain, domain) == 0)
            return &contacts_doms[i];
    if (contacts_ndoms == (int)SB_ARRAY_LEN(contacts_doms))
        return NULL;
    struct contacts_dom *d = &contacts_doms[contacts_ndoms];
    if (!(d->domain = strdup(domain)))
        return NULL;
    contacts_ndoms++;
    const char *v = sb_config_str_in("domain", domain, "contacts", "");
    while (*v && d->n < CONTACTS_MAX) {
        v += strspn(v, " ,\t");
        size_t k = strcspn(v, " ,\t");
        char raw[JID_BARE_MAX + 1];
        struct jid j;
        if (k && k < sizeof raw) {
            memcpy(raw, v, k);
            raw[k] = '\0';
            if (jid_parse(&j, raw) == SB_OK && *j.node && !*j.resource) {
                char bare[JID_BARE_MAX + 1];
                jid_bare(&j, bare);
                d->list[d->n] = strdup(bare);
                if (d->list[d->n])
                    d->n++;
            } else {
                log_warn("contacts_invalid", "domain=%s contact=%s", domain, sb_log_q(raw));
            }
        }
        v += k;
    }
    if (d->n)
        log_info("contacts", "domain=%s count=%d", domain, d->n);
    return d;
}


/* Make `jid` a contact subscribed both ways; 1 if it changed. */
static int contacts_put(struct sm_user *u, const char *jid)
{
    struct sm_im_item *it = sm_im_get(u->im, jid);
    int both = SM_SUB_TO | SM_SUB_FROM;
    if (!it || (it->in_roster && (it->state & both) == both))
        return 0;
    if (!it->in_roster)
        u->im->nroster++;
    it->in_roster = 1;
    it->state = (it->state & ~(SM_SUB_PEND_OUT | SM_SUB_PEND_IN)) | both;
    sm_im_commit(u, it);
    return 1;
}

/* Remove `jid` from the roster (tombstone, push). */
static void contacts_remove(struct sm_user *u, const char *jid)
{
    struct sm_im_item *it = sm_im_find(u->im, jid);
    if (!it || !it->in_roster)
        return;
    struct sm_im_row row = {it->jid, NULL, "", 0, 1, 0};
    if (sm_im_write(u, &row, NULL, NULL) == SB_OK) {
        struct sb_buf b = SB_BUF_INIT;
        sm_im_item_xml(&b, it->jid, NULL, "", 0, 1);
        if (b.data)
            sm_im_push(u, b.data, b.len, row.ver);
        sb_buf_free(&b);
    }
    sm_im_drop(u->im, it);
}

/* ---- a new account's first bind ---------------------------------------------- */

static sb_rc contacts_bind(struct sm_job *j)
{
    char node[JID_PART_MAX + 1];
    const char *domain;
    if (sm_im_split(j->user->bare, node, sizeof node, &domain) < 0)
        return SB_DECLINED;
    const struct contacts_dom *d = contacts_of(domain);
    if (!d || !d->n)
        return SB_DECLINED;
    sb_rc rc = sm_im_ready(j, &sm_mod_contacts);
    if (rc == SB_AGAIN)
        return SB_AGAIN;
    if (rc != SB_OK)
        return SB_DECLINED;                  /* no roster now: the bind goes on */
    struct sm_im *im = j->user->im;
    if (!sb_domains_anonymous(domain) && (im->ver > 0 || im->nroster > 0))
        return SB_DECLINED;                  /* not a new account */
    for (int i = 0; i < d->n; i++) {
        const char *at = strchr(d->list[i], '@');
        if (strcmp(d->list[i], j->user->bare) == 0 || !at || !sm_is_local_domain(j->core, at + 1))
            continue;                        /* contacts in place are local accounts */
        if (contacts_put(j->user, d->list[i]))
            sm_send_control(j->core, ENV_ROUTE_JID, d->list[i], "", "contact-add", j->user->bare);
    }
    log_info("contacts_added", "jid=%s count=%d", sb_log_q(j->user->bare), d->n);
    return SB_DECLINED;
}

/* ---- the contact's side --------------------------------------------------------- */

/* A desk every visitor is added to would otherwise grow without end
 * (visitors whose removal was lost stay): past contacts_roster_max items it
 * takes no new account. */
static int contacts_full(struct sm_user *u, const char *jid)
{
    long max = sm_im_limits()->contacts;
    const struct sm_im_item *it = sm_im_find(u->im, jid);
    if (max <= 0 || (it && it->in_roster) || u->im->nroster < max)
        return 0;
    log_warn("contacts_roster_full", "jid=%s contact=%s items=%ld max=%ld", sb_log_q(u->bare),
             sb_log_q(jid), (long)u->im->nroster, max);
    return 1;
}

static sb_rc contacts_peer(struct sm_job *j, int add)
{
    char bare[JID_BARE_MAX + 1];
    if (!j->user || sm_im_bare(j->aux, bare, sizeof bare) < 0 || !strchr(bare, '@'))
        return SB_OK;
    sb_rc rc = sm_im_ready(j, &sm_mod_contacts);
    if (rc == SB_AGAIN)
        return SB_AGAIN;
    if (rc != SB_OK) {
        log_warn("contacts_peer_failed", "jid=%s contact=%s op=%s", sb_log_q(j->user->bare),
                 sb_log_q(bare), add ? "add" : "del");
        return SB_OK;
    }
    if (add && contacts_full(j->user, bare)) {
        /* Undo the visitor's side too, so neither roster claims a
         * subscription the other lacks. */
        sm_send_control(j->core, ENV_ROUTE_JID, bare, "", "contact-del", j->user->bare);
        return SB_OK;
    }
    if (add)
        contacts_put(j->user, bare);
    else
        contacts_remove(j->user, bare);
    return SB_OK;
}

/* ---- an anonymous account's last session -------------------------------------------- */

#define CONTACTS_WIPE_SQL \
    "WITH r AS (DELETE FROM roster WHERE domain = $1 AND username = $2)," \
    " v AS (DELETE FROM roster_version WHERE domain = $1 AND username = $2)," \
    " p AS (DELETE FROM roster_pending WHERE domain = $1 AND username = $2)," \
    " o AS (DELETE FROM offline WHERE domain = $1 AND username = $2)," \
    " c AS (DELETE FROM vcards WHERE domain = $1 AND username = $2)," \
    " s AS (DELETE FROM private_storage WHERE domain = $1 AND username = $2)," \
    " l AS (DELETE FROM last_activity WHERE domain = $1 AND username = $2)," \
    " b AS (DELETE FROM blocklist WHERE domain = $1 AND username = $2)" \
    " SELECT 1"

static void contacts_wiped(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        log_error("anon_wipe_failed", "error=%s",
                  sb_log_q(res ? PQresultErrorMessage(res) : "no-connection"));
}

static void contacts_redis_done(redisReply *r, void *arg)
{
}

static sb_rc contacts_end(struct sm_job *j)
{
    char node[JID_PART_MAX + 1];
    const char *domain;
    if (sm_im_split(j->user->bare, node, sizeof node, &domain) < 0 ||
        !sb_domains_anonymous(domain))
        return SB_DECLINED;
    const char *slash = strchr(j->aux, '/');
    struct sm_session *s = slash ? sm_user_session(j->user, slash + 1) : NULL;
    if (!s || strcmp(s->sid, j->sid) != 0 || j->user->nsess != 1)
        return SB_DECLINED;                  /* not the last session */
    sb_rc rc = sm_im_ready(j, &sm_mod_contacts);
    if (rc == SB_AGAIN)
        return SB_AGAIN;
    if (rc == SB_OK) {
        struct sm_im_item *it, *tmp;
        HASH_ITER(hh, j->user->im->items, it, tmp) {
            if (it->in_roster && strchr(it->jid, '@'))
                sm_send_control(j->core, ENV_ROUTE_JID, it->jid, "", "contact-del",
                                j->user->bare);
            sm_im_drop(j->user->im, it);
        }
    }
    const char *params[2] = {domain, node};
    sm_pg_query(j->core, CONTACTS_WIPE_SQL, 2, params, contacts_wiped, NULL);
    SM_RCMD(j->core, contacts_redis_done, NULL, "DEL im:{%s}", j->user->bare);
    log_info("anon_wiped", "jid=%s", sb_log_q(j->user->bare));
    return SB_DECLINED;                      /* mod_session ends the session */
}

static sb_rc contacts_control(struct sm_job *j, const char *op)
{
    if (!j->user)
        return SB_DECLINED;
    if (strcmp(op, "bind") == 0)
        return contacts_bind(j);
    if (strcmp(op, "contact-add") == 0)
        return contacts_peer(j, 1);
    if (strcmp(op, "contact-del") == 0)
        return contacts_peer(j, 0);
    if (strcmp(op, "end") == 0 || strcmp(op, "session-gone") == 0)
        return contacts_end(j);
    return SB_DECLINED;
}

static void contacts_stop(struct sm_core *c)
{
    for (int i = 0; i < contacts_ndoms; i++) {
        free(contacts_doms[i].domain);
        for (int k = 0; k < contacts_doms[i].n; k++)
            free(contacts_doms[i].list[k]);
    }
    contacts_ndoms = 0;
}

const struct sm_module sm_mod_contacts = {
    .name = "contacts",
    .handle_control = contacts_control,
    .stop = contacts_stop,
};
