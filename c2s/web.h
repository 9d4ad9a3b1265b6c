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
    char range[64];             /* Range (GET of an upload) */
    long long clen;             /* Content-Length; -1 when absent or chunked */
    struct sb_buf body;         /* not kept for an upload PUT (streamed to the store) */
};

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
