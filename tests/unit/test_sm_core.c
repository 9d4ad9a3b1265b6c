/* test_sm_core.c — the session manager's core and foundation modules, with
 * the link, Redis and PostgreSQL replaced by recorders: what a job sends to
 * Redis, in which order jobs of one user run, what reaches the router.
 * The sm sources are compiled into this test directly (they are not in a
 * library); the fakes below stand in for common/link.c, rdev.c, pgev.c. */
#define _GNU_SOURCE             /* memmem (sm/mod_carbons.c, mod_csi.c) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../sm/core.c"
#include "../../sm/user.c"
#include "../../sm/send.c"
#include "../../sm/cluster.c"
#include "../../sm/modules.c"
#include "../../sm/mod_session.c"
#include "../../sm/sub.c"
#include "../../sm/im.c"
#include "../../sm/mod_presence.c"
#include "../../sm/pgwait.c"
#include "../../sm/mod_offline.c"
#include "../../sm/mod_deliver.c"
#include "../../sm/mod_roster.c"
#include "../../sm/mod_disco.c"
#include "../../sm/mod_upload.c"
#include "../../sm/mod_ping.c"
#include "../../sm/mod_fallback.c"
#include "../../sm/acct.c"
#include "../../sm/mod_account.c"
#include "../../sm/mod_blocking.c"
#include "../../sm/mod_last.c"
#include "../../sm/mod_private.c"
#include "../../sm/mod_vcard.c"
#include "../../sm/mod_version.c"
#include "../../sm/mod_contacts.c"
#include "../../sm/mod_sm.c"
#include "../../sm/mod_push.c"
#include "../../sm/mod_carbons.c"
#include "../../sm/mod_csi.c"
#include "../../common/mam.c"
#include "../../sm/mod_mam.c"
#include "../../sm/pep.c"
#include "../../sm/caps.c"
#include "../../sm/mod_pep.c"
#include "../../sm/pep_compat.c"

/* ---- fake link: records what was sent -------------------------------------- */

struct sent {
    struct env_hdr h;
    char body[4096];
};
static struct sent sent[64];
static int nsent;
static int fake_token;

struct link *link_new(struct ev_loop *loop, const struct link_opts *o, link_recv_cb cb, void *ud)
{
    return (struct link *)&fake_token;
}
void link_free(struct link *l) {}
const char *link_instance(const struct link *l) { return "sm1"; }
void link_set_sessions(struct link *l, long n) {}
void link_set_domains(struct link *l, const char *csv) {}
void link_set_on_state(struct link *l, link_state_cb cb, void *ud) {}
sb_rc link_send(struct link *l, const struct env_hdr *h, const char *body, size_t len)
{
    assert_true(nsent < (int)SB_ARRAY_LEN(sent));
    sent[nsent].h = *h;
    snprintf(sent[nsent].body, sizeof sent[nsent].body, "%.*s", (int)len, body);
    nsent++;
    return SB_OK;
}

/* ---- fake Redis: commands wait until the test answers them ----------------- */

struct pending {
    char cmd[1024];
    rdev_cb cb;
    void *arg;
};
static struct pending rq[64];
static int nrq, rq_head;

/* RESP "*3\r\n$4\r\nHSET\r\n…" → "HSET a b". */
static void resp_to_text(const char *resp, char *out, size_t cap)
{
    const char *p = strchr(resp, '\n') + 1;
    size_t o = 0;
    while (*p == '$') {
        long n = strtol(p + 1, NULL, 10);
        p = strchr(p, '\n') + 1;
        o += (size_t)snprintf(out + o, cap - o, "%s%.*s", o ? " " : "", (int)n, p);
        p += n + 2;
    }
}

struct rdev *rdev_from_config(struct ev_loop *loop)
{
    return (struct rdev *)&fake_token;
}
void rdev_free(struct rdev *r)
{
    while (rq_head < nrq) {
        struct pending *q = &rq[rq_head++];
        q->cb(NULL, q->arg);
    }
}
int rdev_connected(const struct rdev *r) { return 1; }
void rdev_set_on_up(struct rdev *r, void (*cb)(void *arg), void *arg) {}
sb_rc rdev_subscribe(struct rdev *r, const char *channel, rdev_msg_cb cb, void *arg)
{
    return SB_OK;     /* common/domains.c subscribes: no messages in these tests */
}
sb_rc rdev_cmd(struct rdev *r, rdev_cb cb, void *arg, const char *fmt, ...)
{
    char *resp;
    va_list ap;
    va_start(ap, fmt);
    int n = redisvFormatCommand(&resp, fmt, ap);
    va_end(ap);
    assert_true(n > 0);
    assert_true(nrq < (int)SB_ARRAY_LEN(rq));
    resp_to_text(resp, rq[nrq].cmd, sizeof rq[nrq].cmd);
    redisFreeCommand(resp);
    rq[nrq].cb = cb;
    rq[nrq].arg = arg;
    nrq++;
    return SB_OK;
}
sb_rc rdev_cmdargv(struct rdev *r, rdev_cb cb, void *arg, int argc, const char **argv,
                   const size_t *argvlen)
{
    fail_msg("unexpected rdev_cmdargv");
    return SB_ERROR;
}

/* ---- fake PostgreSQL: the last query waits until the test answers it ------ */
static pgev_cb pg_cb;
static void *pg_arg;
static char pg_sql[2048];
static char acct_sql[4096];           /* the last account load's SQL */
static const char *const *acct_rows;  /* its rows, 6 columns each */
static int acct_nrows;
static char pg_params[4][1024];
static int pg_nqueries;
struct pgev *pgev_new(struct ev_loop *loop, const char *conninfo)
{
    return (struct pgev *)&fake_token;
}
void pgev_free(struct pgev *pg)
{
    if (pg_cb) {
        pgev_cb cb = pg_cb;
        pg_cb = NULL;
        cb(NULL, pg_arg);
    }
}
static int fake_pg_lost;        /* PostgreSQL "was up, is down now" */
int pgev_connected(const struct pgev *pg) { return !fake_pg_lost; }
int pgev_lost(const struct pgev *pg) { return fake_pg_lost; }
/* Fire-and-forget writes (roster rows, pending requests) are only counted:
 * their callbacks just log. Queries the test answers are kept. */
sb_rc pgev_query(struct pgev *pg, const char *sql, int nparams, const char *const *params,
                 pgev_cb cb, void *arg)
{
    if (strstr(sql, "FROM domains")) {
        /* common/domains loads the local domains at start: answered at
         * once (not counted), localhost and an anonymous domain. */
        PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
        PGresAttDesc attrs[2] = {{.name = (char *)"name"}, {.name = (char *)"anonymous"}};
        assert_true(PQsetResultAttrs(r, 2, attrs));
        const char *rows[2][2] = {{"anon.localhost", "t"}, {"localhost", "f"}};
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 2; k++)
                assert_true(PQsetvalue(r, i, k, (char *)rows[i][k], (int)strlen(rows[i][k])));
        cb(r, arg);
        PQclear(r);
        return SB_OK;
    }
    if (cb == acct_on_rows) {
        /* The account load of a user record: answered at once (not
         * counted) with acct_rows — none by default: no users row, an
         * empty blocklist and, when a session starts, an empty roster. */
        snprintf(acct_sql, sizeof acct_sql, "%s", sql);
        PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
        PGresAttDesc attrs[6];
        memset(attrs, 0, sizeof attrs);
        for (int c = 0; c < 6; c++)
            attrs[c].name = (char *)"c";
        assert_true(PQsetResultAttrs(r, 6, attrs));
        for (int i = 0; i < acct_nrows; i++)
            for (int c = 0; c < 6; c++)
                assert_true(PQsetvalue(r, i, c, (char *)acct_rows[i * 6 + c],
                                       (int)strlen(acct_rows[i * 6 + c])));
        cb(r, arg);
        PQclear(r);
        return SB_OK;
    }
    pg_nqueries++;
    snprintf(pg_sql, sizeof pg_sql, "%s", sql);
    for (int i = 0; i < nparams && i < 4; i++)
        snprintf(pg_params[i], sizeof pg_params[i], "%s", params[i]);
    if (cb == im_on_write || cb == offline_on_delete || cb == last_on_stored)
        return SB_OK;
    assert_null(pg_cb);   /* one answered query at a time in these tests */
    pg_cb = cb;
    pg_arg = arg;
    return SB_OK;
}

/* Answer the waiting query with rows of text columns (NULL rows: none). */
static void pg_answer(ExecStatusType status, int nrows, int ncols, const char *const *cells)
{
    assert_non_null(pg_cb);
    PGresult *r = PQmakeEmptyPGresult(NULL, status);
    if (ncols) {
        PGresAttDesc attrs[8];
        memset(attrs, 0, sizeof attrs);
        for (int c = 0; c < ncols; c++)
            attrs[c].name = (char *)"c";
        assert_true(PQsetResultAttrs(r, ncols, attrs));
    }
    for (int i = 0; i < nrows; i++)
        for (int c = 0; c < ncols; c++)
            assert_true(PQsetvalue(r, i, c, (char *)cells[i * ncols + c],
                                   (int)strlen(cells[i * ncols + c])));
    pgev_cb cb = pg_cb;
    pg_cb = NULL;
    cb(r, pg_arg);
    PQclear(r);
}

/* ---- helpers --------------------------------------------------------------------- */

static struct sm_core *core;

static int setup(void **st)
{
    nsent = nrq = rq_head = pg_nqueries = 0;
    fake_pg_lost = 0;
    pg_cb = NULL;
    acct_rows = NULL;
    acct_nrows = 0;
    acct_sql[0] = '\0';
    setenv("SB_CLUSTER_CURVE", "off", 1);   /* the link is a fake: no bus keys */
    core = sm_core_new(ev_default_loop(0), "sm1");
    assert_non_null(core);
    assert_true(sb_domains_has("localhost"));   /* loaded through the fake above */
    return 0;
}

static int teardown(void **st)
{
    sm_core_free(core);
    core = NULL;
    return 0;
}

/* Answer the oldest unanswered Redis command, checking its prefix. */
static void redis_answer(const char *expect_prefix, redisReply *r)
{
    assert_true(rq_head < nrq);
    /* Writes nobody waits for (HSET…) may sit before it: skip over them. */
    for (int i = rq_head; i < nrq; i++)
        if (!strncmp(rq[i].cmd, expect_prefix, strlen(expect_prefix))) {
            struct pending t = rq[i];
            memmove(&rq[rq_head + 1], &rq[rq_head], (size_t)(i - rq_head) * sizeof t);
            rq[rq_head] = t;
            break;
        }
    struct pending *q = &rq[rq_head++];
    if (strncmp(q->cmd, expect_prefix, strlen(expect_prefix)))
        fail_msg("redis got \"%s\", expected \"%s…\"", q->cmd, expect_prefix);
    q->cb(r, q->arg);
}

static void redis_int(const char *prefix, long long v)
{
    redisReply r = {.type = REDIS_REPLY_INTEGER, .integer = v};
    redis_answer(prefix, &r);
}

/* An array reply of n strings. */
static void redis_array(const char *prefix, int n, const char **items)
{
    redisReply el[8], *els[8];
    for (int i = 0; i < n; i++) {
        el[i] = (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)items[i],
                             .len = strlen(items[i])};
        els[i] = &el[i];
    }
    redisReply r = {.type = REDIS_REPLY_ARRAY, .elements = (size_t)n, .element = els};
    redis_answer(prefix, &r);
}

static void redis_empty_load(const char *bare)
{
    char p[256];
    snprintf(p, sizeof p, "HGETALL sess:{%s}", bare);
    redis_array(p, 0, NULL);
    snprintf(p, sizeof p, "HGETALL pres:{%s}", bare);
    redis_array(p, 0, NULL);
}

/* A record created for a bind also loads the IM flags (sm_im_preload). */
static void redis_session_load(const char *bare)
{
    char p[256];
    redis_empty_load(bare);
    snprintf(p, sizeof p, "HGETALL im:{%s}", bare);
    redis_array(p, 0, NULL);
}

static void recv_env(enum env_kind kind, enum env_route route, const char *key,
                     const char *sender, const char *sid, const char *op, const char *aux,
                     const char *body)
{
    static struct env_hdr h;
    env_init(&h, kind, route);
    snprintf(h.key, sizeof h.key, "%s", key);
    snprintf(h.sender, sizeof h.sender, "%s", sender);
    snprintf(h.sid, sizeof h.sid, "%s", sid);
    snprintf(h.op, sizeof h.op, "%s", op);
    snprintf(h.aux, sizeof h.aux, "%s", aux);
    sm_core_on_recv(NULL, &h, body, strlen(body), core);
}

static void recv_stanza(const char *key, const char *from_full, const char *xml)
{
    recv_env(ENV_STANZA, ENV_ROUTE_JID, key, "c2s1", "S0", "", from_full, xml);
}

/* Bind alice@localhost on c2s1 with sid; returns the full JID (static). */
static const char *bind_alice(const char *sid, int load)
{
    static char full[256];
    int before = nsent;
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", sid, "bind", "", "");
    if (load)
        redis_session_load("alice@localhost");
    redis_int("HSETNX sess:{alice@localhost} ", 1);
    redis_int("SADD fe:c2s1 alice@localhost/", 1);
    assert_int_equal(nsent, before + 1);
    assert_string_equal(sent[before].h.op, "bound");
    assert_string_equal(sent[before].h.key, "c2s1");
    assert_string_equal(sent[before].h.sid, sid);
    snprintf(full, sizeof full, "%s", sent[before].h.aux);
    return full;
}

/* A presence from a bound session: the IM state was loaded with the
 * session (no offline messages counted, so none are fetched). */
static void presence_from(const char *full, const char *sid, int prio)
{
    char xml[512];
    snprintf(xml, sizeof xml, "<presence from='%s'><priority>%d</priority></presence>", full, prio);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", sid, "", full, xml);
    assert_null(pg_cb);
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_bind_claims_generated_resource_with_hsetnx(void **st)
{
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "bind", "phone", "");
    redis_session_load("alice@localhost");
    assert_true(rq_head < nrq);
    /* HSETNX sess:{alice@localhost} phone.<16> "c2s1 S1 0" */
    const char *cmd = rq[rq_head].cmd;
    assert_true(!strncmp(cmd, "HSETNX sess:{alice@localhost} phone.", 36));
    assert_string_equal(cmd + 36 + 16, " c2s1 S1 0");
    redis_int("HSETNX", 1);
    redis_int("SADD fe:c2s1 alice@localhost/phone.", 1);
    assert_int_equal(nsent, 1);
    assert_string_equal(sent[0].h.op, "bound");
    assert_int_equal(strlen(sent[0].h.aux), strlen("alice@localhost/phone.") + 16);
    assert_int_equal(core->nsessions, 1);
}

static void test_bind_retries_after_collision(void **st)
{
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "bind", "", "");
    redis_session_load("alice@localhost");
    char first[256], member[256];
    snprintf(first, sizeof first, "%s", rq[rq_head].cmd);
    /* HSETNX and SADD are pipelined: the SADD of the taken resource is
     * undone (SREM of our own member), then a new resource is drawn. */
    assert_true(!strncmp(rq[rq_head + 1].cmd, "SADD fe:c2s1 ", 13));
    snprintf(member, sizeof member, "SREM%s", rq[rq_head + 1].cmd + 4);
    redis_int("HSETNX sess:{alice@localhost} ", 0);
    assert_int_equal(nsent, 0);
    redis_int("SADD fe:c2s1 ", 1);
    assert_int_equal(nsent, 0);
    assert_string_equal(rq[rq_head].cmd, member);
    redis_answer("SREM fe:c2s1 ", NULL);
    assert_string_not_equal(rq[rq_head].cmd, first);
    redis_int("HSETNX sess:{alice@localhost} ", 1);
    redis_int("SADD fe:c2s1 ", 1);
    assert_string_equal(sent[0].h.op, "bound");
}

static void test_bind_fails_when_redis_is_down(void **st)
{
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "bind", "", "");
    redis_answer("HGETALL sess:", NULL);
    redis_answer("HGETALL pres:", NULL);
    redis_answer("HGETALL im:", NULL);
    redis_answer("HSETNX", NULL);
    assert_int_equal(nsent, 0);       /* settled by the pipelined SADD's reply */
    redis_answer("SADD", NULL);
    assert_int_equal(nsent, 1);
    assert_string_equal(sent[0].h.op, "bind-failed");
    assert_string_equal(sent[0].h.aux, "internal-server-error");
    assert_int_equal(core->nsessions, 0);
}

static void test_later_stanza_waits_for_pending_bind(void **st)
{
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "bind", "", "");
    redis_session_load("alice@localhost");
    /* While HSETNX is pending, an iq for alice arrives: it must wait. */
    recv_stanza("alice@localhost", "bob@localhost/x",
                "<iq type='get' id='1' from='bob@localhost/x' to='alice@localhost'>"
                "<query xmlns='urn:x'/></iq>");
    assert_int_equal(nsent, 0);
    redis_int("HSETNX", 1);
    redis_int("SADD", 1);
    assert_int_equal(nsent, 2);
    assert_string_equal(sent[0].h.op, "bound");
    assert_int_equal(sent[1].h.kind, ENV_STANZA);
    assert_string_equal(sent[1].h.key, "bob@localhost");
}

static void test_message_to_bare_goes_to_highest_priority(void **st)
{
    char a[256], b[256];
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    snprintf(b, sizeof b, "%s", bind_alice("S2", 0));
    presence_from(a, "S1", 5);
    presence_from(b, "S2", 1);
    nsent = 0;
    recv_stanza("alice@localhost", "bob@localhost/x",
                "<message from='bob@localhost/x' to='alice@localhost' type='chat'><body>hi</body></message>");
    assert_int_equal(nsent, 1);
    assert_int_equal(sent[0].h.route, ENV_ROUTE_INSTANCE);
    assert_string_equal(sent[0].h.key, "c2s1");
    assert_string_equal(sent[0].h.sid, "S1");
    assert_non_null(strstr(sent[0].body, "<body>hi</body>"));
    /* No Redis round trip for the message itself. */
    assert_int_equal(rq_head, nrq - 4);   /* only the 2×2 presence stores */
}

static void test_message_without_available_session_is_refused(void **st)
{
    const char *a = bind_alice("S1", 1);
    presence_from(a, "S1", -1);
    nsent = 0;
    recv_stanza("alice@localhost", "bob@localhost/x",
                "<message from='bob@localhost/x' to='alice@localhost' id='m1'><body>hi</body></message>");
    /* Offline storage finds no such account. */
    const char *row[3] = {"f", "0", "0"};
    pg_answer(PGRES_TUPLES_OK, 1, 3, row);
    assert_int_equal(nsent, 1);
    assert_int_equal(sent[0].h.route, ENV_ROUTE_JID);
    assert_string_equal(sent[0].h.key, "bob@localhost");
    assert_non_null(strstr(sent[0].body, "type='error'"));
    assert_non_null(strstr(sent[0].body, "<service-unavailable"));
    assert_non_null(strstr(sent[0].body, "to='bob@localhost/x'"));
    assert_non_null(strstr(sent[0].body, "from='alice@localhost'"));
}

static void test_error_is_never_answered_with_error(void **st)
{
    recv_stanza("carol@localhost", "bob@localhost/x",
                "<message from='bob@localhost/x' to='carol@localhost' type='error'/>");
    redis_empty_load("carol@localhost");
    recv_stanza("carol@localhost", "bob@localhost/x",
                "<iq from='bob@localhost/x' to='carol@localhost/r' type='error' id='e'/>");
    redis_empty_load("carol@localhost");
    assert_int_equal(nsent, 0);
}

static void test_iq_to_missing_full_jid_gets_service_unavailable(void **st)
{
    recv_stanza("carol@localhost", "bob@localhost/x",
                "<iq from='bob@localhost/x' to='carol@localhost/gone' type='get' id='q'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>");
    redis_empty_load("carol@localhost");
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "<service-unavailable"));
    assert_string_equal(sent[0].h.key, "bob@localhost");
}

static void test_iq_without_id_gets_bad_request_that_is_delivered(void **st)
{
    char a[256];
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    char xml[512];
    snprintf(xml, sizeof xml, "<iq from='%s' type='get'><ping xmlns='urn:xmpp:ping'/></iq>", a);
    nsent = 0;
    recv_stanza("alice@localhost", a, xml);
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "<bad-request"));
    /* The error comes back through the router to alice's owner: delivered. */
    char body[4096];
    snprintf(body, sizeof body, "%s", sent[0].body);
    recv_stanza("alice@localhost", "", body);
    assert_int_equal(nsent, 2);
    assert_int_equal(sent[1].h.route, ENV_ROUTE_INSTANCE);
    assert_string_equal(sent[1].h.sid, "S1");
}

static void test_full_user_queue_refuses_with_resource_constraint(void **st)
{
    /* Redis never answers the load: stanzas pile up behind it. */
    for (int i = 0; i <= SM_USER_QUEUE_MAX; i++)
        recv_stanza("carol@localhost", "bob@localhost/x",
                    "<message from='bob@localhost/x' to='carol@localhost'><body>x</body></message>");
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "<resource-constraint"));
    assert_int_equal(nrq, 2);   /* one load, however many stanzas */
}

static void test_presence_to_bare_reaches_available_sessions_only(void **st)
{
    char a[256];
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    bind_alice("S2", 0);
    presence_from(a, "S1", 0);
    nsent = 0;
    recv_stanza("alice@localhost", "bob@localhost/x",
                "<presence from='bob@localhost/x' to='alice@localhost'/>");
    assert_int_equal(nsent, 1);
    assert_string_equal(sent[0].h.sid, "S1");
}

static void test_disco_info_on_domain_lists_features(void **st)
{
    recv_stanza("localhost", "bob@localhost/x",
                "<iq from='bob@localhost/x' to='localhost' type='get' id='d'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "category='server'"));
    assert_non_null(strstr(sent[0].body, "urn:xmpp:ping"));
    assert_non_null(strstr(sent[0].body, "type='result'"));
}

static void test_ping_to_server_gets_result(void **st)
{
    recv_stanza("localhost", "bob@localhost/x",
                "<iq from='bob@localhost/x' to='localhost' type='get' id='p'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>");
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "type='result'"));
    assert_non_null(strstr(sent[0].body, "id='p'"));
}

static void test_unknown_iq_gets_service_unavailable(void **st)
{
    recv_stanza("localhost", "bob@localhost/x",
                "<iq from='bob@localhost/x' to='localhost' type='set' id='u'>"
                "<thing xmlns='urn:unknown'/></iq>");
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "<service-unavailable"));
}

static void test_roster_get_builds_items_from_rows(void **st)
{
    recv_stanza("alice@localhost", "alice@localhost/r",
                "<iq from='alice@localhost/r' type='get' id='r1'>"
                "<query xmlns='jabber:iq:roster'/></iq>");
    redis_empty_load("alice@localhost");
    assert_non_null(pg_cb);
    assert_string_equal(pg_params[0], "localhost");
    assert_string_equal(pg_params[1], "alice");
    /* A database error becomes internal-server-error, never silence. */
    pgev_cb cb = pg_cb;
    pg_cb = NULL;
    cb(NULL, pg_arg);
    redis_array("HGETALL im:{alice@localhost}", 0, NULL);
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "<internal-server-error"));
}

static int rq_count(const char *prefix);

static void test_instance_down_sends_session_gone_per_member(void **st)
{
    recv_env(ENV_CONTROL, ENV_ROUTE_INSTANCE, "sm1", "router", "", "instance-down", "c2s9", "");
    const char *members[] = {"alice@localhost/a b.x S1", "bob@localhost/r S2"};
    redis_array("SMEMBERS fe:c2s9", 2, members);
    assert_int_equal(nsent, 2);
    assert_string_equal(sent[0].h.op, "session-gone");
    assert_string_equal(sent[0].h.key, "alice@localhost");
    assert_string_equal(sent[0].h.aux, "alice@localhost/a b.x");
    assert_string_equal(sent[0].h.sid, "S1");
    assert_string_equal(sent[1].h.key, "bob@localhost");
    /* Only the members read go: a new incarnation may have bound more. */
    redis_answer("SREM fe:c2s9 alice@localhost/a b.x S1", NULL);
    redis_answer("SREM fe:c2s9 bob@localhost/r S2", NULL);
    assert_int_equal(rq_count("DEL fe:"), 0);
}

static void test_end_removes_session_from_redis_and_cache(void **st)
{
    const char *full = bind_alice("S1", 1);
    char f[256];
    snprintf(f, sizeof f, "%s", full);
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "end", f, "");
    assert_int_equal(core->nsessions, 0);
    redis_answer("HDEL sess:{alice@localhost} ", NULL);
    /* never available: no pres: field to delete */
    redis_answer("SREM fe:c2s1 alice@localhost/", NULL);
    for (int i = rq_head; i < nrq; i++)
        assert_true(strncmp(rq[i].cmd, "HDEL pres:", 10) != 0);
}


static int rq_count(const char *prefix)
{
    int n = 0;
    for (int i = 0; i < nrq; i++)
        n += !strncmp(rq[i].cmd, prefix, strlen(prefix));
    return n;
}

/* The sess: value already holds priority 0 from the bind, and mod_presence
 * deletes the pres: field of an available session at its end: neither is
 * written twice. */
static void test_login_writes_each_redis_field_once(void **st)
{
    char a[256];
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    presence_from(a, "S1", 0);
    assert_int_equal(rq_count("HSET sess:"), 0);
    assert_int_equal(rq_count("HSET pres:{alice@localhost} "), 1);
    presence_from(a, "S1", 3);             /* a new priority is stored */
    assert_int_equal(rq_count("HSET sess:{alice@localhost} "), 1);
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "end", a, "");
    assert_int_equal(core->nsessions, 0);
    assert_int_equal(rq_count("HDEL pres:{alice@localhost} "), 1);
    assert_int_equal(rq_count("HDEL sess:{alice@localhost} "), 1);
    assert_int_equal(rq_count("SREM fe:c2s1 "), 1);
}

/* ---- IM: rosters, presence, offline ----------------------------------------------- */

static int sent_find(int from, const char *needle)
{
    for (int i = from; i < nsent; i++)
        if (strstr(sent[i].body, needle))
            return i;
    return -1;
}

static void roster_get_from(const char *full, const char *sid)
{
    char xml[512];
    snprintf(xml, sizeof xml, "<iq from='%s' type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>",
             full);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", sid, "", full, xml);
}

/* Logouts of one loop iteration are stored in one statement (sent before
 * the loop sleeps); array elements are quoted and escaped. */
static void test_logouts_are_stored_in_one_statement_per_iteration(void **st)
{
    const char *rows[] = {"u", "", "", "", "", ""};
    acct_rows = rows;
    acct_nrows = 1;
    char a[256], b[256], xml[512];
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    snprintf(b, sizeof b, "%s", bind_alice("S2", 0));
    snprintf(xml, sizeof xml, "<presence from='%s' type='unavailable'>"
             "<status>say \"hi\" \\o/</status></presence>", a);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "", a, xml);
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "end", a, "");
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S2", "end", b, "");
    /* bob's record loads for his bind; his logout joins the same batch */
    const char *full = NULL;
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "bob@localhost", "c2s1", "S3", "bind", "", "");
    redis_session_load("bob@localhost");
    redis_int("HSETNX sess:{bob@localhost} ", 1);
    redis_int("SADD fe:c2s1 bob@localhost/", 1);
    full = sent[nsent - 1].h.aux;
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "bob@localhost", "c2s1", "S3", "end", full, "");
    assert_int_equal(pg_nqueries, 0);         /* nothing before the loop sleeps */
    last_on_prepare(core->loop, &last_batch.flush, EV_PREPARE);
    assert_int_equal(pg_nqueries, 1);
    assert_non_null(strstr(pg_sql, "INSERT INTO last_activity"));
    assert_string_equal(pg_params[0], "{\"localhost\",\"localhost\"}");
    assert_string_equal(pg_params[1], "{\"alice\",\"bob\"}");
    /* alice's last session ended without a new status: the one she sent
     * with her unavailable presence is kept */
    assert_string_equal(pg_params[2], "{\"say \\\"hi\\\" \\\\o/\",\"\"}");
    last_on_prepare(core->loop, &last_batch.flush, EV_PREPARE);
    assert_int_equal(pg_nqueries, 1);         /* an empty batch sends nothing */
}

/* A record created for a bind loads the account and the IM state in one
 * statement and the IM flags with the sessions: the roster get that
 * follows is answered from memory. */
static void test_session_start_loads_roster_with_account_in_one_query(void **st)
{
    const char *rows[] = {"u", "", "", "", "", "",
                          "b", "spam@localhost", "", "", "", "",
                          "i", "bob@localhost", "Bob", "both", "", "g",
                          "v", "3", "", "", "", ""};
    acct_rows = rows;
    acct_nrows = 4;
    char a[256];
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    assert_non_null(strstr(acct_sql, "FROM blocklist"));
    assert_non_null(strstr(acct_sql, "FROM roster"));
    assert_true(core->users->acct->exists);
    assert_int_equal(core->users->acct->nblock, 1);
    nsent = 0;
    roster_get_from(a, "S1");
    assert_int_equal(pg_nqueries, 0);
    assert_int_equal(rq_count("HGETALL im:"), 1);
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "jid='bob@localhost'"));
    assert_non_null(strstr(sent[0].body, "subscription='both'"));
    assert_non_null(strstr(sent[0].body, "<group>g</group>"));
    assert_null(strstr(sent[0].body, "spam@localhost"));
}

static void test_roster_set_is_written_before_it_is_pushed(void **st)
{
    char a[256], b[256];
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    snprintf(b, sizeof b, "%s", bind_alice("S2", 0));
    roster_get_from(a, "S1");                 /* S1 becomes interested */
    assert_true(sent_find(0, "jabber:iq:roster") >= 0);
    nsent = 0;
    char xml[512];
    snprintf(xml, sizeof xml, "<iq from='%s' type='set' id='rs'><query xmlns='jabber:iq:roster'>"
             "<item jid='Bob@Localhost' name='Bob'><group>g</group></item></query></iq>", b);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S2", "", b, xml);
    assert_int_equal(nsent, 0);               /* nothing before PostgreSQL confirms */
    assert_string_equal(pg_params[2], "bob@localhost");   /* prepared */
    pg_answer(PGRES_COMMAND_OK, 0, 0, NULL);
    int push = sent_find(0, "type='set'");
    assert_true(push >= 0);
    assert_string_equal(sent[push].h.sid, "S1");          /* only the interested one */
    assert_non_null(strstr(sent[push].body, "ver='1'"));
    assert_non_null(strstr(sent[push].body, "<group>g</group>"));
    assert_int_equal(sent_find(push + 1, "type='set'"), -1);
    assert_true(sent_find(0, "type='result'") >= 0);
}

static void test_roster_set_with_two_items_is_bad_request(void **st)
{
    char a[256];
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    roster_get_from(a, "S1");
    nsent = 0;
    char xml[512];
    snprintf(xml, sizeof xml, "<iq from='%s' type='set' id='rs'><query xmlns='jabber:iq:roster'>"
             "<item jid='a@x'/><item jid='b@x'/></query></iq>", a);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "", a, xml);
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "<bad-request"));
}

/* A roster with bob (from) and carol (to); alice's session ends. */
static void test_session_end_sends_unavailable_to_contacts_with_from(void **st)
{
    char a[256];
    const char *rows[] = {"i", "bob@localhost", "", "from", "", "",
                          "i", "carol@localhost", "", "to", "", "",
                          "v", "7", "", "", "", ""};
    acct_rows = rows;                         /* loaded with the session */
    acct_nrows = 3;
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    char xml[512];
    snprintf(xml, sizeof xml, "<presence from='%s'/>", a);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "", a, xml);
    /* initial presence: broadcast to bob, probe to carol */
    assert_true(sent_find(0, "to='bob@localhost'") >= 0);
    int probe = sent_find(0, "type='probe'");
    assert_true(probe >= 0);
    assert_string_equal(sent[probe].h.key, "carol@localhost");
    assert_non_null(strstr(sent[probe].body, "from='alice@localhost'"));
    nsent = 0;
    recv_env(ENV_CONTROL, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "end", a, "");
    assert_int_equal(nsent, 1);
    assert_string_equal(sent[0].h.key, "bob@localhost");
    assert_non_null(strstr(sent[0].body, "type='unavailable'"));
    assert_int_equal(core->nsessions, 0);     /* and mod_session still ran */
}

static void test_offline_message_is_stored_with_delay_or_refused_over_quota(void **st)
{
    for (int full = 0; full < 2; full++) {
        nsent = 0;
        recv_stanza("carol@localhost", "bob@localhost/x",
                    "<message from='bob@localhost/x' to='carol@localhost' type='chat'>"
                    "<body>later</body></message>");
        redis_empty_load("carol@localhost");     /* evicted after each: no sessions */
        assert_non_null(strstr(pg_sql, "INSERT INTO offline"));
        assert_non_null(strstr(pg_params[2], "<body>later</body><delay xmlns='urn:xmpp:delay'"
                                             " from='localhost' stamp='"));
        assert_string_equal(pg_params[3], "100");
        const char *row[3] = {"t", full ? "0" : "1", full ? "100" : "0"};
        pg_answer(PGRES_TUPLES_OK, 1, 3, row);
        assert_int_equal(nsent, full);
        if (full)
            assert_non_null(strstr(sent[0].body, "<resource-constraint"));
    }
}

/* How many queued Redis commands start with prefix. */
static int redis_sent(const char *prefix)
{
    int n = 0;
    for (int i = 0; i < nrq; i++)
        n += !strncmp(rq[i].cmd, prefix, strlen(prefix));
    return n;
}

/* PostgreSQL down: carol's messages wait in the spool (no error, no
 * query) and in its Redis copy; back, they are written in order, one at a
 * time (a message PostgreSQL already has is not written twice), each copy
 * goes once written, and what the statement refuses is answered to the
 * sender late. */
static void test_offline_messages_spool_while_postgres_is_down(void **st)
{
    fake_pg_lost = 1;
    for (int i = 0; i < 2; i++) {
        char xml[256];
        nsent = 0;
        snprintf(xml, sizeof xml, "<message from='bob@localhost/x' to='carol@localhost' "
                 "type='chat' id='m%d'><body>spooled %d</body></message>", i, i);
        recv_stanza("carol@localhost", "bob@localhost/x", xml);
        redis_empty_load("carol@localhost");
        assert_int_equal(nsent, 0);           /* no error to bob */
    }
    assert_int_equal(pg_nqueries, 0);
    assert_int_equal(sm_offline_waiting(core), 2);
    assert_int_equal(redis_sent("RPUSH {sb:spool}:sm1 S1"), 2);
    assert_int_equal(redis_sent("LREM"), 0);
    fake_pg_lost = 0;
    spool_kick();                             /* what the 1 s poll does */
    assert_int_equal(pg_nqueries, 1);
    assert_non_null(strstr(pg_sql, "INSERT INTO offline"));
    assert_non_null(strstr(pg_sql, "NOT d.dup"));
    assert_non_null(strstr(pg_params[2], "<body>spooled 0</body><delay"));
    const char *dup[4] = {"t", "0", "1", "t"};   /* written before a kill: once */
    pg_answer(PGRES_TUPLES_OK, 1, 4, dup);
    assert_int_equal(nsent, 0);
    assert_int_equal(redis_sent("LREM {sb:spool}:sm1 1 S1"), 1);
    assert_int_equal(pg_nqueries, 2);         /* then the next, in order */
    assert_non_null(strstr(pg_params[2], "<body>spooled 1</body>"));
    const char *full[4] = {"t", "0", "100", "f"};
    pg_answer(PGRES_TUPLES_OK, 1, 4, full);
    assert_int_equal(redis_sent("LREM {sb:spool}:sm1 1 S1"), 2);
    assert_int_equal(nsent, 1);               /* the quota, answered late */
    assert_string_equal(sent[0].h.key, "bob@localhost");
    assert_non_null(strstr(sent[0].body, "type='error'"));
    assert_non_null(strstr(sent[0].body, "id='m1'"));
    assert_non_null(strstr(sent[0].body, "<resource-constraint"));
    assert_int_equal(sm_offline_waiting(core), 0);
}

static void test_offline_messages_are_flushed_then_deleted_at_initial_presence(void **st)
{
    char a[256];
    const char *rows[] = {"u", "", "", "", "", "", "o", "2", "", "", "", ""};
    acct_rows = rows;                         /* two stored: counted at the bind */
    acct_nrows = 2;
    snprintf(a, sizeof a, "%s", bind_alice("S1", 1));
    char xml[512];
    snprintf(xml, sizeof xml, "<presence from='%s'/>", a);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "", a, xml);
    assert_non_null(strstr(pg_sql, "FROM offline"));
    nsent = 0;
    int before = pg_nqueries;
    const char *msgs[] = {"41", "<message to='alice@localhost'><body>1</body></message>",
                          "42", "<message to='alice@localhost'><body>2</body></message>"};
    pg_answer(PGRES_TUPLES_OK, 2, 2, msgs);
    assert_int_equal(nsent, 2);
    assert_string_equal(sent[0].h.sid, "S1");
    assert_non_null(strstr(sent[0].body, "<body>1</body>"));
    assert_non_null(strstr(sent[1].body, "<body>2</body>"));
    /* deleted only after the hand-off, by id */
    assert_int_equal(pg_nqueries, before + 1);
    assert_non_null(strstr(pg_sql, "DELETE FROM offline"));
    assert_string_equal(pg_params[0], "{41,42}");
    /* a second session's initial presence does not fetch again */
    char b[256];
    snprintf(b, sizeof b, "%s", bind_alice("S2", 0));
    presence_from(b, "S2", 0);
}

static void test_members_change_drops_cached_users(void **st)
{
    bind_alice("S1", 1);
    recv_env(ENV_CONTROL, ENV_ROUTE_INSTANCE, "sm1", "router", "", "members", "",
             "sm sm1\nc2s c2s1\nsm sm2\n");
    assert_int_equal(core->nsessions, 0);
    /* The next stanza for alice reloads from Redis. */
    recv_stanza("alice@localhost", "bob@localhost/x",
                "<message from='bob@localhost/x' to='alice@localhost'/>");
    assert_string_equal(rq[rq_head].cmd, "HGETALL sess:{alice@localhost}");
}

/* ---- push notifications (mod_push) ---------------------------------------------- */

#define PUSH_FORM "<x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>" \
    "http://jabber.org/protocol/pubsub#publish-options</value></field>" \
    "<field var='secret'><value>s3</value></field></x>"

static void test_push_enable_stores_the_registration_and_answers(void **st)
{
    const char *a = bind_alice("S1", 1);
    char xml[1024];
    nsent = 0;
    snprintf(xml, sizeof xml, "<iq from='%s' type='set' id='e1'><enable xmlns='urn:xmpp:push:0'"
             " jid='Push.Example' node='n1'>" PUSH_FORM "</enable></iq>", a);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "", a, xml);
    /* No users row in the fake load: an anonymous-like account is refused. */
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "<not-allowed"));
    core->users->acct->exists = 1;
    nsent = 0;
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "", a, xml);
    assert_non_null(strstr(pg_sql, "INSERT INTO push_registrations"));
    assert_string_equal(pg_params[2], "push.example");   /* prepared */
    assert_string_equal(pg_params[3], "n1");
    assert_int_equal(nsent, 0);                          /* answered after the write */
    const char *row[1] = {"7"};
    pg_answer(PGRES_TUPLES_OK, 1, 1, row);
    assert_int_equal(nsent, 1);
    assert_non_null(strstr(sent[0].body, "type='result'"));
    assert_int_equal(core->users->acct->npush, 1);
    assert_non_null(strstr(core->users->acct->push[0].options, "<value>s3</value>"));
    /* No jid, or a form of another type: bad-request, nothing stored. */
    int q = pg_nqueries;
    nsent = 0;
    snprintf(xml, sizeof xml, "<iq from='%s' type='set' id='e2'><enable xmlns='urn:xmpp:push:0'"
             " node='n1'/></iq>", a);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "", a, xml);
    snprintf(xml, sizeof xml, "<iq from='%s' type='set' id='e3'><enable xmlns='urn:xmpp:push:0'"
             " jid='p.example' node='n1'><x xmlns='jabber:x:data'/></enable></iq>", a);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "alice@localhost", "c2s1", "S1", "", a, xml);
    assert_int_equal(nsent, 2);
    assert_non_null(strstr(sent[0].body, "<bad-request"));
    assert_non_null(strstr(sent[1].body, "<bad-request"));
    assert_int_equal(pg_nqueries, q);
}

/* carol is offline with one registration: a stored message notifies once
 * with the stored count and the sender, no body; the next one inside the
 * throttle window waits for its end; an error reply disables it. */
static void test_push_offline_message_notifies_then_throttles_and_error_disables(void **st)
{
    const char *rows[] = {"u", "", "", "", "", "",
                          "n", "7", "push.example", "n1", PUSH_FORM, ""};
    acct_rows = rows;
    acct_nrows = 2;
    const char *msg = "<message from='bob@localhost/x' to='carol@localhost' type='chat'>"
                      "<body>secret words</body></message>";
    recv_stanza("carol@localhost", "bob@localhost/x", msg);
    redis_empty_load("carol@localhost");
    const char *stored[3] = {"t", "1", "2"};
    pg_answer(PGRES_TUPLES_OK, 1, 3, stored);
    assert_int_equal(nsent, 1);
    assert_int_equal(sent[0].h.route, ENV_ROUTE_JID);
    assert_string_equal(sent[0].h.key, "push.example");
    assert_string_equal(sent[0].h.aux, "carol@localhost");
    const char *b = sent[0].body;
    assert_non_null(strstr(b, "<iq type='set' from='carol@localhost' to='push.example'"
                              " id='sbpush-7-"));
    assert_non_null(strstr(b, "<publish node='n1'><item><notification xmlns='urn:xmpp:push:0'>"));
    assert_non_null(strstr(b, "<field var='message-count'><value>3</value></field>"));
    assert_non_null(strstr(b, "<field var='last-message-sender'><value>bob@localhost/x<"));
    assert_null(strstr(b, "secret words"));
    assert_non_null(strstr(b, "<publish-options>" PUSH_FORM "</publish-options></pubsub></iq>"));
    char id[64];
    const char *ip = strstr(b, "id='") + 4;
    snprintf(id, sizeof id, "%.*s", (int)(strchr(ip, '\'') - ip), ip);
    /* a second message at once: throttled */
    nsent = 0;
    recv_stanza("carol@localhost", "bob@localhost/x", msg);
    redis_empty_load("carol@localhost");
    const char *stored2[3] = {"t", "1", "3"};
    pg_answer(PGRES_TUPLES_OK, 1, 3, stored2);
    assert_int_equal(nsent, 0);
    /* the service answers with an error: the registration goes */
    char xml[512];
    snprintf(xml, sizeof xml, "<iq from='push.example' to='carol@localhost' type='error' id='%s'>"
             "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
             "</error></iq>", id);
    recv_env(ENV_STANZA, ENV_ROUTE_JID, "carol@localhost", "s2s1", "", "", "push.example", xml);
    redis_empty_load("carol@localhost");
    assert_non_null(strstr(pg_sql, "DELETE FROM push_registrations WHERE id"));
    assert_string_equal(pg_params[0], "7");
    assert_int_equal(nsent, 0);
}

/* XEP-0115 §5.2 and §5.3: the simple and the complex example. */
static void test_caps_verification_string_matches_the_xep_examples(void **state)
{
    (void)state;
    static const char simple[] =
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
        "<feature var='http://jabber.org/protocol/caps'/>"
        "<feature var='http://jabber.org/protocol/disco#info'/>"
        "<feature var='http://jabber.org/protocol/disco#items'/>"
        "<feature var='http://jabber.org/protocol/muc'/></query>";
    static const char complex[] =
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
        "<identity xml:lang='el' category='client' name='\xce\xa8 0.11' type='pc'/>"
        "<feature var='http://jabber.org/protocol/caps'/>"
        "<feature var='http://jabber.org/protocol/disco#info'/>"
        "<feature var='http://jabber.org/protocol/disco#items'/>"
        "<feature var='http://jabber.org/protocol/muc'/>"
        "<x xmlns='jabber:x:data' type='result'>"
        "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
        "<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
        "<field var='os'><value>Mac</value></field>"
        "<field var='os_version'><value>10.5.1</value></field>"
        "<field var='software'><value>Psi</value></field>"
        "<field var='software_version'><value>0.11</value></field></x></query>";
    static const char dup[] =
        "<query xmlns='http://jabber.org/protocol/disco#info'>"
        "<feature var='a'/><feature var='a'/></query>";
    char out[40];
    struct xml_doc *d = xml_doc_parse(simple, sizeof simple - 1, NULL, NULL);
    assert_non_null(d);
    assert_int_equal(sm_caps_hash_sha1(d->root, out, sizeof out), SB_OK);
    assert_string_equal(out, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    xml_doc_free(d);
    d = xml_doc_parse(complex, sizeof complex - 1, NULL, NULL);
    assert_non_null(d);
    assert_int_equal(sm_caps_hash_sha1(d->root, out, sizeof out), SB_OK);
    assert_string_equal(out, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    xml_doc_free(d);
    d = xml_doc_parse(dup, sizeof dup - 1, NULL, NULL);
    assert_int_equal(sm_caps_hash_sha1(d->root, out, sizeof out), SB_ERROR);
    xml_doc_free(d);
}

/* Items stay ordered by seq whatever order the rows come in; re-publishing
 * an id moves it to the end. */
static void test_pep_cache_orders_items_and_replaces_ids(void **state)
{
    (void)state;
    struct sm_pep *p = NULL;
    assert_int_equal(sm_pep_row(&p, 'k', "n", "b", "<b/>", "7"), SB_OK);
    assert_int_equal(sm_pep_row(&p, 'k', "n", "a", "<a/>", "3"), SB_OK);
    assert_int_equal(sm_pep_row(&p, 'q', "n", "open", "true", "-1"), SB_OK);
    struct pep_node *n = sm_pep_node(p, "n");
    assert_non_null(n);
    assert_int_equal(n->access, PEP_ACCESS_OPEN);
    assert_int_equal(n->nitems, 2);
    assert_string_equal(n->items[0].id, "a");
    assert_int_equal(p->seq, 7);
    assert_int_equal(sm_pep_item_put(n, "a", "<a2/>", 8), SB_OK);
    assert_int_equal(n->nitems, 2);
    assert_string_equal(n->items[1].id, "a");
    assert_string_equal(n->items[1].payload, "<a2/>");
    sm_pep_node_del(p, "n");
    assert_null(sm_pep_node(p, "n"));
    sm_pep_free(p);
}

int main(void)
{
    sb_log_init("test", SB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_caps_verification_string_matches_the_xep_examples),
        cmocka_unit_test(test_pep_cache_orders_items_and_replaces_ids),
        cmocka_unit_test_setup_teardown(test_bind_claims_generated_resource_with_hsetnx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bind_retries_after_collision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bind_fails_when_redis_is_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_later_stanza_waits_for_pending_bind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_to_bare_goes_to_highest_priority, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_without_available_session_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_is_never_answered_with_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iq_to_missing_full_jid_gets_service_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iq_without_id_gets_bad_request_that_is_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_user_queue_refuses_with_resource_constraint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presence_to_bare_reaches_available_sessions_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disco_info_on_domain_lists_features, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_to_server_gets_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_iq_gets_service_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roster_get_builds_items_from_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_instance_down_sends_session_gone_per_member, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_removes_session_from_redis_and_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_writes_each_redis_field_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logouts_are_stored_in_one_statement_per_iteration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_start_loads_roster_with_account_in_one_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_members_change_drops_cached_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roster_set_is_written_before_it_is_pushed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roster_set_with_two_items_is_bad_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_end_sends_unavailable_to_contacts_with_from, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_message_is_stored_with_delay_or_refused_over_quota, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_messages_are_flushed_then_deleted_at_initial_presence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_messages_spool_while_postgres_is_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_enable_stores_the_registration_and_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_push_offline_message_notifies_then_throttles_and_error_disables, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
