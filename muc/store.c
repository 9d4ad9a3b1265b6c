/* store.c — what survives an instance: a room's configuration, subject and
 * affiliations in PostgreSQL (007_muc.sql: muc_rooms, muc_affiliations),
 * its occupants in Redis (`muc:{room}` hash, nick → "real-jid\nrole\n
 * presence-children"). A room is loaded when its first stanza arrives here
 * (three answers: the row, the affiliations, the occupants; its stanzas
 * wait meanwhile), so the instance a room moves to carries on with the same
 * occupants. Writes happen on joins, leaves, role, subject and
 * configuration changes — never per groupchat message. */
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
            if (a->jid && a->reason)
                r->naff++;
            else {
                free(a->jid);
                free(a->reason);
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
            const char *nick = rep->element[i]->str, *v = rep->element[i + 1]->str;
            const char *nl1 = v ? strchr(v, '\n') : NULL, *nl2 = nl1 ? strchr(nl1 + 1, '\n') : NULL;
            if (!nick || !nl2 || muc_occ_by_nick(r, nick))
                continue;
            char *jid = strndup(v, (size_t)(nl1 - v));
            if (jid && !muc_occ_by_jid(r, jid))
                muc_occ_restore(r, nick, jid, atoi(nl1 + 1), nl2 + 1);
            free(jid);
        }
        if (r->nocc)
            log_info("room_restored", "room=%s occupants=%d", sb_log_q(r->jid), r->nocc);
    }
    store_one_done(r);
}

void muc_store_load(struct muc_room *r)
{
    const char *p[1] = {r->jid};
    r->loading = 3;
    char *a1 = strdup(r->jid), *a2 = strdup(r->jid), *a3 = strdup(r->jid);
    if (!a1 || pgev_query(muc.pg, "SELECT name, description, password, persistent, public, "
                          "members_only, moderated, whois_anyone, change_subject, allow_invites, "
                          "max_users, subject, subject_nick FROM muc_rooms WHERE jid = $1",
                          1, p, store_on_room, a1) != SB_OK) {
        free(a1);
        r->load_failed = 1;
        r->loading--;
    }
    if (!a2 || pgev_query(muc.pg, "SELECT jid, affiliation, reason FROM muc_affiliations "
                          "WHERE room = $1", 1, p, store_on_affs, a2) != SB_OK) {
        free(a2);
        r->load_failed = 1;
        r->loading--;
    }
    if (!a3 || rdev_cmd(muc.rd, store_on_occs, a3, "HGETALL muc:{%s}", r->jid) != SB_OK) {
        free(a3);
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
    const char *p[14] = {r->jid, c->name, c->desc, c->password,
                         c->persistent ? "t" : "f", c->public_room ? "t" : "f",
                         c->members_only ? "t" : "f", c->moderated ? "t" : "f",
                         c->whois_anyone ? "t" : "f", c->change_subject ? "t" : "f",
                         c->allow_invites ? "t" : "f", max, r->subject, r->subject_nick};
    if (pgev_query(muc.pg,
                   "INSERT INTO muc_rooms (jid, name, description, password, persistent, public, "
                   "members_only, moderated, whois_anyone, change_subject, allow_invites, "
                   "max_users, subject, subject_nick) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,"
                   "$11,$12,$13,$14) ON CONFLICT (jid) DO UPDATE SET name = $2, description = $3, "
                   "password = $4, persistent = $5, public = $6, members_only = $7, "
                   "moderated = $8, whois_anyone = $9, change_subject = $10, allow_invites = $11, "
                   "max_users = $12, subject = $13, subject_nick = $14",
                   14, p, store_on_write, "room") != SB_OK)
        log_warn("room_store_failed", "what=room room=%s error=queue", sb_log_q(r->jid));
}

void muc_store_aff(struct muc_room *r, const char *bare, int aff, const char *reason)
{
    const char *p[4] = {r->jid, bare, muc_aff_name(aff), reason ? reason : ""};
    sb_rc rc = aff == MUC_A_NONE
                   ? pgev_query(muc.pg, "DELETE FROM muc_affiliations WHERE room = $1 AND jid = $2",
                                2, p, store_on_write, "affiliation")
                   : pgev_query(muc.pg, "INSERT INTO muc_affiliations (room, jid, affiliation, "
                                "reason) VALUES ($1, $2, $3, $4) ON CONFLICT (room, jid) DO "
                                "UPDATE SET affiliation = $3, reason = $4",
                                4, p, store_on_write, "affiliation");
    if (rc != SB_OK)
        log_warn("room_store_failed", "what=affiliation room=%s error=queue", sb_log_q(r->jid));
}

void muc_store_delete(struct muc_room *r)
{
    const char *p[1] = {r->jid};
    pgev_query(muc.pg, "DELETE FROM muc_rooms WHERE jid = $1", 1, p, store_on_write, "delete");
    rdev_cmd(muc.rd, store_on_redis, "delete", "DEL muc:{%s}", r->jid);
}

void muc_store_occ(struct muc_room *r, const struct muc_occ *o)
{
    struct sb_buf *b = &store_buf;
    sb_buf_reset(b);
    sb_buf_printf(b, "%s\n%d\n%s", o->jid, o->role, o->pres);
    if (b->data)
        rdev_cmd(muc.rd, store_on_redis, "occupant", "HSET muc:{%s} %s %b", r->jid, o->nick,
                 b->data, b->len);
}

void muc_store_occ_del(struct muc_room *r, const char *nick)
{
    rdev_cmd(muc.rd, store_on_redis, "occupant", "HDEL muc:{%s} %s", r->jid, nick);
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
