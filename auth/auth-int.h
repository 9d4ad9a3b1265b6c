/* auth-int.h — internals of auth/ shared with sbctl and the unit tests:
 * base64 and SASLprep helpers, the credential record a store answers with,
 * the store back-end interface (PostgreSQL or a caller-supplied function),
 * the fake credentials that hide unknown users, and a test hook that fixes
 * the SCRAM server nonce so the RFC vectors run through the real server.
 * Front-ends use sasl.h only. */
#ifndef SB_AUTH_INT_H
#define SB_AUTH_INT_H

#include "sb.h"
#include "scram.h"
#include "sasl.h"
#include <ev.h>

/* ---- encoding helpers ----------------------------------------------------- */
/* out must hold BASE64 length (((n + 2) / 3) * 4) + 1 bytes; NUL-terminated. */
void auth_b64_encode(const uint8_t *in, size_t n, char *out);
/* Strict decode into out (cap bytes). SB_ERROR on a bad character, bad
 * padding or an output longer than cap. */
sb_rc auth_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen);
/* SASLprep (RFC 4013) a password; *out is malloc'd (free()). SB_ERROR on
 * prohibited or unassigned characters. */
sb_rc auth_saslprep(const char *in, char **out);

/* One HMAC / one hash with the SCRAM hash h; out holds scram_digest_len(h). */
void scram_hmac(enum scram_hash h, const uint8_t *key, size_t keylen,
                const void *msg, size_t len, uint8_t *out);
void scram_digest(enum scram_hash h, const uint8_t *in, size_t len, uint8_t *out);

/* ---- what a store knows about one account --------------------------------- */
struct auth_cred {
    int found;                 /* 0: no such account */
    int has_sha1, has_sha256;  /* which key sets are present */
    struct scram_cred sha1, sha256;
    int cached;                /* from the credential cache, not the database */
    unsigned long epoch;       /* auth_cache_epoch() when the lookup was sent */
};
/* c is NULL when the store could not answer (database down). */
typedef void (*auth_store_cb)(void *arg, const struct auth_cred *c);

/* Look up domain/username (both prepared). cb runs later (or, for function
 * back-ends, possibly inside). SB_ERROR: not queued, cb will not run. */
sb_rc auth_store_lookup(struct auth_store *st, const char *domain, const char *username,
                        auth_store_cb cb, void *arg);

/* A back-end implemented by the caller (tests, future directory stores). */
typedef sb_rc (*auth_store_lookup_fn)(void *ud, const char *domain, const char *username,
                                      auth_store_cb cb, void *arg);
struct auth_store *auth_store_new_fn(auth_store_lookup_fn fn, void *ud);

/* Deterministic stand-in credentials for an unknown account: the salt is
 * an HMAC of the domain and name keyed by the cluster's sasl_secret
 * (auth_fake_configure; a per-process random key without one), so every
 * attempt on every front-end sees the same salt; the iteration count is
 * auth_scram_iterations(); the keys are random so every proof fails. */
void auth_fake_cred(enum scram_hash h, const char *domain, const char *username,
                    struct scram_cred *out);

#define AUTH_DEFAULT_ITER 4096
/* `scram_iterations` (1..1000000, default AUTH_DEFAULT_ITER): what sbctl
 * makes new accounts with and what fake credentials carry. */
unsigned auth_scram_iterations(void);

/* Claim a generated ANONYMOUS node through the store's claim function;
 * without one, cb(arg, 1) runs inside. SB_ERROR: cb will not run. */
sb_rc auth_store_claim(struct auth_store *st, const char *domain, const char *node,
                       auth_claim_cb cb, void *arg);

/* ---- bearer tokens (token.c, jwt.c) ---------------------------------------- */
/* Token sources of a domain ([domain.NAME] tokens = own jwt): a bit set. */
#define AUTH_TOK_OWN 1
#define AUTH_TOK_JWT 2
int auth_token_sources(const char *domain);
int auth_token_auto_create(const char *domain);   /* [domain.NAME] auto_create */

#define AUTH_TOKEN_MAX      8192      /* bytes of one presented token */
#define AUTH_TOKEN_HASH_HEX 64        /* hex SHA-256, as stored in tokens.hash */
#define AUTH_TOKEN_ID_JWT   (-1LL)    /* token id of a JWT login (not revocable) */
/* The stored form of one of our tokens (sbctl issues, the store looks up). */
void auth_token_hash(const char *token, char hex[AUTH_TOKEN_HASH_HEX + 1]);

/* What a token check found. ok: 1 valid, 0 refused (reason: a log word),
 * -1 the store could not answer. username/id valid during the callback. */
struct auth_token_ans {
    int ok;
    const char *reason;
    const char *username;      /* ok: prepared local part */
    long long id;              /* ok: our token's id, AUTH_TOKEN_ID_JWT for a JWT */
};
typedef void (*auth_token_cb)(void *arg, const struct auth_token_ans *a);
/* Check a token for domain; cb may run inside. SB_ERROR: not queued, cb
 * will not run. The token is not kept. */
typedef sb_rc (*auth_token_fn)(void *ud, const char *domain, const char *token,
                               auth_token_cb cb, void *arg);
sb_rc auth_store_token(struct auth_store *st, const char *domain, const char *token,
                       auth_token_cb cb, void *arg);
/* Tests: check tokens with fn instead of the domain's sources. */
void auth_store_set_token_fn(struct auth_store *st, auth_token_fn fn, void *ud);
/* The real check (pg NULL: SB_ERROR where the database is needed). */
sb_rc auth_token_check(struct pgev *pg, const char *domain, const char *token,
                       auth_token_cb cb, void *arg);
/* A JWT for domain: NULL with the prepared local part in user
 * (JID_PART_MAX + 1 bytes), else the reason it is refused. */
const char *auth_jwt_check(const char *domain, const char *token, char *user);

/* ---- external directories (extauth.c, ldap.c) ------------------------------- */
/* result: 1 accepted, 0 refused, -1 could not ask (temporary-auth-failure). */
typedef void (*auth_check_cb)(void *arg, int result);
/* One request (op "auth" with a password, "isuser" without, "setpass")
 * to the domain's extauth program pool on loop; cb runs later, never
 * inside. SB_ERROR: no program, every copy down, queue full or a field
 * the protocol cannot carry; cb will not run. */
sb_rc auth_extauth_call(struct ev_loop *loop, const char *domain, const char *op,
                        const char *user, const char *password, auth_check_cb cb, void *arg);
/* The same against the domain's LDAP directory (ldap.c). */
sb_rc auth_ldap_check(struct ev_loop *loop, const char *domain, const char *user,
                      const char *password, auth_check_cb cb, void *arg);
/* Check user's password on an external domain (and create its account
 * row on the first success, so rosters have an owner). cb may run later
 * or inside; SB_ERROR: cb will not run. */
sb_rc auth_store_password(struct auth_store *st, const char *domain, const char *user,
                          const char *password, auth_check_cb cb, void *arg);
/* Creates the account row of an external or auto_create login; a second
 * login finds it (no error). $1 domain, $2 username. */
#define AUTH_ACCOUNT_CREATE_SQL \
    "INSERT INTO users (domain, username) VALUES ($1, $2) ON CONFLICT DO NOTHING"

/* ---- XEP-0484 FAST tokens (fast.c) ------------------------------------------ */
/* The key FAST tokens are derived with; 0 when no [cluster] sasl_secret is
 * configured (FAST is then not offered: tokens would not verify elsewhere). */
int auth_fast_key(uint8_t out[32]);
/* The database of st, or NULL (none, or known to be down). */
struct pgev *auth_store_pg(struct auth_store *st);
/* The token of one row: base64 of HMAC-SHA-256(key, label, client, seed). */
void auth_fast_token(const char *domain, const char *user, const char *ua, const char *seed,
                     char out[AUTH_FAST_TOKEN_LEN + 1]);
struct auth_fast_row {
    long long id;
    char mech[24];
    char seed[40];
    int current;
    long long last_count;      /* -1: no count seen */
};
/* rows NULL (n -1): the store could not answer. Valid during the call. */
typedef void (*auth_fast_rows_cb)(void *arg, const struct auth_fast_row *rows, int n);
/* The unexpired tokens of one client. SB_ERROR: cb will not run. */
sb_rc auth_fast_lookup(struct pgev *pg, const char *domain, const char *user, const char *ua,
                       auth_fast_rows_cb cb, void *arg);
/* A login used token id with this count (-1 none): fire and forget. */
sb_rc auth_fast_used(struct pgev *pg, long long id, long long count);

/* ---- credential cache (credcache.c) ------------------------------------------
 * The keys of accounts that logged in recently, for logins while
 * PostgreSQL cannot answer (down, or no answer within
 * `[auth] credential_cache_wait_ms`). Per process. */
#define AUTH_CACHE_TTL_DEFAULT 86400    /* [auth] credential_cache_s */
#define AUTH_CACHE_MAX_DEFAULT 100000   /* [auth] credential_cache_max */
#define AUTH_CACHE_WAIT_DEFAULT 5000    /* [auth] credential_cache_wait_ms */
/* Bumped by every forget: a lookup sent before it cannot be put back. */
unsigned long auth_cache_epoch(void);
/* A login succeeded with keys the database gave (c->epoch: when asked). */
void auth_cache_put(const char *domain, const char *username, const struct auth_cred *c);
/* The database answered: replace (or drop) an entry it has, if any. */
void auth_cache_refresh(const char *domain, const char *username, const struct auth_cred *c);
/* 1 and *out (cached = 1) for an unexpired entry, else 0. */
int auth_cache_get(const char *domain, const char *username, struct auth_cred *out);
long auth_cache_count(void);
/* A miss while PostgreSQL cannot answer: ask the peers (auth_cache_set_peers).
 * SB_OK: cb runs later, with the lent keys (cached = 1) or NULL; SB_ERROR:
 * nobody to ask (no peers, the cache off, its channel not live), cb never runs. */
#define AUTH_ASK_WAIT_DEFAULT 1000      /* [auth] credential_cache_ask_ms */
#define AUTH_ASK_QUIET 10.0             /* s after a forget: no lent keys for it */
sb_rc auth_cache_ask(const char *domain, const char *username, unsigned long epoch,
                     auth_store_cb cb, void *arg);
/* Tests: is the forget channel live (default: as rdev says). */
void auth_cache_test_live(int live);
/* Tests: a message on the forget channel (NULL: the subscription (re)confirmed). */
void auth_cache_test_notify(const char *msg, size_t len);

/* ---- tests only ------------------------------------------------------------ */
/* Use this server nonce part (instead of 24 random bytes) for the next SCRAM
 * exchange of s. */
void sasl_test_set_nonce(struct sasl_sess *s, const char *nonce);

#endif
