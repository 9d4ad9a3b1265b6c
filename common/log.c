/* log.c — one key=value line per event on stderr, stamped with UTC time
 * and the instance name, so the lines of many processes can be merged. */
#include "log.h"
#include "sb.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static char log_inst[64] = "-";
/* Read by every thread that logs (the ZAP handler's too, common/curve.c),
 * set by the main thread on SIGHUP: relaxed atomics, no data race. The
 * line itself is one fprintf, which POSIX makes atomic per stream. */
static sb_log_level log_min = SB_LOG_INFO;

static const char *const log_names[] = {"debug", "info", "warn", "error"};

void sb_log_init(const char *instance, sb_log_level min_level)
{
    snprintf(log_inst, sizeof log_inst, "%s", instance && *instance ? instance : "-");
    __atomic_store_n(&log_min, min_level, __ATOMIC_RELAXED);
    /* Line-buffered: one write per event even when stderr is a file. */
    setvbuf(stderr, NULL, _IOLBF, 0);
}

sb_log_level sb_log_level_parse(const char *name)
{
    if (name) {
        for (size_t i = 0; i < SB_ARRAY_LEN(log_names); i++)
            if (strcasecmp(name, log_names[i]) == 0)
                return (sb_log_level)i;
        if (strcasecmp(name, "warning") == 0)
            return SB_LOG_WARN;
    }
    return SB_LOG_INFO;
}

const char *sb_log_instance(void)
{
    return log_inst;
}

sb_log_level sb_log_level_get(void)
{
    return __atomic_load_n(&log_min, __ATOMIC_RELAXED);
}

void sb_log_set_level(sb_log_level lvl)
{
    __atomic_store_n(&log_min, lvl, __ATOMIC_RELAXED);
}

const char *sb_log_level_name(sb_log_level lvl)
{
    return lvl >= SB_LOG_DEBUG && lvl <= SB_LOG_ERROR ? log_names[lvl] : "?";
}

void sb_log(sb_log_level lvl, const char *event, const char *fmt, ...)
{
    if (lvl < __atomic_load_n(&log_min, __ATOMIC_RELAXED) || lvl > SB_LOG_ERROR)
        return;
    struct timeval tv;
    struct tm tm;
    char ts[32], tail[2048];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);

    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tail, sizeof tail, fmt, ap);
    va_end(ap);
    if (n < 0)
        tail[0] = '\0';
    /* Never let a value break the one-line-per-event rule. */
    for (char *p = tail; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';

    fprintf(stderr, "ts=%s.%03dZ level=%s inst=%s event=%s%s%s\n", ts,
            (int)(tv.tv_usec / 1000), log_names[lvl], log_inst, event,
            tail[0] ? " " : "", tail);
}

const char *sb_log_q(const char *value)
{
    static __thread char bufs[4][208];
    static __thread unsigned idx;
    char *out = bufs[idx++ % 4];
    size_t o = 0;
    if (!value)
        value = "";
    out[o++] = '"';
    for (const char *p = value; *p && o < 200; p++) {
        char c = *p;
        if (c == '"' || c == '\\') {
            if (o + 2 > 200)
                break;
            out[o++] = '\\';
        } else if (c == '\n' || c == '\r' || c == '\t') {
            c = ' ';
        }
        out[o++] = c;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}
