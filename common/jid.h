/* jid.h — XMPP addresses (RFC 7622 shape, stringprep profiles of RFC 3920:
 * nodeprep, nameprep, resourceprep via libidn). Each part is at most 1023
 * bytes after preparation; the domain is lower-cased and a trailing dot
 * removed. */
#ifndef SB_JID_H
#define SB_JID_H

#include "sb.h"

#define JID_PART_MAX 1023
#define JID_BARE_MAX (JID_PART_MAX * 2 + 1)
#define JID_FULL_MAX (JID_PART_MAX * 3 + 2)

struct jid {
    char node[JID_PART_MAX + 1];      /* "" when absent */
    char domain[JID_PART_MAX + 1];
    char resource[JID_PART_MAX + 1];  /* "" when absent */
};

/* Parse and prepare s into j. SB_ERROR on an invalid JID (empty domain,
 * prohibited characters, a part too long, empty node before '@', …). */
sb_rc jid_parse(struct jid *j, const char *s);

/* Prepare one part in place-style: out must hold JID_PART_MAX+1 bytes. */
sb_rc jid_nodeprep(const char *in, char *out);
sb_rc jid_nameprep(const char *in, char *out);
sb_rc jid_resourceprep(const char *in, char *out);

/* "node@domain" or "domain" into out (JID_BARE_MAX+1 bytes). */
void jid_bare(const struct jid *j, char *out);
/* "node@domain/resource" (or shorter forms) into out (JID_FULL_MAX+1). */
void jid_full(const struct jid *j, char *out);

/* Fast, non-preparing split for already-prepared JIDs (the hot path):
 * copies the bare part of s into out (cap bytes); returns its length or -1. */
long jid_bare_of(const char *s, char *out, size_t cap);

#endif
