/* route.h — routing decisions without sockets: the registry of
 * live instances (built from HELLO), rendezvous hashing, and where a
 * ROUTE_JID envelope goes. Pure functions over plain data, so unit tests
 * drive them directly; router/main.c wires them to ZeroMQ and libev, and
 * every component's link keeps the same registry (from `members`) to send
 * straight to the owning sm with the very same decision. */
#ifndef SB_ROUTE_H
#define SB_ROUTE_H

#include "sb.h"
#include "buf.h"
#include "env.h"

#define RT_KIND_MAX 15
#define RT_DIRECT_MAX 127   /* an sm's direct endpoint, "tcp://host:port" */
#define RT_INC_MAX 16       /* an incarnation id: hex */
#define RT_FNV_OFFSET 0xcbf29ce484222325ULL
#define RT_FNV_PRIME 0x100000001b3ULL

/* One live instance, as its last HELLO described it. */
struct rt_inst {
    char name[ENV_NAME_MAX + 1];
    char kind[RT_KIND_MAX + 1];
    long pid, sessions;
    char *domains;          /* comma-separated, owned; "" when none */
    char direct[RT_DIRECT_MAX + 1];    /* sm: endpoint peers send to directly, or "" */
    double last_hello;      /* caller's clock (sb_now()) at the last HELLO */
    uint64_t seed;          /* fnv1a64 state after name + "\n": hashing skips it */
    double restarted_at;    /* set by the caller: last pid change seen, 0 = none */
    char inc[RT_INC_MAX + 1];   /* incarnation: random per process life (and per lease) */
};

struct rt_registry {
    struct rt_inst *v;      /* pointers into v die on add/remove */
    size_t n, cap;
    /* Set by the caller before rt_reg_hello: the HELLO came from another
     * host, so a loopback `direct=` endpoint would reach the wrong process. */
    int remote_hello;
};

/* What a HELLO changed (bits). */
#define RT_CH_NEW     0x01  /* first HELLO from this name */
#define RT_CH_KIND    0x02  /* same name, other kind */
#define RT_CH_DOMAINS 0x04  /* announced domains differ */
#define RT_CH_RESTART 0x08  /* same name, other incarnation (or pid): the old one is gone */
#define RT_CH_DIRECT  0x10  /* announced direct endpoint differs */

/* ---- hashing ----------------------------------------------------------- */
uint64_t rt_fnv1a64(uint64_t h, const void *p, size_t n);
/* fnv1a64(instance + "\n" + key): the rendezvous score; highest wins. */
uint64_t rt_score(const char *instance, const char *key, size_t keylen);

/* ---- registry ---------------------------------------------------------- */
void rt_reg_init(struct rt_registry *r);
void rt_reg_free(struct rt_registry *r);
struct rt_inst *rt_reg_find(const struct rt_registry *r, const char *name, size_t len);
/* Record a HELLO from `name` (its ZeroMQ identity). Returns RT_CH_* bits
 * (0 = a plain heartbeat) or -1 for a bad name or body (no `kind=`).
 * On a restart, *old_kind gets the previous kind (RT_KIND_MAX+1 bytes). */
int rt_reg_hello(struct rt_registry *r, const char *name, size_t name_len,
                 const char *body, size_t body_len, double now, char *old_kind);
/* Index of an instance silent for more than timeout seconds, or -1. */
long rt_reg_find_dead(const struct rt_registry *r, double now, double timeout);
void rt_reg_remove(struct rt_registry *r, size_t idx);
size_t rt_reg_count_kind(const struct rt_registry *r, const char *kind);

/* The live instance of `kind` with the highest rt_score for key, or NULL. */
const struct rt_inst *rt_pick(const struct rt_registry *r, const char *kind,
                              const char *key, size_t keylen);

/* ---- routing ----------------------------------------------------------- */
/* Domain part of a bare JID or domain key ("a@b" → "b", "b" → "b"). */
void rt_key_domain(const char *key, size_t len, const char **dom, size_t *dlen);
/* Does some live sm announce this domain? */
int rt_domain_local(const struct rt_registry *r, const char *dom, size_t len);

/* Destination of a ROUTE_JID envelope: an sm for a local domain, an s2s
 * for a remote one. NULL means bounce, with *reason set ("no-sm",
 * "remote-domain"). from_s2s stops a remote stanza that came in over s2s
 * from being sent back out to s2s. */
/* Among the instances of kind that announce domain dom (domains=; NULL:
 * any), the one key hashes to (rendezvous); NULL when none does. */
const struct rt_inst *rt_pick_holding(const struct rt_registry *r, const char *kind,
                                      const char *dom, size_t dlen, const char *key,
                                      size_t keylen);
const struct rt_inst *rt_route_jid(const struct rt_registry *r, const char *key,
                                   size_t keylen, int from_s2s, const char **reason);

/* ---- bodies the router sends ------------------------------------------ */
/* Is this endpoint on the loopback interface (or ipc://)? */
int rt_endpoint_local(const char *endpoint);

/* CONTROL members: "kind name\n" per live instance; sms also carry
 * " domains=a,b" and, when they announced one, " direct=tcp://…"; routers
 * their advertised endpoint as " direct=tcp://…". */
sb_rc rt_members_body(const struct rt_registry *r, struct sb_buf *out);
/* ADMIN status: "name=… kind=… pid=… last_hello_ms=… sessions=… domains=…[ direct=…]\n". */
sb_rc rt_status_body(const struct rt_registry *r, double now, struct sb_buf *out);

/* ---- bus routing ids ---------------------------------------------------- */
/* A component's sockets use the routing id "NAME#NONCE" (NONCE: random hex,
 * new for every socket), never the bare name. So neither a restarted
 * process nor a socket made anew (link.c rt_reopen) collides with a
 * connection a server still holds from before, and
 * no peer can take a name over by connecting with it (the bus ROUTERs run
 * without ZMQ_ROUTER_HANDOVER): a bus server (router, sm direct socket)
 * reads NAME off the id, accepts a message only when the CURVE key it came
 * with is NAME's (the ZAP User-Id, common/curve.c), and addresses NAME by
 * the id its latest accepted message came with (struct rt_addrs). An id
 * without '#' (sbctl's "sbctl-PID", `curve = off` set-ups) is its own name. */
#define RT_ID_MAX 255          /* ZeroMQ routing ids are at most 255 bytes */
#define RT_NONCE_HEX 16
#define RT_ID_SEP '#'

/* "NAME#<16 hex>" into out (ENV_NAME_MAX + 18 bytes suffice). */
void rt_id_make(char *out, size_t cap, const char *name);
/* Bytes of the NAME part of a routing id. */
size_t rt_id_name_len(const char *id, size_t len);
/* May a message with routing id `id` speak for its NAME? With CURVE (uid
 * = its User-Id, NULL when absent) the key must be NAME's; without, yes. */
int rt_id_speaks_for(const char *uid, int curve, const char *id, size_t len);

struct rt_addr {
    char name[ENV_NAME_MAX + 1];
    char id[RT_ID_MAX + 1];
    size_t idlen;
};
struct rt_addrs {
    struct rt_addr *v;
    size_t n, cap;
};
/* Remember that NAME (id's own) is reached at `id` now. */
void rt_addrs_learn(struct rt_addrs *a, const char *id, size_t len);
/* The id NAME is reached at: the learnt one, else name itself. */
const char *rt_addrs_id(const struct rt_addrs *a, const char *name, size_t nlen, size_t *idlen);
void rt_addrs_free(struct rt_addrs *a);

#endif
