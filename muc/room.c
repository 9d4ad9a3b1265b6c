/* room.c — a room's life: joining (status codes 110/100/170/201/210, the
 * refusals of XEP-0045 §7.2, reserved nicks), presence updates and nick
 * changes (303), leaving, several sessions of one account under one nick,
 * groupchat messages (archived, mam.c) and their history, the subject,
 * private messages, mediated invitations, voice requests (§7.13, §8.6),
 * and occupants removed (kick 307, ban 301, members-only 321, an error
 * from their client 333). A temporary room goes when its last occupant
 * leaves. */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include "muc.h"
#include "domains.h"
#include "log.h"

#include <nettle/hmac.h>
#include <nettle/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct sb_buf room_buf, room_head, room_inner, room_tmp, room_arch;

static const char *const aff_names[] = {"outcast", "none", "member", "admin", "owner"};
static const char *const role_names[] = {"none", "visitor", "participant", "moderator"};

const char *muc_aff_name(int a) { return a >= 0 && a <= MUC_A_OWNER ? aff_names[a] : "none"; }
const char *muc_role_name(int r) { return r >= 0 && r <= MUC_R_MODERATOR ? role_names[r] : "none"; }

int muc_aff_parse(const char *s)
{
    for (int i = 0; s && i <= MUC_A_OWNER; i++)
        if (!strcmp(s, aff_names[i]))
            return i;
    return -1;
}

int muc_role_parse(const char *s)
{
    for (int i = 0; s && i <= MUC_R_MODERATOR; i++)
        if (!strcmp(s, role_names[i]))
            return i;
    return -1;
}

void muc_set_str(char **dst, const char *s)
{
    char *n = strdup(s ? s : "");
    if (!n)
        return;
    free(*dst);
    *dst = n;
}

void muc_cfg_defaults(struct muc_cfg *c)
{
    muc_cfg_free(c);
    memset(c, 0, sizeof *c);
    c->name = strdup("");
    c->desc = strdup("");
    c->password = strdup("");
    c->public_room = 1;
    c->change_subject = 1;
}

void muc_cfg_free(struct muc_cfg *c)
{
    free(c->name);
    free(c->desc);
    free(c->password);
    c->name = c->desc = c->password = NULL;
}

struct muc_room *muc_room_new(const char *jid)
{
    struct muc_room *r = calloc(1, sizeof *r);
    if (!r || !(r->jid = strdup(jid))) {
        free(r);
        return NULL;
    }
    muc_cfg_defaults(&r->cfg);
    r->pend_tail = &r->pend;
    if (muc.history_max > 0 && !(r->hist = calloc((size_t)muc.history_max, sizeof *r->hist))) {
        free(r->jid);
        free(r);
        return NULL;
    }
    return r;
}

static void occ_free(struct muc_occ *o)
{
    free(o->nick);
    free(o->jid);
    free(o->bare);
    free(o->pres);
    free(o);
}

void muc_room_free(struct muc_room *r)
{
    while (r->occ) {
        struct muc_occ *o = r->occ;
        r->occ = o->next;
        occ_free(o);
    }
    for (int i = 0; i < r->naff; i++) {
        free(r->aff[i].jid);
        free(r->aff[i].reason);
        free(r->aff[i].nick);
    }
    free(r->aff);
    muc_store_hist_forget(r);
    muc_fwd_free(r);
    for (int i = 0; i < muc.history_max && r->hist; i++) {
        free(r->hist[i].head);
        free(r->hist[i].inner);
    }
    free(r->hist);
    while (r->pend) {
        struct muc_pend *p = r->pend;
        r->pend = p->next;
        free(p->aux);
        free(p->body);
        free(p);
    }
    muc_cfg_free(&r->cfg);
    free(r->subject);
    free(r->subject_nick);
    free(r->jid);
    free(r);
}

void muc_room_delete(struct muc_room *r)
{
    log_info("room_gone", "room=%s persistent=%d", sb_log_q(r->jid), r->cfg.persistent);
    muc_store_delete(r);
    HASH_DEL(muc.rooms, r);
    muc_room_free(r);
}

/* ---- occupants and affiliations ------------------------------------------------ */

struct muc_occ *muc_occ_by_nick(const struct muc_room *r, const char *nick)
{
    for (struct muc_occ *o = r->occ; o; o = o->next)
        if (!strcmp(o->nick, nick))
            return o;
    return NULL;
}

struct muc_occ *muc_occ_by_jid(const struct muc_room *r, const char *jid)
{
    for (struct muc_occ *o = r->occ; o; o = o->next)
        if (!strcmp(o->jid, jid))
            return o;
    return NULL;
}

struct muc_occ *muc_occ_by_bare(const struct muc_room *r, const char *bare)
{
    for (struct muc_occ *o = r->occ; o; o = o->next)
        if (!strcmp(o->bare, bare))
            return o;
    return NULL;
}

struct muc_affil *muc_affil_of(struct muc_room *r, const char *bare)
{
    for (int i = 0; i < r->naff; i++)
        if (!strcmp(r->aff[i].jid, bare))
            return &r->aff[i];
    return NULL;
}

const char *muc_nick_owner(const struct muc_room *r, const char *nick)
{
    for (int i = 0; i < r->naff; i++)
        if (r->aff[i].nick && !strcmp(r->aff[i].nick, nick))
            return r->aff[i].jid;
    return NULL;
}

int muc_same_occupant(const struct muc_occ *a, const struct muc_occ *b)
{
    return a == b || (!strcmp(a->nick, b->nick) && !strcmp(a->bare, b->bare));
}

int muc_aff_of(const struct muc_room *r, const char *bare)
{
    const char *at = strchr(bare, '@');
    int dom = MUC_A_NONE;
    for (int i = 0; i < r->naff; i++) {
        if (!strcmp(r->aff[i].jid, bare))
            return r->aff[i].aff;
        if (at && !strcmp(r->aff[i].jid, at + 1))
            dom = r->aff[i].aff;         /* a whole domain (e.g. banned) */
    }
    return dom;
}

int muc_owners(const struct muc_room *r)
{
    int n = 0;
    for (int i = 0; i < r->naff; i++)
        n += r->aff[i].aff == MUC_A_OWNER;
    return n;
}

void muc_aff_set(struct muc_room *r, const char *bare, int aff, const char *reason)
{
    int i;
    for (i = 0; i < r->naff && strcmp(r->aff[i].jid, bare); i++)
        ;
    if (i == r->naff) {
        if (aff == MUC_A_NONE)
            return;
        if (r->naff == r->aff_cap) {
            int cap = r->aff_cap ? r->aff_cap * 2 : 8;
            struct muc_affil *v = realloc(r->aff, (size_t)cap * sizeof *v);
            if (!v)
                return;
            r->aff = v;
            r->aff_cap = cap;
        }
        memset(&r->aff[i], 0, sizeof r->aff[i]);
        if (!(r->aff[i].jid = strdup(bare)))
            return;
        r->naff++;
    }
    if (aff == MUC_A_NONE) {
        muc_store_aff(r, bare, aff, reason);
        free(r->aff[i].jid);
        free(r->aff[i].reason);
        free(r->aff[i].nick);
        r->aff[i] = r->aff[--r->naff];
        return;
    }
    r->aff[i].aff = aff;
    muc_set_str(&r->aff[i].reason, reason);
    if (aff == MUC_A_OUTCAST) {              /* a banned user's nick is free again */
        free(r->aff[i].nick);
        r->aff[i].nick = NULL;
    }
    muc_store_aff(r, bare, aff, reason);
}

int muc_role_for(const struct muc_room *r, int aff)
{
    if (aff >= MUC_A_ADMIN)
        return MUC_R_MODERATOR;
    if (r->cfg.moderated && aff < MUC_A_MEMBER)
        return MUC_R_VISITOR;
    return MUC_R_PARTICIPANT;
}

/* XEP-0421: HMAC-SHA256(secret, room \n real bare JID), the same on every
 * instance and for every session of one account. */
static void occ_id(const char *room, const char *bare, char *out, size_t cap)
{
    struct hmac_sha256_ctx h;
    uint8_t dig[SHA256_DIGEST_SIZE];
    hmac_sha256_set_key(&h, strlen(muc.oid_key), (const uint8_t *)muc.oid_key);
    hmac_sha256_update(&h, strlen(room), (const uint8_t *)room);
    hmac_sha256_update(&h, 1, (const uint8_t *)"\n");
    hmac_sha256_update(&h, strlen(bare), (const uint8_t *)bare);
    hmac_sha256_digest(&h, sizeof dig, dig);
    char b64[BASE64_ENCODE_RAW_LENGTH(18) + 1];
    base64_encode_raw((char *)b64, 18, dig);
    b64[BASE64_ENCODE_RAW_LENGTH(18)] = '\0';
    snprintf(out, cap, "%s", b64);
}

static struct muc_occ *occ_new(struct muc_room *r, const char *nick, const char *jid, int role)
{
    struct muc_occ *o = calloc(1, sizeof *o);
    char bare[JID_BARE_MAX + 1];
    if (!o || jid_bare_of(jid, bare, sizeof bare) < 0 || !(o->nick = strdup(nick)) ||
        !(o->jid = strdup(jid)) || !(o->bare = strdup(bare)) || !(o->pres = strdup(""))) {
        if (o)
            occ_free(o);
        return NULL;
    }
    o->role = role;
    occ_id(r->jid, bare, o->oid, sizeof o->oid);
    o->next = r->occ;
    r->occ = o;
    r->nocc++;
    return o;
}

void muc_occ_restore(struct muc_room *r, const char *nick, const char *jid, int role,
                     const char *pres)
{
    struct muc_occ *o = occ_new(r, nick, jid, role >= MUC_R_VISITOR && role <= MUC_R_MODERATOR
                                                  ? role : MUC_R_PARTICIPANT);
    if (o)
        muc_set_str(&o->pres, pres);
}

static void occ_unlink(struct muc_room *r, struct muc_occ *o)
{
    for (struct muc_occ **p = &r->occ; *p; p = &(*p)->next)
        if (*p == o) {
            *p = o->next;
            r->nocc--;
            return;
        }
}

/* ---- presence ------------------------------------------------------------------- */

static void room_full(const struct muc_room *r, const char *nick, struct sb_buf *b)
{
    sb_buf_reset(b);
    sb_buf_printf(b, "%s/%s", r->jid, nick);
}

/* What follows `to='…` in o's presence: the same for every recipient of
 * one kind (show_jid: the real JID is shown; self: one of o's own
 * sessions, with 110, and `self` codes when it is o itself). */
static void occ_presence_tail(struct muc_room *r, const struct muc_occ *o, const char *type,
                              const int *codes, int ncodes, int show_jid, int self,
                              const int *selfc, int nself, const char *nick,
                              const char *extra, struct sb_buf *b)
{
    sb_buf_adds(b, "'");
    if (type) {
        sb_buf_adds(b, " type='");
        sb_buf_adds(b, type);
        sb_buf_adds(b, "'");
    }
    sb_buf_adds(b, ">");
    sb_buf_adds(b, o->pres);
    sb_buf_adds(b, "<occupant-id xmlns='" NS_OCCUPANT_ID "' id='");
    sb_buf_adds(b, o->oid);
    sb_buf_adds(b, "'/><x xmlns='" NS_MUC_USER "'><item affiliation='");
    sb_buf_adds(b, muc_aff_name(muc_aff_of(r, o->bare)));
    sb_buf_adds(b, "' role='");
    sb_buf_adds(b, muc_role_name(type ? MUC_R_NONE : o->role));
    sb_buf_adds(b, "'");
    if (show_jid || self)
        muc_attr(b, "jid", o->jid);
    muc_attr(b, "nick", nick);
    sb_buf_adds(b, "/>");
    for (int i = 0; i < ncodes; i++)
        sb_buf_printf(b, "<status code='%d'/>", codes[i]);
    if (self) {
        sb_buf_adds(b, "<status code='110'/>");
        for (int i = 0; i < nself; i++)
            sb_buf_printf(b, "<status code='%d'/>", selfc[i]);
    }
    if (extra)
        sb_buf_adds(b, extra);
    sb_buf_adds(b, "</x></presence>");
}

/* "<presence from='room/nick' to='" into b; room_tmp holds room/nick. */
static void occ_presence_head(struct muc_room *r, const struct muc_occ *o, struct sb_buf *b)
{
    room_full(r, o->nick, &room_tmp);
    sb_buf_reset(b);
    sb_buf_adds(b, "<presence from='");
    xml_escape_attr(b, room_tmp.data, room_tmp.len);
    sb_buf_adds(b, "' to='");
}

static void occ_presence_send(const struct muc_occ *to, const struct sb_buf *head,
                              const struct sb_buf *tail)
{
    struct sb_buf *b = &room_buf;
    sb_buf_reset(b);
    sb_buf_add(b, head->data, head->len);
    xml_escape_attr(b, to->jid, strlen(to->jid));
    sb_buf_add(b, tail->data, tail->len);
    if (b->data)
        muc_send(to->jid, room_tmp.data, b->data, b->len);
}

static int occ_shows_jid(const struct muc_room *r, const struct muc_occ *to)
{
    return r->cfg.whois_anyone || to->role == MUC_R_MODERATOR;
}

/* o's presence as `to` sees it. */
static void occ_presence_to(struct muc_room *r, const struct muc_occ *o,
                            const struct muc_occ *to, const char *type, const int *codes,
                            int ncodes, const int *self, int nself, const char *nick,
                            const char *extra)
{
    int is_self = muc_same_occupant(o, to);
    occ_presence_head(r, o, &room_head);
    sb_buf_reset(&room_inner);
    occ_presence_tail(r, o, type, codes, ncodes, occ_shows_jid(r, to), is_self, self,
                      to == o ? nself : 0, nick, extra, &room_inner);
    occ_presence_send(to, &room_head, &room_inner);
}

/* o's presence to every occupant (`self` codes to o itself): built once
 * for those shown the real JID and once for the others, so a join into a
 * room of n costs n copies, not n presences built anew. */
static void occ_presence_all(struct muc_room *r, struct muc_occ *o, const char *type,
                             const int *codes, int ncodes, const int *self, int nself,
                             const char *nick, const char *extra)
{
    struct sb_buf *tails[2] = {&room_inner, &room_arch};
    int built[2] = {0, 0};
    occ_presence_head(r, o, &room_head);
    for (struct muc_occ *to = r->occ; to; to = to->next) {
        if (muc_same_occupant(o, to)) {
            struct sb_buf t = SB_BUF_INIT;
            occ_presence_tail(r, o, type, codes, ncodes, 1, 1, self, to == o ? nself : 0,
                              nick, extra, &t);
            if (t.data)
                occ_presence_send(to, &room_head, &t);
            sb_buf_free(&t);
            continue;
        }
        int k = occ_shows_jid(r, to);
        if (!built[k]) {
            sb_buf_reset(tails[k]);
            occ_presence_tail(r, o, type, codes, ncodes, k, 0, NULL, 0, nick, extra, tails[k]);
            built[k] = 1;
        }
        if (tails[k]->data)
            occ_presence_send(to, &room_head, tails[k]);
    }
}

void muc_occ_broadcast(struct muc_room *r, struct muc_occ *o, const char *type,
                       const int *codes, int ncodes, const char *nick, const char *extra)
{
    occ_presence_all(r, o, type, codes, ncodes, NULL, 0, nick, extra);
}

void muc_occ_presence_one(struct muc_room *r, struct muc_occ *o, struct muc_occ *to,
                          const char *type, const char *extra)
{
    occ_presence_to(r, o, to, type, NULL, 0, NULL, 0, NULL, extra);
}

static void room_reason_xml(struct sb_buf *b, const char *reason)
{
    sb_buf_reset(b);
    if (reason && *reason) {
        sb_buf_adds(b, "<reason>");
        xml_escape_text(b, reason, strlen(reason));
        sb_buf_adds(b, "</reason>");
    }
    sb_buf_adds(b, "");
}

void muc_occ_remove(struct muc_room *r, struct muc_occ *o, const int *codes, int ncodes,
                    const char *reason)
{
    struct sb_buf extra = SB_BUF_INIT;
    room_reason_xml(&extra, reason);
    if (ncodes)
        muc_set_str(&o->pres, "");       /* removed by the room: no status of its own */
    /* The one removed hears it too (its own 110 and the codes), last. */
    occ_unlink(r, o);
    struct muc_occ *sibling = NULL;     /* another session keeps the nick (a leave, §9 333) */
    for (struct muc_occ *e = r->occ; e && !sibling && (!ncodes || codes[0] == 333); e = e->next)
        if (muc_same_occupant(o, e))
            sibling = e;
    if (sibling)                        /* the room sees the nick stay */
        muc_occ_broadcast(r, sibling, NULL, NULL, 0, NULL, NULL);
    else
        occ_presence_all(r, o, "unavailable", codes, ncodes, NULL, 0, NULL, extra.data);
    occ_presence_to(r, o, o, "unavailable", codes, ncodes, NULL, 0, NULL, extra.data);
    muc_store_occ_del(r, o);
    log_info("occupant_left", "room=%s nick=%s jid=%s code=%d", sb_log_q(r->jid),
             sb_log_q(o->nick), sb_log_q(o->jid), ncodes ? codes[0] : 0);
    occ_free(o);
    sb_buf_free(&extra);
    if (!r->nocc && !r->cfg.persistent)
        muc_room_delete(r);
}

void muc_room_notice(struct muc_room *r, int code)
{
    struct sb_buf *b = &room_buf;
    for (struct muc_occ *o = r->occ; o; o = o->next) {
        sb_buf_reset(b);
        sb_buf_adds(b, "<message type='groupchat' from='");
        xml_escape_attr(b, r->jid, strlen(r->jid));
        sb_buf_adds(b, "' to='");
        xml_escape_attr(b, o->jid, strlen(o->jid));
        sb_buf_printf(b, "'><x xmlns='" NS_MUC_USER "'><status code='%d'/></x></message>", code);
        if (b->data)
            muc_send(o->jid, r->jid, b->data, b->len);
    }
}

/* The presence's children as the room repeats them. */
static void room_keep_pres(struct muc_occ *o, const struct xml_node *st)
{
    struct sb_buf clean = SB_BUF_INIT;    /* the muc#user x of a client is not ours either */
    sb_buf_adds(&clean, "");
    for (const struct xml_node *c = st->children; c; c = c->next) {
        const char *ns = c->name ? xml_attr(c, "xmlns") : NULL;
        if (c->name && !strcmp(c->name, "x") && ns &&
            (!strcmp(ns, NS_MUC) || !strcmp(ns, NS_MUC_USER)))
            continue;
        if (c->name && !strcmp(c->name, "occupant-id"))
            continue;
        if (c->name)
            xml_serialize(c, &clean);
    }
    if (clean.data)
        muc_set_str(&o->pres, clean.data);
    sb_buf_free(&clean);
}

double muc_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void room_stamp(double at, char *out, size_t cap)
{
    time_t t = (time_t)at;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* §7.2.15: the <history/> limits of the join (none: muc.history_max). */
static void room_history(struct muc_room *r, const struct muc_occ *to,
                         const struct xml_node *x)
{
    const struct xml_node *h = x ? xml_child(x, "history", NULL) : NULL;
    long maxstanzas = muc.history_max, maxchars = -1;
    double since = 0;
    const char *v;
    if (h && (v = xml_attr(h, "maxstanzas")))
        maxstanzas = strtol(v, NULL, 10);
    if (h && (v = xml_attr(h, "maxchars")))
        maxchars = strtol(v, NULL, 10);
    if (h && (v = xml_attr(h, "seconds")))
        since = muc_wall() - (double)strtol(v, NULL, 10);
    if (h && (v = xml_attr(h, "since"))) {
        struct tm tm = {0};
        const char *end = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
        if (end) {
            double s = (double)timegm(&tm);
            since = s > since ? s : since;
        }
    }
    if (maxstanzas > r->hist_n)
        maxstanzas = r->hist_n;
    /* Newest first until a limit is hit, then sent oldest first. */
    int take = 0;
    long chars = 0;
    for (; take < maxstanzas; take++) {
        const struct muc_hist *m =
            &r->hist[(r->hist_head - 1 - take + 2 * muc.history_max) % muc.history_max];
        if (m->at < since || (maxchars >= 0 && chars + (long)m->chars > maxchars))
            break;
        chars += (long)m->chars;
    }
    struct sb_buf *b = &room_buf;
    for (int i = take - 1; i >= 0; i--) {
        const struct muc_hist *m =
            &r->hist[(r->hist_head - 1 - i + 2 * muc.history_max) % muc.history_max];
        char stamp[40];
        room_stamp(m->at, stamp, sizeof stamp);
        sb_buf_reset(b);
        sb_buf_adds(b, m->head);
        sb_buf_adds(b, " to='");
        xml_escape_attr(b, to->jid, strlen(to->jid));
        sb_buf_printf(b, "'>%s<delay xmlns='urn:xmpp:delay' from='", m->inner);
        xml_escape_attr(b, r->jid, strlen(r->jid));
        sb_buf_printf(b, "' stamp='%s'/></message>", stamp);
        if (b->data)
            muc_send(to->jid, r->jid, b->data, b->len);
    }
}

static void room_subject_to(struct muc_room *r, const struct muc_occ *to)
{
    struct sb_buf *b = &room_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<message type='groupchat' from='");
    if (r->subject_nick && *r->subject_nick)
        room_full(r, r->subject_nick, &room_tmp);
    else {
        sb_buf_reset(&room_tmp);
        sb_buf_adds(&room_tmp, r->jid);
    }
    xml_escape_attr(b, room_tmp.data, room_tmp.len);
    sb_buf_adds(b, "' to='");
    xml_escape_attr(b, to->jid, strlen(to->jid));
    sb_buf_adds(b, "'><subject>");
    if (r->subject)
        xml_escape_text(b, r->subject, strlen(r->subject));
    sb_buf_adds(b, "</subject></message>");
    if (b->data)
        muc_send(to->jid, room_tmp.data, b->data, b->len);
}

static void room_join(struct muc_room *r, const struct xml_node *st, const char *from,
                      const char *to, const char *nick, int nick_changed)
{
    const struct xml_node *x = xml_child(st, "x", NS_MUC);
    char bare[JID_BARE_MAX + 1];
    struct jid fj;
    if (jid_bare_of(from, bare, sizeof bare) < 0 || jid_parse(&fj, from) != SB_OK)
        return;
    int creating = !r->exists;
    if (creating && !sb_domains_find(fj.domain)) {
        muc_presence_error(to, from, "cancel", "not-allowed");   /* only our users create */
        log_info("join_refused", "room=%s jid=%s why=create-remote", sb_log_q(r->jid),
                 sb_log_q(from));
        return;
    }
    int aff = creating ? MUC_A_OWNER : muc_aff_of(r, bare);
    const char *why = NULL, *type = "cancel", *cond = NULL;
    const struct xml_node *pw = x ? xml_child(x, "password", NULL) : NULL;
    if (r->locked && aff < MUC_A_OWNER) {      /* §7.2.1: as if it did not exist yet */
        why = "locked"; cond = "item-not-found";
    } else if (aff == MUC_A_OUTCAST) {
        why = "banned"; type = "auth"; cond = "forbidden";
    } else if (r->cfg.members_only && aff < MUC_A_MEMBER) {
        why = "members-only"; type = "auth"; cond = "registration-required";
    } else if (*r->cfg.password) {
        sb_buf_reset(&room_tmp);
        if (pw)
            xml_text(pw, &room_tmp);
        if (!room_tmp.data || strcmp(room_tmp.data, r->cfg.password)) {
            why = "password"; type = "auth"; cond = "not-authorized";
        }
    }
    const struct muc_occ *holder = muc_occ_by_nick(r, nick);
    const char *owner = muc_nick_owner(r, nick);
    if (!cond && holder && strcmp(holder->bare, bare)) {
        why = "nick"; cond = "conflict";        /* the same account may join again (§7.2) */
    } else if (!cond && owner && strcmp(owner, bare)) {
        why = "reserved"; cond = "conflict";    /* §7.10: registered by another */
    } else if (!cond && aff < MUC_A_ADMIN &&
               ((r->cfg.max_users && r->nocc >= r->cfg.max_users) || r->nocc >= muc.max_occupants)) {
        why = "full"; type = "wait"; cond = "service-unavailable";
    }
    if (cond) {
        muc_presence_error(to, from, type, cond);
        log_info("join_refused", "room=%s jid=%s nick=%s why=%s", sb_log_q(r->jid),
                 sb_log_q(from), sb_log_q(nick), why);
        return;
    }
    if (creating) {
        r->exists = 1;
        r->locked = 1;                  /* §10.1.2: until the owner submits a form */
        muc_cfg_defaults(&r->cfg);
        muc_store_room(r);
        muc_aff_set(r, bare, MUC_A_OWNER, NULL);
        log_info("room_created", "room=%s owner=%s locked=1", sb_log_q(r->jid), sb_log_q(bare));
    }
    struct muc_occ *o = occ_new(r, nick, from, muc_role_for(r, aff));
    if (!o) {
        muc_presence_error(to, from, "wait", "resource-constraint");
        return;
    }
    room_keep_pres(o, st);
    muc_store_occ(r, o);
    /* §7.2.3: everyone else first, then the joiner's own with its codes. */
    for (struct muc_occ *e = r->occ; e; e = e->next)
        if (!muc_same_occupant(e, o))    /* its other sessions: the nick is its own */
            occ_presence_to(r, e, o, NULL, NULL, 0, NULL, 0, NULL, NULL);
    int self[4], nself = 0;
    if (r->cfg.whois_anyone)
        self[nself++] = 100;
    if (r->cfg.archiving)
        self[nself++] = 170;
    if (creating)
        self[nself++] = 201;
    if (nick_changed)
        self[nself++] = 210;
    occ_presence_all(r, o, NULL, NULL, 0, self, nself, NULL, NULL);
    room_history(r, o, x);
    room_subject_to(r, o);
    log_info("occupant_joined", "room=%s nick=%s jid=%s role=%s occupants=%d",
             sb_log_q(r->jid), sb_log_q(nick), sb_log_q(from), muc_role_name(o->role), r->nocc);
}

/* §7.6: unavailable with 303 and the new nick, then available as it. */
static void room_nick_change(struct muc_room *r, struct muc_occ *o, const struct xml_node *st,
                             const char *to, const char *nick)
{
    const struct muc_occ *holder = muc_occ_by_nick(r, nick);
    const char *owner = muc_nick_owner(r, nick);
    if ((holder && strcmp(holder->bare, o->bare)) || (owner && strcmp(owner, o->bare))) {
        muc_presence_error(to, o->jid, "cancel", "conflict");
        return;
    }
    struct muc_occ *sibling = NULL;
    for (struct muc_occ *e = r->occ; e && !sibling; e = e->next)
        if (e != o && muc_same_occupant(o, e))
            sibling = e;
    int code = 303;
    muc_occ_broadcast(r, o, "unavailable", &code, 1, nick, NULL);
    muc_store_occ_del(r, o);
    muc_set_str(&o->nick, nick);
    room_keep_pres(o, st);
    muc_store_occ(r, o);
    muc_occ_broadcast(r, o, NULL, NULL, 0, NULL, NULL);
    if (sibling)                      /* another session stays under the old nick */
        muc_occ_broadcast(r, sibling, NULL, NULL, 0, NULL, NULL);
}

static void room_presence(struct muc_room *r, const struct xml_node *st, const char *from,
                          const char *to, const struct jid *tj)
{
    const char *type = xml_attr(st, "type");
    struct muc_occ *o = muc_occ_by_jid(r, from);
    if (type && !strcmp(type, "error")) {
        if (o) {                               /* §9: its client is gone */
            int code = 333;
            muc_occ_remove(r, o, &code, 1, NULL);
        }
        return;
    }
    if (type && !strcmp(type, "unavailable")) {
        if (o) {
            room_keep_pres(o, st);         /* the status text of a leave goes to everyone */
            muc_occ_remove(r, o, NULL, 0, NULL);
        }
        return;
    }
    if (type)
        return;                                /* probe, subscribe…: not for rooms */
    if (!*tj->resource) {
        muc_error(st, from, to, "modify", "jid-malformed", "a room nickname is needed");
        return;
    }
    const char *raw = strchr(to, '/');
    int changed = raw && strcmp(raw + 1, tj->resource) != 0;
    if (!o) {
        room_join(r, st, from, to, tj->resource, changed);
    } else if (!strcmp(o->nick, tj->resource)) {
        room_keep_pres(o, st);                 /* a presence update */
        muc_store_occ(r, o);
        muc_occ_broadcast(r, o, NULL, NULL, 0, NULL, NULL);
    } else {
        room_nick_change(r, o, st, to, tj->resource);
    }
}

/* ---- messages --------------------------------------------------------------- */

static void hist_put(struct muc_room *r, double at, const char *head, size_t hlen,
                     const char *inner)
{
    if (muc.history_max <= 0)
        return;
    struct muc_hist *m = &r->hist[r->hist_head];
    free(m->head);
    free(m->inner);
    m->head = strndup(head, hlen);
    m->inner = strdup(inner);
    m->at = at;
    if (!m->head || !m->inner) {
        free(m->head);
        free(m->inner);
        m->head = m->inner = NULL;
        return;
    }
    m->chars = strlen(m->head) + strlen(inner) + 40;
    r->hist_head = (r->hist_head + 1) % muc.history_max;
    if (r->hist_n < muc.history_max)
        r->hist_n++;
}

void muc_hist_restore(struct muc_room *r, double at, const char *head, size_t hlen,
                      const char *inner)
{
    hist_put(r, at, head, hlen, inner);
}

static void room_hist_add(struct muc_room *r, const char *head, const char *inner)
{
    if (muc.history_max <= 0)
        return;
    hist_put(r, muc_wall(), head, strlen(head), inner);
    if (r->hist_unsaved < muc.history_max)
        r->hist_unsaved++;
    muc_store_hist_dirty(r);
}

/* A groupchat message of o to everyone; head/inner built once. */
static void room_groupchat(struct muc_room *r, struct muc_occ *o, const struct xml_node *st,
                           int keep)
{
    room_full(r, o->nick, &room_tmp);
    struct sb_buf *h = &room_head, *in = &room_inner, *b = &room_buf;
    sb_buf_reset(h);
    sb_buf_adds(h, "<message type='groupchat' from='");
    xml_escape_attr(h, room_tmp.data, room_tmp.len);
    sb_buf_adds(h, "'");
    muc_attr(h, "id", xml_attr(st, "id"));
    sb_buf_reset(in);
    muc_children(in, st, "stanza-id", NS_SID);    /* XEP-0359: only the room says */
    sb_buf_printf(in, "<occupant-id xmlns='" NS_OCCUPANT_ID "' id='%s'/>", o->oid);
    if (keep && r->cfg.archiving) {
        char sid[MUC_SID_MAX];
        sb_random_id(sid, MUC_SID_MAX - 1);
        sb_buf_adds(in, "<stanza-id xmlns='" NS_SID "' by='");
        xml_escape_attr(in, r->jid, strlen(r->jid));
        sb_buf_printf(in, "' id='%s'/>", sid);
        struct sb_buf *a = &room_arch, body = SB_BUF_INIT;
        sb_buf_reset(a);
        if (h->data && in->data)
            sb_buf_printf(a, "%s>%s</message>", h->data, in->data);
        xml_text(xml_child(st, "body", NULL), &body);
        if (a->data)
            muc_mam_add(r, o->nick, a->data, a->len, body.data, body.len, sid);
        sb_buf_free(&body);
    }
    if (!h->data || !in->data)
        return;
    for (struct muc_occ *to = r->occ; to; to = to->next) {
        sb_buf_reset(b);
        sb_buf_add(b, h->data, h->len);
        sb_buf_adds(b, " to='");
        xml_escape_attr(b, to->jid, strlen(to->jid));
        sb_buf_adds(b, "'>");
        sb_buf_add(b, in->data, in->len);
        sb_buf_adds(b, "</message>");
        if (b->data)
            muc_send(to->jid, room_tmp.data, b->data, b->len);
    }
    if (keep)
        room_hist_add(r, h->data, in->data);
}

static void room_subject(struct muc_room *r, struct muc_occ *o, const struct xml_node *st,
                         const struct xml_node *subj)
{
    if (o->role < MUC_R_PARTICIPANT ||
        (o->role != MUC_R_MODERATOR && !r->cfg.change_subject)) {
        muc_error(st, o->jid, r->jid, "auth", "forbidden", "you may not change the subject");
        log_info("subject_refused", "room=%s nick=%s", sb_log_q(r->jid), sb_log_q(o->nick));
        return;
    }
    struct sb_buf t = SB_BUF_INIT;
    xml_text(subj, &t);
    muc_set_str(&r->subject, t.data ? t.data : "");
    muc_set_str(&r->subject_nick, o->nick);
    sb_buf_free(&t);
    muc_store_room(r);
    room_groupchat(r, o, st, 0);
}

/* §7.8.2 mediated invitations and their declines. */
static void room_invite(struct muc_room *r, const struct xml_node *st, const char *from,
                        const struct xml_node *x)
{
    struct muc_occ *o = muc_occ_by_jid(r, from);
    const struct xml_node *inv = xml_child(x, "invite", NULL);
    const struct xml_node *dec = xml_child(x, "decline", NULL);
    const struct xml_node *what = inv ? inv : dec;
    const char *target = xml_attr(what, "to");
    struct jid tj;
    if (!target || jid_parse(&tj, target) != SB_OK) {
        muc_error(st, from, r->jid, "modify", "jid-malformed", NULL);
        return;
    }
    char bare[JID_BARE_MAX + 1], from_bare[JID_BARE_MAX + 1];
    jid_bare(&tj, bare);
    jid_bare_of(from, from_bare, sizeof from_bare);
    if (inv) {
        int aff = muc_aff_of(r, from_bare);
        if (!o) {
            muc_error(st, from, r->jid, "modify", "not-acceptable", "only occupants may invite");
            return;
        }
        if (r->cfg.members_only && !r->cfg.allow_invites && aff < MUC_A_ADMIN) {
            muc_error(st, from, r->jid, "auth", "forbidden", NULL);
            return;
        }
        if (r->cfg.members_only && muc_aff_of(r, bare) < MUC_A_MEMBER &&
            muc_aff_of(r, bare) != MUC_A_OUTCAST)
            muc_aff_set(r, bare, MUC_A_MEMBER, NULL);      /* §7.8.2: the invitee may enter */
    }
    const struct xml_node *reason = xml_child(what, "reason", NULL);
    struct sb_buf *b = &room_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<message from='");
    xml_escape_attr(b, r->jid, strlen(r->jid));
    sb_buf_adds(b, "' to='");
    xml_escape_attr(b, target, strlen(target));
    sb_buf_printf(b, "'><x xmlns='" NS_MUC_USER "'><%s from='", inv ? "invite" : "decline");
    xml_escape_attr(b, inv ? from_bare : from, strlen(inv ? from_bare : from));
    sb_buf_adds(b, "'>");
    if (reason)
        xml_serialize(reason, b);
    sb_buf_printf(b, "</%s>", inv ? "invite" : "decline");
    if (inv && *r->cfg.password) {
        sb_buf_adds(b, "<password>");
        xml_escape_text(b, r->cfg.password, strlen(r->cfg.password));
        sb_buf_adds(b, "</password>");
    }
    sb_buf_adds(b, "</x>");
    if (inv) {
        sb_buf_adds(b, "<x xmlns='jabber:x:conference' jid='");
        xml_escape_attr(b, r->jid, strlen(r->jid));
        sb_buf_adds(b, "'/>");
    }
    sb_buf_adds(b, "</message>");
    if (b->data)
        muc_send(target, r->jid, b->data, b->len);
    log_info(inv ? "invited" : "declined", "room=%s from=%s to=%s", sb_log_q(r->jid),
             sb_log_q(from), sb_log_q(target));
}

/* §7.5: a private message, from room/nick to the other's real JID. */
static void room_private(struct muc_room *r, struct muc_occ *o, const struct xml_node *st,
                         const char *nick)
{
    if (!muc_occ_by_nick(r, nick)) {
        muc_error(st, o->jid, xml_attr(st, "to"), "cancel", "item-not-found", "no such occupant");
        return;
    }
    room_full(r, o->nick, &room_tmp);
    const char *type = xml_attr(st, "type"), *id = xml_attr(st, "id");
    struct sb_buf *b = &room_buf;
    for (struct muc_occ *t = r->occ; t; t = t->next) {  /* every session of the nick */
        if (strcmp(t->nick, nick))
            continue;
        sb_buf_reset(b);
        sb_buf_adds(b, "<message from='");
        xml_escape_attr(b, room_tmp.data, room_tmp.len);
        sb_buf_adds(b, "' to='");
        xml_escape_attr(b, t->jid, strlen(t->jid));
        sb_buf_adds(b, "'");
        muc_attr(b, "type", type);
        muc_attr(b, "id", id);
        sb_buf_adds(b, ">");
        muc_children(b, st, "x", NS_MUC_USER);
        sb_buf_printf(b, "<occupant-id xmlns='" NS_OCCUPANT_ID "' id='%s'/>"
                         "<x xmlns='" NS_MUC_USER "'/></message>", o->oid);
        if (b->data)
            muc_send(t->jid, room_tmp.data, b->data, b->len);
    }
}

/* ---- voice requests (§7.13, §8.6) ---------------------------------------------- */

/* The value of a field of a data form, into v ("" when absent); 1 if present. */
static int room_field(const struct xml_node *x, const char *var, struct sb_buf *v)
{
    sb_buf_reset(v);
    sb_buf_adds(v, "");
    for (const struct xml_node *f = xml_first_elem(x); f; f = xml_next_elem(f)) {
        const char *fv = xml_attr(f, "var");
        if (strcmp(f->name, "field") || !fv || strcmp(fv, var))
            continue;
        const struct xml_node *val = xml_child(f, "value", NULL);
        if (val)
            xml_text(val, v);
        return 1;
    }
    return 0;
}

static int room_is_request(const struct xml_node *x)
{
    struct sb_buf v = SB_BUF_INIT;
    int yes = room_field(x, "FORM_TYPE", &v) && v.data && !strcmp(v.data, NS_MUC_REQUEST);
    sb_buf_free(&v);
    return yes;
}

static void room_form_field(struct sb_buf *b, const char *var, const char *type,
                            const char *label, const char *value)
{
    sb_buf_printf(b, "<field var='%s' type='%s'", var, type);
    muc_attr(b, "label", label);
    sb_buf_adds(b, "><value>");
    xml_escape_text(b, value, strlen(value));
    sb_buf_adds(b, "</value></field>");
}

/* A visitor asks for voice: every moderator gets the approval form. */
static void room_voice_request(struct muc_room *r, struct muc_occ *o, const struct xml_node *st)
{
    if (o->role != MUC_R_VISITOR) {
        muc_error(st, o->jid, r->jid, "modify", "bad-request", "you have voice already");
        return;
    }
    struct sb_buf *b = &room_buf;
    int sent = 0;
    for (struct muc_occ *m = r->occ; m; m = m->next) {
        if (m->role != MUC_R_MODERATOR)
            continue;
        sb_buf_reset(b);
        sb_buf_adds(b, "<message from='");
        xml_escape_attr(b, r->jid, strlen(r->jid));
        sb_buf_adds(b, "' to='");
        xml_escape_attr(b, m->jid, strlen(m->jid));
        sb_buf_adds(b, "'><x xmlns='" NS_DATA "' type='form'><title>Voice request</title>"
                       "<instructions>To approve this request for voice, select the &quot;Grant "
                       "voice to this person?&quot; checkbox and click OK.</instructions>");
        room_form_field(b, "FORM_TYPE", "hidden", NULL, NS_MUC_REQUEST);
        room_form_field(b, "muc#role", "list-single", "Requested role", "participant");
        room_form_field(b, "muc#jid", "jid-single", "User ID", o->jid);
        room_form_field(b, "muc#roomnick", "text-single", "Room Nickname", o->nick);
        room_form_field(b, "muc#request_allow", "boolean", "Grant voice to this person?",
                        "false");
        sb_buf_adds(b, "</x></message>");
        if (b->data)
            muc_send(m->jid, r->jid, b->data, b->len);
        sent++;
    }
    log_info("voice_requested", "room=%s nick=%s moderators=%d", sb_log_q(r->jid),
             sb_log_q(o->nick), sent);
}

/* A moderator's answer: allowed → the nick becomes a participant. */
static void room_voice_answer(struct muc_room *r, struct muc_occ *o, const struct xml_node *st,
                              const struct xml_node *x)
{
    struct sb_buf nick = SB_BUF_INIT, allow = SB_BUF_INIT;
    room_field(x, "muc#roomnick", &nick);
    room_field(x, "muc#request_allow", &allow);
    if (o->role != MUC_R_MODERATOR) {
        muc_error(st, o->jid, r->jid, "auth", "forbidden", "only moderators grant voice");
    } else if (allow.data && (!strcmp(allow.data, "1") || !strcmp(allow.data, "true"))) {
        int n = 0;
        for (struct muc_occ *t = r->occ; t; t = t->next)
            if (nick.data && !strcmp(t->nick, nick.data) && t->role == MUC_R_VISITOR) {
                t->role = MUC_R_PARTICIPANT;
                muc_store_occ(r, t);
                muc_occ_broadcast(r, t, NULL, NULL, 0, NULL, NULL);
                n++;
            }
        log_info("voice_granted", "room=%s nick=%s by=%s sessions=%d", sb_log_q(r->jid),
                 sb_log_q(nick.data), sb_log_q(o->nick), n);
    }
    sb_buf_free(&nick);
    sb_buf_free(&allow);
}

static void room_message(struct muc_room *r, const struct xml_node *st, const char *from,
                         const char *to, const struct jid *tj)
{
    const char *type = xml_attr(st, "type");
    struct muc_occ *o = muc_occ_by_jid(r, from);
    if (type && !strcmp(type, "error")) {
        if (o) {
            int code = 333;
            muc_occ_remove(r, o, &code, 1, NULL);
        }
        return;
    }
    int gc = type && !strcmp(type, "groupchat");
    if (!*tj->resource) {
        const struct xml_node *x = xml_child(st, "x", NS_MUC_USER);
        if (!gc && x && (xml_child(x, "invite", NULL) || xml_child(x, "decline", NULL))) {
            if (!r->exists)
                muc_error(st, from, to, "cancel", "item-not-found", NULL);
            else
                room_invite(r, st, from, x);
            return;
        }
        if (!r->exists) {
            muc_error(st, from, to, "cancel", "item-not-found", NULL);
            return;
        }
        const struct xml_node *form = xml_child(st, "x", NS_DATA);
        if (!gc && form && room_is_request(form)) {
            const char *ft = xml_attr(form, "type");
            if (!o)
                muc_error(st, from, to, "modify", "not-acceptable", "you are not in this room");
            else if (ft && !strcmp(ft, "submit") && o->role == MUC_R_MODERATOR)
                room_voice_answer(r, o, st, form);
            else if (ft && !strcmp(ft, "submit"))
                room_voice_request(r, o, st);
            else
                muc_error(st, from, to, "modify", "bad-request", NULL);
            return;
        }
        if (!gc) {
            muc_error(st, from, to, "modify", "bad-request", "send groupchat messages");
            return;
        }
        if (!o) {
            muc_error(st, from, to, "modify", "not-acceptable", "you are not in this room");
            log_info("message_refused", "room=%s jid=%s why=not-occupant", sb_log_q(r->jid),
                     sb_log_q(from));
            return;
        }
        const struct xml_node *subj = xml_child(st, "subject", NULL);
        if (subj && !xml_child(st, "body", NULL)) {
            room_subject(r, o, st, subj);
            return;
        }
        if (o->role < MUC_R_PARTICIPANT) {
            muc_error(st, from, to, "auth", "forbidden", "visitors have no voice here");
            log_info("message_refused", "room=%s jid=%s why=no-voice", sb_log_q(r->jid),
                     sb_log_q(from));
            return;
        }
        room_groupchat(r, o, st, xml_child(st, "body", NULL) != NULL);
        return;
    }
    if (gc) {
        muc_error(st, from, to, "modify", "bad-request", "groupchat goes to the room");
        return;
    }
    if (!o) {
        muc_error(st, from, to, "modify", "not-acceptable", "you are not in this room");
        return;
    }
    room_private(r, o, st, tj->resource);
}

void muc_room_stanza(struct muc_room *r, struct xml_doc *d, const char *from)
{
    const struct xml_node *st = d->root;
    const char *to = xml_attr(st, "to");
    struct jid tj;
    if (!to || jid_parse(&tj, to) != SB_OK)
        return;
    char *jid = strdup(r->jid);          /* the handlers may free r */
    if (!jid)
        return;
    if (!strncmp(from, "sbctl\n", 6)) {
        struct sb_buf why = SB_BUF_INIT;
        const struct xml_node *rs = xml_child(st, "query", NULL);
        rs = rs ? xml_child(rs, "destroy", NULL) : NULL;
        rs = rs ? xml_child(rs, "reason", NULL) : NULL;
        if (rs)
            xml_text(rs, &why);
        muc_sbctl_destroy(r, from, why.data ? why.data : "");
        sb_buf_free(&why);
    } else if (!strcmp(st->name, "presence"))
        room_presence(r, st, from, to, &tj);
    else if (!strcmp(st->name, "message"))
        room_message(r, st, from, to, &tj);
    else if (!strcmp(st->name, "iq"))
        muc_room_iq(r, st, from, to);
    /* A temporary room nobody entered (an iq, a refused join) is not kept. */
    struct muc_room *still;
    HASH_FIND_STR(muc.rooms, jid, still);
    if (still == r && !r->exists && !r->occ) {
        HASH_DEL(muc.rooms, r);
        muc_room_free(r);
    }
    free(jid);
}
