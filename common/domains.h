/* domains.h — the local domains this process serves, one copy for every
 * front-end: `SELECT name, anonymous FROM domains` through pgev at start,
 * at once when a change is published on the Redis channel SB_DOMAINS_CHANNEL
 * (sbctl domain add/del; a Redis connection of its own, SUBSCRIBEd again
 * after every reconnection, which also reloads), and every 30 s as the
 * fallback (every 2 s until the first answer or after a queue failure).
 * Names are nameprepped; a failed refresh keeps the last good list. Found
 * names are interned for the process, so connections may keep the pointer. */
#ifndef SB_DOMAINS_H
#define SB_DOMAINS_H

#include "pgev.h"
#include "buf.h"
#include <ev.h>
#include <stddef.h>

/* Redis pub/sub channel: the payload (`add NAME`, `del NAME`) is only
 * logged; every message means "read the domains table again". */
#define SB_DOMAINS_CHANNEL "sb:domains"

/* Called after a load that changed the set of names (always the first). */
typedef void (*sb_domains_fn)(void *ud);

void sb_domains_start(struct ev_loop *loop, struct pgev *pg, sb_domains_fn on_change, void *ud);
void sb_domains_stop(void);          /* no more refreshes; the list is dropped */
int sb_domains_loaded(void);
int sb_domains_count(void);
/* Interned name of a served domain (already nameprepped), or NULL. */
const char *sb_domains_find(const char *prepared);
int sb_domains_has(const char *prepared);
int sb_domains_anonymous(const char *prepared);
const char *sb_domains_csv(void);    /* "a,b" for link_set_domains, "" before */

/* Front-ends: sb_domains_start, and `accept` once after the first load
 * (listeners open then, so no stream header is judged against an empty
 * list); on_change (may be NULL) after every change, the first included. */
void sb_domains_serve(struct ev_loop *loop, struct pgev *pg, void (*accept)(void),
                      sb_domains_fn on_change, void *ud);

/* ---- the MUC service (XEP-0045, sb-muc) --------------------------------
 * Every local domain D that is not anonymous has its MUC service at
 * `[muc] subdomain`.D (default "conference"; empty: none), read at each
 * call. The local domain whose service `prepared` names, or NULL. */
const char *sb_domains_muc_parent(const char *prepared);
/* "conference.a,conference.b" for every served domain (sb-muc's HELLO). */
sb_rc sb_domains_muc_csv(struct sb_buf *out);
/* The service of one local domain into out (cap bytes); SB_DONE when the
 * domain has none (anonymous, or no subdomain configured). */
sb_rc sb_domains_muc_of(const char *domain, char *out, size_t cap);

/* ---- per-domain settings ([domain.NAME], read at each call: SIGHUP applies) */
/* Which remote domains a local domain may exchange stanzas with, as a
 * policy value: its s2s_policy; for an anonymous domain without one
 * "allow: " and its s2s_allow list (none by default: what its visitors
 * may reach); NULL when neither is set (the caller's default applies).
 * buf holds a composed value. */
const char *sb_domains_s2s_policy(const char *domain, char *buf, size_t cap);
/* A policy value: allow | deny | allow: a.example b.example |
 * deny: a.example, b.example (names case-insensitive). 1 when remote may
 * pass, 0 when not, -1 when the value is malformed. */
int sb_domains_policy_eval(const char *value, const char *remote);

#endif
