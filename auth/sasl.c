/* sasl.c — the server side of SASL PLAIN, SCRAM-SHA-1, SCRAM-SHA-256 and
 * the bearer-token mechanisms X-OAUTH2 and OAUTHBEARER (RFC 7628) over an
 * asynchronous credential store. One sasl_sess per exchange
 * attempt; the front-end feeds it element text and gets results through
 * its callback. Unknown accounts run the same exchange as known ones
 * (fake salt) and fail at the proof, so they cannot be told apart. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <nettle/memops.h>
#include <nettle/memxor.h>
#include <nettle/hmac.h>

#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "auth-int.h"

#define SASL_MAX_MSG 16384     /* decoded bytes of one client message */
#define SASL_NONCE_BYTES 24

enum sasl_state {
    SASL_ST_INIT,          /* nothing received yet */
    SASL_ST_WAIT_PLAIN,    /* PLAIN without initial response: waiting */
    SASL_ST_WAIT_FIRST,    /* SCRAM without initial response: waiting */
    SASL_ST_LOOKUP,        /* credential lookup in flight */
    SASL_ST_WAIT_FINAL,    /* SCRAM server-first sent */
    SASL_ST_WAIT_TOKEN,    /* X-OAUTH2 / OAUTHBEARER without initial response */
    SASL_ST_WAIT_ERRACK,   /* OAUTHBEARER error JSON sent: waiting for "\x01" */
    SASL_ST_WAIT_HT,       /* HT-SHA-256-* (FAST) without initial response */
    SASL_ST_DONE,          /* result delivered */
};

enum sasl_mech { SASL_M_NONE, SASL_M_PLAIN, SASL_M_SCRAM, SASL_M_ANON, SASL_M_XOAUTH2,
                 SASL_M_OAUTHBEARER, SASL_M_HT };

#define SASL_ANON_NODE  20     /* random [a-z0-9] characters of an ANONYMOUS node */
#define SASL_ANON_TRIES 3      /* claims before giving up (collisions) */

/* Lives as long as a lookup is in flight; sess is cleared on cancel. */
struct sasl_pending {
    struct sasl_sess *sess;
};

struct sasl_sess {
    struct auth_store *st;
    char domain[JID_PART_MAX + 1];
    int tls, allow_plain, anonymous;
    int anon_tries;
    sasl_cb cb;
    void *ud;

    enum sasl_state state;
    enum sasl_mech mech;
    enum scram_hash hash;
    struct sasl_pending *pending;
    char username[JID_PART_MAX + 1];
    char *password;          /* PLAIN, SASLprepped; wiped after use */
    const char *reason;      /* why a token was refused (logged with the failure) */
    long long token_id;      /* the token a login used (sasl_result) */

    char *gs2_header;        /* SCRAM: "n,," or "n,a=…," */
    char *client_first_bare;
    char *server_first;
    char *nonce;             /* client nonce + server nonce */
    char *test_nonce;        /* tests: fixed server nonce part */
    struct scram_cred cred;
    struct auth_cred db_cred;  /* the database's answer: cached after a success */
    int from_cache;          /* the lookup was answered by the credential cache */
    struct sasl_cb cbd;      /* this stream's channel bindings (copied) */
    int plus;                /* SCRAM-*-PLUS chosen */
    const uint8_t *cb_data;  /* PLUS: the binding the client named (in cbd) */
    size_t cb_len;

    char *fast_ua;           /* SASL2 user-agent id (sasl_set_fast): HT possible */
    long long fast_count;    /* its FAST count, -1 none */
    char ht_mech[24];        /* HT: the mechanism chosen */
    uint8_t ht_proof[32];    /* HT: the client's initiator hash */
    int fast_used;           /* HT: succeeded (sasl_result.fast) */
};

static int sasl_cb_offered(const struct sasl_cb *cb)
{
    return cb && (cb->exporter_len || cb->endpoint_len);
}

/* ---- small helpers ------------------------------------------------------------- */

const char *sasl_mechanisms(const struct sasl_opts *o)
{
    static char list[160];

    if (o->anonymous)
        return "ANONYMOUS";
    /* An external directory holds no SCRAM keys: PLAIN under TLS and tokens. */
    if (auth_backend_of(o->domain) != AUTH_BE_INTERNAL) {
        snprintf(list, sizeof list, "%s%s", o->tls || o->allow_plain_without_tls ? "PLAIN" : "",
                 o->tls && auth_token_sources(o->domain) ? " OAUTHBEARER X-OAUTH2" : "");
        return list;
    }
    /* Bearer tokens are offered only under TLS (RFC 7628 §5), and only on
     * a domain with a token source. */
    snprintf(list, sizeof list, "%sSCRAM-SHA-256 SCRAM-SHA-1%s%s",
             sasl_cb_offered(o->cb) ? "SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS " : "",
             o->tls || o->allow_plain_without_tls ? " PLAIN" : "",
             o->tls && auth_token_sources(o->domain) ? " OAUTHBEARER X-OAUTH2" : "");
    return list;
}

static char *sasl_strndup(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static void sasl_wipe_str(char **p)
{
    if (*p) {
        memset(*p, 0, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

/* Forget everything of the current attempt, detaching any lookup. */
static void sasl_reset(struct sasl_sess *s)
{
    if (s->pending) {
        s->pending->sess = NULL;
        s->pending = NULL;
    }
    sasl_wipe_str(&s->password);
    free(s->gs2_header);
    free(s->client_first_bare);
    free(s->server_first);
    free(s->nonce);
    s->gs2_header = s->client_first_bare = s->server_first = s->nonce = NULL;
    memset(&s->cred, 0, sizeof(s->cred));
    memset(&s->db_cred, 0, sizeof(s->db_cred));
    s->from_cache = 0;
    s->username[0] = '\0';
    s->reason = NULL;
    s->token_id = 0;
    s->plus = 0;
    s->cb_data = NULL;
    s->cb_len = 0;
    s->fast_used = 0;
    memset(s->ht_proof, 0, sizeof s->ht_proof);
    s->mech = SASL_M_NONE;
    s->state = SASL_ST_INIT;
}

/* Results by mechanism: [mechanism][0 success, 1 failure]. "other" is an
 * <auth/> naming nothing we offer. */
enum { SASL_MX_PLAIN, SASL_MX_SHA1, SASL_MX_SHA256, SASL_MX_ANON, SASL_MX_XOAUTH2,
       SASL_MX_OAUTHBEARER, SASL_MX_HT, SASL_MX_OTHER };
#define SASL_MX(var, mech, result) \
    SB_COUNTER(var, "sb_auth_total", "mechanism=\"" mech "\",result=\"" result "\"", \
               "Finished SASL exchanges by mechanism and result")
SASL_MX(sasl_mx_plain_ok, "PLAIN", "success")
SASL_MX(sasl_mx_plain_ko, "PLAIN", "failure")
SASL_MX(sasl_mx_sha1_ok, "SCRAM-SHA-1", "success")
SASL_MX(sasl_mx_sha1_ko, "SCRAM-SHA-1", "failure")
SASL_MX(sasl_mx_sha256_ok, "SCRAM-SHA-256", "success")
SASL_MX(sasl_mx_sha256_ko, "SCRAM-SHA-256", "failure")
SASL_MX(sasl_mx_anon_ok, "ANONYMOUS", "success")
SASL_MX(sasl_mx_anon_ko, "ANONYMOUS", "failure")
SASL_MX(sasl_mx_xoauth2_ok, "X-OAUTH2", "success")
SASL_MX(sasl_mx_xoauth2_ko, "X-OAUTH2", "failure")
SASL_MX(sasl_mx_oauthbearer_ok, "OAUTHBEARER", "success")
SASL_MX(sasl_mx_oauthbearer_ko, "OAUTHBEARER", "failure")
SASL_MX(sasl_mx_ht_ok, "HT-SHA-256", "success")
SASL_MX(sasl_mx_ht_ko, "HT-SHA-256", "failure")
SASL_MX(sasl_mx_other_ok, "other", "success")
SASL_MX(sasl_mx_other_ko, "other", "failure")
static struct sb_metric *const sasl_mx[][2] = {
    [SASL_MX_PLAIN] = {&sasl_mx_plain_ok, &sasl_mx_plain_ko},
    [SASL_MX_SHA1] = {&sasl_mx_sha1_ok, &sasl_mx_sha1_ko},
    [SASL_MX_SHA256] = {&sasl_mx_sha256_ok, &sasl_mx_sha256_ko},
    [SASL_MX_ANON] = {&sasl_mx_anon_ok, &sasl_mx_anon_ko},
    [SASL_MX_XOAUTH2] = {&sasl_mx_xoauth2_ok, &sasl_mx_xoauth2_ko},
    [SASL_MX_OAUTHBEARER] = {&sasl_mx_oauthbearer_ok, &sasl_mx_oauthbearer_ko},
    [SASL_MX_HT] = {&sasl_mx_ht_ok, &sasl_mx_ht_ko},
    [SASL_MX_OTHER] = {&sasl_mx_other_ok, &sasl_mx_other_ko},
};

static int sasl_mx_of(const struct sasl_sess *s)
{
    switch (s->mech) {
    case SASL_M_PLAIN: return SASL_MX_PLAIN;
    case SASL_M_SCRAM: return s->hash == SCRAM_SHA256 ? SASL_MX_SHA256 : SASL_MX_SHA1;
    case SASL_M_ANON: return SASL_MX_ANON;
    case SASL_M_XOAUTH2: return SASL_MX_XOAUTH2;
    case SASL_M_OAUTHBEARER: return SASL_MX_OAUTHBEARER;
    case SASL_M_HT: return SASL_MX_HT;
    default: return SASL_MX_OTHER;
    }
}

/* Deliver a final result. The callback may free s: nothing touches s after. */
static void sasl_finish(struct sasl_sess *s, enum sasl_status st, const char *data,
                        const char *cond)
{
    char user[JID_PART_MAX + 1];
    struct sasl_result r = {st, data ? data : "", cond, NULL, 0, s->token_id, 0};

    sb_metric_inc(sasl_mx[sasl_mx_of(s)][st == SASL_SUCCESS ? 0 : 1]);
    if (st == SASL_SUCCESS) {
        memcpy(user, s->username, sizeof(user));
        r.username = user;
        r.anonymous = s->mech == SASL_M_ANON;
        r.fast = s->fast_used;
        if ((s->mech == SASL_M_PLAIN || s->mech == SASL_M_SCRAM) && s->db_cred.found)
            auth_cache_put(s->domain, user, &s->db_cred);
        log_info("sasl_success", "user=%s domain=%s%s", sb_log_q(user), sb_log_q(s->domain),
                 s->from_cache ? " credentials=cache" : "");
    } else {
        if (s->username[0] && s->mech != SASL_M_ANON) {
            memcpy(user, s->username, sizeof(user));
            r.username = user;       /* the account tried: per-account limits */
        }
        log_info("sasl_failure", "condition=%s user=%s domain=%s%s%s", cond,
                 sb_log_q(s->username), sb_log_q(s->domain), s->reason ? " reason=" : "",
                 s->reason ? s->reason : "");
    }
    sasl_reset(s);
    s->state = SASL_ST_DONE;
    s->cb(s->ud, &r);
}

static void sasl_fail(struct sasl_sess *s, const char *cond)
{
    sasl_finish(s, SASL_FAILURE, NULL, cond);
}

/* Send a challenge: raw bytes, base64-encoded here. */
static void sasl_challenge(struct sasl_sess *s, const char *raw)
{
    size_t n = strlen(raw);
    char *b64 = malloc(((n + 2) / 3) * 4 + 1);
    if (!b64) {
        sasl_fail(s, "temporary-auth-failure");
        return;
    }
    auth_b64_encode((const uint8_t *)raw, n, b64);
    struct sasl_result r = {SASL_CONTINUE, b64, NULL, NULL, 0, 0, 0};
    s->cb(s->ud, &r);      /* may free s */
    free(b64);
}

/* Element text → bytes. "=" and "" mean empty. NUL-terminated for the
 * text mechanisms; *len excludes the NUL. */
static sb_rc sasl_decode(const char *b64, uint8_t **out, size_t *len)
{
    size_t in = b64 ? strlen(b64) : 0;

    *out = NULL;
    *len = 0;
    if (in == 0 || (in == 1 && b64[0] == '='))
        in = 0;
    if (in > (SASL_MAX_MSG / 3 + 1) * 4)
        return SB_LIMIT;
    uint8_t *buf = malloc(in / 4 * 3 + 4);
    if (!buf)
        return SB_ERROR;
    if (in && auth_b64_decode(b64, in, buf, in / 4 * 3 + 3, len) != SB_OK) {
        free(buf);
        return SB_ERROR;
    }
    buf[*len] = '\0';
    *out = buf;
    return SB_OK;
}

/* An authzid is acceptable only if it names the authenticated account. */
static int sasl_authzid_ok(const struct sasl_sess *s, const char *authzid)
{
    struct jid j;

    if (!authzid || !authzid[0])
        return 1;
    if (jid_parse(&j, authzid) != SB_OK)
        return 0;
    return j.resource[0] == '\0' && strcmp(j.node, s->username) == 0 &&
           strcmp(j.domain, s->domain) == 0;
}

/* ---- credential lookup -------------------------------------------------------------- */

static void sasl_plain_verify(struct sasl_sess *s, const struct auth_cred *c);
static void sasl_scram_first_reply(struct sasl_sess *s, const struct auth_cred *c);

static void sasl_lookup_done(void *arg, const struct auth_cred *c)
{
    struct sasl_pending *p = arg;
    struct sasl_sess *s = p->sess;

    free(p);
    if (!s)
        return;          /* the session went away or restarted meanwhile */
    s->pending = NULL;
    if (!c) {
        sasl_fail(s, "temporary-auth-failure");
        return;
    }
    s->from_cache = c->cached;
    if (c->found && !c->cached)
        s->db_cred = *c;
    if (s->mech == SASL_M_PLAIN)
        sasl_plain_verify(s, c);
    else
        sasl_scram_first_reply(s, c);
}

/* s waits for the store (state LOOKUP) with the returned pending; NULL
 * after failing s (out of memory). */
static struct sasl_pending *sasl_wait(struct sasl_sess *s)
{
    struct sasl_pending *p = malloc(sizeof(*p));

    if (!p) {
        sasl_fail(s, "temporary-auth-failure");
        return NULL;
    }
    p->sess = s;
    s->pending = p;
    s->state = SASL_ST_LOOKUP;
    return p;
}

/* The store could not queue p (its callback will not run): drop it and
 * fail s with temporary-auth-failure. */
static void sasl_wait_failed(struct sasl_sess *s, struct sasl_pending *p, const char *event)
{
    if (s->pending == p) {
        s->pending = NULL;
        free(p);
    }
    log_warn(event, "domain=%s", sb_log_q(s->domain));
    sasl_fail(s, "temporary-auth-failure");
}

/* Start the lookup for s->username. s may be gone when this returns. */
static void sasl_lookup(struct sasl_sess *s)
{
    struct sasl_pending *p = sasl_wait(s);

    if (p && auth_store_lookup(s->st, s->domain, s->username, sasl_lookup_done, p) != SB_OK)
        sasl_wait_failed(s, p, "sasl_store_unavailable");
}

/* ---- ANONYMOUS (RFC 4505) ----------------------------------------------------------- */

static void sasl_anon_claim(struct sasl_sess *s);

static void sasl_anon_claimed(void *arg, int result)
{
    struct sasl_pending *p = arg;
    struct sasl_sess *s = p->sess;

    free(p);
    if (!s)
        return;
    s->pending = NULL;
    if (result > 0)
        sasl_finish(s, SASL_SUCCESS, NULL, NULL);
    else if (result == 0 && ++s->anon_tries < SASL_ANON_TRIES)
        sasl_anon_claim(s);
    else
        sasl_fail(s, "temporary-auth-failure");
}

/* A fresh random node, claimed cluster-wide. s may be gone when this returns. */
static void sasl_anon_claim(struct sasl_sess *s)
{
    struct sasl_pending *p = sasl_wait(s);

    if (!p)
        return;
    sb_random_id(s->username, SASL_ANON_NODE);
    if (auth_store_claim(s->st, s->domain, s->username, sasl_anon_claimed, p) != SB_OK)
        sasl_wait_failed(s, p, "sasl_claim_unavailable");
}

/* The optional trace (RFC 4505 §3): checked for encoding and size only. */
static void sasl_anon_start(struct sasl_sess *s, const char *b64)
{
    uint8_t *m;
    size_t len;
    sb_rc rc = sasl_decode(b64, &m, &len);

    if (rc != SB_OK) {
        sasl_fail(s, rc == SB_LIMIT ? "malformed-request" : "incorrect-encoding");
        return;
    }
    free(m);
    if (len > 1020) {             /* 255 UTF-8 characters at most */
        sasl_fail(s, "malformed-request");
        return;
    }
    s->anon_tries = 0;
    sasl_anon_claim(s);
}

/* ---- PLAIN on an external domain (extauth, LDAP) ------------------------------------- */

static void sasl_external_done(void *arg, int result)
{
    struct sasl_pending *p = arg;
    struct sasl_sess *s = p->sess;

    free(p);
    if (!s)
        return;
    s->pending = NULL;
    if (result == 1) {
        sasl_finish(s, SASL_SUCCESS, "", NULL);
        return;
    }
    s->reason = result == 0 ? "directory-refused" : "directory-unavailable";
    sasl_fail(s, result == 0 ? "not-authorized" : "temporary-auth-failure");
}

/* s may be gone when this returns. */
static void sasl_external_check(struct sasl_sess *s, const char *password)
{
    struct sasl_pending *p = sasl_wait(s);

    if (p && auth_store_password(s->st, s->domain, s->username, password, sasl_external_done,
                                 p) != SB_OK) {
        s->reason = "directory-unavailable";
        sasl_wait_failed(s, p, "sasl_directory_unavailable");
    }
}

/* ---- PLAIN (RFC 4616) ----------------------------------------------------------------- */

/* [authzid] NUL authcid NUL secret, both of the last non-empty (PLAIN,
 * X-OAUTH2). 0 when malformed. */
static int sasl_split3(const uint8_t *m, size_t len, const char **authzid, const char **authcid,
                       const char **secret)
{
    const char *a = (const char *)m;
    const char *z1 = memchr(m, '\0', len);
    const char *z2 = z1 ? memchr(z1 + 1, '\0', len - (size_t)(z1 + 1 - a)) : NULL;

    if (!z1 || !z2 || z1[1] == '\0' || z2[1] == '\0' ||
        memchr(z2 + 1, '\0', len - (size_t)(z2 + 1 - a)))
        return 0;
    *authzid = a;
    *authcid = z1 + 1;
    *secret = z2 + 1;
    return 1;
}

static void sasl_plain_message(struct sasl_sess *s, const uint8_t *m, size_t len)
{
    const char *authzid, *authcid, *secret;
    char *pw = NULL;

    if (!sasl_split3(m, len, &authzid, &authcid, &secret)) {
        sasl_fail(s, "malformed-request");
        return;
    }
    if (jid_nodeprep(authcid, s->username) != SB_OK) {
        s->username[0] = '\0';
        sasl_fail(s, "not-authorized");
        return;
    }
    if (!sasl_authzid_ok(s, authzid)) {
        sasl_fail(s, "invalid-authzid");
        return;
    }
    if (auth_saslprep(secret, &pw) != SB_OK || !pw[0]) {
        free(pw);
        sasl_fail(s, "not-authorized");
        return;
    }
    if (auth_backend_of(s->domain) != AUTH_BE_INTERNAL) {
        /* the directory gets the password as typed, like ejabberd's scripts */
        free(pw);
        sasl_external_check(s, secret);
        return;
    }
    s->password = pw;
    sasl_lookup(s);
}

static void sasl_plain_verify(struct sasl_sess *s, const struct auth_cred *c)
{
    struct scram_cred fake;
    const struct scram_cred *k;
    int ok;

    /* Prefer SHA-256. An unknown account still pays one derivation, so
     * timing does not tell it apart. This PBKDF2 runs on the loop (a few
     * ms); PLAIN is for TLS clients and load tests only. */
    if (c->found && c->has_sha256)
        k = &c->sha256;
    else if (c->found && c->has_sha1)
        k = &c->sha1;
    else {
        auth_fake_cred(SCRAM_SHA256, s->domain, s->username, &fake);
        k = &fake;
    }
    ok = scram_cred_check_password(k, s->password, strlen(s->password)) && c->found &&
         k != &fake;
    sasl_wipe_str(&s->password);
    if (ok)
        sasl_finish(s, SASL_SUCCESS, "", NULL);
    else
        sasl_fail(s, "not-authorized");
}

static sb_rc sasl_scram_unescape(const char *in, size_t len, char *out, size_t cap);
static sb_rc sasl_scram_cb_select(struct sasl_sess *s, const char *name, size_t n);

/* ---- bearer tokens: X-OAUTH2, OAUTHBEARER (RFC 7628) ------------------------------------ */

/* RFC 7628 §3.2.2: the error a client gets before the failure. */
#define SASL_OAUTH_ERROR_JSON "{\"status\":\"invalid_token\",\"schemes\":\"bearer\",\"scope\":\"xmpp\"}"

/* The token did not do: OAUTHBEARER first sends the error JSON and waits
 * for the client's "\x01"; X-OAUTH2 fails at once. */
static void sasl_token_refused(struct sasl_sess *s, const char *reason)
{
    s->reason = reason;
    if (s->mech == SASL_M_OAUTHBEARER) {
        s->state = SASL_ST_WAIT_ERRACK;
        sasl_challenge(s, SASL_OAUTH_ERROR_JSON);
        return;
    }
    sasl_fail(s, "not-authorized");
}

static void sasl_token_done(void *arg, const struct auth_token_ans *a)
{
    struct sasl_pending *p = arg;
    struct sasl_sess *s = p->sess;

    free(p);
    if (!s)
        return;
    s->pending = NULL;
    if (a->ok < 0) {
        s->reason = a->reason;
        sasl_fail(s, "temporary-auth-failure");
    } else if (!a->ok) {
        sasl_token_refused(s, a->reason);
    } else if (s->username[0] && strcmp(s->username, a->username)) {
        sasl_token_refused(s, "user-mismatch");   /* a token of another account */
    } else {
        snprintf(s->username, sizeof s->username, "%s", a->username);
        s->token_id = a->id;
        sasl_finish(s, SASL_SUCCESS, "", NULL);
    }
}

/* Check token (s->username: the name the client gave, or "" to take the
 * token's). s may be gone when this returns. */
static void sasl_token_check(struct sasl_sess *s, const char *token)
{
    struct sasl_pending *p = sasl_wait(s);

    if (p && auth_store_token(s->st, s->domain, token, sasl_token_done, p) != SB_OK)
        sasl_wait_failed(s, p, "sasl_store_unavailable");
}

/* "user" or "user@ourdomain" → s->username. 0 when it cannot name an
 * account here (the reason is set). */
static int sasl_token_user(struct sasl_sess *s, const char *name)
{
    struct jid j;

    if (strchr(name, '@')) {
        if (jid_parse(&j, name) != SB_OK || !j.node[0] || j.resource[0]) {
            s->reason = "bad-user";
            return 0;
        }
        if (strcmp(j.domain, s->domain)) {
            s->reason = "other-domain";
            return 0;
        }
        snprintf(s->username, sizeof s->username, "%s", j.node);
        return 1;
    }
    if (jid_nodeprep(name, s->username) != SB_OK) {
        s->username[0] = '\0';
        s->reason = "bad-user";
        return 0;
    }
    return 1;
}

/* X-OAUTH2: [authzid] NUL user NUL token, like PLAIN. */
static void sasl_xoauth2_message(struct sasl_sess *s, const uint8_t *m, size_t len)
{
    const char *authzid, *user, *token;

    if (!sasl_split3(m, len, &authzid, &user, &token)) {
        sasl_fail(s, "malformed-request");
        return;
    }
    if (!sasl_token_user(s, user)) {
        sasl_fail(s, "not-authorized");
        return;
    }
    if (!sasl_authzid_ok(s, authzid)) {
        sasl_fail(s, "invalid-authzid");
        return;
    }
    sasl_token_check(s, token);
}

/* OAUTHBEARER (RFC 7628 §3.1): gs2-header "\x01" *(key=value "\x01") "\x01";
 * the token is in auth=Bearer …; host/port and others are not needed. */
static void sasl_oauthbearer_message(struct sasl_sess *s, const uint8_t *mb, size_t len)
{
    const char *m = (const char *)mb, *end = m + len, *p = m + 2, *comma, *token = NULL;
    char authzid[JID_BARE_MAX + 1] = "";
    size_t tlen = 0;

    /* no channel binding with OAUTHBEARER: "p=" is malformed */
    if (strlen(m) != len || len < 4 || (m[0] != 'n' && m[0] != 'y') || m[1] != ',') {
        sasl_fail(s, "malformed-request");
        return;
    }
    if (p[0] == 'a' && p[1] == '=') {
        comma = memchr(p, ',', (size_t)(end - p));
        if (!comma || comma == p + 2 ||
            sasl_scram_unescape(p + 2, (size_t)(comma - p - 2), authzid, sizeof authzid) != SB_OK) {
            sasl_fail(s, "malformed-request");
            return;
        }
        p = comma;
    }
    if (p + 2 > end || p[0] != ',' || p[1] != '\x01') {
        sasl_fail(s, "malformed-request");
        return;
    }
    for (p += 2;;) {
        const char *kv = memchr(p, '\x01', (size_t)(end - p));
        if (!kv) {
            sasl_fail(s, "malformed-request");
            return;
        }
        if (kv == p) {                      /* the closing "\x01" */
            if (kv + 1 != end) {
                sasl_fail(s, "malformed-request");
                return;
            }
            break;
        }
        if (kv - p > 12 && !strncmp(p, "auth=", 5) && !strncasecmp(p + 5, "Bearer ", 7)) {
            token = p + 12;
            tlen = (size_t)(kv - token);
        }
        p = kv + 1;
    }
    if (!token || tlen == 0) {
        sasl_fail(s, "malformed-request");
        return;
    }
    if (authzid[0] && !sasl_token_user(s, authzid)) {
        sasl_token_refused(s, s->reason);
        return;
    }
    char *t = sasl_strndup(token, tlen);
    if (!t) {
        sasl_fail(s, "temporary-auth-failure");
        return;
    }
    sasl_token_check(s, t);                 /* may free s */
    memset(t, 0, tlen);
    free(t);
}

/* ---- SCRAM (RFC 5802, RFC 7677) ---------------------------------------------------------- */

/* saslname → name: "=2C" → ",", "=3D" → "=", any other "=" is malformed. */
static sb_rc sasl_scram_unescape(const char *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (ch == '=') {
            if (i + 2 >= len)
                return SB_ERROR;
            if (in[i + 1] == '2' && in[i + 2] == 'C')
                ch = ',';
            else if (in[i + 1] == '3' && in[i + 2] == 'D')
                ch = '=';
            else
                return SB_ERROR;
            i += 2;
        }
        if (o + 1 >= cap)
            return SB_ERROR;
        out[o++] = ch;
    }
    out[o] = '\0';
    return SB_OK;
}

/* printable except ',' (RFC 5802 §7) */
static int sasl_scram_nonce_ok(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e || p[i] == ',')
            return 0;
    return 1;
}

/* "p=TYPE": the binding of this connection the client wants. */
static sb_rc sasl_scram_cb_select(struct sasl_sess *s, const char *name, size_t n)
{
    if (n == 12 && !memcmp(name, "tls-exporter", 12) && s->cbd.exporter_len) {
        s->cb_data = s->cbd.exporter;
        s->cb_len = s->cbd.exporter_len;
        return SB_OK;
    }
    if (n == 20 && !memcmp(name, "tls-server-end-point", 20) && s->cbd.endpoint_len) {
        s->cb_data = s->cbd.endpoint;
        s->cb_len = s->cbd.endpoint_len;
        return SB_OK;
    }
    s->reason = "channel-binding-type";
    sasl_fail(s, "not-authorized");
    return SB_ERROR;
}

/* Parse client-first-message; on success username/gs2 header/bare/nonce
 * are set and the lookup starts. */
static void sasl_scram_first(struct sasl_sess *s, const char *m, size_t len)
{
    char authzid[JID_BARE_MAX + 1] = "", name[JID_PART_MAX + 1];
    const char *p = m, *end = m + len, *comma;

    if (strlen(m) != len) {                 /* embedded NUL */
        sasl_fail(s, "malformed-request");
        return;
    }
    /* gs2-cbind-flag (RFC 5802 §6): "p=TYPE" only with a -PLUS mechanism,
     * which needs it; "y" (the client could bind but thinks we cannot) is
     * a downgrade when we did offer -PLUS on this stream */
    if (len >= 3 && p[0] == 'p' && p[1] == '=') {
        comma = memchr(p, ',', len);
        if (!s->plus || !comma) {
            sasl_fail(s, "malformed-request");
            return;
        }
        if (sasl_scram_cb_select(s, p + 2, (size_t)(comma - p - 2)) != SB_OK)
            return;
        p = comma + 1;
    } else if (len < 3 || (p[0] != 'n' && p[0] != 'y') || p[1] != ',' || s->plus) {
        sasl_fail(s, "malformed-request");
        return;
    } else if (p[0] == 'y' && sasl_cb_offered(&s->cbd)) {
        s->reason = "channel-binding-downgrade";
        sasl_fail(s, "not-authorized");
        return;
    } else {
        p += 2;
    }
    if (p[0] == 'a' && p[1] == '=') {
        comma = memchr(p, ',', (size_t)(end - p));
        if (!comma || comma == p + 2 ||
            sasl_scram_unescape(p + 2, (size_t)(comma - p - 2), authzid, sizeof(authzid)) != SB_OK) {
            sasl_fail(s, "malformed-request");
            return;
        }
        p = comma;
    }
    if (p >= end || *p != ',') {
        sasl_fail(s, "malformed-request");
        return;
    }
    p++;
    s->gs2_header = sasl_strndup(m, (size_t)(p - m));
    s->client_first_bare = sasl_strndup(p, (size_t)(end - p));
    if (!s->gs2_header || !s->client_first_bare) {
        sasl_fail(s, "temporary-auth-failure");
        return;
    }
    /* client-first-message-bare: [m=…,] n=saslname,r=nonce[,ext…]; m= is
     * a mandatory extension we do not know, so it fails */
    if (end - p < 2 || p[0] != 'n' || p[1] != '=') {
        sasl_fail(s, "malformed-request");
        return;
    }
    comma = memchr(p, ',', (size_t)(end - p));
    if (!comma || comma == p + 2 ||
        sasl_scram_unescape(p + 2, (size_t)(comma - p - 2), name, sizeof(name)) != SB_OK) {
        sasl_fail(s, "malformed-request");
        return;
    }
    p = comma + 1;
    if (end - p < 3 || p[0] != 'r' || p[1] != '=') {
        sasl_fail(s, "malformed-request");
        return;
    }
    p += 2;
    comma = memchr(p, ',', (size_t)(end - p));
    size_t nlen = comma ? (size_t)(comma - p) : (size_t)(end - p);
    if (!sasl_scram_nonce_ok(p, nlen)) {
        sasl_fail(s, "malformed-request");
        return;
    }
    s->nonce = sasl_strndup(p, nlen);       /* server part appended later */
    if (!s->nonce) {
        sasl_fail(s, "temporary-auth-failure");
        return;
    }
    if (jid_nodeprep(name, s->username) != SB_OK) {
        s->username[0] = '\0';
        sasl_fail(s, "not-authorized");     /* no such account can exist */
        return;
    }
    if (!sasl_authzid_ok(s, authzid)) {
        sasl_fail(s, "invalid-authzid");
        return;
    }
    sasl_lookup(s);
}

/* Build server-first-message from the looked-up (or fake) credentials. */
static void sasl_scram_first_reply(struct sasl_sess *s, const struct auth_cred *c)
{
    const struct scram_cred *k = NULL;
    char snonce[64], salt64[((sizeof(c->sha1.salt) + 2) / 3) * 4 + 1];
    uint8_t raw[SASL_NONCE_BYTES];

    if (c->found && s->hash == SCRAM_SHA256 && c->has_sha256)
        k = &c->sha256;
    else if (c->found && s->hash == SCRAM_SHA1 && c->has_sha1)
        k = &c->sha1;
    if (k)
        s->cred = *k;
    else
        auth_fake_cred(s->hash, s->domain, s->username, &s->cred);

    if (s->test_nonce) {
        snprintf(snonce, sizeof(snonce), "%s", s->test_nonce);
    } else {
        sb_random(raw, sizeof(raw));
        auth_b64_encode(raw, sizeof(raw), snonce);
    }
    auth_b64_encode(s->cred.salt, s->cred.saltlen, salt64);

    size_t cn = strlen(s->nonce), need = 2 * cn + 2 * strlen(snonce) + strlen(salt64) + 32;
    char *full = malloc(cn + strlen(snonce) + 1), *sf = malloc(need);
    if (!full || !sf) {
        free(full);
        free(sf);
        sasl_fail(s, "temporary-auth-failure");
        return;
    }
    snprintf(full, cn + strlen(snonce) + 1, "%s%s", s->nonce, snonce);
    snprintf(sf, need, "r=%s,s=%s,i=%u", full, salt64, s->cred.iter);
    free(s->nonce);
    s->nonce = full;
    s->server_first = sf;
    s->state = SASL_ST_WAIT_FINAL;
    sasl_challenge(s, sf);
}

/* c= must be base64 of our gs2 header followed by the channel binding
 * data (-PLUS only). Fails the exchange itself: incorrect-encoding or
 * not-authorized. */
static sb_rc sasl_scram_cbind_check(struct sasl_sess *s, const char *c, size_t clen)
{
    size_t gl = strlen(s->gs2_header), il = gl + s->cb_len, n;
    char *want = malloc(((il + 2) / 3) * 4 + 1);
    uint8_t *input = malloc(il + 1), *scratch = malloc(clen / 4 * 3 + 3);
    int same = 0, decodes = 0;

    if (want && input && scratch) {
        memcpy(input, s->gs2_header, gl);
        if (s->cb_len)
            memcpy(input + gl, s->cb_data, s->cb_len);
        auth_b64_encode(input, il, want);
        same = strlen(want) == clen && memcmp(want, c, clen) == 0;
        decodes = auth_b64_decode(c, clen, scratch, clen / 4 * 3 + 3, &n) == SB_OK;
    }
    free(want);
    free(input);
    free(scratch);
    if (same)
        return SB_OK;
    if (s->plus)
        s->reason = "channel-binding-mismatch";
    sasl_fail(s, decodes ? "not-authorized" : "incorrect-encoding");
    return SB_ERROR;
}

/* Verify client-final-message; answer success with server-final. */
static void sasl_scram_final(struct sasl_sess *s, const char *m, size_t len)
{
    size_t dl = scram_digest_len(s->hash), n;
    uint8_t proof[SCRAM_MAX_DIGEST], sig[SCRAM_MAX_DIGEST], key[SCRAM_MAX_DIGEST];
    const char *end = m + len, *comma, *pp;

    if (strlen(m) != len || len < 2 || m[0] != 'c' || m[1] != '=') {
        sasl_fail(s, "malformed-request");
        return;
    }
    /* channel-binding: must be exactly our gs2 header (no binding data) */
    comma = memchr(m, ',', len);
    if (!comma) {
        sasl_fail(s, "malformed-request");
        return;
    }
    if (sasl_scram_cbind_check(s, m + 2, (size_t)(comma - m - 2)) != SB_OK)
        return;
    /* nonce */
    const char *r = comma + 1;
    if (end - r < 2 || r[0] != 'r' || r[1] != '=') {
        sasl_fail(s, "malformed-request");
        return;
    }
    r += 2;
    comma = memchr(r, ',', (size_t)(end - r));
    if (!comma) {
        sasl_fail(s, "malformed-request");
        return;
    }
    /* proof: the last attribute */
    pp = NULL;
    for (const char *q = comma; q && q < end; q = memchr(q + 1, ',', (size_t)(end - q - 1)))
        pp = q;
    if (!pp || end - pp < 3 || pp[1] != 'p' || pp[2] != '=') {
        sasl_fail(s, "malformed-request");
        return;
    }
    if (auth_b64_decode(pp + 3, (size_t)(end - pp - 3), proof, sizeof(proof), &n) != SB_OK) {
        sasl_fail(s, "incorrect-encoding");
        return;
    }
    if ((size_t)(comma - r) != strlen(s->nonce) || memcmp(r, s->nonce, strlen(s->nonce)) != 0 ||
        n != dl) {
        sasl_fail(s, "not-authorized");
        return;
    }
    /* AuthMessage = client-first-bare "," server-first "," final-without-proof */
    size_t wlen = (size_t)(pp - m), blen = strlen(s->client_first_bare),
           slen = strlen(s->server_first);
    char *am = malloc(blen + slen + wlen + 3);
    if (!am) {
        sasl_fail(s, "temporary-auth-failure");
        return;
    }
    memcpy(am, s->client_first_bare, blen);
    am[blen] = ',';
    memcpy(am + blen + 1, s->server_first, slen);
    am[blen + 1 + slen] = ',';
    memcpy(am + blen + slen + 2, m, wlen);
    size_t amlen = blen + slen + 2 + wlen;

    scram_hmac(s->hash, s->cred.stored_key, dl, am, amlen, sig);    /* ClientSignature */
    memxor3(key, proof, sig, dl);                                   /* ClientKey */
    scram_digest(s->hash, key, dl, sig);                            /* StoredKey? */
    if (!memeql_sec(sig, s->cred.stored_key, dl)) {
        free(am);
        sasl_fail(s, "not-authorized");
        return;
    }
    scram_hmac(s->hash, s->cred.server_key, dl, am, amlen, sig);    /* ServerSignature */
    free(am);

    char v[2 + ((SCRAM_MAX_DIGEST + 2) / 3) * 4 + 1], out[((sizeof(v) + 2) / 3) * 4 + 1];
    v[0] = 'v';
    v[1] = '=';
    auth_b64_encode(sig, dl, v + 2);
    auth_b64_encode((const uint8_t *)v, strlen(v), out);
    sasl_finish(s, SASL_SUCCESS, out, NULL);
}

/* ---- HT-SHA-256-* (XEP-0484 FAST) ------------------------------------------------- */

/* The binding data the HT mechanism mixes in (none for -NONE). */
static void sasl_ht_cb(const struct sasl_sess *s, const uint8_t **d, size_t *n)
{
    const char *kind = s->ht_mech + 11;
    *d = NULL;
    *n = 0;
    if (!strcmp(kind, "ENDP")) {
        *d = s->cbd.endpoint;
        *n = s->cbd.endpoint_len;
    } else if (!strcmp(kind, "EXPR")) {
        *d = s->cbd.exporter;
        *n = s->cbd.exporter_len;
    }
}

static void sasl_ht_hmac(const struct sasl_sess *s, const char *token, const char *label,
                         uint8_t out[32])
{
    struct hmac_sha256_ctx mac;
    const uint8_t *cb;
    size_t cbn;

    sasl_ht_cb(s, &cb, &cbn);
    hmac_sha256_set_key(&mac, strlen(token), (const uint8_t *)token);
    hmac_sha256_update(&mac, strlen(label), (const uint8_t *)label);
    if (cbn)
        hmac_sha256_update(&mac, cbn, cb);
    hmac_sha256_digest(&mac, 32, out);
}

static void sasl_ht_rows(void *arg, const struct auth_fast_row *rows, int n)
{
    struct sasl_pending *p = arg;
    struct sasl_sess *s = p->sess;
    const struct auth_fast_row *hit = NULL;
    char token[AUTH_FAST_TOKEN_LEN + 1];
    uint8_t h[32];

    free(p);
    if (!s)
        return;
    s->pending = NULL;
    if (n < 0) {
        s->reason = "store-unavailable";
        sasl_fail(s, "temporary-auth-failure");
        return;
    }
    for (int i = 0; i < n && !hit; i++) {
        if (strcmp(rows[i].mech, s->ht_mech))
            continue;
        auth_fast_token(s->domain, s->username, s->fast_ua, rows[i].seed, token);
        sasl_ht_hmac(s, token, "Initiator", h);
        if (memeql_sec(h, s->ht_proof, sizeof h))
            hit = &rows[i];
        else
            memset(token, 0, sizeof token);
    }
    if (!hit) {
        s->reason = "fast-token";       /* unknown, expired, invalidated, other client */
        sasl_fail(s, "not-authorized");
        return;
    }
    if (s->fast_count >= 0 && hit->last_count >= 0 && s->fast_count <= hit->last_count) {
        memset(token, 0, sizeof token);
        s->reason = "fast-count";       /* a replayed or stale count */
        sasl_fail(s, "not-authorized");
        return;
    }
    char out[((sizeof h + 2) / 3) * 4 + 1];
    sasl_ht_hmac(s, token, "Responder", h);
    memset(token, 0, sizeof token);
    auth_b64_encode(h, sizeof h, out);
    if (auth_fast_used(auth_store_pg(s->st), hit->id, s->fast_count) != SB_OK)
        log_warn("fast_store_error", "op=used error=unqueued");
    s->fast_used = 1;
    sasl_finish(s, SASL_SUCCESS, out, NULL);
}

/* authcid NUL initiator-hash (32 bytes). */
static void sasl_ht_message(struct sasl_sess *s, const uint8_t *m, size_t len)
{
    const uint8_t *nul = memchr(m, '\0', len);

    if (!nul || nul == m || len - (size_t)(nul + 1 - m) != sizeof s->ht_proof) {
        sasl_fail(s, "malformed-request");
        return;
    }
    if (jid_nodeprep((const char *)m, s->username) != SB_OK) {
        s->username[0] = '\0';
        sasl_fail(s, "not-authorized");
        return;
    }
    memcpy(s->ht_proof, nul + 1, sizeof s->ht_proof);
    struct sasl_pending *p = sasl_wait(s);
    if (p && auth_fast_lookup(auth_store_pg(s->st), s->domain, s->username, s->fast_ua,
                              sasl_ht_rows, p) != SB_OK)
        sasl_wait_failed(s, p, "sasl_store_unavailable");
}

void sasl_set_fast(struct sasl_sess *s, const char *ua_id, long long count)
{
    free(s->fast_ua);
    s->fast_ua = ua_id ? strdup(ua_id) : NULL;
    s->fast_count = count;
}

/* ---- the public entry points ---------------------------------------------------------------- */

struct sasl_sess *sasl_new(struct auth_store *st, const struct sasl_opts *o,
                           sasl_cb cb, void *ud)
{
    struct sasl_sess *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->st = st;
    snprintf(s->domain, sizeof(s->domain), "%s", o->domain ? o->domain : "");
    s->tls = o->tls;
    s->allow_plain = o->allow_plain_without_tls;
    s->anonymous = o->anonymous;
    if (o->cb)
        s->cbd = *o->cb;
    s->cb = cb;
    s->ud = ud;
    s->fast_count = -1;
    return s;
}

void sasl_free(struct sasl_sess *s)
{
    if (!s)
        return;
    sasl_reset(s);           /* detaches a pending lookup: its answer is dropped */
    free(s->test_nonce);
    free(s->fast_ua);
    memset(s, 0, sizeof(*s));
    free(s);
}

void sasl_test_set_nonce(struct sasl_sess *s, const char *nonce)
{
    free(s->test_nonce);
    s->test_nonce = nonce ? strdup(nonce) : NULL;
}

/* Route one decoded client message by state. */
static void sasl_dispatch(struct sasl_sess *s, const uint8_t *m, size_t len)
{
    switch (s->state) {
    case SASL_ST_WAIT_PLAIN:
        sasl_plain_message(s, m, len);
        break;
    case SASL_ST_WAIT_FIRST:
        sasl_scram_first(s, (const char *)m, len);
        break;
    case SASL_ST_WAIT_FINAL:
        sasl_scram_final(s, (const char *)m, len);
        break;
    case SASL_ST_WAIT_TOKEN:
        if (s->mech == SASL_M_XOAUTH2)
            sasl_xoauth2_message(s, m, len);
        else
            sasl_oauthbearer_message(s, m, len);
        break;
    case SASL_ST_WAIT_ERRACK:
        /* RFC 7628 §3.2.3: the client's dummy "\x01"; anything else
         * ends the exchange the same way */
        sasl_fail(s, "not-authorized");
        break;
    case SASL_ST_WAIT_HT:
        sasl_ht_message(s, m, len);
        break;
    default:
        sasl_fail(s, "malformed-request");
        break;
    }
}

static void sasl_feed(struct sasl_sess *s, const char *b64, int initial)
{
    uint8_t *m;
    size_t len;
    sb_rc rc = sasl_decode(b64, &m, &len);

    if (rc != SB_OK) {
        sasl_fail(s, rc == SB_LIMIT ? "malformed-request" : "incorrect-encoding");
        return;
    }
    if (initial && len == 0) {
        free(m);
        sasl_challenge(s, "");     /* no initial response: ask for one */
        return;
    }
    sasl_dispatch(s, m, len);      /* may free s */
    memset(m, 0, len);             /* PLAIN carries the password */
    free(m);
}

void sasl_start(struct sasl_sess *s, const char *mech, const char *b64)
{
    sasl_reset(s);                 /* a new <auth/> restarts the exchange */
    if (s->anonymous || (mech && strcmp(mech, "ANONYMOUS") == 0)) {
        /* An anonymous domain has no accounts; elsewhere ANONYMOUS is not offered.
         * No initial response means an empty trace (clients such as Strophe
         * send none and expect no challenge). */
        if (!s->anonymous || !mech || strcmp(mech, "ANONYMOUS") != 0) {
            sasl_fail(s, "invalid-mechanism");
            return;
        }
        s->mech = SASL_M_ANON;
        sasl_anon_start(s, b64);
        return;
    }
    if (mech && strcmp(mech, "PLAIN") == 0 && (s->tls || s->allow_plain)) {
        s->mech = SASL_M_PLAIN;
        s->state = SASL_ST_WAIT_PLAIN;
    } else if (mech && s->tls && auth_token_sources(s->domain) &&
               (strcmp(mech, "X-OAUTH2") == 0 || strcmp(mech, "OAUTHBEARER") == 0)) {
        s->mech = mech[0] == 'X' ? SASL_M_XOAUTH2 : SASL_M_OAUTHBEARER;
        s->state = SASL_ST_WAIT_TOKEN;
    } else if (mech && strncmp(mech, "SCRAM-SHA-", 10) == 0 &&
               auth_backend_of(s->domain) == AUTH_BE_INTERNAL &&
               (!strcmp(mech + 10, "256") || !strcmp(mech + 10, "1") ||
                (sasl_cb_offered(&s->cbd) &&
                 (!strcmp(mech + 10, "256-PLUS") || !strcmp(mech + 10, "1-PLUS"))))) {
        s->mech = SASL_M_SCRAM;
        s->hash = mech[10] == '2' ? SCRAM_SHA256 : SCRAM_SHA1;
        s->plus = strstr(mech, "-PLUS") != NULL;
        s->state = SASL_ST_WAIT_FIRST;
    } else if (mech && s->fast_ua && (s->tls || s->allow_plain) && auth_fast_available() &&
               (!strcmp(mech, "HT-SHA-256-NONE") ||
                (!strcmp(mech, "HT-SHA-256-ENDP") && s->cbd.endpoint_len) ||
                (!strcmp(mech, "HT-SHA-256-EXPR") && s->cbd.exporter_len))) {
        s->mech = SASL_M_HT;
        snprintf(s->ht_mech, sizeof s->ht_mech, "%s", mech);
        s->state = SASL_ST_WAIT_HT;
    } else {
        /* unknown, or PLAIN on a plaintext stream: not offered */
        sasl_fail(s, "invalid-mechanism");
        return;
    }
    sasl_feed(s, b64, 1);
}

void sasl_step(struct sasl_sess *s, const char *b64)
{
    if (s->state == SASL_ST_INIT || s->state == SASL_ST_DONE || s->state == SASL_ST_LOOKUP) {
        sasl_fail(s, "malformed-request");   /* a response nobody asked for */
        return;
    }
    sasl_feed(s, b64, 0);
}

void sasl_abort(struct sasl_sess *s)
{
    sasl_fail(s, "aborted");
}
