/* mod_last.c — XEP-0012 last activity.
 *   to a server domain   seconds since this sm started (server uptime)
 *   to a user's bare JID 0 while the user has a session; otherwise the
 *                        seconds since the last session ended, with the
 *                        <status/> of the last unavailable presence (for
 *                        the user and contacts subscribed to the user's
 *                        presence; others get service-unavailable)
 * The logout time is written to PostgreSQL (`last_activity`) when the last
 * session of a registered account ends; this module sees the `end`
 * control and the unavailable presence before mod_session / the presence
 * module (it declines both), so it must stay ahead of them in modules.c.
 * Logouts are written in batches: every logout handled during one loop
 * iteration goes into one statement (one commit, one WAL flush instead of
 * one per logout), sent before the loop sleeps (ev_prepare) and before any
 * read of last_activity, so a query always sees the logouts before it. */
#include "acct.h"
#include "log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_LAST "jabber:iq:last"

static const char *const last_features[] = {NS_LAST, NULL};

extern const struct sm_module sm_mod_last;

static const char LAST_STORE_SQL[] =
    "INSERT INTO last_activity (domain, username, logout_at, status)"
    " SELECT d, u, now(), s FROM unnest($1::text[], $2::text[], $3::text[]) AS t(d, u, s)"
    " ON CONFLICT (domain, username)"
    " DO UPDATE SET logout_at = now(), status = EXCLUDED.status";
static const char LAST_GET_SQL[] =
    "SELECT floor(extract(epoch FROM now() - logout_at))::bigint, status"
    " FROM last_activity WHERE domain = $1 AND username = $2";

/* ---- observing session ends and unavailable presence -------------------------- */

static void last_on_stored(PGresult *res, void *arg)
{
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("last_store_failed", "count=%ld error=%s", (long)(intptr_t)arg,
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
}

/* ---- the batch of logouts ------------------------------------------------------- */

#define LAST_BATCH_MAX 128

struct last_entry {
    char *domain, *node, *status;
};

static struct {
    struct sm_core *core;
    ev_prepare flush;           /* armed while the batch holds entries */
    int n;
    struct last_entry e[LAST_BATCH_MAX];
} last_batch;

static void last_entry_free(struct last_entry *e)
{
    free(e->domain);
    free(e->node);
    free(e->status);
    *e = (struct last_entry){0};
}

static void last_batch_clear(void)
{
    for (int i = 0; i < last_batch.n; i++)
        last_entry_free(&last_batch.e[i]);
    last_batch.n = 0;
    if (last_batch.core)
        ev_prepare_stop(last_batch.core->loop, &last_batch.flush);
}

/* Send the batch as one statement (a user appears once: the latest). */
static void last_flush(void)
{
    struct sm_core *c = last_batch.core;
    int n = last_batch.n;
    if (!n)
        return;
    struct sb_buf d = SB_BUF_INIT, u = SB_BUF_INIT, st = SB_BUF_INIT;
    sb_buf_adds(&d, "{");
    sb_buf_adds(&u, "{");
    sb_buf_adds(&st, "{");
    for (int i = 0; i < n; i++) {
        pgev_array_add(&d, last_batch.e[i].domain, strlen(last_batch.e[i].domain));
        pgev_array_add(&u, last_batch.e[i].node, strlen(last_batch.e[i].node));
        pgev_array_add(&st, last_batch.e[i].status, strlen(last_batch.e[i].status));
    }
    sb_buf_adds(&d, "}");
    sb_buf_adds(&u, "}");
    sb_buf_adds(&st, "}");
    const char *params[3] = {d.data, u.data, st.data};
    if (!d.data || !u.data || !st.data ||
        sm_pg_query(c, LAST_STORE_SQL, 3, params, last_on_stored, (void *)(intptr_t)n) != SB_OK)
        log_warn("last_store_failed", "count=%d error=queue", n);
    sb_buf_free(&d);
    sb_buf_free(&u);
    sb_buf_free(&st);
    last_batch_clear();
}

static void last_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    last_flush();
}

static sb_rc last_batch_add(struct sm_core *c, const char *domain, const char *node,
                            const char *status)
{
    if (last_batch.core != c) {         /* first use, or a new core (tests) */
        last_batch_clear();
        last_batch.core = c;
        ev_prepare_init(&last_batch.flush, last_on_prepare);
    }
    struct last_entry *e = NULL;
    for (int i = 0; i < last_batch.n && !e; i++)
        if (!strcmp(last_batch.e[i].domain, domain) && !strcmp(last_batch.e[i].node, node))
            e = &last_batch.e[i];       /* ON CONFLICT may touch a row once */
    if (!e) {
        if (last_batch.n == LAST_BATCH_MAX)
            last_flush();
        e = &last_batch.e[last_batch.n];
        if (!(e->domain = strdup(domain)) || !(e->node = strdup(node))) {
            last_entry_free(e);
            return SB_ERROR;
        }
        last_batch.n++;
    }
    free(e->status);
    if (!(e->status = strdup(status)))
        e->status = strdup("");         /* keep the logout time at least */
    if (!e->status)
        return SB_ERROR;
    ev_prepare_start(c->loop, &last_batch.flush);
    return SB_OK;
}

static void last_stop(struct sm_core *c)
{
    if (last_batch.core == c) {
        if (last_batch.n)
            log_warn("last_store_failed", "count=%d error=stopping", last_batch.n);
        last_batch_clear();
        last_batch.core = NULL;
    }
}

static void last_store(struct sm_user *u)
{
    char node[ENV_STR_MAX + 1];
    const char *domain;
    if (!u->acct || !u->acct->exists ||
        sm_acct_split(u->bare, node, sizeof node, &domain) != SB_OK)
        return;                         /* anonymous: nothing durable to keep */
    const char *status = u->acct->last_status ? u->acct->last_status : "";
    if (last_batch_add(u->core, domain, node, status) != SB_OK)
        log_warn("last_store_failed", "jid=%s error=nomem", sb_log_q(u->bare));
    sm_acct_set_last_status(u->acct, NULL);
}

/* The same test mod_session applies: only the current session's end counts. */
static sb_rc last_control(struct sm_job *j, const char *op)
{
    if ((strcmp(op, "end") && strcmp(op, "session-gone")) || !j->user)
        return SB_DECLINED;
    const char *slash = strchr(j->aux, '/');
    struct sm_session *s = slash ? sm_user_session(j->user, slash + 1) : NULL;
    if (s && !strcmp(s->sid, j->sid) && j->user->nsess == 1)
        last_store(j->user);
    return SB_DECLINED;
}

static sb_rc last_presence(struct sm_job *j)
{
    if (j->to || !j->user || !j->user->acct || strcmp(j->type, "unavailable"))
        return SB_DECLINED;
    struct xml_node *st = xml_child(j->st, "status", NULL);
    struct sb_buf t = SB_BUF_INIT;
    if (st)
        xml_text(st, &t);
    sm_acct_set_last_status(j->user->acct, t.data ? t.data : "");
    sb_buf_free(&t);
    return SB_DECLINED;
}

/* ---- answering ------------------------------------------------------------------ */

static sb_rc last_reply(struct sm_job *j, long long seconds, const char *status)
{
    char secs[32];
    snprintf(secs, sizeof secs, "%lld", seconds < 0 ? 0 : seconds);
    struct xml_doc *d = sm_iq_result_new(j);
    struct xml_node *q = d ? xml_add_child(d, d->root, "query") : NULL;
    sb_rc rc = q ? xml_set_attr(d, q, "xmlns", NS_LAST) : SB_ERROR;
    if (rc == SB_OK)
        rc = xml_set_attr(d, q, "seconds", secs);
    if (rc == SB_OK && status && *status)
        rc = xml_add_text(d, q, status, strlen(status));
    if (rc == SB_OK)
        rc = sm_send_node(j->core, d->root);
    xml_doc_free(d);
    if (rc != SB_OK)
        sm_reply_error(j, "wait", "internal-server-error");
    return SB_OK;
}

static void last_on_row(PGresult *res, void *arg)
{
    struct sm_job *j = arg;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("last_get_failed", "jid=%s error=%s", sb_log_q(j->key),
                 sb_log_q(res ? PQresultErrorMessage(res) : "no connection"));
        sm_reply_error(j, "wait", "internal-server-error");
    } else if (PQntuples(res) == 0) {
        sm_reply_error(j, "cancel", "item-not-found");    /* never logged out */
    } else {
        last_reply(j, atoll(PQgetvalue(res, 0, 0)), PQgetvalue(res, 0, 1));
    }
    sm_job_done(j);
}

static sb_rc last_user(struct sm_job *j)
{
    struct sm_user *u = j->user;
    char node[ENV_STR_MAX + 1];
    const char *domain;
    sb_rc auth = sm_acct_user_exists(u) ? sm_acct_authorize(j, &sm_mod_last) : SB_DECLINED;
    if (auth == SB_AGAIN)
        return SB_AGAIN;                /* re-offered once the roster is loaded */
    if (auth == SB_ERROR) {
        sm_reply_error(j, "wait", "internal-server-error");
        return SB_OK;
    }
    if (auth != SB_OK || sm_acct_split(u->bare, node, sizeof node, &domain) != SB_OK) {
        sm_reply_error(j, "cancel", "service-unavailable");
        return SB_OK;
    }
    if (u->nsess > 0)
        return last_reply(j, 0, NULL);  /* online now */
    if (last_batch.core == j->core)
        last_flush();                   /* the read must see every logout before it */
    const char *params[2] = {domain, node};
    if (sm_pg_read(j->core, LAST_GET_SQL, 2, params, last_on_row, j) != SB_OK) {
        sm_reply_error(j, "wait", "resource-constraint");
        return SB_OK;
    }
    return SB_AGAIN;
}

static sb_rc last_iq(struct sm_job *j, const char *ns)
{
    int server = sm_job_to_domain(j);
    int account = j->user && (!j->to || !strcmp(j->to, j->user->bare));
    if (strcmp(ns, NS_LAST) || (!server && !account))
        return SB_DECLINED;
    if (!strcmp(j->type, "set")) {
        sm_reply_error(j, "cancel", "feature-not-implemented");
        return SB_OK;
    }
    if (strcmp(j->type, "get"))
        return SB_OK;
    if (strcmp(xml_first_elem(j->st)->name, "query")) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    if (server)
        return last_reply(j, (long long)(sb_now() - j->core->started), NULL);
    return last_user(j);
}

const struct sm_module sm_mod_last = {
    .name = "last",
    .handle_iq = last_iq,
    .handle_presence = last_presence,
    .handle_control = last_control,
    .features = last_features,
    .stop = last_stop,
};
