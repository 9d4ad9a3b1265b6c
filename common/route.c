/* route.c — registry, rendezvous hashing and the ROUTE_JID decision
 * (see route.h). A cluster has tens of instances, so plain arrays and
 * linear scans beat any index here. */
#include "route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hashing ----------------------------------------------------------- */

uint64_t rt_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= RT_FNV_PRIME;
    }
    return h;
}

static uint64_t rt_seed(const char *instance)
{
    return rt_fnv1a64(rt_fnv1a64(RT_FNV_OFFSET, instance, strlen(instance)), "\n", 1);
}

uint64_t rt_score(const char *instance, const char *key, size_t keylen)
{
    return rt_fnv1a64(rt_seed(instance), key, keylen);
}

/* ---- registry ---------------------------------------------------------- */

void rt_reg_init(struct rt_registry *r)
{
    memset(r, 0, sizeof *r);
}

void rt_reg_free(struct rt_registry *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].domains);
    free(r->v);
    rt_reg_init(r);
}

struct rt_inst *rt_reg_find(const struct rt_registry *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n; i++)
        if (strlen(r->v[i].name) == len && memcmp(r->v[i].name, name, len) == 0)
            return &r->v[i];
    return NULL;
}

/* Instance names come from ZeroMQ identities: printable, no spaces, so they
 * can sit in log lines and in the members/status bodies unquoted. */
static int rt_name_ok(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == '=')
            return 0;
    return 1;
}

int rt_endpoint_local(const char *e)
{
    return !strncmp(e, "ipc://", 6) || !strncmp(e, "tcp://127.", 10) ||
           !strncmp(e, "tcp://localhost:", 16) || !strncmp(e, "tcp://[::1]:", 12);
}

struct rt_hello {
    char kind[RT_KIND_MAX + 1];
    long pid, sessions;
    const char *domains;
    size_t domains_len;
    const char *direct;
    size_t direct_len;
    char inc[RT_INC_MAX + 1];
    int remote;             /* addr= (written by a router) is not loopback */
};

static long rt_parse_long(const char *v, size_t n)
{
    long x = 0;
    for (size_t i = 0; i < n && v[i] >= '0' && v[i] <= '9' && x < 100000000000L; i++)
        x = x * 10 + (v[i] - '0');
    return x;
}

static void rt_hello_field(struct rt_hello *h, const char *k, size_t kn, const char *v, size_t vn)
{
    if (kn == 4 && memcmp(k, "kind", 4) == 0) {
        if (rt_name_ok(v, vn, RT_KIND_MAX)) {
            memcpy(h->kind, v, vn);
            h->kind[vn] = '\0';
        }
    } else if (kn == 3 && memcmp(k, "pid", 3) == 0) {
        h->pid = rt_parse_long(v, vn);
    } else if (kn == 8 && memcmp(k, "sessions", 8) == 0) {
        h->sessions = rt_parse_long(v, vn);
    } else if (kn == 6 && memcmp(k, "direct", 6) == 0 && rt_name_ok(v, vn, RT_DIRECT_MAX) &&
               vn >= 6 && (!memcmp(v, "tcp://", 6) || !memcmp(v, "ipc://", 6))) {
        /* memcmp with the length checked: a ZeroMQ body has no NUL, and
         * strncmp read past a body ending in "direct=tcp" (tests/fuzz). */
        h->direct = v;
        h->direct_len = vn;
    } else if (kn == 3 && memcmp(k, "inc", 3) == 0 && rt_name_ok(v, vn, RT_INC_MAX)) {
        memcpy(h->inc, v, vn);
        h->inc[vn] = '\0';
    } else if (kn == 4 && memcmp(k, "addr", 4) == 0 && vn > 0) {
        /* The address a router saw the HELLO come from (lease bodies). */
        h->remote = !((vn > 4 && memcmp(v, "127.", 4) == 0) || (vn == 3 && memcmp(v, "::1", 3) == 0));
    } else if (kn == 7 && memcmp(k, "domains", 7) == 0 && !memchr(v, '\0', vn)) {
        h->domains = v;
        h->domains_len = vn;
    }
}

/* "kind=c2s pid=1 domains=a,b sessions=4"; unknown keys are ignored so
 * components can announce more later. */
static int rt_hello_parse(struct rt_hello *h, const char *body, size_t len)
{
    memset(h, 0, sizeof *h);
    h->domains = "";
    size_t i = 0;
    while (i < len) {
        while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r'))
            i++;
        size_t start = i;
        while (i < len && body[i] != ' ' && body[i] != '\t' && body[i] != '\n' && body[i] != '\r')
            i++;
        const char *eq = memchr(body + start, '=', i - start);
        if (eq)
            rt_hello_field(h, body + start, (size_t)(eq - body - start), eq + 1,
                           (size_t)(body + i - eq - 1));
    }
    return h->kind[0] ? 0 : -1;
}

static struct rt_inst *rt_reg_add(struct rt_registry *r, const char *name, size_t len)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct rt_inst *v = realloc(r->v, cap * sizeof *v);
        if (!v)
            return NULL;
        r->v = v;
        r->cap = cap;
    }
    struct rt_inst *in = &r->v[r->n];
    memset(in, 0, sizeof *in);
    memcpy(in->name, name, len);
    in->name[len] = '\0';
    in->seed = rt_seed(in->name);
    in->domains = strdup("");
    if (!in->domains)
        return NULL;
    r->n++;
    return in;
}

static int rt_domains_set(struct rt_inst *in, const struct rt_hello *h)
{
    if (strlen(in->domains) == h->domains_len &&
        memcmp(in->domains, h->domains, h->domains_len) == 0)
        return 0;
    char *d = malloc(h->domains_len + 1);
    if (!d)
        return 0;    /* keep the old list; the next HELLO retries */
    memcpy(d, h->domains, h->domains_len);
    d[h->domains_len] = '\0';
    free(in->domains);
    in->domains = d;
    return RT_CH_DOMAINS;
}

static int rt_direct_set(const struct rt_registry *r, struct rt_inst *in,
                         const struct rt_hello *h)
{
    char d[RT_DIRECT_MAX + 1] = "";
    if (h->direct) {
        memcpy(d, h->direct, h->direct_len);
        d[h->direct_len] = '\0';
        if ((r->remote_hello || h->remote) && rt_endpoint_local(d))
            d[0] = '\0';    /* loopback of another host: nobody here can reach it */
    }
    if (!strcmp(d, in->direct))
        return 0;
    strcpy(in->direct, d);
    return RT_CH_DIRECT;
}

int rt_reg_hello(struct rt_registry *r, const char *name, size_t name_len,
                 const char *body, size_t body_len, double now, char *old_kind)
{
    struct rt_hello h;
    if (!rt_name_ok(name, name_len, ENV_NAME_MAX) || rt_hello_parse(&h, body, body_len) != 0)
        return -1;
    int ch = 0;
    struct rt_inst *in = rt_reg_find(r, name, name_len);
    if (!in) {
        if (!(in = rt_reg_add(r, name, name_len)))
            return -1;
        ch |= RT_CH_NEW;
    } else {
        if (old_kind)
            strcpy(old_kind, in->kind);
        if (strcmp(in->kind, h.kind) != 0)
            ch |= RT_CH_KIND;
        if (in->inc[0] && h.inc[0] ? strcmp(in->inc, h.inc) != 0
                                   : in->pid && h.pid && in->pid != h.pid)
            ch |= RT_CH_RESTART;
    }
    strcpy(in->kind, h.kind);
    in->pid = h.pid;
    strcpy(in->inc, h.inc);
    in->sessions = h.sessions;
    in->last_hello = now;
    return ch | rt_domains_set(in, &h) | rt_direct_set(r, in, &h);
}

long rt_reg_find_dead(const struct rt_registry *r, double now, double timeout)
{
    for (size_t i = 0; i < r->n; i++)
        if (now - r->v[i].last_hello > timeout)
            return (long)i;
    return -1;
}

void rt_reg_remove(struct rt_registry *r, size_t idx)
{
    if (idx >= r->n)
        return;
    free(r->v[idx].domains);
    memmove(&r->v[idx], &r->v[idx + 1], (r->n - idx - 1) * sizeof r->v[0]);
    r->n--;
}

size_t rt_reg_count_kind(const struct rt_registry *r, const char *kind)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += strcmp(r->v[i].kind, kind) == 0;
    return n;
}

const struct rt_inst *rt_pick(const struct rt_registry *r, const char *kind,
                              const char *key, size_t keylen)
{
    return rt_pick_holding(r, kind, NULL, 0, key, keylen);
}

/* ---- routing ----------------------------------------------------------- */

static int rt_csv_has(const char *csv, const char *s, size_t len);

const struct rt_inst *rt_pick_holding(const struct rt_registry *r, const char *kind,
                                      const char *dom, size_t dlen, const char *key,
                                      size_t keylen)
{
    const struct rt_inst *best = NULL;
    uint64_t best_score = 0;
    for (size_t i = 0; i < r->n; i++) {
        const struct rt_inst *in = &r->v[i];
        if (strcmp(in->kind, kind) != 0 || (dom && !rt_csv_has(in->domains, dom, dlen)))
            continue;
        uint64_t s = rt_fnv1a64(in->seed, key, keylen);
        /* Ties (practically never) go to the smaller name so every router agrees. */
        if (!best || s > best_score || (s == best_score && strcmp(in->name, best->name) < 0)) {
            best = in;
            best_score = s;
        }
    }
    return best;
}

void rt_key_domain(const char *key, size_t len, const char **dom, size_t *dlen)
{
    const char *slash = memchr(key, '/', len);
    if (slash)    /* a full JID slipped in: the resource may contain '@' */
        len = (size_t)(slash - key);
    const char *at = memchr(key, '@', len);
    *dom = at ? at + 1 : key;
    *dlen = len - (size_t)(*dom - key);
}

static int rt_csv_has(const char *csv, const char *s, size_t len)
{
    while (*csv) {
        const char *end = strchr(csv, ',');
        size_t n = end ? (size_t)(end - csv) : strlen(csv);
        if (n == len && memcmp(csv, s, len) == 0)
            return 1;
        if (!end)
            break;
        csv = end + 1;
    }
    return 0;
}

int rt_domain_local(const struct rt_registry *r, const char *dom, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->v[i].kind, "sm") == 0 && rt_csv_has(r->v[i].domains, dom, len))
            return 1;
    return 0;
}

const struct rt_inst *rt_route_jid(const struct rt_registry *r, const char *key,
                                   size_t keylen, int from_s2s, const char **reason)
{
    const char *dom;
    size_t dlen;
    rt_key_domain(key, keylen, &dom, &dlen);
    /* Without any sm no domain is known to be local: sending to s2s then
     * could loop a local user's stanza out and back in. */
    if (rt_reg_count_kind(r, "sm") == 0) {
        *reason = "no-sm";
        return NULL;
    }
    if (rt_domain_local(r, dom, dlen))
        return rt_pick(r, "sm", key, keylen);
    /* A MUC service (XEP-0045) is held by the sb-muc instances that
     * announce it; the key is the room's bare JID, so one room lives on one
     * instance and rooms spread over them like users over sms. */
    const struct rt_inst *muc = rt_pick_holding(r, "muc", dom, dlen, key, keylen);
    if (muc)
        return muc;
    /* An external component (XEP-0114) is held by the s2s instances that
     * announce its domain; one recipient always on the same one. From s2s
     * too: a component may talk to another one. */
    const struct rt_inst *comp = rt_pick_holding(r, "s2s", dom, dlen, key, keylen);
    if (comp)
        return comp;
    const struct rt_inst *s2s = from_s2s ? NULL : rt_pick(r, "s2s", dom, dlen);
    if (!s2s)
        *reason = "remote-domain";
    return s2s;
}

/* ---- bodies ------------------------------------------------------------ */

sb_rc rt_members_body(const struct rt_registry *r, struct sb_buf *out)
{
    sb_buf_reset(out);
    for (size_t i = 0; i < r->n; i++) {
        const struct rt_inst *in = &r->v[i];
        sb_rc rc = !strcmp(in->kind, "sm")
                       ? sb_buf_printf(out, "%s %s domains=%s%s%s\n", in->kind, in->name,
                                       in->domains, in->direct[0] ? " direct=" : "", in->direct)
                   : !strcmp(in->kind, "router") && in->direct[0]
                       ? sb_buf_printf(out, "%s %s direct=%s\n", in->kind, in->name, in->direct)
                       : sb_buf_printf(out, "%s %s\n", in->kind, in->name);
        if (rc != SB_OK)
            return SB_ERROR;
    }
    return SB_OK;
}

sb_rc rt_status_body(const struct rt_registry *r, double now, struct sb_buf *out)
{
    sb_buf_reset(out);
    for (size_t i = 0; i < r->n; i++) {
        const struct rt_inst *in = &r->v[i];
        long ms = (long)((now - in->last_hello) * 1000.0);
        if (sb_buf_printf(out, "name=%s kind=%s pid=%ld last_hello_ms=%ld sessions=%ld domains=%s%s%s\n",
                          in->name, in->kind, in->pid, ms < 0 ? 0 : ms, in->sessions,
                          in->domains, in->direct[0] ? " direct=" : "", in->direct) != SB_OK)
            return SB_ERROR;
    }
    return SB_OK;
}

/* ---- bus routing ids ---------------------------------------------------- */

void rt_id_make(char *out, size_t cap, const char *name)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[RT_NONCE_HEX / 2];
    char nonce[RT_NONCE_HEX + 1];
    sb_random(b, sizeof b);
    for (size_t i = 0; i < sizeof b; i++) {
        nonce[2 * i] = hex[b[i] >> 4];
        nonce[2 * i + 1] = hex[b[i] & 15];
    }
    nonce[RT_NONCE_HEX] = '\0';
    snprintf(out, cap, "%s%c%s", name, RT_ID_SEP, nonce);
}

size_t rt_id_name_len(const char *id, size_t len)
{
    const char *sep = memchr(id, RT_ID_SEP, len);
    return sep ? (size_t)(sep - id) : len;
}

int rt_id_speaks_for(const char *uid, int curve, const char *id, size_t len)
{
    if (!curve)
        return 1;
    size_t n = rt_id_name_len(id, len);
    return uid && strlen(uid) == n && memcmp(uid, id, n) == 0;
}

static struct rt_addr *rt_addrs_find(const struct rt_addrs *a, const char *name, size_t nlen)
{
    for (size_t i = 0; i < a->n; i++)
        if (strlen(a->v[i].name) == nlen && memcmp(a->v[i].name, name, nlen) == 0)
            return &a->v[i];
    return NULL;
}

void rt_addrs_learn(struct rt_addrs *a, const char *id, size_t len)
{
    size_t nlen = rt_id_name_len(id, len);
    if (nlen > ENV_NAME_MAX || len > RT_ID_MAX)
        return;
    struct rt_addr *e = rt_addrs_find(a, id, nlen);
    if (nlen == len && !e)
        return;                     /* no nonce: the name is the id */
    if (e && e->idlen == len && memcmp(e->id, id, len) == 0)
        return;                     /* the usual case: nothing new */
    if (!e) {
        if (a->n == a->cap) {
            size_t cap = a->cap ? 2 * a->cap : 16;
            struct rt_addr *v = realloc(a->v, cap * sizeof *v);
            if (!v)
                return;
            a->v = v;
            a->cap = cap;
        }
        e = &a->v[a->n++];
        memcpy(e->name, id, nlen);
        e->name[nlen] = '\0';
    }
    memcpy(e->id, id, len);
    e->id[len] = '\0';
    e->idlen = len;
}

const char *rt_addrs_id(const struct rt_addrs *a, const char *name, size_t nlen, size_t *idlen)
{
    const struct rt_addr *e = rt_addrs_find(a, name, nlen);
    *idlen = e ? e->idlen : nlen;
    return e ? e->id : name;
}

void rt_addrs_free(struct rt_addrs *a)
{
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}
