/* sb.c — result names, randomness and clocks shared by every module. */
#include "sb.h"

#include <errno.h>
#include <nettle/memops.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

size_t sb_mem_owned;

const char *sb_rc_name(sb_rc rc)
{
    switch (rc) {
    case SB_OK: return "ok";
    case SB_ERROR: return "error";
    case SB_AGAIN: return "again";
    case SB_DECLINED: return "declined";
    case SB_DONE: return "done";
    case SB_LIMIT: return "limit";
    }
    return "unknown";
}

static void sb_getrandom(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* Ids made without randomness would be guessable: refuse. */
            fprintf(stderr, "sb_random: getrandom failed: errno=%d\n", errno);
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

/* Kernel randomness fetched 4 KiB at a time: a login draws stream ids,
 * nonces and resources, each a getrandom system call before. Every byte is
 * handed out once and wiped; a forked child (sbctl's key workers) starts
 * with an empty pool so it never repeats its parent's bytes. The servers
 * draw from one thread only (libzmq's threads never call this). */
static unsigned char sb_pool[4096];
static size_t sb_pool_left;
static int sb_pool_hooked;

static void sb_pool_forget(void)
{
    explicit_bzero(sb_pool, sizeof sb_pool);
    sb_pool_left = 0;
}

void sb_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    if (!sb_pool_hooked) {
        if (pthread_atfork(NULL, NULL, sb_pool_forget) != 0) {
            sb_getrandom(buf, n);      /* cannot be made fork-safe: no pool */
            return;
        }
        sb_pool_hooked = 1;
    }
    if (n > sizeof sb_pool / 4) {
        sb_getrandom(buf, n);
        return;
    }
    while (n > 0) {
        if (sb_pool_left == 0) {
            sb_getrandom(sb_pool, sizeof sb_pool);
            sb_pool_left = sizeof sb_pool;
        }
        size_t k = n < sb_pool_left ? n : sb_pool_left;
        unsigned char *src = sb_pool + sizeof sb_pool - sb_pool_left;
        memcpy(p, src, k);
        explicit_bzero(src, k);
        sb_pool_left -= k;
        p += k;
        n -= k;
    }
}

void sb_random_id(char *out, size_t len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char rnd[64];
    size_t i = 0;
    while (i < len) {
        size_t want = len - i + 4;      /* a few spare for rejected bytes */
        if (want > sizeof rnd)
            want = sizeof rnd;
        sb_random(rnd, want);
        for (size_t k = 0; k < want && i < len; k++) {
            /* 252 = 7 * 36: reject the tail so every character is uniform. */
            if (rnd[k] >= 252)
                continue;
            out[i++] = alphabet[rnd[k] % 36];
        }
    }
    out[len] = '\0';
}

uint64_t sb_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

double sb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sb_secret_digest(const void *secret, size_t len, uint8_t out[SB_SECRET_DIGEST])
{
    struct sha256_ctx h;
    sha256_init(&h);
    sha256_update(&h, len, secret);
    sha256_digest(&h, SB_SECRET_DIGEST, out);
}

int sb_secret_matches(const uint8_t want[SB_SECRET_DIGEST], const void *given, size_t len)
{
    uint8_t got[SB_SECRET_DIGEST];
    sb_secret_digest(given, len, got);
    return memeql_sec(want, got, SB_SECRET_DIGEST);
}
