/* mod_presence_min.c — a session's own presence (no `to`): available with
 * its <priority> (default 0) or unavailable. The cache decides bare-JID
 * delivery; Redis keeps the last presence in pres:{bare} and the priority in
 * sess:{bare} so another sm can take the user over. Broadcasting to contacts
 * and probing them is the IM issue's job (mod_presence). */
#include "sm.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RFC 6121 §4.7.2.3: an integer in -128..127; anything else counts as 0. */
static int presence_priority(const struct xml_node *st)
{
    struct xml_node *p = xml_child(st, "priority", NULL);
    if (!p)
        return 0;
    struct sb_buf t = SB_BUF_INIT;
    xml_text(p, &t);
    char *end = NULL;
    long v = t.data ? strtol(t.data, &end, 10) : 0;
    int ok = t.data && end != t.data && *end == '\0' && v >= -128 && v <= 127;
    sb_buf_free(&t);
    return ok ? (int)v : 0;
}

static void presence_on_store(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("presence_store_failed", "detail=%s",
                 sb_log_q(r && r->str ? r->str : "redis unavailable"));
}

static void presence_available(struct sm_job *j, struct sm_session *s)
{
    struct sm_core *c = j->core;
    s->available = 1;
    s->prio = presence_priority(j->st);
    char val[2 * ENV_NAME_MAX + 8];
    snprintf(val, sizeof val, "%s %s %d", s->instance, s->sid, s->prio);
    SM_RCMD(c, presence_on_store, NULL, "HSET sess:{%s} %s %s", j->user->bare, s->resource, val);
    SM_RCMD(c, presence_on_store, NULL, "HSET pres:{%s} %s %b", j->user->bare, s->resource,
            j->body, j->body_len);
    log_debug("presence_available", "jid=%s prio=%d", sb_log_q(j->aux), s->prio);
}

static void presence_unavailable(struct sm_job *j, struct sm_session *s)
{
    s->available = 0;
    SM_RCMD(j->core, presence_on_store, NULL, "HDEL pres:{%s} %s", j->user->bare, s->resource);
    log_debug("presence_unavailable", "jid=%s", sb_log_q(j->aux));
}

static sb_rc presence_handle(struct sm_job *j)
{
    if (j->to || !j->user)
        return SB_DECLINED;
    struct sm_session *s = sm_user_session(j->user, sm_job_sender_resource(j));
    if (!s || (*j->sid && strcmp(s->sid, j->sid))) {
        log_warn("presence_no_session", "jid=%s", sb_log_q(j->aux));
        return SB_OK;
    }
    if (!*j->type)
        presence_available(j, s);
    else if (!strcmp(j->type, "unavailable"))
        presence_unavailable(j, s);
    /* Other types without `to` (probe, subscribe…, error) mean nothing here. */
    return SB_OK;
}

const struct sm_module sm_mod_presence_min = {
    .name = "presence_min",
    .handle_presence = presence_handle,
};
