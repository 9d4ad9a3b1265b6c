/* admin.c — the iqs on a room: disco#info/#items (XEP-0030, and the
 * reserved nick of node x-roomuser-item), the owner's configuration form
 * and room destruction (muc#owner, §10), affiliation and role changes and
 * lists (muc#admin: kick, ban, voice, §8–10), registration with the room
 * (jabber:iq:register, §7.10: a member with a reserved nick), the archive
 * (mam.c), pings to the room or to oneself (XEP-0410 self-ping), and other
 * iqs to room/nick forwarded to that occupant with the answer routed back
 * (§18 "IQ stanzas"; vCard to its bare JID). */
#include "muc.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_CONFIG "http://jabber.org/protocol/muc#roomconfig"

static struct sb_buf adm_buf;

/* ---- disco -------------------------------------------------------------------- */

static void adm_feature(struct sb_buf *b, const char *var)
{
    sb_buf_printf(b, "<feature var='%s'/>", var);
}

static void adm_disco_info(struct muc_room *r, const struct xml_node *st, const char *from)
{
    struct sb_buf *b = &adm_buf;
    const struct muc_cfg *c = &r->cfg;
    sb_buf_reset(b);
    sb_buf_adds(b, "<query xmlns='http://jabber.org/protocol/disco#info'>"
                   "<identity category='conference' type='text'");
    muc_attr(b, "name", *c->name ? c->name : r->jid);
    sb_buf_adds(b, "/>");
    adm_feature(b, NS_MUC);
    adm_feature(b, NS_OCCUPANT_ID);
    adm_feature(b, "urn:xmpp:ping");
    adm_feature(b, NS_REGISTER);
    adm_feature(b, "http://jabber.org/protocol/muc#request");
    adm_feature(b, "http://jabber.org/protocol/muc#self-ping-optimization");
    if (c->archiving) {
        adm_feature(b, NS_MAM);
        adm_feature(b, NS_SID);
    }
    adm_feature(b, c->persistent ? "muc_persistent" : "muc_temporary");
    adm_feature(b, c->public_room ? "muc_public" : "muc_hidden");
    adm_feature(b, c->members_only ? "muc_membersonly" : "muc_open");
    adm_feature(b, c->moderated ? "muc_moderated" : "muc_unmoderated");
    adm_feature(b, c->whois_anyone ? "muc_nonanonymous" : "muc_semianonymous");
    adm_feature(b, *c->password ? "muc_passwordprotected" : "muc_unsecured");
    sb_buf_adds(b, "<x xmlns='" NS_DATA "' type='result'><field var='FORM_TYPE' type='hidden'>"
                   "<value>http://jabber.org/protocol/muc#roominfo</value></field>"
                   "<field var='muc#roominfo_description'><value>");
    xml_escape_text(b, c->desc, strlen(c->desc));
    sb_buf_printf(b, "</value></field><field var='muc#roominfo_occupants'><value>%d</value>"
                     "</field></x></query>", r->nocc);
    if (b->data)
        muc_iq_result(st, from, r->jid, b->data, b->len);
}

/* ---- muc#owner: the configuration form ------------------------------------------ */

static void adm_field(struct sb_buf *b, const char *var, const char *type, const char *label,
                      const char *value)
{
    sb_buf_printf(b, "<field var='%s' type='%s'", var, type);
    muc_attr(b, "label", label);
    sb_buf_adds(b, "><value>");
    xml_escape_text(b, value, strlen(value));
    sb_buf_adds(b, "</value></field>");
}

static void adm_config_form(struct muc_room *r, const struct xml_node *st, const char *from)
{
    const struct muc_cfg *c = &r->cfg;
    char max[16];
    snprintf(max, sizeof max, "%d", c->max_users);
    struct sb_buf *b = &adm_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<query xmlns='" NS_MUC_OWNER "'><x xmlns='" NS_DATA "' type='form'>"
                   "<title>Room configuration</title>"
                   "<field var='FORM_TYPE' type='hidden'><value>" NS_CONFIG "</value></field>");
    adm_field(b, "muc#roomconfig_roomname", "text-single", "Name", c->name);
    adm_field(b, "muc#roomconfig_roomdesc", "text-single", "Description", c->desc);
    adm_field(b, "muc#roomconfig_persistentroom", "boolean", "Persistent", c->persistent ? "1" : "0");
    adm_field(b, "muc#roomconfig_publicroom", "boolean", "Listed", c->public_room ? "1" : "0");
    adm_field(b, "muc#roomconfig_membersonly", "boolean", "Members only", c->members_only ? "1" : "0");
    adm_field(b, "muc#roomconfig_moderatedroom", "boolean", "Moderated", c->moderated ? "1" : "0");
    adm_field(b, "muc#roomconfig_changesubject", "boolean", "Participants may change the subject",
              c->change_subject ? "1" : "0");
    adm_field(b, "muc#roomconfig_allowinvites", "boolean", "Participants may invite",
              c->allow_invites ? "1" : "0");
    adm_field(b, "muc#roomconfig_passwordprotectedroom", "boolean", "Password protected",
              *c->password ? "1" : "0");
    adm_field(b, "muc#roomconfig_roomsecret", "text-private", "Password", c->password);
    adm_field(b, "muc#roomconfig_maxusers", "text-single", "Maximum occupants (0: none)", max);
    adm_field(b, "muc#roomconfig_enablearchiving", "boolean", "Archive messages (XEP-0313)",
              c->archiving ? "1" : "0");
    sb_buf_printf(b, "<field var='muc#roomconfig_whois' type='list-single' label='Who sees real "
                     "JIDs'><value>%s</value><option><value>moderators</value></option>"
                     "<option><value>anyone</value></option></field></x></query>",
                  c->whois_anyone ? "anyone" : "moderators");
    if (b->data)
        muc_iq_result(st, from, r->jid, b->data, b->len);
}

static int adm_bool(const char *v, int *out)
{
    if (!strcmp(v, "1") || !strcmp(v, "true"))
        *out = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false"))
        *out = 0;
    else
        return -1;
    return 0;
}

/* Applies a submitted form to a copy; -1 (nothing changed) on a bad value. */
static int adm_config_apply(struct muc_room *r, const struct xml_node *x, struct muc_cfg *n)
{
    struct sb_buf v = SB_BUF_INIT;
    int bad = 0, pwprot = -1;
    for (const struct xml_node *f = xml_first_elem(x); f && !bad; f = xml_next_elem(f)) {
        const char *var = xml_attr(f, "var");
        const struct xml_node *val = xml_child(f, "value", NULL);
        if (strcmp(f->name, "field") || !var)
            continue;
        sb_buf_reset(&v);
        sb_buf_adds(&v, "");
        if (val)
            xml_text(val, &v);
        const char *s = v.data;
        if (!strcmp(var, "muc#roomconfig_roomname"))
            muc_set_str(&n->name, s);
        else if (!strcmp(var, "muc#roomconfig_roomdesc"))
            muc_set_str(&n->desc, s);
        else if (!strcmp(var, "muc#roomconfig_roomsecret"))
            muc_set_str(&n->password, s);
        else if (!strcmp(var, "muc#roomconfig_persistentroom"))
            bad = adm_bool(s, &n->persistent);
        else if (!strcmp(var, "muc#roomconfig_publicroom"))
            bad = adm_bool(s, &n->public_room);
        else if (!strcmp(var, "muc#roomconfig_membersonly"))
            bad = adm_bool(s, &n->members_only);
        else if (!strcmp(var, "muc#roomconfig_moderatedroom"))
            bad = adm_bool(s, &n->moderated);
        else if (!strcmp(var, "muc#roomconfig_changesubject"))
            bad = adm_bool(s, &n->change_subject);
        else if (!strcmp(var, "muc#roomconfig_allowinvites"))
            bad = adm_bool(s, &n->allow_invites);
        else if (!strcmp(var, "muc#roomconfig_enablearchiving") || !strcmp(var, "mam"))
            bad = adm_bool(s, &n->archiving);
        else if (!strcmp(var, "muc#roomconfig_passwordprotectedroom"))
            bad = adm_bool(s, &pwprot);
        else if (!strcmp(var, "muc#roomconfig_whois")) {
            if (!strcmp(s, "anyone"))
                n->whois_anyone = 1;
            else if (!strcmp(s, "moderators"))
                n->whois_anyone = 0;
            else
                bad = 1;
        } else if (!strcmp(var, "muc#roomconfig_maxusers")) {
            char *end;
            long m = strtol(s, &end, 10);
            if (!*s || !strcmp(s, "none"))
                m = 0, end = (char *)"";
            if (*end || m < 0 || m > muc.max_occupants)
                bad = 1;
            else
                n->max_users = (int)m;
        }
    }
    if (pwprot == 0)
        muc_set_str(&n->password, "");
    else if (pwprot == 1 && !*n->password)
        bad = 1;                      /* protected without a password */
    sb_buf_free(&v);
    return bad ? -1 : 0;
}

static void adm_owner_set(struct muc_room *r, const struct xml_node *st, const char *from,
                          const struct xml_node *q)
{
    const struct xml_node *x = xml_child(q, "x", NS_DATA);
    const struct xml_node *destroy = xml_child(q, "destroy", NULL);
    if (destroy) {
        const struct xml_node *why = xml_child(destroy, "reason", NULL);
        struct sb_buf reason = SB_BUF_INIT;
        if (why)
            xml_text(why, &reason);
        muc_iq_result(st, from, r->jid, NULL, 0);
        log_info("room_destroyed", "room=%s by=%s", sb_log_q(r->jid), sb_log_q(from));
        muc_room_destroy(r, xml_attr(destroy, "jid"), reason.data);
        sb_buf_free(&reason);
        return;
    }
    const char *type = x ? xml_attr(x, "type") : NULL;
    if (!type || (strcmp(type, "submit") && strcmp(type, "cancel"))) {
        muc_error(st, from, r->jid, "modify", "bad-request", NULL);
        return;
    }
    if (!strcmp(type, "cancel")) {
        muc_iq_result(st, from, r->jid, NULL, 0);
        if (r->locked) {                           /* §10.1.3: the room is not wanted */
            log_info("room_destroyed", "room=%s by=%s why=creation-cancelled", sb_log_q(r->jid),
                     sb_log_q(from));
            muc_room_destroy(r, NULL, NULL);
        }
        return;
    }
    struct muc_cfg n = r->cfg;
    n.name = strdup(r->cfg.name);
    n.desc = strdup(r->cfg.desc);
    n.password = strdup(r->cfg.password);
    if (!n.name || !n.desc || !n.password || adm_config_apply(r, x, &n) != 0) {
        muc_cfg_free(&n);
        muc_error(st, from, r->jid, "modify", "not-acceptable", "a field has a bad value");
        log_info("config_refused", "room=%s by=%s", sb_log_q(r->jid), sb_log_q(from));
        return;
    }
    int privacy = n.whois_anyone != r->cfg.whois_anyone;
    int logging = n.archiving != r->cfg.archiving;
    muc_cfg_free(&r->cfg);
    r->cfg = n;
    muc_store_room(r);
    muc_iq_result(st, from, r->jid, NULL, 0);
    int unlocked = r->locked;                      /* §10.1.2: any form (an empty one: */
    r->locked = 0;                                 /* an instant room) opens it */
    log_info("room_configured", "room=%s by=%s persistent=%d members_only=%d moderated=%d "
             "archiving=%d unlocked=%d", sb_log_q(r->jid), sb_log_q(from), n.persistent,
             n.members_only, n.moderated, n.archiving, unlocked);
    if (privacy || !unlocked)                      /* opening it is no change to tell */
        muc_room_notice(r, privacy ? (n.whois_anyone ? 172 : 173) : 104);
    if (logging)                                   /* §10.2.1: logging on 170, off 171 */
        muc_room_notice(r, n.archiving ? 170 : 171);
    if (r->cfg.members_only) {                     /* §9.3: non-members leave (321) */
        int code = 321;
        for (struct muc_occ *o = r->occ, *next; o; o = next) {
            next = o->next;
            if (muc_aff_of(r, o->bare) < MUC_A_MEMBER)
                muc_occ_remove(r, o, &code, 1, NULL);
        }
    }
}

void muc_room_destroy(struct muc_room *r, const char *alt, const char *reason)
{
    struct sb_buf extra = SB_BUF_INIT;
    sb_buf_adds(&extra, "<destroy");
    if (alt)
        muc_attr(&extra, "jid", alt);
    sb_buf_adds(&extra, ">");
    if (reason && *reason) {
        sb_buf_adds(&extra, "<reason>");
        xml_escape_text(&extra, reason, strlen(reason));
        sb_buf_adds(&extra, "</reason>");
    }
    sb_buf_adds(&extra, "</destroy>");
    for (struct muc_occ *o = r->occ; o; o = o->next) {   /* §10.9: each hears its end */
        muc_set_str(&o->pres, "");
        muc_occ_presence_one(r, o, o, "unavailable", extra.data);
    }
    sb_buf_free(&extra);
    muc_room_delete(r);
}

/* ---- muc#admin ------------------------------------------------------------------ */

static void adm_list(struct muc_room *r, const struct xml_node *st, const char *from,
                     const struct xml_node *item, int actor_aff, int actor_role)
{
    const char *a = xml_attr(item, "affiliation"), *ro = xml_attr(item, "role");
    int aff = muc_aff_parse(a), role = muc_role_parse(ro);
    if ((a && aff < 0) || (ro && role < 0) || (!a && !ro)) {
        muc_error(st, from, r->jid, "modify", "bad-request", NULL);
        return;
    }
    if ((a && actor_aff < MUC_A_ADMIN) || (ro && actor_role < MUC_R_MODERATOR)) {
        muc_error(st, from, r->jid, "auth", "forbidden", NULL);
        return;
    }
    struct sb_buf *b = &adm_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<query xmlns='" NS_MUC_ADMIN "'>");
    if (a) {
        for (int i = 0; i < r->naff; i++)
            if (r->aff[i].aff == aff) {
                sb_buf_printf(b, "<item affiliation='%s'", muc_aff_name(aff));
                muc_attr(b, "jid", r->aff[i].jid);
                muc_attr(b, "nick", r->aff[i].nick);
                sb_buf_adds(b, "/>");
            }
    } else {
        for (struct muc_occ *o = r->occ; o; o = o->next)
            if (o->role == role) {
                sb_buf_printf(b, "<item role='%s' affiliation='%s'", muc_role_name(role),
                              muc_aff_name(muc_aff_of(r, o->bare)));
                muc_attr(b, "nick", o->nick);
                muc_attr(b, "jid", o->jid);
                sb_buf_adds(b, "/>");
            }
    }
    sb_buf_adds(b, "</query>");
    if (b->data)
        muc_iq_result(st, from, r->jid, b->data, b->len);
}

/* Checks one item; returns the error condition or NULL. */
static const char *adm_check(struct muc_room *r, const struct xml_node *item, int actor_aff,
                             int actor_role, const char **type)
{
    const char *nick = xml_attr(item, "nick"), *jid = xml_attr(item, "jid");
    const char *ro = xml_attr(item, "role"), *a = xml_attr(item, "affiliation");
    *type = "modify";
    if (ro && nick && !a) {
        int role = muc_role_parse(ro);
        struct muc_occ *t = muc_occ_by_nick(r, nick);
        if (role < 0)
            return "bad-request";
        *type = "auth";
        if (actor_role < MUC_R_MODERATOR)
            return "forbidden";
        *type = "cancel";
        if (!t)
            return "item-not-found";
        int taff = muc_aff_of(r, t->bare);
        if (role == MUC_R_MODERATOR && actor_aff < MUC_A_ADMIN)
            return "not-allowed";
        if (taff >= MUC_A_ADMIN && role < MUC_R_MODERATOR)
            return "not-allowed";          /* §8.2, §8.5: not an admin or owner */
        if (taff > actor_aff)
            return "not-allowed";
        return NULL;
    }
    if (a && jid) {
        int aff = muc_aff_parse(a);
        struct jid j;
        if (aff < 0 || jid_parse(&j, jid) != SB_OK)
            return "bad-request";
        char bare[JID_BARE_MAX + 1];
        jid_bare(&j, bare);
        int old = muc_aff_of(r, bare);
        *type = "auth";
        if (actor_aff < MUC_A_ADMIN)
            return "forbidden";
        *type = "cancel";
        if ((aff >= MUC_A_ADMIN || old >= MUC_A_ADMIN) && actor_aff < MUC_A_OWNER)
            return "not-allowed";
        if (old == MUC_A_OWNER && aff != MUC_A_OWNER && muc_owners(r) == 1)
            return "conflict";             /* §10.6: the last owner stays */
        return NULL;
    }
    return "bad-request";
}

static void adm_apply(struct muc_room *r, const struct xml_node *item, const char *actor)
{
    const char *nick = xml_attr(item, "nick"), *jid = xml_attr(item, "jid");
    const char *ro = xml_attr(item, "role"), *a = xml_attr(item, "affiliation");
    const struct xml_node *why = xml_child(item, "reason", NULL);
    struct sb_buf reason = SB_BUF_INIT;
    if (why)
        xml_text(why, &reason);
    if (ro && nick && !a) {
        int role = muc_role_parse(ro);
        log_info("role_changed", "room=%s nick=%s role=%s by=%s", sb_log_q(r->jid),
                 sb_log_q(nick), ro, sb_log_q(actor));
        char *room = strdup(r->jid);
        struct muc_occ *t;
        while (room && (t = muc_occ_by_nick(r, nick)) && role == MUC_R_NONE) {
            int code = 307;                  /* kicked: every session of the nick */
            muc_occ_remove(r, t, &code, 1, reason.data);
            struct muc_room *still;
            HASH_FIND_STR(muc.rooms, room, still);
            if (still != r)
                break;                       /* a temporary room went with its last */
        }
        for (t = role != MUC_R_NONE ? r->occ : NULL; t; t = t->next)
            if (!strcmp(t->nick, nick)) {
                t->role = role;
                muc_store_occ(r, t);
                muc_occ_broadcast(r, t, NULL, NULL, 0, NULL, NULL);
            }
        free(room);
    } else {
        struct jid j;
        char bare[JID_BARE_MAX + 1];
        jid_parse(&j, jid);
        jid_bare(&j, bare);
        int aff = muc_aff_parse(a);
        muc_aff_set(r, bare, aff, reason.data);
        log_info("affiliation_changed", "room=%s jid=%s affiliation=%s by=%s", sb_log_q(r->jid),
                 sb_log_q(bare), a, sb_log_q(actor));
        for (struct muc_occ *o = r->occ, *next; o; o = next) {
            next = o->next;
            if (strcmp(o->bare, bare))
                continue;
            int code = aff == MUC_A_OUTCAST ? 301 : 321;
            if (aff == MUC_A_OUTCAST || (r->cfg.members_only && aff < MUC_A_MEMBER)) {
                muc_occ_remove(r, o, &code, 1, reason.data);
            } else {
                o->role = muc_role_for(r, aff);
                muc_store_occ(r, o);
                muc_occ_broadcast(r, o, NULL, NULL, 0, NULL, NULL);
            }
        }
    }
    sb_buf_free(&reason);
}

static void adm_admin(struct muc_room *r, const struct xml_node *st, const char *from,
                      const struct xml_node *q, int get)
{
    char bare[JID_BARE_MAX + 1];
    jid_bare_of(from, bare, sizeof bare);
    const struct muc_occ *me = muc_occ_by_jid(r, from);
    int actor_aff = muc_aff_of(r, bare), actor_role = me ? me->role : MUC_R_NONE;
    const struct xml_node *first = xml_child(q, "item", NULL);
    if (!first) {
        muc_error(st, from, r->jid, "modify", "bad-request", NULL);
        return;
    }
    if (get) {
        adm_list(r, st, from, first, actor_aff, actor_role);
        return;
    }
    /* All or nothing (§10.x): every item is checked first. */
    for (const struct xml_node *it = first; it; it = xml_next_elem(it)) {
        const char *type, *cond = strcmp(it->name, "item") ? "bad-request"
                                                             : adm_check(r, it, actor_aff,
                                                                         actor_role, &type);
        if (cond) {
            muc_error(st, from, r->jid, strcmp(it->name, "item") ? "modify" : type, cond, NULL);
            log_info("admin_refused", "room=%s by=%s cond=%s", sb_log_q(r->jid),
                     sb_log_q(from), cond);
            return;
        }
    }
    char *jid = strdup(r->jid);
    muc_iq_result(st, from, r->jid, NULL, 0);
    for (const struct xml_node *it = first; it; it = xml_next_elem(it)) {
        struct muc_room *still;
        HASH_FIND_STR(muc.rooms, jid, still);
        if (still != r)
            break;                           /* the last occupant of a temporary room left */
        adm_apply(r, it, from);
    }
    free(jid);
}

/* ---- registration (§7.10) and reserved nicks ------------------------------------ */

/* disco#info node=x-roomuser-item: the asker's reserved nick (§7.12). */
static void adm_roomuser_item(struct muc_room *r, const struct xml_node *st, const char *from,
                              const char *bare)
{
    const struct muc_affil *a = muc_affil_of(r, bare);
    struct sb_buf *b = &adm_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'>");
    if (a && a->nick) {
        sb_buf_adds(b, "<identity category='conference' type='text'");
        muc_attr(b, "name", a->nick);
        sb_buf_adds(b, "/>");
    }
    sb_buf_adds(b, "</query>");
    if (b->data)
        muc_iq_result(st, from, r->jid, b->data, b->len);
}

static void adm_register_get(struct muc_room *r, const struct xml_node *st, const char *from,
                             const char *bare)
{
    const struct muc_affil *a = muc_affil_of(r, bare);
    struct sb_buf *b = &adm_buf;
    sb_buf_reset(b);
    if (a && a->nick && a->aff >= MUC_A_MEMBER) {
        sb_buf_adds(b, "<query xmlns='" NS_REGISTER "'><registered/><username>");
        xml_escape_text(b, a->nick, strlen(a->nick));
        sb_buf_adds(b, "</username></query>");
    } else {
        sb_buf_adds(b, "<query xmlns='" NS_REGISTER "'><instructions>Choose the nickname to "
                       "reserve in this room.</instructions><x xmlns='" NS_DATA "' type='form'>"
                       "<title>Room registration</title><field var='FORM_TYPE' type='hidden'>"
                       "<value>" NS_MUC_REGISTER "</value></field>"
                       "<field var='muc#register_roomnick' type='text-single' label='Nickname'>"
                       "<required/></field></x></query>");
    }
    if (b->data)
        muc_iq_result(st, from, r->jid, b->data, b->len);
}

/* The single value of a form field, "" when none; NULL when absent. */
static const char *adm_form_value(const struct xml_node *x, const char *var, struct sb_buf *v)
{
    for (const struct xml_node *f = x ? xml_first_elem(x) : NULL; f; f = xml_next_elem(f)) {
        const char *fv = xml_attr(f, "var");
        if (strcmp(f->name, "field") || !fv || strcmp(fv, var))
            continue;
        const struct xml_node *val = xml_child(f, "value", NULL);
        sb_buf_reset(v);
        sb_buf_adds(v, "");
        if (val)
            xml_text(val, v);
        return v->data;
    }
    return NULL;
}

static void adm_register_set(struct muc_room *r, const struct xml_node *st, const char *from,
                             const char *bare, const struct xml_node *q)
{
    int aff = muc_aff_of(r, bare);
    struct muc_affil *a = muc_affil_of(r, bare);
    if (xml_child(q, "remove", NULL)) {            /* cancel the registration */
        if (!a || !a->nick) {
            muc_error(st, from, r->jid, "cancel", "item-not-found", "not registered");
            return;
        }
        free(a->nick);
        a->nick = NULL;
        int was_member = a->aff == MUC_A_MEMBER;
        if (was_member)
            muc_aff_set(r, bare, MUC_A_NONE, NULL);      /* a is gone */
        else
            muc_store_aff(r, bare, a->aff, a->reason);
        muc_iq_result(st, from, r->jid, NULL, 0);
        log_info("nick_unregistered", "room=%s jid=%s", sb_log_q(r->jid), sb_log_q(bare));
        if (was_member && !r->cfg.members_only)          /* its affiliation changed */
            for (struct muc_occ *o = r->occ; o; o = o->next)
                if (!strcmp(o->bare, bare)) {
                    o->role = muc_role_for(r, MUC_A_NONE);
                    muc_store_occ(r, o);
                    muc_occ_broadcast(r, o, NULL, NULL, 0, NULL, NULL);
                }
        if (was_member && r->cfg.members_only) {         /* §9.3: non-members leave (321) */
            int code = 321;
            char *room = strdup(r->jid);
            struct muc_occ *o;
            while (room && (o = muc_occ_by_bare(r, bare))) {
                muc_occ_remove(r, o, &code, 1, NULL);
                struct muc_room *still;
                HASH_FIND_STR(muc.rooms, room, still);
                if (still != r)
                    break;
            }
            free(room);
        }
        return;
    }
    const struct xml_node *x = xml_child(q, "x", NS_DATA);
    struct sb_buf v = SB_BUF_INIT, ft = SB_BUF_INIT;
    const char *type = x ? xml_attr(x, "type") : NULL;
    const char *form = adm_form_value(x, "FORM_TYPE", &ft);
    const char *nick = adm_form_value(x, "muc#register_roomnick", &v);
    struct jid nj;
    char full[JID_FULL_MAX + 1];
    snprintf(full, sizeof full, "%s/%s", r->jid, nick ? nick : "");
    const char *owner = nick ? muc_nick_owner(r, nick) : NULL;
    const struct muc_occ *holder = nick ? muc_occ_by_nick(r, nick) : NULL;
    if (type && !strcmp(type, "cancel")) {
        muc_iq_result(st, from, r->jid, NULL, 0);
    } else if (!x || !type || strcmp(type, "submit") || (form && strcmp(form, NS_MUC_REGISTER)) ||
               !nick || !*nick || jid_parse(&nj, full) != SB_OK) {
        muc_error(st, from, r->jid, "modify", "bad-request", "a nickname is needed");
    } else if (aff == MUC_A_OUTCAST) {
        muc_error(st, from, r->jid, "auth", "forbidden", NULL);
    } else if (r->cfg.members_only && aff < MUC_A_MEMBER) {
        muc_error(st, from, r->jid, "cancel", "not-allowed", "members are added by the admins");
    } else if ((owner && strcmp(owner, bare)) || (holder && strcmp(holder->bare, bare))) {
        muc_error(st, from, r->jid, "cancel", "conflict", "that nickname is taken");
        log_info("register_refused", "room=%s jid=%s why=conflict", sb_log_q(r->jid),
                 sb_log_q(bare));
    } else {
        if (aff < MUC_A_MEMBER)
            muc_aff_set(r, bare, MUC_A_MEMBER, NULL);
        if ((a = muc_affil_of(r, bare))) {
            muc_set_str(&a->nick, nick);
            muc_store_aff(r, bare, a->aff, a->reason);
        }
        muc_iq_result(st, from, r->jid, NULL, 0);
        log_info("nick_registered", "room=%s jid=%s nick=%s", sb_log_q(r->jid), sb_log_q(bare),
                 sb_log_q(nick));
        for (struct muc_occ *o = r->occ; o; o = o->next)     /* its affiliation changed */
            if (!strcmp(o->bare, bare) && aff < MUC_A_MEMBER)
                muc_occ_broadcast(r, o, NULL, NULL, 0, NULL, NULL);
    }
    sb_buf_free(&v);
    sb_buf_free(&ft);
}

/* ---- iqs to occupants (forwarded) ----------------------------------------------- */

static void fwd_clear(struct muc_fwd *f)
{
    free(f->asker);
    free(f->asker_id);
    free(f->target);
    free(f->nick);
    memset(f, 0, sizeof *f);
}

void muc_fwd_free(struct muc_room *r)
{
    for (int i = 0; i < r->nfwd; i++)
        fwd_clear(&r->fwd[i]);
    r->nfwd = 0;
}

static void fwd_drop(struct muc_room *r, int i)
{
    fwd_clear(&r->fwd[i]);
    r->fwd[i] = r->fwd[--r->nfwd];
    memset(&r->fwd[r->nfwd], 0, sizeof r->fwd[0]);
}

#define MUC_FWD_TTL 60.0

/* §18.6-ish: an iq of occupant `me` to room/nick goes to the occupant's
 * real JID (vCard: its bare JID, where vCards live) from room/<me's nick>,
 * under an id of ours; the answer comes back through muc_iq_answer. */
static void adm_forward(struct muc_room *r, const struct xml_node *st, const char *from,
                        const struct muc_occ *me, const struct muc_occ *t, const char *ns)
{
    double now = muc_wall();
    for (int i = r->nfwd - 1; i >= 0; i--)
        if (now - r->fwd[i].at > MUC_FWD_TTL)
            fwd_drop(r, i);
    if (r->nfwd == MUC_IQ_PENDING_MAX) {
        muc_error(st, from, xml_attr(st, "to"), "wait", "resource-constraint", NULL);
        log_info("iq_forward_refused", "room=%s why=too-many-pending", sb_log_q(r->jid));
        return;
    }
    int vcard = !strcmp(ns, "vcard-temp");
    const char *target = vcard ? t->bare : t->jid;
    struct muc_fwd *f = &r->fwd[r->nfwd];
    const char *id = xml_attr(st, "id");
    sb_random_id(f->id, 16);
    if (!(f->asker = strdup(from)) || !(f->asker_id = strdup(id ? id : "")) ||
        !(f->target = strdup(target)) || !(f->nick = strdup(t->nick))) {
        fwd_clear(f);
        muc_error(st, from, xml_attr(st, "to"), "wait", "resource-constraint", NULL);
        return;
    }
    f->at = now;
    r->nfwd++;
    struct sb_buf fromj = SB_BUF_INIT, *b = &adm_buf;
    sb_buf_printf(&fromj, "%s/%s", r->jid, me->nick);
    sb_buf_reset(b);
    sb_buf_printf(b, "<iq type='%s' id='%s'", xml_attr(st, "type"), f->id);
    muc_attr(b, "from", fromj.data);
    muc_attr(b, "to", target);
    sb_buf_adds(b, ">");
    muc_children(b, st, NULL, NULL);
    sb_buf_adds(b, "</iq>");
    if (b->data && fromj.data)
        muc_send(target, fromj.data, b->data, b->len);
    log_debug("iq_forwarded", "room=%s from=%s to=%s ns=%s", sb_log_q(r->jid),
              sb_log_q(me->nick), sb_log_q(t->nick), sb_log_q(ns));
    sb_buf_free(&fromj);
}

void muc_iq_answer(struct muc_room *r, const struct xml_node *st, const char *from,
                   const char *to)
{
    const char *id = xml_attr(st, "id");
    int i;
    for (i = 0; id && i < r->nfwd && strcmp(r->fwd[i].id, id); i++)
        ;
    if (!id || i == r->nfwd || strcmp(r->fwd[i].target, from)) {
        log_debug("iq_answer_unknown", "room=%s from=%s", sb_log_q(r->jid), sb_log_q(from));
        return;                          /* not ours, or from someone else: dropped */
    }
    struct muc_fwd *f = &r->fwd[i];
    struct sb_buf fromj = SB_BUF_INIT, *b = &adm_buf;
    sb_buf_printf(&fromj, "%s/%s", r->jid, f->nick);
    sb_buf_reset(b);
    sb_buf_printf(b, "<iq type='%s'", xml_attr(st, "type"));
    muc_attr(b, "id", f->asker_id);
    muc_attr(b, "from", fromj.data);
    muc_attr(b, "to", f->asker);
    sb_buf_adds(b, ">");
    muc_children(b, st, NULL, NULL);
    sb_buf_adds(b, "</iq>");
    if (b->data && fromj.data)
        muc_send(f->asker, fromj.data, b->data, b->len);
    sb_buf_free(&fromj);
    fwd_drop(r, i);
}

/* ---- dispatch ----------------------------------------------------------------- */

void muc_room_iq(struct muc_room *r, const struct xml_node *st, const char *from,
                 const char *to)
{
    const char *type = xml_attr(st, "type");
    const char *slash = strchr(to, '/');
    if (type && slash && (!strcmp(type, "result") || !strcmp(type, "error"))) {
        muc_iq_answer(r, st, from, to);
        return;
    }
    if (!type || (strcmp(type, "get") && strcmp(type, "set")))
        return;
    int get = !strcmp(type, "get");
    const struct xml_node *q = xml_first_elem(st);
    const char *ns = q ? xml_attr(q, "xmlns") : NULL;
    if (!q || !ns) {
        muc_error(st, from, to, "modify", "bad-request", NULL);
        return;
    }
    if (slash) {                             /* to an occupant */
        const struct muc_occ *me = muc_occ_by_jid(r, from);
        if (!me) {                           /* XEP-0410: not joined (any more) */
            muc_error(st, from, to, "cancel", "not-acceptable", "you are not in this room");
            return;
        }
        const struct muc_occ *t = muc_occ_by_nick(r, slash + 1);
        if (!t)
            muc_error(st, from, to, "cancel", "item-not-found", NULL);
        else if (get && !strcmp(ns, "urn:xmpp:ping") && muc_same_occupant(me, t))
            muc_iq_result(st, from, to, NULL, 0);          /* XEP-0410: the room answers */
        else
            adm_forward(r, st, from, me, t, ns);
        return;
    }
    if (!r->exists) {
        muc_error(st, from, to, "cancel", "item-not-found", "no such room");
        return;
    }
    char bare[JID_BARE_MAX + 1];
    jid_bare_of(from, bare, sizeof bare);
    const char *node = xml_attr(q, "node");
    if (get && !strcmp(ns, "http://jabber.org/protocol/disco#info") && node &&
        !strcmp(node, "x-roomuser-item")) {
        adm_roomuser_item(r, st, from, bare);
    } else if (get && !strcmp(ns, "http://jabber.org/protocol/disco#info")) {
        adm_disco_info(r, st, from);
    } else if (get && !strcmp(ns, "http://jabber.org/protocol/disco#items")) {
        static const char items[] = "<query xmlns='http://jabber.org/protocol/disco#items'/>";
        muc_iq_result(st, from, to, items, sizeof items - 1);
    } else if (get && !strcmp(ns, "urn:xmpp:ping")) {
        muc_iq_result(st, from, to, NULL, 0);
    } else if (!strcmp(ns, NS_MUC_OWNER)) {
        if (muc_aff_of(r, bare) != MUC_A_OWNER) {
            muc_error(st, from, to, "auth", "forbidden", "only owners may do this");
            log_info("owner_refused", "room=%s jid=%s", sb_log_q(r->jid), sb_log_q(from));
        } else if (get) {
            adm_config_form(r, st, from);
        } else {
            adm_owner_set(r, st, from, q);
        }
    } else if (!strcmp(ns, NS_MUC_ADMIN)) {
        adm_admin(r, st, from, q, get);
    } else if (!strcmp(ns, NS_REGISTER)) {
        if (get)
            adm_register_get(r, st, from, bare);
        else
            adm_register_set(r, st, from, bare, q);
    } else if (!strcmp(ns, NS_MAM) && !strcmp(q->name, "query")) {
        muc_mam_iq(r, st, from, q, get);
    } else {
        muc_error(st, from, to, "cancel", "service-unavailable", NULL);
    }
}
