/* web.h — sb-bosh, the web front-end: the c2s session core (c2s.h) behind
 * HTTP on 5280 (plain) and 5281 (HTTPS):
 *   /http-bind        BOSH (XEP-0124, XEP-0206)          web_bosh.c
 *   /xmpp-websocket   XMPP over WebSocket (RFC 7395)     web_ws.c
 *   /http-pre-bind    server-side session creation        web_prebind.c
 * web_http.c owns the HTTP connections (accept, TLS, http_parser, responses
 * with CORS headers, keep-alive, the upgrade to WebSocket); web_main.c is
 * sb-bosh's main and configuration. To the router sb-bosh is one more
 * client front-end (kind "bosh"); its sessions count like c2s ones. */
#ifndef SB_WEB_H
#define SB_WEB_H

#include <sys/types.h>
#include "c2s.h"

#include <http_parser.h>
#include <wslay/wslay.h>

/* [bosh] settings beyond the c2s ones (web_main.c). */
struct web_cfg {
    int wait_max;           /* longest `wait` granted (60) */
    int hold_max;           /* most requests held (1) */
    int inactivity;         /* seconds without a request before the session ends (60) */
    int polling;            /* shortest interval between empty polls (2) */
    int maxpause;           /* longest `pause` (120) */
    size_t max_body;        /* bytes of one HTTP request body */
    int ws_ping;            /* seconds between WebSocket pings (30); 0 = none */
    const char *cors_origins;   /* "*" or a space/comma list of origins */
    const char *prebind_secret; /* "" disables /http-pre-bind */
    uint8_t prebind_digest[SB_SECRET_DIGEST];   /* sb_secret_digest of it */
    const char *bosh_path, *ws_path, *prebind_path;
};
extern struct web_cfg web_cfg;

/* ---- one HTTP request, as parsed (web_http.c) ----------------------------- */
struct web_conn;

struct web_req {
    int method;                 /* enum http_method */
    char path[1280];            /* an upload URL carries the file name */
    char query[512];
    char origin[256];
    char ctype[128];
    char auth[256];             /* Authorization */
    char upgrade[32];
    char ws_key[64], ws_version[8], ws_proto[128];
    int keep_alive;             /* HTTP/1.1 keep-alive semantics */
    int upgrade_req;            /* Connection: upgrade with an Upgrade header */
    char range[64];             /* Range (GET of an upload) */
    long long clen;             /* Content-Length; -1 when absent or chunked */
    struct sb_buf body;         /* not kept for an upload PUT (streamed to the store) */
};

/* ---- the pure parsing steps (web_parse.c; tests/fuzz calls them too) ------- */
/* One HTTP request at a time, fed in pieces. */
struct web_reqp {
    http_parser parser;
    struct web_req req;
    char hname[48];
    size_t hname_len;
    char *hdst;                 /* where the current header's value goes */
    size_t hcap, hlen;
    size_t max_body;
    uint8_t req_done, started, bad, streamed;
    /* Optional hooks of the daemon (NULL in the fuzzers). on_headers runs
     * when the headers are in: it may refuse (set fail, fail_why: the
     * request is answered without reading its body) or take the body
     * (set streamed: on_body gets it instead of req.body). */
    void (*on_headers)(struct web_reqp *p);
    int (*on_body)(struct web_reqp *p, const char *at, size_t n);   /* nonzero: fail set */
    void *ud;
    int fail;                   /* HTTP status a hook refused with, 0 */
    const char *fail_why;
};
enum web_reqp_rc {
    WEB_REQP_MORE,              /* all consumed, the request is not complete */
    WEB_REQP_DONE,              /* complete in p->req; *used bytes were its own */
    WEB_REQP_BAD,               /* 400: not HTTP (web_reqp_error says why) */
    WEB_REQP_TOO_BIG,           /* 413: body over max_body */
    WEB_REQP_HDR_TOO_BIG,       /* 431: a kept header or the path overflowed */
    WEB_REQP_FAILED,            /* a hook refused: p->fail, p->fail_why */
};
void web_reqp_setup(void);      /* parser settings, once per process */
void web_reqp_init(struct web_reqp *p, size_t max_body);
void web_reqp_free(struct web_reqp *p);
/* Forget the request (keep the body buffer) and read the next one. */
void web_reqp_next(struct web_reqp *p);
enum web_reqp_rc web_reqp_feed(struct web_reqp *p, const char *data, size_t len, size_t *used);
const char *web_reqp_error(const struct web_reqp *p);

#define WEB_BOSH_RID_MAX 9007199254740991ULL   /* 2^53 - 1 (XEP-0124 §14.1) */
/* A request body that is a <body/> in the BOSH namespace, or NULL. */
struct xml_doc *web_bosh_parse(const char *data, size_t len, const struct xml_limits *lim);
/* A rid (1 .. 2^53-1, digits only): 0 and *out set, else -1. */
int web_bosh_rid(const char *s, uint64_t *out);
/* A small non-negative integer attribute (at most 6 digits), else def. */
int web_bosh_int_attr(const struct xml_node *n, const char *name, int def);

/* Why an upgrade request is refused (400), NULL when it is a good one. */
const char *web_ws_check_upgrade(const struct web_req *r);
/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
void web_ws_accept_key(const char *key, char out[29]);
/* A server context with our message length cap. -1 on out-of-memory. */
int web_ws_ctx_new(wslay_event_context_ptr *ctx, const struct wslay_event_callbacks *cbs,
                   void *ud, size_t max_msg);
/* One text message as an element; NULL with *empty set for whitespace
 * only, NULL with *err for bad XML. */
struct xml_doc *web_ws_parse(const char *msg, size_t len, const struct xml_limits *lim,
                             int *empty, enum xml_err *err);

/* What a pending request on an HTTP connection waits for. */
enum web_wait { WEB_WAIT_NONE, WEB_WAIT_BOSH, WEB_WAIT_PREBIND };

void web_http_init(void);
void web_http_accept(int fd, const char *peer, int tls);
void web_http_stop(void);               /* SIGTERM: close idle connections */
void web_http_free_all(void);
/* Answer the pending request. cors: add the CORS headers. The connection
 * reads the next request (keep-alive) or closes. */
void web_respond(struct web_conn *h, int status, const char *ctype, const char *body,
                 size_t len, int cors);
/* The pending request is being kept (BOSH hold, pre-bind): who to tell if
 * the connection goes away first (web_bosh_conn_gone / web_prebind_gone). */
void web_http_wait(struct web_conn *h, enum web_wait what, void *obj);
const char *web_http_peer(const struct web_conn *h);
int web_http_secure(const struct web_conn *h);
/* Switch the connection to WebSocket after the 101 went out (web_ws.c). */
typedef ssize_t (*web_raw_io)(struct web_conn *h, void *buf, size_t len);
ssize_t web_http_raw_read(struct web_conn *h, void *buf, size_t len);   /* -1 EAGAIN, -2 error, 0 EOF */
ssize_t web_http_raw_write(struct web_conn *h, const void *buf, size_t len);
void web_http_want(struct web_conn *h, int read, int write);
int web_http_pending(const struct web_conn *h);     /* output not yet written */
void web_http_upgraded(struct web_conn *h, void *ws);
void web_http_close(struct web_conn *h, const char *reason);
/* Answer the pending request with `len` bytes of file fd from `off`
 * (streamed as the socket drains, never read whole; fd is closed when done
 * or the connection goes). headers: extra header lines, each ending CRLF.
 * head: headers only (HEAD). */
void web_respond_file(struct web_conn *h, int status, const char *ctype, const char *headers,
                      int fd, off_t off, off_t len, int head);
/* Plain-text error answer; the connection closes after it. */
void web_http_error(struct web_conn *h, int status, const char *text);
/* Is this origin allowed to use /http-bind (CORS)? */
int web_origin_allowed(const char *origin);

/* ---- BOSH (web_bosh.c) ----------------------------------------------------- */
void web_bosh_request(struct web_conn *h, struct web_req *r);
void web_bosh_conn_gone(void *bosh, struct web_conn *h);
void web_bosh_init(void);
void web_bosh_free_all(void);
/* Pre-bind: a new session whose login is driven here, not by a client.
 * The session reports to web_prebind_event() until it is handed over. */
struct web_bosh;
struct web_bosh *web_bosh_new_prebind(const char *domain, const char *peer, int secure,
                                      void *pb);
struct c2s_conn *web_bosh_conn(struct web_bosh *b);
const char *web_bosh_sid(const struct web_bosh *b);
uint64_t web_bosh_next_rid(const struct web_bosh *b);
void web_bosh_prebind_done(struct web_bosh *b, int ok);   /* drop output, hand over or end */

/* ---- WebSocket (web_ws.c) ---------------------------------------------------- */
void web_ws_upgrade(struct web_conn *h, struct web_req *r);
void web_ws_io(void *ws, int revents);     /* the HTTP conn is readable/writable */
void web_ws_conn_gone(void *ws);           /* the HTTP conn is being freed */
void web_ws_ping_all(void);

/* ---- pre-bind (web_prebind.c) ------------------------------------------------ */
void web_prebind_request(struct web_conn *h, struct web_req *r);
void web_prebind_gone(void *pb);
/* What the pre-bound session wrote: one element. */
void web_prebind_event(void *pb, const char *data, size_t len);
void web_prebind_closed(void *pb);

/* ---- HTTP File Upload, XEP-0363 (web_upload.c) ------------------------------ */
struct web_upload;
sb_rc web_upload_init(void);    /* reads [upload]; off unless url is set */
void web_upload_free_all(void);
/* Is this path (no query) under the upload prefix? */
int web_upload_path(const char *path);
/* A PUT's headers are complete (query split off): 0 to take the body (*up
 * set), or the HTTP status to refuse it with (text in *why). */
int web_upload_put_begin(struct web_conn *h, struct web_req *r, struct web_upload **up,
                         const char **why);
/* Body bytes of an accepted PUT: 0, or the status to fail with. */
int web_upload_put_data(struct web_upload *up, const char *data, size_t len, const char **why);
void web_upload_put_abort(struct web_upload *up);
/* The request is complete: answer it (PUT commit, GET, HEAD, OPTIONS). */
void web_upload_request(struct web_conn *h, struct web_req *r, struct web_upload *up);

/* ---- shared helpers ------------------------------------------------------------ */
/* Append one element; message/presence/iq without xmlns get jabber:client
 * (a BOSH body or a WebSocket frame has no stream default namespace). */
sb_rc web_add_element(struct sb_buf *b, const char *data, size_t len);

#endif
