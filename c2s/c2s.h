/* c2s.h — the client front-ends: sb-c2s, one process holding many XMPP
 * client connections (RFC 6120) on 5222 (STARTTLS) and 5223 (direct TLS,
 * XEP-0368), and sb-bosh, the same session logic behind HTTP (BOSH,
 * WebSocket). A c2s_conn is one XMPP session; how its bytes travel is its
 * transport (struct c2s_transport): TCP/TLS here, BOSH and WebSocket in
 * web_*.c. The session logic owns stream checks, features, SASL, resource
 * binding, stamping and delivery; every stanza after binding goes to the
 * router stamped with the session's full JID. The modules of this folder:
 *   srv.c     start-up, configuration, shutdown shared by both processes
 *   main.c    sb-c2s main (TCP listeners); web_main.c is sb-bosh's
 *   conn.c    conn memory, sid table, timers, close; the TCP transport
 *             (its socket and TLS records: common/tlsconn)
 *   tls.c     GnuTLS credentials (reloadable) and server sessions
 *   stream.c  stream headers, features, stream errors, element dispatch
 *   login.c   SASL exchange and resource binding
 *   sasl2.c   XEP-0388 SASL2 with XEP-0386 Bind 2 and XEP-0484 FAST inline
 *   route.c   stanzas to and from the router, bounces, session end
 *   keepalive.c  server pings and idle limits for bound sessions
 *   rate.c    inbound byte shaper and stanza rate per session
 *   limits.c  per source address (sessions, unauthenticated ones, failed
 *             logins) and per account (failed logins, cluster-wide)
 *   domains.c the served domains, loaded from PostgreSQL
 *   scan.c    small pure helpers: attribute scan, header names, stamping
 *   sm.c      XEP-0198 stream management (the queue lives in the sm)
 *   csi.c     XEP-0352 client state (the holding lives in the sm)
 *   register.c  XEP-0077 registration, password change, account removal
 * See c2s/README.md for the connection lifecycle. */
#ifndef SB_C2S_H
#define SB_C2S_H

#include <ev.h>
#include <gnutls/gnutls.h>

#include "sb.h"
#include "buf.h"
#include "xml.h"
#include "link.h"
#include "pgev.h"
#include "domains.h"
#include "tlsconn.h"
#include "sasl.h"
#include "jid.h"

/* The life of one connection, in order. */
enum c2s_state {
    C2S_S_TLS_HANDSHAKE, /* TLS handshake running (direct TLS or after <proceed/>) */
    C2S_S_CONNECTED,     /* waiting for the client's first stream header */
    C2S_S_STREAM_OPEN,   /* header answered, features sent, not authenticated */
    C2S_S_AUTHENTICATED, /* SASL succeeded; stream restarted; bind pending or to come */
    C2S_S_BOUND,         /* resource bound: stanzas flow */
    C2S_S_CLOSING,       /* stream closed; flushing output, then freed */
};
const char *c2s_state_name(enum c2s_state s);

/* Connection flags (c2s_conn.flags). */
#define C2S_F_TLS         0x0001  /* encrypted: TLS active/running, or HTTPS under BOSH/WS */
#define C2S_F_DIRECT_TLS  0x0002  /* accepted on tls_port */
#define C2S_F_HDR_SENT    0x0004  /* our stream header for the current stream went out */
#define C2S_F_REFUSED     0x0008  /* over a per-address limit (limits.c): its stream gets
                                     policy-violation; logged there, rate-limited */
#define C2S_F_VIA_SM      0x0010  /* XEP-0280: outbound messages go through the user's sm */
#define C2S_F_BIND_WAIT   0x0020  /* control bind sent, answer pending */
#define C2S_F_IN_FEED     0x0040  /* inside xml_stream_feed (restart must be deferred-safe) */
#define C2S_F_IN_SASL_CB  0x0080  /* inside the SASL result callback */
#define C2S_F_IN_TABLE    0x0100  /* sid is in the session table */
#define C2S_F_SASL_RUN    0x0200  /* a SASL exchange is in progress */
#define C2S_F_ANON        0x0400  /* logged in with SASL ANONYMOUS (node claimed) */
#define C2S_F_WAKING      0x0800  /* priming a new parser with a synthetic header */
#define C2S_F_INACTIVE    0x1000  /* XEP-0352: the client said <inactive/> */
#define C2S_F_EOF         0x2000  /* closing: peer closed (or failed); free now */
#define C2S_F_PING_OUT    0x4000  /* keepalive ping sent, no byte from the client since */
#define C2S_F_THROTTLED   0x8000  /* over max_rate: not reading until the bucket refills */

struct c2s_conn;

/* How the session logic reaches the client. Every write is exactly one
 * complete top-level element (or, on TCP, our header / closing tag), so a
 * framed transport can send each as a message. */
struct c2s_transport {
    const char *name;              /* "tcp", "bosh", "ws": logs */
    int framed;                    /* elements travel alone: declare the
                                      stream: prefix on features/errors */
    int starttls;                  /* may upgrade in band (TCP only) */
    /* Our stream header for a (re)started stream: id = c->sid. */
    void (*open)(struct c2s_conn *c, const char *from, const char *to);
    void (*write)(struct c2s_conn *c, const char *data, size_t len);
    /* Close the stream on our side (</stream:stream>, <close/>, terminate). */
    void (*end)(struct c2s_conn *c);
    /* The session is now CLOSING (was: its state before): flush, then get
     * rid of the wire; c is freed by conn.c once EOF is flagged. */
    void (*close)(struct c2s_conn *c, enum c2s_state was);
    /* c is being freed: drop every pointer to it (may be NULL). */
    void (*release)(struct c2s_conn *c);
    /* The byte shaper (rate.c) lets a throttled session read again (may be
     * NULL: the transport never throttles). Not used for TCP (conn.c). */
    void (*resume)(struct c2s_conn *c);
};
extern const struct c2s_transport c2s_tcp_transport;

/* Kept small on purpose: no fixed buffers, strings sized to fit. */
struct c2s_conn {
    struct c2s_conn *prev, *next;  /* all connections of the process */
    struct c2s_conn *hnext;        /* session table chain (by sid) */
    const struct c2s_transport *tp;
    void *tctx;                    /* the transport's own state (BOSH/WS) */
    struct tlsconn tc;             /* TCP socket, TLS, output; fd -1 for BOSH/WS */
    uint16_t flags;
    uint8_t state;
    uint8_t auth_failures;
    ev_timer timer;                /* login / bind deadlines, close linger */
    double login_deadline, bind_deadline, close_deadline;
    double last_rx;                /* last byte from the client (keepalive.c) */
    float rx_tokens, st_tokens;    /* byte and stanza buckets (rate.c) */
    double rate_at;                /* when they were last refilled */
    long long token_id;            /* logged in with a token: ours (> 0), a JWT (-1); 0 none */
    struct xml_stream *xs;
    struct sasl_sess *sasl;
    const char *domain;            /* the stream's domain, interned (domains.c) */
    char *jid;                     /* bare JID after SASL, full after bind: jid_in or heap */
    char *bind_iq;                 /* id of the bind iq being answered */
    struct c2s_smst *sm;           /* XEP-0198 (sm.c), NULL until <enable/>/<resume/> */
    struct c2s_reg *reg;           /* XEP-0077 request in flight (register.c), or NULL */
    struct c2s_sasl2 *s2;          /* XEP-0388 exchange until its <success/> (sasl2.c) */
    struct c2s_addr *addr;         /* its source address's counters (limits.c), NULL none */
    char sid[21];                  /* stream id of the current stream = session id */
    char peer[54];                 /* "ip:port" for logs (INET6_ADDRSTRLEN + port) */
    char jid_in[64];               /* most JIDs fit here: no heap block per session */
};

/* Set c->jid (copied inline when short). SB_ERROR on out-of-memory. */
sb_rc c2s_conn_set_jid(struct c2s_conn *c, const char *jid);

/* Process-wide settings and shared state (one per process). */
struct c2s_cfg {
    const char *listen;
    int port, tls_port;
    const char *cert, *key, *tls_priority;
    const char *cert_dir;          /* NAME.pem per domain (common/certs.h), "" none */
    const char *drain_redirect;    /* host[:port] for <see-other-host/>, "" none */
    double drain_timeout;          /* sbctl drain's default wait */
    struct xml_limits limits;
    double login_timeout, bind_timeout;
    size_t max_pending;            /* output bytes queued per connection */
    size_t max_memory;             /* sb_mem_owned cap (max_memory_mb); 0 = off */
    double parser_idle;            /* free an idle bound conn's parser after this */
    double ping_interval, ping_timeout, idle_timeout;   /* keepalive.c; 0 = off */
    int max_auth_failures;
    int allow_plain;               /* allow_plain_without_tls */
    int channel_binding;           /* 0: no SCRAM-*-PLUS, no XEP-0440 (clients that fail on them) */
    double max_rate, rate_burst;   /* inbound bytes/s and bucket size; 0 = off */
    double max_stanzas, stanza_burst;   /* top-level elements/s and bucket; 0 = off */
    int sm_ack_every;              /* XEP-0198: <r/> after this many unacked stanzas */
    double fast_ttl;               /* XEP-0484: lifetime of a FAST token (s) */
    double sm_ack_after;           /* … or when one waited this long (s); 0 = off */
    /* limits.c, 0 = off: per source address (IPv6: per /64) of this process */
    int max_conns_per_addr;        /* sessions (TCP; sb-bosh: BOSH + WebSocket) */
    int max_unauth_per_addr;       /* of them not yet authenticated */
    double login_failures_per_addr;     /* failed logins per minute (a bucket that deep) */
    /* per account, across the cluster (Redis) */
    int login_failures_per_account;     /* failed logins per window, then locked */
    double login_fail_window;      /* s; the lockout starts at this, doubling */
    double login_lockout_max;      /* s; the longest lockout */
};

/* Listener kinds (c2s_listen_open). */
enum c2s_lis_kind { C2S_LIS_STARTTLS, C2S_LIS_TLS, C2S_LIS_HTTP, C2S_LIS_HTTPS };

/* What differs between sb-c2s and sb-bosh (srv.c runs either). */
struct c2s_frontend {
    const char *kind;              /* config section and HELLO kind */
    int port, tls_port;            /* default ports */
    enum c2s_lis_kind plain_kind, tls_kind;
    /* Accepted on an HTTP(S) listener (sb-bosh only). */
    void (*accept_http)(int fd, const char *peer, int tls);
    sb_rc (*init)(void);           /* after the shared set-up; may be NULL */
    void (*stop)(void);            /* SIGTERM, after sessions were told */
    void (*cleanup)(void);         /* at exit */
};
int c2s_srv_main(int argc, char **argv, const struct c2s_frontend *fe);

struct c2s_srv {
    struct ev_loop *loop;
    const struct c2s_frontend *fe;
    struct c2s_cfg cfg;
    const char *instance;
    struct link *link;
    struct pgev *pg;
    struct rdev *rd;               /* Redis: ANONYMOUS node claims */
    struct rdev *auth_sub;         /* Redis: the credential cache's channel (sasl.h) */
    struct auth_store *store;
    struct c2s_conn *conns;        /* list head */
    long nconns, nsessions;
    int stopping;
    int draining;                  /* sbctl drain: streams being sent away */
};
extern struct c2s_srv c2s;

/* ---- conn.c ---------------------------------------------------------- */
sb_rc c2s_listen_open(const char *addr, int port, enum c2s_lis_kind kind);
void c2s_listen_start(void);                /* begin accepting (domains loaded) */
void c2s_listen_stop(void);
void c2s_conn_free_all(void);               /* at exit: drop every connection */
/* One element to the client through its transport (TCP: written at once
 * when nothing is pending, else queued). */
void c2s_conn_write(struct c2s_conn *c, const char *data, size_t len);
void c2s_conn_writes(struct c2s_conn *c, const char *s);
/* Close: log the reason, end the session if bound, let the transport flush,
 * free later. Safe from any callback; c stays valid until the next loop turn. */
void c2s_conn_close(struct c2s_conn *c, const char *reason);
/* A session on another transport (BOSH/WS): fd -1, state CONNECTED, login
 * deadline armed. NULL on out-of-memory. C2S_NEW_COUNTED: counted against
 * peer's per-address caps (limits.c; over one, its stream begins with the
 * error); C2S_NEW_TRUSTED: not (XEP-0206 pre-bind: peer is the
 * application server, which speaks for many users). */
enum c2s_new_kind { C2S_NEW_COUNTED, C2S_NEW_TRUSTED };
struct c2s_conn *c2s_conn_new_session(const struct c2s_transport *tp, void *tctx,
                                      const char *peer, int secure, enum c2s_new_kind kind);
/* Transports: the wire is gone, free c on the next loop turn. */
void c2s_conn_free_soon(struct c2s_conn *c);
const char *c2s_lis_kind_name(enum c2s_lis_kind k);
/* <proceed/> is queued: start TLS as soon as it has been written. */
void c2s_conn_starttls(struct c2s_conn *c);
void c2s_conn_arm_timer(struct c2s_conn *c);
void c2s_conn_set_state(struct c2s_conn *c, enum c2s_state s);
/* Session table: conns with a bind pending or bound, by sid. */
void c2s_table_add(struct c2s_conn *c);
void c2s_table_del(struct c2s_conn *c);
struct c2s_conn *c2s_table_find(const char *sid);
/* End every session of bare (the sessions in Redis, on any front-end)
 * but this front-end's keep_sid, with the stream error cond and text
 * (ADMIN op=kick-session, one-way). Asynchronous; logged sessions_ended. */
void c2s_route_end_other_sessions(const char *bare, const char *keep_sid, const char *cond,
                                  const char *text);
/* sbctl drain (srv.c): stop accepting, send every stream away over a few
 * seconds (see-other-host to `drain_redirect`, else system-shutdown), exit
 * 0 once they are gone or after `timeout` s. */
void c2s_drain(double timeout);
void c2s_sessions_changed(void);
/* Memory was freed in bulk: give free heap pages back to the kernel soon
 * (malloc_trim at most every few seconds; main.c). */
void c2s_trim_soon(void);

/* ---- tls.c ------------------------------------------------------------ */
/* Load the certificates (the default pair and every domain's own,
 * common/certs.h) and the priority string. */
sb_rc c2s_tls_init(const struct c2s_cfg *cfg);
/* SIGHUP: the certificate files and the priority again; new handshakes
 * use them, running sessions keep theirs. SB_ERROR (logged): the default
 * pair or the priority string failed, the old ones stay in force (a
 * domain's broken file keeps only that domain's old pair). */
sb_rc c2s_tls_reload(const struct c2s_cfg *cfg);
int c2s_tls_available(void);
void c2s_tls_deinit(void);
/* A non-blocking server session on fd with our credentials (HTTPS too).
 * domain: the stream's (STARTTLS after the header), whose certificate it
 * presents; NULL: the client's SNI chooses (direct TLS, HTTPS). */
sb_rc c2s_tls_session_new(int fd, const char *domain, gnutls_session_t *out);
/* The channel bindings of c's TLS session (TCP only): 1 when any. */
int c2s_tls_channel_bindings(const struct c2s_conn *c, struct sasl_cb *out);

/* ---- stream.c --------------------------------------------------------- */
/* Transport-neutral: a (re)started stream to `to` (client's `from`,
 * `version` as sent): checks, our header, features. SB_ERROR: a stream
 * error was sent and c is closing. */
sb_rc c2s_stream_begin(struct c2s_conn *c, const char *to, const char *version,
                       const char *from);
/* One top-level element from the client, by session state. */
void c2s_stream_element(struct c2s_conn *c, struct xml_node *n);
/* The client closed its stream. */
void c2s_stream_closed(struct c2s_conn *c);
/* TCP: the Expat stream parser. */
sb_rc c2s_stream_new(struct c2s_conn *c);         /* parser for a fresh conn */
/* Feed received bytes; may close c. */
void c2s_stream_input(struct c2s_conn *c, const char *data, size_t len);
/* Restart the parser for a new header (RFC 6120 §4.3.3). */
void c2s_stream_restart(struct c2s_conn *c);
/* Free the parser of an idle bound conn (a new one is primed on input). */
void c2s_stream_hibernate(struct c2s_conn *c);
/* Send a stream error (header first if needed) and close. */
void c2s_stream_error(struct c2s_conn *c, const char *cond, const char *why);
/* The same with character data in the condition element (see-other-host). */
void c2s_stream_error_text(struct c2s_conn *c, const char *cond, const char *text,
                           const char *why);
/* The general form: `text` is the condition's character data, `say` a
 * <text/> beside it (why an operator ended the stream), `extra` an
 * application condition element of ours (XEP-0198 <handled-count-too-high/>,
 * never the client's bytes); any may be NULL. */
void c2s_stream_error_full(struct c2s_conn *c, const char *cond, const char *text,
                           const char *say, const char *extra, const char *why);
void c2s_stream_features(struct c2s_conn *c);

/* ---- login.c ---------------------------------------------------------- */
void c2s_sasl_element(struct c2s_conn *c, struct xml_node *n);  /* auth/response/abort */
void c2s_bind_iq(struct c2s_conn *c, struct xml_node *iq, struct xml_node *bind);
void c2s_bind_answer(struct c2s_conn *c, const char *op, const char *aux);
void c2s_bind_timeout(struct c2s_conn *c);
/* Control bind for c (aux: the wanted resource or prefix, body: "" or
 * "exact=1"); the answer comes to c2s_bind_answer. */
sb_rc c2s_bind_request(struct c2s_conn *c, const char *want, const char *body);
/* iq error/result helpers for iqs we answer ourselves. */
void c2s_iq_result(struct c2s_conn *c, const char *id, const char *inner);
void c2s_iq_error(struct c2s_conn *c, const char *id, const char *type, const char *cond);
/* b = "<iq type='TYPE' id='ID'" (no closing '>'), for replies built by hand. */
void c2s_iq_open(struct sb_buf *b, const char *id, const char *type);

/* ---- route.c ---------------------------------------------------------- */
void c2s_route_stanza(struct c2s_conn *c, struct xml_node *st);  /* client → router */
void c2s_route_recv(struct link *l, const struct env_hdr *h, const char *body,
                    size_t len, void *ud);                      /* router → client */
sb_rc c2s_route_control(const char *op, const char *key, const char *sid, const char *aux);
sb_rc c2s_route_control_body(const char *op, const char *key, const char *sid,
                             const char *aux, const char *body);
/* A control to one instance (ROUTE_INSTANCE), empty body. */
sb_rc c2s_route_control_to(const char *instance, const char *op, const char *sid,
                           const char *aux);
/* The same with a body of `len` bytes (it may hold stanzas). */
sb_rc c2s_route_control_data(const char *op, const char *key, const char *sid,
                             const char *aux, const char *body, size_t len);
/* A STANZA envelope keyed by `key` (a bare JID) with op and sid. */
sb_rc c2s_route_send_stanza(const char *op, const char *key, const char *sid,
                            const char *aux, const char *body, size_t len);
void c2s_route_end(struct c2s_conn *c);           /* control end for a bound session */
/* At the first lease: end what an earlier incarnation left in fe:NAME. */
void c2s_route_sweep_stale(void);
void c2s_route_stop(void);
/* Logins whose account is not in the credential cache while PostgreSQL
 * is down ask the other front-ends (cred-ask controls). */
void c2s_route_cred_init(void);

/* ---- sm.c (XEP-0198) -------------------------------------------------- */
void c2s_sm_init(void);
void c2s_sm_stop(void);
/* An element in urn:xmpp:sm:3 after SASL: 1 when it was one (handled). */
int c2s_sm_element(struct c2s_conn *c, struct xml_node *n);
/* A stanza arrived from the client of a bound session (counts for h). */
void c2s_sm_stanza_in(struct c2s_conn *c);
/* A stanza from the sm: op "sm:N" numbers it. Written by the caller; a
 * copy is kept until the client acknowledges it (sm/README.md, adoption). */
void c2s_sm_stanza_out(struct c2s_conn *c, const struct env_hdr *h, const char *body,
                       size_t len);
/* 1 when a numbered stanza comes from an sm that no longer holds this
 * stream's numbering (another sm adopted it): not to be written. */
int c2s_sm_foreign(const struct c2s_conn *c, const struct env_hdr *h);
/* The stream of c broke, its session is detached (session-gone): keep what
 * the client had not acknowledged as a ghost of the stream (by sid). */
void c2s_sm_ghost(struct c2s_conn *c);
/* A numbered stanza for a stream that is not open here: kept in its ghost
 * (1), or no ghost (0). *foreign: numbered by an sm that is not the
 * ghost's owner (not kept). */
int c2s_sm_ghost_keep(const struct env_hdr *h, const char *body, size_t len, int *foreign);
/* Our own answer to the client (c2s_stanza_local) bounced: the user's sm
 * cannot number it; numbered and written here (sm.c). */
void c2s_sm_write_local(struct c2s_conn *c, const char *body, size_t len);
/* The full JID of a ghost, or NULL. */
const char *c2s_sm_ghost_jid(const char *sid);
/* Controls sm-enabled, sm-resumed, sm-failed, sm-takeover: 1 if one. */
int c2s_sm_control(const struct env_hdr *h, const char *body, size_t len);
/* A stanza c2s itself answers a bound client with: through the user's sm
 * when the session is stream-managed (so it is numbered and kept), else
 * written at once. */
void c2s_stanza_local(struct c2s_conn *c, const char *data, size_t len);
/* The op that tells the sm the session is over (`end`), or only detached
 * (`session-gone`, resumable), and its body (h); NULL op: say nothing
 * (resumed elsewhere). */
const char *c2s_sm_end_op(struct c2s_conn *c, char *body, size_t cap);
void c2s_sm_closed_by_client(struct c2s_conn *c);
int c2s_sm_enabled(const struct c2s_conn *c);
void c2s_sm_free(struct c2s_conn *c);
/* The <sm/> stream feature where this transport offers it. */
int c2s_sm_offered(const struct c2s_conn *c);

/* Start stream management / resume with these values (what <enable/> and
 * <resume/> carry); the answer goes through c2s_sm_say. */
void c2s_sm_enable(struct c2s_conn *c, int resume, long max);
void c2s_sm_resume(struct c2s_conn *c, const char *previd, const char *h);
/* Our <enabled/>, <resumed/>, <failed/>: to the client, or into a SASL2
 * <success/> being built. */
void c2s_sm_say(struct c2s_conn *c, const char *xml);

/* ---- sasl2.c (XEP-0388, XEP-0386, XEP-0484) --------------------------- */
/* <authentication/> for the features (mechs as sasl_mechanisms gave them). */
void c2s_mechanism_elements(struct sb_buf *b, const char *mechs);
void c2s_sasl2_features(struct c2s_conn *c, struct sb_buf *b, const char *mechs,
                        const struct sasl_cb *cb);
/* <authenticate/>, <response/>, <abort/> in urn:xmpp:sasl:2, before auth. */
void c2s_sasl2_element(struct c2s_conn *c, struct xml_node *n);
/* 1 while c waits for the answer to an inline Bind 2. */
int c2s_sasl2_binding(const struct c2s_conn *c);
/* The inline bind ended: cond NULL bound, else why not. */
void c2s_sasl2_bound(struct c2s_conn *c, const char *cond);
/* An inline XEP-0198 answer: 1 when taken into the <success/>. */
int c2s_sasl2_sm_said(struct c2s_conn *c, const char *xml);
/* A stanza for c while its <success/> is not written yet: 1 when held
 * (it leaves right after the success). */
int c2s_sasl2_hold(struct c2s_conn *c, const char *data, size_t len);
void c2s_sasl2_free(struct c2s_conn *c);

/* ---- csi.c (XEP-0352) ------------------------------------------------- */
/* An element in urn:xmpp:csi:0 after SASL: 1 when it was one (handled). */
int c2s_csi_element(struct c2s_conn *c, struct xml_node *n);
/* The session was bound or resumed: an <inactive/> said before goes to the sm. */
void c2s_csi_bound(struct c2s_conn *c);

/* ---- register.c (XEP-0077) ------------------------------------------- */
/* Registration is on for c's domain and stream (the stream feature). */
int c2s_register_offered(const struct c2s_conn *c);
/* An iq with a jabber:iq:register query: 1 when answered (or being).
 * Before SASL only where offered (0: the caller treats it as any stanza). */
int c2s_register_iq(struct c2s_conn *c, struct xml_node *iq);
void c2s_register_release(struct c2s_conn *c);    /* c goes: drop its answer */

/* ---- keepalive.c ------------------------------------------------------ */
void c2s_keepalive_seen(struct c2s_conn *c);      /* a byte arrived */
double c2s_keepalive_next(const struct c2s_conn *c);   /* deadline of a bound conn, 0 none */
int c2s_keepalive_check(struct c2s_conn *c, double now);   /* 1: closed */
int c2s_keepalive_answer(struct c2s_conn *c, const struct xml_node *n);   /* 1: consumed */

/* ---- rate.c ----------------------------------------------------------- */
void c2s_rate_init(struct c2s_conn *c);           /* full buckets (new session) */
/* n bytes were read: 0 to go on reading, else seconds until the session
 * may read again (the transport stops reading meanwhile). */
double c2s_rate_bytes(struct c2s_conn *c, size_t n);
double c2s_rate_resume_at(const struct c2s_conn *c);   /* when a throttled reader resumes */
/* One top-level element arrived: 1 when over the stanza rate (a
 * policy-violation stream error was sent and c is closing). */
int c2s_rate_stanza(struct c2s_conn *c);

/* Refill a token bucket by dt seconds at rate per second, at most burst
 * (the one bucket arithmetic of rate.c and limits.c). */
float c2s_bucket_refill(float tokens, double dt, double rate, double burst);

/* ---- limits.c --------------------------------------------------------- */
void c2s_limits_init(void);       /* account locks: subscribe to the cluster's channel */
void c2s_limits_stop(void);
/* c (c->peer set) is a new session: counted against its address, or, over
 * max_conns_per_addr / max_unauth_per_addr, flagged C2S_F_REFUSED and not
 * counted (its stream gets policy-violation). 1 when refused. */
int c2s_limits_conn_new(struct c2s_conn *c);
/* c leaves the unauthenticated states (c2s_conn_set_state). */
void c2s_limits_conn_authed(struct c2s_conn *c);
void c2s_limits_conn_gone(struct c2s_conn *c);   /* conn_free */
/* May c start a SASL exchange? 0: its address is over
 * login_failures_per_addr (answer temporary-auth-failure). */
int c2s_limits_login_allowed(struct c2s_conn *c);
/* A SASL exchange of c ended with r: counts a failed login (address and
 * account). NULL: answer r as it is; else the condition to fail with
 * instead (temporary-auth-failure: the account is locked, whatever the
 * password). */
const char *c2s_limits_login_done(struct c2s_conn *c, const struct sasl_result *r);
/* The stream of a refused conn (stream.c, at its header). */
void c2s_limits_refuse_stream(struct c2s_conn *c);

/* ---- domains.c -------------------------------------------------------- */
void c2s_domains_start(void);       /* load now and every 30 s (common/domains.c) */
void c2s_domains_stop(void);
/* Lookups: sb_domains_find (interned, valid for the whole process) and
 * sb_domains_anonymous in common/domains.h. */

/* ---- anon.c ------------------------------------------------------------ */
void c2s_anon_init(void);                          /* claim function for auth/ */
void c2s_anon_release(struct c2s_conn *c);         /* session over: drop the claim */
/* May a user of anonymous domain `anon_domain` send to `target` (a domain)? */
int c2s_anon_may_reach(const char *anon_domain, const char *target);

/* ---- scan.c ----------------------------------------------------------- */
/* Value of attribute `name` in the first start tag of an XML fragment,
 * entities decoded, into out (cap bytes). Length, or -1 if absent/bad. */
long c2s_scan_attr(const char *xml, size_t len, const char *name, char *out, size_t cap);
/* 1 when the first start tag has attribute `name`, whatever its value
 * (c2s_scan_attr also says -1 for a value it cannot decode or fit). */
int c2s_scan_has_attr(const char *xml, size_t len, const char *name);
/* 1 if the address is a loopback one ("127.x", "::1", "localhost"). */
int c2s_is_loopback(const char *addr);
/* The stream error condition for a client stream header whose name or
 * namespaces are wrong (RFC 6120 §4.8), NULL when they are right. */
const char *c2s_stream_check_names(const struct xml_node *hdr);
/* st written for the router: `from` = the sender's JID, `to` = the
 * prepared address (or none), every other attribute and child as sent. */
sb_rc c2s_stanza_stamp(const struct xml_node *st, const char *from, const char *to,
                       struct sb_buf *b);

#endif
