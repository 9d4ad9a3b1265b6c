/* test_scram.c — SCRAM key derivation against the RFC 5802 (SHA-1) and
 * RFC 7677 (SHA-256) examples, password checks, base64 and SASLprep. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <nettle/memxor.h>

#include "scram.h"
#include "auth-int.h"

struct vector {
    enum scram_hash hash;
    const char *salt_b64, *client_first_bare, *server_first, *final_no_proof;
    const char *proof_b64, *server_sig_b64;
};

static const struct vector rfc5802 = {
    SCRAM_SHA1, "QSXCR+Q6sek8bf92",
    "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
    "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

static const struct vector rfc7677 = {
    SCRAM_SHA256, "W22ZaJ0SNY7soEsUEjb6gQ==",
    "n=user,r=rOprNGfwEbeRWgbNEkqO",
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

/* The client side, from the primitives: proof and expected server signature. */
static void run_vector(const struct vector *v)
{
    uint8_t salt[64], salted[32], stored[32], server[32], ckey[32], csig[32], proof[32], ssig[32];
    size_t saltlen, dl = scram_digest_len(v->hash);
    char am[512], b64[64];

    assert_int_equal(auth_b64_decode(v->salt_b64, strlen(v->salt_b64), salt, sizeof(salt), &saltlen), SB_OK);
    scram_salted_password(v->hash, "pencil", 6, salt, saltlen, 4096, salted);
    scram_keys(v->hash, salted, stored, server);
    snprintf(am, sizeof(am), "%s,%s,%s", v->client_first_bare, v->server_first, v->final_no_proof);

    scram_hmac(v->hash, salted, dl, "Client Key", 10, ckey);
    scram_hmac(v->hash, stored, dl, am, strlen(am), csig);
    memxor3(proof, ckey, csig, dl);
    auth_b64_encode(proof, dl, b64);
    assert_string_equal(b64, v->proof_b64);

    scram_hmac(v->hash, server, dl, am, strlen(am), ssig);
    auth_b64_encode(ssig, dl, b64);
    assert_string_equal(b64, v->server_sig_b64);
}

static void test_scram_sha1_matches_rfc5802_example(void **st)
{
    run_vector(&rfc5802);
}

static void test_scram_sha256_matches_rfc7677_example(void **st)
{
    run_vector(&rfc7677);
}

static void test_scram_digest_lengths(void **st)
{
    assert_int_equal(scram_digest_len(SCRAM_SHA1), 20);
    assert_int_equal(scram_digest_len(SCRAM_SHA256), 32);
}

static void test_scram_cred_check_accepts_right_password_only(void **st)
{
    struct scram_cred c;

    scram_cred_make(&c, SCRAM_SHA256, "secret", 64);
    assert_int_equal(c.saltlen, 16);
    assert_int_equal(c.iter, 64);
    assert_true(scram_cred_check_password(&c, "secret", 6));
    assert_false(scram_cred_check_password(&c, "secreT", 6));
    assert_false(scram_cred_check_password(&c, "", 0));

    scram_cred_make(&c, SCRAM_SHA1, "secret", 64);
    assert_true(scram_cred_check_password(&c, "secret", 6));
    assert_false(scram_cred_check_password(&c, "secret2", 7));
}

static void test_scram_cred_make_salts_differ(void **st)
{
    struct scram_cred a, b;

    scram_cred_make(&a, SCRAM_SHA1, "pw", 16);
    scram_cred_make(&b, SCRAM_SHA1, "pw", 16);
    assert_memory_not_equal(a.salt, b.salt, 16);
    assert_memory_not_equal(a.stored_key, b.stored_key, 20);
}

static void test_b64_round_trip_and_strict_decode(void **st)
{
    uint8_t out[64];
    size_t n;
    char enc[64];

    auth_b64_encode((const uint8_t *)"n,,", 3, enc);
    assert_string_equal(enc, "biws");
    assert_int_equal(auth_b64_decode("biws", 4, out, sizeof(out), &n), SB_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "n,,", 3);
    assert_int_equal(auth_b64_decode("", 0, out, sizeof(out), &n), SB_OK);
    assert_int_equal(n, 0);

    assert_int_equal(auth_b64_decode("biw", 3, out, sizeof(out), &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("bi*s", 4, out, sizeof(out), &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("bi s", 4, out, sizeof(out), &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("b===", 4, out, sizeof(out), &n), SB_ERROR);
    /* Found by tests/fuzz (corpus base64/crash-formfeed-accepted): nettle
     * skips \f and \v like spaces, so these decoded to fewer bytes. */
    assert_int_equal(auth_b64_decode("bi\fs", 4, out, sizeof(out), &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("bi\vs", 4, out, sizeof(out), &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("biws\f\f\f\f", 8, out, sizeof(out), &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("bi=s", 4, out, sizeof(out), &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("bg==biws", 8, out, sizeof(out), &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("bg==", 4, out, sizeof(out), &n), SB_OK);
    assert_int_equal(n, 1);
    assert_int_equal(auth_b64_decode("QQ==QQ==", 8, out, sizeof(out), &n), SB_ERROR);
    /* too long for the caller's buffer */
    assert_int_equal(auth_b64_decode("YWJjZGVm", 8, out, 5, &n), SB_ERROR);
    assert_int_equal(auth_b64_decode("YWJjZGVm", 8, out, 6, &n), SB_OK);
    assert_int_equal(n, 6);
}

static void test_saslprep_maps_and_rejects(void **st)
{
    char *out;

    assert_int_equal(auth_saslprep("pencil", &out), SB_OK);
    assert_string_equal(out, "pencil");
    free(out);
    /* RFC 4013 §3 examples: soft hyphen maps to nothing, U+00AA → "a" */
    assert_int_equal(auth_saslprep("I\xC2\xADX", &out), SB_OK);
    assert_string_equal(out, "IX");
    free(out);
    assert_int_equal(auth_saslprep("\xC2\xAA", &out), SB_OK);
    assert_string_equal(out, "a");
    free(out);
    /* non-ASCII space → ASCII space */
    assert_int_equal(auth_saslprep("a\xC2\xA0" "b", &out), SB_OK);
    assert_string_equal(out, "a b");
    free(out);
    /* control character is prohibited */
    assert_int_equal(auth_saslprep("\x07", &out), SB_ERROR);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scram_sha1_matches_rfc5802_example),
        cmocka_unit_test(test_scram_sha256_matches_rfc7677_example),
        cmocka_unit_test(test_scram_digest_lengths),
        cmocka_unit_test(test_scram_cred_check_accepts_right_password_only),
        cmocka_unit_test(test_scram_cred_make_salts_differ),
        cmocka_unit_test(test_b64_round_trip_and_strict_decode),
        cmocka_unit_test(test_saslprep_maps_and_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
