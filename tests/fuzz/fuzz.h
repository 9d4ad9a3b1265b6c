/* fuzz.h — what every libFuzzer target of tests/fuzz/ shares: logging off
 * (log lines would drown libFuzzer's own output and slow every run), an
 * always-on check that aborts with the reason (libFuzzer keeps the input),
 * and a reader that splits one input into the pieces a target needs. */
#ifndef SB_FUZZ_H
#define SB_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define FUZZ_CHECK(cond)                                                           \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                               \
        }                                                                          \
    } while (0)

static inline void fuzz_quiet(void)
{
    sb_log_init("fuzz", SB_LOG_ERROR);
    sb_log_set_level((sb_log_level)(SB_LOG_ERROR + 1));
}

/* Consume the input piece by piece. */
struct fuzz_in {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t fuzz_byte(struct fuzz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

/* The next piece up to (not including) `sep`, or the rest; copied into a
 * fresh NUL-terminated heap string (free()). */
static inline char *fuzz_piece(struct fuzz_in *in, const char *sep, size_t *len)
{
    size_t sl = strlen(sep), n = in->n, skip = 0;
    for (size_t i = 0; i + sl <= in->n; i++) {
        if (memcmp(in->p + i, sep, sl) == 0) {
            n = i;
            skip = sl;
            break;
        }
    }
    char *s = malloc(n + 1);
    FUZZ_CHECK(s);
    memcpy(s, in->p, n);
    s[n] = '\0';
    if (len)
        *len = n;
    in->p += n + skip;
    in->n -= n + skip;
    return s;
}

#endif
