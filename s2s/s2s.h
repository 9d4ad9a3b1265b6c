/* s2s.h — the server-to-server front-end (sb-s2s): XMPP streams between
 * this cluster and other servers (RFC 6120 server-to-server, XEP-0220
 * dialback with XEP-0185 keys, XEP-0368 direct TLS). The router hands it
 * stanzas for remote domains (it owns a remote domain by rendezvous hashing,
 * so only one instance talks to one domain); it hands the router stanzas
 * that arrived from authenticated peers. The modules of this folder:
 *   main.c     start-up, configuration, listeners, shutdown, status
 *   conn.c     one connection (either direction) on common/tlsconn: accept,
 *              connect, state, close, timers
 *   tls.c      GnuTLS credentials, sessions, certificate checks (RFC 6125)
 *   dns.c      c-ares on the libev loop: SRV (RFC 6120 §3.2, XEP-0368), A/AAAA
 *   stream.c   stream headers, features, stream errors, element dispatch
 *   out.c      outgoing routes: queue, targets, connect, authenticate, bounce, idle, ping
 *   in.c       incoming streams: SASL EXTERNAL, stanza checks, to the router
 *   dialback.c XEP-0220 both roles, XEP-0185 keys
 *   policy.c   local domains (PostgreSQL) and the allow/deny policy
 *   route.c    the router link: stanzas in and out, bounces, admin status
 *   limits.c   incoming streams per remote address and per remote domain
 * See s2s/README.md for the lifecycle of a route and a connection. */
#ifndef SB_S2S_H
#define SB_S2S_H

#include <ev.h>
#include <gnutls/gnutls.h>
#include <sys/socket.h>

#include "sb.h"
#include "buf.h"
#include "xml.h"
#include "link.h"
#include "pgev.h"
#include "domains.h"
#include "tlsconn.h"

#define S2S_NS_STREAM   "http://etherx.jabber.org/streams"
#define S2S_NS_SERVER   "jabber:server"
#define S2S_NS_DB       "jabber:server:dialback"
#define S2S_NS_COMPONENT "jabber:component:accept"
#define S2S_NS_DB_FEAT  "urn:xmpp:features:dialback"
#define S2S_NS_TLS      "urn:ietf:params:xml:ns:xmpp-tls"
#define S2S_NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define S2S_NS_STREAMS  "urn:ietf:params:xml:ns:xmpp-streams"
#define S2S_NS_STANZAS  "urn:ietf:params:xml:ns:xmpp-stanzas"
#define S2S_NS_PING     "urn:xmpp:ping"

#define S2S_DOMAIN_MAX 1023

enum s2s_dir { S2S_IN = 0, S2S_OUT = 1, S2S_COMP = 2 };   /* COMP: XEP-0114 (comp.c) */
/* Listener kinds (s2s_listen_open). */
enum { S2S_LIS_STARTTLS = 0, S2S_LIS_DIRECT_TLS = 1, S2S_LIS_COMPONENT = 2 };

/* The life of one connection. */
enum s2s_state {
    S2S_S_CONNECTING,    /* out: TCP connect in progress */
    S2S_S_TLS_HANDSHAKE, /* TLS handshake running */
    S2S_S_WAIT_HEADER,   /* waiting for the peer's stream header */
    S2S_S_WAIT_FEATURES, /* out: header received, features to come */
    S2S_S_STARTTLS,      /* out: <starttls/> sent, <proceed/> to come */
    S2S_S_SASL,          /* out: <auth mechanism='EXTERNAL'/> sent */
    S2S_S_DIALBACK,      /* out: <db:result/> sent, verdict to come */
    S2S_S_OPEN,          /* in: stream open; out: authenticated (or usable for db:verify) */
    S2S_S_CLOSING,       /* closed: flushing, then freed */
};
const char *s2s_state_name(enum s2s_state s);

enum s2s_auth { S2S_AUTH_NONE = 0, S2S_AUTH_EXTERNAL, S2S_AUTH_DIALBACK, S2S_AUTH_COMPONENT };
const char *s2s_auth_name(int a);

/* Connection flags. */
#define S2S_F_TLS         0x0001  /* TLS active (or its handshake running) */
#define S2S_F_DIRECT_TLS  0x0002  /* direct TLS (5270 / _xmpps-server) */
#define S2S_F_HDR_SENT    0x0004  /* our header for the current stream went out */
#define S2S_F_REFUSED     0x0008  /* in: over a limit (limits.c), logged there */
#define S2S_F_IN_FEED     0x0020  /* inside xml_stream_feed */
#define S2S_F_EOF         0x0080  /* closing: peer gone, free now */
#define S2S_F_FEAT_TLS    0x0100  /* out: peer offered STARTTLS */
#define S2S_F_FEAT_EXT    0x0200  /* out: peer offered SASL EXTERNAL */
#define S2S_F_FEAT_DB     0x0400  /* out: peer offered (or declared) dialback */
#define S2S_F_EXT_TRIED   0x0800  /* out: EXTERNAL failed once: use dialback */

/* An authenticated (remote → local) pair on an incoming stream. */
struct s2s_pair {
    struct s2s_pair *next;
    uint8_t auth;                  /* S2S_AUTH_* */
    char *remote, *local;
};

struct s2s_out;

struct s2s_conn {
    struct s2s_conn *prev, *next;  /* all connections */
    unsigned long serial;          /* stable id for asynchronous answers */
    struct tlsconn tc;             /* socket, TLS session, output buffer */
    uint8_t dir, state, auth;
    uint16_t flags;
    int8_t cert_ok;                /* peer certificate valid for `remote`: -1 unknown */
    ev_timer timer;
    struct xml_stream *xs;
    double since, last_active, deadline, close_deadline;
    struct s2s_out *route;         /* out: the route this conn serves */
    char *local, *remote;          /* out: from/to; in: header to/from (remote may be NULL) */
    struct s2s_pair *pairs;        /* in: what the peer authenticated as */
    char sid[41];                  /* stream id: ours (in), the peer's (out) */
    char peer[64];                 /* "ip:port" for logs */
};

/* Settings (one per process). */
struct s2s_cfg {
    const char *listen;
    int port, tls_port;
    const char *cert, *key, *cafile, *tls_priority;
    const char *cert_dir;          /* NAME.pem per domain (common/certs.h), "" none */
    int system_trust;
    const char *resolver;          /* "ip:port,…" or "" for the system's */
    int default_port;              /* A/AAAA fallback port (5269) */
    int component_port;            /* XEP-0114 listener, 0 = none */
    const char *component_listen;
    double connect_timeout;        /* whole attempt: DNS → authenticated */
    double login_timeout;          /* incoming: until authenticated */
    double idle_timeout;           /* outgoing idle close */
    double in_idle_timeout;        /* incoming idle close */
    double ping_interval, ping_timeout;
    int max_queue;                 /* stanzas per route while connecting */
    size_t max_pending;            /* output bytes per connection */
    int require_tls, require_valid_certs;
    const char *secret;            /* [cluster] dialback_secret */
    struct xml_limits limits;
    int max_in_per_addr;           /* incoming streams per remote address (/64); 0 off */
    int max_in_per_domain;         /* incoming streams naming one `from`; 0 off */
};

struct s2s_srv {
    struct ev_loop *loop;
    struct s2s_cfg cfg;
    const char *instance;
    struct link *link;
    struct pgev *pg;
    struct s2s_conn *conns;
    long nconns;
    unsigned long next_serial;
    int stopping;
};
extern struct s2s_srv s2s;

/* ---- conn.c ---------------------------------------------------------- */
sb_rc s2s_listen_open(const char *addr, int port, int kind);   /* S2S_LIS_* */
const char *s2s_dir_name(int dir);
void s2s_listen_start(void);
void s2s_listen_stop(void);
/* Start a non-blocking connect; the route hears back through out.c. */
struct s2s_conn *s2s_conn_connect(struct s2s_out *r, const struct sockaddr *sa,
                                  socklen_t salen, int direct_tls);
void s2s_conn_write(struct s2s_conn *c, const char *data, size_t len);
void s2s_conn_writes(struct s2s_conn *c, const char *s);
void s2s_conn_close(struct s2s_conn *c, const char *reason);
void s2s_conn_starttls(struct s2s_conn *c);     /* now, or after queued output */
void s2s_conn_arm_timer(struct s2s_conn *c);
struct s2s_conn *s2s_conn_by_serial(unsigned long serial);
void s2s_conn_free_all(void);
/* Output bytes queued (for back-pressure decisions). */
size_t s2s_conn_pending(const struct s2s_conn *c);

/* ---- tls.c ------------------------------------------------------------ */
sb_rc s2s_tls_init(const struct s2s_cfg *cfg);
/* SIGHUP: the certificate files again (common/certs.h); new handshakes
 * present them, running streams keep theirs. SB_ERROR (logged): the
 * default pair failed and the pairs in force stay. */
sb_rc s2s_tls_reload(const struct s2s_cfg *cfg);
int s2s_tls_available(void);
void s2s_tls_deinit(void);
/* A session on c's socket: server or client by c->dir (SNI = c->remote),
 * presenting the certificate of c->local (incoming direct TLS: of the SNI). */
sb_rc s2s_tls_session_new(const struct s2s_conn *c, gnutls_session_t *out);
/* 1 when the peer's certificate chains to a trust anchor and names
 * `domain` (RFC 6125 DNS-ID); 0 otherwise. Logs why not. */
int s2s_tls_peer_valid(struct s2s_conn *c, const char *domain);

/* ---- dns.c ------------------------------------------------------------ */
struct s2s_target {
    char host[256];
    int port;
    int direct_tls;
};
struct s2s_dns_req;
/* n == 0 and fallback = 1: no SRV records, try the domain on default_port.
 * n == 0 and fallback = 0: the service is explicitly absent or DNS failed. */
typedef void (*s2s_srv_cb)(void *ud, const struct s2s_target *t, int n, int fallback);
typedef void (*s2s_addr_cb)(void *ud, const struct sockaddr_storage *a, int n);
sb_rc s2s_dns_init(const char *servers);
void s2s_dns_deinit(void);
struct s2s_dns_req *s2s_dns_srv(const char *domain, s2s_srv_cb cb, void *ud);
struct s2s_dns_req *s2s_dns_addr(const char *host, int port, s2s_addr_cb cb, void *ud);
void s2s_dns_cancel(struct s2s_dns_req *r);   /* the callback will not run */
/* Order SRV records: priority ascending, weighted random within one
 * priority (RFC 2782); exposed for unit tests. */
void s2s_dns_sort(struct s2s_target *t, const int *prio, const int *weight, int n);

/* ---- stream.c --------------------------------------------------------- */
sb_rc s2s_stream_new(struct s2s_conn *c);
void s2s_stream_input(struct s2s_conn *c, const char *data, size_t len);
void s2s_stream_restart(struct s2s_conn *c);
void s2s_stream_error(struct s2s_conn *c, const char *cond, const char *why);
void s2s_stream_send_header(struct s2s_conn *c);
/* pure.c: element name without a namespace prefix ("db:result" → "result"). */
const char *s2s_local_name(const char *name);
/* pure.c: 1 when n is in namespace ns, by xmlns or by a prefix bound on the stream. */
int s2s_elem_ns(const struct xml_node *n, const char *ns);
/* pure.c: the stream error condition for a bad peer header (names,
 * namespaces, version; both directions), NULL when it is fine. */
const char *s2s_stream_check_header(const struct xml_node *hdr);

/* ---- out.c ------------------------------------------------------------ */
struct s2s_out {
    struct s2s_out *next;
    char *local, *remote;
    int verify_only;
    uint8_t state;                  /* S2S_R_* */
    struct s2s_conn *conn;
    struct s2s_dns_req *dns;
    struct s2s_target *targets;
    int ntargets, ti;
    struct sockaddr_storage *addrs;
    int naddrs, ai;
    int reached;                    /* some address answered TCP */
    const char *why;                /* last failure, for logs */
    ev_timer timer;                 /* attempt deadline, idle, ping */
    double deadline, last_used, ping_sent;
    char ping_id[64];
    struct s2s_qent *qhead, *qtail;
    int qlen;
    struct s2s_vreq *vhead;
};
enum { S2S_R_IDLE, S2S_R_RESOLVING, S2S_R_CONNECTING, S2S_R_READY };

/* A stanza from the router for a remote domain (body as serialised). */
void s2s_out_stanza(const char *local, const char *remote, const char *body, size_t len);
/* Ask the authoritative server of `remote` whether key is valid for the
 * incoming stream `serial` (XEP-0220 §2.1.3). */
void s2s_out_verify(const char *local, const char *remote, unsigned long serial,
                    const char *id, const char *key);
/* From conn.c/stream.c/dialback.c: the connection's progress. */
void s2s_out_conn_ready(struct s2s_conn *c, enum s2s_auth how);
void s2s_out_conn_closed(struct s2s_conn *c, const char *why);
void s2s_out_features(struct s2s_conn *c, struct xml_node *feat);
void s2s_out_element(struct s2s_conn *c, struct xml_node *n);
void s2s_out_verify_answer(struct s2s_conn *c, const char *id, const char *type);
/* A ping answer (iq result/error with our id) arrived: any instance may see it. */
void s2s_out_pong(const char *remote, const char *id);
void s2s_out_free_all(void);
/* One status line per route into b. */
void s2s_out_status(struct sb_buf *b);
long s2s_out_count(void);
/* Bounce one serialised stanza to its sender with condition cond. */
void s2s_bounce(const char *body, size_t len, const char *cond, const char *text);

/* ---- in.c ------------------------------------------------------------- */
void s2s_in_header(struct s2s_conn *c, struct xml_node *hdr);
void s2s_in_element(struct s2s_conn *c, struct xml_node *n);
struct s2s_pair *s2s_in_pair(struct s2s_conn *c, const char *remote, const char *local);
sb_rc s2s_in_add_pair(struct s2s_conn *c, const char *remote, const char *local, int auth);
void s2s_in_free_pairs(struct s2s_conn *c);
void s2s_in_status(struct sb_buf *b);

/* ---- comp.c: external components (XEP-0114) ---------------------------- */
sb_rc s2s_comp_init(void);                   /* [component.DOMAIN] sections */
int s2s_comp_configured(const char *domain);
void s2s_comp_header(struct s2s_conn *c, struct xml_node *hdr);
void s2s_comp_send_header(struct s2s_conn *c);    /* before a stream error */
void s2s_comp_element(struct s2s_conn *c, struct xml_node *n);
void s2s_comp_closed(struct s2s_conn *c);
/* To a connection of that component held here: SB_OK, or SB_DONE (none). */
sb_rc s2s_comp_deliver(const char *domain, const char *to_bare, const char *body, size_t len);
void s2s_comp_status(struct sb_buf *b);

/* ---- dialback.c ------------------------------------------------------- */
/* XEP-0185: hex HMAC-SHA256(SHA256(secret), receiving ' ' originating ' ' id). */
void s2s_db_key(const char *secret, const char *receiving, const char *originating,
                const char *id, char out[65]);
/* pure.c: 1 when two keys are equal, in time independent of where they differ. */
int s2s_db_key_equal(const char *a, const char *b);
void s2s_db_send_result(struct s2s_conn *c);              /* originating role */
void s2s_db_in_result(struct s2s_conn *c, struct xml_node *n);   /* receiving role */
void s2s_db_in_verify(struct s2s_conn *c, struct xml_node *n);   /* authoritative role */
/* The authoritative server's answer for incoming stream `serial`. */
void s2s_db_verdict(unsigned long serial, const char *remote, const char *local,
                    const char *type);

/* ---- limits.c --------------------------------------------------------- */
/* c's first header (from: its prepared `from`, or NULL): 1 when c is one
 * too many from its address or domain (flagged S2S_F_REFUSED, logged, the
 * caller answers policy-violation). */
int s2s_limits_refused(struct s2s_conn *c, const char *from);

/* ---- policy.c --------------------------------------------------------- */
void s2s_domains_start(void);
void s2s_domains_stop(void);
/* Lookups: sb_domains_find (interned) and sb_domains_anonymous in
 * common/domains.h. */
/* May local and remote exchange stanzas (either direction)? Policy values
 * are parsed by sb_domains_policy_eval (common/domains.h). */
int s2s_policy_allows(const char *local, const char *remote);

/* ---- route.c ---------------------------------------------------------- */
void s2s_route_recv(struct link *l, const struct env_hdr *h, const char *body,
                    size_t len, void *ud);
/* An authenticated incoming stanza to the router (keyed by recipient). */
sb_rc s2s_route_inbound(const char *to_bare, const char *from, const char *body, size_t len);
/* A locally made stanza (bounce) to a local JID's owner. */
sb_rc s2s_route_local(const char *to, const char *from, const char *body, size_t len);
sb_rc s2s_route_pong(const char *instance, const char *remote, const char *id);
void s2s_sessions_changed(void);

#endif
