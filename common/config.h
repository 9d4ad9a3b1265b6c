/* config.h — one INI file for the whole cluster.
 *
 * A process of kind K running as instance I reads keys in this order:
 *   1. environment SB_<K>_<KEY>            (upper-cased, e.g. SB_C2S_PORT)
 *   2. section [K.I]  (e.g. [c2s.c2s2])    per-instance overrides
 *   3. section [K]    (e.g. [c2s])
 *   4. section [cluster]                   shared keys (redis, postgres, router)
 *   5. the default given by the caller
 * Lines: `key = value`, `# comment`, `; comment`, `[section]`. */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include "sb.h"

/* Load file (NULL or missing path → only env and defaults). */
sb_rc sb_config_load(const char *path, const char *kind, const char *instance);
void sb_config_free(void);
/* Read the same file again (SIGHUP). Strings returned before stay valid
 * until sb_config_free. On a read or syntax error the table in force is
 * kept and SB_ERROR returned. */
sb_rc sb_config_reload(void);

const char *sb_config_str(const char *key, const char *def);
long sb_config_int(const char *key, long def);
int sb_config_bool(const char *key, int def);   /* 1/0, yes/no, true/false, on/off */
/* The router endpoints, "tcp://a:1,tcp://b:2" (`routers`, or the one-router
 * spelling `router`). */
const char *sb_config_routers(void);
/* A secret: the content of the file named by `<key>_file` (one line; a
 * trailing newline is not part of it), else the value of `key`. SB_OK with
 * out set, SB_DONE when neither is configured (out ""), SB_ERROR (logged)
 * for an unreadable, empty or over-long file. */
sb_rc sb_config_secret(const char *key, char *out, size_t cap);
/* The same for one section (e.g. [component.NAME] secret / secret_file). */
sb_rc sb_config_secret_section(const char *section, const char *key, char *out, size_t cap);
/* The same with sb_config_str_in's lookup for another kind (e.g. every
 * process reading [upload] secret: SB_UPLOAD_SECRET, [upload], [cluster]). */
sb_rc sb_config_secret_in(const char *kind, const char *key, char *out, size_t cap);

/* Same lookup for another section (e.g. sm reading [c2s] keys). */
const char *sb_config_str_in(const char *kind, const char *instance,
                             const char *key, const char *def);
/* A flag of another section (e.g. [domain.NAME] register). */
int sb_config_bool_in(const char *kind, const char *instance, const char *key, int def);
/* One key of exactly one section (e.g. [domain.NAME] cert, which must not
 * fall back to a process's own `cert`): no environment, no fallback. */
const char *sb_config_str_section(const char *section, const char *key, const char *def);
/* cb(section, value) for every occurrence of `key` in the file, in file
 * order (e.g. sbctl listing every instance's `metrics`). */
void sb_config_each_key(const char *key, void (*cb)(const char *section, const char *value,
                                                    void *ud), void *ud);

#endif
