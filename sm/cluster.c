/* cluster.c — the sm's place in the cluster: the local domains it announces
 * (common/domains: PostgreSQL `domains`, refreshed every 30 s, plus the
 * upload.D services of mod_upload), reacting to a change in the
 * set of live sm instances, and router bounces: messages for a front-end
 * that is gone delivered again, other stanzas answered with errors. */
#include "sm_int.h"
#include "config.h"
#include "domains.h"
#include "log.h"
#include "route.h"

#include <stdlib.h>
#include <string.h>

/* ---- domains ------------------------------------------------------------------ */

/* The list itself is common/domains.c's (the same loader as the front-ends):
 * the router learns every change. */
static void domains_changed(void *ud)
{
    struct sm_core *c = ud;
    link_set_domains(c->link, sm_upload_announce(sb_domains_csv()));
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
    c->handed_over = 0;
    long moved = sm_users_hand_over_moved(c);
    long dropped = sm_users_drop_idle(c, 1);
    log_info("members_changed", "sms=%d dropped_users=%ld moved_users=%ld "
             "unacked_handed_over=%ld", n, dropped, moved, c->handed_over);
}

int sm_cluster_owns(const struct sm_core *c, const char *bare)
{
    const char *me = link_instance(c->link), *best = NULL;
    size_t best_len = 0, klen = strlen(bare);
    uint64_t best_score = 0;
    if (!c->sm_members || !*c->sm_members || !me)
        return 1;
    for (const char *p = c->sm_members; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        char name[ENV_NAME_MAX + 1];
        if (l > 0 && l <= ENV_NAME_MAX) {
            memcpy(name, p, l);
            name[l] = '\0';
            uint64_t s = rt_score(name, bare, klen);
            /* the list is sorted: on a tie the earlier (smaller) name stays */
            if (!best || s > best_score) {
                best = p;
                best_len = l;
                best_score = s;
            }
        }
        p += l + (nl ? 1 : 0);
    }
    return best && strlen(me) == best_len && !memcmp(best, me, best_len);
}

/* ---- bounces ----------------------------------------------------------------------- */

static const char *bounce_condition(const char *reason)
{
    if (!strcmp(reason, "remote-domain"))
        return "remote-server-not-found";
    return "service-unavailable";
}

/* ---- front-ends gone ---------------------------------------------------------------- */

int sm_frontend_gone(const struct sm_core *c, const char *instance)
{
    if (c->ngone == 0)
        return 0;
    double now = sb_now();
    for (int i = 0; i < c->ngone; i++)
        if (!strcmp(c->gone[i].name, instance))
            return c->gone[i].until > now;
    return 0;
}

int sm_job_reaches(const struct sm_job *j, const struct sm_session *s)
{
    if (*j->op && !strcmp(j->op, "stale") && !strcmp(s->sid, j->sid))
        return 0;
    /* A stream-managed session keeps what it cannot take now in its queue
     * until it is resumed or ends (mod_sm.c). */
    return s->smq || !sm_frontend_gone(j->core, s->instance);
}

void sm_frontend_alive(struct sm_core *c, const char *instance)
{
    for (int i = 0; i < c->ngone; i++)
        if (!strcmp(c->gone[i].name, instance)) {
            log_info("frontend_back", "instance=%s", instance);
            c->gone[i] = c->gone[--c->ngone];
            return;
        }
}

/* A delivery to `name` came back: it is dead (or cut off from the router)
 * until its lease could have ended, when instance-down has cleaned its
 * sessions up or it has renewed the lease and is reachable again. */
static void cluster_mark_gone(struct sm_core *c, const char *name)
{
    double now = sb_now(), until = now + (double)sb_config_int("lease", 3);
    int slot = -1, n = 0;
    for (int i = 0; i < c->ngone; i++) {            /* compact the expired */
        if (c->gone[i].until <= now)
            continue;
        if (!strcmp(c->gone[i].name, name))
            slot = n;
        c->gone[n++] = c->gone[i];
    }
    c->ngone = n;
    if (slot < 0) {
        if (c->ngone == SM_GONE_MAX)
            return;         /* sixteen front-ends dead at once: bounce as before */
        slot = c->ngone++;
        memcpy(c->gone[slot].name, name, strlen(name) + 1);   /* caller checked the length */
        log_info("frontend_gone", "instance=%s for_s=%ld", name, sb_config_int("lease", 3));
    }
    c->gone[slot].until = until;
}

/* A message to a local user that its session's front-end did not take:
 * offered again to that user, now skipping the gone front-end, so it goes
 * to another session or to offline storage (RFC 6121 §8.5.2) instead of
 * back to its sender as an error. Each bounce marks one more front-end
 * gone, so this ends. */
static int cluster_redeliver(struct sm_core *c, const struct env_hdr *h, struct sm_job *j)
{
    struct env_hdr r;
    const char *slash;
    size_t blen;
    if (strcmp(j->name, "message") || !strcmp(j->type, "error") || !j->to || !*h->aux ||
        strcmp(h->op, "unknown-instance"))
        return 0;
    slash = strchr(j->to, '/');
    blen = slash ? (size_t)(slash - j->to) : strlen(j->to);
    if (!memchr(j->to, '@', blen) || blen >= sizeof r.key || strlen(j->from) >= sizeof r.aux ||
        strlen(h->aux) > ENV_NAME_MAX)
        return 0;
    cluster_mark_gone(c, h->aux);
    env_init(&r, ENV_STANZA, ENV_ROUTE_JID);
    memcpy(r.key, j->to, blen);
    r.key[blen] = '\0';
    snprintf(r.sender, sizeof r.sender, "%s", link_instance(c->link));
    snprintf(r.op, sizeof r.op, "redeliver");   /* archived the first time (mod_mam) */
    memcpy(r.aux, j->from, strlen(j->from) + 1);
    log_info("redeliver", "to=%s gone=%s", sb_log_q(r.key), h->aux);
    sm_core_submit(c, &r, j->body, j->body_len);
    return 1;
}

/* The router could not route something we sent. A message for a local
 * user whose front-end is gone is delivered again (above); any other
 * stanza is answered with an error to its sender (never for an error);
 * anything else is only logged. */
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
    int held = sm_job_parse(j) == SB_OK && j->to && !strcmp(h->op, "unknown-instance")
               ? sm_smq_holds(c, j->to, h->aux, h->sid) : 0;
    if (held == SM_HELD_QUEUED) {
        cluster_mark_gone(c, h->aux);   /* queued for a resumption: nothing lost */
        log_info("bounce_queued", "to=%s gone=%s", sb_log_q(j->to), h->aux);
    } else if (held == SM_HELD_RESENT) {
        /* resumed elsewhere before this came back: it was resent then */
        log_info("bounce_resent", "to=%s gone=%s", sb_log_q(j->to), h->aux);
    } else if (j->st && !cluster_redeliver(c, h, j) && strcmp(j->type, "error"))
        sm_reply_error(j, "cancel", bounce_condition(h->op));
    sm_job_free(j);
}
