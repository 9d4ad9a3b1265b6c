/* tokens.c — the client side of the token mechanisms of the login storm:
 * X-OAUTH2 with the server's own tokens (read from --token-file, one
 * "USER_NUMBER TOKEN" line each, made beforehand with `sbctl token issue`),
 * OAUTHBEARER with a JWT this generator signs itself (HS256 with the
 * --jwt-key secret, as an identity provider would; the server holds the
 * same secret), and XEP-0484 FAST: the token a first SASL2 login asked for
 * (<request-token/>), then its HT-SHA-256-NONE proof at every login. Only
 * HMACs here: cheap next to the server's work. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nettle/base64.h>
#include <nettle/hmac.h>

#include "sbbench.h"

static char **tokens;              /* by user number */
static long long *fast_counts;     /* FAST count per user number */
static size_t ntokens;
static uint8_t jwt_key[1024];
static size_t jwt_key_len;

static int slot_grow(int user)
{
    if (user < 0)
        return -1;
    if ((size_t)user < ntokens)
        return 0;
    size_t n = ntokens ? ntokens : 1024;
    while (n <= (size_t)user)
        n *= 2;
    char **t = realloc(tokens, n * sizeof(*t));
    if (!t)
        return -1;
    tokens = t;
    long long *c = realloc(fast_counts, n * sizeof(*c));
    if (!c)
        return -1;
    fast_counts = c;
    memset(tokens + ntokens, 0, (n - ntokens) * sizeof(*tokens));
    memset(fast_counts + ntokens, 0, (n - ntokens) * sizeof(*fast_counts));
    ntokens = n;
    return 0;
}

int sbb_token_set(int user, const char *token, size_t len)
{
    if (slot_grow(user) < 0)
        return -1;
    char *t = strndup(token, len);
    if (!t)
        return -1;
    free(tokens[user]);
    tokens[user] = t;
    fast_counts[user] = 0;
    return 0;
}

const char *sbb_token_get(int user)
{
    return user >= 0 && (size_t)user < ntokens ? tokens[user] : NULL;
}

int sbb_token_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512], tok[400];
    int user, n = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "%d %399s", &user, tok) == 2 && sbb_token_set(user, tok, strlen(tok)) == 0)
            n++;
    fclose(f);
    return n;
}

int sbb_jwt_key_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    jwt_key_len = fread(jwt_key, 1, sizeof(jwt_key), f);
    fclose(f);
    /* the server strips trailing line ends too (auth/jwt.c) */
    while (jwt_key_len && (jwt_key[jwt_key_len - 1] == '\n' || jwt_key[jwt_key_len - 1] == '\r'))
        jwt_key_len--;
    return jwt_key_len ? 0 : -1;
}

/* base64url without padding (RFC 7515 §2) */
static size_t b64url(const uint8_t *in, size_t n, char *out)
{
    base64_encode_raw(out, n, in);
    size_t l = BASE64_ENCODE_RAW_LENGTH(n);
    while (l && out[l - 1] == '=')
        l--;
    for (size_t i = 0; i < l; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[l] = 0;
    return l;
}

int sbb_jwt_make(const char *sub, char *out, size_t cap)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char payload[400], sig64[64];
    long now = (long)time(NULL);
    if (!jwt_key_len)
        return -1;                  /* no --jwt-key */
    int pl = snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"iat\":%ld,\"exp\":%ld}", sub,
                      now, now + 3600);
    if (pl <= 0 || (size_t)pl >= sizeof(payload) ||
        cap < BASE64_ENCODE_RAW_LENGTH(sizeof(header) + (size_t)pl) + 64)
        return -1;
    size_t l = b64url((const uint8_t *)header, sizeof(header) - 1, out);
    out[l++] = '.';
    l += b64url((const uint8_t *)payload, (size_t)pl, out + l);
    struct hmac_sha256_ctx h;
    uint8_t sig[SHA256_DIGEST_SIZE];
    hmac_sha256_set_key(&h, jwt_key_len, jwt_key);
    hmac_sha256_update(&h, l, (const uint8_t *)out);
    hmac_sha256_digest(&h, sizeof(sig), sig);
    b64url(sig, sizeof(sig), sig64);
    if (l + 1 + strlen(sig64) + 1 > cap)
        return -1;
    out[l++] = '.';
    strcpy(out + l, sig64);
    return 0;
}

/* HT-SHA-256-NONE initial response: authcid NUL HMAC-SHA-256(token, "Initiator")
 * (XEP-0484 §3.2; no channel binding data for -NONE). */
int sbb_fast_response(int user, const char *name, char *out, size_t cap, long long *count)
{
    const char *tok = sbb_token_get(user);
    if (!tok)
        return -1;
    uint8_t raw[300];
    size_t nl = strlen(name);
    if (nl + 1 + SHA256_DIGEST_SIZE > sizeof(raw) ||
        BASE64_ENCODE_RAW_LENGTH(nl + 1 + SHA256_DIGEST_SIZE) + 1 > cap)
        return -1;
    memcpy(raw, name, nl);
    raw[nl] = 0;
    struct hmac_sha256_ctx h;
    hmac_sha256_set_key(&h, strlen(tok), (const uint8_t *)tok);
    hmac_sha256_update(&h, 9, (const uint8_t *)"Initiator");
    hmac_sha256_digest(&h, SHA256_DIGEST_SIZE, raw + nl + 1);
    size_t rl = nl + 1 + SHA256_DIGEST_SIZE;
    base64_encode_raw(out, rl, raw);
    out[BASE64_ENCODE_RAW_LENGTH(rl)] = 0;
    *count = ++fast_counts[user];   /* each use counts up (XEP-0484 §3.4 replay guard) */
    return 0;
}
