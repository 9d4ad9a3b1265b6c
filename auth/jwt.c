/* jwt.c — a JWT from an identity provider (RFC 7519), checked with libjwt
 * (Debian's GnuTLS build: the signature code is the library's, not ours).
 * Per domain ([domain.NAME]): jwt_alg (HS256 | HS384 | HS512 | RS256 |
 * RS384 | RS512 | ES256 | ES384 | ES512; exactly one, `none` never),
 * jwt_key (a file: the shared secret for HS*, a PEM public key otherwise),
 * jwt_issuer and jwt_audience (checked when set), jwt_user_claim (default
 * `sub`: a bare JID on this domain or a local part), jwt_leeway (seconds
 * of clock skew allowed for exp/nbf, default 30). `exp` is required.
 * The key files are read again at most every JWT_KEY_TTL seconds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jwt.h>

#include "config.h"
#include "jid.h"
#include "log.h"
#include "auth-int.h"

#define JWT_KEY_MAX   16384
#define JWT_KEY_TTL   60.0
#define JWT_KEY_SLOTS 8

struct jwt_key_slot {
    char *path;
    unsigned char *data;
    size_t len;
    time_t loaded;
};
static struct jwt_key_slot jwt_keys[JWT_KEY_SLOTS];

/* Read a key file (trailing newlines dropped: a secret written by `echo`). */
static int jwt_read_file(const char *path, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    unsigned char *buf = malloc(JWT_KEY_MAX + 1);
    size_t n = buf ? fread(buf, 1, JWT_KEY_MAX + 1, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n > JWT_KEY_MAX) {
        free(buf);
        return -1;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* The cached bytes of path, read again when older than JWT_KEY_TTL. */
static const struct jwt_key_slot *jwt_key(const char *path)
{
    time_t now = time(NULL);
    struct jwt_key_slot *free_slot = NULL, *oldest = &jwt_keys[0];

    for (int i = 0; i < JWT_KEY_SLOTS; i++) {
        struct jwt_key_slot *k = &jwt_keys[i];
        if (k->path && !strcmp(k->path, path)) {
            if (difftime(now, k->loaded) < JWT_KEY_TTL)
                return k;
            free_slot = k;
            break;
        }
        if (!k->path && !free_slot)
            free_slot = k;
        if (k->loaded < oldest->loaded)
            oldest = k;
    }
    struct jwt_key_slot *k = free_slot ? free_slot : oldest;
    unsigned char *data;
    size_t len;
    if (jwt_read_file(path, &data, &len) != 0) {
        log_warn("jwt_key_unreadable", "path=%s", sb_log_q(path));
        return NULL;
    }
    if (k->path != path) {
        free(k->path);
        k->path = strdup(path);
    }
    free(k->data);
    k->data = data;
    k->len = len;
    k->loaded = now;
    return k->path ? k : NULL;
}

/* aud is a string or an array of strings (RFC 7519 §4.1.3). */
static int jwt_aud_ok(jwt_t *j, const char *want)
{
    const char *s = jwt_get_grant(j, "aud");
    if (s)
        return !strcmp(s, want);
    char *json = jwt_get_grants_json(j, "aud");
    if (!json)
        return 0;
    char quoted[512];
    snprintf(quoted, sizeof quoted, "\"%s\"", want);
    int ok = json[0] == '[' && strstr(json, quoted) != NULL;
    free(json);
    return ok;
}

/* The time claims, with leeway. NULL when fine, else the reason. */
static const char *jwt_times(jwt_t *j, long leeway)
{
    time_t now = time(NULL);
    errno = 0;
    long exp = jwt_get_grant_int(j, "exp");
    if (errno == ENOENT || exp <= 0)
        return "no-exp";
    if ((long)now > exp + leeway)
        return "expired";
    errno = 0;
    long nbf = jwt_get_grant_int(j, "nbf");
    if (errno != ENOENT && nbf > (long)now + leeway)
        return "not-yet-valid";
    return NULL;
}

/* The claim naming the user: "user@domain" (this domain) or "user". */
static const char *jwt_user(jwt_t *j, const char *domain, char *user)
{
    const char *claim = sb_config_str_in("domain", domain, "jwt_user_claim", "sub");
    const char *v = jwt_get_grant(j, claim);
    struct jid jj;
    char node[JID_PART_MAX + 1];

    if (!v || !*v)
        return "no-user-claim";
    if (strchr(v, '@')) {
        if (jid_parse(&jj, v) != SB_OK || !jj.node[0] || jj.resource[0])
            return "bad-user-claim";
        if (strcmp(jj.domain, domain))
            return "other-domain";
        snprintf(user, JID_PART_MAX + 1, "%s", jj.node);
        return NULL;
    }
    if (strlen(v) > JID_PART_MAX)
        return "bad-user-claim";
    snprintf(node, sizeof node, "%s", v);
    return jid_nodeprep(node, user) == SB_OK ? NULL : "bad-user-claim";
}

/* Why a token that did not verify with our key failed: the alg its
 * header names (libjwt decodes without a key, keeping the header). */
static const char *jwt_why_bad(const char *token, jwt_alg_t want)
{
    jwt_t *j = NULL;
    const char *why = "malformed";
    if (jwt_decode(&j, token, NULL, 0) == 0 && j) {
        const char *alg = jwt_get_header(j, "alg");
        jwt_alg_t a = alg ? jwt_str_alg(alg) : JWT_ALG_INVAL;
        if (a == JWT_ALG_NONE)
            why = "alg-none";
        else if (a != want)
            why = "alg-not-allowed";
        else
            why = "bad-signature";
    }
    jwt_free(j);
    return why;
}

const char *auth_jwt_check(const char *domain, const char *token, char *user)
{
    const char *algs = sb_config_str_in("domain", domain, "jwt_alg", "");
    const char *path = sb_config_str_in("domain", domain, "jwt_key", "");
    jwt_alg_t want = *algs ? jwt_str_alg(algs) : JWT_ALG_INVAL;

    if (want == JWT_ALG_INVAL || want == JWT_ALG_NONE || !*path) {
        log_warn("jwt_not_configured", "domain=%s alg=%s", sb_log_q(domain), sb_log_q(algs));
        return "jwt-not-configured";
    }
    const struct jwt_key_slot *k = jwt_key(path);
    if (!k)
        return "jwt-key-unreadable";
    jwt_t *j = NULL;
    if (jwt_decode(&j, token, k->data, (int)k->len) != 0 || !j) {
        jwt_free(j);
        return jwt_why_bad(token, want);
    }
    /* The token's own alg must be the configured one: an RS256 key's PEM
     * text used as an HS256 secret must not pass. */
    const char *why = NULL;
    const char *iss = sb_config_str_in("domain", domain, "jwt_issuer", "");
    const char *aud = sb_config_str_in("domain", domain, "jwt_audience", "");
    long leeway = strtol(sb_config_str_in("domain", domain, "jwt_leeway", "30"), NULL, 10);
    if (jwt_get_alg(j) != want)
        why = jwt_get_alg(j) == JWT_ALG_NONE ? "alg-none" : "alg-not-allowed";
    else if (*iss && (!jwt_get_grant(j, "iss") || strcmp(jwt_get_grant(j, "iss"), iss)))
        why = "wrong-issuer";
    else if (*aud && !jwt_aud_ok(j, aud))
        why = "wrong-audience";
    else if (!(why = jwt_times(j, leeway < 0 ? 0 : leeway)))
        why = jwt_user(j, domain, user);
    jwt_free(j);
    return why;
}
