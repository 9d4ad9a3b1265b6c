/* rdev.h — Redis (hiredis async) on the libev loop with reconnection.
 *
 * Commands issued while disconnected fail at once: the callback gets a NULL
 * reply, and the caller answers with an XMPP error (internal-server-error or
 * resource-constraint). Reconnects with back-off and logs each transition. */
#ifndef SB_RDEV_H
#define SB_RDEV_H

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include "sb.h"

struct rdev;
typedef void (*rdev_cb)(redisReply *reply, void *arg);   /* reply NULL on failure */

struct rdev *rdev_new(struct ev_loop *loop, const char *host, int port);
/* With AUTH [user] password as the first command of every connection
 * (password NULL or "": none). A refused AUTH is logged once
 * (redis_auth_failed) and retried with back-off. */
struct rdev *rdev_new_auth(struct ev_loop *loop, const char *host, int port, const char *user,
                           const char *password);
/* From [cluster] redis_host, redis_port, redis_user, redis_password or
 * redis_password_file. NULL (logged) on a bad secret or redis_tls = on. */
struct rdev *rdev_from_config(struct ev_loop *loop);
void rdev_free(struct rdev *r);
int rdev_connected(const struct rdev *r);
/* cb(arg) after every successful (re)connection, from the loop (not inside
 * hiredis), so a client can write back state a restarted Redis lost. */
void rdev_set_on_up(struct rdev *r, void (*cb)(void *arg), void *arg);
/* Commands still owed a reply (a graceful stop waits for 0). */
long rdev_pending(const struct rdev *r);
/* Replies are owed and none came for `secs` (a frozen or overloaded
 * server, before the 5 s watchdog drops the connection). */
int rdev_stalled(const struct rdev *r, double secs);

/* Subscribe this connection to `channel` (SUBSCRIBE again after every
 * reconnection). cb gets each message's payload, and (NULL, 0) each time
 * the subscription is (re)confirmed: messages sent while the connection
 * was down are lost, so a subscriber re-reads its state then. A connection
 * with a subscription carries no other commands: give it its own rdev. */
typedef void (*rdev_msg_cb)(const char *msg, size_t len, void *arg);
sb_rc rdev_subscribe(struct rdev *r, const char *channel, rdev_msg_cb cb, void *arg);
/* 1 while connected and the subscription is confirmed on this connection
 * (no message since then can have been missed). */
int rdev_subscribed(const struct rdev *r);

/* printf-style like redisAsyncCommand (%s, %b for binary). */
sb_rc rdev_cmd(struct rdev *r, rdev_cb cb, void *arg, const char *fmt, ...);
sb_rc rdev_cmdargv(struct rdev *r, rdev_cb cb, void *arg, int argc,
                   const char **argv, const size_t *argvlen);

/* Callback contract: SB_OK means cb runs exactly once, later, never inside
 * rdev_cmd: with the reply (freed by hiredis after cb returns; check
 * REDIS_REPLY_ERROR), or NULL when disconnected (answered from the loop's
 * next iteration), when the connection breaks, when no reply came within
 * 5 s (the connection is then dropped and re-opened: do not use blocking
 * commands such as BLPOP), or from rdev_free. SB_ERROR (bad format, out of
 * memory): cb is never called. Do not call rdev_free from inside a cb. */

#endif
