/* curve.c — ZeroMQ CURVE on the bus, and the ZAP handler that lets only
 * cluster members in.
 *
 * Keys. `sbctl keys generate NAME…` writes, under curve_dir (var/keys):
 *   server.key   the cluster's bus server keypair, the same on every bus
 *                server (routers and sms); secret, mode 0600
 *   server.pub   its public half only: all a client-only host needs
 *   NAME.key     one member's own client keypair; secret, mode 0600
 *   members.pub  "NAME <public>" per NAME.key found: the allow-list
 * A key file is two lines, `public=<40 Z85 chars>` and `secret=<…>`. Files
 * are created beside a temporary one and link(2)ed into place, so a key is
 * never overwritten and a half-written one never appears; members.pub is
 * replaced whole (rename).
 *
 * Servers. A bus ROUTER is a CURVE server with the server secret; every
 * client must know the server's public key in advance (CURVE is the
 * CurveZMQ handshake: the client proves it holds the secret of the public
 * key it presents, and the whole connection is encrypted and
 * authenticated). Which client keys may connect is not CURVE's business but
 * ZAP's (ZeroMQ RFC 27): for each handshake libzmq asks the handler bound
 * at inproc://zeromq.zap.01 in the server socket's context. Without a
 * handler libzmq admits every CURVE client, so sb_curve_server refuses to
 * run before sb_curve_zap_start.
 *
 * ZAP. A thread per process owns a REP socket on that endpoint. A request
 * is [version "1.0"][request id][domain][address][routing id][mechanism]
 * [credentials…]; the reply [version "1.0"][request id][status code]
 * [status text][user id][metadata]. Mechanism CURVE with a 32-byte client
 * key listed in members.pub gets 200 with the member's NAME as user id
 * (servers read it per message: zmq_msg_gets(msg, "User-Id")); anything
 * else gets 400 (a NULL client never gets this far: a CURVE server fails
 * its greeting on the mechanism mismatch), a malformed request 500. The
 * thread waits on the REP socket and on a pipe: sb_curve_free writes the
 * pipe and joins. zmq_ctx_term first is fine too: the poll fails with
 * ETERM, the thread closes its socket, and the term completes.
 *
 * What a refused peer sees: nothing at the application level. Its
 * handshake fails (a client socket monitor reports
 * ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, status 400), the server closes the TCP
 * connection, the client's messages stay queued and it reconnects at the
 * reconnect interval, failing the same way; the server's application never
 * sees a message from it. The server logs `bus_peer_refused` with the
 * reason, mechanism, key, address and the routing id the peer claimed, at
 * most once per 10 s per reason; the refusals in between are counted and
 * logged as one `bus_peers_refused count=N` when the window ends. */
#define _GNU_SOURCE             /* pipe2 */
#include "curve.h"
#include "config.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define CURVE_KEY 32
#define CURVE_NAME_MAX 63
#define CURVE_ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define CURVE_ZAP_FRAMES 8          /* kept per request; more are received and dropped */
#define CURVE_LOG_WINDOW 10.0       /* seconds between refusal lines per reason */

struct curve_member {
    char name[CURVE_NAME_MAX + 1];
    uint8_t key[CURVE_KEY];
};

enum curve_reason { CURVE_R_MECHANISM, CURVE_R_UNKNOWN_KEY, CURVE_R_MALFORMED, CURVE_R_N };

static const char *const curve_reason_names[CURVE_R_N] = {"mechanism", "unknown_key",
                                                          "malformed"};

/* Refusal lines of one reason: the ZAP thread's alone. */
struct curve_refusals {
    double last;                /* when the last line was logged; 0 never */
    unsigned long suppressed;   /* refused since, not logged */
};

struct sb_curve {
    int has_server, has_client, has_server_pub, has_members;
    uint8_t server_sec[CURVE_KEY], server_pub[CURVE_KEY];
    uint8_t pub[CURVE_KEY], sec[CURVE_KEY];
    char members_path[PATH_MAX];
    pthread_mutex_t lock;       /* members: read by the ZAP thread, swapped on reload */
    struct curve_member *m;
    size_t nm;
    /* ZAP handler */
    int zap_on;
    pthread_t zap_thread;
    void *zap_sock;             /* the thread's once started */
    int zap_pipe[2];
    struct curve_refusals refused[CURVE_R_N];
};

/* ---- key files --------------------------------------------------------- */

static char *curve_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* 40 Z85 characters → 32 bytes; 0 when malformed. */
static int curve_z85_key(const char *z85, uint8_t *out)
{
    return strlen(z85) == SB_CURVE_Z85_LEN && zmq_z85_decode(out, z85) != NULL;
}

static void curve_wipe(void *p, size_t n)
{
    volatile uint8_t *v = p;
    while (n--)
        *v++ = 0;
}

/* Read `public=` and (want_secret) `secret=` from path. SB_DECLINED when
 * the file does not exist; SB_ERROR (logged) when it is unreadable,
 * malformed, or its halves do not match. */
static sb_rc curve_read_key(const char *path, uint8_t *pub, uint8_t *sec)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return SB_DECLINED;
        log_error("bus_curve_key_unreadable", "file=%s err=%s", sb_log_q(path),
                  sb_log_q(strerror(errno)));
        return SB_ERROR;
    }
    struct stat st;
    if (sec && fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        log_warn("bus_curve_key_mode", "file=%s mode=%03o note=\"secret readable by others\"",
                 sb_log_q(path), (unsigned)(st.st_mode & 0777));
    char line[256], zpub[SB_CURVE_Z85_LEN + 1] = "", zsec[SB_CURVE_Z85_LEN + 1] = "";
    int bad = 0;
    while (fgets(line, sizeof line, f)) {
        char *s = curve_trim(line);
        if (!strncmp(s, "public=", 7))
            bad |= snprintf(zpub, sizeof zpub, "%s", s + 7) != SB_CURVE_Z85_LEN;
        else if (!strncmp(s, "secret=", 7))
            bad |= snprintf(zsec, sizeof zsec, "%s", s + 7) != SB_CURVE_Z85_LEN;
        else if (*s && *s != '#')
            bad = 1;
    }
    curve_wipe(line, sizeof line);
    fclose(f);
    char derived[SB_CURVE_Z85_LEN + 1];
    if (!bad && !curve_z85_key(zpub, pub))
        bad = 1;
    if (!bad && sec &&
        (!curve_z85_key(zsec, sec) || zmq_curve_public(derived, zsec) != 0 || strcmp(derived, zpub)))
        bad = 1;
    curve_wipe(zsec, sizeof zsec);
    if (bad) {
        log_error("bus_curve_key_bad", "file=%s note=\"want public= and %s 40 Z85 chars\"",
                  sb_log_q(path), sec ? "secret= lines of" : "a line of");
        return SB_ERROR;
    }
    return SB_OK;
}

/* Write text to path, which must not exist yet: a temporary file, then
 * link(2), which refuses to replace. SB_DONE when path already exists. */
static sb_rc curve_write_new(const char *path, const char *text, mode_t mode)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return SB_ERROR;
    unlink(tmp);                /* a stale one of a dead run with our pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        log_error("bus_curve_write_failed", "file=%s err=%s", sb_log_q(tmp),
                  sb_log_q(strerror(errno)));
        return SB_ERROR;
    }
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    int err = errno;
    close(fd);
    if (ok && link(tmp, path) != 0) {
        ok = 0;
        err = errno;
    }
    unlink(tmp);
    if (!ok && err == EEXIST)
        return SB_DONE;
    if (!ok) {
        log_error("bus_curve_write_failed", "file=%s err=%s", sb_log_q(path),
                  sb_log_q(strerror(err)));
        return SB_ERROR;
    }
    return SB_OK;
}

static sb_rc curve_path(char *out, const char *dir, const char *name, const char *ext)
{
    if ((size_t)snprintf(out, PATH_MAX, "%s/%s%s", dir, name, ext) < PATH_MAX)
        return SB_OK;
    log_error("bus_curve_path_too_long", "dir=%s name=%s", sb_log_q(dir), sb_log_q(name));
    return SB_ERROR;
}

static sb_rc curve_dir_make(const char *dir)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        return SB_OK;
    log_error("bus_curve_mkdir_failed", "dir=%s err=%s", sb_log_q(dir), sb_log_q(strerror(errno)));
    return SB_ERROR;
}

/* A new keypair into path (if it does not exist). */
static sb_rc curve_gen_key(const char *path)
{
    if (access(path, F_OK) == 0)
        return SB_DONE;
    char pub[SB_CURVE_Z85_LEN + 1], sec[SB_CURVE_Z85_LEN + 1], text[128];
    if (zmq_curve_keypair(pub, sec) != 0) {
        log_error("bus_curve_keypair_failed", "err=%s", sb_log_q(zmq_strerror(errno)));
        return SB_ERROR;
    }
    snprintf(text, sizeof text, "public=%s\nsecret=%s\n", pub, sec);
    sb_rc rc = curve_write_new(path, text, 0600);
    curve_wipe(sec, sizeof sec);
    curve_wipe(text, sizeof text);
    return rc;
}

int sb_curve_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (!n || n > CURVE_NAME_MAX || name[0] == '.' || !strcmp(name, "server") ||
        !strcmp(name, "members"))
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            return 0;
    return 1;
}

sb_rc sb_curve_gen_server(const char *dir)
{
    char key[PATH_MAX], pubf[PATH_MAX], text[64];
    uint8_t pub[CURVE_KEY], sec[CURVE_KEY];
    char zpub[SB_CURVE_Z85_LEN + 1];
    if (curve_dir_make(dir) != SB_OK || curve_path(key, dir, "server", ".key") != SB_OK ||
        curve_path(pubf, dir, "server", ".pub") != SB_OK)
        return SB_ERROR;
    sb_rc rc = curve_gen_key(key);
    if (rc == SB_ERROR || curve_read_key(key, pub, sec) != SB_OK)
        return SB_ERROR;
    curve_wipe(sec, sizeof sec);
    zmq_z85_encode(zpub, pub, sizeof pub);
    snprintf(text, sizeof text, "public=%s\n", zpub);
    /* server.pub follows server.key: made again if only it is missing. */
    if (curve_write_new(pubf, text, 0644) == SB_ERROR)
        return SB_ERROR;
    return rc;
}

sb_rc sb_curve_gen_member(const char *dir, const char *name)
{
    char path[PATH_MAX];
    if (!sb_curve_name_ok(name)) {
        log_error("bus_curve_bad_name", "name=%s note=\"[A-Za-z0-9_.-], not server/members\"",
                  sb_log_q(name));
        return SB_ERROR;
    }
    if (curve_dir_make(dir) != SB_OK || curve_path(path, dir, name, ".key") != SB_OK)
        return SB_ERROR;
    return curve_gen_key(path);
}

static int curve_member_cmp(const void *a, const void *b)
{
    return strcmp(((const struct curve_member *)a)->name, ((const struct curve_member *)b)->name);
}

/* Every DIR/NAME.key but server.key, sorted by name. */
static sb_rc curve_scan_members(const char *dir, struct curve_member **out, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_error("bus_curve_dir_unreadable", "dir=%s err=%s", sb_log_q(dir),
                  sb_log_q(strerror(errno)));
        return SB_ERROR;
    }
    struct curve_member *v = NULL;
    size_t cnt = 0, cap = 0;
    sb_rc rc = SB_OK;
    struct dirent *e;
    while (rc == SB_OK && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        char name[CURVE_NAME_MAX + 1], path[PATH_MAX];
        if (len <= 4 || strcmp(e->d_name + len - 4, ".key") || len - 4 > CURVE_NAME_MAX)
            continue;
        snprintf(name, sizeof name, "%.*s", (int)(len - 4), e->d_name);
        if (!sb_curve_name_ok(name))
            continue;           /* server.key, or a file that is not ours */
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            struct curve_member *nv = realloc(v, cap * sizeof *v);
            if (!nv) {
                rc = SB_ERROR;
                break;
            }
            v = nv;
        }
        snprintf(v[cnt].name, sizeof v[cnt].name, "%s", name);
        if (curve_path(path, dir, name, ".key") != SB_OK ||
            curve_read_key(path, v[cnt].key, NULL) != SB_OK)
            rc = SB_ERROR;
        else
            cnt++;
    }
    closedir(d);
    if (rc != SB_OK) {
        free(v);
        return rc;
    }
    if (cnt)
        qsort(v, cnt, sizeof *v, curve_member_cmp);
    *out = v;
    *n = cnt;
    return SB_OK;
}

sb_rc sb_curve_write_members(const char *dir, size_t *count)
{
    struct curve_member *v = NULL;
    size_t n = 0;
    char path[PATH_MAX], tmp[PATH_MAX];
    if (curve_path(path, dir, "members", ".pub") != SB_OK ||
        curve_path(tmp, dir, "members", ".pub.tmp") != SB_OK ||
        curve_scan_members(dir, &v, &n) != SB_OK)
        return SB_ERROR;
    FILE *f = fopen(tmp, "we");
    int ok = f != NULL;
    if (ok)
        ok = fprintf(f, "# Switchboard bus members: NAME <CURVE public key, Z85>.\n"
                        "# Written by `sbctl keys generate`; servers admit exactly these.\n") > 0;
    for (size_t i = 0; ok && i < n; i++) {
        char z[SB_CURVE_Z85_LEN + 1];
        zmq_z85_encode(z, v[i].key, CURVE_KEY);
        ok = fprintf(f, "%s %s\n", v[i].name, z) > 0;
    }
    free(v);
    if (f && fclose(f) != 0)
        ok = 0;
    if (ok && rename(tmp, path) != 0)
        ok = 0;
    if (!ok) {
        log_error("bus_curve_write_failed", "file=%s err=%s", sb_log_q(path),
                  sb_log_q(strerror(errno)));
        unlink(tmp);
        return SB_ERROR;
    }
    if (count)
        *count = n;
    return SB_OK;
}

/* members.pub → a new array. */
static sb_rc curve_read_members(const char *path, struct curve_member **out, size_t *n)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT)
            return SB_DECLINED;
        log_error("bus_curve_members_unreadable", "file=%s err=%s", sb_log_q(path),
                  sb_log_q(strerror(errno)));
        return SB_ERROR;
    }
    struct curve_member *v = NULL;
    size_t cnt = 0, cap = 0;
    char line[512];
    int lineno = 0;
    sb_rc rc = SB_OK;
    while (rc == SB_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = curve_trim(line), name[CURVE_NAME_MAX + 1], z[SB_CURVE_Z85_LEN + 1], extra;
        if (!*s || *s == '#')
            continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            struct curve_member *nv = realloc(v, cap * sizeof *v);
            if (!nv) {
                rc = SB_ERROR;
                break;
            }
            v = nv;
        }
        if (sscanf(s, "%63s %40s %c", name, z, &extra) != 2 || !sb_curve_name_ok(name) ||
            !curve_z85_key(z, v[cnt].key)) {
            log_error("bus_curve_members_bad", "file=%s line=%d note=\"want NAME <40 Z85 chars>\"",
                      sb_log_q(path), lineno);
            rc = SB_ERROR;
            break;
        }
        snprintf(v[cnt].name, sizeof v[cnt].name, "%s", name);
        cnt++;
    }
    fclose(f);
    if (rc != SB_OK) {
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return SB_OK;
}

/* ---- load -------------------------------------------------------------- */

/* The path the config names for key, or dir/file. */
static sb_rc curve_conf_path(char *out, const char *key, const char *dir, const char *name,
                             const char *ext)
{
    const char *v = sb_config_str(key, NULL);
    if (v && *v) {
        if ((size_t)snprintf(out, PATH_MAX, "%s", v) < PATH_MAX)
            return SB_OK;
        log_error("bus_curve_path_too_long", "key=%s", key);
        return SB_ERROR;
    }
    return curve_path(out, dir, name, ext);
}

/* The server's public key, for clients: curve_server_public, else
 * server.key's public half, else server.pub. */
static sb_rc curve_load_server_pub(struct sb_curve *c, const char *server_pub_path)
{
    const char *z = sb_config_str("curve_server_public", NULL);
    if (z && *z) {
        if (!curve_z85_key(z, c->server_pub)) {
            log_error("bus_curve_key_bad", "key=curve_server_public note=\"want 40 Z85 chars\"");
            return SB_ERROR;
        }
        c->has_server_pub = 1;
        return SB_OK;
    }
    if (c->has_server) {
        c->has_server_pub = 1;  /* already read from server.key */
        return SB_OK;
    }
    sb_rc rc = curve_read_key(server_pub_path, c->server_pub, NULL);
    c->has_server_pub = rc == SB_OK;
    return rc == SB_ERROR ? SB_ERROR : SB_OK;
}

static sb_rc curve_load_files(struct sb_curve *c, const char *instance)
{
    const char *dir = sb_config_str("curve_dir", "var/keys");
    char key[PATH_MAX], server[PATH_MAX], server_pub[PATH_MAX];
    if (curve_conf_path(key, "curve_key_file", dir, instance, ".key") != SB_OK ||
        curve_conf_path(server, "curve_server_key_file", dir, "server", ".key") != SB_OK ||
        curve_conf_path(server_pub, "curve_server_pub_file", dir, "server", ".pub") != SB_OK ||
        curve_conf_path(c->members_path, "curve_members_file", dir, "members", ".pub") != SB_OK)
        return SB_ERROR;
    sb_rc rc = curve_read_key(server, c->server_pub, c->server_sec);
    if (rc == SB_ERROR)
        return SB_ERROR;
    c->has_server = rc == SB_OK;
    rc = curve_read_key(key, c->pub, c->sec);
    if (rc == SB_ERROR)
        return SB_ERROR;
    c->has_client = rc == SB_OK;
    if (curve_load_server_pub(c, server_pub) != SB_OK)
        return SB_ERROR;
    rc = curve_read_members(c->members_path, &c->m, &c->nm);
    if (rc == SB_ERROR)
        return SB_ERROR;
    c->has_members = rc == SB_OK;
    if (!c->has_server && !c->has_client) {
        log_error("bus_curve_no_keys", "dir=%s key_file=%s server_key_file=%s "
                  "note=\"run sbctl keys generate, or set curve = off\"",
                  sb_log_q(dir), sb_log_q(key), sb_log_q(server));
        return SB_ERROR;
    }
    log_info("bus_curve", "server=%s client=%s server_public=%s members=%zu key_file=%s",
             c->has_server ? "yes" : "no", c->has_client ? "yes" : "no",
             c->has_server_pub ? "yes" : "no", c->nm, sb_log_q(c->has_client ? key : ""));
    return SB_OK;
}

sb_rc sb_curve_load(struct sb_curve **out, const char *instance)
{
    *out = NULL;
    if (!sb_config_bool("curve", 1)) {
        log_warn("bus_curve_off", "note=\"bus sockets unauthenticated and unencrypted: "
                 "anyone reaching them joins the cluster\"");
        return SB_OK;
    }
    if (!zmq_has("curve")) {
        log_error("bus_curve_unsupported", "note=\"libzmq built without CURVE\"");
        return SB_ERROR;
    }
    if (!instance || !*instance)
        instance = sb_log_instance();
    struct sb_curve *c = calloc(1, sizeof *c);
    if (!c)
        return SB_ERROR;
    pthread_mutex_init(&c->lock, NULL);
    c->zap_pipe[0] = c->zap_pipe[1] = -1;
    if (curve_load_files(c, instance) != SB_OK) {
        sb_curve_free(c);
        return SB_ERROR;
    }
    *out = c;
    return SB_OK;
}

sb_rc sb_curve_members_reload(struct sb_curve *c)
{
    if (!c)
        return SB_OK;
    struct curve_member *v = NULL, *old;
    size_t n = 0;
    sb_rc rc = curve_read_members(c->members_path, &v, &n);
    if (rc != SB_OK) {
        if (rc == SB_DECLINED)
            log_error("bus_curve_members_missing", "file=%s note=\"kept the list in force\"",
                      sb_log_q(c->members_path));
        return SB_ERROR;
    }
    pthread_mutex_lock(&c->lock);
    old = c->m;
    c->m = v;
    c->nm = n;
    c->has_members = 1;
    pthread_mutex_unlock(&c->lock);
    free(old);
    log_info("bus_curve_members", "members=%zu file=%s", n, sb_log_q(c->members_path));
    return SB_OK;
}

/* ---- sockets ----------------------------------------------------------- */

sb_rc sb_curve_server(const struct sb_curve *c, void *zsock)
{
    int one = 1;
    if (!c)
        return SB_OK;
    if (!c->has_server) {
        log_error("bus_curve_no_server_key", "note=\"a bus server needs server.key\"");
        return SB_ERROR;
    }
    if (!c->zap_on) {
        log_error("bus_curve_no_zap", "note=\"sb_curve_zap_start first, or any key gets in\"");
        return SB_ERROR;
    }
    if (zmq_setsockopt(zsock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_SECRETKEY, c->server_sec, CURVE_KEY) != 0 ||
        zmq_setsockopt(zsock, ZMQ_ZAP_DOMAIN, SB_CURVE_ZAP_DOMAIN,
                       strlen(SB_CURVE_ZAP_DOMAIN)) != 0) {
        log_error("bus_curve_setsockopt_failed", "side=server err=%s",
                  sb_log_q(zmq_strerror(errno)));
        return SB_ERROR;
    }
    return SB_OK;
}

sb_rc sb_curve_client(const struct sb_curve *c, void *zsock)
{
    if (!c)
        return SB_OK;
    if (!c->has_client || !c->has_server_pub) {
        log_error("bus_curve_no_client_key", "own_key=%s server_public=%s",
                  c->has_client ? "yes" : "no", c->has_server_pub ? "yes" : "no");
        return SB_ERROR;
    }
    if (zmq_setsockopt(zsock, ZMQ_CURVE_SERVERKEY, c->server_pub, CURVE_KEY) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_PUBLICKEY, c->pub, CURVE_KEY) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_SECRETKEY, c->sec, CURVE_KEY) != 0) {
        log_error("bus_curve_setsockopt_failed", "side=client err=%s",
                  sb_log_q(zmq_strerror(errno)));
        return SB_ERROR;
    }
    return SB_OK;
}

/* ---- ZAP handler (its own thread) -------------------------------------- */

/* A frame as printable text into out (non-printable bytes as '?'). */
static const char *zap_text(const zmq_msg_t *m, char *out, size_t cap)
{
    size_t n = zmq_msg_size((zmq_msg_t *)m);
    const unsigned char *p = zmq_msg_data((zmq_msg_t *)m);
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = p[i] >= 0x21 && p[i] < 0x7f ? (char)p[i] : '?';
    out[n] = '\0';
    return out;
}

static int zap_is(const zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size((zmq_msg_t *)m) == n && !memcmp(zmq_msg_data((zmq_msg_t *)m), s, n);
}

/* Log a refusal, or count it when this reason was logged in the window. */
static void zap_refused(struct sb_curve *c, enum curve_reason r, const char *mech,
                        const char *key, const char *address, const char *claimed)
{
    struct curve_refusals *rf = &c->refused[r];
    double now = sb_now();
    if (rf->last && now - rf->last < CURVE_LOG_WINDOW) {
        rf->suppressed++;
        return;
    }
    rf->last = now;
    log_warn("bus_peer_refused", "reason=%s mechanism=%s key=%s address=%s claimed=%s",
             curve_reason_names[r], sb_log_q(mech), key, sb_log_q(address), sb_log_q(claimed));
}

/* Summaries of the windows that ended; ms until the next one is due, -1 none. */
static long zap_refused_flush(struct sb_curve *c)
{
    double now = sb_now(), next = -1;
    for (int r = 0; r < CURVE_R_N; r++) {
        struct curve_refusals *rf = &c->refused[r];
        if (!rf->suppressed)
            continue;
        double due = rf->last + CURVE_LOG_WINDOW - now;
        if (due <= 0) {
            log_warn("bus_peers_refused", "reason=%s count=%lu seconds=%.0f",
                     curve_reason_names[r], rf->suppressed, CURVE_LOG_WINDOW);
            rf->suppressed = 0;
            rf->last = 0;       /* the next refusal is logged in full */
        } else if (next < 0 || due < next) {
            next = due;
        }
    }
    return next < 0 ? -1 : (long)(next * 1000) + 1;
}

/* The member whose public key is key, into user (empty: none). */
static void zap_member(struct sb_curve *c, const uint8_t *key, char *user, size_t cap)
{
    user[0] = '\0';
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->nm; i++)
        if (!memcmp(c->m[i].key, key, CURVE_KEY)) {
            snprintf(user, cap, "%s", c->m[i].name);
            break;
        }
    pthread_mutex_unlock(&c->lock);
}

/* Status for request f[0..n-1] (n counts every frame received). */
static const char *zap_decide(struct sb_curve *c, zmq_msg_t *f, int n, char *user, size_t cap,
                              const char **text)
{
    char mech[32], addr[64], claimed[256], key[SB_CURVE_Z85_LEN + 1] = "-";
    user[0] = '\0';
    if (n < 6 || !zap_is(&f[0], "1.0")) {
        zap_refused(c, CURVE_R_MALFORMED, "-", "-", "-", "-");
        *text = "malformed ZAP request";
        return "500";
    }
    zap_text(&f[5], mech, sizeof mech);
    zap_text(&f[3], addr, sizeof addr);
    zap_text(&f[4], claimed, sizeof claimed);
    if (!zap_is(&f[5], "CURVE") || n != 7 || zmq_msg_size(&f[6]) != CURVE_KEY) {
        zap_refused(c, CURVE_R_MECHANISM, mech, "-", addr, claimed);
        *text = "CURVE with a cluster member key required";
        return "400";
    }
    zap_member(c, zmq_msg_data(&f[6]), user, cap);
    if (!user[0]) {
        zmq_z85_encode(key, zmq_msg_data(&f[6]), CURVE_KEY);
        zap_refused(c, CURVE_R_UNKNOWN_KEY, mech, key, addr, claimed);
        *text = "not a cluster member";
        return "400";
    }
    log_debug("bus_peer_admitted", "member=%s address=%s claimed=%s", user, sb_log_q(addr),
              sb_log_q(claimed));
    *text = "OK";
    return "200";
}

static int zap_send(void *sock, const void *data, size_t len, int more)
{
    return zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) < 0 ? -1 : 0;
}

/* One request, one reply. -1 when the context is terminating. */
static int zap_serve_one(struct sb_curve *c)
{
    zmq_msg_t f[CURVE_ZAP_FRAMES];
    int n = 0, kept = 0, more = 1, err = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->zap_sock, n ? 0 : ZMQ_DONTWAIT) < 0) {
            err = errno;
            zmq_msg_close(&m);
            if (err == EINTR)
                continue;
            break;
        }
        more = zmq_msg_more(&m);
        n++;
        if (kept < CURVE_ZAP_FRAMES)
            f[kept++] = m;
        else
            zmq_msg_close(&m);
    }
    int rc = 0;
    if (err) {
        rc = err == EAGAIN ? 0 : -1;    /* EAGAIN: nothing after all */
    } else {
        char user[CURVE_NAME_MAX + 1];
        const char *text, *status = zap_decide(c, f, n, user, sizeof user, &text);
        const void *id = n >= 2 ? zmq_msg_data(&f[1]) : "";
        size_t idlen = n >= 2 ? zmq_msg_size(&f[1]) : 0;
        if (zap_send(c->zap_sock, "1.0", 3, 1) || zap_send(c->zap_sock, id, idlen, 1) ||
            zap_send(c->zap_sock, status, 3, 1) ||
            zap_send(c->zap_sock, text, strlen(text), 1) ||
            zap_send(c->zap_sock, user, strlen(user), 1) || zap_send(c->zap_sock, "", 0, 0))
            rc = errno == ETERM ? -1 : 0;
    }
    for (int i = 0; i < kept; i++)
        zmq_msg_close(&f[i]);
    return rc;
}

static void *zap_main(void *arg)
{
    struct sb_curve *c = arg;
    zmq_pollitem_t it[2] = {
        {.socket = c->zap_sock, .events = ZMQ_POLLIN},
        {.fd = c->zap_pipe[0], .events = ZMQ_POLLIN},
    };
    for (;;) {
        long timeout = zap_refused_flush(c);
        int rc = zmq_poll(it, 2, timeout);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0 || it[1].revents)
            break;              /* ETERM, or sb_curve_free */
        if ((it[0].revents & ZMQ_POLLIN) && zap_serve_one(c) < 0)
            break;
    }
    zap_refused_flush(c);
    zmq_close(c->zap_sock);     /* lets zmq_ctx_term finish */
    return NULL;
}

sb_rc sb_curve_zap_start(struct sb_curve *c, void *zctx)
{
    int linger = 0;
    if (!c)
        return SB_OK;
    if (c->zap_on || !c->has_members) {
        log_error("bus_zap_start_failed", "why=%s file=%s",
                  c->zap_on ? "already_started" : "no_members_file", sb_log_q(c->members_path));
        return SB_ERROR;
    }
    c->zap_sock = zmq_socket(zctx, ZMQ_REP);
    if (!c->zap_sock || zmq_setsockopt(c->zap_sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(c->zap_sock, CURVE_ZAP_ENDPOINT) != 0) {
        log_error("bus_zap_start_failed", "why=bind err=%s", sb_log_q(zmq_strerror(errno)));
        goto fail;
    }
    if (pipe2(c->zap_pipe, O_CLOEXEC) != 0) {
        log_error("bus_zap_start_failed", "why=pipe err=%s", sb_log_q(strerror(errno)));
        goto fail;
    }
    /* Signals stay with the main thread's loop. pthread_create is also the
     * memory barrier libzmq asks for when a socket changes threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&c->zap_thread, NULL, zap_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        log_error("bus_zap_start_failed", "why=thread err=%s", sb_log_q(strerror(err)));
        goto fail;
    }
    c->zap_on = 1;
    log_info("bus_zap", "endpoint=%s domain=%s members=%zu", CURVE_ZAP_ENDPOINT,
             SB_CURVE_ZAP_DOMAIN, c->nm);
    return SB_OK;
fail:
    if (c->zap_sock)
        zmq_close(c->zap_sock);
    c->zap_sock = NULL;
    for (int i = 0; i < 2; i++) {
        if (c->zap_pipe[i] >= 0)
            close(c->zap_pipe[i]);
        c->zap_pipe[i] = -1;
    }
    return SB_ERROR;
}

static void curve_zap_stop(struct sb_curve *c)
{
    if (!c->zap_on)
        return;
    while (write(c->zap_pipe[1], "x", 1) < 0 && errno == EINTR)
        ;
    pthread_join(c->zap_thread, NULL);
    close(c->zap_pipe[0]);
    close(c->zap_pipe[1]);
    c->zap_pipe[0] = c->zap_pipe[1] = -1;
    c->zap_sock = NULL;
    c->zap_on = 0;
}

void sb_curve_free(struct sb_curve *c)
{
    if (!c)
        return;
    curve_zap_stop(c);
    pthread_mutex_destroy(&c->lock);
    free(c->m);
    curve_wipe(c, sizeof *c);
    free(c);
}
