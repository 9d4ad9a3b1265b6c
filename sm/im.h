/* im.h — the IM state of one cached user, shared by mod_roster,
 * mod_presence and mod_offline: the roster (each contact's subscription
 * state, name and groups), its version, the pending inbound subscription
 * requests, and per-resource flags (asked for the roster, sent directed
 * presence to whom).
 *
 * Loaded once per cached user — one PostgreSQL query (roster,
 * roster_pending, roster_version, users, offline count; when a session
 * starts, joined to the account query) and one Redis HGETALL im:{bare} —
 * and kept in memory while the user record lives, so presence broadcasts
 * and deliveries need no I/O. Every change is written through: roster rows
 * keep a per-user version (assigned here, +1 per change) and removed rows
 * stay as tombstones, so a client's old `ver` gets just the changes since. */
#ifndef SB_SM_IM_H
#define SB_SM_IM_H

#include "sm.h"
#include "sub.h"

#define SM_NS_ROSTER "jabber:iq:roster"

struct sm_im_item {
    char *jid;              /* contact bare JID (hash key), owned */
    char *name;             /* owned, NULL when none */
    char *groups;           /* group names joined by U+001F, owned ("" = none) */
    char *pend;             /* the stored subscribe request while PEND_IN, owned */
    int state;              /* SM_SUB_* bits */
    unsigned in_roster : 1; /* 0: only a pending inbound request, no item */
    UT_hash_handle hh;
};

struct sm_im_res {
    char *resource;         /* owned */
    char *directed;         /* "\n"-joined JIDs that got directed available
                               presence (RFC 6121 §4.6), owned, NULL if none */
    unsigned roster_req : 1;/* asked for the roster: an interested resource */
};

struct sm_im {
    struct sm_user *user;   /* NULL once the user record is gone */
    struct sm_im_item *items;
    int nroster;            /* items with in_roster */
    long long ver;          /* current roster version */
    struct sm_im_res *res;
    int nres, capres;
    int exists;             /* the account has a users row */
    long offline;           /* stored offline messages (at the load, plus
                               what this sm stored since): 0 = no fetch */
    int wait;               /* load replies still outstanding */
    struct sm_job *job;     /* rerun when the load finishes */
    const struct sm_module *mod;
    double retry_at;        /* after a failed load: no new try before */
    unsigned loaded : 1, failed : 1;
    unsigned preload_failed : 1;   /* the eager load's query failed */
    int preload;            /* eager load replies still outstanding */
};

/* Limits from [sm] (read at the first use and on SIGHUP): roster_max_items (1000), roster_max_name
 * (1023 bytes), roster_max_group (1023), roster_max_groups (64),
 * offline_max (100 stored messages per user), contacts_roster_max (1000
 * items: a contact in place takes no new account beyond it). */
struct sm_im_limits {
    long items, name, group, groups, offline, contacts;
};
const struct sm_im_limits *sm_im_limits(void);
/* SIGHUP: read them again; logs `reload` with the keys that changed. */
void sm_im_limits_reload(void);

/* SB_OK: j->user's IM state is loaded. SB_AGAIN: loading started; the job
 * will be offered again to module m when it is done (return SB_AGAIN).
 * SB_ERROR: loading failed (PostgreSQL down); a later call retries. */
sb_rc sm_im_ready(struct sm_job *j, const struct sm_module *m);
/* The module hook that frees a user's IM state (listed in mod_roster). */
void sm_im_user_free(struct sm_user *u);

/* Eager load when a session starts: a record created for a `bind` needs
 * the IM state next (roster get, initial presence), so user.c calls
 * sm_im_preload() while loading the record: HGETALL im:{bare} joins the
 * pipelined session load (counted in u->load_wait) and the account query
 * (acct.c) becomes SM_IM_ACCT_SQL, which answers both in one statement and
 * hands its rows (NULL: failed) to sm_im_preload_rows(). Once the record is
 * loaded the state is loaded too; if the query failed it is dropped and the
 * first sm_im_ready() loads it the ordinary way. Rows: 'u' users row, 'b'
 * own blocklist item, 'r' blocked by, 'n' push registration (acct.c); 'i' roster item, 'p' pending
 * request, 'v' roster version, 'o' offline count (here). */
extern const char SM_IM_ACCT_SQL[];
void sm_im_preload(struct sm_user *u);
int sm_im_preloading(const struct sm_user *u);
void sm_im_preload_rows(struct sm_user *u, PGresult *res);

/* ---- items ----------------------------------------------------------------- */
struct sm_im_item *sm_im_find(struct sm_im *im, const char *jid);
/* Find or create (state none, not in the roster). NULL on no memory. */
struct sm_im_item *sm_im_get(struct sm_im *im, const char *jid);
void sm_im_drop(struct sm_im *im, struct sm_im_item *it);
sb_rc sm_im_set_str(char **dst, const char *v);

/* A roster row to write: what the contact's item becomes. */
struct sm_im_row {
    const char *jid, *name, *groups;
    int state;
    int removed;            /* write a tombstone */
    long long ver;          /* filled by sm_im_write */
};
/* Write the row with the next version (row->ver). cb NULL: fire and forget
 * (failures are logged). Writes of one sm run in order on one connection. */
sb_rc sm_im_write(struct sm_user *u, struct sm_im_row *row, pgev_cb cb, void *arg);
/* Write an item as it is in memory and push it to interested resources. */
void sm_im_commit(struct sm_user *u, struct sm_im_item *it);
/* Store or delete the item's pending request (roster_pending). */
void sm_im_write_pending(struct sm_user *u, const struct sm_im_item *it);

/* ---- roster XML and pushes ------------------------------------------------- */
void sm_im_item_xml(struct sb_buf *b, const char *jid, const char *name, const char *groups,
                    int state, int removed);
/* RFC 6121 §2.1.6: a push of one item to every interested resource. */
void sm_im_push(struct sm_user *u, const char *item_xml, size_t len, long long ver);

/* ---- resources --------------------------------------------------------------- */
struct sm_im_res *sm_im_res(struct sm_im *im, const char *resource, int create);
void sm_im_res_forget(struct sm_user *u, const char *resource);
void sm_im_set_roster_req(struct sm_user *u, const char *resource);
/* Directed presence bookkeeping (mirrored in Redis for a takeover). */
void sm_im_directed_add(struct sm_user *u, const char *resource, const char *jid);
void sm_im_directed_del(struct sm_user *u, const char *resource, const char *jid);

/* ---- helpers ------------------------------------------------------------------ */
/* "node@domain" → node copied into out (cap bytes) and *domain. -1 if not a
 * user JID or too long. */
int sm_im_split(const char *bare, char *node, size_t cap, const char **domain);
/* `body` (a serialised stanza without `to`) with to='…' inserted after the
 * element name, into b (reset first). */
sb_rc sm_im_with_to(struct sb_buf *b, const char *body, size_t len, const char *to);
/* Bare JID of s into out (cap); -1 when too long. */
int sm_im_bare(const char *s, char *out, size_t cap);

/* ---- offline messages (mod_offline.c) ------------------------------------------ */
/* Deliver and delete the user's stored messages to `resource` (after its
 * available presence with priority ≥ 0). SB_AGAIN: the job finishes when
 * they were handed to the front-end; SB_OK: nothing was started. */
sb_rc sm_offline_flush(struct sm_job *j, const char *resource);

#endif
