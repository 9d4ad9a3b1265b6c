/* sb.c — result names, randomness and clocks shared by every module. */
#include "sb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

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

void sb_random(void *buf, size_t n)
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

void sb_random_id(char *out, size_t len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char rnd[64];
    size_t i = 0;
    while (i < len) {
        sb_random(rnd, sizeof rnd);
        for (size_t k = 0; k < sizeof rnd && i < len; k++) {
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
