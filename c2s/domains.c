/* domains.c — the domains this front-end serves: `SELECT name, anonymous
 * FROM domains`
 * through pgev at start and every 30 s. Clients are not accepted until the
 * first answer (connections wait in the listen backlog), so a stream header
 * is never judged against an empty list. A failed refresh keeps the last
 * good list. Names handed to connections are interned for the process. */
#include "c2s.h"
#include "jid.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define DOMAINS_REFRESH 30.0
#define DOMAINS_RETRY   2.0

static char **dom_names;
static int dom_count;
static char *dom_anon;              /* ",a,b,": the anonymous ones */
static int dom_loaded;
static ev_timer dom_timer;

/* Every name ever served, never freed (domains are few and rarely change):
 * connections keep a pointer instead of a copy. */
static char **dom_interned;
static int dom_ninterned;

static const char *dom_intern(const char *name)
{
    for (int i = 0; i < dom_ninterned; i++)
        if (strcmp(dom_interned[i], name) == 0)
            return dom_interned[i];
    char **n = realloc(dom_interned, (size_t)(dom_ninterned + 1) * sizeof *n);
    if (!n)
        return NULL;
    dom_interned = n;
    if (!(n[dom_ninterned] = strdup(name)))
        return NULL;
    return n[dom_ninterned++];
}

int c2s_domain_anonymous(const char *domain)
{
    if (!dom_anon || !domain || !*domain)
        return 0;
    size_t n = strlen(domain);
    for (const char *p = strstr(dom_anon, domain); p; p = strstr(p + 1, domain))
        if (p[-1] == ',' && p[n] == ',')
            return 1;
    return 0;
}

const char *c2s_domain_find(const char *prepared)
{
    for (int i = 0; i < dom_count; i++)
        if (strcmp(dom_names[i], prepared) == 0)
            return dom_intern(prepared);
    return NULL;
}

static void dom_free_list(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int dom_same(char **names, int n)
{
    if (n != dom_count)
        return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], dom_names[i]) != 0)
            return 0;
    return 1;
}

/* Install a new list (connections hold interned names, not these). */
static void dom_install(char **names, int n, char *anon)
{
    if (!dom_anon || strcmp(dom_anon, anon) != 0)
        log_info("domains_anonymous", "names=%s", sb_log_q(anon));
    free(dom_anon);
    dom_anon = anon;
    if (dom_same(names, n)) {
        dom_free_list(names, n);
        return;
    }
    struct sb_buf csv = SB_BUF_INIT;
    for (int i = 0; i < n; i++) {
        if (i)
            sb_buf_adds(&csv, ",");
        sb_buf_adds(&csv, names[i]);
    }
    dom_free_list(dom_names, dom_count);
    dom_names = names;
    dom_count = n;
    log_info("domains", "count=%d names=%s", n, sb_log_q(csv.data ? csv.data : ""));
    link_set_domains(c2s.link, csv.data ? csv.data : "");
    sb_buf_free(&csv);
}

static void dom_result(PGresult *res, void *arg)
{
    double next = dom_loaded ? DOMAINS_REFRESH : DOMAINS_RETRY;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("domains_load_failed", "error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no-connection"));
        goto rearm;
    }
    int n = PQntuples(res);
    char **names = calloc((size_t)n + 1, sizeof *names);
    struct sb_buf anon = SB_BUF_INIT;
    sb_buf_adds(&anon, ",");
    int k = 0;
    for (int i = 0; names && i < n; i++) {
        char prepared[JID_PART_MAX + 1];
        if (jid_nameprep(PQgetvalue(res, i, 0), prepared) != SB_OK) {
            log_warn("domain_invalid", "name=%s", sb_log_q(PQgetvalue(res, i, 0)));
            continue;
        }
        if (!(names[k] = strdup(prepared)))
            break;
        if (PQnfields(res) > 1 && strcmp(PQgetvalue(res, i, 1), "t") == 0)
            sb_buf_printf(&anon, "%s,", prepared);
        k++;
    }
    if (!names || !anon.data) {
        log_error("domains_nomem", "count=%d", n);
        dom_free_list(names, k);
        sb_buf_free(&anon);
        goto rearm;
    }
    dom_install(names, k, anon.data);
    if (!dom_loaded) {
        dom_loaded = 1;
        c2s_listen_start();
        log_info("accepting", "domains=%d", k);
    }
    next = DOMAINS_REFRESH;
rearm:
    if (c2s.stopping)
        return;
    ev_timer_set(&dom_timer, next, 0.);
    ev_timer_start(c2s.loop, &dom_timer);
}

static void dom_query(struct ev_loop *loop, ev_timer *w, int revents)
{
    if (pgev_query(c2s.pg, "SELECT name, anonymous FROM domains ORDER BY name", 0, NULL, dom_result,
                   NULL) != SB_OK) {
        log_warn("domains_query_failed", "reason=queue");
        ev_timer_set(&dom_timer, DOMAINS_RETRY, 0.);
        ev_timer_start(c2s.loop, &dom_timer);
    }
}

void c2s_domains_start(void)
{
    ev_init(&dom_timer, dom_query);
    dom_query(c2s.loop, &dom_timer, 0);
}

void c2s_domains_stop(void)
{
    ev_timer_stop(c2s.loop, &dom_timer);
    dom_free_list(dom_names, dom_count);
    dom_names = NULL;
    dom_count = 0;
    free(dom_anon);
    dom_anon = NULL;
}
