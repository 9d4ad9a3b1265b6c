/* link.h — a component's connections to the routers and the sms, on the
 * libev loop.
 *
 * Every process except the routers owns one link: one ZeroMQ DEALER per
 * router (routing id "NAME#NONCE", route.h), plus one DEALER per sm that
 * announced a direct endpoint (an sm binds a ROUTER for it): stanzas for
 * local users go straight to the owning sm, and the sm answers straight
 * back (see link.c and ENVELOPE.md). What goes through a router goes
 * through one live router (each instance prefers its own, by hash).
 *
 * The link sends HELLO (kind, pid, incarnation, domains) to every router
 * at start and every heartbeat; each router writes it to Redis as the
 * instance's lease and acknowledges it. The lease is the instance's life
 * in the cluster: it holds from when an acknowledged HELLO was sent for
 * `lease` seconds; when it runs out the instance is dead to everyone else
 * and the link says so (LINK_LEASE_LOST) so the process can act (close
 * its clients' streams), then starts a new incarnation.
 *
 * One ZeroMQ message carries one or more envelopes: frames [h1][b1][h2][b2]…
 * (see ENVELOPE.md); the receive callback runs once per envelope, in order.
 *
 * ZMQ_FD is edge-triggered: the link drains the socket after every receive
 * and every send (ZMQ_EVENTS) and re-checks before the loop blocks, so no
 * message waits for a new edge. */
#ifndef SB_LINK_H
#define SB_LINK_H

#include <ev.h>
#include "env.h"

struct sb_curve;

struct link;

enum link_state {
    LINK_LEASE_HELD,    /* a router confirmed our lease (again) */
    LINK_LEASE_LOST,    /* no confirmed HELLO for a lease: the cluster thinks us dead */
    LINK_NO_ROUTER      /* no router answered within router_wait of the start */
};
typedef void (*link_state_cb)(struct link *l, enum link_state st, void *ud);

/* Called once per received envelope. body is not NUL-terminated. */
typedef void (*link_recv_cb)(struct link *l, const struct env_hdr *h,
                             const char *body, size_t body_len, void *ud);

struct link_opts {
    const char *endpoint;    /* the routers: "tcp://127.0.0.1:15555,tcp://127.0.0.1:15556" */
    const char *instance;    /* routing id, e.g. "c2s1" */
    const char *kind;        /* "c2s", "sm", "bosh", "s2s" */
    const char *domains;     /* comma-separated local domains served, or "" */
    double heartbeat;        /* seconds between HELLOs (default 1.0) */
    /* sm only: bind a ROUTER here for direct traffic ("tcp://127.0.0.1:*"
     * picks a free loopback port) and announce it in HELLO; NULL or "" =
     * none, everything goes through the router. */
    const char *direct_bind;
    /* The host others connect to when direct_bind is a wildcard or an
     * address they cannot use ("10.0.0.2"): announced as tcp://HOST:PORT
     * with the port actually bound. NULL or "" = the bound endpoint. */
    const char *direct_advertise;
    /* Seconds a batch may wait to fill after the socket's previous batch
     * (at most one batch per socket per window under load; a stanza after
     * a quiet window leaves at once). 0 = one batch per loop iteration. */
    double batch_window;
    double router_wait;      /* seconds to wait for a first router ack (default 10) */
    /* The bus keys (common/curve.h), or NULL with `curve = off`; outlives
     * the link. Every DEALER is a CURVE client, the direct ROUTER a server. */
    struct sb_curve *curve;
};

struct link *link_new(struct ev_loop *loop, const struct link_opts *o,
                      link_recv_cb cb, void *ud);
void link_free(struct link *l);

/* Queue one envelope. Never blocks; SB_ERROR if the socket refuses it
 * (high-water mark reached), which callers report as resource-constraint.
 * Envelopes sent in one loop iteration travel as one ZeroMQ message, ended
 * before the loop blocks (or by link_flush, or after 128 envelopes); with a
 * batch_window, a busy socket's batch is ended when its window is over. */
sb_rc link_send(struct link *l, const struct env_hdr *h, const char *body, size_t body_len);

/* End the open batch now. Only needed outside the loop (the loop's
 * prepare watcher does it before every block; link_free does it too). */
void link_flush(struct link *l);

const char *link_instance(const struct link *l);

/* The live instances as the routers last told (`members`), the registry
 * the routers route by: sb-muc asks it which rooms are still its own. */
struct rt_registry;
const struct rt_registry *link_members(const struct link *l);

/* Told of lease changes and a start without any router (see above). */
void link_set_on_state(struct link *l, link_state_cb cb, void *ud);

/* Convenience: build a header with sender/sid filled and send. */
sb_rc link_send_to(struct link *l, enum env_kind kind, enum env_route route,
                   const char *key, const char *sid, const char *op,
                   const char *body, size_t body_len);

/* What the next HELLO announces. Sessions are sent with the next heartbeat;
 * a domain change sends a HELLO at once, since routing depends on it. */
void link_set_sessions(struct link *l, long n);
void link_set_domains(struct link *l, const char *csv);

#endif
