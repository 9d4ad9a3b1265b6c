/* sub.h — the presence subscription state machine of RFC 6121 (§3 and the
 * tables of Appendix A) as pure functions, so the rules can be tested alone.
 *
 * The state of one contact, seen from the account that owns the roster item,
 * is a set of bits: SM_SUB_TO (the user receives the contact's presence),
 * SM_SUB_FROM (the contact receives the user's), SM_SUB_PEND_OUT (the user
 * asked and waits: "ask=subscribe"), SM_SUB_PEND_IN (the contact asked and
 * waits for the user's answer). PEND_OUT never coexists with TO, PEND_IN
 * never with FROM: the nine states of Appendix A. */
#ifndef SB_SM_SUB_H
#define SB_SM_SUB_H

#define SM_SUB_TO       0x1
#define SM_SUB_FROM     0x2
#define SM_SUB_PEND_OUT 0x4
#define SM_SUB_PEND_IN  0x8

enum sm_sub_type {
    SM_SUB_T_NONE = 0,        /* not a subscription stanza */
    SM_SUB_T_SUBSCRIBE,
    SM_SUB_T_SUBSCRIBED,
    SM_SUB_T_UNSUBSCRIBE,
    SM_SUB_T_UNSUBSCRIBED,
};

/* What the server does besides changing the state (bits). */
#define SM_SUB_A_ROUTE     0x01   /* outbound: route the stanza to the contact */
#define SM_SUB_A_DELIVER   0x02   /* inbound: deliver it to the user's resources */
#define SM_SUB_A_AUTOREPLY 0x04   /* inbound subscribe, already approved: answer
                                     "subscribed" on the user's behalf */
#define SM_SUB_A_PRESENCE  0x08   /* FROM was gained: send the user's current
                                     presence to the contact */
#define SM_SUB_A_UNAVAIL   0x10   /* FROM was lost: send unavailable from the
                                     user's available resources to the contact */

enum sm_sub_type sm_sub_type_parse(const char *type);
const char *sm_sub_type_name(enum sm_sub_type t);

/* The user sends `t` to the contact (Appendix A.2). Returns the new state;
 * *actions gets SM_SUB_A_* bits. */
int sm_sub_outbound(int state, enum sm_sub_type t, int *actions);
/* The contact's `t` arrives for the user (Appendix A.3). */
int sm_sub_inbound(int state, enum sm_sub_type t, int *actions);

/* "none" | "to" | "from" | "both" for the roster's subscription attribute. */
const char *sm_sub_name(int state);
/* The TO/FROM bits of a stored subscription value (unknown → none). */
int sm_sub_parse(const char *name);
/* "None + Pending Out" style name of a whole state, for logs and tests. */
const char *sm_sub_state_name(int state);

#endif
