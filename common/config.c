/* config.c — the cluster INI file plus SB_<KIND>_<KEY> environment
 * overrides. The file is read once into a flat table; lookups walk it,
 * which is fine for the few dozen keys read at start-up. */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct cfg_entry {
    char *section, *key, *value;
};

static struct cfg_entry *cfg_tab;
static size_t cfg_n, cfg_cap;
static char cfg_kind[64], cfg_inst[64];
static char *cfg_path;

/* Tables replaced by sb_config_reload: callers may still hold strings from
 * them (a process keeps what it read at start), so they live until
 * sb_config_free. Reloads are rare; this is a few KiB each. */
struct cfg_old {
    struct cfg_old *next;
    struct cfg_entry *tab;
    size_t n;
};
static struct cfg_old *cfg_retired;

static void cfg_tab_free(struct cfg_entry *tab, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(tab[i].section);
        free(tab[i].key);
        free(tab[i].value);
    }
    free(tab);
}

static char *cfg_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static sb_rc cfg_add(const char *section, const char *key, const char *value)
{
    if (cfg_n == cfg_cap) {
        size_t cap = cfg_cap ? cfg_cap * 2 : 32;
        struct cfg_entry *t = realloc(cfg_tab, cap * sizeof *t);
        if (!t)
            return SB_ERROR;
        cfg_tab = t;
        cfg_cap = cap;
    }
    struct cfg_entry *e = &cfg_tab[cfg_n];
    e->section = strdup(section);
    e->key = strdup(key);
    e->value = strdup(value);
    if (!e->section || !e->key || !e->value) {
        free(e->section);
        free(e->key);
        free(e->value);
        return SB_ERROR;
    }
    cfg_n++;
    return SB_OK;
}

/* An inline comment starts at '#' or ';' preceded by whitespace, so values
 * such as connection strings may still contain those characters. */
static void cfg_strip_inline_comment(char *v)
{
    for (char *p = v + 1; *p; p++)
        if ((*p == '#' || *p == ';') && isspace((unsigned char)p[-1])) {
            *p = '\0';
            return;
        }
}

static sb_rc cfg_parse_line(char *line, char *section, size_t seccap,
                            const char *path, int lineno)
{
    char *s = cfg_trim(line);
    if (!*s || *s == '#' || *s == ';')
        return SB_OK;
    if (*s == '[') {
        char *end = strchr(s, ']');
        if (!end) {
            log_error("config_syntax", "file=%s line=%d what=unclosed_section", path, lineno);
            return SB_ERROR;
        }
        *end = '\0';
        snprintf(section, seccap, "%s", cfg_trim(s + 1));
        return SB_OK;
    }
    char *eq = strchr(s, '=');
    if (!eq) {
        log_error("config_syntax", "file=%s line=%d what=missing_equals", path, lineno);
        return SB_ERROR;
    }
    *eq = '\0';
    char *key = cfg_trim(s), *val = eq + 1;
    cfg_strip_inline_comment(val);
    val = cfg_trim(val);
    if (!*key) {
        log_error("config_syntax", "file=%s line=%d what=empty_key", path, lineno);
        return SB_ERROR;
    }
    return cfg_add(section, key, val);
}

/* Read path into the (empty) current table. */
static sb_rc cfg_read(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        log_error("config_open_failed", "file=%s err=%s", path, sb_log_q(strerror(errno)));
        return SB_ERROR;
    }
    char line[4096], section[128] = "";
    int lineno = 0;
    sb_rc rc = SB_OK;
    while (rc == SB_OK && fgets(line, sizeof line, f)) {
        lineno++;
        rc = cfg_parse_line(line, section, sizeof section, path, lineno);
    }
    fclose(f);
    return rc;
}

sb_rc sb_config_load(const char *path, const char *kind, const char *instance)
{
    sb_config_free();
    snprintf(cfg_kind, sizeof cfg_kind, "%s", kind ? kind : "");
    snprintf(cfg_inst, sizeof cfg_inst, "%s", instance && *instance ? instance : cfg_kind);
    if (!path || !*path)
        return SB_OK;
    cfg_path = strdup(path);
    if (!cfg_path || cfg_read(path) != SB_OK) {
        sb_config_free();
        return SB_ERROR;
    }
    return SB_OK;
}

sb_rc sb_config_reload(void)
{
    if (!cfg_path)
        return SB_OK;                 /* environment and defaults only */
    struct cfg_old *old = malloc(sizeof *old);
    if (!old)
        return SB_ERROR;
    old->tab = cfg_tab;
    old->n = cfg_n;
    size_t old_cap = cfg_cap;
    cfg_tab = NULL;
    cfg_n = cfg_cap = 0;
    if (cfg_read(cfg_path) != SB_OK) {
        cfg_tab_free(cfg_tab, cfg_n);  /* keep what was in force */
        cfg_tab = old->tab;
        cfg_n = old->n;
        cfg_cap = old_cap;
        free(old);
        return SB_ERROR;
    }
    old->next = cfg_retired;
    cfg_retired = old;
    return SB_OK;
}

void sb_config_free(void)
{
    cfg_tab_free(cfg_tab, cfg_n);
    cfg_tab = NULL;
    cfg_n = cfg_cap = 0;
    while (cfg_retired) {
        struct cfg_old *o = cfg_retired;
        cfg_retired = o->next;
        cfg_tab_free(o->tab, o->n);
        free(o);
    }
    free(cfg_path);
    cfg_path = NULL;
}

static const char *cfg_find(const char *section, const char *key)
{
    /* Last one wins, as an operator appending a line would expect. */
    for (size_t i = cfg_n; i-- > 0;)
        if (strcmp(cfg_tab[i].section, section) == 0 && strcmp(cfg_tab[i].key, key) == 0)
            return cfg_tab[i].value;
    return NULL;
}

/* SB_<SECTION>_<KEY>, upper-cased, '.' and '-' turned into '_'. */
static const char *cfg_env(const char *section, const char *key)
{
    char name[256];
    int n = snprintf(name, sizeof name, "SB_%s_%s", section, key);
    if (n < 0 || (size_t)n >= sizeof name)
        return NULL;
    for (char *p = name; *p; p++) {
        if (*p == '.' || *p == '-')
            *p = '_';
        else
            *p = (char)toupper((unsigned char)*p);
    }
    return getenv(name);
}

const char *sb_config_str_in(const char *kind, const char *instance,
                             const char *key, const char *def)
{
    const char *v;
    char sec[192];
    if (kind && *kind) {
        if ((v = cfg_env(kind, key)))
            return v;
        if (instance && *instance) {
            snprintf(sec, sizeof sec, "%s.%s", kind, instance);
            if ((v = cfg_find(sec, key)))
                return v;
        }
        if ((v = cfg_find(kind, key)))
            return v;
    }
    /* SB_CLUSTER_<KEY> overrides [cluster] only, below the kind's own keys. */
    if ((v = cfg_env("cluster", key)))
        return v;
    if ((v = cfg_find("cluster", key)))
        return v;
    return def;
}

const char *sb_config_str_section(const char *section, const char *key, const char *def)
{
    const char *v = cfg_find(section, key);
    return v ? v : def;
}

void sb_config_each_key(const char *key, void (*cb)(const char *section, const char *value,
                                                    void *ud), void *ud)
{
    for (size_t i = 0; i < cfg_n; i++)
        if (strcmp(cfg_tab[i].key, key) == 0)
            cb(cfg_tab[i].section, cfg_tab[i].value, ud);
}

const char *sb_config_str(const char *key, const char *def)
{
    return sb_config_str_in(cfg_kind, cfg_inst, key, def);
}

long sb_config_int(const char *key, long def)
{
    const char *v = sb_config_str(key, NULL);
    if (!v || !*v)
        return def;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 0);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end) {
        log_warn("config_bad_int", "key=%s value=%s default=%ld", key, sb_log_q(v), def);
        return def;
    }
    return n;
}

static int config_bool_value(const char *key, const char *v, int def)
{
    static const char *const yes[] = {"1", "yes", "true", "on"};
    static const char *const no[] = {"0", "no", "false", "off"};
    if (!v || !*v)
        return def;
    for (size_t i = 0; i < SB_ARRAY_LEN(yes); i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return 1;
        if (strcasecmp(v, no[i]) == 0)
            return 0;
    }
    log_warn("config_bad_bool", "key=%s value=%s default=%d", key, sb_log_q(v), def);
    return def;
}

int sb_config_bool(const char *key, int def)
{
    return config_bool_value(key, sb_config_str(key, NULL), def);
}

int sb_config_bool_in(const char *kind, const char *instance, const char *key, int def)
{
    return config_bool_value(key, sb_config_str_in(kind, instance, key, NULL), def);
}

const char *sb_config_routers(void)
{
    return sb_config_str("routers", sb_config_str("router", "tcp://127.0.0.1:15555"));
}

/* The secret itself, from the file at path (when set) or the value v. */
static sb_rc config_secret_of(const char *key, const char *path, const char *v, char *out,
                              size_t cap)
{
    out[0] = '\0';
    if (!path || !*path) {
        if (!v || !*v)
            return SB_DONE;
        if (strlen(v) >= cap) {
            log_error("config_secret_too_long", "key=%s max=%zu", key, cap - 1);
            return SB_ERROR;
        }
        strcpy(out, v);
        return SB_OK;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        log_error("config_secret_unreadable", "key=%s_file file=%s err=%s", key, sb_log_q(path),
                  sb_log_q(strerror(errno)));
        return SB_ERROR;
    }
    size_t n = fread(out, 1, cap - 1, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    out[n] = '\0';
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    if (more || !n || memchr(out, '\0', n)) {
        log_error("config_secret_bad", "key=%s_file file=%s why=%s", key, sb_log_q(path),
                  more ? "too-long" : !n ? "empty" : "nul-byte");
        out[0] = '\0';
        return SB_ERROR;
    }
    return SB_OK;
}

sb_rc sb_config_secret(const char *key, char *out, size_t cap)
{
    char fk[128];
    snprintf(fk, sizeof fk, "%s_file", key);
    return config_secret_of(key, sb_config_str(fk, NULL), sb_config_str(key, NULL), out, cap);
}

sb_rc sb_config_secret_section(const char *section, const char *key, char *out, size_t cap)
{
    char fk[128];
    snprintf(fk, sizeof fk, "%s_file", key);
    return config_secret_of(key, sb_config_str_section(section, fk, NULL),
                            sb_config_str_section(section, key, NULL), out, cap);
}

sb_rc sb_config_secret_in(const char *kind, const char *key, char *out, size_t cap)
{
    char fk[128];
    snprintf(fk, sizeof fk, "%s_file", key);
    return config_secret_of(key, sb_config_str_in(kind, NULL, fk, NULL),
                            sb_config_str_in(kind, NULL, key, NULL), out, cap);
}
