/* pure.c — the parts of s2s without IO, unit-tested on their own
 * (tests/unit/test_s2s.c): XEP-0185 dialback keys and the
 * RFC 2782 order of SRV targets. */
#include "s2s.h"

#include <ctype.h>
#include <nettle/hmac.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PURE_MAX_TARGETS 32

void s2s_db_key(const char *secret, const char *receiving, const char *originating,
                const char *id, char out[65])
{
    uint8_t k[SHA256_DIGEST_SIZE], mac[SHA256_DIGEST_SIZE];
    struct sha256_ctx sh;
    sha256_init(&sh);
    sha256_update(&sh, strlen(secret), (const uint8_t *)secret);
    sha256_digest(&sh, sizeof k, k);
    /* The key of the HMAC is the hex form of SHA-256(secret), as in the
     * XEP-0185 example. */
    char khex[2 * SHA256_DIGEST_SIZE + 1];
    for (size_t i = 0; i < sizeof k; i++)
        snprintf(khex + 2 * i, 3, "%02x", k[i]);
    struct hmac_sha256_ctx h;
    hmac_sha256_set_key(&h, strlen(khex), (const uint8_t *)khex);
    hmac_sha256_update(&h, strlen(receiving), (const uint8_t *)receiving);
    hmac_sha256_update(&h, 1, (const uint8_t *)" ");
    hmac_sha256_update(&h, strlen(originating), (const uint8_t *)originating);
    hmac_sha256_update(&h, 1, (const uint8_t *)" ");
    hmac_sha256_update(&h, strlen(id), (const uint8_t *)id);
    hmac_sha256_digest(&h, sizeof mac, mac);
    for (size_t i = 0; i < sizeof mac; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

void s2s_dns_sort(struct s2s_target *t, const int *prio, const int *weight, int n)
{
    struct s2s_target tmp[PURE_MAX_TARGETS];
    int p[PURE_MAX_TARGETS], w[PURE_MAX_TARGETS], used[PURE_MAX_TARGETS] = {0};
    if (n > PURE_MAX_TARGETS)
        n = PURE_MAX_TARGETS;
    memcpy(p, prio, (size_t)n * sizeof *p);
    memcpy(w, weight, (size_t)n * sizeof *w);
    int out = 0;
    while (out < n) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!used[i] && (best < 0 || p[i] < p[best]))
                best = i;
        /* Weighted random pick among the records of the lowest priority;
         * weight 0 records get a small chance so they are still ordered. */
        long total = 0;
        for (int i = 0; i < n; i++)
            if (!used[i] && p[i] == p[best])
                total += w[i] + 1;
        uint32_t rnd;
        sb_random(&rnd, sizeof rnd);
        long pick = (long)(rnd % (uint32_t)total), run = 0;
        int chosen = best;
        for (int i = 0; i < n; i++) {
            if (used[i] || p[i] != p[best])
                continue;
            run += w[i] + 1;
            if (pick < run) {
                chosen = i;
                break;
            }
        }
        used[chosen] = 1;
        tmp[out++] = t[chosen];
    }
    memcpy(t, tmp, (size_t)n * sizeof *t);
}
