/* buf.h — a growable byte buffer, the one output type of serialisers and
 * protocol writers. Always NUL-terminated past `len` for convenience. */
#ifndef SB_BUF_H
#define SB_BUF_H

#include "sb.h"

struct sb_buf {
    char *data;
    size_t len, cap;
};

#define SB_BUF_INIT {NULL, 0, 0}

void sb_buf_free(struct sb_buf *b);          /* releases memory, back to INIT */
void sb_buf_reset(struct sb_buf *b);         /* len = 0, keeps memory */
sb_rc sb_buf_reserve(struct sb_buf *b, size_t extra);
sb_rc sb_buf_add(struct sb_buf *b, const void *p, size_t n);
sb_rc sb_buf_adds(struct sb_buf *b, const char *s);
sb_rc sb_buf_printf(struct sb_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sb_buf_consume(struct sb_buf *b, size_t n); /* drop n bytes from the front */

#endif
