/* scram.c — SCRAM key derivation (RFC 5802 §3) over nettle, plus the
 * base64 and SASLprep helpers every SASL mechanism needs. */
#include <stdlib.h>
#include <string.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>
#include <nettle/hmac.h>
#include <nettle/pbkdf2.h>
#include <nettle/base64.h>
#include <nettle/memops.h>
#include <stringprep.h>

#include "scram.h"
#include "auth-int.h"

size_t scram_digest_len(enum scram_hash h)
{
    return h == SCRAM_SHA256 ? SHA256_DIGEST_SIZE : SHA1_DIGEST_SIZE;
}

void scram_salted_password(enum scram_hash h, const char *password, size_t pwlen,
                           const uint8_t *salt, size_t saltlen, unsigned iter,
                           uint8_t *out)
{
    if (h == SCRAM_SHA256)
        pbkdf2_hmac_sha256(pwlen, (const uint8_t *)password, iter, saltlen, salt,
                           SHA256_DIGEST_SIZE, out);
    else
        pbkdf2_hmac_sha1(pwlen, (const uint8_t *)password, iter, saltlen, salt,
                         SHA1_DIGEST_SIZE, out);
}

void scram_hmac(enum scram_hash h, const uint8_t *key, size_t keylen,
                       const void *msg, size_t len, uint8_t *out)
{
    if (h == SCRAM_SHA256) {
        struct hmac_sha256_ctx c;
        hmac_sha256_set_key(&c, keylen, key);
        hmac_sha256_update(&c, len, msg);
        hmac_sha256_digest(&c, SHA256_DIGEST_SIZE, out);
    } else {
        struct hmac_sha1_ctx c;
        hmac_sha1_set_key(&c, keylen, key);
        hmac_sha1_update(&c, len, msg);
        hmac_sha1_digest(&c, SHA1_DIGEST_SIZE, out);
    }
}

void scram_digest(enum scram_hash h, const uint8_t *in, size_t len, uint8_t *out)
{
    if (h == SCRAM_SHA256) {
        struct sha256_ctx c;
        sha256_init(&c);
        sha256_update(&c, len, in);
        sha256_digest(&c, SHA256_DIGEST_SIZE, out);
    } else {
        struct sha1_ctx c;
        sha1_init(&c);
        sha1_update(&c, len, in);
        sha1_digest(&c, SHA1_DIGEST_SIZE, out);
    }
}

void scram_keys(enum scram_hash h, const uint8_t *salted,
                uint8_t *stored_key, uint8_t *server_key)
{
    size_t dl = scram_digest_len(h);
    uint8_t client_key[SCRAM_MAX_DIGEST];

    scram_hmac(h, salted, dl, "Client Key", 10, client_key);
    scram_digest(h, client_key, dl, stored_key);
    scram_hmac(h, salted, dl, "Server Key", 10, server_key);
}

void scram_cred_make(struct scram_cred *c, enum scram_hash h, const char *password, unsigned iter)
{
    uint8_t salted[SCRAM_MAX_DIGEST];

    memset(c, 0, sizeof(*c));
    c->hash = h;
    c->saltlen = 16;
    c->iter = iter;
    sb_random(c->salt, c->saltlen);
    scram_salted_password(h, password, strlen(password), c->salt, c->saltlen, iter, salted);
    scram_keys(h, salted, c->stored_key, c->server_key);
}

int scram_cred_check_password(const struct scram_cred *c, const char *password, size_t pwlen)
{
    uint8_t salted[SCRAM_MAX_DIGEST], stored[SCRAM_MAX_DIGEST], server[SCRAM_MAX_DIGEST];
    size_t dl = scram_digest_len(c->hash);

    scram_salted_password(c->hash, password, pwlen, c->salt, c->saltlen, c->iter, salted);
    scram_keys(c->hash, salted, stored, server);
    /* both compares always run: no early exit on the first mismatch */
    int ok = memeql_sec(stored, c->stored_key, dl);
    ok &= memeql_sec(server, c->server_key, dl);
    return ok;
}

/* ---- helpers ---------------------------------------------------------------- */

void auth_b64_encode(const uint8_t *in, size_t n, char *out)
{
    base64_encode_raw(out, n, in);
    out[BASE64_ENCODE_RAW_LENGTH(n)] = '\0';
}

sb_rc auth_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    struct base64_decode_ctx ctx;
    size_t n = 0;

    /* strict: whole groups of four, only the alphabet, '=' only as the
     * final padding (RFC 6120 §6.4.2, RFC 4648 §3.3). Nettle itself skips
     * any white space, \f and \v included, so it cannot be left to check. */
    if (len % 4 != 0)
        return SB_ERROR;
    size_t pad = 0;
    while (pad < 2 && pad < len && in[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++) {
        char ch = in[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return SB_ERROR;
    }
    if (BASE64_DECODE_LENGTH(len) > cap) {
        /* the exact size may still fit; decode into a scratch buffer */
        uint8_t *tmp = malloc(BASE64_DECODE_LENGTH(len) + 1);
        if (!tmp)
            return SB_ERROR;
        sb_rc rc = auth_b64_decode(in, len, tmp, BASE64_DECODE_LENGTH(len) + 1, &n);
        if (rc == SB_OK && n <= cap)
            memcpy(out, tmp, n);
        else
            rc = SB_ERROR;
        free(tmp);
        *outlen = n;
        return rc;
    }
    base64_decode_init(&ctx);
    if (!base64_decode_update(&ctx, &n, out, len, in) || !base64_decode_final(&ctx))
        return SB_ERROR;
    *outlen = n;
    return SB_OK;
}

sb_rc auth_saslprep(const char *in, char **out)
{
    *out = NULL;
    if (stringprep_profile(in, out, "SASLprep", 0) != STRINGPREP_OK) {
        free(*out);
        *out = NULL;
        return SB_ERROR;
    }
    return SB_OK;
}
