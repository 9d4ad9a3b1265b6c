/* env.c — encode and decode the envelope header (layout in env.h and
 * ENVELOPE.md). Decoding is strict: anything unexpected is SB_ERROR so the
 * router can bounce it as bad-envelope. */
#include "env.h"

#include <string.h>

void env_init(struct env_hdr *h, enum env_kind kind, enum env_route route)
{
    h->version = ENV_VERSION;
    h->kind = (uint8_t)kind;
    h->route = (uint8_t)route;
    h->flags = ENV_F_NONE;
    h->seq = 0;
    h->key[0] = h->sender[0] = h->sid[0] = h->op[0] = h->aux[0] = '\0';
}

static int env_kind_ok(unsigned k)
{
    return k >= ENV_STANZA && k <= ENV_BOUNCE;
}

static int env_route_ok(unsigned r)
{
    return r >= ENV_ROUTE_JID && r <= ENV_ROUTE_ROUTER;
}

static long env_put_str(uint8_t *buf, size_t cap, size_t off, const char *s,
                        size_t field_size, size_t max)
{
    size_t n = strnlen(s, field_size);
    if (n > max || off + 2 + n > cap)
        return -1;
    buf[off] = (uint8_t)(n >> 8);
    buf[off + 1] = (uint8_t)n;
    memcpy(buf + off + 2, s, n);
    return (long)(off + 2 + n);
}

int env_has_seq(uint8_t kind, uint8_t flags)
{
    return kind != ENV_BOUNCE && (flags & ENV_F_SEQ);
}

long env_encode(const struct env_hdr *h, uint8_t *buf, size_t cap)
{
    if (cap < 4)
        return -1;
    buf[0] = h->version;
    buf[1] = h->kind;
    buf[2] = h->route;
    buf[3] = h->flags;
    long off = 4;
#define ENV_PUT(f, max)                                                       \
    if ((off = env_put_str(buf, cap, (size_t)off, h->f, sizeof h->f, max)) < 0) \
        return -1;
    ENV_PUT(key, ENV_STR_MAX)
    ENV_PUT(sender, ENV_NAME_MAX)
    ENV_PUT(sid, ENV_NAME_MAX)
    ENV_PUT(op, ENV_NAME_MAX)
    ENV_PUT(aux, ENV_STR_MAX)
#undef ENV_PUT
    if (env_has_seq(h->kind, h->flags)) {
        if ((size_t)off + 8 > cap)
            return -1;
        for (int i = 0; i < 8; i++)
            buf[off + i] = (uint8_t)(h->seq >> (56 - 8 * i));
        off += 8;
    }
    return off;
}

/* Read one u16-length string at *off into out (max bytes + NUL). */
static sb_rc env_get_str(const uint8_t *buf, size_t len, size_t *off, char *out, size_t max)
{
    if (len - *off < 2)
        return SB_ERROR;
    size_t n = ((size_t)buf[*off] << 8) | buf[*off + 1];
    *off += 2;
    if (n > max || len - *off < n)
        return SB_ERROR;
    memcpy(out, buf + *off, n);
    out[n] = '\0';
    /* An embedded NUL would make the C string disagree with the wire. */
    if (memchr(out, '\0', n))
        return SB_ERROR;
    *off += n;
    return SB_OK;
}

sb_rc env_decode(struct env_hdr *h, const uint8_t *buf, size_t len)
{
    if (!buf || len < 4 || buf[0] != ENV_VERSION || !env_kind_ok(buf[1]) || !env_route_ok(buf[2]))
        return SB_ERROR;
    h->version = buf[0];
    h->kind = buf[1];
    h->route = buf[2];
    h->flags = buf[3];
    size_t off = 4;
    if (env_get_str(buf, len, &off, h->key, ENV_STR_MAX) != SB_OK ||
        env_get_str(buf, len, &off, h->sender, ENV_NAME_MAX) != SB_OK ||
        env_get_str(buf, len, &off, h->sid, ENV_NAME_MAX) != SB_OK ||
        env_get_str(buf, len, &off, h->op, ENV_NAME_MAX) != SB_OK ||
        env_get_str(buf, len, &off, h->aux, ENV_STR_MAX) != SB_OK)
        return SB_ERROR;
    h->seq = 0;
    if (env_has_seq(h->kind, h->flags)) {
        if (len - off < 8)
            return SB_ERROR;
        for (int i = 0; i < 8; i++)
            h->seq = h->seq << 8 | buf[off + i];
        off += 8;
    }
    /* Nothing else follows: trailing bytes mean a broken sender. */
    return off == len ? SB_OK : SB_ERROR;
}

sb_rc env_peek(const uint8_t *buf, size_t len, uint8_t *kind, uint8_t *route,
               const char **key, size_t *keylen)
{
    if (!buf || len < 6 || buf[0] != ENV_VERSION || !env_kind_ok(buf[1]) || !env_route_ok(buf[2]))
        return SB_ERROR;
    size_t n = ((size_t)buf[4] << 8) | buf[5];
    if (n > ENV_STR_MAX || len - 6 < n)
        return SB_ERROR;
    *kind = buf[1];
    *route = buf[2];
    *key = (const char *)buf + 6;
    *keylen = n;
    return SB_OK;
}

const char *env_kind_name(int kind)
{
    switch (kind) {
    case ENV_STANZA: return "stanza";
    case ENV_CONTROL: return "control";
    case ENV_HELLO: return "hello";
    case ENV_ADMIN: return "admin";
    case ENV_BOUNCE: return "bounce";
    }
    return "unknown";
}

const char *env_route_name(int route)
{
    switch (route) {
    case ENV_ROUTE_JID: return "jid";
    case ENV_ROUTE_INSTANCE: return "instance";
    case ENV_ROUTE_KIND: return "kind";
    case ENV_ROUTE_ROUTER: return "router";
    }
    return "unknown";
}
