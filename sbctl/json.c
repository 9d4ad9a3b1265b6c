/* json.c — the one JSON writer of sbctl (`--json` on every command): a
 * streaming emitter to stdout that tracks commas per nesting level and
 * escapes strings per RFC 8259 (quote, backslash, control characters;
 * bytes >= 0x80 pass through, the input is UTF-8). */
#include <stdio.h>

#include "sbctl.h"

#define SJ_DEPTH 16

int sbctl_json;                     /* --json given */
static int sj_depth;
static int sj_count[SJ_DEPTH];      /* members written at each level */

void sj_string(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", stdout);
        else if (*p == '\t')
            fputs("\\t", stdout);
        else if (*p == '\r')
            fputs("\\r", stdout);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* Comma and key before a value; key NULL inside an array. */
static void sj_member(const char *key)
{
    if (sj_depth > 0 && sj_count[sj_depth - 1]++ > 0)
        putchar(',');
    if (key) {
        sj_string(key);
        putchar(':');
    }
}

static void sj_open(const char *key, char c)
{
    sj_member(key);
    putchar(c);
    if (sj_depth < SJ_DEPTH)
        sj_count[sj_depth++] = 0;
}

void sj_obj(const char *key)
{
    sj_open(key, '{');
}

void sj_arr(const char *key)
{
    sj_open(key, '[');
}

void sj_end_obj(void)
{
    putchar('}');
    if (sj_depth > 0 && --sj_depth == 0)
        putchar('\n');
}

void sj_end_arr(void)
{
    putchar(']');
    if (sj_depth > 0 && --sj_depth == 0)
        putchar('\n');
}

void sj_str(const char *key, const char *v)
{
    sj_member(key);
    if (v)
        sj_string(v);
    else
        fputs("null", stdout);
}

void sj_int(const char *key, long long v)
{
    sj_member(key);
    printf("%lld", v);
}

void sj_num(const char *key, double v)
{
    sj_member(key);
    if (v != v)
        fputs("null", stdout);      /* NaN has no JSON spelling */
    else if (v == (double)(long long)v && v < 1e15 && v > -1e15)
        printf("%lld", (long long)v);
    else
        printf("%.3f", v);
}

void sj_bool(const char *key, int v)
{
    sj_member(key);
    fputs(v ? "true" : "false", stdout);
}

void sj_null(const char *key)
{
    sj_member(key);
    fputs("null", stdout);
}
