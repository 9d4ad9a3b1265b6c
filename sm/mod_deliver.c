/* mod_deliver.c — delivery to a local user's sessions (RFC 6121 §8.5),
 * from the cached session list only (no Redis/SQL on this path):
 *   full JID, session exists     → that session, whatever the stanza
 *   full JID, no such session    → iq get/set: service-unavailable;
 *   (or its front-end is gone)
 *                                  message: as to the bare JID (groupchat:
 *                                  service-unavailable); presence: dropped
 *   bare JID, message            → every available session of the highest
 *                                  non-negative priority (headline: all
 *                                  non-negative); none: service-unavailable
 *                                  (headline dropped) until mod_offline
 *   bare JID, presence           → every available session
 *   bare JID, iq                 → declined: the server answers for the
 *                                  account (mod_roster…, then the fallback)
 * A message that reached only detached (XEP-0198) streams goes to mod_push.
 * A delivered message is then copied to the user's other carbons-enabled
 * sessions (mod_carbons.c: the delivered ones are marked `got`).
 * An unknown local user has no sessions, so the same rules answer
 * service-unavailable for message/iq and drop presence (§8.5.2). */
#include "sm.h"
#include "log.h"

#include <string.h>

/* The resource of j->to ("" for a bare JID or no `to`). */
static const char *to_resource(const struct sm_job *j)
{
    const char *slash = j->to ? strchr(j->to, '/') : NULL;
    return slash ? slash + 1 : "";
}

/* Sent to sessions; *live: how many of them have a stream now (the others
 * only queue it: mod_push may notify). */
static int deliver_to_bare_message(struct sm_job *j, int *live)
{
    struct sm_user *u = j->user;
    int headline = !strcmp(j->type, "headline");
    int best = -1, sent = 0;
    *live = 0;
    for (int i = 0; i < u->nsess; i++)
        if (u->sess[i].available && u->sess[i].prio > best &&
            sm_job_reaches(j, &u->sess[i]))
            best = u->sess[i].prio;
    for (int i = 0; best >= 0 && i < u->nsess; i++) {
        struct sm_session *s = &u->sess[i];
        if (s->available && s->prio >= 0 && (headline || s->prio == best) &&
            sm_job_reaches(j, s) && sm_deliver(j, s) == SB_OK) {
            s->got = 1;
            sent++;
            *live += sm_session_live(j->core, s);
        }
    }
    return sent;
}

static sb_rc deliver_message(struct sm_job *j)
{
    if (!j->user)
        return SB_DECLINED;
    const char *res = to_resource(j);
    struct sm_session *s = *res ? sm_user_session(j->user, res) : NULL;
    if (s && sm_job_reaches(j, s)) {
        s->got = sm_deliver(j, s) == SB_OK;
        if (s->got && !sm_session_live(j->core, s))
            sm_push_notify(j, 0);
        sm_carbons_received(j);         /* XEP-0280: the other sessions */
        return SB_OK;
    }
    if (!strcmp(j->type, "error"))
        return SB_OK;           /* RFC 6121 §8.5.2.1.1: silently dropped */
    if (!strcmp(j->type, "groupchat")) {
        sm_reply_error(j, "cancel", "service-unavailable");
        return SB_OK;
    }
    int live;
    if (deliver_to_bare_message(j, &live) > 0) {
        if (!live)
            sm_push_notify(j, 0);
        sm_carbons_received(j);
        return SB_OK;
    }
    if (strcmp(j->type, "headline")) {
        /* Offline storage (mod_offline) is the next issue; until then the
         * sender learns the message was not delivered. */
        log_info("deliver_fail", "to=%s reason=no-available-session", sb_log_q(j->key));
        sm_reply_error(j, "cancel", "service-unavailable");
    }
    return SB_OK;
}

static sb_rc deliver_presence(struct sm_job *j)
{
    if (!j->user || !j->to)
        return SB_DECLINED;
    const char *res = to_resource(j);
    if (*res) {
        struct sm_session *s = sm_user_session(j->user, res);
        if (s)
            sm_deliver(j, s);
        return SB_OK;
    }
    /* The server answers probes itself (mod_presence, IM issue); a client
     * must never see one (RFC 6121 §4.3). */
    if (!strcmp(j->type, "probe") || !strcmp(j->type, "error"))
        return SB_OK;
    for (int i = 0; i < j->user->nsess; i++)
        if (j->user->sess[i].available)
            sm_deliver(j, &j->user->sess[i]);
    return SB_OK;
}

static sb_rc deliver_iq(struct sm_job *j, const char *ns)
{
    const char *res = to_resource(j);
    if (!j->user || !*res)
        return SB_DECLINED;
    struct sm_session *s = sm_user_session(j->user, res);
    if (s)
        sm_deliver(j, s);
    else
        sm_reply_error(j, "cancel", "service-unavailable");   /* no-op for results */
    return SB_OK;
}

const struct sm_module sm_mod_deliver = {
    .name = "deliver",
    .handle_iq = deliver_iq,
    .handle_message = deliver_message,
    .handle_presence = deliver_presence,
};
