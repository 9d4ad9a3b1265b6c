/* pure.c — the parts of s2s without IO, unit-tested on their own
 * (tests/unit/test_s2s.c) and fuzzed (tests/fuzz/fuzz_s2s.c): XEP-0185
 * dialback keys and their comparison, the RFC 2782 order of SRV targets,
 * the stream header checks and the namespace of an element. */
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

/* ---- keys, headers, names ----------------------------------------------- */

int s2s_db_key_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = (unsigned)(la ^ lb);
    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned)(a[i] ^ b[i]);
    return diff == 0;
}

/* Namespace and version checks shared by both directions; NULL when fine. */
const char *s2s_stream_check_header(const struct xml_node *hdr)
{
    if (strcmp(hdr->name, "stream:stream") != 0)
        return strchr(hdr->name, ':') ? "invalid-namespace" : "bad-format";
    const char *v = xml_attr(hdr, "xmlns:stream");
    if (!v || strcmp(v, S2S_NS_STREAM) != 0)
        return "invalid-namespace";
    v = xml_attr(hdr, "xmlns");
    if (!v || strcmp(v, S2S_NS_SERVER) != 0)
        return "invalid-namespace";
    if (!xml_stream_version_ok(xml_attr(hdr, "version")))
        return "unsupported-version";
    return NULL;
}

const char *s2s_local_name(const char *name)
{
    const char *colon = strchr(name, ':');
    return colon ? colon + 1 : name;
}

int s2s_elem_ns(const struct xml_node *n, const char *ns)
{
    const char *colon = strchr(n->name, ':');
    if (!colon) {
        const char *x = xml_attr(n, "xmlns");
        return x ? strcmp(x, ns) == 0 : strcmp(ns, S2S_NS_SERVER) == 0;
    }
    char attr[80];
    size_t plen = (size_t)(colon - n->name);
    if (plen + 7 >= sizeof attr)
        return 0;
    memcpy(attr, "xmlns:", 6);
    memcpy(attr + 6, n->name, plen);
    attr[6 + plen] = '\0';
    const char *x = xml_attr(n, attr);
    if (x)
        return strcmp(x, ns) == 0;
    /* Bound on the stream header: the customary prefixes. */
    if (plen == 2 && !memcmp(n->name, "db", 2))
        return strcmp(ns, S2S_NS_DB) == 0;
    if (plen == 6 && !memcmp(n->name, "stream", 6))
        return strcmp(ns, S2S_NS_STREAM) == 0;
    return 0;
}
