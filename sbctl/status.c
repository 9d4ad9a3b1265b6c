/* status.c — `sbctl status`: the cluster's health in one screen.
 * - The instances, from the first router that answers ADMIN op=status (one
 *   `key=value …` line per live instance, common/ENVELOPE.md), each with
 *   what its lease in Redis adds (`lease:NAME`: the last HELLO, the address
 *   a router saw it at, uptime, stanza rates; PTTL = how long it has left).
 * - The s2s connections, from every s2s instance (ADMIN op=s2s).
 * - Whether each router answers, Redis PING and PostgreSQL SELECT 1, each
 *   with a short timeout.
 * - One line per problem at the end; exit 1 when there is any. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "config.h"
#include "sb.h"
#include "sbctl.h"

#define STATUS_TIMEOUT_MS 2000
#define STATUS_ROUTER_MS 1000   /* per router: a dead one must not hold up the rest */
#define STATUS_MAX 256          /* instances shown */
#define STATUS_ROUTERS 16
#define STATUS_PROBLEMS 64

struct status_inst {
    char line[2048];            /* the router's status line */
    char lease[2048];           /* the lease body, "" when none */
    long long ttl_ms;           /* PTTL; -2 no lease, -3 not asked */
};

static struct status_inst st_inst[STATUS_MAX];
static int st_n;
static char st_problem[STATUS_PROBLEMS][256];
static int st_nproblems;
static char st_s2s[16384];      /* s2s answers, one line per connection */
static size_t st_s2s_len;

static void status_problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void status_problem(const char *fmt, ...)
{
    if (st_nproblems == STATUS_PROBLEMS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st_problem[st_nproblems++], sizeof st_problem[0], fmt, ap);
    va_end(ap);
}

/* Value of key in a `k=v k=v` line into out ("-" when absent). */
static void status_field(const char *line, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key), len = strlen(line);
    const char *p = line, *end = line + len;

    snprintf(out, cap, "-");
    while (p < end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *tok_end = sp ? sp : end;
        if ((size_t)(tok_end - p) > kl && memcmp(p, key, kl) == 0 && p[kl] == '=') {
            snprintf(out, cap, "%.*s", (int)(tok_end - p - kl - 1), p + kl + 1);
            return;
        }
        p = tok_end + 1;
    }
}

/* A field of the router's line, else of the lease. */
static void status_get(const struct status_inst *in, const char *key, char *out, size_t cap)
{
    status_field(in->line, key, out, cap);
    if (!strcmp(out, "-") && in->lease[0])
        status_field(in->lease, key, out, cap);
}

/* Every `k=v` of a line as members of the current JSON object; numbers as
 * numbers. */
static void status_json_fields(const char *line, const char *skip)
{
    char copy[2048], *save = NULL;
    snprintf(copy, sizeof copy, "%s", line);
    for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(t, '=');
        if (!eq || eq == t)
            continue;
        *eq = '\0';
        char pat[72];
        snprintf(pat, sizeof pat, " %.64s ", t);
        if (skip && strstr(skip, pat))
            continue;
        char *end;
        double v = strtod(eq + 1, &end);
        if (eq[1] && !*end && strcmp(t, "inc") && strcmp(t, "name"))
            sj_num(t, v);
        else
            sj_str(t, eq + 1);
    }
}

/* ---- the router ---------------------------------------------------------------- */

static void status_take_lines(const char *body, size_t len)
{
    const char *p = body, *end = body + len;
    st_n = 0;
    while (p < end && st_n < STATUS_MAX) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (ll > 0 && ll < sizeof st_inst[0].line) {
            memcpy(st_inst[st_n].line, p, ll);
            st_inst[st_n].line[ll] = '\0';
            st_inst[st_n].lease[0] = '\0';
            st_inst[st_n].ttl_ms = -3;
            st_n++;
        }
        p += ll + 1;
    }
}

/* Wait for one ZeroMQ message until deadline and pass each envelope in it
 * (the router batches: [h1][b1][h2][b2]…) to fn. Returns the sum of fn's
 * results, or -1 when the deadline passed with nothing received. */
typedef int (*status_fn)(const struct env_hdr *h, const char *body, size_t len);

static int status_next(struct sbctl_bus *b, double deadline, status_fn fn)
{
    void *sock = NULL;
    while (!sock) {
        long left = (long)((deadline - sb_now()) * 1000);
        if (left <= 0)
            return -1;
        sock = sbctl_bus_poll(b, left);
    }
    zmq_msg_t f[2];
    int n = 0, more = 1, sum = 0;
    struct env_hdr h;
    while (more) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], sock, 0) < 0) {
            zmq_msg_close(&f[n]);
            break;
        }
        more = zmq_msg_more(&f[n]);
        if (++n < 2)
            continue;
        if (env_decode(&h, zmq_msg_data(&f[0]), zmq_msg_size(&f[0])) == SB_OK)
            sum += fn(&h, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]));
        zmq_msg_close(&f[0]);
        zmq_msg_close(&f[1]);
        n = 0;
    }
    if (n)
        zmq_msg_close(&f[0]);
    return sum;
}

static int status_take;         /* keep the table of this answer */

static int status_on_reply(const struct env_hdr *h, const char *body, size_t len)
{
    if (h->kind == ENV_ADMIN && strcmp(h->op, "status") == 0) {
        if (status_take)
            status_take_lines(body, len);
        return 1;
    }
    return h->kind == ENV_BOUNCE ? -1000 : 0;
}

/* 1 for each answer (or bounce) of an s2s instance. */
static int status_on_s2s(const struct env_hdr *h, const char *body, size_t len)
{
    if (h->kind == ENV_ADMIN && !strcmp(h->op, "s2s") &&
        len < sizeof st_s2s - st_s2s_len - 1) {
        memcpy(st_s2s + st_s2s_len, body, len);
        st_s2s_len += len;
        if (len && body[len - 1] != '\n')
            st_s2s[st_s2s_len++] = '\n';
        st_s2s[st_s2s_len] = '\0';
    }
    return h->kind == ENV_ADMIN || h->kind == ENV_BOUNCE;
}

/* Ask every s2s instance for its connections; keeps what answers in time. */
static void status_s2s_query(struct sbctl_bus *b)
{
    int asked = 0;
    char kind[32], name[64];
    for (int i = 0; i < st_n; i++) {
        status_field(st_inst[i].line, "kind", kind, sizeof kind);
        status_field(st_inst[i].line, "name", name, sizeof name);
        if (!strcmp(kind, "s2s") && sbctl_bus_send(b, ENV_ROUTE_INSTANCE, name, "s2s", "", "", "") == 0)
            asked++;
    }
    double deadline = sb_now() + STATUS_TIMEOUT_MS / 1000.0;
    while (asked > 0) {
        int r = status_next(b, deadline, status_on_s2s);
        if (r < 0)
            break;
        asked -= r;
    }
    if (asked > 0)
        status_problem("%d s2s instance(s) did not answer within %.1f s", asked,
                       STATUS_TIMEOUT_MS / 1000.0);
}

/* Ask one router; keep its table (and the s2s connections) when `take`.
 * 0 when it answered. */
static int status_ask(const char *endpoint, int take)
{
    struct sbctl_bus b;
    if (sbctl_bus_open(&b, endpoint) < 0)
        return -1;
    int rc = -1;
    if (sbctl_bus_send(&b, ENV_ROUTE_ROUTER, "", "status", "", "", "") == 0) {
        double deadline = sb_now() + STATUS_ROUTER_MS / 1000.0;
        int r;
        status_take = take;
        while ((r = status_next(&b, deadline, status_on_reply)) == 0)
            ;
        if (r > 0) {
            rc = 0;
            if (take)
                status_s2s_query(&b);
        }
    }
    sbctl_bus_close(&b);
    return rc;
}

/* ---- the stores ----------------------------------------------------------------- */

struct status_store {
    int up;
    double ms;
    char detail[512];
};

static void status_leases(redisContext *c)
{
    char name[64];
    for (int i = 0; i < st_n; i++) {
        status_field(st_inst[i].line, "name", name, sizeof name);
        redisAppendCommand(c, "GET lease:%s", name);
        redisAppendCommand(c, "PTTL lease:%s", name);
    }
    for (int i = 0; i < st_n; i++) {
        redisReply *g = NULL, *t = NULL;
        if (redisGetReply(c, (void **)&g) != REDIS_OK || redisGetReply(c, (void **)&t) != REDIS_OK) {
            if (g)
                freeReplyObject(g);
            return;
        }
        if (g->type == REDIS_REPLY_STRING)
            snprintf(st_inst[i].lease, sizeof st_inst[i].lease, "%s", g->str);
        if (t->type == REDIS_REPLY_INTEGER)
            st_inst[i].ttl_ms = t->integer;
        freeReplyObject(g);
        freeReplyObject(t);
    }
}

static void status_redis(struct status_store *s)
{
    double t0 = sb_now();
    redisContext *c = sbctl_redis_connect(s->detail, sizeof s->detail);
    if (!c)
        return;
    redisReply *r = redisCommand(c, "PING");
    s->up = r && r->type == REDIS_REPLY_STATUS;
    s->ms = (sb_now() - t0) * 1000;
    snprintf(s->detail, sizeof s->detail, "%s", s->up ? "PING answered" : r ? r->str : c->errstr);
    if (r)
        freeReplyObject(r);
    if (s->up)
        status_leases(c);
    redisFree(c);
}

static void status_pg(struct status_store *s)
{
    double t0 = sb_now();
    PGconn *c = sbctl_db_connect_quiet(s->detail, sizeof s->detail);
    if (!c)
        return;
    PQclear(PQexec(c, "SET statement_timeout = 2000"));
    PGresult *r = PQexec(c, "SELECT 1");
    s->up = PQresultStatus(r) == PGRES_TUPLES_OK;
    s->ms = (sb_now() - t0) * 1000;
    snprintf(s->detail, sizeof s->detail, "%s", s->up ? "SELECT 1 answered" : sbctl_pg_msg(c, r));
    PQclear(r);
    PQfinish(c);
}

/* ---- output ---------------------------------------------------------------------- */

static void status_uptime(const char *v, char *out, size_t cap)
{
    long s = strcmp(v, "-") ? atol(v) : -1;
    if (s < 0)
        snprintf(out, cap, "-");
    else if (s < 3600)
        snprintf(out, cap, "%ldm%02lds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, cap, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else
        snprintf(out, cap, "%ldd%02ldh", s / 86400, s / 3600 % 24);
}

#define STATUS_ROW "%-16s %-7s %-22s %-8s %-9s %-7s %-9s %-9s %-8s %-8s %-26s %s\n"

static void status_print_instances(void)
{
    char f[12][512];
    /* HEARTBEAT ("0.5s ago") right before SESSIONS: scripts find it so. */
    static const char *keys[] = {"name", "kind", "addr", "pid", "up_s", "-", "last_hello_ms",
                                 "sessions", "in_rate", "out_rate", "direct", "domains"};
    printf(STATUS_ROW, "INSTANCE", "KIND", "ADDRESS", "PID", "UPTIME", "LEASE", "HEARTBEAT",
           "SESSIONS", "IN/S", "OUT/S", "DIRECT", "DOMAINS");
    for (int i = 0; i < st_n; i++) {
        for (int k = 0; k < 12; k++)
            status_get(&st_inst[i], keys[k], f[k], sizeof f[k]);
        status_uptime(f[4], f[4], sizeof f[4]);
        if (strcmp(f[6], "-"))
            snprintf(f[6], sizeof f[6], "%.1fs ago", atof(f[6]) / 1000.0);
        if (st_inst[i].ttl_ms >= 0)
            snprintf(f[5], sizeof f[5], "%.1fs", st_inst[i].ttl_ms / 1000.0);
        printf(STATUS_ROW, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10],
               f[11][0] ? f[11] : "-");
    }
    if (st_n == 0)
        printf("(no live instances)\n");
}

static void status_print_s2s(void)
{
    char f[8][256];
    static const char *keys[8] = {"remote", "local", "dir", "state", "tls", "auth", "idle_s",
                                  "instance"};
    printf("\nS2S CONNECTIONS\n%-24s %-16s %-10s %-11s %-4s %-9s %-6s %s\n", "REMOTE", "LOCAL",
           "DIR", "STATE", "TLS", "AUTH", "IDLE", "INSTANCE");
    char copy[sizeof st_s2s], *save = NULL;
    memcpy(copy, st_s2s, st_s2s_len + 1);
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        for (int i = 0; i < 8; i++)
            status_field(l, keys[i], f[i], sizeof f[i]);
        printf("%-24s %-16s %-10s %-11s %-4s %-9s %-6s %s\n", f[0], f[1], f[2], f[3],
               !strcmp(f[4], "1") ? "yes" : "no", f[5], f[6], f[7]);
    }
}

static void status_json(char **eps, const int *up, int n, const struct status_store *rs,
                        const struct status_store *ps)
{
    sj_obj(NULL);
    sj_bool("healthy", st_nproblems == 0);
    sj_arr("instances");
    for (int i = 0; i < st_n; i++) {
        sj_obj(NULL);
        status_json_fields(st_inst[i].line, NULL);
        if (st_inst[i].lease[0])
            status_json_fields(st_inst[i].lease, " kind pid inc sessions domains direct seq ");
        if (st_inst[i].ttl_ms >= 0)
            sj_int("lease_ttl_ms", st_inst[i].ttl_ms);
        else
            sj_null("lease_ttl_ms");
        sj_end_obj();
    }
    sj_end_arr();
    sj_arr("s2s");
    char copy[sizeof st_s2s], *save = NULL;
    memcpy(copy, st_s2s, st_s2s_len + 1);
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        sj_obj(NULL);
        status_json_fields(l, NULL);
        sj_end_obj();
    }
    sj_end_arr();
    sj_arr("routers");
    for (int i = 0; i < n; i++) {
        sj_obj(NULL);
        sj_str("endpoint", eps[i]);
        sj_bool("answering", up[i]);
        sj_end_obj();
    }
    sj_end_arr();
    const struct status_store *s[2] = {rs, ps};
    static const char *names[2] = {"redis", "postgresql"};
    for (int i = 0; i < 2; i++) {
        sj_obj(names[i]);
        sj_bool("up", s[i]->up);
        if (s[i]->up)
            sj_num("ms", s[i]->ms);
        sj_str("detail", s[i]->detail);
        sj_end_obj();
    }
    sj_arr("problems");
    for (int i = 0; i < st_nproblems; i++)
        sj_str(NULL, st_problem[i]);
    sj_end_arr();
    sj_end_obj();
}

/* Problems the data shows: nobody to log in to or to route to, leases. */
static void status_judge(const struct status_store *rs)
{
    int sms = 0, fes = 0;
    char kind[32], name[64];
    for (int i = 0; i < st_n; i++) {
        status_field(st_inst[i].line, "kind", kind, sizeof kind);
        status_field(st_inst[i].line, "name", name, sizeof name);
        sms += !strcmp(kind, "sm");
        fes += !strcmp(kind, "c2s") || !strcmp(kind, "bosh");
        if (rs->up && st_inst[i].ttl_ms == -2)
            status_problem("%s: listed by the router but its lease is gone from Redis", name);
    }
    if (st_n > 0 && sms == 0)
        status_problem("no live sm: logins and messages fail");
    if (st_n > 0 && fes == 0)
        status_problem("no live c2s or bosh: clients cannot connect");
}

int sbctl_cmd_status(int argc, char **argv)
{
    if (argc != 0)
        return SBCTL_USAGE;
    char copy[1024], *eps[STATUS_ROUTERS];
    int n = sbctl_routers(copy, sizeof copy, eps, STATUS_ROUTERS), shown = -1;
    int up[STATUS_ROUTERS] = {0};
    for (int i = 0; i < n; i++) {
        up[i] = status_ask(eps[i], shown < 0) == 0;
        if (up[i] && shown < 0)
            shown = i;
        if (!up[i])
            status_problem("router %s does not answer (within %.1f s)", eps[i],
                           STATUS_ROUTER_MS / 1000.0);
    }
    if (n > 0 && shown < 0)
        status_problem("no router answers: the instance list is unknown");
    struct status_store rs = {0}, ps = {0};
    status_redis(&rs);
    status_pg(&ps);
    if (!rs.up)
        status_problem("Redis is down: %s", rs.detail);
    if (!ps.up)
        status_problem("PostgreSQL is down: %s", ps.detail);
    status_judge(&rs);

    if (sbctl_json) {
        status_json(eps, up, n < 0 ? 0 : n, &rs, &ps);
    } else {
        if (shown >= 0)
            status_print_instances();
        if (st_s2s_len)
            status_print_s2s();
        printf("\nROUTERS\n");
        for (int i = 0; i < n; i++)
            printf("%-40s %s\n", eps[i], up[i] ? "answering" : "no answer");
        printf("\nSTORES\n%-12s %-5s %s\n", "redis", rs.up ? "up" : "DOWN", rs.detail);
        printf("%-12s %-5s %s\n", "postgresql", ps.up ? "up" : "DOWN", ps.detail);
        printf("\n%s\n", st_nproblems ? "PROBLEMS" : "no problems");
        for (int i = 0; i < st_nproblems; i++)
            printf("problem: %s\n", st_problem[i]);
    }
    return n >= 0 && st_nproblems == 0 ? SBCTL_OK : SBCTL_FAIL;
}
