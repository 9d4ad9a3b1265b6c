/* sbctl.h — the admin CLI's internal pieces: one file per command group
 * (db.c: PostgreSQL and migrations, account.c: domains and users,
 * session.c: live sessions, token.c: login tokens, status.c: the cluster's health, drain.c,
 * room.c: MUC rooms,
 * keys.c: the bus CURVE keys) and the helpers they share (json.c: the
 * --json writer, redis.c: Redis, bus.c: ADMIN envelopes through a router).
 * A CLI may block, so everything here is synchronous libpq / hiredis /
 * ZeroMQ, each with a timeout. Every command returns an exit code:
 * SBCTL_OK, SBCTL_FAIL (with a one-line "sbctl: …" message on stderr),
 * SBCTL_USAGE (main.c prints the command's usage). */
#ifndef SB_SBCTL_H
#define SB_SBCTL_H

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "env.h"

enum { SBCTL_OK = 0, SBCTL_FAIL = 1, SBCTL_USAGE = 2 };

/* Print "sbctl: <message>" on stderr. */
void sbctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* First line of a libpq error, for one-line messages. */
const char *sbctl_pg_msg(const PGconn *c, const PGresult *r);

/* ---- db.c */
/* Connect with the configured conninfo (connect_timeout [sbctl]
 * db_timeout, 3 s, unless the conninfo sets one: a database that is down
 * fails the command instead of hanging it); NULL after printing an error. */
PGconn *sbctl_db_connect(void);
/* The same without printing: NULL with the reason in err. */
PGconn *sbctl_db_connect_quiet(char *err, size_t cap);
/* Run a command without results; 0 ok, -1 after printing an error. */
int sbctl_db_exec(PGconn *c, const char *sql);

/* ---- json.c: `--json` output (sbctl_json set by main.c). key NULL in an
 * array or at the top; a top-level value ends with a newline. */
extern int sbctl_json;
void sj_obj(const char *key);
void sj_arr(const char *key);
void sj_end_obj(void);
void sj_end_arr(void);
void sj_str(const char *key, const char *v);     /* v NULL: null */
void sj_int(const char *key, long long v);
void sj_num(const char *key, double v);
void sj_bool(const char *key, int v);
void sj_null(const char *key);
void sj_string(const char *s);                   /* a quoted, escaped string */

/* ---- redis.c */
redisContext *sbctl_redis_connect(char *err, size_t cap);   /* NULL: reason in err */
redisContext *sbctl_redis(void);                             /* NULL after an error message */
/* A reply that is not an error (freeReplyObject it); NULL after a message. */
redisReply *sbctl_redis_cmd(redisContext *c, const char *fmt, ...);
/* Publish a domain change on SB_DOMAINS_CHANNEL (common/domains.h): every
 * process reloads its domains at once. 0 ok, -1 after a warning. */
int sbctl_domains_publish(const char *what);
/* PUBLISH `forget BARE` on AUTH_CACHE_CHANNEL (after a password change or
 * a deletion). 0, or -1 after a warning. */
int sbctl_credentials_forget(const char *bare);

/* ---- bus.c */
struct sb_curve;
#define SBCTL_MAX_ROUTERS 16
struct sbctl_bus {
    void *ctx, *sock;              /* to the router asked */
    /* the same routing id to every other router: an instance answers
     * through whichever router it likes (link.c), so sbctl must be known
     * to all of them; read only */
    void *rx[SBCTL_MAX_ROUTERS];
    int nrx;
    struct sb_curve *curve;
    char id[ENV_NAME_MAX + 1];
};
/* The bus socket with input within ms milliseconds, or NULL. */
void *sbctl_bus_poll(struct sbctl_bus *b, long ms);
/* The configured router endpoints, split into eps (pointing into copy);
 * their count, or -1 after a message. */
int sbctl_routers(char *copy, size_t cap, char **eps, int max);
int sbctl_bus_open(struct sbctl_bus *b, const char *endpoint);   /* -1 after a message */
void sbctl_bus_close(struct sbctl_bus *b);
int sbctl_bus_send(struct sbctl_bus *b, int route, const char *key, const char *op,
                   const char *sid, const char *aux, const char *body);
/* The next [header][body] within secs: 1 with h/body filled, 0 timeout. */
int sbctl_bus_recv(struct sbctl_bus *b, double secs, struct env_hdr *h, char *body, size_t cap);
/* ADMIN `op` to an instance through the first router that reaches it; 1
 * with its answer's body in out, 0 nobody answered, -1 no router has it. */
int sbctl_bus_ask(const char *instance, const char *op, const char *sid, const char *aux,
                  const char *body, char *out, size_t cap);
/* The same to whichever instance holds a JID (routed like its stanzas:
 * a room's sb-muc). */
int sbctl_bus_ask_jid(const char *jid, const char *op, const char *body, char *out, size_t cap);

/* ---- session.c */
/* End every session of a bare JID (user del) or one full JID: ADMIN
 * op=kick to the front-end holding it, stream error `cond` with `text`.
 * The number ended, or -1 after a message (Redis unreachable). */
int sbctl_kick_sessions(redisContext *rc, const char *bare, const char *resource,
                        const char *cond, const char *text);
/* The same for the sessions of bare that logged in with our token `id`
 * ("*": any of ours): ADMIN op=kick-token (sbctl token revoke). */
int sbctl_kick_token_sessions(redisContext *rc, const char *bare, const char *id,
                              const char *cond, const char *text);

int sbctl_cmd_migrate(int argc, char **argv);
int sbctl_cmd_domain(int argc, char **argv);
int sbctl_cmd_user(int argc, char **argv);
int sbctl_cmd_session(int argc, char **argv);
int sbctl_cmd_status(int argc, char **argv);
int sbctl_cmd_keys(int argc, char **argv);
int sbctl_cmd_drain(int argc, char **argv);
int sbctl_cmd_metrics(int argc, char **argv);   /* metrics.c */
int sbctl_cmd_archive(int argc, char **argv);   /* archive.c */
int sbctl_cmd_upload(int argc, char **argv);    /* upload.c */
int sbctl_cmd_token(int argc, char **argv);     /* token.c */
int sbctl_cmd_invite(int argc, char **argv);    /* token.c */
int sbctl_cmd_room(int argc, char **argv);      /* room.c */

#endif
