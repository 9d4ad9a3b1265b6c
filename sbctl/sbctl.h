/* sbctl.h — the admin CLI's internal pieces: one file per command group
 * (db.c: connection and migrations, account.c: domains and users,
 * status.c: the router query, keys.c: the bus CURVE keys). A CLI may block, so everything here is
 * synchronous libpq / ZeroMQ. Every command returns an exit code:
 * SBCTL_OK, SBCTL_FAIL (with a one-line "sbctl: …" message on stderr),
 * SBCTL_USAGE. */
#ifndef SB_SBCTL_H
#define SB_SBCTL_H

#include <libpq-fe.h>

enum { SBCTL_OK = 0, SBCTL_FAIL = 1, SBCTL_USAGE = 2 };

/* Print "sbctl: <message>" on stderr. */
void sbctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* First line of a libpq error, for one-line messages. */
const char *sbctl_pg_msg(const PGconn *c, const PGresult *r);

/* Connect with the configured conninfo; NULL after printing an error. */
PGconn *sbctl_db_connect(void);
/* Run a command without results; 0 ok, -1 after printing an error. */
int sbctl_db_exec(PGconn *c, const char *sql);

int sbctl_cmd_migrate(int argc, char **argv);
int sbctl_cmd_domain(int argc, char **argv);
int sbctl_cmd_user(int argc, char **argv);
int sbctl_cmd_status(int argc, char **argv);
int sbctl_cmd_keys(int argc, char **argv);
int sbctl_cmd_drain(int argc, char **argv);
int sbctl_cmd_metrics(int argc, char **argv);   /* metrics.c */

#endif
