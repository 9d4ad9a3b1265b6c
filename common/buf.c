/* buf.c — growable byte buffer, always NUL-terminated past len. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_buf_free(struct sb_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void sb_buf_reset(struct sb_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

sb_rc sb_buf_reserve(struct sb_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return SB_ERROR;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return SB_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return SB_ERROR;
    b->data = p;
    b->cap = cap;
    return SB_OK;
}

sb_rc sb_buf_add(struct sb_buf *b, const void *p, size_t n)
{
    if (sb_buf_reserve(b, n) != SB_OK)
        return SB_ERROR;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return SB_OK;
}

sb_rc sb_buf_adds(struct sb_buf *b, const char *s)
{
    return sb_buf_add(b, s, strlen(s));
}

sb_rc sb_buf_printf(struct sb_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sb_buf_reserve(b, (size_t)n) != SB_OK)
        return SB_ERROR;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return SB_OK;
}

void sb_buf_consume(struct sb_buf *b, size_t n)
{
    if (n >= b->len) {
        sb_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}
