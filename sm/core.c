/* core.c — the sm's core: turns each envelope from the router into a job,
 * queues it on its user (or runs it at once when it concerns no user), parses
 * its stanza once and offers it to the modules in table order. */
#include "sm_int.h"
#include "config.h"
#include "curve.h"
#include "domains.h"
#include "log.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

/* ---- jobs -------------------------------------------------------------------- */

static char *job_put(char **p, const char *s, size_t n)
{
    char *start = *p;
    memcpy(start, s, n);
    start[n] = '\0';
    *p += n + 1;
    return start;
}

/* ---- metrics (common/metrics.h) ---------------------------------------------- */

SB_STANZA_COUNTERS(core_mx_in, "sb_stanzas_in_total", "Stanzas received from the bus, by type")
SB_HISTOGRAM(core_mx_job, "sb_sm_job_seconds", "",
             "Envelopes from received to handled (queue wait and Redis/PostgreSQL included)")
SB_COUNTER(core_mx_refused, "sb_sm_queue_refused_total", "",
           "Envelopes refused because the user's queue was full")
static const struct sm_core *core_mx;
static double core_mx_sessions(void)
{
    return core_mx ? (double)core_mx->nsessions : 0;
}
static double core_mx_users(void)
{
    return core_mx ? (double)HASH_COUNT(core_mx->users) : 0;
}
static double core_mx_queued(void)
{
    long n = 0;
    for (const struct sm_user *u = core_mx ? core_mx->users : NULL; u; u = u->hh.next)
        n += u->qlen;
    return (double)n;
}
SB_GAUGE_FN(core_mx_sess, "sb_sm_sessions", "", "Sessions cached by this sm", core_mx_sessions)
SB_GAUGE_FN(core_mx_nusers, "sb_sm_users", "", "User records cached by this sm", core_mx_users)
SB_GAUGE_FN(core_mx_q, "sb_sm_queued", "", "Envelopes waiting in per-user queues",
            core_mx_queued)

/* One allocation holds the job and copies of every string it needs. */
struct sm_job *sm_job_new(struct sm_core *c, const struct env_hdr *h,
                          const char *body, size_t body_len)
{
    size_t lk = strlen(h->key), ls = strlen(h->sender), li = strlen(h->sid);
    size_t lo = strlen(h->op), la = strlen(h->aux);
    struct sm_job *j = malloc(sizeof *j + lk + ls + li + lo + la + body_len + 6);
    if (!j)
        return NULL;
    memset(j, 0, sizeof *j);
    j->core = c;
    j->kind = h->kind;
    j->route = h->route;
    j->flags = h->flags;
    char *p = j->data;
    j->key = job_put(&p, h->key, lk);
    j->sender = job_put(&p, h->sender, ls);
    j->sid = job_put(&p, h->sid, li);
    j->op = job_put(&p, h->op, lo);
    j->aux = job_put(&p, h->aux, la);
    j->body = job_put(&p, body ? body : "", body ? body_len : 0);
    j->body_len = body ? body_len : 0;
    j->t_in = sb_now();
    return j;
}

void sm_job_free(struct sm_job *j)
{
    if (!j)
        return;
    xml_doc_free(j->doc);
    free(j->body_own);
    free(j);
}

void sm_job_set_body(struct sm_job *j, struct sb_buf *b)
{
    free(j->body_own);
    j->body_own = b->data;
    j->body = b->data;
    j->body_len = b->len;
    *b = (struct sb_buf)SB_BUF_INIT;
}

sb_rc sm_stanza_add_child(const char *body, size_t len, const char *child, size_t clen,
                          struct sb_buf *out)
{
    const char *end = body + len, *close = end;
    while (close > body && *close != '<')
        close--;
    if (close == body || strncmp(close, "</", 2))
        return SB_ERROR;
    sb_buf_add(out, body, (size_t)(close - body));
    sb_buf_add(out, child, clen);
    return sb_buf_add(out, close, (size_t)(end - close));
}

static const char *attr_or(const struct xml_node *n, const char *name, const char *def)
{
    const char *v = xml_attr(n, name);
    return v ? v : def;
}

/* Parse the stanza once; everything after reads j->st and the cached attrs. */
sb_rc sm_job_parse(struct sm_job *j)
{
    enum xml_err err = XML_ERR_NONE;
    j->doc = xml_doc_parse(j->body, j->body_len, NULL, &err);
    if (!j->doc || !j->doc->root) {
        log_warn("stanza_bad_xml", "key=%s sender=%s err=%s", sb_log_q(j->key),
                 j->sender, xml_err_name(err));
        return SB_ERROR;
    }
    j->st = j->doc->root;
    j->name = j->st->name;
    if (strcmp(j->name, "message") && strcmp(j->name, "presence") && strcmp(j->name, "iq")) {
        log_warn("stanza_bad_name", "key=%s name=%s", sb_log_q(j->key), sb_log_q(j->name));
        return SB_ERROR;
    }
    j->type = attr_or(j->st, "type", "");
    j->from = xml_attr(j->st, "from");
    j->to = xml_attr(j->st, "to");
    j->id = xml_attr(j->st, "id");
    /* Front-ends always stamp `from`; only the server's own answers to a
     * stanza without `to` omit it (RFC 6120 §8.1.2.1). Such a stanza can be
     * delivered but never answered. */
    if (!j->from)
        j->from = "";
    if (j->to && !*j->to)
        j->to = NULL;
    return SB_OK;
}

/* ---- dispatch ------------------------------------------------------------------ */

/* RFC 6120 §8.2.3: an iq get/set carries exactly one payload element. */
static int iq_well_formed(const struct sm_job *j, const struct xml_node **payload)
{
    int get_set = !strcmp(j->type, "get") || !strcmp(j->type, "set");
    int res_err = !strcmp(j->type, "result") || !strcmp(j->type, "error");
    *payload = xml_first_elem(j->st);
    if (!get_set)
        return res_err;   /* our own error to an id-less request has no id */
    return j->id && *payload && !xml_next_elem(*payload);
}

/* Offer a (parsed, well-formed) job to modules[start…] by its kind. */
static sb_rc dispatch_from(struct sm_job *j, size_t start)
{
    const char *ns = "";
    if (j->kind == ENV_STANZA && !strcmp(j->name, "iq")) {
        const struct xml_node *payload = xml_first_elem(j->st);
        ns = payload ? attr_or(payload, "xmlns", "") : "";
    }
    int msg = j->kind == ENV_STANZA && !strcmp(j->name, "message");
    for (size_t i = start; i < sm_nmodules; i++) {
        const struct sm_module *m = sm_modules[i];
        sb_rc rc = SB_DECLINED;
        if (j->kind == ENV_CONTROL)
            rc = m->handle_control ? m->handle_control(j, j->op) : SB_DECLINED;
        else if (!strcmp(j->name, "iq"))
            rc = m->handle_iq ? m->handle_iq(j, ns) : SB_DECLINED;
        else if (msg)
            rc = m->handle_message ? m->handle_message(j) : SB_DECLINED;
        else
            rc = m->handle_presence ? m->handle_presence(j) : SB_DECLINED;
        if (rc != SB_DECLINED)
            return rc;
    }
    if (j->kind == ENV_CONTROL)
        log_warn("control_unhandled", "op=%s key=%s sender=%s", sb_log_q(j->op),
                 sb_log_q(j->key), j->sender);
    else
        log_debug("stanza_unhandled", "name=%s to=%s from=%s", j->name,
                  sb_log_q(j->to ? j->to : "-"), sb_log_q(j->from));
    return SB_OK;
}

static sb_rc dispatch_stanza(struct sm_job *j)
{
    const struct xml_node *payload;
    if (sm_job_parse(j) != SB_OK)
        return SB_OK;
    if (!strcmp(j->name, "iq") && !iq_well_formed(j, &payload)) {
        sm_reply_error(j, "modify", "bad-request");
        return SB_OK;
    }
    return dispatch_from(j, 0);
}

static void job_finish(struct sm_job *j)
{
    sb_metric_observe(&core_mx_job, sb_now() - j->t_in);
    if (j->user && j->user->cur == j)
        j->user->cur = NULL;
    sm_job_free(j);
}

void sm_job_run(struct sm_job *j)
{
    j->in_dispatch = 1;
    sb_rc rc = j->kind == ENV_CONTROL ? dispatch_from(j, 0) : dispatch_stanza(j);
    j->in_dispatch = 0;
    if (rc != SB_AGAIN || j->finished)
        job_finish(j);
}

void sm_job_rerun(struct sm_job *j, const struct sm_module *from)
{
    size_t start = 0;
    while (start < sm_nmodules && sm_modules[start] != from)
        start++;
    j->in_dispatch = 1;
    j->finished = 0;
    sb_rc rc = dispatch_from(j, start);
    j->in_dispatch = 0;
    if (rc != SB_AGAIN || j->finished)
        sm_job_done(j);
}

void sm_job_done(struct sm_job *j)
{
    if (j->in_dispatch) {       /* the reply came before the module returned */
        j->finished = 1;
        return;
    }
    struct sm_user *u = j->user;
    job_finish(j);
    if (u)
        sm_user_run(u);
}

/* ---- helpers for modules ------------------------------------------------------- */

const char *sm_job_sender_resource(const struct sm_job *j)
{
    const char *slash = strchr(j->aux, '/');
    return slash ? slash + 1 : "";
}

/* Does `full` (a JID) have exactly the bare part `bare`? */
static int jid_is_bare_of(const char *full, const char *bare, size_t blen)
{
    return !strncmp(full, bare, blen) && (full[blen] == '\0' || full[blen] == '/');
}

int sm_job_to_own_account(const struct sm_job *j)
{
    if (!j->to)
        return 1;
    const char *slash = strchr(j->aux, '/');
    size_t blen = slash ? (size_t)(slash - j->aux) : strlen(j->aux);
    return strlen(j->to) == blen && jid_is_bare_of(j->to, j->aux, blen);
}

int sm_job_to_domain(const struct sm_job *j)
{
    return j->to && !strchr(j->to, '@') && !strchr(j->to, '/');
}

int sm_is_local_domain(const struct sm_core *c, const char *domain)
{
    return sb_domains_has(domain);     /* common/domains: loaded by cluster.c */
}

sb_rc sm_pg_query(struct sm_core *c, const char *sql, int nparams,
                  const char *const *params, pgev_cb cb, void *arg)
{
    if (!c->pg || c->stopping)
        return SB_ERROR;
    return pgev_query(c->pg, sql, nparams, params, cb, arg);
}

int sm_pg_down(const struct sm_core *c)
{
    return c->pg && pgev_lost(c->pg);
}

sb_rc sm_pg_read(struct sm_core *c, const char *sql, int nparams,
                 const char *const *params, pgev_cb cb, void *arg)
{
    if (sm_pg_down(c))
        return SB_ERROR;
    return sm_pg_query(c, sql, nparams, params, cb, arg);
}

/* ---- the link ------------------------------------------------------------------ */

/* A user whose queue is this long is stuck behind a slow Redis or
 * PostgreSQL (or flooded): new stanzas and binds are refused at once rather
 * than piling up; session ends still queue so no binding is left behind. */
#define SM_USER_QUEUE_MAX 1000

static int core_refuse_overflow(struct sm_job *j)
{
    if (j->kind == ENV_CONTROL && !strcmp(j->op, "bind")) {
        sm_send_control(j->core, ENV_ROUTE_INSTANCE, j->sender, j->sid, "bind-failed",
                        "resource-constraint");
    } else if (j->kind == ENV_STANZA) {
        if (sm_job_parse(j) == SB_OK)
            sm_reply_error(j, "wait", "resource-constraint");
    } else {
        return 0;
    }
    sb_metric_inc(&core_mx_refused);
    log_warn("user_queue_full", "jid=%s op=%s", sb_log_q(j->key), *j->op ? j->op : "stanza");
    sm_job_free(j);
    return 1;
}

/* Per-user work is keyed by `node@domain`; a bare domain key (the server
 * itself) or an instance key (clean-up) is no user's and runs at once. */
void sm_core_submit(struct sm_core *c, const struct env_hdr *h, const char *body, size_t len)
{
    struct sm_job *j = sm_job_new(c, h, body, len);
    if (!j) {
        log_error("job_alloc_failed", "key=%s", sb_log_q(h->key));
        return;
    }
    if (h->route == ENV_ROUTE_JID && strchr(h->key, '@')) {
        struct sm_user *u = sm_user_get(c, h->key);
        if (!u) {
            log_error("user_alloc_failed", "jid=%s", sb_log_q(h->key));
            sm_job_free(j);
            return;
        }
        if (u->qlen >= SM_USER_QUEUE_MAX && core_refuse_overflow(j))
            return;
        sm_user_push(u, j);
        sm_user_run(u);
        return;
    }
    sm_job_run(j);
}

void sm_core_on_recv(struct link *l, const struct env_hdr *h,
                     const char *body, size_t body_len, void *ud)
{
    struct sm_core *c = ud;
    if (c->stopping)
        return;
    switch (h->kind) {
    case ENV_STANZA:
        sb_metric_inc(core_mx_in[sb_stanza_kind_of_xml(body, body_len)]);
        sm_core_submit(c, h, body, body_len);
        break;
    case ENV_CONTROL:
        if (!strcmp(h->op, "members"))
            sm_cluster_on_members(c, body, body_len);
        else
            sm_core_submit(c, h, body, body_len);
        break;
    case ENV_BOUNCE:
        sm_cluster_on_bounce(c, h, body, body_len);
        break;
    default:
        log_warn("envelope_unexpected", "kind=%s sender=%s", env_kind_name(h->kind), h->sender);
    }
    link_set_sessions(c->link, c->nsessions);
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* No router at start: exit 1. Lease lost (frozen or cut off past the
 * lease): our users have moved to other sms, so nothing cached here may be
 * trusted; what is idle goes now, the rest reloads on ownership checks. */
static void sm_core_on_state(struct link *l, enum link_state st, void *ud)
{
    struct sm_core *c = ud;
    if (st == LINK_NO_ROUTER) {
        log_error("start_failed", "why=no-router routers=%s", sb_log_q(sb_config_routers()));
        c->failed = 1;
        ev_break(c->loop, EVBREAK_ALL);
    } else if (st == LINK_LEASE_LOST) {
        c->handed_over = 0;
        long users = sm_users_drop_idle(c, 0);
        log_warn("lease_lost_dropped", "users=%ld unacked_handed_over=%ld", users,
                 c->handed_over);
    }
}

struct sm_core *sm_core_new(struct ev_loop *loop, const char *instance)
{
    struct sm_core *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->started = sb_now();
    core_mx = c;
    if (sb_curve_load(&c->curve, instance) != SB_OK) {
        free(c);
        return NULL;
    }
    struct link_opts lo = {
        .curve = c->curve,
        .endpoint = sb_config_routers(),
        .router_wait = atof(sb_config_str("router_wait", "10")),
        .instance = instance,
        .kind = "sm",
        .domains = "",
        .heartbeat = (double)sb_config_int("heartbeat", 1),
        .direct_bind = sb_config_str("direct_bind", "tcp://127.0.0.1:*"),
        .direct_advertise = sb_config_str("direct_advertise", ""),
        .batch_window = sb_config_int("batch_window_us", 1000) / 1e6,
    };
    c->link = link_new(loop, &lo, sm_core_on_recv, c);
    c->rd = rdev_from_config(loop);
    c->pg = pgev_new(loop, sb_config_str("postgres", ""));
    if (!c->link || !c->rd || !c->pg) {
        log_error("sm_init_failed", "link=%d redis=%d postgres=%d",
                  c->link != NULL, c->rd != NULL, c->pg != NULL);
        sm_core_free(c);
        return NULL;
    }
    rdev_set_on_up(c->rd, sm_users_republish, c);
    link_set_on_state(c->link, sm_core_on_state, c);
    sm_cluster_start(c);
    for (size_t i = 0; i < sm_nmodules; i++)
        if (sm_modules[i]->start)
            sm_modules[i]->start(c);
    log_info("sm_ready", "router=%s modules=%zu", lo.endpoint, sm_nmodules);
    return c;
}

/* Redis and PostgreSQL go first: their pending callbacks fire (with NULL)
 * while the link can still carry the error replies; no new job starts. */
void sm_core_free(struct sm_core *c)
{
    core_mx = NULL;
    if (!c)
        return;
    c->stopping = 1;
    sm_cluster_stop(c);
    struct rdev *rd = c->rd;
    struct pgev *pg = c->pg;
    c->rd = NULL;
    c->pg = NULL;
    if (rd)
        rdev_free(rd);
    if (pg)
        pgev_free(pg);
    for (size_t i = 0; i < sm_nmodules; i++)
        if (sm_modules[i]->stop)
            sm_modules[i]->stop(c);
    sm_users_free_all(c);
    if (c->link)
        link_free(c->link);
    sb_curve_free(c->curve);    /* after the direct ROUTER is closed */
    free(c->sm_members);
    sb_buf_free(&c->obuf);
    free(c);
}
