/* anon.c — anonymous domains on the front-end side: SASL ANONYMOUS nodes
 * are claimed in Redis (`SET anon:{node@domain} <instance> NX EX 86400`, so
 * two front-ends can never hand out the same JID; the key is deleted when
 * the session closes, and expires if the front-end dies), and what an
 * anonymous user may reach: the local domains and the remote domains its policy
 * lets through (sb_domains_s2s_policy: `[domain.anon.localhost] s2s_allow =
 * a, b`, none by default, or its s2s_policy), checked before anything
 * leaves for the router. */
#include "c2s.h"
#include "config.h"
#include "log.h"
#include "rdev.h"

#include <stdlib.h>
#include <string.h>

#define ANON_CLAIM_TTL "86400"     /* a day: outlives any visit, ends leaks */

struct anon_claim {
    auth_claim_cb cb;
    void *arg;
};

static void anon_claim_reply(redisReply *r, void *arg)
{
    struct anon_claim *a = arg;
    int result = -1;
    if (r && r->type == REDIS_REPLY_STATUS)
        result = 1;                      /* OK */
    else if (r && r->type == REDIS_REPLY_NIL)
        result = 0;                      /* taken */
    else
        log_warn("anon_claim_failed", "reply=%s", r ? "error" : "none");
    a->cb(a->arg, result);
    free(a);
}

static sb_rc anon_claim(void *ud, const char *domain, const char *node, auth_claim_cb cb,
                        void *arg)
{
    if (!c2s.rd)
        return SB_ERROR;
    struct anon_claim *a = malloc(sizeof *a);
    if (!a)
        return SB_ERROR;
    a->cb = cb;
    a->arg = arg;
    if (rdev_cmd(c2s.rd, anon_claim_reply, a, "SET anon:{%s@%s} %s NX EX " ANON_CLAIM_TTL,
                 node, domain, c2s.instance) != SB_OK) {
        free(a);
        return SB_ERROR;
    }
    return SB_OK;
}

void c2s_anon_init(void)
{
    if (c2s.store)
        auth_store_set_claim(c2s.store, anon_claim, NULL);
}

static void anon_release_reply(redisReply *r, void *arg)
{
    if (!r || r->type == REDIS_REPLY_ERROR)
        log_warn("anon_release_failed", "note=\"the claim expires by itself\"");
}

void c2s_anon_release(struct c2s_conn *c)
{
    char bare[JID_BARE_MAX + 1];
    if (!c->jid || !c2s.rd || jid_bare_of(c->jid, bare, sizeof bare) < 0)
        return;
    rdev_cmd(c2s.rd, anon_release_reply, NULL, "DEL anon:{%s}", bare);
}

/* ---- what anonymous users may reach ----------------------------------- */

int c2s_anon_may_reach(const char *anon_domain, const char *target)
{
    static char prepared[JID_PART_MAX + 1];
    if (sb_domains_find(target))
        return 1;
    if (jid_nameprep(target, prepared) == SB_OK && sb_domains_find(prepared))
        return 1;
    /* The anonymous domain's policy, the one s2s applies (its s2s_allow list
     * unless it has an s2s_policy). */
    char buf[2048];
    const char *v = sb_domains_s2s_policy(anon_domain, buf, sizeof buf);
    return v && sb_domains_policy_eval(v, target) == 1;
}
