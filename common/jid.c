/* jid.c — JID parsing and preparation (RFC 7622 shape, RFC 3920
 * stringprep profiles through libidn). Every part must be non-empty and at
 * most JID_PART_MAX bytes after preparation. */
#include "jid.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <stringprep.h>

/* Preparation may lengthen a part (case folding ß → ss), so it runs in a
 * roomier buffer and the limit is checked on the result. */
#define JID_WORK_MAX (4 * JID_PART_MAX + 4)

/* Pure ASCII (nearly every JID on the wire) needs none of stringprep's
 * Unicode work: no ASCII character is unassigned, mapped to nothing,
 * changed by NFKC or bidirectional, so each profile reduces to its case
 * folding and its prohibited ASCII characters (RFC 3454 tables B.2, C.1.1,
 * C.2.1; RFC 3920 appendix A.5 for nodeprep). test_jid checks this against
 * libidn for every ASCII character. Returns 1 done, 0 not ASCII, -1 bad. */
static int jid_prep_ascii(const char *in, size_t len, char *out, const Stringprep_profile *profile)
{
    int node = profile == stringprep_xmpp_nodeprep;
    int resource = profile == stringprep_xmpp_resourceprep;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)in[i] >= 0x80)
            return 0;
    if (len > JID_PART_MAX)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if ((node || resource) && (c < 0x20 || c == 0x7f))
            return -1;
        if (node && (c == ' ' || c == '"' || c == '&' || c == '\'' || c == '/' || c == ':' ||
                     c == '<' || c == '>' || c == '@'))
            return -1;
        out[i] = (char)(!resource && c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    out[len] = '\0';
    return 1;
}

static sb_rc jid_prep(const char *in, size_t len, char *out, const Stringprep_profile *profile)
{
    char work[JID_WORK_MAX + 1];
    if (len == 0 || len > JID_WORK_MAX || memchr(in, '\0', len))
        return SB_ERROR;
    int fast = jid_prep_ascii(in, len, out, profile);
    if (fast)
        return fast > 0 ? SB_OK : SB_ERROR;
    memcpy(work, in, len);
    work[len] = '\0';
    if (stringprep(work, sizeof work, 0, profile) != STRINGPREP_OK)
        return SB_ERROR;
    size_t n = strlen(work);
    if (n == 0 || n > JID_PART_MAX)
        return SB_ERROR;
    memcpy(out, work, n + 1);
    return SB_OK;
}

sb_rc jid_nodeprep(const char *in, char *out)
{
    return jid_prep(in, strlen(in), out, stringprep_xmpp_nodeprep);
}

sb_rc jid_resourceprep(const char *in, char *out)
{
    return jid_prep(in, strlen(in), out, stringprep_xmpp_resourceprep);
}

/* "[v6]" literal: validated and written in canonical form. */
static sb_rc jid_ip6_literal(const char *in, size_t len, char *out)
{
    char addr[64], canon[INET6_ADDRSTRLEN];
    struct in6_addr a6;
    if (len < 3 || len - 2 >= sizeof addr || in[len - 1] != ']')
        return SB_ERROR;
    memcpy(addr, in + 1, len - 2);
    addr[len - 2] = '\0';
    if (inet_pton(AF_INET6, addr, &a6) != 1 || !inet_ntop(AF_INET6, &a6, canon, sizeof canon))
        return SB_ERROR;
    snprintf(out, JID_PART_MAX + 1, "[%s]", canon);
    return SB_OK;
}

/* After nameprep: ASCII must be letter/digit/'-'/'_' in non-empty labels
 * (host names, IPv4 literals); non-ASCII (IDN) labels pass through. */
static sb_rc jid_domain_check(const char *d)
{
    size_t label = 0;
    for (const char *p = d;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.' || c == '\0') {
            if (label == 0)
                return SB_ERROR;
            if (c == '\0')
                return SB_OK;
            label = 0;
            continue;
        }
        if (c < 0x80 && !isalnum(c) && c != '-' && c != '_')
            return SB_ERROR;
        label++;
    }
}

static sb_rc jid_domain_prep(const char *in, size_t len, char *out)
{
    if (len > 0 && in[0] == '[')
        return jid_ip6_literal(in, len, out);
    if (len > 1 && in[len - 1] == '.')
        len--;   /* the root label's dot is not part of the name */
    if (jid_prep(in, len, out, stringprep_nameprep) != SB_OK)
        return SB_ERROR;
    return jid_domain_check(out);
}

sb_rc jid_nameprep(const char *in, char *out)
{
    return jid_domain_prep(in, strlen(in), out);
}

sb_rc jid_parse(struct jid *j, const char *s)
{
    j->node[0] = j->domain[0] = j->resource[0] = '\0';
    if (!s)
        return SB_ERROR;
    /* RFC 7622 §3.1: the resource starts at the first '/', the node ends
     * at the first '@' before it; the resource may contain both. */
    const char *slash = strchr(s, '/');
    size_t bare_len = slash ? (size_t)(slash - s) : strlen(s);
    const char *at = memchr(s, '@', bare_len);
    const char *dom = at ? at + 1 : s;
    size_t dom_len = bare_len - (size_t)(dom - s);

    if (at && jid_prep(s, (size_t)(at - s), j->node, stringprep_xmpp_nodeprep) != SB_OK)
        goto fail;
    if (jid_domain_prep(dom, dom_len, j->domain) != SB_OK)
        goto fail;
    if (slash && jid_prep(slash + 1, strlen(slash + 1), j->resource,
                          stringprep_xmpp_resourceprep) != SB_OK)
        goto fail;
    return SB_OK;
fail:
    j->node[0] = j->domain[0] = j->resource[0] = '\0';
    return SB_ERROR;
}

void jid_bare(const struct jid *j, char *out)
{
    if (j->node[0])
        snprintf(out, JID_BARE_MAX + 1, "%s@%s", j->node, j->domain);
    else
        snprintf(out, JID_BARE_MAX + 1, "%s", j->domain);
}

void jid_full(const struct jid *j, char *out)
{
    jid_bare(j, out);
    if (j->resource[0]) {
        size_t n = strlen(out);
        snprintf(out + n, JID_FULL_MAX + 1 - n, "/%s", j->resource);
    }
}

long jid_bare_of(const char *s, char *out, size_t cap)
{
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n + 1 > cap)
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return (long)n;
}
