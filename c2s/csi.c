/* csi.c — XEP-0352 client state indication, the front-end's half. The
 * feature <csi xmlns='urn:xmpp:csi:0'/> is offered after authentication
 * (stream.c). <inactive/> and <active/> change a flag on the conn and, for
 * a bound session, go to the user's sm as control `csi` (aux full JID,
 * body `inactive` / `active`), on the user's queue: what is held while
 * inactive is held there (sm/mod_csi.c), before XEP-0198 numbers stanzas.
 * A nonza that repeats the current state sends nothing. Sent between SASL
 * and bind it is remembered and told to the sm with the binding (and after
 * a resumption, which starts active in the sm: XEP-0352 §5); before SASL it
 * is not accepted (stream.c: unsupported-stanza-type). Another element in
 * the namespace: unsupported-stanza-type. */
#include "c2s.h"
#include "jid.h"
#include "log.h"

#include <string.h>

#define NS_CSI "urn:xmpp:csi:0"

static void csi_tell(struct c2s_conn *c)
{
    char bare[JID_BARE_MAX + 1];
    if (!c->jid || jid_bare_of(c->jid, bare, sizeof bare) < 0)
        return;
    c2s_route_control_body("csi", bare, c->sid, c->jid,
                           (c->flags & C2S_F_INACTIVE) ? "inactive" : "active");
}

int c2s_csi_element(struct c2s_conn *c, struct xml_node *n)
{
    const char *ns = xml_attr(n, "xmlns");
    if (!ns || strcmp(ns, NS_CSI) != 0)
        return 0;
    int inactive = !strcmp(n->name, "inactive");
    if (!inactive && strcmp(n->name, "active") != 0) {
        c2s_stream_error(c, "unsupported-stanza-type", "csi-element");
        return 1;
    }
    if (!!(c->flags & C2S_F_INACTIVE) == inactive)
        return 1;
    if (inactive)
        c->flags |= C2S_F_INACTIVE;
    else
        c->flags &= ~C2S_F_INACTIVE;
    log_debug("csi", "peer=%s sid=%s state=%s bound=%d", c->peer, c->sid, n->name,
              c->state == C2S_S_BOUND);
    if (c->state == C2S_S_BOUND)
        csi_tell(c);
    return 1;
}

void c2s_csi_bound(struct c2s_conn *c)
{
    if (c->flags & C2S_F_INACTIVE)
        csi_tell(c);
}
