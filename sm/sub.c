/* sub.c — RFC 6121 subscription states (see sub.h). The rules read as the
 * RFC's tables: each event clears or sets bits only under the condition the
 * table gives; tests/unit/test_sm_sub.c checks all nine states × four
 * events against Appendix A. */
#include "sub.h"

#include <string.h>

enum sm_sub_type sm_sub_type_parse(const char *type)
{
    if (!type)
        return SM_SUB_T_NONE;
    if (!strcmp(type, "subscribe"))
        return SM_SUB_T_SUBSCRIBE;
    if (!strcmp(type, "subscribed"))
        return SM_SUB_T_SUBSCRIBED;
    if (!strcmp(type, "unsubscribe"))
        return SM_SUB_T_UNSUBSCRIBE;
    if (!strcmp(type, "unsubscribed"))
        return SM_SUB_T_UNSUBSCRIBED;
    return SM_SUB_T_NONE;
}

const char *sm_sub_type_name(enum sm_sub_type t)
{
    static const char *const names[] = {"none", "subscribe", "subscribed", "unsubscribe",
                                        "unsubscribed"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* A.2: the user's server, on the user's outbound stanza. */
int sm_sub_outbound(int s, enum sm_sub_type t, int *actions)
{
    int n = s;
    *actions = 0;
    switch (t) {
    case SM_SUB_T_SUBSCRIBE:           /* A.2.1: ask, unless already subscribed */
        if (!(s & SM_SUB_TO))
            n |= SM_SUB_PEND_OUT;
        *actions = SM_SUB_A_ROUTE;
        break;
    case SM_SUB_T_UNSUBSCRIBE:         /* A.2.3: give up TO or the request for it */
        n &= ~(SM_SUB_TO | SM_SUB_PEND_OUT);
        *actions = SM_SUB_A_ROUTE;
        break;
    case SM_SUB_T_SUBSCRIBED:          /* A.2.2: approve a pending request only */
        if (s & SM_SUB_PEND_IN) {
            n = (s & ~SM_SUB_PEND_IN) | SM_SUB_FROM;
            *actions = SM_SUB_A_ROUTE | SM_SUB_A_PRESENCE;
        }
        break;
    case SM_SUB_T_UNSUBSCRIBED:        /* A.2.4: cancel FROM or deny the request */
        n &= ~(SM_SUB_FROM | SM_SUB_PEND_IN);
        *actions = SM_SUB_A_ROUTE | ((s & SM_SUB_FROM) ? SM_SUB_A_UNAVAIL : 0);
        break;
    default:
        break;
    }
    return n;
}

/* A.3: the user's server, on the contact's stanza for the user. */
int sm_sub_inbound(int s, enum sm_sub_type t, int *actions)
{
    int n = s;
    *actions = 0;
    switch (t) {
    case SM_SUB_T_SUBSCRIBE:           /* A.3.1 */
        if (s & SM_SUB_FROM)
            *actions = SM_SUB_A_AUTOREPLY;
        else if (!(s & SM_SUB_PEND_IN)) {
            n |= SM_SUB_PEND_IN;
            *actions = SM_SUB_A_DELIVER;
        }
        break;
    case SM_SUB_T_SUBSCRIBED:          /* A.3.2: only an answer to our request */
        if (s & SM_SUB_PEND_OUT) {
            n = (s & ~SM_SUB_PEND_OUT) | SM_SUB_TO;
            *actions = SM_SUB_A_DELIVER;
        }
        break;
    case SM_SUB_T_UNSUBSCRIBE:         /* A.3.3: the contact drops FROM or its request */
        if (s & (SM_SUB_FROM | SM_SUB_PEND_IN)) {
            n &= ~(SM_SUB_FROM | SM_SUB_PEND_IN);
            *actions = SM_SUB_A_DELIVER | ((s & SM_SUB_FROM) ? SM_SUB_A_UNAVAIL : 0);
        }
        break;
    case SM_SUB_T_UNSUBSCRIBED:        /* A.3.4: the contact cancels TO or denies */
        if (s & (SM_SUB_TO | SM_SUB_PEND_OUT)) {
            n &= ~(SM_SUB_TO | SM_SUB_PEND_OUT);
            *actions = SM_SUB_A_DELIVER;
        }
        break;
    default:
        break;
    }
    return n;
}

const char *sm_sub_name(int s)
{
    static const char *const names[] = {"none", "to", "from", "both"};
    return names[s & (SM_SUB_TO | SM_SUB_FROM)];
}

int sm_sub_parse(const char *name)
{
    if (!name)
        return 0;
    if (!strcmp(name, "to"))
        return SM_SUB_TO;
    if (!strcmp(name, "from"))
        return SM_SUB_FROM;
    if (!strcmp(name, "both"))
        return SM_SUB_TO | SM_SUB_FROM;
    return 0;
}

const char *sm_sub_state_name(int s)
{
    switch (s) {
    case 0: return "None";
    case SM_SUB_PEND_OUT: return "None + Pending Out";
    case SM_SUB_PEND_IN: return "None + Pending In";
    case SM_SUB_PEND_OUT | SM_SUB_PEND_IN: return "None + Pending Out+In";
    case SM_SUB_TO: return "To";
    case SM_SUB_TO | SM_SUB_PEND_IN: return "To + Pending In";
    case SM_SUB_FROM: return "From";
    case SM_SUB_FROM | SM_SUB_PEND_OUT: return "From + Pending Out";
    case SM_SUB_TO | SM_SUB_FROM: return "Both";
    default: return "invalid";
    }
}
