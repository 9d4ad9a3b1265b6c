/* room.c — `sbctl room`: the MUC rooms of sb-muc (muc/README.md). list and
 * info read the stores the instances share (muc_rooms, muc_affiliations,
 * the room archive in PostgreSQL; occupants in Redis `muc:{room}`), so
 * they work with no sb-muc alive; destroy asks the instance holding the
 * room (ADMIN op=room-destroy routed by the room's JID) so its occupants
 * hear it, as with the owner's <destroy/>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "sbctl.h"

/* ROOM@SERVICE from the command line, bare; 0 ok, else after a message. */
static int room_arg(const char *arg, char bare[JID_BARE_MAX + 1], struct jid *j)
{
    if (!arg || jid_parse(j, arg) != SB_OK || !j->node[0] || j->resource[0]) {
        sbctl_err("'%s' is not a room address (ROOM@SERVICE)", arg ? arg : "");
        return -1;
    }
    jid_bare(j, bare);
    return 0;
}

static long room_occupants(redisContext *rc, const char *room)
{
    if (!rc)
        return -1;
    redisReply *r = sbctl_redis_cmd(rc, "HLEN muc:{%s}", room);
    long n = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : -1;
    if (r)
        freeReplyObject(r);
    return n;
}

static int room_list(int argc, char **argv)
{
    if (argc > 1 || (argc == 1 && argv[0][0] == '-'))
        return SBCTL_USAGE;
    const char *domain = argc ? argv[0] : NULL;
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    /* DOMAIN: its service (sub.DOMAIN, whatever [muc] subdomain is), or the
     * service itself. */
    const char *p[1] = {domain};
    PGresult *r = PQexecParams(c, domain
        ? "SELECT jid, name, persistent, public, members_only, archiving FROM muc_rooms"
          " WHERE split_part(jid, '@', 2) = $1 OR substr(split_part(jid, '@', 2),"
          " strpos(split_part(jid, '@', 2), '.') + 1) = $1 ORDER BY jid"
        : "SELECT jid, name, persistent, public, members_only, archiving FROM muc_rooms"
          " ORDER BY jid", domain ? 1 : 0, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        sbctl_err("cannot list rooms: %s", sbctl_pg_msg(c, r));
        PQclear(r);
        PQfinish(c);
        return SBCTL_FAIL;
    }
    char err[256];
    redisContext *rc = sbctl_redis_connect(err, sizeof err);   /* occupants, if reachable */
    if (sbctl_json)
        sj_arr(NULL);
    else
        printf("%-48s %-24s %-4s %-4s %-4s %-4s %s\n", "ROOM", "NAME", "PERS", "PUB", "MEMB",
               "ARCH", "OCCUPANTS");
    for (int i = 0; i < PQntuples(r); i++) {
        const char *jid = PQgetvalue(r, i, 0);
        long occ = room_occupants(rc, jid);
        int flags[4];
        for (int k = 0; k < 4; k++)
            flags[k] = PQgetvalue(r, i, 2 + k)[0] == 't';
        if (sbctl_json) {
            sj_obj(NULL);
            sj_str("jid", jid);
            sj_str("name", PQgetvalue(r, i, 1));
            sj_bool("persistent", flags[0]);
            sj_bool("public", flags[1]);
            sj_bool("members_only", flags[2]);
            sj_bool("archiving", flags[3]);
            if (occ >= 0)
                sj_int("occupants", occ);
            else
                sj_null("occupants");
            sj_end_obj();
        } else {
            char o[24];
            snprintf(o, sizeof o, occ >= 0 ? "%ld" : "?", occ);
            printf("%-48s %-24s %-4s %-4s %-4s %-4s %s\n", jid, PQgetvalue(r, i, 1),
                   flags[0] ? "yes" : "no", flags[1] ? "yes" : "no", flags[2] ? "yes" : "no",
                   flags[3] ? "yes" : "no", o);
        }
    }
    if (sbctl_json)
        sj_end_arr();
    else if (!PQntuples(r))
        printf("(no rooms)\n");
    if (!rc)
        sbctl_err("occupants unknown: %s", err);
    else
        redisFree(rc);
    PQclear(r);
    PQfinish(c);
    return SBCTL_OK;
}

static void info_occupants(redisContext *rc, const char *room)
{
    redisReply *r = rc ? sbctl_redis_cmd(rc, "HGETALL muc:{%s}", room) : NULL;
    if (sbctl_json)
        sj_arr("occupants");
    else
        printf("occupants:\n");
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const char *field = r->element[i]->str, *v = r->element[i + 1]->str;
        const char *fnl = strchr(field, '\n'), *nl1 = strchr(v, '\n');
        if (!nl1)
            continue;
        static const char *const roles[] = {"none", "visitor", "participant", "moderator"};
        int role = atoi(nl1 + 1);
        const char *rname = role >= 0 && role <= 3 ? roles[role] : "?";
        int nlen = fnl ? (int)(fnl - field) : (int)strlen(field);
        char nick[1024];
        snprintf(nick, sizeof nick, "%.*s", nlen, field);
        char jid[JID_FULL_MAX + 1];
        snprintf(jid, sizeof jid, "%.*s", (int)(nl1 - v), v);
        if (sbctl_json) {
            sj_obj(NULL);
            sj_str("nick", nick);
            sj_str("jid", jid);
            sj_str("role", rname);
            sj_end_obj();
        } else {
            printf("  %-24s %-12s %s\n", nick, rname, jid);
        }
    }
    if (sbctl_json)
        sj_end_arr();
    if (r)
        freeReplyObject(r);
}

static int room_info(int argc, char **argv)
{
    char bare[JID_BARE_MAX + 1];
    struct jid j;
    if (argc != 1)
        return SBCTL_USAGE;
    if (room_arg(argv[0], bare, &j) < 0)
        return SBCTL_FAIL;
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    const char *p[3] = {bare, j.domain, j.node};
    PGresult *r = PQexecParams(c, "SELECT name, description, persistent, public, members_only,"
                               " moderated, whois_anyone, password <> '', max_users, archiving,"
                               " subject, created_at FROM muc_rooms WHERE jid = $1",
                               1, NULL, p, NULL, NULL, 0);
    PGresult *a = PQexecParams(c, "SELECT jid, affiliation, nick FROM muc_affiliations"
                               " WHERE room = $1 ORDER BY affiliation, jid",
                               1, NULL, p, NULL, NULL, 0);
    PGresult *n = PQexecParams(c, "SELECT count(*) FROM archive WHERE domain = $1 AND"
                               " username = $2", 2, NULL, p + 1, NULL, NULL, 0);
    int rc = SBCTL_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQresultStatus(a) != PGRES_TUPLES_OK ||
        PQresultStatus(n) != PGRES_TUPLES_OK) {
        sbctl_err("cannot read the room: %s", sbctl_pg_msg(c, PQresultStatus(r) != PGRES_TUPLES_OK
                                                                   ? r : PQresultStatus(a) !=
                                                                   PGRES_TUPLES_OK ? a : n));
        rc = SBCTL_FAIL;
    } else if (PQntuples(r) != 1) {
        sbctl_err("no room %s", bare);
        rc = SBCTL_FAIL;
    } else {
        static const char *const keys[] = {"name", "description", "persistent", "public",
                                           "members_only", "moderated", "whois_anyone",
                                           "password_protected", "max_users", "archiving",
                                           "subject", "created"};
        char err[256];
        redisContext *rd = sbctl_redis_connect(err, sizeof err);
        if (sbctl_json) {
            sj_obj(NULL);
            sj_str("jid", bare);
        } else {
            printf("room %s\n", bare);
        }
        for (int k = 0; k < 12; k++) {
            const char *v = PQgetisnull(r, 0, k) ? NULL : PQgetvalue(r, 0, k);
            int boolean = k >= 2 && k <= 9 && k != 8;
            if (sbctl_json && boolean)
                sj_bool(keys[k], v && v[0] == 't');
            else if (sbctl_json && k == 8)
                sj_int(keys[k], atoll(v));
            else if (sbctl_json)
                sj_str(keys[k], v);
            else
                printf("  %-20s %s\n", keys[k], boolean ? (v && v[0] == 't' ? "yes" : "no")
                                                        : v ? v : "-");
        }
        long long archived = atoll(PQgetvalue(n, 0, 0));
        if (sbctl_json) {
            sj_int("archived_messages", archived);
            sj_arr("affiliations");
        } else {
            printf("  %-20s %lld\naffiliations:\n", "archived_messages", archived);
        }
        for (int i = 0; i < PQntuples(a); i++) {
            const char *nick = PQgetisnull(a, i, 2) ? NULL : PQgetvalue(a, i, 2);
            if (sbctl_json) {
                sj_obj(NULL);
                sj_str("jid", PQgetvalue(a, i, 0));
                sj_str("affiliation", PQgetvalue(a, i, 1));
                sj_str("nick", nick);
                sj_end_obj();
            } else {
                printf("  %-40s %-8s %s\n", PQgetvalue(a, i, 0), PQgetvalue(a, i, 1),
                       nick ? nick : "");
            }
        }
        if (sbctl_json)
            sj_end_arr();
        info_occupants(rd, bare);
        if (sbctl_json)
            sj_end_obj();
        if (!rd)
            sbctl_err("occupants unknown: %s", err);
        else
            redisFree(rd);
    }
    PQclear(r);
    PQclear(a);
    PQclear(n);
    PQfinish(c);
    return rc;
}

static int room_destroy(int argc, char **argv)
{
    const char *room = NULL, *reason = "";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--reason") && i + 1 < argc)
            reason = argv[++i];
        else if (argv[i][0] != '-' && !room)
            room = argv[i];
        else
            return SBCTL_USAGE;
    }
    char bare[JID_BARE_MAX + 1], ans[256];
    struct jid j;
    if (!room)
        return SBCTL_USAGE;
    if (room_arg(room, bare, &j) < 0)
        return SBCTL_FAIL;
    int a = sbctl_bus_ask_jid(bare, "room-destroy", reason, ans, sizeof ans);
    if (a != 1) {
        sbctl_err("%s: no sb-muc answered (is one running?)", bare);
        return SBCTL_FAIL;
    }
    int done = !strncmp(ans, "destroyed=1", 11);
    const char *occ = strstr(ans, "occupants=");
    if (sbctl_json) {
        sj_obj(NULL);
        sj_str("jid", bare);
        sj_bool("destroyed", done);
        if (occ)
            sj_int("occupants", atoll(occ + 10));
        sj_end_obj();
    } else if (done) {
        printf("room %s destroyed (%s)\n", bare, occ ? occ : "occupants=0");
    }
    if (!done)
        sbctl_err("no room %s", bare);
    return done ? SBCTL_OK : SBCTL_FAIL;
}

int sbctl_cmd_room(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "list"))
        return room_list(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "info"))
        return room_info(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "destroy"))
        return room_destroy(argc - 1, argv + 1);
    return SBCTL_USAGE;
}
