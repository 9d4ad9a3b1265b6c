/* acct.h — what the sm knows about one local account beyond its sessions,
 * loaded from PostgreSQL with the user record (one query) and kept in the
 * owning sm so that no stanza needs SQL:
 *   exists      the account has a `users` row (anonymous ones have none)
 *   block       the user's blocklist (XEP-0191), items as stored
 *   blocked_by  (owner, item) pairs: local users whose blocklist names this
 *               user by bare or full JID, for refusing what they send here
 *   last_status <status/> of the user's last unavailable presence
 *   push        XEP-0357 registrations (push service JID, node, publish
 *               options) from push_registrations, and push_count: messages
 *               a detached stream queued since the user was last online
 *   mam         XEP-0313 archiving preferences (mod_mam.c)
 *   pep         XEP-0163 nodes and items, and the peers to notify (pep.h)
 * Owners of other records tell this one about changes with the control
 * `blocked-by` (mod_blocking). Modules read it through the helpers below. */
#ifndef SB_SM_ACCT_H
#define SB_SM_ACCT_H

#include "sm.h"
#include "mam.h"

struct sm_acct_by {
    char *owner;                        /* bare JID of the blocker */
    char *item;                         /* the item that names us */
};

/* One XEP-0357 registration (a row of push_registrations). */
struct sm_push_reg {
    long long id;                       /* the row's id */
    char *jid;                          /* push service, as prepared */
    char *node;
    char *options;                      /* serialised publish-options <x/>, or "" */
};

struct sm_acct {
    unsigned exists : 1, loaded : 1;
    struct sm_push_reg *push;
    int npush, cappush;
    long push_count;                    /* mod_push: reset when a session comes back */
    char **block;
    int nblock, capblock;
    struct sm_acct_by *by;
    int nby, capby;
    char *last_status;
    struct mam_prefs mam;
    struct sm_pep *pep;                 /* PEP nodes (pep.h), NULL: none yet */
};

/* The module hooks (mod_account registers them). */
sb_rc sm_acct_load(struct sm_user *u);
void sm_acct_free(struct sm_user *u);

/* XEP-0191 §6 / XEP-0016 JID matching: does blocklist `item` cover `jid`?
 * (full = exact; bare = any resource; domain = the domain and every JID at
 * it; domain/resource = exact). Both already prepared. */
int sm_acct_jid_match(const char *item, const char *jid);

/* Is `jid` blocked by the user?  Is `to` blocked by local user `owner`? */
int sm_acct_blocks(const struct sm_acct *a, const char *jid);
int sm_acct_blocked_by(const struct sm_acct *a, const char *owner, const char *to);

/* Cache edits; SB_ERROR on out-of-memory. Adding an existing entry is a no-op. */
sb_rc sm_acct_block_add(struct sm_acct *a, const char *item);
void sm_acct_block_del(struct sm_acct *a, const char *item);
void sm_acct_block_clear(struct sm_acct *a);
sb_rc sm_acct_by_add(struct sm_acct *a, const char *owner, const char *item);
void sm_acct_by_del(struct sm_acct *a, const char *owner, const char *item);
void sm_acct_set_last_status(struct sm_acct *a, const char *status);
/* Push registrations: add (or replace the options of) the (jid, node)
 * pair; delete one pair, or every pair of jid when node is NULL. */
sb_rc sm_acct_push_set(struct sm_acct *a, long long id, const char *jid, const char *node,
                       const char *options);
void sm_acct_push_del(struct sm_acct *a, const char *jid, const char *node);
struct sm_push_reg *sm_acct_push_find(const struct sm_acct *a, const char *jid,
                                      const char *node);

/* "node@domain" → node (copied into out, cap bytes) and domain (pointer
 * into bare). SB_ERROR when it is not node@domain or too long. */
sb_rc sm_acct_split(const char *bare, char *node, size_t cap, const char **domain);

/* Does the account exist: a `users` row, or live sessions (anonymous)? */
int sm_acct_user_exists(const struct sm_user *u);

/* May the sender of j see what the server answers on behalf of the user
 * j->user (disco, last activity, ping)? The user themself, or a contact
 * with a subscription to the user's presence (roster state `from`/`both`,
 * RFC 6121; im.h, loaded on first use). SB_OK: yes; SB_DECLINED: no
 * (answer service-unavailable, as for no such account); SB_AGAIN: the
 * roster is loading, return SB_AGAIN (the job is re-offered to module m);
 * SB_ERROR: it could not be loaded. */
sb_rc sm_acct_authorize(struct sm_job *j, const struct sm_module *m);

#endif
