/* pgev.h — PostgreSQL on the libev loop, never blocking it.
 *
 * One pgev owns one libpq connection in non-blocking mode. Queries are
 * queued and sent in order; each callback gets the PGresult (owned by pgev,
 * freed after the callback returns) or NULL when the database could not be
 * reached or the connection broke mid-query. The connection is re-opened
 * with back-off; queued queries wait (up to `timeout` seconds each, then
 * fail with NULL) so a database restart loses nothing that can be retried. */
#ifndef SB_PGEV_H
#define SB_PGEV_H

#include <ev.h>
#include <libpq-fe.h>
#include "sb.h"
#include "buf.h"

struct pgev;
typedef void (*pgev_cb)(PGresult *res, void *arg);

/* Connection parameters: the conninfo string (`postgres`) plus what the
 * config adds without splicing secrets into it: postgres_password or
 * postgres_password_file, postgres_sslmode, postgres_sslrootcert,
 * postgres_sslcert, postgres_sslkey. kw/val are NULL-terminated, for
 * PQconnect*Params with expand_dbname = 1. */
#define SB_PG_PARAMS_MAX 8
struct sb_pg_params {
    const char *kw[SB_PG_PARAMS_MAX], *val[SB_PG_PARAMS_MAX];
    char password[512];
};
/* SB_ERROR (logged) for a bad password file. */
sb_rc sb_pg_params_from_config(struct sb_pg_params *p, const char *conninfo);
void sb_pg_params_wipe(struct sb_pg_params *p);

/* conninfo plus the config's PostgreSQL keys (sb_pg_params_from_config).
 * NULL on a bad password file or out of memory. */
struct pgev *pgev_new(struct ev_loop *loop, const char *conninfo);
void pgev_free(struct pgev *pg);     /* pending callbacks get NULL */

/* Parameters are text, copied. SB_ERROR only on out-of-memory or when the
 * queue is over its bound (max_queue, default 10000). */
sb_rc pgev_query(struct pgev *pg, const char *sql, int nparams,
                 const char *const *params, pgev_cb cb, void *arg);

/* Append one element to a PostgreSQL array literal being built in b (which
 * starts with "{"; the caller adds "}"): quoted, \ and " escaped, a comma
 * before every element but the first. */
sb_rc pgev_array_add(struct sb_buf *b, const char *s, size_t n);

int pgev_connected(const struct pgev *pg);
/* Down and backing off: try to connect now (at most every 0.5 s). */
void pgev_kick(struct pgev *pg);
/* Was connected and is not now (down or reconnecting): a caller that must
 * answer now fails (or falls back) instead of queueing up to the deadline.
 * 0 before the first connection, when queries wait as usual. */
int pgev_lost(const struct pgev *pg);
/* Queries queued or in flight (a graceful stop waits for 0). */
size_t pgev_pending(const struct pgev *pg);

/* Notes: a query in flight past its deadline drops the connection (the only
 * non-blocking way to abandon it) and is answered NULL. Callbacks may queue
 * new queries but must not call pgev_free. PQconnectStart resolves host
 * names synchronously: give an address (host=127.0.0.1 or hostaddr=). */

#endif
