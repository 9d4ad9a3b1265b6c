/* muc.h — sb-muc, the multi-user chat service (XEP-0045) at
 * `[muc] subdomain`.DOMAIN: its rooms, occupants and affiliations, and the
 * functions the files share (main.c the process and the bus, room.c
 * presence and messages, admin.c the iqs on a room, store.c PostgreSQL and
 * Redis). One room lives on one instance: the routers send every stanza for
 * room@service to the instance its bare JID hashes to (common/route.c). */
#ifndef SB_MUC_H
#define SB_MUC_H

#include <ev.h>
#include <uthash.h>

#include "sb.h"
#include "buf.h"
#include "jid.h"
#include "link.h"
#include "pgev.h"
#include "rdev.h"
#include "xml.h"

#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define NS_MUC_ADMIN "http://jabber.org/protocol/muc#admin"
#define NS_MUC_OWNER "http://jabber.org/protocol/muc#owner"
#define NS_OCCUPANT_ID "urn:xmpp:occupant-id:0"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_DATA "jabber:x:data"
#define NS_MUC_REQUEST "http://jabber.org/protocol/muc#request"
#define NS_MUC_REGISTER "http://jabber.org/protocol/muc#register"
#define NS_REGISTER "jabber:iq:register"
#define NS_MAM "urn:xmpp:mam:2"
#define NS_SID "urn:xmpp:sid:0"
#define MUC_SID_MAX 17                  /* a room archive's stanza id, with its NUL */
#define MUC_IQ_PENDING_MAX 64           /* iqs forwarded to occupants awaiting answers, per room */

/* Ordered: a higher one may act on the lower ones. */
enum muc_aff { MUC_A_OUTCAST, MUC_A_NONE, MUC_A_MEMBER, MUC_A_ADMIN, MUC_A_OWNER };
enum muc_role { MUC_R_NONE, MUC_R_VISITOR, MUC_R_PARTICIPANT, MUC_R_MODERATOR };

const char *muc_aff_name(int a);
const char *muc_role_name(int r);
int muc_aff_parse(const char *s);        /* -1 when unknown */
int muc_role_parse(const char *s);

/* muc#roomconfig (admin.c's form; store.c's columns). */
struct muc_cfg {
    char *name, *desc, *password;       /* owned; "" when none */
    int persistent, public_room, members_only, moderated, whois_anyone, change_subject,
        allow_invites, max_users,       /* max_users 0: no limit */
        archiving;                      /* XEP-0313 on the room (muc/mam.c) */
};

struct muc_occ {
    char *nick, *jid, *bare;            /* room nick; the real full and bare JID */
    int role;
    char *pres;                         /* the last presence's children (no muc x) */
    char oid[48];                       /* XEP-0421 occupant id */
    struct muc_occ *next;
};

struct muc_affil {
    char *jid;                          /* bare JID (or a domain) */
    int aff;
    char *reason;
    char *nick;                         /* reserved nick (§7.10), NULL: none */
};

struct muc_hist {                       /* one groupchat message kept for joiners */
    char *head;                         /* "<message from='room/nick' type='groupchat'…" */
    char *inner;                        /* its children */
    double at;                          /* wall clock, seconds */
    size_t chars;
};

struct muc_fwd {                        /* an iq forwarded to an occupant (§18.6 / XEP-0045 iq) */
    char id[24];                        /* the id it went out with */
    char *asker, *asker_id;             /* who asked (real full JID) and its id */
    char *target;                       /* where it went: the answer must come from there */
    char *nick;                         /* the target's nick: the answer's from */
    double at;
};

struct muc_pend {                       /* a stanza that came while the room loaded */
    struct muc_pend *next;
    char *aux, *body;
    size_t len;
};

struct muc_room {
    char *jid;                          /* room bare JID: the hash key */
    int loading;                        /* loads still owed (PostgreSQL, Redis) */
    int load_failed;
    int exists;                         /* created, or found in PostgreSQL */
    int locked;                         /* created, not configured yet (§10.1.2): owners only */
    struct muc_cfg cfg;
    struct muc_occ *occ;
    int nocc;
    struct muc_affil *aff;
    int naff, aff_cap;
    struct muc_hist *hist;              /* ring of muc.history_max */
    int hist_n, hist_head;
    int hist_unsaved;                   /* newest entries not yet in Redis */
    struct muc_room *dirty_next;        /* on muc.hist_dirty */
    int dirty;
    struct muc_fwd fwd[MUC_IQ_PENDING_MAX];
    int nfwd;
    char *subject, *subject_nick;       /* NULL: never set */
    struct muc_pend *pend, **pend_tail;
    UT_hash_handle hh;
};

struct muc_srv {
    struct ev_loop *loop;
    const char *instance;
    struct link *link;
    struct pgev *pg;
    struct rdev *rd;
    struct muc_room *rooms;
    struct xml_limits limits;
    int history_max;
    int max_occupants;                  /* a room's hard limit */
    char oid_key[256];
    ev_timer sweep, hist_flush;
    struct muc_room *hist_dirty;        /* rooms with history to write to Redis */
    double hist_flush_s;
    /* Stanzas from the bus, handled a slice at a time (main.c main_work). */
    struct muc_pend *work, **work_tail;
    long work_n, work_peak;             /* queued now; the most since the queue was last empty */
    double work_slice_s, work_max_s;    /* [muc] work_slice_ms; the longest slice since */
    ev_check work_check;
    ev_idle work_idle;
    int stopping;
    struct sb_buf hello;
};
extern struct muc_srv muc;

/* ---- main.c: sending ---------------------------------------------------- */
/* Append ` name='value'` (escaped); nothing when v is NULL. */
void muc_attr(struct sb_buf *b, const char *name, const char *v);
/* A stanza built here, to a real JID (routed by its bare JID). */
void muc_send(const char *to, const char *from, const char *body, size_t len);
/* The stanza error reply to st (never to an error): from/to swapped. */
void muc_error(const struct xml_node *st, const char *from, const char *to, const char *type,
               const char *cond, const char *text);
/* The <x xmlns=muc/> of a presence error, so clients tie it to the join. */
void muc_presence_error(const char *room_nick, const char *to, const char *type,
                        const char *cond);
/* An iq result with an optional payload (serialised XML or NULL). */
void muc_iq_result(const struct xml_node *st, const char *from, const char *to,
                   const char *payload, size_t len);
/* Add every child of n but those named `skip` in namespace skip_ns (and
 * occupant-id, which only the service sets). */
void muc_children(struct sb_buf *b, const struct xml_node *n, const char *skip,
                  const char *skip_ns);
int muc_is_mine(const char *room);      /* does the room still hash to us? */
/* A stanza sbctl made (from "sbctl\nID"): destroy the room, answer sbctl; 0 if not one. */
int muc_sbctl_destroy(struct muc_room *r, const char *from, const char *reason);
/* Stopping: exit once the archive and the history are written. */
void muc_stop_check(void);

/* ---- room.c --------------------------------------------------------------- */
struct muc_room *muc_room_new(const char *jid);
void muc_room_free(struct muc_room *r);
/* Room gone for good (last occupant of a temporary room, destroyed). */
void muc_room_delete(struct muc_room *r);
void muc_room_stanza(struct muc_room *r, struct xml_doc *d, const char *from);
struct muc_occ *muc_occ_by_nick(const struct muc_room *r, const char *nick);
struct muc_occ *muc_occ_by_jid(const struct muc_room *r, const char *jid);
struct muc_occ *muc_occ_by_bare(const struct muc_room *r, const char *bare);  /* a session */
int muc_aff_of(const struct muc_room *r, const char *bare);
/* Set an affiliation (MUC_A_NONE removes it); stored. */
void muc_aff_set(struct muc_room *r, const char *bare, int aff, const char *reason);
int muc_owners(const struct muc_room *r);
/* Presence of o to every occupant (type NULL: available). */
void muc_occ_broadcast(struct muc_room *r, struct muc_occ *o, const char *type,
                       const int *codes, int ncodes, const char *nick, const char *extra);
/* o's presence to one occupant (its own: with 110). */
void muc_occ_presence_one(struct muc_room *r, struct muc_occ *o, struct muc_occ *to,
                          const char *type, const char *extra);
/* An occupant read back from Redis (store.c). */
void muc_occ_restore(struct muc_room *r, const char *nick, const char *jid, int role,
                     const char *pres);
/* Take o out (kicked, banned, left), telling everyone with these codes. */
void muc_occ_remove(struct muc_room *r, struct muc_occ *o, const int *codes, int ncodes,
                    const char *reason);
int muc_role_for(const struct muc_room *r, int aff);
/* Tell every occupant a status code (104 config changed, 172/173 privacy). */
void muc_room_notice(struct muc_room *r, int code);
void muc_cfg_defaults(struct muc_cfg *c);
void muc_cfg_free(struct muc_cfg *c);
void muc_set_str(char **dst, const char *s);
double muc_wall(void);                  /* wall clock, seconds */
/* A reserved nick's owner (bare JID), NULL: not reserved. */
const char *muc_nick_owner(const struct muc_room *r, const char *nick);
struct muc_affil *muc_affil_of(struct muc_room *r, const char *bare);   /* NULL: none */
/* A history entry read back from Redis (store.c), oldest first. */
void muc_hist_restore(struct muc_room *r, double at, const char *head, size_t hlen,
                      const char *inner);
/* Two sessions of one occupant: the same nick and bare JID (§7.2 multi-session). */
int muc_same_occupant(const struct muc_occ *a, const struct muc_occ *b);

/* ---- admin.c: iqs on a room ----------------------------------------------- */
void muc_room_iq(struct muc_room *r, const struct xml_node *st, const char *from,
                 const char *to);
void muc_room_destroy(struct muc_room *r, const char *alt, const char *reason);
/* An iq result/error from an occupant to room/nick: the answer to one we forwarded. */
void muc_iq_answer(struct muc_room *r, const struct xml_node *st, const char *from,
                   const char *to);
void muc_fwd_free(struct muc_room *r);

/* ---- mam.c: the room archive ------------------------------------------------ */
void muc_mam_start(void);
void muc_mam_stop(void);
void muc_mam_flush(int stopping);
long muc_mam_waiting(void);
/* Archive a groupchat message of a room with archiving on (its bytes
 * without `to`, with its <stanza-id/> sid already in): 0 when not archived
 * (the buffer is full). */
int muc_mam_add(struct muc_room *r, const char *nick, const char *stanza, size_t len,
                const char *body, size_t blen, const char *sid);
void muc_mam_iq(struct muc_room *r, const struct xml_node *st, const char *from,
                const struct xml_node *q, int get);
void muc_mam_delete(const char *room);

/* ---- store.c --------------------------------------------------------------- */
void muc_store_load(struct muc_room *r);          /* r->loading set; muc_room_loaded after */
void muc_room_loaded(struct muc_room *r);         /* main.c: run what waited */
void muc_store_room(struct muc_room *r);          /* config + subject */
void muc_store_aff(struct muc_room *r, const char *bare, int aff, const char *reason);
void muc_store_delete(struct muc_room *r);
void muc_store_occ(struct muc_room *r, const struct muc_occ *o);
void muc_store_occ_del(struct muc_room *r, const struct muc_occ *o);
/* History to Redis `muc:{room}:h`, batched every [muc] history_flush_ms. */
void muc_store_hist_dirty(struct muc_room *r);
void muc_store_hist_flush(struct muc_room *r);     /* this room now (handover) */
void muc_store_hist_flush_all(void);
void muc_store_hist_forget(struct muc_room *r);    /* off the dirty list (freed) */
long muc_store_pending(void);
void muc_store_public_rooms(const struct xml_node *st, const char *from, const char *to);

#endif
