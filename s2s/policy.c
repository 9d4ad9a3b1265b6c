/* policy.c — which local domains exist (and which are anonymous), loaded
 * from PostgreSQL at start and every 30 s like c2s does, and whether a
 * local domain may exchange stanzas with a remote one. The policy of a
 * local domain is `[domain.NAME] s2s_policy`; an anonymous domain without
 * one allows only its `s2s_allow` list (what c2s and bosh enforce for its
 * users, none by default); other domains use `[s2s] policy` (allow):
 *   allow | deny | allow: a.example b.example | deny: a.example, b.example
 * It applies to both directions. Listeners open once the domains are known,
 * so a stream header is never judged against an empty list. */
#include "s2s.h"
#include "config.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DOMAINS_REFRESH 30.0
#define DOMAINS_RETRY   2.0

struct dom {
    char *name;
    int anonymous;
};
static struct dom *dom_list;
static int dom_count, dom_loaded;
static ev_timer dom_timer;
static char **dom_interned;
static int dom_ninterned;

static const char *dom_intern(const char *name)
{
    for (int i = 0; i < dom_ninterned; i++)
        if (!strcmp(dom_interned[i], name))
            return dom_interned[i];
    char **n = realloc(dom_interned, (size_t)(dom_ninterned + 1) * sizeof *n);
    if (!n)
        return NULL;
    dom_interned = n;
    if (!(n[dom_ninterned] = strdup(name)))
        return NULL;
    return n[dom_ninterned++];
}

const char *s2s_domain_find(const char *prepared)
{
    for (int i = 0; i < dom_count; i++)
        if (!strcmp(dom_list[i].name, prepared))
            return dom_intern(prepared);
    return NULL;
}

int s2s_domain_anonymous(const char *local)
{
    for (int i = 0; i < dom_count; i++)
        if (!strcmp(dom_list[i].name, local))
            return dom_list[i].anonymous;
    return 0;
}

static void dom_free_list(struct dom *l, int n)
{
    for (int i = 0; i < n; i++)
        free(l[i].name);
    free(l);
}

static void dom_result(PGresult *res, void *arg)
{
    double next = dom_loaded ? DOMAINS_REFRESH : DOMAINS_RETRY;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("domains_load_failed", "error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no-connection"));
        goto rearm;
    }
    int n = PQntuples(res), k = 0;
    struct dom *l = calloc((size_t)n + 1, sizeof *l);
    if (!l)
        goto rearm;
    struct sb_buf csv = SB_BUF_INIT;
    for (int i = 0; i < n; i++) {
        char prepared[JID_PART_MAX + 1];
        if (jid_nameprep(PQgetvalue(res, i, 0), prepared) != SB_OK || !(l[k].name = strdup(prepared)))
            continue;
        l[k].anonymous = PQgetvalue(res, i, 1)[0] == 't';
        sb_buf_printf(&csv, "%s%s%s", k ? "," : "", prepared, l[k].anonymous ? "(anon)" : "");
        k++;
    }
    dom_free_list(dom_list, dom_count);
    dom_list = l;
    dom_count = k;
    log_debug("domains", "count=%d names=%s", k, sb_log_q(csv.data ? csv.data : ""));
    sb_buf_free(&csv);
    if (!dom_loaded) {
        dom_loaded = 1;
        s2s_listen_start();
        log_info("accepting", "domains=%d", k);
    }
    next = DOMAINS_REFRESH;
rearm:
    if (s2s.stopping)
        return;
    ev_timer_set(&dom_timer, next, 0.);
    ev_timer_start(s2s.loop, &dom_timer);
}

static void dom_query(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (pgev_query(s2s.pg, "SELECT name, anonymous FROM domains ORDER BY name", 0, NULL,
                   dom_result, NULL) != SB_OK) {
        ev_timer_set(&dom_timer, DOMAINS_RETRY, 0.);
        ev_timer_start(s2s.loop, &dom_timer);
    }
}

void s2s_domains_start(void)
{
    ev_init(&dom_timer, dom_query);
    dom_query(s2s.loop, &dom_timer, 0);
}

void s2s_domains_stop(void)
{
    ev_timer_stop(s2s.loop, &dom_timer);
    dom_free_list(dom_list, dom_count);
    dom_list = NULL;
    dom_count = 0;
    for (int i = 0; i < dom_ninterned; i++)
        free(dom_interned[i]);
    free(dom_interned);
    dom_interned = NULL;
    dom_ninterned = 0;
}

/* ---- policy ----------------------------------------------------------------- */

int s2s_policy_allows(const char *local, const char *remote)
{
    const char *v = sb_config_str_in("domain", local, "s2s_policy", NULL);
    char buf[2048];
    if (!v && s2s_domain_anonymous(local)) {
        /* The same list the front-ends apply to anonymous users. */
        snprintf(buf, sizeof buf, "allow: %s", sb_config_str_in("domain", local, "s2s_allow", ""));
        v = buf;
    }
    if (!v)
        v = sb_config_str("policy", "allow");
    int r = s2s_policy_eval(v, remote);
    if (r < 0) {
        log_warn("policy_invalid", "local=%s value=%s note=\"treated as deny\"", local,
                 sb_log_q(v));
        return 0;
    }
    return r;
}
