/* scan.c — small pure helpers of the session core, without sockets or
 * the loop (so unit tests and tests/fuzz call them directly): reading one
 * attribute of a stanza the router handed us (to answer a stale sid
 * without parsing the whole body), recognising loopback listen addresses,
 * the name checks of a client stream header, and writing a stanza stamped
 * with the sender's JID for the router. */
#include "c2s.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

static int scan_is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Decode the five predefined entities and numeric ASCII references;
 * anything else is refused (returns -1). */
static long scan_decode(const char *v, size_t n, char *out, size_t cap)
{
    static const struct { const char *ent; char ch; } ents[] = {
        {"&amp;", '&'}, {"&apos;", '\''}, {"&quot;", '"'}, {"&lt;", '<'}, {"&gt;", '>'},
    };
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char ch = v[i];
        size_t used = 1;
        if (ch == '&') {
            size_t k;
            for (k = 0; k < SB_ARRAY_LEN(ents); k++) {
                size_t el = strlen(ents[k].ent);
                if (n - i >= el && memcmp(v + i, ents[k].ent, el) == 0) {
                    ch = ents[k].ch;
                    used = el;
                    break;
                }
            }
            if (k == SB_ARRAY_LEN(ents))
                return -1;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = ch;
        i += used;
    }
    out[o] = '\0';
    return (long)o;
}

/* Where the value of attribute `name` of the first start tag is: 0 and
 * the start and length of the value set, -1 when absent or not a tag. */
static int scan_find(const char *xml, size_t len, const char *name, size_t *vs_out,
                     size_t *vn_out)
{
    size_t i = 0, nlen = strlen(name);
    while (i < len && scan_is_space(xml[i]))
        i++;
    if (i >= len || xml[i] != '<')
        return -1;
    i++;
    while (i < len && !scan_is_space(xml[i]) && xml[i] != '>' && xml[i] != '/')
        i++;                                          /* element name */
    for (;;) {
        while (i < len && scan_is_space(xml[i]))
            i++;
        if (i >= len || xml[i] == '>' || xml[i] == '/')
            return -1;                                /* end of start tag */
        size_t an = i;
        while (i < len && xml[i] != '=' && !scan_is_space(xml[i]))
            i++;
        size_t alen = i - an;
        while (i < len && scan_is_space(xml[i]))
            i++;
        if (i >= len || xml[i] != '=')
            return -1;
        i++;
        while (i < len && scan_is_space(xml[i]))
            i++;
        if (i >= len || (xml[i] != '\'' && xml[i] != '"'))
            return -1;
        char q = xml[i++];
        size_t vs = i;
        while (i < len && xml[i] != q)
            i++;
        if (i >= len)
            return -1;
        if (alen == nlen && memcmp(xml + an, name, nlen) == 0) {
            *vs_out = vs;
            *vn_out = i - vs;
            return 0;
        }
        i++;
    }
}

long c2s_scan_attr(const char *xml, size_t len, const char *name, char *out, size_t cap)
{
    size_t vs, vn;
    if (scan_find(xml, len, name, &vs, &vn) != 0)
        return -1;
    return scan_decode(xml + vs, vn, out, cap);
}

int c2s_scan_has_attr(const char *xml, size_t len, const char *name)
{
    size_t vs, vn;
    return scan_find(xml, len, name, &vs, &vn) == 0;
}

int c2s_is_loopback(const char *addr)
{
    if (!addr)
        return 0;
    if (strcasecmp(addr, "localhost") == 0)
        return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, addr, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, addr, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* ---- stream header and stamping ------------------------------------------ */

#define SCAN_NS_STREAM "http://etherx.jabber.org/streams"
#define SCAN_NS_CLIENT "jabber:client"

const char *c2s_stream_check_names(const struct xml_node *hdr)
{
    const char *v;
    if (strcmp(hdr->name, "stream:stream") != 0)
        return strchr(hdr->name, ':') ? "invalid-namespace" : "bad-format";
    v = xml_attr(hdr, "xmlns:stream");
    if (!v || strcmp(v, SCAN_NS_STREAM) != 0)
        return "invalid-namespace";
    v = xml_attr(hdr, "xmlns");
    if (!v || strcmp(v, SCAN_NS_CLIENT) != 0)
        return "invalid-namespace";
    return NULL;
}

sb_rc c2s_stanza_stamp(const struct xml_node *st, const char *from, const char *to,
                       struct sb_buf *b)
{
    return xml_serialize_stamped(st, from, to, NULL, b);
}
