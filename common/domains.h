/* domains.h — the local domains this process serves, one copy for every
 * front-end: `SELECT name, anonymous FROM domains` through pgev at start and
 * every 30 s (every 2 s until the first answer or after a queue failure).
 * Names are nameprepped; a failed refresh keeps the last good list. Found
 * names are interned for the process, so connections may keep the pointer. */
#ifndef SB_DOMAINS_H
#define SB_DOMAINS_H

#include "pgev.h"
#include <ev.h>

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

#endif
