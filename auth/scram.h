/* scram.h — SCRAM primitives (RFC 5802, RFC 7677) over nettle: key
 * derivation for storage and the server side of one exchange. Only the
 * salted keys (StoredKey, ServerKey) are ever stored; never a password. */
#ifndef SB_SCRAM_H
#define SB_SCRAM_H

#include "sb.h"

enum scram_hash { SCRAM_SHA1 = 1, SCRAM_SHA256 = 2 };
#define SCRAM_MAX_DIGEST 32

size_t scram_digest_len(enum scram_hash h);

/* Hi() = PBKDF2; then ClientKey, StoredKey = H(ClientKey), ServerKey. */
void scram_salted_password(enum scram_hash h, const char *password, size_t pwlen,
                           const uint8_t *salt, size_t saltlen, unsigned iter,
                           uint8_t *out);
void scram_keys(enum scram_hash h, const uint8_t *salted,
                uint8_t *stored_key, uint8_t *server_key);

/* Stored credentials for one hash (binary keys, salt). */
struct scram_cred {
    enum scram_hash hash;
    uint8_t salt[64];
    size_t saltlen;
    unsigned iter;
    uint8_t stored_key[SCRAM_MAX_DIGEST];
    uint8_t server_key[SCRAM_MAX_DIGEST];
};

/* Derive a fresh credential with a random 16-byte salt. */
void scram_cred_make(struct scram_cred *c, enum scram_hash h, const char *password, unsigned iter);

/* Check a plaintext password (SASL PLAIN) against stored keys. Constant-time compare. */
int scram_cred_check_password(const struct scram_cred *c, const char *password, size_t pwlen);

#endif
