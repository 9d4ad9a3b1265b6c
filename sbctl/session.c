/* session.c — `sbctl session list|kick`: the live sessions, from Redis
 * (sm/README.md: `sess:{bare}` resource → `instance sid priority`,
 * `pres:{bare}` resource → last presence, `fe:NAME` the `fulljid sid` of a
 * front-end), and ending one: ADMIN op=kick to the front-end that holds
 * it (common/ENVELOPE.md), which closes the stream with a stream error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "sbctl.h"

#define KICK_ANSWER_MAX 256

struct sess_row {
    char jid[JID_FULL_MAX + 1];
    char instance[ENV_NAME_MAX + 1];
    char sid[32];
    char prio[16];
    char show[16];              /* available, away, chat, dnd, xa; "-" no presence yet */
};

/* "instance sid priority" → the row's fields. */
static void sess_value(struct sess_row *r, const char *v)
{
    r->instance[0] = r->sid[0] = '\0';
    snprintf(r->prio, sizeof r->prio, "-");
    sscanf(v, "%64s %31s %15s", r->instance, r->sid, r->prio);
}

/* <show/> of a stored presence, "available" without one. */
static void sess_show(struct sess_row *r, const char *pres)
{
    const char *s = pres ? strstr(pres, "<show>") : NULL;
    const char *e = s ? strstr(s, "</show>") : NULL;
    if (!pres)
        snprintf(r->show, sizeof r->show, "-");
    else if (s && e && e - s - 6 < (long)sizeof r->show)
        snprintf(r->show, sizeof r->show, "%.*s", (int)(e - s - 6), s + 6);
    else
        snprintf(r->show, sizeof r->show, "available");
}

static void sess_print(const struct sess_row *r)
{
    if (sbctl_json) {
        sj_obj(NULL);
        sj_str("jid", r->jid);
        sj_str("instance", r->instance);
        sj_str("sid", r->sid);
        if (strcmp(r->prio, "-"))
            sj_int("priority", atol(r->prio));
        else
            sj_null("priority");
        sj_str("presence", strcmp(r->show, "-") ? r->show : NULL);
        sj_end_obj();
    } else {
        printf("%-48s %-12s %-22s %-8s %s\n", r->jid, r->instance, r->sid, r->prio, r->show);
    }
}

/* Every session of one bare JID (resource NULL) or one of them. count: rows. */
static int sess_of(redisContext *c, const char *bare, const char *only, int print, int *count)
{
    redisReply *s = sbctl_redis_cmd(c, "HGETALL sess:{%s}", bare);
    if (!s)
        return -1;
    redisReply *p = sbctl_redis_cmd(c, "HGETALL pres:{%s}", bare);
    for (size_t i = 0; s->type == REDIS_REPLY_ARRAY && i + 1 < s->elements; i += 2) {
        const char *res = s->element[i]->str, *pres = NULL;
        if (only && strcmp(only, res))
            continue;
        struct sess_row r;
        snprintf(r.jid, sizeof r.jid, "%s/%s", bare, res);
        sess_value(&r, s->element[i + 1]->str);
        for (size_t k = 0; p && p->type == REDIS_REPLY_ARRAY && k + 1 < p->elements; k += 2)
            if (!strcmp(p->element[k]->str, res))
                pres = p->element[k + 1]->str;
        sess_show(&r, pres);
        if (print)
            sess_print(&r);
        (*count)++;
    }
    freeReplyObject(s);
    if (p)
        freeReplyObject(p);
    return 0;
}

/* "sess:{a@b}" → "a@b" in out. */
static int sess_key_bare(const char *key, char *out, size_t cap)
{
    size_t n = strlen(key);
    if (n < 7 || strncmp(key, "sess:{", 6) || key[n - 1] != '}' || n - 7 >= cap)
        return -1;
    memcpy(out, key + 6, n - 7);
    out[n - 7] = '\0';
    return 0;
}

static int sess_list_all(redisContext *c, int *count)
{
    char cursor[32] = "0", bare[JID_BARE_MAX + 1];
    do {
        redisReply *r = sbctl_redis_cmd(c, "SCAN %s MATCH sess:{* COUNT 1000", cursor);
        if (!r)
            return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            if (sess_key_bare(r->element[1]->element[i]->str, bare, sizeof bare) == 0 &&
                sess_of(c, bare, NULL, 1, count) < 0) {
                freeReplyObject(r);
                return -1;
            }
        freeReplyObject(r);
    } while (strcmp(cursor, "0"));
    return 0;
}

/* The sessions a front-end holds (fe:NAME: "fulljid sid"). */
static int sess_list_instance(redisContext *c, const char *name, int *count)
{
    redisReply *r = sbctl_redis_cmd(c, "SMEMBERS fe:%s", name);
    if (!r)
        return -1;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        char full[JID_FULL_MAX + 1], bare[JID_BARE_MAX + 1];
        if (sscanf(r->element[i]->str, "%1023s", full) != 1 ||
            jid_bare_of(full, bare, sizeof bare) < 0)
            continue;
        const char *slash = strchr(full, '/');
        if (slash)
            sess_of(c, bare, slash + 1, 1, count);
    }
    freeReplyObject(r);
    return 0;
}

static int session_list(int argc, char **argv)
{
    const char *user = NULL, *inst = NULL;
    struct jid j;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--instance") && i + 1 < argc && !inst)
            inst = argv[++i];
        else if (argv[i][0] != '-' && !user)
            user = argv[i];
        else
            return SBCTL_USAGE;
    }
    if (user && inst)
        return SBCTL_USAGE;
    char bare[JID_BARE_MAX + 1];
    if (user) {
        if (jid_parse(&j, user) != SB_OK || !j.node[0] || j.resource[0]) {
            sbctl_err("'%s' is not a valid USER@DOMAIN address", user);
            return SBCTL_FAIL;
        }
        jid_bare(&j, bare);
    }
    redisContext *c = sbctl_redis();
    if (!c)
        return SBCTL_FAIL;
    int count = 0, rc;
    if (sbctl_json)
        sj_arr(NULL);
    else
        printf("%-48s %-12s %-22s %-8s %s\n", "JID", "INSTANCE", "SID", "PRIORITY", "PRESENCE");
    rc = user ? sess_of(c, bare, NULL, 1, &count)
              : inst ? sess_list_instance(c, inst, &count) : sess_list_all(c, &count);
    if (sbctl_json)
        sj_end_arr();
    else if (count == 0)
        printf("(no sessions)\n");
    redisFree(c);
    return rc < 0 ? SBCTL_FAIL : SBCTL_OK;
}

/* token NULL: op=kick; else op=kick-token for that token id ("*": any of
 * ours), where a session that used none is no miss. */
static int sess_kick(redisContext *c, const char *bare, const char *resource, const char *token,
                     const char *cond, const char *text)
{
    redisReply *s = sbctl_redis_cmd(c, "HGETALL sess:{%s}", bare);
    char body[1100], ans[KICK_ANSWER_MAX];
    const char *op = token ? "kick-token" : "kick";
    int n = 0;
    if (!s)
        return -1;
    snprintf(body, sizeof body, "%s%s%s %s", token ? token : "", token ? " " : "", cond,
             text ? text : "");
    for (size_t i = 0; s->type == REDIS_REPLY_ARRAY && i + 1 < s->elements; i += 2) {
        struct sess_row r;
        if (resource && strcmp(resource, s->element[i]->str))
            continue;
        snprintf(r.jid, sizeof r.jid, "%s/%s", bare, s->element[i]->str);
        sess_value(&r, s->element[i + 1]->str);
        int a = sbctl_bus_ask(r.instance, op, r.sid, r.jid, body, ans, sizeof ans);
        if (a == 1 && !strcmp(ans, "kicked=1"))
            n++;
        else if (a == 1 && token)
            continue;                     /* logged in otherwise */
        else if (a == 1)
            sbctl_err("%s: %s no longer holds that stream", r.jid, r.instance);
        else
            sbctl_err("%s: no answer from %s (its sessions end when its lease does)", r.jid,
                      r.instance);
    }
    freeReplyObject(s);
    return n;
}

int sbctl_kick_sessions(redisContext *c, const char *bare, const char *resource,
                        const char *cond, const char *text)
{
    return sess_kick(c, bare, resource, NULL, cond, text);
}

int sbctl_kick_token_sessions(redisContext *c, const char *bare, const char *token,
                              const char *cond, const char *text)
{
    return sess_kick(c, bare, NULL, token, cond, text);
}

static int session_kick(int argc, char **argv)
{
    const char *full = NULL, *reason = "";
    struct jid j;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--reason") && i + 1 < argc)
            reason = argv[++i];
        else if (argv[i][0] != '-' && !full)
            full = argv[i];
        else
            return SBCTL_USAGE;
    }
    if (!full)
        return SBCTL_USAGE;
    if (jid_parse(&j, full) != SB_OK || !j.node[0] || !j.resource[0]) {
        sbctl_err("'%s' is not a full JID (USER@DOMAIN/RESOURCE)", full);
        return SBCTL_FAIL;
    }
    char bare[JID_BARE_MAX + 1], jid[JID_FULL_MAX + 1];
    jid_bare(&j, bare);
    jid_full(&j, jid);
    redisContext *c = sbctl_redis();
    if (!c)
        return SBCTL_FAIL;
    redisReply *r = sbctl_redis_cmd(c, "HEXISTS sess:{%s} %s", bare, j.resource);
    int exists = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1, n = 0;
    if (r)
        freeReplyObject(r);
    if (!exists)
        sbctl_err("no session %s", jid);
    else
        /* policy-violation: an operator's decision (RFC 6120 §4.9.3.14: "a
         * local service policy"), the reason in <text/>. */
        n = sbctl_kick_sessions(c, bare, j.resource, "policy-violation", reason);
    redisFree(c);
    if (sbctl_json) {
        sj_obj(NULL);
        sj_str("jid", jid);
        sj_bool("kicked", n > 0);
        sj_end_obj();
    } else if (n > 0)
        printf("session %s ended\n", jid);
    return n > 0 ? SBCTL_OK : SBCTL_FAIL;
}

int sbctl_cmd_session(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "list"))
        return session_list(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "kick"))
        return session_kick(argc - 1, argv + 1);
    return SBCTL_USAGE;
}
