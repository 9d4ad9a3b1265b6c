/* web_upload.c — sb-bosh serving XEP-0363 uploads under the path of
 * [upload] url (common/upload.h): PUT with a slot's signed URL, GET/HEAD
 * (with single byte ranges) of what was stored, CORS preflight. Nothing is
 * shared with the sm that signed the slot but the [upload] secret, so any
 * sb-bosh takes any PUT or GET (the directory must then be shared).
 *   PUT   path not <prefix>/<id>/<name>               400
 *         no or bad e/n/s, expired, signature wrong   403 (logged)
 *         no Content-Length (chunked)                 411
 *         Content-Length over the slot's size         413, other than it 400
 *         already stored                              409
 *         disk full                                   507 (logged)
 *         stored                                      201
 *   GET   unknown id or name                          404
 *         Range past the end                          416
 * The body of a PUT goes to the store chunk by chunk as it is read; a GET
 * is streamed from the file (web_respond_file). The expiry sweep walks the
 * directory off the request path: 500 entries a second during a pass,
 * a pass every hour. The files of deleted accounts (upload_trash, queued
 * by auth/account.h AUTH_ACCOUNT_TRASH_SQL) are taken and unlinked every
 * UPLOAD_TRASH_EVERY seconds, 500 ids per statement. */
#include "web.h"
#include "log.h"
#include "upload.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define UPLOAD_SWEEP_EVERY 3600.0
#define UPLOAD_SWEEP_BUDGET 500
#define UPLOAD_TRASH_EVERY 5.0

struct web_upload {
    struct upload_put *put;
    char id[UPLOAD_ID_LEN + 1];
    long long size, got;
};

static struct upload_cfg up;
static int up_on;
static struct upload_sweep *up_sweep;
static ev_timer up_sweep_timer;
static ev_timer up_trash_timer;
static int up_trash_busy;

int web_upload_path(const char *path)
{
    size_t n = strlen(up.prefix);
    return up_on && !strncmp(path, up.prefix, n) && path[n] == '/';
}

/* "<prefix>/<id>/<ename>" → id and ename (pointers into path, lengths). */
static int upload_split(const char *path, const char **id, const char **ename)
{
    const char *p = path + strlen(up.prefix) + 1, *slash = strchr(p, '/');
    if (!slash || !upload_id_valid(p, (size_t)(slash - p)) ||
        !upload_ename_valid(slash + 1, strlen(slash + 1)))
        return 0;
    *id = p;
    *ename = slash + 1;
    return 1;
}

/* The value of `key` in a query string, copied into out; 0 when absent. */
static int upload_query(const char *q, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    while (*q) {
        size_t n = strcspn(q, "&");
        if (n > kl && q[kl] == '=' && !strncmp(q, key, kl) && n - kl - 1 < cap) {
            memcpy(out, q + kl + 1, n - kl - 1);
            out[n - kl - 1] = '\0';
            return 1;
        }
        q += n;
        q += *q == '&';
    }
    return 0;
}

static int upload_refuse(struct web_conn *h, int status, const char *reason, const char **why)
{
    log_info("upload_refused", "peer=%s status=%d reason=%s", web_http_peer(h), status, reason);
    *why = status == 403 ? "forbidden\n" : status == 411 ? "Content-Length required\n"
         : status == 413 ? "larger than the slot\n" : status == 409 ? "already uploaded\n"
         : status == 507 ? "insufficient storage\n" : status == 400 ? "bad request\n"
         : "upload failed\n";
    return status;
}

int web_upload_put_begin(struct web_conn *h, struct web_req *r, struct web_upload **out,
                         const char **why)
{
    const char *id, *ename;
    char e[24], n[24], sig[UPLOAD_SIG_HEX + 2];
    if (!upload_split(r->path, &id, &ename))
        return upload_refuse(h, 400, "bad-path", why);
    long long exp = upload_query(r->query, "e", e, sizeof e) ? upload_decimal(e) : -1;
    long long size = upload_query(r->query, "n", n, sizeof n) ? upload_decimal(n) : -1;
    if (exp < 0 || size < 0 || !upload_query(r->query, "s", sig, sizeof sig))
        return upload_refuse(h, 403, "no-signature", why);
    if (exp < (long long)time(NULL))
        return upload_refuse(h, 403, "expired", why);
    const char *ct = *r->ctype ? r->ctype : "application/octet-stream";
    /* id runs on to the end of the path: the signed "<id>/<name>" */
    if (!upload_sig_ok(up.secret, id, size, ct, exp, sig))
        return upload_refuse(h, 403, "bad-signature", why);
    if (r->clen < 0)
        return upload_refuse(h, 411, "no-length", why);
    if (r->clen > size)
        return upload_refuse(h, 413, "too-large", why);
    if (r->clen != size)
        return upload_refuse(h, 400, "wrong-size", why);
    struct web_upload *u = calloc(1, sizeof *u);
    if (!u)
        return upload_refuse(h, 500, "nomem", why);
    memcpy(u->id, id, UPLOAD_ID_LEN);
    u->size = size;
    sb_rc rc = upload_store_open(up.dir, u->id, ename, ct, &u->put);
    if (rc != SB_OK) {
        free(u);
        if (rc == SB_LIMIT)
            log_warn("upload_disk_full", "dir=%s id=%.32s peer=%s", sb_log_q(up.dir), id,
                     web_http_peer(h));
        return upload_refuse(h, rc == SB_DONE ? 409 : rc == SB_LIMIT ? 507 : 500,
                             rc == SB_DONE ? "exists" : rc == SB_LIMIT ? "disk-full" : "store",
                             why);
    }
    *out = u;
    return 0;
}

int web_upload_put_data(struct web_upload *u, const char *data, size_t len, const char **why)
{
    sb_rc rc = upload_store_write(u->put, data, len);
    u->got += (long long)len;
    if (rc == SB_OK)
        return 0;
    if (rc == SB_LIMIT)
        log_warn("upload_disk_full", "dir=%s id=%s", sb_log_q(up.dir), u->id);
    *why = rc == SB_LIMIT ? "insufficient storage\n" : "upload failed\n";
    return rc == SB_LIMIT ? 507 : 500;
}

void web_upload_put_abort(struct web_upload *u)
{
    if (!u)
        return;
    upload_store_abort(u->put);
    free(u);
}

static void upload_put_done(struct web_conn *h, struct web_upload *u)
{
    if (u->got != u->size) {            /* http_parser stops at Content-Length */
        web_upload_put_abort(u);
        web_http_error(h, 400, "bad request\n");
        return;
    }
    sb_rc rc = upload_store_commit(u->put);
    log_info("upload_stored", "id=%s size=%lld peer=%s rc=%s", u->id, u->size,
             web_http_peer(h), sb_rc_name(rc));
    free(u);
    if (rc == SB_LIMIT)
        log_warn("upload_disk_full", "dir=%s", sb_log_q(up.dir));
    if (rc != SB_OK)
        web_http_error(h, rc == SB_LIMIT ? 507 : 500,
                       rc == SB_LIMIT ? "insufficient storage\n" : "upload failed\n");
    else
        web_respond(h, 201, "text/plain; charset=utf-8", "stored\n", 7, 1);
}

/* One "bytes=a-b" / "bytes=a-" / "bytes=-n" range of a file of len bytes:
 * 1 with [*from, *to], 0 to answer the whole file (absent, several ranges,
 * another unit), -1 unsatisfiable. */
static int upload_range(const char *h, off_t len, off_t *from, off_t *to)
{
    char *end;
    if (strncasecmp(h, "bytes=", 6) || strchr(h, ','))
        return 0;
    h += 6;
    if (*h == '-') {
        long long n = strtoll(h + 1, &end, 10);
        if (*end || n <= 0 || h[1] < '0' || h[1] > '9')
            return 0;
        if (len == 0)
            return -1;
        *from = n >= len ? 0 : len - n;
        *to = len - 1;
        return 1;
    }
    if (*h < '0' || *h > '9')
        return 0;
    long long a = strtoll(h, &end, 10), b = len - 1;
    if (*end != '-')
        return 0;
    if (end[1]) {
        char *e2;
        if (end[1] < '0' || end[1] > '9')
            return 0;
        b = strtoll(end + 1, &e2, 10);
        if (*e2 || b < a)
            return 0;
    }
    if (a >= len)
        return -1;
    *from = a;
    *to = b >= len ? len - 1 : b;
    return 1;
}

static void upload_get(struct web_conn *h, struct web_req *r, int head)
{
    const char *id, *ename;
    char idc[UPLOAD_ID_LEN + 1], ctype[UPLOAD_CTYPE_MAX + 1], extra[256];
    int fd;
    off_t off, len, from = 0, to = 0;
    if (!upload_split(r->path, &id, &ename)) {
        web_http_error(h, 404, "not found\n");
        return;
    }
    memcpy(idc, id, UPLOAD_ID_LEN);
    idc[UPLOAD_ID_LEN] = '\0';
    if (upload_store_get(up.dir, idc, ename, &fd, &off, &len, ctype, sizeof ctype) != SB_OK) {
        web_http_error(h, 404, "not found\n");
        return;
    }
    int rg = *r->range ? upload_range(r->range, len, &from, &to) : 0;
    static const char common[] = "Accept-Ranges: bytes\r\nCache-Control: public, max-age=86400\r\n"
                                 "X-Content-Type-Options: nosniff\r\n"
                                 "Content-Security-Policy: sandbox; default-src 'none'\r\n";
    if (rg < 0) {
        snprintf(extra, sizeof extra, "%sContent-Range: bytes */%lld\r\n", common,
                 (long long)len);
        web_respond_file(h, 416, NULL, extra, fd, 0, 0, 1);
        return;
    }
    if (rg > 0) {
        snprintf(extra, sizeof extra, "%sContent-Range: bytes %lld-%lld/%lld\r\n", common,
                 (long long)from, (long long)to, (long long)len);
        web_respond_file(h, 206, ctype, extra, fd, off + from, to - from + 1, head);
        return;
    }
    web_respond_file(h, 200, ctype, common, fd, off, len, head);
}

void web_upload_request(struct web_conn *h, struct web_req *r, struct web_upload *u)
{
    switch (r->method) {
    case HTTP_PUT:
        if (u)
            upload_put_done(h, u);
        else
            web_http_error(h, 400, "bad request\n");
        return;
    case HTTP_GET:
    case HTTP_HEAD:
        upload_get(h, r, r->method == HTTP_HEAD);
        break;
    case HTTP_OPTIONS:
        web_respond(h, 204, NULL, "", 0, 1);
        break;
    default:
        web_http_error(h, 405, "method not allowed\n");
        break;
    }
    web_upload_put_abort(u);
}

/* ---- expiry ---------------------------------------------------------------------- */

static void upload_sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    int done = 0;
    long n = upload_sweep_step(up_sweep, (double)up.expire_days * 86400.0, UPLOAD_SWEEP_BUDGET,
                               &done);
    if (n > 0)
        log_info("upload_expired", "files=%ld dir=%s", n, sb_log_q(up.dir));
    w->repeat = done ? UPLOAD_SWEEP_EVERY : 1.0;
    ev_timer_again(loop, w);
}

/* ---- deleted accounts' files ----------------------------------------------------- */

static void upload_trash_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void upload_trash_taken(PGresult *res, void *arg)
{
    up_trash_busy = 0;
    if (!up_on)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (res)
            log_warn("upload_trash_failed", "error=%s", sb_log_q(PQresultErrorMessage(res)));
        return;                         /* the ids stay queued: the next turn */
    }
    int n = PQntuples(res);
    long removed = 0;
    for (int i = 0; i < n; i++)
        removed += upload_store_remove(up.dir, PQgetvalue(res, i, 0)) == SB_OK;
    if (n)
        log_info("upload_trashed", "ids=%d files=%ld dir=%s", n, removed, sb_log_q(up.dir));
    if (n == UPLOAD_TRASH_BATCH) {      /* more waiting: go on at once */
        up_trash_timer.repeat = 0.01;
        ev_timer_again(c2s.loop, &up_trash_timer);
    }
}

static void upload_trash_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    w->repeat = UPLOAD_TRASH_EVERY;
    ev_timer_again(loop, w);
    if (up_trash_busy || !c2s.pg)
        return;
    if (pgev_query(c2s.pg, UPLOAD_TRASH_TAKE_SQL, 0, NULL, upload_trash_taken, NULL) == SB_OK)
        up_trash_busy = 1;
}

sb_rc web_upload_init(void)
{
    sb_rc rc = upload_cfg_load(&up);
    if (rc == SB_DONE)
        return SB_OK;
    if (rc != SB_OK)
        return SB_ERROR;
    if (!*up.dir || access(up.dir, W_OK) != 0) {
        log_error("config_invalid", "key=upload.dir value=%s reason=\"a writable directory\"",
                  sb_log_q(up.dir));
        return SB_ERROR;
    }
    up_on = 1;
    up_sweep = upload_sweep_new(up.dir);
    ev_init(&up_sweep_timer, upload_sweep_cb);
    up_sweep_timer.repeat = 5.0;
    ev_timer_again(c2s.loop, &up_sweep_timer);
    ev_init(&up_trash_timer, upload_trash_cb);
    up_trash_timer.repeat = 1.0;
    ev_timer_again(c2s.loop, &up_trash_timer);
    log_info("upload_serving", "prefix=%s dir=%s expire_days=%ld", sb_log_q(up.prefix),
             sb_log_q(up.dir), up.expire_days);
    return SB_OK;
}

void web_upload_free_all(void)
{
    if (up_sweep) {
        ev_timer_stop(c2s.loop, &up_sweep_timer);
        ev_timer_stop(c2s.loop, &up_trash_timer);
    }
    upload_sweep_free(up_sweep);
    up_sweep = NULL;
    up_on = 0;
}
