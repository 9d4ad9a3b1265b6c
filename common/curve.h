/* curve.h — only cluster members join the bus: ZeroMQ CURVE on every bus
 * socket and a ZAP handler that admits the listed member keys.
 *
 * Every bus server (router ROUTER, an sm's direct ROUTER) holds the
 * cluster's one server keypair (server.key); every component is a client
 * with its own keypair (NAME.key), and the servers admit exactly the public
 * keys in members.pub. How it works, what a refused peer sees: curve.c.
 *
 * Use, per process:
 *   sb_curve_load(&c, instance)        once, after the config is loaded
 *   per ZeroMQ context with a server socket:
 *     sb_curve_zap_start(c, zctx)      before the first zmq_bind
 *   sb_curve_server(c, sock)           ROUTER, before zmq_bind
 *   sb_curve_client(c, sock)           DEALER, before zmq_connect
 *   sb_curve_free(c)                   at exit, after closing the server
 *                                      sockets (before or after zmq_ctx_term:
 *                                      a server socket left open without its
 *                                      handler admits any CURVE key)
 * With `curve = off` the state is NULL and every call above is a no-op
 * returning SB_OK, so callers need no branch. */
#ifndef SB_CURVE_H
#define SB_CURVE_H

#include "sb.h"

#include <stddef.h>

#define SB_CURVE_Z85_LEN 40         /* a 32-byte key as Z85 text */
#define SB_CURVE_ZAP_DOMAIN "switchboard"

struct sb_curve;

/* Read the [cluster] curve keys (curve, curve_dir, curve_key_file,
 * curve_server_key_file, curve_server_public, curve_server_pub_file,
 * curve_members_file) for this instance. curve = off: *out = NULL, a
 * bus_curve_off warning, SB_OK. SB_ERROR (logged) on an unreadable or
 * malformed key file, or when no key at all is found. */
sb_rc sb_curve_load(struct sb_curve **out, const char *instance);
/* Stop the ZAP handler (if any), wipe the secrets, free. NULL is fine. */
void sb_curve_free(struct sb_curve *c);

/* ROUTER side: ZMQ_CURVE_SERVER, the server secret key and ZMQ_ZAP_DOMAIN.
 * SB_ERROR without server.key, or before sb_curve_zap_start (libzmq
 * admits every CURVE client when no ZAP handler is bound). */
sb_rc sb_curve_server(const struct sb_curve *c, void *zsock);
/* DEALER side: the server's public key and this member's keypair. */
sb_rc sb_curve_client(const struct sb_curve *c, void *zsock);

/* Bind the ZAP handler (inproc://zeromq.zap.01) in zctx and start its
 * thread. One per sb_curve, hence one context per process carries server
 * sockets. Returns once bound. zmq_ctx_term may come before or after
 * sb_curve_free: the thread closes its socket on either. */
sb_rc sb_curve_zap_start(struct sb_curve *c, void *zctx);

/* Re-read members.pub (SIGHUP): new members are admitted from now on,
 * removed ones at their next connection. On error the old list stays. */
sb_rc sb_curve_members_reload(struct sb_curve *c);

/* Key generation (sbctl keys generate, tests). Each writes a new file
 * only: SB_OK created, SB_DONE it already existed (never overwritten),
 * SB_ERROR (logged). Names: [A-Za-z0-9_.-], not starting with '.', at most
 * 63 bytes, not "server" or "members". */
int sb_curve_name_ok(const char *name);
/* DIR/server.key (mode 0600) and DIR/server.pub (its public half only,
 * for hosts with clients only). */
sb_rc sb_curve_gen_server(const char *dir);
/* DIR/NAME.key, mode 0600. */
sb_rc sb_curve_gen_member(const char *dir, const char *name);
/* (Re)write DIR/members.pub from every DIR/NAME.key; *count = members. */
sb_rc sb_curve_write_members(const char *dir, size_t *count);

#endif
