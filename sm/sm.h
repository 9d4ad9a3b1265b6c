/* sm.h — the session manager's core, as seen by its modules.
 *
 * Every envelope the sm receives becomes one sm_job. A job addressed to a
 * local user (routing key `node@domain`) waits in that user's FIFO queue and
 * runs only when the user's sessions are loaded and no earlier job of the
 * same user is still waiting on Redis or PostgreSQL; other jobs (to a domain,
 * instance clean-up) run at once. A job runs by offering it to each module
 * of sm_modules[] in order until one answers:
 *   SB_OK        handled, the job is finished
 *   SB_DECLINED  not mine, try the next module
 *   SB_AGAIN     handled, but asynchronously: the module keeps the job and
 *                calls sm_job_done() when its last reply arrived (the user's
 *                queue is held until then)
 * See sm/README.md for the lifecycle of a user record. */
#ifndef SB_SM_H
#define SB_SM_H

#include <ev.h>
#include <uthash.h>
#include "sb.h"
#include "buf.h"
#include "env.h"
#include "xml.h"
#include "link.h"
#include "rdev.h"
#include "pgev.h"

/* One bound resource of a user, mirrored from Redis `sess:{bare}`. */
struct sm_session {
    char *resource;                     /* owned */
    char instance[ENV_NAME_MAX + 1];    /* front-end holding the stream */
    char sid[ENV_NAME_MAX + 1];         /* its stream id there */
    int prio;                           /* last <priority>, default 0 */
    int available;                      /* sent available presence */
    char *pres;                         /* its last available presence XML
                                           (as in pres:{bare}), owned, or NULL */
    size_t pres_len;
    unsigned blocklist_pushes : 1;      /* asked for the blocklist: gets pushes */
    unsigned carbons : 1;               /* XEP-0280 enabled (kept in sess:, mod_carbons.c) */
    unsigned inactive : 1;              /* XEP-0352 said <inactive/> (kept in sess:, mod_csi.c) */
    unsigned got : 1;                   /* mod_deliver: this message reached it (carbons) */
    struct sm_smq *smq;                 /* XEP-0198 state (mod_sm.c), or NULL */
    struct sm_csi *csi;                 /* stanzas held while inactive (mod_csi.c), or NULL */
};

struct sm_acct;                         /* account facts from PostgreSQL (acct.h) */

/* The cached state of one local bare JID; Redis stays the truth. */
struct sm_user {
    char *bare;                         /* key, owned */
    struct sm_core *core;
    struct sm_session *sess;
    int nsess, cap;
    struct sm_job *qhead, *qtail;       /* waiting jobs, FIFO */
    int qlen;
    struct sm_job *cur;                 /* job waiting on Redis/PG, or NULL */
    int load_wait;                      /* load replies still outstanding */
    unsigned loaded : 1, loading : 1, in_run : 1;
    unsigned stale : 1;                 /* load failed: evict when idle */
    struct sm_im *im;                   /* IM state (sm/im.h): roster, per-
                                           resource flags; NULL until needed */
    struct sm_acct *acct;               /* loaded with the user (mod_account) */
    UT_hash_handle hh;
};

/* One received envelope, with its stanza parsed once. */
struct sm_job {
    struct sm_job *next;
    struct sm_core *core;
    struct sm_user *user;               /* NULL: not a per-user job */
    uint8_t kind, route, flags;         /* env_kind, env_route, ENV_F_* */
    const char *key, *sender, *sid, *op, *aux;  /* envelope strings */
    const char *body;                   /* stanza or control body, NUL-ended */
    size_t body_len;
    /* Filled for ENV_STANZA before modules run (NULL/"" when absent). */
    struct xml_doc *doc;
    struct xml_node *st;                /* the stanza element */
    const char *name;                   /* "message", "presence", "iq" */
    const char *type;                   /* type attribute or "" */
    const char *from, *to, *id;
    unsigned in_dispatch : 1, finished : 1;
    char *body_own;                     /* a rewritten body (sm_job_set_body) */
    double t_in;                        /* received (sb_now): queue and job times */
    char data[];                        /* the strings above */
};

struct sm_module {
    const char *name;
    sb_rc (*handle_iq)(struct sm_job *j, const char *ns);
    sb_rc (*handle_message)(struct sm_job *j);
    sb_rc (*handle_presence)(struct sm_job *j);
    sb_rc (*handle_control)(struct sm_job *j, const char *op);
    /* Optional: start module state (timers) once the core is up. */
    void (*start)(struct sm_core *c);
    /* Optional: release module state at shutdown, after Redis/PostgreSQL
     * were closed (their pending callbacks have run). */
    void (*stop)(struct sm_core *c);
    /* Optional: a user record is being freed; release what the module
     * hung on it. */
    void (*user_free)(struct sm_user *u);
    /* Optional: the disco#info features this module implements, NULL-ended
     * (mod_disco lists the union, so the list lives beside the code). */
    const char *const *features;
    /* Optional: load per-user state while a user record loads (before any
     * of its jobs runs). SB_AGAIN: call sm_user_loaded(u, ok) later, once;
     * SB_OK: loaded now; SB_ERROR: failed (the record is marked stale). Free it in
     * user_free. */
    sb_rc (*load_user)(struct sm_user *u);
};

/* The ordered module table (sm/modules.c): order is data, not code. */
extern const struct sm_module *const sm_modules[];
extern const size_t sm_nmodules;

#define SM_GONE_MAX 16
struct sm_core {
    struct ev_loop *loop;
    struct link *link;
    struct sb_curve *curve;             /* the bus keys (common/curve.h) */
    struct rdev *rd;                    /* NULL while stopping */
    struct pgev *pg;                    /* NULL while stopping */
    struct sm_user *users;              /* uthash by bare JID */
    char *sm_members;                   /* sorted "sm1\nsm2\n" last seen */
    long nsessions;                     /* cached sessions, for HELLO */
    long handed_over;                   /* lease lost: unacked stanzas sent to new owners */
    struct env_hdr out;                 /* scratch header for sends */
    struct sb_buf obuf;                 /* scratch serialisation buffer */
    double started;                     /* sb_now() at start (uptime) */
    /* Front-ends a delivery to came back from (cluster.c): skipped until
     * their lease could have ended, so what is meant for their sessions
     * goes to another session or to offline storage. */
    struct sm_gone {
        char name[ENV_NAME_MAX + 1];
        double until;
    } gone[SM_GONE_MAX];
    int ngone;
    unsigned stopping : 1;
    unsigned failed : 1;                /* no router at start: exit 1 */
};

/* ---- lifecycle (core.c) ---------------------------------------------------- */
struct sm_core *sm_core_new(struct ev_loop *loop, const char *instance);
void sm_core_free(struct sm_core *c);

/* ---- jobs and users ------------------------------------------------------- */
/* A module that answered SB_AGAIN calls this exactly once when finished. */
void sm_job_done(struct sm_job *j);
/* Instead of sm_job_done: offer the job again to the modules starting at
 * `from` (a module that answered SB_AGAIN while it loaded state it needs);
 * the job finishes unless a module keeps it again. */
void sm_job_rerun(struct sm_job *j, const struct sm_module *from);

/* The stanza bytes later modules deliver or store become `b`'s (taken
 * over: b is left empty); j->st still describes the received stanza. Used
 * by mod_mam to add a <stanza-id/>. */
void sm_job_set_body(struct sm_job *j, struct sb_buf *b);
/* A serialised stanza with `child` (serialised) inserted before its end
 * tag, into out (appended). SB_ERROR for a self-closed stanza. */
sb_rc sm_stanza_add_child(const char *body, size_t len, const char *child, size_t clen,
                          struct sb_buf *out);

struct sm_session *sm_user_session(struct sm_user *u, const char *resource);
/* Can the job's stanza sent to s reach it? No while its front-end is known
 * to be gone (a delivery to it bounced, its lease not yet over), nor when
 * the job is that session's front-end handing back a stanza for a stream it
 * no longer holds (op "stale", sid = that stream). */
int sm_job_reaches(const struct sm_job *j, const struct sm_session *s);
/* A front-end shows it is alive (a bind from it): no longer skipped. */
void sm_frontend_alive(struct sm_core *c, const char *instance);
struct sm_session *sm_user_add_session(struct sm_user *u, const char *resource,
                                       const char *instance, const char *sid, int prio);
void sm_user_del_session(struct sm_user *u, const char *resource);
/* The session's sess:{bare} value, "instance sid prio[ flags]" (flags: `c`
 * carbons, `i` inactive; common/ENVELOPE.md), and its pipelined HSET. */
void sm_session_record(const struct sm_session *s, char *out, size_t cap);
void sm_session_store(struct sm_core *c, const struct sm_user *u, const struct sm_session *s);
/* A module's load_user that answered SB_AGAIN reports here (ok=0: failed). */
void sm_user_loaded(struct sm_user *u, int ok);
/* The sender's resource (part of j->aux after the first '/'), "" if none. */
const char *sm_job_sender_resource(const struct sm_job *j);
/* Is the stanza for the sender's own account (no `to`, or to = own bare)? */
int sm_job_to_own_account(const struct sm_job *j);
/* Is `to` a bare domain (server itself)? */
int sm_job_to_domain(const struct sm_job *j);

int sm_is_local_domain(const struct sm_core *c, const char *domain);

/* Redis through the core: SB_ERROR (callback not called) while stopping
 * or when the command cannot be queued. */
#define SM_RCMD(c, cb, arg, ...) \
    ((c)->rd && !(c)->stopping ? rdev_cmd((c)->rd, cb, arg, __VA_ARGS__) : SB_ERROR)
sb_rc sm_pg_query(struct sm_core *c, const char *sql, int nparams,
                  const char *const *params, pgev_cb cb, void *arg);
/* The same for a read someone is waiting for now (a login's account and
 * roster, an iq get): SB_ERROR at once while PostgreSQL is known to be
 * down (pgev_lost) instead of holding the user's queue up to pgev's 30 s
 * deadline. Writes use sm_pg_query and wait for the database. */
sb_rc sm_pg_read(struct sm_core *c, const char *sql, int nparams,
                 const char *const *params, pgev_cb cb, void *arg);
/* PostgreSQL was connected and is not now. */
int sm_pg_down(const struct sm_core *c);

/* ---- sending --------------------------------------------------------------- */
/* The job's stanza, unchanged, to one session's front-end. */
sb_rc sm_deliver(struct sm_job *j, const struct sm_session *s);
/* Serialised stanza bytes to one session's front-end; `from` goes to aux.
 * An inactive session (XEP-0352) may hold it back first (mod_csi.c). */
sb_rc sm_deliver_raw(struct sm_core *c, const struct sm_session *s, const char *from,
                     const char *body, size_t len);
/* The same without the CSI hold: numbered and queued for a stream-managed
 * session (mod_sm.c), else sent. */
sb_rc sm_deliver_now(struct sm_core *c, const struct sm_session *s, const char *from,
                     const char *body, size_t len);
/* Serialised stanza bytes routed by `key` (a bare JID or domain). */
sb_rc sm_send_raw(struct sm_core *c, const char *key, const char *from,
                  const char *body, size_t len);
/* A stanza element built here, routed by the bare JID of its `to`. */
sb_rc sm_send_node(struct sm_core *c, const struct xml_node *st);
/* Answer the job's stanza with an RFC 6120 §8.3 error (never to an error,
 * never to an iq result). etype: "cancel", "modify", "wait", "auth". */
sb_rc sm_reply_error(struct sm_job *j, const char *etype, const char *cond);
/* The same with an application-specific condition element <app xmlns=app_ns/>
 * after the defined one (RFC 6120 §8.3.2), e.g. XEP-0191's <blocked/>. */
sb_rc sm_reply_error_app(struct sm_job *j, const char *etype, const char *cond,
                         const char *app, const char *app_ns);
/* The same with a copy of `extra` (an element with content, e.g. XEP-0363's
 * <file-too-large><max-file-size>N</max-file-size></file-too-large>) last;
 * app may be NULL. */
sb_rc sm_reply_error_with(struct sm_job *j, const char *etype, const char *cond,
                          const char *app, const char *app_ns, const struct xml_node *extra);
/* A result iq for j (an iq get/set) with the given payload (may be NULL). */
struct xml_doc *sm_iq_result_new(const struct sm_job *j);
sb_rc sm_send_control(struct sm_core *c, enum env_route route, const char *key,
                      const char *sid, const char *op, const char *aux);
/* The same with a body (`max=300`, `h=5`). */
sb_rc sm_send_control_body(struct sm_core *c, enum env_route route, const char *key,
                           const char *sid, const char *op, const char *aux,
                           const char *body);
/* Stanza bytes to one session's front-end, as they are: no stream
 * management bookkeeping (send.c; mod_sm.c numbers and queues first). */
sb_rc sm_send_to_session(struct sm_core *c, const struct sm_session *s, const char *op,
                         const char *from, const char *body, size_t len);

/* ---- the message archive (mod_mam.c) ----------------------------------------- */
/* Send the buffered archive rows now (graceful stop); how many are still
 * buffered or being written (the stop waits for 0). */
void sm_mam_flush(struct sm_core *c);
long sm_mam_waiting(const struct sm_core *c);
/* Offline messages spooled in memory while PostgreSQL is away (mod_offline.c). */
long sm_offline_waiting(const struct sm_core *c);

/* ---- HTTP File Upload (mod_upload.c) ------------------------------------------ */
/* The domains csv to announce: csv plus `upload.D` for each D served
 * (valid until the next call). */
const char *sm_upload_announce(const char *csv);
/* Does this local domain have an upload service (disco#items)? */
int sm_upload_serves(const char *domain);

/* ---- stream management (mod_sm.c) ------------------------------------------- */
/* A stanza for a session with stream management: numbered, kept until the
 * client acknowledges it, sent unless the stream is detached. */
sb_rc sm_smq_push(struct sm_core *c, struct sm_session *s, const char *from,
                  const char *body, size_t len);
/* The session's XEP-0198 state is dropped with it (user.c). */
void sm_smq_free(struct sm_smq *q);
/* This sm lost its lease and forgets user u: each message and iq its
 * streams' queues hold unacknowledged goes over the bus to the user's new
 * owner (a replay there: another session or offline storage) instead of
 * being freed with the queue. The number handed over. */
long sm_smq_hand_over(struct sm_core *c, struct sm_user *u);
/* A stanza for a stream-managed session of the user `to` (a bare or full
 * JID) bounced from the stream `sid` on `instance`: SM_HELD_QUEUED when
 * the session is still on that stream (the stanza waits in its queue for
 * the resumption), SM_HELD_RESENT when that was the stream the session was
 * resumed from (the resumption resent the stanza, or the client had
 * acknowledged it), 0 when no queue holds it. Either way delivering it
 * again would give the client a second copy. */
enum { SM_HELD_QUEUED = 1, SM_HELD_RESENT = 2 };
int sm_smq_holds(struct sm_core *c, const char *to, const char *instance, const char *sid);
/* A session loaded with flag `m` and no queue here: ask its front-end for
 * the stream's state (sm-query) and hold its stanzas until it answers. */
void sm_smq_adopt_start(struct sm_core *c, struct sm_user *u, struct sm_session *s);
/* Has the user a session whose stream may still be resumed? */
int sm_user_resumable(const struct sm_user *u);
/* Is a delivery to this front-end known to come back (cluster.c)? */
int sm_frontend_gone(const struct sm_core *c, const char *instance);
/* Does a stanza handed to s reach a client now? No for a detached
 * stream-managed session or one on a gone front-end (only queued). */
int sm_session_live(const struct sm_core *c, const struct sm_session *s);

/* ---- push notifications (mod_push.c, XEP-0357) ------------------------------ */
/* The job's message reached no live stream: it was stored offline (stored
 * = the user's offline messages now, this one included) or only queued for
 * detached streams (stored = 0). Notifies the user's push services if the
 * message warrants it (throttled; see mod_push.c). */
void sm_push_notify(struct sm_job *j, long stored);
/* A session of the user came back (available presence, resumption): the
 * count starts again. */
void sm_push_online(struct sm_user *u);

/* ---- carbons (mod_carbons.c) and client state (mod_csi.c) ------------------------ */
/* mod_deliver delivered j's message to the sessions it marked `got`: copy
 * it to the user's other carbons-enabled sessions (XEP-0280 §7); clears
 * the marks. */
void sm_carbons_received(struct sm_job *j);
/* A session was bound, or resumed on another stream: tell its front-end
 * whether its outbound messages must pass through this sm (sent copies). */
void sm_carbons_session_up(struct sm_core *c, struct sm_user *u, const struct sm_session *s);
/* Should this stanza wait while s is inactive? Held (1), or not (0: the
 * caller delivers it, after whatever it had to overtake was flushed). */
int sm_csi_hold(struct sm_core *c, struct sm_session *s, const char *from,
                const char *body, size_t len);
/* Back to active (<active/>, resumption, ownership change): everything
 * held goes out in order; `store`: write the state to sess: as well. */
void sm_csi_activate(struct sm_core *c, struct sm_user *u, struct sm_session *s, int store);
void sm_csi_free(struct sm_csi *h);

#define SM_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

#endif
