/* domains.c — see domains.h. One list per process; c2s, bosh and s2s
 * used to carry a copy each. */
#include "domains.h"
#include "buf.h"
#include "config.h"
#include "jid.h"
#include "log.h"
#include "rdev.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DOMAINS_REFRESH 30.0
#define DOMAINS_RETRY   2.0

static struct ev_loop *dom_loop;
static struct pgev *dom_pg;
static sb_domains_fn dom_on_change;
static void *dom_ud;
static int dom_running, dom_loaded;
static ev_timer dom_timer;
static struct rdev *dom_sub;        /* SUBSCRIBE SB_DOMAINS_CHANNEL: its own connection */
static char **dom_names;
static int dom_count;
static char *dom_csv;               /* "a,b" */
static char *dom_anon;              /* ",a,b,": the anonymous ones */

/* Every name ever served, never freed (domains are few and rarely change,
 * and connections outlive a stop): they keep a pointer instead of a copy. */
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

int sb_domains_loaded(void)
{
    return dom_loaded;
}

int sb_domains_count(void)
{
    return dom_count;
}

const char *sb_domains_csv(void)
{
    return dom_csv ? dom_csv : "";
}

int sb_domains_has(const char *prepared)
{
    for (int i = 0; prepared && i < dom_count; i++)
        if (strcmp(dom_names[i], prepared) == 0)
            return 1;
    return 0;
}

const char *sb_domains_find(const char *prepared)
{
    return sb_domains_has(prepared) ? dom_intern(prepared) : NULL;
}

int sb_domains_anonymous(const char *prepared)
{
    if (!dom_anon || !prepared || !*prepared)
        return 0;
    size_t n = strlen(prepared);
    for (const char *p = strstr(dom_anon, prepared); p; p = strstr(p + 1, prepared))
        if (p[-1] == ',' && p[n] == ',')
            return 1;
    return 0;
}

static void dom_free_list(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Install a new list; 1 if the set of names changed. Takes ownership. */
static int dom_install(char **names, int n, char *csv, char *anon)
{
    if (!dom_anon || strcmp(dom_anon, anon) != 0)
        log_info("domains_anonymous", "names=%s", sb_log_q(anon));
    free(dom_anon);
    dom_anon = anon;
    if (dom_csv && strcmp(dom_csv, csv) == 0) {
        dom_free_list(names, n);
        free(csv);
        return 0;
    }
    dom_free_list(dom_names, dom_count);
    free(dom_csv);
    dom_names = names;
    dom_count = n;
    dom_csv = csv;
    log_info("domains", "count=%d names=%s", n, sb_log_q(csv));
    return 1;
}

/* names/csv/anon from a result; 0 when out of memory (all freed). */
static int dom_parse(PGresult *res, char ***names, int *k, struct sb_buf *csv, struct sb_buf *anon)
{
    int n = PQntuples(res);
    *names = calloc((size_t)n + 1, sizeof **names);
    *k = 0;
    sb_buf_adds(csv, "");
    sb_buf_adds(anon, ",");
    for (int i = 0; *names && i < n; i++) {
        char prepared[JID_PART_MAX + 1];
        if (jid_nameprep(PQgetvalue(res, i, 0), prepared) != SB_OK) {
            log_warn("domain_invalid", "name=%s", sb_log_q(PQgetvalue(res, i, 0)));
            continue;
        }
        if (!((*names)[*k] = strdup(prepared)))
            break;
        sb_buf_printf(csv, "%s%s", *k ? "," : "", prepared);
        if (PQnfields(res) > 1 && strcmp(PQgetvalue(res, i, 1), "t") == 0)
            sb_buf_printf(anon, "%s,", prepared);
        (*k)++;
    }
    if (*names && csv->data && anon->data)
        return 1;
    log_error("domains_nomem", "count=%d", n);
    dom_free_list(*names, *k);
    sb_buf_free(csv);
    sb_buf_free(anon);
    return 0;
}

static void dom_rearm(double after)
{
    if (!dom_running)
        return;
    ev_timer_stop(dom_loop, &dom_timer);
    ev_timer_set(&dom_timer, after, 0.);
    ev_timer_start(dom_loop, &dom_timer);
}

static void dom_result(PGresult *res, void *arg)
{
    (void)arg;
    if (!dom_running)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("domains_load_failed", "error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no-connection"));
        dom_rearm(dom_loaded ? DOMAINS_REFRESH : DOMAINS_RETRY);
        return;
    }
    char **names;
    int k;
    struct sb_buf csv = SB_BUF_INIT, anon = SB_BUF_INIT;
    if (!dom_parse(res, &names, &k, &csv, &anon)) {
        dom_rearm(dom_loaded ? DOMAINS_REFRESH : DOMAINS_RETRY);
        return;
    }
    int changed = dom_install(names, k, csv.data, anon.data) || !dom_loaded;
    dom_loaded = 1;
    dom_rearm(DOMAINS_REFRESH);
    if (changed && dom_on_change)
        dom_on_change(dom_ud);
}

static void dom_query(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    if (pgev_query(dom_pg, "SELECT name, anonymous FROM domains ORDER BY name", 0, NULL,
                   dom_result, NULL) != SB_OK) {
        log_warn("domains_query_failed", "reason=queue");
        dom_rearm(DOMAINS_RETRY);
    }
}

/* A change was published (sbctl domain add/del), or the subscription was
 * (re)confirmed and one may have been missed: read the table now. The
 * first confirmation comes with the start-up load already running. */
static void dom_notified(const char *msg, size_t len, void *arg)
{
    static int confirmed;
    if (!dom_running || (!msg && !confirmed++))
        return;
    log_info("domains_notified", "what=%s", msg ? sb_log_q(msg) : "resubscribed");
    dom_rearm(0.);
}

void sb_domains_start(struct ev_loop *loop, struct pgev *pg, sb_domains_fn on_change, void *ud)
{
    dom_loop = loop;
    dom_pg = pg;
    dom_on_change = on_change;
    dom_ud = ud;
    dom_running = 1;
    ev_init(&dom_timer, dom_query);
    dom_query(loop, &dom_timer, 0);
    if (!dom_sub && (dom_sub = rdev_from_config(loop)) &&
        rdev_subscribe(dom_sub, SB_DOMAINS_CHANNEL, dom_notified, NULL) != SB_OK)
        log_warn("domains_subscribe_failed", "channel=%s", SB_DOMAINS_CHANNEL);
}

void sb_domains_stop(void)
{
    rdev_free(dom_sub);
    dom_sub = NULL;
    if (dom_loop)
        ev_timer_stop(dom_loop, &dom_timer);
    dom_running = 0;
    dom_loaded = 0;
    dom_free_list(dom_names, dom_count);
    dom_names = NULL;
    dom_count = 0;
    free(dom_csv);
    dom_csv = NULL;
    free(dom_anon);
    dom_anon = NULL;
}

/* ---- front-ends ------------------------------------------------------------ */

static void (*dom_accept)(void);
static sb_domains_fn dom_user_change;
static void *dom_user_ud;

static void dom_serve_changed(void *ud)
{
    (void)ud;
    if (dom_user_change)
        dom_user_change(dom_user_ud);
    if (dom_accept) {
        void (*accept)(void) = dom_accept;
        dom_accept = NULL;            /* once */
        accept();
        log_info("accepting", "domains=%d", dom_count);
    }
}

void sb_domains_serve(struct ev_loop *loop, struct pgev *pg, void (*accept)(void),
                      sb_domains_fn on_change, void *ud)
{
    dom_accept = accept;
    dom_user_change = on_change;
    dom_user_ud = ud;
    sb_domains_start(loop, pg, dom_serve_changed, NULL);
}

/* ---- per-domain settings ----------------------------------------------------- */

const char *sb_domains_s2s_policy(const char *domain, char *buf, size_t cap)
{
    const char *v = sb_config_str_in("domain", domain, "s2s_policy", NULL);
    if (v || !sb_domains_anonymous(domain))
        return v;
    snprintf(buf, cap, "allow: %s", sb_config_str_in("domain", domain, "s2s_allow", ""));
    return buf;
}

static int dom_listed(const char *list, const char *remote)
{
    size_t rl = strlen(remote);
    const char *p = list;
    while (*p) {
        while (*p && (isspace((unsigned char)*p) || *p == ','))
            p++;
        const char *s = p;
        while (*p && !isspace((unsigned char)*p) && *p != ',')
            p++;
        if ((size_t)(p - s) == rl && !strncasecmp(s, remote, rl))
            return 1;
    }
    return 0;
}

int sb_domains_policy_eval(const char *value, const char *remote)
{
    while (isspace((unsigned char)*value))
        value++;
    int allow;
    if (!strncasecmp(value, "allow", 5))
        allow = 1;
    else if (!strncasecmp(value, "deny", 4))
        allow = 0;
    else
        return -1;
    const char *rest = value + (allow ? 5 : 4);
    while (isspace((unsigned char)*rest))
        rest++;
    if (!*rest)
        return allow;                      /* all or nothing */
    if (*rest != ':')
        return -1;
    int listed = dom_listed(rest + 1, remote);
    return allow ? listed : !listed;      /* allow-list or deny-list */
}

/* ---- the MUC service ---------------------------------------------------- */

static const char *dom_muc_sub(void)
{
    return sb_config_str_in("muc", NULL, "subdomain", "conference");
}

sb_rc sb_domains_muc_of(const char *domain, char *out, size_t cap)
{
    const char *sub = dom_muc_sub();
    if (!sub || !*sub || !domain || sb_domains_anonymous(domain))
        return SB_DONE;
    int n = snprintf(out, cap, "%s.%s", sub, domain);
    return n > 0 && (size_t)n < cap ? SB_OK : SB_DONE;
}

const char *sb_domains_muc_parent(const char *prepared)
{
    const char *sub = dom_muc_sub();
    size_t n = sub ? strlen(sub) : 0;
    if (!n || !prepared || strncmp(prepared, sub, n) != 0 || prepared[n] != '.')
        return NULL;
    const char *parent = sb_domains_find(prepared + n + 1);
    return parent && !sb_domains_anonymous(parent) ? parent : NULL;
}

sb_rc sb_domains_muc_csv(struct sb_buf *out)
{
    char name[JID_PART_MAX + 1];
    sb_buf_reset(out);
    sb_buf_adds(out, "");
    for (int i = 0; i < dom_count; i++)
        if (sb_domains_muc_of(dom_names[i], name, sizeof name) == SB_OK)
            sb_buf_printf(out, "%s%s", out->len ? "," : "", name);
    return out->data ? SB_OK : SB_ERROR;
}
