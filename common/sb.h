/* sb.h — the one vocabulary of results shared by every Switchboard module,
 * plus tiny helpers every file wants. Functions that can fail return sb_rc;
 * pointers return NULL on failure. */
#ifndef SB_H
#define SB_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SB_OK       =  0,   /* done */
    SB_ERROR    = -1,   /* failed; the caller reports or closes */
    SB_AGAIN    = -2,   /* not yet: call again when more input/IO arrives */
    SB_DECLINED = -3,   /* not mine: let the next handler try */
    SB_DONE     = -4,   /* finished and consumed; nothing more to do */
    SB_LIMIT    = -5,   /* a configured limit was exceeded */
} sb_rc;

const char *sb_rc_name(sb_rc rc);

#define SB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SB_UNUSED(x) ((void)(x))

/* Fill buf with n bytes from the kernel CSPRNG (getrandom). Aborts on
 * failure: a server that cannot get randomness must not make ids. */
void sb_random(void *buf, size_t n);

/* Comparing a presented secret with a configured one (bearer tokens):
 * both are reduced to SHA-256 digests and the digests compared in
 * constant time, so neither the secret's length nor the position of the
 * first differing byte shows in the timing. The configured side's digest
 * is made once (sb_secret_digest), the presented one per request. */
#define SB_SECRET_DIGEST 32
void sb_secret_digest(const void *secret, size_t len, uint8_t out[SB_SECRET_DIGEST]);
int sb_secret_matches(const uint8_t want[SB_SECRET_DIGEST], const void *given, size_t len);

/* Unpredictable id of `len` characters from [a-z0-9] into out (len+1 bytes). */
void sb_random_id(char *out, size_t len);

/* Bytes held in the buffers this process owns and counts: connection
 * output queues (tlsconn, BOSH), XML stream parsers (expat's state and
 * input) and their trees. What [c2s] max_memory_mb caps. An owner keeps
 * what it has counted and syncs after each change (one add, no call). */
extern size_t sb_mem_owned;
static inline void sb_mem_sync(size_t *counted, size_t now)
{
    sb_mem_owned += now - *counted;   /* modular: a decrease works too */
    *counted = now;
}

/* Monotonic time in seconds / microseconds. */
double sb_now(void);
uint64_t sb_now_us(void);

#endif
