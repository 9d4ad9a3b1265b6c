/* upload.c — XEP-0363 shared pieces: the [upload] configuration, slot
 * signatures (HMAC-SHA256, Nettle), file names, and the directory store
 * (see upload.h for the layout). */
#include "upload.h"
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define UPLOAD_MAGIC "SBUP1"
#define UPLOAD_HDR_MAX (8 + UPLOAD_CTYPE_MAX + UPLOAD_ENAME_MAX)
#define UPLOAD_PART_STALE 3600.0        /* a temporary untouched this long is dead */

const char UPLOAD_PURGE_SQL[] =
    "WITH d AS (DELETE FROM upload_files"
    "  WHERE $1::int > 0 AND created_at < now() - make_interval(days => $1::int)"
    "  RETURNING domain, username, size),"
    " s AS (SELECT domain, username, sum(size) AS n FROM d GROUP BY domain, username)"
    " UPDATE upload_quota q SET bytes = greatest(q.bytes - s.n, 0) FROM s"
    " WHERE q.domain = s.domain AND q.username = s.username";

const char UPLOAD_TRASH_TAKE_SQL[] =
    "DELETE FROM upload_trash WHERE id IN (SELECT id FROM upload_trash"
    " LIMIT 500 FOR UPDATE SKIP LOCKED) RETURNING id";   /* 500: UPLOAD_TRASH_BATCH */
const char UPLOAD_TRASH_DONE_SQL[] = "DELETE FROM upload_trash WHERE id = ANY($1::text[])";

static const char *upload_str(const char *key, const char *def)
{
    return sb_config_str_in("upload", NULL, key, def);
}

long long upload_decimal(const char *s)
{
    char *end = NULL;
    if (!s || *s < '0' || *s > '9' || strlen(s) > 18)
        return -1;
    long long n = strtoll(s, &end, 10);
    return *end ? -1 : n;
}

static long long upload_num(const char *key, long long def)
{
    const char *v = upload_str(key, NULL);
    return v && *v ? upload_decimal(v) : def;
}

sb_rc upload_cfg_load(struct upload_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->url = upload_str("url", "");
    c->dir = upload_str("dir", "");
    c->types = upload_str("allowed_types", "");
    c->max_size = upload_num("max_file_size", 10 * 1024 * 1024);
    c->quota = upload_num("quota", 100 * 1024 * 1024);
    c->expire_days = (long)upload_num("expire_days", 30);
    c->slot_ttl = (long)upload_num("slot_ttl", 300);
    if (!*c->url)
        return SB_DONE;
    size_t ul = strlen(c->url);
    const char *scheme = strstr(c->url, "://");
    const char *path = scheme ? strchr(scheme + 3, '/') : NULL;
    snprintf(c->prefix, sizeof c->prefix, "%s", path ? path : "");
    if (!scheme || c->url[ul - 1] == '/' || !path || strlen(path) < 2 ||
        strlen(path) >= sizeof c->prefix || strpbrk(path, "?#")) {
        log_error("config_invalid", "key=upload.url value=%s reason=\"scheme://host[:port]/path, "
                  "no trailing slash\"", sb_log_q(c->url));
        return SB_ERROR;
    }
    if (c->max_size <= 0 || c->quota < 0 || c->expire_days < 0 || c->slot_ttl <= 0) {
        log_error("config_invalid", "section=upload max_file_size=%lld quota=%lld "
                  "expire_days=%ld slot_ttl=%ld", c->max_size, c->quota, c->expire_days,
                  c->slot_ttl);
        return SB_ERROR;
    }
    sb_rc rc = sb_config_secret_in("upload", "secret", c->secret, sizeof c->secret);
    if (rc != SB_OK || strlen(c->secret) < 16) {
        log_error("config_invalid", "key=upload.secret reason=\"secret or secret_file, "
                  "at least 16 characters\"");
        return SB_ERROR;
    }
    return SB_OK;
}

int upload_ctype_valid(const char *t)
{
    size_t n = strlen(t), slash = strcspn(t, "/");
    if (n == 0 || n > UPLOAD_CTYPE_MAX || slash == 0 || slash >= n - 1)
        return 0;
    for (const char *p = t; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$&^_.+-/;= ", *p))
            return 0;
    return 1;
}

int upload_type_allowed(const struct upload_cfg *c, const char *ctype)
{
    const char *l = c->types;
    size_t n = strcspn(ctype, "; "), major = strcspn(ctype, "/");
    if (!*l)
        return 1;
    while (*l) {
        l += strspn(l, " ,\t");
        size_t k = strcspn(l, " ,\t");
        if (k && ((k == n && !strncasecmp(l, ctype, n)) ||
                  (k == major + 2 && !strncasecmp(l, ctype, major + 1) && l[k - 1] == '*')))
            return 1;
        l += k;
    }
    return 0;
}

sb_rc upload_name_encode(const char *name, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(name), o = 0;
    if (n == 0 || n > UPLOAD_NAME_MAX || cap < n * 3 + 1)
        return SB_ERROR;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return SB_ERROR;
        if (isalnum(*p) || strchr("-._~", *p)) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    /* "." and ".." are names the store never sees (it keys by id), but a
     * URL path segment of dots is normalised away by clients. */
    return strspn(out, ".") == o ? SB_ERROR : SB_OK;
}

int upload_id_valid(const char *s, size_t len)
{
    if (len != UPLOAD_ID_LEN)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

int upload_ename_valid(const char *s, size_t len)
{
    if (len == 0 || len > UPLOAD_ENAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= len + 0 || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]))
                return 0;
            i += 2;
        } else if (!isalnum(ch) && !strchr("-._~", ch)) {
            return 0;
        }
    }
    return 1;
}

void upload_sign(const char *secret, const char *path, long long size, const char *ctype,
                 long long expiry, char out[UPLOAD_SIG_HEX + 1])
{
    struct hmac_sha256_ctx ctx;
    uint8_t mac[SHA256_DIGEST_SIZE];
    char tail[64];
    int tl = snprintf(tail, sizeof tail, "\n%lld\n", size);
    hmac_sha256_set_key(&ctx, strlen(secret), (const uint8_t *)secret);
    hmac_sha256_update(&ctx, strlen(path), (const uint8_t *)path);
    hmac_sha256_update(&ctx, (size_t)tl, (const uint8_t *)tail);
    hmac_sha256_update(&ctx, strlen(ctype), (const uint8_t *)ctype);
    tl = snprintf(tail, sizeof tail, "\n%lld", expiry);
    hmac_sha256_update(&ctx, (size_t)tl, (const uint8_t *)tail);
    hmac_sha256_digest(&ctx, sizeof mac, mac);
    for (size_t i = 0; i < sizeof mac; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

int upload_sig_ok(const char *secret, const char *path, long long size, const char *ctype,
                  long long expiry, const char *sig)
{
    char want[UPLOAD_SIG_HEX + 1];
    unsigned diff = 0;
    if (strlen(sig) != UPLOAD_SIG_HEX)
        return 0;
    upload_sign(secret, path, size, ctype, expiry, want);
    for (size_t i = 0; i < UPLOAD_SIG_HEX; i++)
        diff |= (unsigned)(want[i] ^ sig[i]);
    return diff == 0;
}

/* ---- the directory store ------------------------------------------------------ */

struct upload_put {
    int fd;
    char tmp[4096], final[4096];
};

static void upload_paths(const char *dir, const char *id, char *sub, size_t cap, char *file,
                         size_t fcap)
{
    snprintf(sub, cap, "%.3900s/%.2s", dir, id);
    snprintf(file, fcap, "%.3900s/%.2s/%.32s", dir, id, id);
}

static sb_rc upload_errno_rc(int e)
{
    return e == ENOSPC || e == EDQUOT ? SB_LIMIT : SB_ERROR;
}

static sb_rc upload_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t r = write(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return upload_errno_rc(r < 0 ? errno : ENOSPC);
        p += r;
        len -= (size_t)r;
    }
    return SB_OK;
}

sb_rc upload_store_open(const char *dir, const char *id, const char *ename, const char *ctype,
                        struct upload_put **out)
{
    char sub[4096], rnd[9], hdr[UPLOAD_HDR_MAX + 1];
    struct upload_put *p = calloc(1, sizeof *p);
    if (!p)
        return SB_ERROR;
    upload_paths(dir, id, sub, sizeof sub, p->final, sizeof p->final);
    if (access(p->final, F_OK) == 0) {
        free(p);
        return SB_DONE;
    }
    sb_random_id(rnd, 8);
    if (snprintf(p->tmp, sizeof p->tmp, "%.4000s/.%s.%s.part", sub, id, rnd) < 0)
        p->tmp[0] = '\0';
    if (mkdir(sub, 0750) < 0 && errno != EEXIST) {
        sb_rc rc = upload_errno_rc(errno);
        log_warn("upload_store_failed", "op=mkdir dir=%s err=%s", sb_log_q(sub), strerror(errno));
        free(p);
        return rc;
    }
    p->fd = open(p->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (p->fd < 0) {
        sb_rc rc = upload_errno_rc(errno);
        if (rc != SB_LIMIT)
            log_warn("upload_store_failed", "op=open file=%s err=%s", sb_log_q(p->tmp),
                     strerror(errno));
        free(p);
        return rc;
    }
    int n = snprintf(hdr, sizeof hdr, UPLOAD_MAGIC "\t%s\t%s\n", ctype, ename);
    sb_rc rc = upload_write_all(p->fd, hdr, (size_t)n);
    if (rc != SB_OK) {
        upload_store_abort(p);
        return rc;
    }
    *out = p;
    return SB_OK;
}

sb_rc upload_store_write(struct upload_put *p, const void *data, size_t len)
{
    return upload_write_all(p->fd, data, len);
}

void upload_store_abort(struct upload_put *p)
{
    if (!p)
        return;
    close(p->fd);
    unlink(p->tmp);
    free(p);
}

sb_rc upload_store_commit(struct upload_put *p)
{
    /* No fsync: it would hold the event loop for as long as the disk takes
     * to write the whole file. rename() makes the file appear whole or not
     * at all to every reader. */
    int e = close(p->fd) < 0 ? errno : 0;
    p->fd = -1;
    if (!e && rename(p->tmp, p->final) < 0)
        e = errno;
    if (e) {
        log_warn("upload_store_failed", "op=commit file=%s err=%s", sb_log_q(p->final),
                 strerror(e));
        unlink(p->tmp);
        free(p);
        return upload_errno_rc(e);
    }
    free(p);
    return SB_OK;
}

sb_rc upload_store_get(const char *dir, const char *id, const char *ename, int *fd, off_t *off,
                       off_t *len, char *ctype, size_t cap)
{
    char sub[4096], file[4096], hdr[UPLOAD_HDR_MAX + 1];
    struct stat st;
    upload_paths(dir, id, sub, sizeof sub, file, sizeof file);
    int f = open(file, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return SB_DECLINED;
    ssize_t n = fstat(f, &st) == 0 ? pread(f, hdr, sizeof hdr - 1, 0) : -1;
    hdr[n > 0 ? n : 0] = '\0';
    char *nl = strchr(hdr, '\n'), *t1 = strchr(hdr, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (!nl || !t2 || t2 > nl || strncmp(hdr, UPLOAD_MAGIC "\t", 6) ||
        (size_t)(t2 - t1 - 1) >= cap) {
        log_warn("upload_store_corrupt", "file=%s", sb_log_q(file));
        close(f);
        return SB_DECLINED;
    }
    if ((size_t)(nl - t2 - 1) != strlen(ename) || strncmp(t2 + 1, ename, (size_t)(nl - t2 - 1))) {
        close(f);
        return SB_DECLINED;
    }
    memcpy(ctype, t1 + 1, (size_t)(t2 - t1 - 1));
    ctype[t2 - t1 - 1] = '\0';
    *fd = f;
    *off = (off_t)(nl + 1 - hdr);
    *len = st.st_size - *off;
    return SB_OK;
}

sb_rc upload_store_remove(const char *dir, const char *id)
{
    char sub[4096], file[4096];
    if (!upload_id_valid(id, strlen(id)))
        return SB_DECLINED;
    upload_paths(dir, id, sub, sizeof sub, file, sizeof file);
    if (unlink(file) == 0)
        return SB_OK;
    if (errno != ENOENT)
        log_warn("upload_store_failed", "op=remove file=%s err=%s", sb_log_q(file),
                 strerror(errno));
    return SB_DECLINED;
}

/* ---- expiry ------------------------------------------------------------------------ */

struct upload_sweep {
    char dir[4096];
    DIR *top, *sub;
    int subfd;
};

struct upload_sweep *upload_sweep_new(const char *dir)
{
    struct upload_sweep *s = calloc(1, sizeof *s);
    if (s)
        snprintf(s->dir, sizeof s->dir, "%s", dir);
    return s;
}

void upload_sweep_free(struct upload_sweep *s)
{
    if (!s)
        return;
    if (s->sub)
        closedir(s->sub);
    if (s->top)
        closedir(s->top);
    free(s);
}

/* The next two-character subdirectory, or 0 at the end of the pass. */
static int sweep_next_sub(struct upload_sweep *s)
{
    if (s->sub) {
        closedir(s->sub);
        s->sub = NULL;
    }
    if (!s->top && !(s->top = opendir(s->dir)))
        return 0;
    struct dirent *e;
    while ((e = readdir(s->top))) {
        if (strlen(e->d_name) != 2 || e->d_name[0] == '.')
            continue;
        int fd = openat(dirfd(s->top), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if ((s->sub = fdopendir(fd))) {
            s->subfd = fd;
            return 1;
        }
        close(fd);
    }
    closedir(s->top);
    s->top = NULL;
    return 0;
}

long upload_sweep_step(struct upload_sweep *s, double max_age, long budget, int *done)
{
    long removed = 0;
    time_t now = time(NULL);
    *done = 0;
    while (budget-- > 0) {
        struct dirent *e = s->sub ? readdir(s->sub) : NULL;
        if (!e) {
            if (!sweep_next_sub(s)) {
                *done = 1;
                return removed;
            }
            continue;
        }
        struct stat st;
        int part = e->d_name[0] == '.';
        if ((part && strstr(e->d_name, ".part") == NULL) ||
            fstatat(s->subfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        double age = difftime(now, st.st_mtime);
        if (part ? age > UPLOAD_PART_STALE : (max_age > 0 && age > max_age)) {
            if (unlinkat(s->subfd, e->d_name, 0) == 0 && !part)
                removed++;
        }
    }
    return removed;
}
