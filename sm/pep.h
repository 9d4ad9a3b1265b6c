/* pep.h — PEP (XEP-0163): the personal pubsub nodes of one account, cached
 * in the owning sm with the account (acct.h: loaded by the account query,
 * rows 'q' node and 'k' item from pep_nodes / pep_items, migration 008),
 * and the XEP-0115 entity capabilities that say who wants notifications.
 *
 * A node keeps its items oldest first (the last one is the "last published
 * item" sent on presence). `peers` are the full JIDs whose available
 * presence this account's sm has seen — its own resources and contacts —
 * each with the caps key ("hash:ver") its presence carried; notifications
 * go to the peers whose caps list NODE+notify and whom the node's access
 * model allows (see mod_pep.c). The caps cache (caps.c) is one per sm,
 * backed by Redis `caps:<hash>:<ver>` for the whole cluster. */
#ifndef SB_SM_PEP_H
#define SB_SM_PEP_H

#include "sm.h"

enum pep_access { PEP_ACCESS_PRESENCE, PEP_ACCESS_OPEN, PEP_ACCESS_WHITELIST };
const char *pep_access_name(enum pep_access a);
int pep_access_parse(const char *s);     /* -1: unknown */

struct pep_item {
    char *id;
    char *payload;                      /* the serialised payload element */
    long long seq;
};

struct pep_node {
    char *name;
    enum pep_access access;
    unsigned persist : 1;
    long max_items;                     /* -1: the server's limit (`max`) */
    struct pep_item *items;             /* oldest first */
    int nitems, cap;
};

struct pep_peer {
    char *jid;                          /* full JID (hash key), owned */
    char *caps;                         /* "hash:ver", owned, NULL: none */
    unsigned got_last : 1;              /* the last items were sent */
    UT_hash_handle hh;
};

struct sm_pep {
    struct pep_node *nodes;
    int nnodes, cap;
    long long seq;                      /* highest item seq loaded or given */
    struct pep_peer *peers;
};

/* The account query's PEP rows (acct.c ACCT_SQL, im.c SM_IM_ACCT_SQL), `pad`
 * filling the columns a query has beyond five ("" or ", ''"). */
#define SM_PEP_ACCT_SQL(pad)                                                              \
    " UNION ALL SELECT 'q', node, access_model, persist_items::text, max_items::text" pad \
    " FROM pep_nodes WHERE domain = $1 AND username = $2"                                 \
    " UNION ALL SELECT 'k', node, item_id, payload, seq::text" pad                        \
    " FROM pep_items WHERE domain = $1 AND username = $2"

/* ---- the cache (pep.c) --------------------------------------------------- */
void sm_pep_free(struct sm_pep *p);
/* One row of the account query: 'q' (node, access, persist t/f, max) or
 * 'k' (node, item id, payload, seq). SB_ERROR on out-of-memory. */
sb_rc sm_pep_row(struct sm_pep **pp, char kind, const char *a, const char *b,
                 const char *c, const char *d);
struct pep_node *sm_pep_node(struct sm_pep *p, const char *name);
struct pep_node *sm_pep_node_add(struct sm_pep *p, const char *name);
void sm_pep_node_del(struct sm_pep *p, const char *name);
struct pep_item *sm_pep_item(struct pep_node *n, const char *id);
/* Append (or replace and move to the end) an item; payload copied. */
sb_rc sm_pep_item_put(struct pep_node *n, const char *id, const char *payload, long long seq);
void sm_pep_item_del(struct pep_node *n, const char *id);
/* The node's effective limit (max_items, or the server's for `max`). */
long sm_pep_max_items(const struct pep_node *n);

/* ---- XEP-0115 caps (caps.c) ---------------------------------------------- */
/* The verification string's SHA-1 (base64) of a disco#info <query/>
 * (XEP-0115 §5.1) into out (cap ≥ 29). SB_ERROR for a query that cannot
 * verify anything (duplicate identities or features, bad forms). */
sb_rc sm_caps_hash_sha1(const struct xml_node *query, char *out, size_t cap);

enum caps_state { CAPS_UNKNOWN, CAPS_PENDING, CAPS_KNOWN, CAPS_BAD };
/* What the sm knows of caps key `key` ("hash:ver"). For an unknown one it
 * starts the lookup (Redis, then one disco#info query from `owner` to
 * `jid` for node `cnode`#ver) and answers CAPS_PENDING; when the answer
 * is known, sm_pep_caps_known() runs. */
enum caps_state sm_caps_lookup(struct sm_core *c, const char *key, const char *cnode,
                               const char *jid, const char *owner);
/* 1 when caps `key` (known) lists feature `var`. */
int sm_caps_has(const char *key, const char *var);
/* An iq result/error to a user's bare JID with an id we gave a caps query:
 * consumes it (SB_OK) or SB_DECLINED. */
sb_rc sm_caps_answer(struct sm_job *j);
void sm_caps_stop(void);

/* mod_pep: caps `key` became known: peers waiting for it get the last items. */
void sm_pep_caps_known(struct sm_core *c, const char *key);
/* mod_account: PEP disco#items of the account j->user for j's sender
 * (the nodes it may see) under q. */
sb_rc sm_pep_disco_items(struct sm_job *j, struct xml_doc *d, struct xml_node *q);

/* ---- on the user's behalf (mod_pep.c) ----------------------------------- */
/* Runs when a server-made write is through (ok = stored and cached, the
 * events sent); owns the job from then on: it calls sm_job_done() or
 * starts the next write. */
typedef void (*sm_pep_done_cb)(struct sm_job *j, int ok, void *arg);
/* Publish or retract as the user would (stored, cached, notified), but
 * for the server's own reasons (pep_compat.c), so no iq is answered; a
 * new node gets `access` (enum pep_access), persist and max_items (-1:
 * max). SB_AGAIN: started, `done` will run; SB_ERROR: nothing started. */
sb_rc sm_pep_publish_as(struct sm_job *j, const char *node, const char *id, const char *payload,
                        int access, long max_items, sm_pep_done_cb done, void *arg);
sb_rc sm_pep_retract_as(struct sm_job *j, const char *node, const char *id, sm_pep_done_cb done,
                        void *arg);
struct sm_pep *sm_pep_of(struct sm_user *u);

/* ---- XEP-0398 / XEP-0411: the older stores kept in step (pep_compat.c) --- */
#define SM_NS_AVATAR_DATA "urn:xmpp:avatar:data"
#define SM_NS_AVATAR_META "urn:xmpp:avatar:metadata"
#define SM_NS_BOOKMARKS2 "urn:xmpp:bookmarks:1"
#define SM_NS_VCARD_CONVERSION "urn:xmpp:pep-vcard-conversion:0"
#define SM_NS_BOOKMARKS_COMPAT SM_NS_BOOKMARKS2 "#compat"
/* After the user's own write to `node` (mod_pep): the avatar metadata
 * goes into the vCard's PHOTO, the bookmarks into private storage.
 * SB_AGAIN when it took the job over (calls sm_job_done itself). */
sb_rc sm_pep_compat_after(struct sm_job *j, const char *node);
/* mod_vcard, after storing the user's vCard (`vcard`, the element set):
 * a valid PHOTO is published as the avatar. SB_AGAIN: took the job over. */
sb_rc sm_pep_compat_vcard_set(struct sm_job *j, const struct xml_node *vcard);
/* mod_private, after storing `query`'s children: storage:bookmarks goes
 * to the PEP bookmarks node. SB_AGAIN: took the job over. */
sb_rc sm_pep_compat_private_set(struct sm_job *j, const struct xml_node *query);
/* mod_pep, an own outbound available presence (broadcast or directed):
 * the avatar's hash as vcard-temp:x:update (XEP-0398 §4). */
void sm_pep_compat_presence(struct sm_job *j);
/* mod_vcard: the vCard's PHOTO replaced by (type, base64) — read, edited,
 * written on j's queue; calls sm_job_done when through. SB_AGAIN, or
 * SB_ERROR when nothing started. */
sb_rc sm_vcard_photo_set(struct sm_job *j, const char *type, const char *b64);

#define SM_NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define SM_NS_CAPS "http://jabber.org/protocol/caps"

#endif
