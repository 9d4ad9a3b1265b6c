/* scram.c — the client side of SCRAM-SHA-1 (RFC 5802) and SCRAM-SHA-256
 * (RFC 7677), with tls-exporter channel binding (RFC 9266) for -PLUS, for
 * the load generator. PBKDF2 (thousands of HMACs) would make the generator, not the
 * server, the bottleneck of a login storm, so the derived keys are cached
 * per user (as real clients store them) and optionally kept in a file across
 * runs, keyed by salt and iteration count so a changed account re-derives. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

#include <nettle/base64.h>
#include <nettle/hmac.h>
#include <nettle/pbkdf2.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>

#include "sbbench.h"

#define SALT_MAX 96
struct keys {
    int iter;                      /* 0: empty slot */
    char salt[SALT_MAX];           /* base64, as the server sent it */
    uint8_t client[32], stored[32], server[32];
};

/* SCRAM-SHA-1 (20-byte digests) or, with --mech scram-sha-256, SCRAM-SHA-256 */
#define DL (sbb_opt.sha256 ? SHA256_DIGEST_SIZE : SHA1_DIGEST_SIZE)

static struct keys *cache;
static size_t ncache;
static long derived;

struct scram_st {
    char bare[320];                /* client-first-message-bare */
    char nonce[40];
    char sig[64];                  /* expected server signature, base64 */
    char gs2[32];                  /* "n,," or "p=tls-exporter,," */
    uint8_t cb[64];                /* channel binding data (-PLUS) */
    size_t cbl;
};

long sbb_scram_derived(void)
{
    return derived;
}

static struct keys *keys_slot(int user)
{
    if (user < 0)
        return NULL;
    if ((size_t)user >= ncache) {
        size_t n = ncache ? ncache : 1024;
        while (n <= (size_t)user)
            n *= 2;
        struct keys *k = realloc(cache, n * sizeof(*k));
        if (!k)
            return NULL;
        memset(k + ncache, 0, (n - ncache) * sizeof(*k));
        cache = k;
        ncache = n;
    }
    return &cache[user];
}

static void b64enc(const uint8_t *in, size_t n, char *out)
{
    base64_encode_raw(out, n, in);
    out[BASE64_ENCODE_RAW_LENGTH(n)] = 0;
}

static long b64dec(const char *in, size_t n, uint8_t *out, size_t cap)
{
    struct base64_decode_ctx ctx;
    size_t ol = cap;
    if (BASE64_DECODE_LENGTH(n) > cap)
        return -1;
    base64_decode_init(&ctx);
    if (!base64_decode_update(&ctx, &ol, out, n, in) || !base64_decode_final(&ctx))
        return -1;
    return (long)ol;
}

static void hmac(const uint8_t *key, size_t kl, const void *msg, size_t ml, uint8_t *out)
{
    if (sbb_opt.sha256) {
        struct hmac_sha256_ctx h;
        hmac_sha256_set_key(&h, kl, key);
        hmac_sha256_update(&h, ml, msg);
        hmac_sha256_digest(&h, SHA256_DIGEST_SIZE, out);
        return;
    }
    struct hmac_sha1_ctx h;
    hmac_sha1_set_key(&h, kl, key);
    hmac_sha1_update(&h, ml, msg);
    hmac_sha1_digest(&h, SHA1_DIGEST_SIZE, out);
}

static void hash(const uint8_t *in, size_t n, uint8_t *out)
{
    if (sbb_opt.sha256) {
        struct sha256_ctx c;
        sha256_init(&c);
        sha256_update(&c, n, in);
        sha256_digest(&c, SHA256_DIGEST_SIZE, out);
        return;
    }
    struct sha1_ctx c;
    sha1_init(&c);
    sha1_update(&c, n, in);
    sha1_digest(&c, SHA1_DIGEST_SIZE, out);
}

int sbb_scram_first(int user, const char *name, const uint8_t *cb, size_t cbl, char **stp,
                    char *out, size_t cap)
{
    struct scram_st *st = calloc(1, sizeof(*st));
    uint8_t rnd[18];
    if (!st || cbl > sizeof(st->cb) || getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        free(st);
        return -1;
    }
    snprintf(st->gs2, sizeof(st->gs2), "%s", cb ? "p=tls-exporter,," : "n,,");
    if (cb)
        memcpy(st->cb, cb, cbl);
    st->cbl = cbl;
    b64enc(rnd, sizeof(rnd), st->nonce);
    /* user names of the bench have no ',' or '=' to escape */
    snprintf(st->bare, sizeof(st->bare), "n=%s,r=%s", name, st->nonce);
    char gs2[400];
    int n = snprintf(gs2, sizeof(gs2), "%s%s", st->gs2, st->bare);
    if ((size_t)BASE64_ENCODE_RAW_LENGTH(n) + 1 > cap) {
        free(st);
        return -1;
    }
    b64enc((const uint8_t *)gs2, (size_t)n, out);
    free(*stp);
    *stp = (char *)st;
    return 0;
}

/* Parse "r=..,s=..,i=.." into its parts (pointers into sf, NUL-split). */
static int server_first(char *sf, char **r, char **s, int *i)
{
    *r = *s = NULL;
    *i = 0;
    for (char *tok = strtok(sf, ","); tok; tok = strtok(NULL, ",")) {
        if (tok[0] == 'r' && tok[1] == '=')
            *r = tok + 2;
        else if (tok[0] == 's' && tok[1] == '=')
            *s = tok + 2;
        else if (tok[0] == 'i' && tok[1] == '=')
            *i = atoi(tok + 2);
    }
    return *r && *s && *i > 0 && strlen(*s) < SALT_MAX ? 0 : -1;
}

static int keys_get(int user, const char *password, const char *salt64, int iter, struct keys **out)
{
    struct keys *k = keys_slot(user);
    if (!k)
        return -1;
    if (k->iter == iter && strcmp(k->salt, salt64) == 0) {
        *out = k;
        return 0;
    }
    uint8_t salt[SALT_MAX], salted[32];
    long sl = b64dec(salt64, strlen(salt64), salt, sizeof(salt));
    if (sl <= 0)
        return -1;
    if (sbb_opt.sha256)
        pbkdf2_hmac_sha256(strlen(password), (const uint8_t *)password, (unsigned)iter,
                           (size_t)sl, salt, DL, salted);
    else
        pbkdf2_hmac_sha1(strlen(password), (const uint8_t *)password, (unsigned)iter,
                         (size_t)sl, salt, DL, salted);
    derived++;
    hmac(salted, DL, "Client Key", 10, k->client);
    hash(k->client, DL, k->stored);
    hmac(salted, DL, "Server Key", 10, k->server);
    k->iter = iter;
    snprintf(k->salt, sizeof(k->salt), "%s", salt64);
    *out = k;
    return 0;
}

int sbb_scram_final(int user, const char *password, char *stp, const char *b64, size_t len,
                    char *out, size_t cap)
{
    struct scram_st *st = (struct scram_st *)stp;
    uint8_t raw[512];
    long rl = st ? b64dec(b64, len, raw, sizeof(raw) - 1) : -1;
    if (rl <= 0)
        return -1;
    raw[rl] = 0;
    char sf[512], *r, *s;
    int iter;
    memcpy(sf, raw, (size_t)rl + 1);
    if (server_first(sf, &r, &s, &iter) < 0 || strncmp(r, st->nonce, strlen(st->nonce)) != 0)
        return -1;
    struct keys *k;
    if (keys_get(user, password, s, iter, &k) < 0)
        return -1;
    /* c= is base64(gs2 header + binding data): "biws" without binding */
    uint8_t cbin[sizeof(st->gs2) + sizeof(st->cb)];
    size_t gl = strlen(st->gs2);
    memcpy(cbin, st->gs2, gl);
    memcpy(cbin + gl, st->cb, st->cbl);
    char c64[BASE64_ENCODE_RAW_LENGTH(sizeof(cbin)) + 1];
    b64enc(cbin, gl + st->cbl, c64);
    char without[400], auth[1400];
    snprintf(without, sizeof(without), "c=%s,r=%s", c64, r);
    int al = snprintf(auth, sizeof(auth), "%s,%s,%s", st->bare, (char *)raw, without);
    if (al <= 0 || (size_t)al >= sizeof(auth))
        return -1;
    uint8_t sig[32], proof[32], ssig[32];
    hmac(k->stored, DL, auth, (size_t)al, sig);
    for (int i = 0; i < DL; i++)
        proof[i] = k->client[i] ^ sig[i];
    hmac(k->server, DL, auth, (size_t)al, ssig);
    b64enc(ssig, DL, st->sig);
    char p64[48], final[512];
    b64enc(proof, DL, p64);
    int fl = snprintf(final, sizeof(final), "%s,p=%s", without, p64);
    if ((size_t)BASE64_ENCODE_RAW_LENGTH(fl) + 1 > cap)
        return -1;
    b64enc((const uint8_t *)final, (size_t)fl, out);
    return 0;
}

int sbb_scram_verify(const char *stp, const char *b64, size_t len)
{
    const struct scram_st *st = (const struct scram_st *)stp;
    uint8_t raw[256];
    long rl = st ? b64dec(b64, len, raw, sizeof(raw) - 1) : -1;
    if (rl < 3)
        return -1;
    raw[rl] = 0;
    return raw[0] == 'v' && raw[1] == '=' && strcmp((char *)raw + 2, st->sig) == 0 ? 0 : -1;
}

/* ---- cache file: "user iter salt client stored server" (keys in hex) ---- */

static void hex(const uint8_t *k, char *out)
{
    for (int i = 0; i < DL; i++)
        sprintf(out + 2 * i, "%02x", k[i]);
}

static int unhex(const char *s, uint8_t *k)
{
    if (strlen(s) != 2 * (size_t)DL)
        return -1;                  /* a cache of the other mechanism */
    for (int i = 0; i < DL; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        k[i] = (uint8_t)v;
    }
    return 0;
}

void sbb_scram_load(const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return;
    char line[512], salt[SALT_MAX], c[72], st[72], sv[72];
    int user, iter;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%d %d %95s %71s %71s %71s", &user, &iter, salt, c, st, sv) != 6)
            continue;
        struct keys *k = keys_slot(user);
        if (k && k->iter)
            continue;               /* ours is newer (or the same) */
        if (!k || unhex(c, k->client) || unhex(st, k->stored) || unhex(sv, k->server)) {
            if (k)
                k->iter = 0;
            continue;
        }
        k->iter = iter;
        snprintf(k->salt, sizeof(k->salt), "%s", salt);
    }
    fclose(f);
}

void sbb_scram_save(const char *path)
{
    if (!path || !derived)
        return;
    /* several workers may save at once: merge under a lock */
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.lock", path);
    int lock = open(tmp, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (lock >= 0)
        flock(lock, LOCK_EX);
    sbb_scram_load(path);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        if (lock >= 0)
            close(lock);
        return;
    }
    char c[65], st[65], sv[65];
    for (size_t u = 0; u < ncache; u++) {
        const struct keys *k = &cache[u];
        if (!k->iter)
            continue;
        hex(k->client, c);
        hex(k->stored, st);
        hex(k->server, sv);
        fprintf(f, "%zu %d %s %s %s %s\n", u, k->iter, k->salt, c, st, sv);
    }
    if (fclose(f) == 0)
        rename(tmp, path);
    else
        unlink(tmp);
    if (lock >= 0)
        close(lock);
}
