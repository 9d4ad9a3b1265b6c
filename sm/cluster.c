/* cluster.c — the sm's place in the cluster: the local domains it announces
 * (PostgreSQL `domains`, refreshed every 30 s), reacting to a change in the
 * set of live sm instances, and turning router bounces into stanza errors. */
#include "sm_int.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define SM_DOMAINS_REFRESH 30.0
#define SM_DOMAINS_RETRY 2.0

/* ---- domains ------------------------------------------------------------------ */

static void domains_arm(struct sm_core *c, double after)
{
    ev_timer_stop(c->loop, &c->domains_timer);
    ev_timer_set(&c->domains_timer, after, 0.);
    ev_timer_start(c->loop, &c->domains_timer);
}

static int domains_build(PGresult *res, struct sb_buf *all, struct sb_buf *anon)
{
    sb_buf_adds(anon, ",");
    for (int i = 0; i < PQntuples(res); i++) {
        const char *name = PQgetvalue(res, i, 0);
        const char *is_anon = PQgetvalue(res, i, 1);
        if (!*name || strchr(name, ','))
            continue;
        if (all->len)
            sb_buf_adds(all, ",");
        sb_buf_adds(all, name);
        if (is_anon[0] == 't')
            sb_buf_printf(anon, "%s,", name);
    }
    return all->data != NULL && anon->data != NULL;
}

static void domains_apply(struct sm_core *c, struct sb_buf *all, struct sb_buf *anon)
{
    int changed = !c->domains || strcmp(c->domains, all->data);
    free(c->domains);
    free(c->anon_domains);
    c->domains = all->data;
    c->anon_domains = anon->data;
    c->domains_loaded = 1;
    if (changed) {
        link_set_domains(c->link, c->domains);
        log_info("domains_loaded", "domains=%s anonymous=%s", sb_log_q(c->domains),
                 sb_log_q(c->anon_domains));
    }
}

static void domains_on_result(PGresult *res, void *arg)
{
    struct sm_core *c = arg;
    c->domains_query = 0;
    if (c->stopping)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("domains_load_failed", "error=%s",
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        domains_arm(c, c->domains_loaded ? SM_DOMAINS_REFRESH : SM_DOMAINS_RETRY);
        return;
    }
    struct sb_buf all = SB_BUF_INIT, anon = SB_BUF_INIT;
    sb_buf_adds(&all, "");
    if (domains_build(res, &all, &anon))
        domains_apply(c, &all, &anon);
    else {
        sb_buf_free(&all);
        sb_buf_free(&anon);
    }
    domains_arm(c, SM_DOMAINS_REFRESH);
}

static void domains_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sm_core *c = w->data;
    if (c->domains_query)
        return;
    c->domains_query = 1;
    if (sm_pg_query(c, "SELECT name, anonymous FROM domains ORDER BY name", 0, NULL,
                    domains_on_result, c) != SB_OK) {
        c->domains_query = 0;
        log_warn("domains_load_failed", "error=queue");
        domains_arm(c, SM_DOMAINS_RETRY);
    }
}

void sm_cluster_start(struct sm_core *c)
{
    ev_timer_init(&c->domains_timer, domains_on_timer, 0., 0.);
    c->domains_timer.data = c;
    ev_timer_start(c->loop, &c->domains_timer);
}

void sm_cluster_stop(struct sm_core *c)
{
    ev_timer_stop(c->loop, &c->domains_timer);
}

/* ---- members --------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "kind name [key=value…]" lines → the sorted sm names joined by '\n',
 * owned by caller. */
static char *members_sm_list(const char *body, size_t len, int *count)
{
    char *copy = strndup(body, len), *save = NULL;
    const char **names = calloc(len / 4 + 1, sizeof *names);
    struct sb_buf out = SB_BUF_INIT;
    int n = 0;
    if (!copy || !names)
        goto done;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(line, ' ');
        if (sp && sp - line == 2 && !strncmp(line, "sm", 2) && sp[1] && sp[1] != ' ') {
            names[n++] = sp + 1;
            char *end = strchr(sp + 1, ' ');
            if (end)
                *end = '\0';
        }
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    sb_buf_adds(&out, "");
    for (int i = 0; i < n; i++)
        sb_buf_printf(&out, "%s\n", names[i]);
done:
    free(copy);
    free(names);
    *count = n;
    return out.data;
}

/* A different set of sms rehashes users: one we cache may now be owned by
 * another sm, which loads it from Redis. Drop every idle record so that the
 * next envelope for it (if it still comes here) reloads fresh state. */
void sm_cluster_on_members(struct sm_core *c, const char *body, size_t len)
{
    int n = 0;
    char *list = members_sm_list(body, len, &n);
    if (!list)
        return;
    if (c->sm_members && !strcmp(c->sm_members, list)) {
        free(list);
        return;
    }
    free(c->sm_members);
    c->sm_members = list;
    long dropped = sm_users_drop_idle(c);
    log_info("members_changed", "sms=%d dropped_users=%ld", n, dropped);
}

/* ---- bounces ----------------------------------------------------------------------- */

static const char *bounce_condition(const char *reason)
{
    if (!strcmp(reason, "remote-domain"))
        return "remote-server-not-found";
    return "service-unavailable";
}

/* The router could not route something we sent: answer a stanza with an
 * error to its sender (never for an error); anything else is only logged. */
void sm_cluster_on_bounce(struct sm_core *c, const struct env_hdr *h,
                          const char *body, size_t len)
{
    log_warn("bounce", "reason=%s key=%s kind=%s", h->op, sb_log_q(h->aux),
             env_kind_name(h->flags));
    if (h->flags != ENV_STANZA)
        return;
    struct sm_job *j = sm_job_new(c, h, body, len);
    if (!j)
        return;
    if (sm_job_parse(j) == SB_OK && strcmp(j->type, "error"))
        sm_reply_error(j, "cancel", bounce_condition(h->op));
    sm_job_free(j);
}
