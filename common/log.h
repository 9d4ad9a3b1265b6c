/* log.h — one line per event, key=value, with the instance name:
 *   ts=2026-11-25T12:00:00.123Z level=info inst=c2s1 event=login jid=a@b
 * Callers pass the event name and a printf-style tail of key=value pairs.
 * Values with spaces must be quoted by the caller (use sb_log_q()). */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stdarg.h>

typedef enum { SB_LOG_DEBUG, SB_LOG_INFO, SB_LOG_WARN, SB_LOG_ERROR } sb_log_level;

void sb_log_init(const char *instance, sb_log_level min_level);
sb_log_level sb_log_level_parse(const char *name); /* "debug"… default info */
const char *sb_log_instance(void);
sb_log_level sb_log_level_get(void);
void sb_log_set_level(sb_log_level lvl);     /* SIGHUP: no re-init of stderr */
const char *sb_log_level_name(sb_log_level lvl);

void sb_log(sb_log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(ev, ...) sb_log(SB_LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...)  sb_log(SB_LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  sb_log(SB_LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) sb_log(SB_LOG_ERROR, ev, __VA_ARGS__)

/* Quote a value for a log line into a static rotating buffer: "a b" → "\"a b\"".
 * Safe for up to 4 uses in one sb_log call. Truncates at 200 bytes. */
const char *sb_log_q(const char *value);

#endif
