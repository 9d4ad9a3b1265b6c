/* sasl2.h — the pure half of XEP-0388 SASL2 in the front-ends: what one
 * <authenticate/> asks for (mechanism, initial response, XEP-0388
 * user-agent, XEP-0386 Bind 2 with its inline carbons / stream-management
 * enable, XEP-0198 inline <resume/>, XEP-0484 FAST token request, count
 * and invalidation), checked and copied out of the element, and the
 * resource Bind 2 derives from the user-agent id. No socket, no loop: the
 * daemons (sasl2.c) and the fuzz target (tests/fuzz/fuzz_sasl2.c) share it. */
#ifndef SB_C2S_SASL2_H
#define SB_C2S_SASL2_H

#include "xml.h"

#define NS_SASL2    "urn:xmpp:sasl:2"
#define NS_BIND2    "urn:xmpp:bind:0"
#define NS_FAST     "urn:xmpp:fast:0"
#define NS_SM3      "urn:xmpp:sm:3"
#define NS_CARBONS2 "urn:xmpp:carbons:2"

#define SASL2_UA_MAX    64      /* user-agent id: a UUID is 36 */
#define SASL2_TAG_MAX   19      /* bytes of the Bind 2 <tag/> kept: tag + '.' + 12 = 32 */
#define SASL2_MECH_MAX  31
#define SASL2_PREVID_MAX 63

struct c2s_sasl2_req {
    char mech[SASL2_MECH_MAX + 1];
    const char *initial;            /* base64 text of <initial-response/> (in the
                                       caller's buffer), NULL: none */
    char ua[SASL2_UA_MAX + 1];      /* "" no user-agent */
    char software[64], device[64];  /* for the log only, cut */
    unsigned bind : 1, carbons : 1, sm_enable : 1, sm_resumable : 1;
    unsigned resume : 1, invalidate : 1;
    long sm_max;
    char tag[SASL2_TAG_MAX + 1];
    char previd[SASL2_PREVID_MAX + 1];
    char resume_h[12];
    char token_mech[SASL2_MECH_MAX + 1];   /* <request-token mechanism/>, "" none */
    long long count;                /* <fast count/>, -1 none */
    int fast;                       /* a <fast/> element was present */
};

/* Read <authenticate/> n into r; text is scratch for the initial response
 * (r->initial points into it). NULL when usable, else a short reason (for
 * the log and the failure's <text/>) with *cond the SASL condition. */
const char *c2s_sasl2_parse(const struct xml_node *n, struct sb_buf *text,
                            struct c2s_sasl2_req *r, const char **cond);

/* The Bind 2 resource prefix for bare JID + user-agent id: "<tag>.<12 hex>"
 * (12 hex of SHA-256(bare NUL ua)), or the tag alone without a user-agent.
 * out holds 33 bytes. Returns 1 when it is stable (derived from the ua). */
int c2s_sasl2_resource(const char *bare, const char *ua, const char *tag, char out[33]);

#endif
