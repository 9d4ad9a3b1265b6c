/* fuzz_sasl.c — the server side of SASL (auth/sasl.c): PLAIN, SCRAM-SHA-1,
 * SCRAM-SHA-256 and ANONYMOUS over a fixed in-memory credential store
 * (every account has the password "pencil", except "nobody", which does
 * not exist and gets the fake credentials).
 *
 * Input: one flag byte, then the client's messages separated by \x01.
 *   flags & 3     mechanism: SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, ANONYMOUS
 *   flags & 4     messages are sent as they are (not base64-encoded first)
 *   flags & 8     a client-final ending in ",p=" gets the correct proof
 *                 appended, so the success path and its server signature
 *                 are reached too
 *   flags & 16    the stream's domain is anonymous
 * Checks: the result callback runs once per step, a success names a user
 * and comes with valid base64, a challenge is valid base64. */
#include "fuzz.h"
#include "auth-int.h"

#include <nettle/memxor.h>

static struct auth_cred cred;
static struct auth_store *store;
static int calls;
static struct sasl_result last;
static char last_data[8192], last_user[1100];

static sb_rc fake_lookup(void *ud, const char *domain, const char *username,
                         auth_store_cb cb, void *arg)
{
    static const struct auth_cred none = {0};
    cb(arg, strcmp(username, "nobody") == 0 ? &none : &cred);
    return SB_OK;
}

static void put_cred(struct scram_cred *c, enum scram_hash h)
{
    uint8_t salted[SCRAM_MAX_DIGEST];
    c->hash = h;
    c->iter = 2;                     /* cheap: the fuzzer runs this a million times */
    c->saltlen = 16;
    memset(c->salt, 0x5a, c->saltlen);
    scram_salted_password(h, "pencil", 6, c->salt, c->saltlen, c->iter, salted);
    scram_keys(h, salted, c->stored_key, c->server_key);
}

static void on_result(void *ud, const struct sasl_result *r)
{
    calls++;
    last = *r;
    snprintf(last_data, sizeof last_data, "%s", r->data_b64 ? r->data_b64 : "");
    snprintf(last_user, sizeof last_user, "%s", r->username ? r->username : "");
}

static int b64_ok(const char *s)
{
    size_t n = strlen(s);
    uint8_t *out = malloc(n + 1);
    size_t got;
    int ok = auth_b64_decode(s, n, out, n + 1, &got) == SB_OK;
    free(out);
    return ok;
}

/* The ClientProof for this exchange: ClientKey XOR HMAC(StoredKey, AuthMessage). */
static void add_proof(enum scram_hash h, const char *first, const char *server_first,
                      char **final, size_t *len)
{
    const char *bare = strchr(first, ',');
    bare = bare ? strchr(bare + 1, ',') : NULL;
    if (!bare)
        return;
    bare++;
    size_t dl = scram_digest_len(h);
    uint8_t salted[SCRAM_MAX_DIGEST], ckey[SCRAM_MAX_DIGEST], skey[SCRAM_MAX_DIGEST];
    uint8_t sig[SCRAM_MAX_DIGEST];
    const struct scram_cred *c = h == SCRAM_SHA1 ? &cred.sha1 : &cred.sha256;
    scram_salted_password(h, "pencil", 6, c->salt, c->saltlen, c->iter, salted);
    scram_hmac(h, salted, dl, "Client Key", 10, ckey);
    scram_digest(h, ckey, dl, skey);
    size_t without = *len - 3;      /* client-final-without-proof: before ",p=" */
    size_t am_len = strlen(bare) + 1 + strlen(server_first) + 1 + without;
    char *am = malloc(am_len + 1);
    FUZZ_CHECK(am);
    snprintf(am, am_len + 1, "%s,%s,%.*s", bare, server_first, (int)without, *final);
    scram_hmac(h, skey, dl, am, am_len, sig);
    memxor(sig, ckey, dl);
    free(am);
    char b64[64];
    auth_b64_encode(sig, dl, b64);
    char *f = malloc(*len + strlen(b64) + 1);
    FUZZ_CHECK(f);
    memcpy(f, *final, *len);
    strcpy(f + *len, b64);
    free(*final);
    *final = f;
    *len = strlen(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const mechs[] = {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "ANONYMOUS"};
    if (!store) {
        fuzz_quiet();
        cred.found = cred.has_sha1 = cred.has_sha256 = 1;
        put_cred(&cred.sha1, SCRAM_SHA1);
        put_cred(&cred.sha256, SCRAM_SHA256);
        store = auth_store_new_fn(fake_lookup, NULL);
        FUZZ_CHECK(store);
    }
    if (size > 8192)
        return 0;
    struct fuzz_in in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    const char *mech = mechs[flags & 3];
    enum scram_hash h = (flags & 3) == 1 ? SCRAM_SHA1 : SCRAM_SHA256;
    struct sasl_opts o = {.domain = "localhost", .tls = 1, .anonymous = (flags & 16) != 0};
    calls = 0;
    struct sasl_sess *s = sasl_new(store, &o, on_result, NULL);
    FUZZ_CHECK(s);
    sasl_test_set_nonce(s, "fuzzservernonce");
    char *first = NULL, server_first[4096] = "";
    for (int step = 0; step < 4; step++) {
        size_t len;
        char *msg = fuzz_piece(&in, "\x01", &len);
        if (step == 1 && (flags & 8) && first && len >= 3 && !strcmp(msg + len - 3, ",p="))
            add_proof(h, first, server_first, &msg, &len);
        char *b64 = msg;
        if (!(flags & 4)) {
            b64 = malloc((len + 2) / 3 * 4 + 1);
            FUZZ_CHECK(b64);
            auth_b64_encode((const uint8_t *)msg, len, b64);
        }
        int before = calls;
        if (step == 0)
            sasl_start(s, mech, b64);
        else
            sasl_step(s, b64);
        FUZZ_CHECK(calls == before + 1);     /* the store answers inside: one result */
        if (step == 0)
            first = strdup(msg);
        if (b64 != msg)
            free(b64);
        free(msg);
        if (last.status == SASL_SUCCESS) {
            FUZZ_CHECK(*last_user);
            FUZZ_CHECK(!*last_data || b64_ok(last_data));
            break;
        }
        if (last.status == SASL_FAILURE) {
            FUZZ_CHECK(last.condition && *last.condition);
            break;
        }
        FUZZ_CHECK(b64_ok(last_data));
        if (step == 0) {
            size_t n;
            if (auth_b64_decode(last_data, strlen(last_data), (uint8_t *)server_first,
                                sizeof server_first - 1, &n) != SB_OK)
                n = 0;
            server_first[n] = '\0';
        }
        if (!in.n && step > 0)
            break;
    }
    free(first);
    sasl_free(s);
    return 0;
}
