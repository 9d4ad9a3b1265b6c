/* anon.c — anonymous domains on the front-end side: SASL ANONYMOUS nodes
 * are claimed in Redis (`SET anon:{node@domain} <instance> NX EX 86400`, so
 * two front-ends can never hand out the same JID; the key is deleted when
 * the session closes, and expires if the front-end dies), and what an
 * anonymous user may reach: the local domains and the remote domains listed
 * for that domain in the config (`[domain.anon.localhost] s2s_allow = a, b`;
 * none by default), checked before anything leaves for the router. */
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

/* Parsed s2s_allow lists, one per anonymous domain (interned pointers). */
static struct anon_allow {
    const char *domain;
    char *list;                    /* ",a,b,", owned */
} anon_allow[16];
static int anon_nallow;

static const char *anon_allow_list(const char *domain)
{
    for (int i = 0; i < anon_nallow; i++)
        if (anon_allow[i].domain == domain)
            return anon_allow[i].list;
    const char *v = sb_config_str_in("domain", domain, "s2s_allow", "");
    struct sb_buf b = SB_BUF_INIT;
    sb_buf_adds(&b, ",");
    while (*v) {
        v += strspn(v, " ,\t");
        size_t n = strcspn(v, " ,\t");
        if (n) {
            sb_buf_add(&b, v, n);
            sb_buf_adds(&b, ",");
        }
        v += n;
    }
    if (!b.data)
        return ",";
    if (anon_nallow == (int)SB_ARRAY_LEN(anon_allow)) {
        sb_buf_free(&b);
        return ",";                /* more anonymous domains than slots: deny */
    }
    log_info("anon_s2s_allow", "domain=%s allow=%s", domain, sb_log_q(b.data));
    anon_allow[anon_nallow].domain = domain;
    anon_allow[anon_nallow].list = b.data;
    return anon_allow[anon_nallow++].list;
}

int c2s_anon_may_reach(const char *anon_domain, const char *target)
{
    static char prepared[JID_PART_MAX + 1];
    if (sb_domains_find(target))
        return 1;
    if (jid_nameprep(target, prepared) == SB_OK && sb_domains_find(prepared))
        return 1;
    const char *list = anon_allow_list(anon_domain);
    size_t n = strlen(target);
    for (const char *p = strstr(list, target); p; p = strstr(p + 1, target))
        if (p[-1] == ',' && p[n] == ',')
            return 1;
    return 0;
}

void c2s_anon_cleanup(void)
{
    for (int i = 0; i < anon_nallow; i++)
        free(anon_allow[i].list);
    anon_nallow = 0;
}
