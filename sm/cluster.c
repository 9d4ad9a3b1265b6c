/* cluster.c — the sm's place in the cluster: the local domains it announces
 * (common/domains: PostgreSQL `domains`, refreshed every 30 s), reacting to a change in the
 * set of live sm instances, and turning router bounces into stanza errors. */
#include "sm_int.h"
#include "domains.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

/* ---- domains ------------------------------------------------------------------ */

/* The list itself is common/domains.c's (the same loader as the front-ends):
 * the router learns every change. */
static void domains_changed(void *ud)
{
    struct sm_core *c = ud;
    link_set_domains(c->link, sb_domains_csv());
}

void sm_cluster_start(struct sm_core *c)
{
    sb_domains_start(c->loop, c->pg, domains_changed, c);
}

void sm_cluster_stop(struct sm_core *c)
{
    sb_domains_stop();
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
