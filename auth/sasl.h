/* sasl.h — the server side of SASL for every front-end (c2s, bosh):
 * PLAIN, SCRAM-SHA-1, SCRAM-SHA-256, the bearer tokens X-OAUTH2 and
 * OAUTHBEARER (under TLS, on a domain with a token source), and ANONYMOUS (RFC 4505, only on a
 * domain marked anonymous, where it is the only mechanism), over an
 * asynchronous credential store.
 *
 * The front-end passes the base64 text of <auth/> and <response/> elements
 * and gets back base64 text for <challenge/> / <success/>, or a failure
 * condition name for <failure/>. The result callback may run before
 * sasl_start() returns (PLAIN errors) or later (after the database answers).
 * sasl_free() during a pending lookup is safe: the answer is dropped. */
#ifndef SB_SASL_H
#define SB_SASL_H

#include "sb.h"
#include "pgev.h"

/* ---- credential store (PostgreSQL) -------------------------------------- */
struct auth_store;
struct auth_store *auth_store_new(struct pgev *pg);
void auth_store_free(struct auth_store *st);
/* What hides unknown accounts (auth-int.h auth_fake_cred) for the whole
 * cluster: `[cluster] sasl_secret` (or `sasl_secret_file`) keys the fake
 * salts, so every front-end and every restart shows an unknown user the
 * same salt, and `scram_iterations` is the count they carry, the one real
 * accounts are made with. Without a secret (logged `sasl_secret_missing`)
 * a per-process random one is used. SB_ERROR: an unreadable secret file. */
sb_rc auth_fake_configure(void);

/* Where a domain's passwords live ([domain.NAME] auth = internal | extauth
 * | ldap). An external domain offers PLAIN (under TLS) and tokens, never
 * SCRAM (no stored keys), and no in-band registration. */
enum auth_backend { AUTH_BE_INTERNAL, AUTH_BE_EXTAUTH, AUTH_BE_LDAP };
enum auth_backend auth_backend_of(const char *domain);
const char *auth_backend_name(enum auth_backend b);
/* The loop the external back-ends (extauth pipes, LDAP answers) run on. */
struct ev_loop;
void auth_store_set_loop(struct auth_store *st, struct ev_loop *loop);

/* ANONYMOUS makes up a random node; a claim function makes it unique across
 * the cluster (e.g. Redis SET NX). It answers through cb, later or inside:
 * 1 claimed, 0 already taken (a new node is tried), -1 could not ask
 * (temporary-auth-failure). SB_ERROR from the function: cb will not run.
 * Without a claim function the 20 random characters are trusted alone. */
typedef void (*auth_claim_cb)(void *arg, int result);
typedef sb_rc (*auth_claim_fn)(void *ud, const char *domain, const char *node,
                               auth_claim_cb cb, void *arg);
void auth_store_set_claim(struct auth_store *st, auth_claim_fn fn, void *ud);

/* ---- credential cache (credcache.c) --------------------------------------
 * Front-ends keep the SCRAM keys (never passwords) of accounts that logged
 * in recently and use them only while PostgreSQL cannot answer. Whatever
 * changes or removes credentials publishes `forget USER@DOMAIN` on
 * AUTH_CACHE_CHANNEL (sbctl user passwd/del, XEP-0077 in c2s). */
#define AUTH_CACHE_CHANNEL "sb:auth"
struct rdev;
/* Its own Redis connection SUBSCRIBEd to the channel (NULL: the cache is
 * off, credential_cache_s = 0, or no Redis configuration). */
struct rdev *auth_cache_subscribe(struct ev_loop *loop);
void auth_cache_stop(struct rdev *r);      /* unsubscribes, empties the cache */
/* Forget one account ("user@domain", prepared) or, NULL / "*", all. */
void auth_cache_forget(const char *bare);

/* Asking the other front-ends: a login whose account is not in this
 * cache while PostgreSQL cannot answer asks every other c2s/bosh (the
 * front-end sends a `cred-ask` control, see auth/README.md); the first
 * that has the entry lends it. ask(ud, id, bare) sends the question and
 * returns how many peers were asked (0: none, the login fails now). */
typedef int (*auth_peer_ask_fn)(void *ud, const char *id, const char *bare);
void auth_cache_set_peers(struct ev_loop *loop, auth_peer_ask_fn ask, void *ud);
/* A peer asks for bare: 1 and out (the entry's keys and remaining life,
 * text) when this cache has it and its forget channel is live, else 0. */
struct sb_buf;
int auth_cache_lend(const char *bare, struct sb_buf *out);
/* A peer's answer to question id (body NULL: it has nothing). */
void auth_cache_lent(const char *id, const char *bare, const char *peer, const char *body,
                     size_t len);

/* ---- one SASL exchange ---------------------------------------------------- */
enum sasl_status { SASL_CONTINUE, SASL_SUCCESS, SASL_FAILURE };

struct sasl_result {
    enum sasl_status status;
    const char *data_b64;   /* CONTINUE: challenge; SUCCESS: additional data ("" if none) */
    const char *condition;  /* FAILURE: RFC 6120 §6.5 condition, e.g. "not-authorized" */
    const char *username;   /* SUCCESS: the authenticated, nodeprepped local part;
                               FAILURE: the one the client named, when it got that
                               far (NULL otherwise): for per-account limits */
    int anonymous;          /* SUCCESS: a generated ANONYMOUS node (claimed) */
    long long token_id;     /* SUCCESS: > 0 our token's id (X-OAUTH2/OAUTHBEARER),
                               -1 a JWT, 0 no token */
    int fast;               /* SUCCESS: with a FAST token (HT-SHA-256-*) */
};
typedef void (*sasl_cb)(void *ud, const struct sasl_result *r);

/* The channel bindings of one TLS connection (RFC 5929, RFC 9266); a
 * length 0 means that type is not available. Any available type makes the
 * -PLUS mechanisms offered (and a client's "y" flag a downgrade). */
#define SASL_CB_MAX 64
struct sasl_cb {
    uint8_t exporter[SASL_CB_MAX];     /* tls-exporter (TLS 1.3) */
    size_t exporter_len;
    uint8_t endpoint[SASL_CB_MAX];     /* tls-server-end-point: hash of our certificate */
    size_t endpoint_len;
};

struct sasl_opts {
    const char *domain;     /* the stream's domain (prepared) */
    int tls;                /* stream is encrypted */
    int allow_plain_without_tls;
    int anonymous;          /* the domain is anonymous: ANONYMOUS only */
    const struct sasl_cb *cb;   /* NULL: no channel binding on this stream */
};

/* Mechanisms to offer, space-separated, strongest first (a static buffer,
 * valid until the next call). */
const char *sasl_mechanisms(const struct sasl_opts *o);

struct sasl_sess *sasl_new(struct auth_store *st, const struct sasl_opts *o,
                           sasl_cb cb, void *ud);
void sasl_free(struct sasl_sess *s);

/* b64 is the element text; "=" or "" means empty initial response. */
void sasl_start(struct sasl_sess *s, const char *mech, const char *b64);
void sasl_step(struct sasl_sess *s, const char *b64);
void sasl_abort(struct sasl_sess *s);  /* client sent <abort/>: result FAILURE "aborted" */

/* ---- XEP-0484 FAST (fast.c) ---------------------------------------------------- */
/* The HT-SHA-256-* mechanisms: the initial response is authcid NUL
 * HMAC-SHA-256(token, "Initiator" || cb-data) (NONE: no cb-data; ENDP:
 * tls-server-end-point; EXPR: tls-exporter); success carries
 * HMAC(token, "Responder" || cb-data). A token belongs to one account, one
 * client (the SASL2 user-agent id) and one mechanism. */
#define AUTH_FAST_TOKEN_LEN 44          /* base64 of 32 bytes */
/* FAST is possible: the cluster has a sasl_secret (auth_fake_configure). */
int auth_fast_available(void);
/* The HT mechanisms for a stream with these bindings (static buffer). */
const char *sasl_fast_mechanisms(const struct sasl_cb *cb);
/* Before sasl_start of a SASL2 exchange: the client's user-agent id (copied,
 * NULL: none, no HT mechanism) and its FAST `count` (-1: none). */
void sasl_set_fast(struct sasl_sess *s, const char *ua_id, long long count);

struct auth_fast_issued {
    int ok;                             /* 0: the store failed */
    long long id;
    char token[AUTH_FAST_TOKEN_LEN + 1];
    char expiry[32];                    /* XEP-0082 date-time, UTC */
};
typedef void (*auth_fast_issue_cb)(void *arg, const struct auth_fast_issued *t);
/* A new token for (domain, user, ua) and mechanism, valid ttl seconds;
 * the current one becomes the previous, an older one is dropped. cb runs
 * later; SB_ERROR: not queued (no database, no secret), cb will not run. */
sb_rc auth_fast_issue(struct auth_store *st, const char *domain, const char *user,
                      const char *ua, const char *mech, double ttl, auth_fast_issue_cb cb,
                      void *arg);
/* Drop every token of the client (XEP-0484 invalidate='true'). */
sb_rc auth_fast_invalidate(struct auth_store *st, const char *domain, const char *user,
                           const char *ua);

#endif
