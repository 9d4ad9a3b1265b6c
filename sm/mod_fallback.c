/* mod_fallback.c — the last module: whatever no module handled still gets
 * an answer where RFC 6120/6121 require one. An iq get/set is never left
 * unanswered (service-unavailable, §8.2.3); a message to the server itself
 * gets service-unavailable; results, errors and presence are dropped. */
#include "sm.h"
#include "log.h"

#include <string.h>

static sb_rc fallback_iq(struct sm_job *j, const char *ns)
{
    if (!strcmp(j->type, "get") || !strcmp(j->type, "set")) {
        log_debug("iq_unhandled", "ns=%s to=%s", sb_log_q(ns), sb_log_q(j->to ? j->to : "-"));
        sm_reply_error(j, "cancel", "service-unavailable");
    }
    return SB_OK;
}

static sb_rc fallback_message(struct sm_job *j)
{
    if (strcmp(j->type, "headline"))
        sm_reply_error(j, "cancel", "service-unavailable");   /* no-op for errors */
    return SB_OK;
}

static sb_rc fallback_presence(struct sm_job *j)
{
    return SB_OK;
}

const struct sm_module sm_mod_fallback = {
    .name = "fallback",
    .handle_iq = fallback_iq,
    .handle_message = fallback_message,
    .handle_presence = fallback_presence,
};
