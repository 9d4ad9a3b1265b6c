/* fuzz_base64.c — the base64 of SASL (auth/scram.c over nettle): the
 * strict decoder on any text, and encode → decode on any bytes. Checks: a
 * decode never writes past cap, an accepted text is whole groups with the
 * length it promises, and re-encoding what was decoded decodes to the same
 * bytes; bytes encoded decode back to themselves. */
#include "fuzz.h"
#include "auth-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet();
        init = 1;
    }
    if (size > 65536)
        return 0;
    size_t cap = size ? data[0] : 0;        /* a caller's buffer, sometimes too small */
    uint8_t *out = malloc(cap + 1), *out2 = malloc(size + 1);
    char *enc = malloc((size + 2) / 3 * 4 + 1);
    FUZZ_CHECK(out && out2 && enc);
    size_t n = 0, n2 = 0;

    if (auth_b64_decode((const char *)data, size, out, cap, &n) == SB_OK) {
        FUZZ_CHECK(size % 4 == 0 && n <= cap);
        size_t pad = 0;
        while (pad < size && pad < 2 && data[size - 1 - pad] == '=')
            pad++;
        FUZZ_CHECK(n == size / 4 * 3 - pad);
        auth_b64_encode(out, n, enc);
        FUZZ_CHECK(strlen(enc) == size);
        FUZZ_CHECK(auth_b64_decode(enc, strlen(enc), out2, size, &n2) == SB_OK);
        FUZZ_CHECK(n2 == n && memcmp(out, out2, n) == 0);
    }

    auth_b64_encode(data, size, enc);
    FUZZ_CHECK(strlen(enc) == (size + 2) / 3 * 4);
    FUZZ_CHECK(auth_b64_decode(enc, strlen(enc), out2, size, &n2) == SB_OK);
    FUZZ_CHECK(n2 == size && memcmp(out2, data, size) == 0);
    free(out);
    free(out2);
    free(enc);
    return 0;
}
