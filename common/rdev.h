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

/* printf-style like redisAsyncCommand (%s, %b for binary). */
sb_rc rdev_cmd(struct rdev *r, rdev_cb cb, void *arg, const char *fmt, ...);
sb_rc rdev_cmdargv(struct rdev *r, rdev_cb cb, void *arg, int argc,
                   const char **argv, const size_t *argvlen);

#endif
