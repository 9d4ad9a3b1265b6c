/* store.c — what survives an instance: a room's configuration, subject and
 * affiliations (with reserved nicks) in PostgreSQL (007_muc.sql,
 * 011_muc_room.sql: muc_rooms, muc_affiliations), its occupants in Redis
 * (`muc:{room}` hash, "nick\nreal-jid" → "real-jid\nrole\n
 * presence-children", one field per session) and its recent history
 * (`muc:{room}:h` list of the last history_max messages, oldest first,
 * each "at hlen\n" + head + children). A room is loaded when its first
 * stanza arrives here (four answers: the row, the affiliations, the
 * occupants, the history; its stanzas wait meanwhile), so the instance a
 * room moves to carries on with the same occupants and history. Writes
 * happen on joins, leaves, role, subject and configuration changes; the
 * history goes in one RPUSH+LTRIM per room every [muc] history_flush_ms
 * (never a round trip per groupchat message). */
#include "muc.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct sb_buf store_buf;

static struct muc_room *store_room_of(const char *jid)
{
    struct muc_room *r;
    HASH_FIND_STR(muc.rooms, jid, r);
    return r && r->loading ? r : NULL;
}

static void store_one_done(struct muc_room *r)
{
    if (--r->loading == 0)
        muc_room_loaded(r);
}

static int store_bool(PGresult *res, int col)
{
    const char *v = PQgetvalue(res, 0, col);
    return v && v[0] == 't';
}

static void store_on_room(PGresult *res, void *arg)
{
    struct muc_room *r = store_room_of(arg);
    free(arg);
    if (!r)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        r->load_failed = 1;
    } else if (PQntuples(res) == 1) {
        struct muc_cfg *c = &r->cfg;
        r->exists = 1;
        muc_set_str(&c->name, PQgetvalue(res, 0, 0));
        muc_set_str(&c->desc, PQgetvalue(res, 0, 1));
        muc_set_str(&c->password, PQgetvalue(res, 0, 2));
        c->persistent = store_bool(res, 3);
        c->public_room = store_bool(res, 4);
        c->members_only = store_bool(res, 5);
        c->moderated = store_bool(res, 6);
        c->whois_anyone = store_bool(res, 7);
        c->change_subject = store_bool(res, 8);
        c->allow_invites = store_bool(res, 9);
        c->max_users = atoi(PQgetvalue(res, 0, 10));
        if (!PQgetisnull(res, 0, 11))
            muc_set_str(&r->subject, PQgetvalue(res, 0, 11));
        if (!PQgetisnull(res, 0, 12))
            muc_set_str(&r->subject_nick, PQgetvalue(res, 0, 12));
        c->archiving = store_bool(res, 13);
    }
    store_one_done(r);
}

static void store_on_affs(PGresult *res, void *arg)
{
    struct muc_room *r = store_room_of(arg);
    free(arg);
    if (!r)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        r->load_failed = 1;
    } else {
        for (int i = 0; i < PQntuples(res); i++) {
            int aff = muc_aff_parse(PQgetvalue(res, i, 1));
            if (aff < 0 || r->naff >= 100000)
                continue;
            if (r->naff == r->aff_cap) {
                int cap = r->aff_cap ? r->aff_cap * 2 : 8;
                struct muc_affil *v = realloc(r->aff, (size_t)cap * sizeof *v);
                if (!v)
                    break;
                r->aff = v;
                r->aff_cap = cap;
            }
            struct muc_affil *a = &r->aff[r->naff];
            a->jid = strdup(PQgetvalue(res, i, 0));
            a->reason = strdup(PQgetvalue(res, i, 2));
            a->aff = aff;
            a->nick = PQgetisnull(res, i, 3) ? NULL : strdup(PQgetvalue(res, i, 3));
            if (a->jid && a->reason)
                r->naff++;
            else {
                free(a->jid);
                free(a->reason);
                free(a->nick);
            }
        }
    }
    store_one_done(r);
}

static void store_on_occs(redisReply *rep, void *arg)
{
    struct muc_room *r = store_room_of(arg);
    free(arg);
    if (!r)
        return;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        /* Without Redis the room starts empty: occupants find out by
         * self-ping (XEP-0410) and join again. */
        log_warn("occupants_unavailable", "room=%s", sb_log_q(r->jid));
    } else {
        for (size_t i = 0; i + 1 < rep->elements; i += 2) {
            const char *field = rep->element[i]->str, *v = rep->element[i + 1]->str;
            const char *nl1 = v ? strchr(v, '\n') : NULL, *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
            if (!field || !nl2)
                continue;
            const char *fnl = strchr(field, '\n');     /* "nick\njid" (a bare "nick": older) */
            char *nick = fnl ? strndup(field, (size_t)(fnl - field)) : strdup(field);
            char *jid = strndup(v, (size_t)(nl1 - v));
            if (nick && jid && !muc_occ_by_jid(r, jid))
                muc_occ_restore(r, nick, jid, atoi(nl1 + 1), nl2 + 1);
            free(jid);
            free(nick);
        }
        if (r->nocc)
            log_info("room_restored", "room=%s occupants=%d", sb_log_q(r->jid), r->nocc);
    }
    store_one_done(r);
}

static void store_on_hist(redisReply *rep, void *arg)
{
    struct muc_room *r = store_room_of(arg);
    free(arg);
    if (!r)
        return;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        log_warn("history_unavailable", "room=%s", sb_log_q(r->jid));
    } else {
        for (size_t i = 0; i < rep->elements; i++) {
            const char *v = rep->element[i]->str, *nl = v ? strchr(v, '\n') : NULL;
            double at;
            size_t hlen;
            if (!nl || sscanf(v, "%lf %zu", &at, &hlen) != 2 ||
                hlen > rep->element[i]->len - (size_t)(nl + 1 - v))
                continue;
            muc_hist_restore(r, at, nl + 1, hlen, nl + 1 + hlen);
        }
    }
    store_one_done(r);
}

void muc_store_load(struct muc_room *r)
{
    const char *p[1] = {r->jid};
    r->loading = 4;
    char *a1 = strdup(r->jid), *a2 = strdup(r->jid), *a3 = strdup(r->jid), *a4 = strdup(r->jid);
    if (!a1 || pgev_query(muc.pg, "SELECT name, description, password, persistent, public, "
                          "members_only, moderated, whois_anyone, change_subject, allow_invites, "
                          "max_users, subject, subject_nick, archiving FROM muc_rooms "
                          "WHERE jid = $1",
                          1, p, store_on_room, a1) != SB_OK) {
        free(a1);
        r->load_failed = 1;
        r->loading--;
    }
    if (!a2 || pgev_query(muc.pg, "SELECT jid, affiliation, reason, nick FROM muc_affiliations "
                          "WHERE room = $1", 1, p, store_on_affs, a2) != SB_OK) {
        free(a2);
        r->load_failed = 1;
        r->loading--;
    }
    if (!a3 || rdev_cmd(muc.rd, store_on_occs, a3, "HGETALL muc:{%s}", r->jid) != SB_OK) {
        free(a3);
        r->loading--;
    }
    if (!a4 || rdev_cmd(muc.rd, store_on_hist, a4, "LRANGE muc:{%s}:h 0 -1", r->jid) != SB_OK) {
        free(a4);
        r->loading--;
    }
    if (r->loading == 0)
        muc_room_loaded(r);
}

/* ---- writes ------------------------------------------------------------------------ */

static void store_on_write(PGresult *res, void *arg)
{
    if (!res || (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK))
        log_warn("room_store_failed", "what=%s error=%s", (const char *)arg,
                 sb_log_q(res ? PQresultErrorMessage(res) : "no-database"));
}

static void store_on_redis(redisReply *rep, void *arg)
{
    if (!rep || rep->type == REDIS_REPLY_ERROR)
        log_warn("occupant_store_failed", "what=%s", (const char *)arg);
}

void muc_store_room(struct muc_room *r)
{
    const struct muc_cfg *c = &r->cfg;
    char max[16];
    snprintf(max, sizeof max, "%d", c->max_users);
    const char *p[15] = {r->jid, c->name, c->desc, c->password,
                         c->persistent ? "t" : "f", c->public_room ? "t" : "f",
                         c->members_only ? "t" : "f", c->moderated ? "t" : "f",
                         c->whois_anyone ? "t" : "f", c->change_subject ? "t" : "f",
                         c->allow_invites ? "t" : "f", max, r->subject, r->subject_nick,
                         c->archiving ? "t" : "f"};
    if (pgev_query(muc.pg,
                   "INSERT INTO muc_rooms (jid, name, description, password, persistent, public, "
                   "members_only, moderated, whois_anyone, change_subject, allow_invites, "
                   "max_users, subject, subject_nick, archiving) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,"
                   "$10,$11,$12,$13,$14,$15) ON CONFLICT (jid) DO UPDATE SET name = $2, description = $3, "
                   "password = $4, persistent = $5, public = $6, members_only = $7, "
                   "moderated = $8, whois_anyone = $9, change_subject = $10, allow_invites = $11, "
                   "max_users = $12, subject = $13, subject_nick = $14, archiving = $15",
                   15, p, store_on_write, "room") != SB_OK)
        log_warn("room_store_failed", "what=room room=%s error=queue", sb_log_q(r->jid));
}

void muc_store_aff(struct muc_room *r, const char *bare, int aff, const char *reason)
{
    const struct muc_affil *a = muc_affil_of(r, bare);
    const char *p[5] = {r->jid, bare, muc_aff_name(aff), reason ? reason : "",
                        a ? a->nick : NULL};
    sb_rc rc = aff == MUC_A_NONE
                   ? pgev_query(muc.pg, "DELETE FROM muc_affiliations WHERE room = $1 AND jid = $2",
                                2, p, store_on_write, "affiliation")
                   : pgev_query(muc.pg, "INSERT INTO muc_affiliations (room, jid, affiliation, "
                                "reason, nick) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room, jid) DO "
                                "UPDATE SET affiliation = $3, reason = $4, nick = $5",
                                5, p, store_on_write, "affiliation");
    if (rc != SB_OK)
        log_warn("room_store_failed", "what=affiliation room=%s error=queue", sb_log_q(r->jid));
}

void muc_store_delete(struct muc_room *r)
{
    const char *p[1] = {r->jid};
    pgev_query(muc.pg, "DELETE FROM muc_rooms WHERE jid = $1", 1, p, store_on_write, "delete");
    rdev_cmd(muc.rd, store_on_redis, "delete", "DEL muc:{%s} muc:{%s}:h", r->jid, r->jid);
    muc_mam_delete(r->jid);
}

void muc_store_occ(struct muc_room *r, const struct muc_occ *o)
{
    struct sb_buf *b = &store_buf;
    sb_buf_reset(b);
    sb_buf_printf(b, "%s\n%d\n%s", o->jid, o->role, o->pres);
    if (b->data)
        rdev_cmd(muc.rd, store_on_redis, "occupant", "HSET muc:{%s} %s\n%s %b", r->jid,
                 o->nick, o->jid, b->data, b->len);
}

void muc_store_occ_del(struct muc_room *r, const struct muc_occ *o)
{
    rdev_cmd(muc.rd, store_on_redis, "occupant", "HDEL muc:{%s} %s\n%s %s", r->jid, o->nick,
             o->jid, o->nick);
}

/* ---- history --------------------------------------------------------------------------- */

static long store_hist_inflight;
static int store_hist_failing;           /* one line per outage, not per room and flush */

static void store_on_hist_written(redisReply *rep, void *arg)
{
    store_hist_inflight--;
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        if (!store_hist_failing)
            log_warn("history_store_failed", "room=%s error=%s", sb_log_q(arg),
                     sb_log_q(rep ? rep->str : "no-connection"));
        store_hist_failing = 1;
    } else if (store_hist_failing) {
        store_hist_failing = 0;
        log_info("history_store_recovered", "room=%s", sb_log_q(arg));
    }
    free(arg);
    if (muc.stopping)
        muc_stop_check();
}

void muc_store_hist_dirty(struct muc_room *r)
{
    if (!r->dirty) {
        r->dirty = 1;
        r->dirty_next = muc.hist_dirty;
        muc.hist_dirty = r;
    }
    if (!ev_is_active(&muc.hist_flush))
        ev_timer_again(muc.loop, &muc.hist_flush);
}

void muc_store_hist_forget(struct muc_room *r)
{
    for (struct muc_room **p = &muc.hist_dirty; *p; p = &(*p)->dirty_next)
        if (*p == r) {
            *p = r->dirty_next;
            break;
        }
    r->dirty = 0;
    r->dirty_next = NULL;
}

/* The room's unsaved entries in one RPUSH, then LTRIM to history_max (two
 * commands on the pipelined connection; nothing waits for them). */
void muc_store_hist_flush(struct muc_room *r)
{
    int n = r->hist_unsaved < r->hist_n ? r->hist_unsaved : r->hist_n;
    muc_store_hist_forget(r);
    r->hist_unsaved = 0;
    if (n <= 0 || muc.history_max <= 0)
        return;
    const char **argv = calloc((size_t)n + 2, sizeof *argv);
    size_t *lens = calloc((size_t)n + 2, sizeof *lens);
    struct sb_buf *v = calloc((size_t)n, sizeof *v);
    struct sb_buf key = SB_BUF_INIT;
    sb_buf_printf(&key, "muc:{%s}:h", r->jid);
    if (argv && lens && v && key.data) {
        argv[0] = "RPUSH";
        lens[0] = 5;
        argv[1] = key.data;
        lens[1] = key.len;
        for (int i = 0; i < n; i++) {      /* oldest of the unsaved first */
            const struct muc_hist *m =
                &r->hist[(r->hist_head - n + i + 2 * muc.history_max) % muc.history_max];
            sb_buf_printf(&v[i], "%.3f %zu\n%s%s", m->at, strlen(m->head), m->head, m->inner);
            argv[2 + i] = v[i].data ? v[i].data : "";
            lens[2 + i] = v[i].len;
        }
        char *a1 = strdup(r->jid), *a2 = strdup(r->jid);
        if (a1 && rdev_cmdargv(muc.rd, store_on_hist_written, a1, n + 2, argv, lens) == SB_OK)
            store_hist_inflight++;
        else
            free(a1);
        if (a2 && rdev_cmd(muc.rd, store_on_hist_written, a2, "LTRIM muc:{%s}:h %d -1", r->jid,
                           -muc.history_max) == SB_OK)
            store_hist_inflight++;
        else
            free(a2);
    }
    for (int i = 0; v && i < n; i++)
        sb_buf_free(&v[i]);
    free(v);
    free(argv);
    free(lens);
    sb_buf_free(&key);
}

void muc_store_hist_flush_all(void)
{
    while (muc.hist_dirty)
        muc_store_hist_flush(muc.hist_dirty);
}

long muc_store_pending(void)
{
    return store_hist_inflight + (muc.hist_dirty != NULL);
}

/* ---- disco#items of the service: the public persistent rooms --------------------------- */

struct store_items {
    char *id, *from, *to;
};

static void store_on_items(PGresult *res, void *arg)
{
    struct store_items *it = arg;
    struct sb_buf b = SB_BUF_INIT;
    struct xml_doc *d = xml_doc_new("iq");
    if (d && it->id)
        xml_set_attr(d, d->root, "id", it->id);
    if (!d) {
    } else if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        muc_error(d->root, it->from, it->to, "wait", "internal-server-error", NULL);
    } else {
        sb_buf_adds(&b, "<query xmlns='http://jabber.org/protocol/disco#items'>");
        for (int i = 0; i < PQntuples(res); i++) {
            const char *jid = PQgetvalue(res, i, 0), *name = PQgetvalue(res, i, 1);
            sb_buf_adds(&b, "<item jid='");
            xml_escape_attr(&b, jid, strlen(jid));
            sb_buf_adds(&b, "' name='");
            xml_escape_attr(&b, *name ? name : jid, strlen(*name ? name : jid));
            sb_buf_adds(&b, "'/>");
        }
        sb_buf_adds(&b, "</query>");
        if (b.data)
            muc_iq_result(d->root, it->from, it->to, b.data, b.len);
    }
    xml_doc_free(d);
    sb_buf_free(&b);
    free(it->id);
    free(it->from);
    free(it->to);
    free(it);
}

void muc_store_public_rooms(const struct xml_node *st, const char *from, const char *to)
{
    struct store_items *it = calloc(1, sizeof *it);
    const char *id = xml_attr(st, "id");
    if (!it || !(it->from = strdup(from)) || !(it->to = strdup(to)) ||
        (id && !(it->id = strdup(id)))) {
        if (it) {
            free(it->from);
            free(it->to);
        }
        free(it);
        muc_error(st, from, to, "wait", "resource-constraint", NULL);
        return;
    }
    const char *p[1] = {to};
    if (pgev_query(muc.pg, "SELECT jid, name FROM muc_rooms WHERE public AND persistent AND "
                   "split_part(jid, '@', 2) = $1 ORDER BY jid LIMIT 500", 1, p, store_on_items,
                   it) != SB_OK)
        store_on_items(NULL, it);
}
