/* modules.c — the order in which modules see each job. The first module that
 * does not answer SB_DECLINED owns the job, so specific handlers come before
 * general ones and the fallback is last. Adding a module: write
 * sm/mod_x.c exporting `const struct sm_module sm_mod_x`, list it here. */
#include "sm.h"

extern const struct sm_module sm_mod_session, sm_mod_presence, sm_mod_roster,
    sm_mod_disco, sm_mod_ping, sm_mod_offline, sm_mod_deliver, sm_mod_fallback;
extern const struct sm_module sm_mod_last, sm_mod_account, sm_mod_blocking,
    sm_mod_version, sm_mod_vcard, sm_mod_private;
extern const struct sm_module sm_mod_contacts, sm_mod_sm, sm_mod_push, sm_mod_carbons,
    sm_mod_csi, sm_mod_mam, sm_mod_mam_out, sm_mod_pep, sm_mod_upload;

const struct sm_module *const sm_modules[] = {
    &sm_mod_sm,             /* XEP-0198: numbered queue per managed session; a
                               broken stream is detached, not ended */
    &sm_mod_mam_out,        /* XEP-0313: the sender's row of a message to a domain
                               no sm serves (op outbound); before mod_carbons,
                               which forwards it */
    &sm_mod_carbons,        /* XEP-0280: outbound messages of carbons users (sent
                               copies, then on to the recipient), the iq; after
                               mod_sm (a detached session keeps its carbons) */
    &sm_mod_csi,            /* XEP-0352: control csi (the hold is in send.c) */
    &sm_mod_last,           /* observes end + own unavailable presence (declines
                               both, so it must precede mod_presence); jabber:iq:last */
    &sm_mod_blocking,       /* XEP-0191: refuses stanzas between blocked users
                               (before anything delivers or stores); the iq */
    &sm_mod_push,           /* XEP-0357 enable/disable, replies to notifications;
                               observes own available presence (declines it),
                               so it must precede mod_presence */
    &sm_mod_pep,            /* XEP-0163 PEP iqs (pubsub, #owner), answers to its
                               XEP-0115 caps queries (before mod_account, which
                               would swallow them); observes available presence
                               (declines it), so it must precede mod_presence */
    &sm_mod_presence,       /* all presence (RFC 6121 §3-4); unavailable on
                               end/session-gone, then passes them on */
    &sm_mod_contacts,       /* contacts in place on a new account's bind;
                               contact-add/-del; an anonymous account's data
                               wiped at its last end (after the unavailable) */
    &sm_mod_session,        /* controls: bind, end, session-gone, instance-down */
    &sm_mod_roster,         /* jabber:iq:roster on the own account */
    &sm_mod_upload,         /* XEP-0363: everything to upload.D (disco, slots);
                               before mod_disco, which would answer as the server */
    &sm_mod_disco,          /* disco#info/#items on a server domain */
    &sm_mod_ping,           /* urn:xmpp:ping to the server */
    &sm_mod_version,        /* jabber:iq:version of the server */
    &sm_mod_account,        /* disco/ping to a bare JID; loads acct.h per user */
    &sm_mod_vcard,          /* vcard-temp get/set */
    &sm_mod_private,        /* jabber:iq:private on the own account */
    &sm_mod_mam,            /* XEP-0313: archives messages (adds <stanza-id/>
                               before they are stored or delivered); the iq */
    &sm_mod_offline,        /* messages no session can take: stored */
    &sm_mod_deliver,        /* everything addressed to a user's JID */
    &sm_mod_fallback,       /* never leave an iq unanswered */
};
const size_t sm_nmodules = SB_ARRAY_LEN(sm_modules);
