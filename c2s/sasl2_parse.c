/* sasl2_parse.c — reading one XEP-0388 <authenticate/> (sasl2.h). Every
 * value that leaves here is bounded and checked; what we do not know is
 * ignored (XEP-0388 lets clients add elements a server does not support). */
#include "sasl2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nettle/sha2.h>

static struct sb_buf parse_scratch;

/* Child text cut to cap-1 bytes on a UTF-8 boundary, control bytes out. */
static void parse_text(const struct xml_node *n, char *out, size_t cap)
{
    out[0] = '\0';
    if (!n)
        return;
    xml_text(n, &parse_scratch);
    const char *t = parse_scratch.data ? parse_scratch.data : "";
    size_t len = strlen(t), k = 0;
    if (len > cap - 1) {
        len = cap - 1;
        while (len > 0 && ((unsigned char)t[len] & 0xC0) == 0x80)
            len--;
    }
    for (size_t i = 0; i < len; i++)
        out[k++] = (unsigned char)t[i] < 0x20 ? ' ' : t[i];
    out[k] = '\0';
}

static int parse_ua_ok(const char *id)
{
    size_t n = strlen(id);
    return n > 0 && n <= SASL2_UA_MAX &&
           strspn(id, "0123456789abcdefABCDEFghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ-_.") == n;
}

static int parse_mech_ok(const char *m)
{
    size_t n = m ? strlen(m) : 0;
    return n > 0 && n <= SASL2_MECH_MAX &&
           strspn(m, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == n;
}

static int parse_digits(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= max && strspn(s, "0123456789") == n;
}

static const char *parse_bind(const struct xml_node *b, struct c2s_sasl2_req *r)
{
    r->bind = 1;
    parse_text(xml_child(b, "tag", NULL), r->tag, sizeof r->tag);
    for (struct xml_node *e = xml_first_elem(b); e; e = xml_next_elem(e)) {
        if (strcmp(e->name, "enable"))
            continue;
        const char *ns = xml_attr(e, "xmlns");
        if (ns && !strcmp(ns, NS_CARBONS2)) {
            r->carbons = 1;
        } else if (ns && !strcmp(ns, NS_SM3)) {
            const char *res = xml_attr(e, "resume"), *max = xml_attr(e, "max");
            if (max && !parse_digits(max, 9))
                return "bad sm max";
            r->sm_enable = 1;
            r->sm_resumable = res && (!strcmp(res, "true") || !strcmp(res, "1"));
            r->sm_max = max ? strtol(max, NULL, 10) : 0;
        }
    }
    return NULL;
}

const char *c2s_sasl2_parse(const struct xml_node *n, struct sb_buf *text,
                            struct c2s_sasl2_req *r, const char **cond)
{
    memset(r, 0, sizeof *r);
    r->count = -1;
    *cond = "malformed-request";
    const char *mech = xml_attr(n, "mechanism");
    if (!parse_mech_ok(mech)) {
        *cond = "invalid-mechanism";
        return "bad mechanism";
    }
    strcpy(r->mech, mech);
    const struct xml_node *ir = xml_child(n, "initial-response", NULL);
    if (ir) {
        xml_text(ir, text);
        r->initial = text->data ? text->data : "";
    }
    const struct xml_node *ua = xml_child(n, "user-agent", NULL);
    if (ua) {
        const char *id = xml_attr(ua, "id");
        if (id && !parse_ua_ok(id))
            return "bad user-agent id";
        if (id)
            strcpy(r->ua, id);
        parse_text(xml_child(ua, "software", NULL), r->software, sizeof r->software);
        parse_text(xml_child(ua, "device", NULL), r->device, sizeof r->device);
    }
    for (struct xml_node *e = xml_first_elem(n); e; e = xml_next_elem(e)) {
        const char *ns = xml_attr(e, "xmlns");
        const char *why = NULL;
        if (!ns)
            continue;                        /* SASL2's own children, read above */
        if (!strcmp(e->name, "bind") && !strcmp(ns, NS_BIND2)) {
            if (r->bind)
                return "two binds";
            why = parse_bind(e, r);
        } else if (!strcmp(e->name, "resume") && !strcmp(ns, NS_SM3)) {
            const char *previd = xml_attr(e, "previd"), *h = xml_attr(e, "h");
            if (!previd || !*previd || strlen(previd) > SASL2_PREVID_MAX ||
                strspn(previd, "abcdefghijklmnopqrstuvwxyz0123456789") != strlen(previd) ||
                !parse_digits(h, 10))
                return "bad resume";
            r->resume = 1;
            strcpy(r->previd, previd);
            strcpy(r->resume_h, h);
        } else if (!strcmp(e->name, "request-token") && !strcmp(ns, NS_FAST)) {
            const char *m = xml_attr(e, "mechanism");
            if (!parse_mech_ok(m) || strncmp(m, "HT-SHA-256-", 11))
                return "bad request-token mechanism";
            strcpy(r->token_mech, m);
        } else if (!strcmp(e->name, "fast") && !strcmp(ns, NS_FAST)) {
            const char *cnt = xml_attr(e, "count"), *inv = xml_attr(e, "invalidate");
            if (cnt && !parse_digits(cnt, 18))
                return "bad fast count";
            r->fast = 1;
            r->count = cnt ? strtoll(cnt, NULL, 10) : -1;
            r->invalidate = inv && (!strcmp(inv, "true") || !strcmp(inv, "1"));
        }
        if (why)
            return why;
    }
    if ((r->token_mech[0] || r->fast) && !r->ua[0])
        return "FAST needs a user-agent id";
    return NULL;
}

int c2s_sasl2_resource(const char *bare, const char *ua, const char *tag, char out[33])
{
    static const char digits[] = "0123456789abcdef";
    char t[SASL2_TAG_MAX + 1];
    size_t tl = strlen(tag);

    if (tl > SASL2_TAG_MAX) {
        tl = SASL2_TAG_MAX;
        while (tl > 0 && ((unsigned char)tag[tl] & 0xC0) == 0x80)
            tl--;
    }
    memcpy(t, tag, tl);
    t[tl] = '\0';
    if (!ua || !*ua) {
        snprintf(out, 33, "%s", t);
        return 0;
    }
    struct sha256_ctx h;
    uint8_t d[SHA256_DIGEST_SIZE];
    char hex[13];
    sha256_init(&h);
    sha256_update(&h, strlen(bare) + 1, (const uint8_t *)bare);
    sha256_update(&h, strlen(ua), (const uint8_t *)ua);
    sha256_digest(&h, sizeof d, d);
    for (int i = 0; i < 6; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[12] = '\0';
    snprintf(out, 33, "%s%s%s", t, *t ? "." : "", hex);
    return 1;
}
