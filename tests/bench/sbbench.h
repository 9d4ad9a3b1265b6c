/* sbbench.h — the load generator of `make bench`: one libev loop holding
 * many XMPP client connections (RFC 6120 stream, optional STARTTLS, SASL
 * SCRAM-SHA-1 or PLAIN, bind, session, roster get, initial presence) and
 * driving the scenarios (login storm, message throughput, idle
 * connections). It targets any XMPP server: host, ports, domain and user
 * naming are options. Modules:
 *   main.c    options, scenarios, step reports (JSON lines on stdout)
 *   client.c  one connection: socket/TLS I/O, element splitter, login
 *   web.c     the WebSocket (RFC 7395) and BOSH (XEP-0206) transports
 *   chaos.c   the chaos scenario: chatting through kills, every message accounted for
 *   resume.c  the resumption storm: XEP-0198 sessions resumed after their front-end died
 *   fanout.c  fan-out: a MUC room of N occupants, a PEP publisher with N contacts
 *   scram.c   SCRAM-SHA-1 / SCRAM-SHA-256 (-PLUS) client with a cache of derived keys
 *   tokens.c  X-OAUTH2 tokens, OAUTHBEARER JWTs (HS256), XEP-0484 FAST tokens
 *   stats.c   latency histogram, /proc CPU and RSS sampling */
#ifndef SBB_H
#define SBB_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <ev.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>

/* ---- options (main.c) ------------------------------------------------- */
struct sbb_opts {
    const char *host, *domain, *prefix, *passprefix;
    int ports[16], nports;
    int tls;                 /* STARTTLS before SASL */
    int plain;               /* SASL PLAIN instead of SCRAM-SHA-1 */
    int sha256;              /* --mech scram-sha-256: SCRAM-SHA-256 instead */
    int plus;                /* --mech scram-sha-256-plus: with tls-exporter binding */
    int xoauth2;             /* --mech x-oauth2: a token of --token-file per user */
    int oauthbearer;         /* --mech oauthbearer: a JWT signed with --jwt-key */
    int fast;                /* --mech fast: SASL2 HT-SHA-256-NONE with a FAST token */
    int fast_prep;           /* SASL2 PLAIN login asking for that token (set-up phase) */
    struct in_addr src[64];  /* --src: source addresses, user i on src[i % nsrc] */
    int nsrc;
    int first;               /* first user number */
    double login_timeout;
    int sm;                  /* XEP-0198: <enable resume='true'/> after bind */
    int sm_ack_every;        /* with sm: an <r/> after every N stanzas sent (0: never) */
    const char *scram_cache; /* file of derived SCRAM keys (may be NULL) */
    int transport;           /* --transport: SBB_TP_* */
    const char *path;        /* --path: the WebSocket / BOSH URL path */
};
enum sbb_transport { SBB_TP_TCP, SBB_TP_WS, SBB_TP_BOSH };
extern struct sbb_opts sbb_opt;
extern struct ev_loop *sbb_loop;

/* Run the loop for secs (main.c); the step report's "procs" object. */
void sbb_run_for(double secs);
void sbb_print_procs(FILE *f);

/* ---- chaos.c ---------------------------------------------------------- */
struct sbb_chaos_cfg {
    int users, window, body, max_attempts;
    double rate, secs, drain;
    int check;               /* after the drain: offline storage and MAM for what is missing */
    const char *label;
};
/* Log the users in, chat for secs, drain, print one JSON line. With
 * sbb_opt.sm every client is a XEP-0198 client: it resumes after a drop and
 * re-sends what the server had not acknowledged. 0, or 2 when the users
 * could not be logged in at the start. */
int sbb_chaos_run(const struct sbb_chaos_cfg *cfg);

/* ---- resume.c --------------------------------------------------------- */
struct sbb_resume_cfg {
    int users, senders, window, body, before, dead, kill_pid;
    double drain, settle;
    const char *label;
};
/* Users with resumable sessions on ports[0], senders on ports[1]; kill_pid
 * is SIGKILLed (the users' front-end), the users resume on ports[1]. One
 * JSON line; 0, 1 when a resumption failed or a message was lost or
 * duplicated, 2 when the set-up failed. */
int sbb_resume_run(const struct sbb_resume_cfg *cfg);

/* ---- fanout.c --------------------------------------------------------- */
struct sbb_fanout_cfg {
    int users, window, senders;
    double rate, secs, drain;
    const char *room;        /* muc: room@service */
    const char *label;
};
/* muc: users join `room`, `senders` of them send groupchat at `rate`
 * messages/s in total for secs; every occupant's deliveries are counted
 * and timed. pep: user `first` publishes a tune at `rate`/s to the other
 * users-1 (its contacts, with caps asking tune+notify). One JSON line; 0,
 * 1 when deliveries were missing, 2 when the set-up failed. */
int sbb_fanout_muc(const struct sbb_fanout_cfg *cfg);
int sbb_fanout_pep(const struct sbb_fanout_cfg *cfg);

/* ---- client.c --------------------------------------------------------- */
enum sbb_state {
    SBB_CONNECTING, SBB_FEATURES, SBB_PROCEED, SBB_HANDSHAKE, SBB_SASL,
    SBB_FEATURES2, SBB_BIND, SBB_SESSION, SBB_SM_ENABLE, SBB_RESUME, SBB_ROSTER,
    SBB_ONLINE, SBB_CLOSING, SBB_DEAD,
    SBB_HTTP                 /* WebSocket: the Upgrade sent, waiting for the 101 */
};

struct sbb_buf {
    char *data;
    size_t len, cap;
};

struct sbb_conn {
    int fd;
    int user;                /* user number (prefixN) */
    uint8_t state, tls_on, want_session, closed_ok;
    uint8_t sasl2;           /* authenticating with SASL2 (FAST) */
    uint8_t in_io, zombie;   /* freed inside its own callback: free on return */
    ev_io io;
    gnutls_session_t tls;
    size_t tls_pending;      /* bytes handed to a gnutls send that said AGAIN */
    struct sbb_buf in, out;
    size_t scan;             /* splitter: bytes of `in` already scanned */
    int depth;               /* splitter: element depth (stream = 0) */
    size_t elem_start;
    double t0;               /* login start (monotonic seconds) */
    char *scram;             /* SCRAM state while authenticating */
    /* message scenario */
    int peer;                /* index of the conn this one sends to */
    uint32_t tx_seq, rx_next;
    int slot;                /* owner's index (in-flight table, user table) */
    int step;                /* login storm: the step it was started in */
    /* XEP-0198 (sm_want: enable after bind; resume_id: resume instead of bind) */
    uint8_t sm_want, sm_on;
    uint32_t sm_h;           /* stanzas received since <enabled/>/<resumed/> */
    uint32_t sm_out;         /* stanzas sent since then */
    uint32_t sm_acked;       /* the server's last h */
    uint32_t resume_h;       /* h to present in <resume/> */
    char sm_id[64];          /* <enabled id/>, or the previd to resume */
    uint8_t resume;          /* log in with <resume previd=sm_id h=resume_h/> */
    double resumed_at;
    /* WebSocket / BOSH (web.c) */
    uint8_t web_up;          /* ws: upgraded */
    uint8_t web_busy;        /* bosh: a request is out */
    uint8_t web_feeding;     /* bosh: handling a response (writes wait in q) */
    uint8_t web_restart;     /* bosh: the next request restarts the stream */
    struct sbb_buf raw;      /* bytes read, not yet unframed */
    struct sbb_buf q;        /* bosh: elements for the next request */
    char *sid;               /* bosh: the session id */
    unsigned long long rid;  /* bosh: the next request id */
};

/* Callbacks of the scenario driving the connections. */
struct sbb_events {
    void (*online)(struct sbb_conn *c);                 /* login complete */
    void (*failed)(struct sbb_conn *c, const char *why);/* login failed or conn lost */
    void (*message)(struct sbb_conn *c, const char *el, size_t len);
    void (*other)(struct sbb_conn *c, const char *el, size_t len);  /* presence, iq (online) */
    /* XEP-0198: the server has handled h of our stanzas (<a/>, <resumed/>,
     * <failed h/>); may be NULL */
    void (*acked)(struct sbb_conn *c, uint32_t h);
    void (*iq)(struct sbb_conn *c, const char *el, size_t len);   /* once online; may be NULL */
};
extern struct sbb_events sbb_ev;

double sbb_now(void);                          /* CLOCK_MONOTONIC seconds */
struct sbb_conn *sbb_conn_start(int user);     /* connect + log in; NULL on error */
/* The same on ports[port_ix % nports] (sbb_conn_start: port_ix = user - first). */
struct sbb_conn *sbb_conn_start_on(int user, int port_ix);
void sbb_conn_write(struct sbb_conn *c, const char *data, size_t len);
/* A stanza: written and, when managed, counted (an <r/> every sm_ack_every). */
void sbb_conn_stanza(struct sbb_conn *c, const char *data, size_t len);
void sbb_conn_close(struct sbb_conn *c);       /* </stream:stream>, close when answered */
void sbb_conn_free(struct sbb_conn *c);
int sbb_tls_init(void);
const char *sbb_mech_name(void);               /* the SASL mechanism of the options */
const char *sbb_state_name(int s);
/* For web.c: bytes as they go on the wire; unframed input for the splitter;
 * a failure; the stream (re)start; buffers; an attribute of a start tag. */
void sbb_conn_raw(struct sbb_conn *c, const char *data, size_t len);
void sbb_conn_feed(struct sbb_conn *c, const char *data, size_t len);
void sbb_conn_fail(struct sbb_conn *c, const char *why);
void sbb_conn_header(struct sbb_conn *c);
void sbb_buf_add(struct sbb_buf *b, const char *p, size_t n);
void sbb_buf_consume(struct sbb_buf *b, size_t n);
void sbb_attr_get(const char *el, size_t len, const char *name, char *out, size_t cap);

/* ---- web.c ------------------------------------------------------------ */
void sbb_web_connected(struct sbb_conn *c);   /* TCP up: Upgrade, or session request */
void sbb_web_open(struct sbb_conn *c);        /* <open/>, or session / restart request */
void sbb_web_write(struct sbb_conn *c, const char *data, size_t len);
int sbb_web_close(struct sbb_conn *c);        /* 1: nothing more to send, drop it */
void sbb_web_input(struct sbb_conn *c, const char *data, size_t len);

/* ---- scram.c ---------------------------------------------------------- */
/* client-first-message (base64, NUL-terminated) into out; state in *st.
 * cb (cbl bytes): tls-exporter data for -PLUS (gs2 "p=tls-exporter"), or NULL. */
int sbb_scram_first(int user, const char *name, const uint8_t *cb, size_t cbl, char **st,
                    char *out, size_t cap);
/* Answer to the server-first-message (base64 in): client-final in out. */
int sbb_scram_final(int user, const char *password, char *st, const char *b64,
                    size_t len, char *out, size_t cap);
/* Check the server-final-message (base64) against the expected signature. */
int sbb_scram_verify(const char *st, const char *b64, size_t len);
void sbb_scram_load(const char *path);
void sbb_scram_save(const char *path);
long sbb_scram_derived(void);                  /* PBKDF2 runs done */

/* ---- tokens.c --------------------------------------------------------- */
int sbb_token_set(int user, const char *token, size_t len);
const char *sbb_token_get(int user);           /* NULL when the user has none */
int sbb_token_load(const char *path);          /* "USER TOKEN" lines; how many, -1 */
int sbb_jwt_key_load(const char *path);        /* HS256 secret; 0 or -1 */
/* A JWT (HS256, sub, iat, exp = now + 1 h) for sub into out. */
int sbb_jwt_make(const char *sub, char *out, size_t cap);
/* HT-SHA-256-NONE initial response (base64) with the user's FAST token and
 * the next count to present. */
int sbb_fast_response(int user, const char *name, char *out, size_t cap, long long *count);

/* ---- stats.c ---------------------------------------------------------- */
#define SBB_HBUCKETS (64 + 40 * 32)
struct sbb_hist {
    uint64_t n, b[SBB_HBUCKETS];
    double max;
};
void sbb_hist_add(struct sbb_hist *h, double secs);
double sbb_hist_pct(const struct sbb_hist *h, double p);   /* seconds */

#define SBB_MAXWATCH 16
struct sbb_watch {
    char name[32];
    int pid, children;       /* children: add the live children's times */
    double cpu0, cpu;        /* CPU seconds at start / during the window */
    long rss_kb, rss0_kb;
};
extern struct sbb_watch sbb_watch[SBB_MAXWATCH];
extern int sbb_nwatch;
int sbb_watch_add(const char *spec);          /* NAME:PID or NAME:PID+ */
void sbb_watch_begin(void);
void sbb_watch_end(void);
double sbb_self_cpu(void);

#endif
