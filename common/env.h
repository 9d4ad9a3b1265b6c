/* env.h — the envelope: what every Switchboard process sends over ZeroMQ.
 *
 * A message is two ZeroMQ frames (after the ROUTER identity frame, which
 * only the router sees):
 *   frame 1  header, binary, read by the router without touching XML
 *   frame 2  body: a serialised stanza (kind STANZA/BOUNCE), a control
 *            element (kind CONTROL), or key=value text (HELLO, ADMIN)
 *
 * Header layout, version 1 (all integers big-endian):
 *   u8  version   ENV_VERSION
 *   u8  kind      enum env_kind
 *   u8  route     enum env_route: how `key` is to be read
 *   u8  flags     ENV_F_* bits
 *   then five strings, each u16 length + bytes (no NUL):
 *   key      routing key: bare JID / domain (ROUTE_JID), instance name
 *            (ROUTE_INSTANCE), kind name (ROUTE_KIND), empty (ROUTE_ROUTER)
 *   sender   instance name of the process that built the envelope
 *   sid      session id at the front-end ("" when none)
 *   op       control operation or bounce reason ("" when none)
 *   aux      free text: for BOUNCE the original key, for CONTROL an argument
 *   then, only when flags has ENV_F_SEQ (never on a BOUNCE, whose flags
 *   hold the original kind): u64 seq, the sender's sequence number of an
 *   envelope sent through a router (duplicates of a re-send are dropped
 *   by the receiver) or straight to an sm (which confirms it: direct-ack,
 *   common/link.c)
 * Each string is at most ENV_STR_MAX bytes. Full details: common/ENVELOPE.md */
#ifndef SB_ENV_H
#define SB_ENV_H

#include "sb.h"

#define ENV_VERSION 1
#define ENV_STR_MAX 3071    /* longest full JID (RFC 7622: 1023+1+1023+1+1023) */
#define ENV_NAME_MAX 63     /* instance names, session ids, ops */

enum env_kind {
    ENV_STANZA = 1,     /* body is a stanza (message/presence/iq), from stamped */
    ENV_CONTROL = 2,    /* body is a control element; op says which */
    ENV_HELLO = 3,      /* component → router: register + heartbeat */
    ENV_ADMIN = 4,      /* sbctl ↔ router: status queries */
    ENV_BOUNCE = 5,     /* router → sender: could not route; op = reason */
};

enum env_route {
    ENV_ROUTE_JID = 1,       /* key = bare JID or domain: local → owning sm */
    ENV_ROUTE_INSTANCE = 2,  /* key = instance name */
    ENV_ROUTE_KIND = 3,      /* key = kind ("sm"): every live instance of it */
    ENV_ROUTE_ROUTER = 4,    /* for the router itself (HELLO, ADMIN) */
};

#define ENV_F_NONE 0x00
#define ENV_F_SEQ  0x80     /* a u64 seq follows aux (router and direct path; not on BOUNCE) */
/* Said by a router itself (members, instance-down, hello-ack): a router
 * drops any envelope a component sends with it, so a component trusts a
 * control with it only when it arrived on a router socket. */
#define ENV_F_ROUTER 0x40

struct env_hdr {
    uint8_t version, kind, route, flags;
    char key[ENV_STR_MAX + 1];
    char sender[ENV_NAME_MAX + 1];
    char sid[ENV_NAME_MAX + 1];
    char op[ENV_NAME_MAX + 1];
    char aux[ENV_STR_MAX + 1];
    uint64_t seq;           /* with ENV_F_SEQ, else 0 */
};

/* Fill the fixed part and clear the strings. */
void env_init(struct env_hdr *h, enum env_kind kind, enum env_route route);

/* Encode h into buf (cap bytes). Returns bytes written, or -1 if too small
 * or a field is too long. A header is at most ENV_HDR_MAX bytes. */
#define ENV_HDR_MAX (4 + 5 * 2 + 2 * ENV_STR_MAX + 3 * ENV_NAME_MAX + 8)
long env_encode(const struct env_hdr *h, uint8_t *buf, size_t cap);

/* Decode a header frame; SB_ERROR on truncation, unknown version, bad kind
 * or route, or an over-long field. Strings come out NUL-terminated. */
sb_rc env_decode(struct env_hdr *h, const uint8_t *buf, size_t len);

/* Does a header of this kind with these flags carry a seq? */
int env_has_seq(uint8_t kind, uint8_t flags);

const char *env_kind_name(int kind);
const char *env_route_name(int route);

/* Decode only the routing part (kind, route, key) without copying the rest;
 * the router's hot path. key points into buf, not NUL-terminated. */
sb_rc env_peek(const uint8_t *buf, size_t len, uint8_t *kind, uint8_t *route,
               const char **key, size_t *keylen);

#endif
