/* scan.c — small parsers that need no XML tree: reading one attribute of a
 * stanza the router handed us (to answer a stale sid without parsing the
 * whole body) and recognising loopback listen addresses. */
#include "c2s.h"

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

long c2s_scan_attr(const char *xml, size_t len, const char *name, char *out, size_t cap)
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
        if (alen == nlen && memcmp(xml + an, name, nlen) == 0)
            return scan_decode(xml + vs, i - vs, out, cap);
        i++;
    }
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
