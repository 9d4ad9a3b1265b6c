/* test_sasl.c — the SASL server (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256) over a
 * function-backed store: the RFC 5802/7677 exchanges through the real
 * server code, every failure condition, unknown accounts, store failures
 * and freeing a session while its lookup is in flight. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <nettle/memxor.h>

#include "log.h"
#include "auth-int.h"

/* ---- a store in memory -------------------------------------------------------- */

enum mode { M_NOW, M_DEFER, M_DOWN, M_REFUSE };

struct fake_store {
    enum mode mode;
    struct auth_cred alice;      /* "user" in "localhost" */
    int lookups;
    char last_user[64];
    auth_store_cb deferred_cb;   /* M_DEFER: one held answer */
    void *deferred_arg;
};

static sb_rc fake_lookup(void *ud, const char *domain, const char *username,
                         auth_store_cb cb, void *arg)
{
    struct fake_store *fs = ud;
    struct auth_cred none = {0};

    fs->lookups++;
    snprintf(fs->last_user, sizeof(fs->last_user), "%s", username);
    switch (fs->mode) {
    case M_REFUSE:
        return SB_ERROR;
    case M_DOWN:
        cb(arg, NULL);
        return SB_OK;
    case M_DEFER:
        fs->deferred_cb = cb;
        fs->deferred_arg = arg;
        return SB_OK;
    case M_NOW:
        break;
    }
    if (strcmp(domain, "localhost") == 0 && strcmp(username, "user") == 0)
        cb(arg, &fs->alice);
    else
        cb(arg, &none);
    return SB_OK;
}

static void fake_release(struct fake_store *fs)
{
    auth_store_cb cb = fs->deferred_cb;
    fs->deferred_cb = NULL;
    cb(fs->deferred_arg, &fs->alice);
}

/* ---- result capture ------------------------------------------------------------- */

struct capture {
    int calls;
    enum sasl_status status;
    char data[1024];
    char condition[64];
    char username[64];
};

static void on_result(void *ud, const struct sasl_result *r)
{
    struct capture *c = ud;
    c->calls++;
    c->status = r->status;
    snprintf(c->data, sizeof(c->data), "%s", r->data_b64 ? r->data_b64 : "");
    snprintf(c->condition, sizeof(c->condition), "%s", r->condition ? r->condition : "");
    snprintf(c->username, sizeof(c->username), "%s", r->username ? r->username : "");
}

static const char *b64(const char *s)
{
    static char out[4][1024];
    static int i;
    i = (i + 1) % 4;
    auth_b64_encode((const uint8_t *)s, strlen(s), out[i]);
    return out[i];
}

static const char *unb64(const char *s)
{
    static char out[1024];
    size_t n;
    assert_int_equal(auth_b64_decode(s, strlen(s), (uint8_t *)out, sizeof(out) - 1, &n), SB_OK);
    out[n] = '\0';
    return out;
}

struct fixture {
    struct fake_store fs;
    struct auth_store *st;
    struct capture cap;
    struct sasl_opts opts;
};

static void put_cred(struct scram_cred *c, enum scram_hash h, const char *salt_b64)
{
    uint8_t salted[SCRAM_MAX_DIGEST];
    memset(c, 0, sizeof(*c));
    c->hash = h;
    c->iter = 4096;
    assert_int_equal(auth_b64_decode(salt_b64, strlen(salt_b64), c->salt, sizeof(c->salt), &c->saltlen), SB_OK);
    scram_salted_password(h, "pencil", 6, c->salt, c->saltlen, c->iter, salted);
    scram_keys(h, salted, c->stored_key, c->server_key);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->fs.alice.found = f->fs.alice.has_sha1 = f->fs.alice.has_sha256 = 1;
    put_cred(&f->fs.alice.sha1, SCRAM_SHA1, "QSXCR+Q6sek8bf92");
    put_cred(&f->fs.alice.sha256, SCRAM_SHA256, "W22ZaJ0SNY7soEsUEjb6gQ==");
    f->st = auth_store_new_fn(fake_lookup, &f->fs);
    f->opts.domain = "localhost";
    f->opts.tls = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    auth_store_free(f->st);
    free(f);
    return 0;
}

static struct sasl_sess *new_sess(struct fixture *f)
{
    memset(&f->cap, 0, sizeof(f->cap));
    return sasl_new(f->st, &f->opts, on_result, &f->cap);
}

static void expect_failure(struct fixture *f, const char *cond)
{
    assert_int_equal(f->cap.status, SASL_FAILURE);
    assert_string_equal(f->cap.condition, cond);
}

/* ---- the RFC exchanges through the server --------------------------------------- */

static void test_scram_sha1_server_reproduces_rfc5802_exchange(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = new_sess(f);

    sasl_test_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");
    sasl_start(s, "SCRAM-SHA-1", b64("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"));
    assert_int_equal(f->cap.status, SASL_CONTINUE);
    assert_string_equal(unb64(f->cap.data),
                        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
    sasl_step(s, b64("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="));
    assert_int_equal(f->cap.status, SASL_SUCCESS);
    assert_string_equal(unb64(f->cap.data), "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    assert_string_equal(f->cap.username, "user");
    sasl_free(s);
}

static void test_scram_sha256_server_reproduces_rfc7677_exchange(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = new_sess(f);

    sasl_test_set_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    sasl_start(s, "SCRAM-SHA-256", b64("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"));
    assert_int_equal(f->cap.status, SASL_CONTINUE);
    assert_string_equal(unb64(f->cap.data),
                        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                        "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    sasl_step(s, b64("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
    assert_int_equal(f->cap.status, SASL_SUCCESS);
    assert_string_equal(unb64(f->cap.data), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    assert_string_equal(f->cap.username, "user");
    sasl_free(s);
}

/* ---- a real client against random nonces ------------------------------------------ */

/* Compute client-final for server-first sf; returns the message (static). */
static const char *client_final(enum scram_hash h, const char *password, const char *gs2,
                                const char *cfb, const char *sf)
{
    static char out[2048];
    char salt64[128], nonce[256], am[2048], cb[64], pb[64];
    uint8_t salt[64], salted[32], stored[32], server[32], ckey[32], sig[32];
    size_t saltlen, dl = scram_digest_len(h);
    unsigned iter;

    assert_int_equal(sscanf(sf, "r=%255[^,],s=%127[^,],i=%u", nonce, salt64, &iter), 3);
    assert_int_equal(auth_b64_decode(salt64, strlen(salt64), salt, sizeof(salt), &saltlen), SB_OK);
    scram_salted_password(h, password, strlen(password), salt, saltlen, iter, salted);
    scram_keys(h, salted, stored, server);
    auth_b64_encode((const uint8_t *)gs2, strlen(gs2), cb);
    snprintf(am, sizeof(am), "%s,%s,c=%s,r=%s", cfb, sf, cb, nonce);
    scram_hmac(h, salted, dl, "Client Key", 10, ckey);
    scram_hmac(h, stored, dl, am, strlen(am), sig);
    memxor(ckey, sig, dl);
    auth_b64_encode(ckey, dl, pb);
    snprintf(out, sizeof(out), "c=%s,r=%s,p=%s", cb, nonce, pb);
    return out;
}

static void login(struct fixture *f, const char *mech, enum scram_hash h, const char *gs2,
                  const char *user_field, const char *password)
{
    struct sasl_sess *s = new_sess(f);
    char first[256], bare[256], sf[512];

    snprintf(bare, sizeof(bare), "n=%s,r=abcdefghijklmnop", user_field);
    snprintf(first, sizeof(first), "%s%s", gs2, bare);
    sasl_start(s, mech, b64(first));
    assert_int_equal(f->cap.status, SASL_CONTINUE);
    snprintf(sf, sizeof(sf), "%s", unb64(f->cap.data));
    sasl_step(s, b64(client_final(h, password, gs2, bare, sf)));
    sasl_free(s);
}

static void test_scram_random_nonce_is_24_bytes_and_login_succeeds(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = new_sess(f);
    char nonce[128];

    sasl_start(s, "SCRAM-SHA-256", b64("n,,n=user,r=abcdefghijklmnop"));
    assert_int_equal(sscanf(unb64(f->cap.data), "r=%127[^,]", nonce), 1);
    assert_int_equal(strlen(nonce), 16 + 32);       /* client part + base64(24 bytes) */
    assert_memory_equal(nonce, "abcdefghijklmnop", 16);
    sasl_free(s);

    login(f, "SCRAM-SHA-256", SCRAM_SHA256, "n,,", "user", "pencil");
    assert_int_equal(f->cap.status, SASL_SUCCESS);
    login(f, "SCRAM-SHA-1", SCRAM_SHA1, "y,,", "user", "pencil");
    assert_int_equal(f->cap.status, SASL_SUCCESS);
}

static void test_scram_wrong_password_is_not_authorized(void **state)
{
    struct fixture *f = *state;
    login(f, "SCRAM-SHA-256", SCRAM_SHA256, "n,,", "user", "pencil2");
    expect_failure(f, "not-authorized");
}

static void test_scram_unknown_user_looks_like_wrong_password(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = new_sess(f);
    char sf1[512], sf2[512], salt1[64], salt2[64];
    unsigned it;

    sasl_start(s, "SCRAM-SHA-256", b64("n,,n=nobody,r=abcdefghijklmnop"));
    assert_int_equal(f->cap.status, SASL_CONTINUE);
    snprintf(sf1, sizeof(sf1), "%s", unb64(f->cap.data));
    sasl_free(s);
    s = new_sess(f);
    sasl_start(s, "SCRAM-SHA-256", b64("n,,n=nobody,r=abcdefghijklmnop"));
    snprintf(sf2, sizeof(sf2), "%s", unb64(f->cap.data));
    sasl_free(s);
    /* same salt every time, 16 bytes like real accounts, default iterations */
    assert_int_equal(sscanf(strstr(sf1, ",s="), ",s=%63[^,],i=%u", salt1, &it), 2);
    assert_int_equal(sscanf(strstr(sf2, ",s="), ",s=%63[^,],i=%u", salt2, &it), 2);
    assert_string_equal(salt1, salt2);
    assert_int_equal(strlen(salt1), 24);
    assert_int_equal(it, 4096);

    login(f, "SCRAM-SHA-256", SCRAM_SHA256, "n,,", "nobody", "pencil");
    expect_failure(f, "not-authorized");
}

static void test_scram_username_is_nodeprepped_and_unescaped(void **state)
{
    struct fixture *f = *state;
    login(f, "SCRAM-SHA-1", SCRAM_SHA1, "n,,", "USER", "pencil");
    assert_int_equal(f->cap.status, SASL_SUCCESS);
    assert_string_equal(f->cap.username, "user");

    login(f, "SCRAM-SHA-1", SCRAM_SHA1, "n,,", "a=2Cb=3Dc", "pencil");
    expect_failure(f, "not-authorized");
    assert_string_equal(f->fs.last_user, "a,b=c");

    struct sasl_sess *s = new_sess(f);
    sasl_start(s, "SCRAM-SHA-1", b64("n,,n=a=2Xb,r=abc"));
    expect_failure(f, "malformed-request");
    sasl_free(s);
}

static void test_scram_authzid_must_name_the_user(void **state)
{
    struct fixture *f = *state;
    login(f, "SCRAM-SHA-256", SCRAM_SHA256, "n,a=user@localhost,", "user", "pencil");
    assert_int_equal(f->cap.status, SASL_SUCCESS);

    struct sasl_sess *s = new_sess(f);
    sasl_start(s, "SCRAM-SHA-256", b64("n,a=admin@localhost,n=user,r=abc"));
    expect_failure(f, "invalid-authzid");
    sasl_free(s);
}

static void start_expect(struct fixture *f, const char *mech, const char *raw_or_null,
                         const char *b64_text, const char *cond)
{
    struct sasl_sess *s = new_sess(f);
    sasl_start(s, mech, raw_or_null ? b64(raw_or_null) : b64_text);
    expect_failure(f, cond);
    assert_int_equal(f->cap.calls, 1);
    sasl_free(s);
}

static void test_scram_client_first_syntax_errors(void **state)
{
    struct fixture *f = *state;
    start_expect(f, "SCRAM-SHA-1", "p=tls-unique,,n=user,r=abc", NULL, "malformed-request");
    start_expect(f, "SCRAM-SHA-1", "n,,n=user", NULL, "malformed-request");
    start_expect(f, "SCRAM-SHA-1", "n,,r=abc", NULL, "malformed-request");
    start_expect(f, "SCRAM-SHA-1", "n,,m=ext,n=user,r=abc", NULL, "malformed-request");
    start_expect(f, "SCRAM-SHA-1", "n,,n=,r=abc", NULL, "malformed-request");
    start_expect(f, "SCRAM-SHA-1", "n,,n=user,r=", NULL, "malformed-request");
    start_expect(f, "SCRAM-SHA-1", "x,,n=user,r=abc", NULL, "malformed-request");
    start_expect(f, "SCRAM-SHA-1", "n", NULL, "malformed-request");
    start_expect(f, "SCRAM-SHA-1", NULL, "bi*s", "incorrect-encoding");
    start_expect(f, "SCRAM-SHA-1", NULL, "biw", "incorrect-encoding");
}

/* Run to server-first, then send final; expect cond. */
static void final_expect(struct fixture *f, const char *final, const char *cond)
{
    struct sasl_sess *s = new_sess(f);
    sasl_test_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");
    sasl_start(s, "SCRAM-SHA-1", b64("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"));
    assert_int_equal(f->cap.status, SASL_CONTINUE);
    sasl_step(s, b64(final));
    expect_failure(f, cond);
    sasl_free(s);
}

static void test_scram_client_final_errors(void **state)
{
    struct fixture *f = *state;
    const char *n = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
    char m[256];

    snprintf(m, sizeof(m), "c=biws,r=%sX,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", n);
    final_expect(f, m, "not-authorized");                 /* nonce mismatch */
    snprintf(m, sizeof(m), "c=eSws,r=%s,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", n);
    final_expect(f, m, "not-authorized");                 /* c= is not our gs2 header */
    snprintf(m, sizeof(m), "c=bi*s,r=%s,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", n);
    final_expect(f, m, "incorrect-encoding");
    snprintf(m, sizeof(m), "c=biws,r=%s,p=v0X8v3Bz2T0CJGbJQyF0X+HI4T*=", n);
    final_expect(f, m, "incorrect-encoding");
    snprintf(m, sizeof(m), "c=biws,r=%s,p=AAAAv3Bz2T0CJGbJQyF0X+HI4Ts=", n);
    final_expect(f, m, "not-authorized");                 /* wrong proof */
    snprintf(m, sizeof(m), "c=biws,r=%s", n);
    final_expect(f, m, "malformed-request");              /* no proof */
    final_expect(f, "r=abc,p=xyz", "malformed-request");
    final_expect(f, "c=biws", "malformed-request");

    struct sasl_sess *s = new_sess(f);
    sasl_start(s, "SCRAM-SHA-1", b64("n,,n=user,r=abc"));
    sasl_step(s, "not base64!");
    expect_failure(f, "incorrect-encoding");
    sasl_free(s);
}

static void test_scram_empty_initial_response_gets_empty_challenge(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = new_sess(f);

    sasl_start(s, "SCRAM-SHA-1", "=");
    assert_int_equal(f->cap.status, SASL_CONTINUE);
    assert_string_equal(f->cap.data, "");
    sasl_test_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");
    sasl_step(s, b64("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"));
    assert_int_equal(f->cap.status, SASL_CONTINUE);
    sasl_step(s, b64("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="));
    assert_int_equal(f->cap.status, SASL_SUCCESS);
    sasl_free(s);
}

/* ---- PLAIN -------------------------------------------------------------------------- */

static void plain(struct fixture *f, const char *msg, size_t len)
{
    char enc[512];
    struct sasl_sess *s = new_sess(f);
    auth_b64_encode((const uint8_t *)msg, len, enc);
    sasl_start(s, "PLAIN", enc);
    sasl_free(s);
}

static void test_plain_accepts_right_password_over_tls(void **state)
{
    struct fixture *f = *state;
    plain(f, "\0user\0pencil", 12);
    assert_int_equal(f->cap.status, SASL_SUCCESS);
    assert_string_equal(f->cap.username, "user");
    assert_string_equal(f->cap.data, "");
    /* SASLprep: a soft hyphen maps to nothing */
    plain(f, "\0user\0pen\xC2\xAD" "cil", 14);
    assert_int_equal(f->cap.status, SASL_SUCCESS);
    plain(f, "user@localhost\0user\0pencil", 26);
    assert_int_equal(f->cap.status, SASL_SUCCESS);
}

static void test_plain_failures(void **state)
{
    struct fixture *f = *state;
    plain(f, "\0user\0pencil2", 13);
    expect_failure(f, "not-authorized");
    plain(f, "\0nobody\0pencil", 14);
    expect_failure(f, "not-authorized");
    plain(f, "user\0pencil", 11);
    expect_failure(f, "malformed-request");
    plain(f, "\0\0pencil", 8);
    expect_failure(f, "malformed-request");
    plain(f, "\0user\0", 6);
    expect_failure(f, "malformed-request");
    plain(f, "\0user\0pen\0cil", 13);
    expect_failure(f, "malformed-request");
    plain(f, "other@localhost\0user\0pencil", 27);
    expect_failure(f, "invalid-authzid");
}

static void test_plain_not_offered_without_tls(void **state)
{
    struct fixture *f = *state;
    f->opts.tls = 0;
    assert_string_equal(sasl_mechanisms(&f->opts), "SCRAM-SHA-256 SCRAM-SHA-1");
    plain(f, "\0user\0pencil", 12);
    expect_failure(f, "invalid-mechanism");
    f->opts.allow_plain_without_tls = 1;
    assert_string_equal(sasl_mechanisms(&f->opts), "SCRAM-SHA-256 SCRAM-SHA-1 PLAIN");
    plain(f, "\0user\0pencil", 12);
    assert_int_equal(f->cap.status, SASL_SUCCESS);
}

static void test_plain_without_initial_response_waits(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = new_sess(f);
    char enc[64];

    sasl_start(s, "PLAIN", "");
    assert_int_equal(f->cap.status, SASL_CONTINUE);
    auth_b64_encode((const uint8_t *)"\0user\0pencil", 12, enc);
    sasl_step(s, enc);
    assert_int_equal(f->cap.status, SASL_SUCCESS);
    sasl_free(s);
}

/* ---- everything else ---------------------------------------------------------------- */

static void test_unknown_mechanism_is_invalid_mechanism(void **state)
{
    struct fixture *f = *state;
    start_expect(f, "DIGEST-MD5", "x", NULL, "invalid-mechanism");
    start_expect(f, "scram-sha-1", "x", NULL, "invalid-mechanism");
}

static void test_store_down_is_temporary_auth_failure(void **state)
{
    struct fixture *f = *state;
    f->fs.mode = M_DOWN;
    start_expect(f, "SCRAM-SHA-256", "n,,n=user,r=abc", NULL, "temporary-auth-failure");
    plain(f, "\0user\0pencil", 12);
    expect_failure(f, "temporary-auth-failure");
    f->fs.mode = M_REFUSE;
    start_expect(f, "SCRAM-SHA-256", "n,,n=user,r=abc", NULL, "temporary-auth-failure");
}

static void test_no_store_is_temporary_auth_failure(void **state)
{
    struct fixture *f = *state;
    memset(&f->cap, 0, sizeof(f->cap));
    struct sasl_sess *s = sasl_new(NULL, &f->opts, on_result, &f->cap);
    sasl_start(s, "SCRAM-SHA-1", b64("n,,n=user,r=abc"));
    expect_failure(f, "temporary-auth-failure");
    sasl_free(s);
}

static void test_free_during_pending_lookup_drops_answer(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = new_sess(f);

    f->fs.mode = M_DEFER;
    sasl_start(s, "SCRAM-SHA-256", b64("n,,n=user,r=abc"));
    assert_int_equal(f->cap.calls, 0);
    sasl_free(s);
    fake_release(&f->fs);               /* must not touch the freed session */
    assert_int_equal(f->cap.calls, 0);

    /* a restart while a lookup is pending also drops the old answer */
    s = new_sess(f);
    sasl_start(s, "SCRAM-SHA-256", b64("n,,n=user,r=abc"));
    sasl_abort(s);
    expect_failure(f, "aborted");
    fake_release(&f->fs);
    assert_int_equal(f->cap.calls, 1);
    sasl_free(s);
}

static void test_step_out_of_order_is_malformed(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = new_sess(f);

    sasl_step(s, b64("c=biws"));
    expect_failure(f, "malformed-request");
    sasl_abort(s);
    expect_failure(f, "aborted");
    sasl_free(s);
}

static void free_in_callback(void *ud, const struct sasl_result *r)
{
    struct sasl_sess **sp = ud;
    sasl_free(*sp);
    *sp = NULL;
}

static void test_callback_may_free_the_session(void **state)
{
    struct fixture *f = *state;
    struct sasl_sess *s = sasl_new(f->st, &f->opts, free_in_callback, &s);
    sasl_start(s, "SCRAM-SHA-1", b64("n,,n=user,r=abc"));      /* CONTINUE frees */
    assert_null(s);
    s = sasl_new(f->st, &f->opts, free_in_callback, &s);
    sasl_start(s, "NOPE", "");
    assert_null(s);
}

int main(void)
{
    sb_log_init("test", SB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scram_sha1_server_reproduces_rfc5802_exchange, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_sha256_server_reproduces_rfc7677_exchange, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_random_nonce_is_24_bytes_and_login_succeeds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_wrong_password_is_not_authorized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_unknown_user_looks_like_wrong_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_username_is_nodeprepped_and_unescaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_authzid_must_name_the_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_client_first_syntax_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_client_final_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_empty_initial_response_gets_empty_challenge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_accepts_right_password_over_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_not_offered_without_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_without_initial_response_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_mechanism_is_invalid_mechanism, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_down_is_temporary_auth_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_store_is_temporary_auth_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_during_pending_lookup_drops_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_step_out_of_order_is_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_may_free_the_session, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
