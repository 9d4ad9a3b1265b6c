/* fuzz_envelope.c — a client stanza on its way to the router and back
 * (c2s/route.c's steps, common/env.c, common/route.c): the stanza is
 * parsed with the c2s limits, its `to` prepared (jid.c), stamped with the
 * sender's JID (c2s_stanza_stamp), put in an envelope keyed by the bare
 * `to` (env_encode), and what the receiver does is done: env_peek,
 * env_decode, parse the body. Checks: the header decodes to exactly what
 * was encoded, the body parses, has from = sender and to = the prepared
 * address, every other attribute and every child as sent, and the router's
 * tree-free scan of `to` (c2s_scan_attr, used for stale sids) agrees.
 * Inputs starting with \xff are raw header frames instead: a header that
 * decodes must encode back to the very same bytes, and HELLO bodies feed
 * the instance registry and the routing decision. */
#include "fuzz.h"
#include "xml.h"
#include "env.h"
#include "jid.h"
#include "route.h"
#include "c2s/c2s.h"

static const struct xml_limits lim = XML_LIMITS_DEFAULT;
static struct env_hdr h1, h2;
static uint8_t frame[ENV_HDR_MAX];
static struct jid to_jid;
static char to_full[JID_FULL_MAX + 1], to_bare[JID_BARE_MAX + 1];
static char scanned[JID_FULL_MAX + 1];
static struct sb_buf body, a, b;
static const char sender[] = "alice@localhost/phone";

static void raw_header(const uint8_t *data, size_t size)
{
    if (env_decode(&h1, data, size) == SB_OK) {
        long n = env_encode(&h1, frame, sizeof frame);
        FUZZ_CHECK(n == (long)size && memcmp(frame, data, size) == 0);
        uint8_t kind, route;
        const char *key;
        size_t keylen;
        FUZZ_CHECK(env_peek(data, size, &kind, &route, &key, &keylen) == SB_OK);
        FUZZ_CHECK(kind == h1.kind && route == h1.route && keylen == strlen(h1.key) &&
                   memcmp(key, h1.key, keylen) == 0);
    }
    /* The same bytes as a HELLO body from an instance, then a routing
     * decision for them as a key. */
    struct rt_registry r;
    rt_reg_init(&r);
    char old_kind[RT_KIND_MAX + 1];
    (void)rt_reg_hello(&r, "sm1", 3, (const char *)data, size, 1.0, old_kind);
    (void)rt_reg_hello(&r, "sm2", 3, "kind=sm domains=localhost,example.org", 37, 1.0, old_kind);
    const char *reason;
    size_t kl = size > ENV_STR_MAX ? ENV_STR_MAX : size;
    (void)rt_route_jid(&r, (const char *)data, kl, 0, &reason);
    (void)rt_route_jid(&r, (const char *)data, kl, 1, &reason);
    struct sb_buf m = SB_BUF_INIT;
    FUZZ_CHECK(rt_members_body(&r, &m) == SB_OK);
    sb_buf_free(&m);
    rt_reg_free(&r);
}

/* The children of n, serialised. */
static void children(const struct xml_node *n, struct sb_buf *out)
{
    sb_buf_reset(out);
    for (const struct xml_node *c = n->children; c; c = c->next)
        FUZZ_CHECK(xml_serialize(c, out) == SB_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet();
        init = 1;
    }
    if (size && data[0] == 0xff) {
        raw_header(data + 1, size - 1);
        return 0;
    }
    enum xml_err err;
    struct xml_doc *d = xml_doc_parse((const char *)data, size, &lim, &err);
    if (!d)
        return 0;
    const struct xml_node *st = d->root;
    const char *to = xml_attr(st, "to");
    const char *to_out = NULL;
    if (to && *to) {
        if (jid_parse(&to_jid, to) != SB_OK) {
            xml_doc_free(d);
            return 0;                     /* c2s answers jid-malformed */
        }
        jid_full(&to_jid, to_full);
        jid_bare(&to_jid, to_bare);
        to_out = to_full;
    } else {
        FUZZ_CHECK(jid_bare_of(sender, to_bare, sizeof to_bare) > 0);
    }
    FUZZ_CHECK(c2s_stanza_stamp(st, sender, to_out, &body) == SB_OK);

    env_init(&h1, ENV_STANZA, ENV_ROUTE_JID);
    snprintf(h1.key, sizeof h1.key, "%s", to_bare);
    snprintf(h1.sender, sizeof h1.sender, "c2s1");
    snprintf(h1.sid, sizeof h1.sid, "abcdefghij0123456789");
    snprintf(h1.aux, sizeof h1.aux, "%s", sender);
    h1.flags = ENV_F_SEQ;
    h1.seq = size * 2654435761u;
    long n = env_encode(&h1, frame, sizeof frame);
    FUZZ_CHECK(n > 0);
    uint8_t kind, route;
    const char *key;
    size_t keylen;
    FUZZ_CHECK(env_peek(frame, (size_t)n, &kind, &route, &key, &keylen) == SB_OK);
    FUZZ_CHECK(kind == ENV_STANZA && route == ENV_ROUTE_JID && keylen == strlen(to_bare) &&
               memcmp(key, to_bare, keylen) == 0);
    FUZZ_CHECK(env_decode(&h2, frame, (size_t)n) == SB_OK);
    FUZZ_CHECK(!strcmp(h1.key, h2.key) && !strcmp(h1.sender, h2.sender) &&
               !strcmp(h1.sid, h2.sid) && !strcmp(h1.op, h2.op) && !strcmp(h1.aux, h2.aux) &&
               h1.seq == h2.seq && h1.flags == h2.flags);

    /* The receiving side. */
    struct xml_limits big = {body.len * 2 + 64, lim.max_depth + 1};
    struct xml_doc *d2 = xml_doc_parse(body.data, body.len, &big, &err);
    FUZZ_CHECK(d2);
    const struct xml_node *rt = d2->root;
    FUZZ_CHECK(!strcmp(rt->name, st->name));
    FUZZ_CHECK(!strcmp(xml_attr(rt, "from"), sender));
    const char *rto = xml_attr(rt, "to");
    FUZZ_CHECK(to_out ? rto && !strcmp(rto, to_out) : !rto);
    long sl = c2s_scan_attr(body.data, body.len, "to", scanned, sizeof scanned);
    FUZZ_CHECK(to_out ? sl >= 0 && !strcmp(scanned, to_out) : sl < 0);
    for (int i = 0; i < st->nattrs; i++) {
        const char *nm = st->attrs[i].name;
        if (!strcmp(nm, "from") || !strcmp(nm, "to"))
            continue;
        const char *v = xml_attr(rt, nm);
        FUZZ_CHECK(v && !strcmp(v, st->attrs[i].value));
    }
    children(st, &a);
    children(rt, &b);
    FUZZ_CHECK(a.len == b.len && (!a.len || memcmp(a.data, b.data, a.len) == 0));
    xml_doc_free(d2);
    xml_doc_free(d);
    return 0;
}
