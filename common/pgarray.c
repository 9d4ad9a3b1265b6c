/* pgarray.c — PostgreSQL array literals for pgev_query parameters (pgev.h);
 * apart from pgev.c so that tests which replace pgev keep this. */
#include "pgev.h"

sb_rc pgev_array_add(struct sb_buf *b, const char *s, size_t n)
{
    sb_buf_adds(b, b->len > 1 ? ",\"" : "\"");
    const char *run = s;
    for (const char *p = s; p < s + n; p++) {
        if (*p == '"' || *p == '\\') {
            sb_buf_add(b, run, (size_t)(p - run));
            sb_buf_adds(b, "\\");
            run = p;
        }
    }
    sb_buf_add(b, run, (size_t)(s + n - run));
    return sb_buf_adds(b, "\"");
}
