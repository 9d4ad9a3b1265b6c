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
void rdev_free(struct rdev *r);
int rdev_connected(const struct rdev *r);
/* cb(arg) after every successful (re)connection, from the loop (not inside
 * hiredis), so a client can write back state a restarted Redis lost. */
void rdev_set_on_up(struct rdev *r, void (*cb)(void *arg), void *arg);
/* Commands still owed a reply (a graceful stop waits for 0). */
long rdev_pending(const struct rdev *r);

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
