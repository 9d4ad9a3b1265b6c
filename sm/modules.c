/* modules.c — the order in which modules see each job. The first module that
 * does not answer SB_DECLINED owns the job, so specific handlers come before
 * general ones and the fallback is last. Adding a module: write
 * sm/mod_x.c exporting `const struct sm_module sm_mod_x`, list it here. */
#include "sm.h"

extern const struct sm_module sm_mod_session, sm_mod_presence, sm_mod_roster,
    sm_mod_disco, sm_mod_ping, sm_mod_offline, sm_mod_deliver, sm_mod_fallback;

const struct sm_module *const sm_modules[] = {
    &sm_mod_presence,       /* all presence (RFC 6121 §3-4); unavailable on
                               end/session-gone, then passes them on */
    &sm_mod_session,        /* controls: bind, end, session-gone, instance-down */
    &sm_mod_roster,         /* jabber:iq:roster on the own account */
    &sm_mod_disco,          /* disco#info/#items on a server domain */
    &sm_mod_ping,           /* urn:xmpp:ping to the server */
    &sm_mod_offline,        /* messages no session can take: stored */
    &sm_mod_deliver,        /* everything addressed to a user's JID */
    &sm_mod_fallback,       /* never leave an iq unanswered */
};
const size_t sm_nmodules = SB_ARRAY_LEN(sm_modules);
