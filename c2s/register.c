/* register.c — XEP-0077 in-band registration and passwords, answered by
 * the front-end itself (it has the database and the SCRAM derivation):
 *   before SASL   get: the fields; set: a new account (off unless
 *                 [domain.NAME] register = 1; per-IP rate limit; with
 *                 register_invite_only = 1 an invitation from
 *                 `sbctl invite create`, used up by the same statement)
 *   after SASL    get: <registered/>; set username+password: a new
 *                 password (new SCRAM keys); set <remove/>: the account
 *                 and every row it has (auth/account.h), then the stream
 *                 ends with not-authorized
 * On an external domain (auth = extauth | ldap) registration is not
 * offered and password change and removal are not-allowed: the directory
 * owns the account. One database request per connection at a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c2s.h"
#include "account.h"
#include "auth-int.h"
#include "config.h"
#include "log.h"
#include "rdev.h"

#define NS_REGISTER "jabber:iq:register"
#define NS_XDATA    "jabber:x:data"
#define NS_STANZA   "urn:ietf:params:xml:ns:xmpp-stanzas"
#define REG_FIELD_MAX 1024          /* bytes of one field value */
#define REG_RATE_SLOTS 512
#define REG_RATE_PROBE 8
#define REG_WINDOW 3600.0

enum reg_op { REG_CREATE, REG_PASSWD, REG_REMOVE };

/* A database request in flight; conn is cleared when the conn goes first. */
struct c2s_reg {
    struct c2s_conn *c;
    enum reg_op op;
    char id[256];
    char user[JID_PART_MAX + 1];
};

static struct sb_buf reg_out, reg_text;
static char *reg_remove_sql;        /* built once from auth_account_tables */

/* ---- configuration ------------------------------------------------------- */

int c2s_register_offered(const struct c2s_conn *c)
{
    return c->domain && !sb_domains_anonymous(c->domain) &&
           auth_backend_of(c->domain) == AUTH_BE_INTERNAL &&
           ((c->flags & C2S_F_TLS) || c2s.cfg.allow_plain) &&
           sb_config_bool_in("domain", c->domain, "register", 0);
}

/* ---- per-IP rate limit (this process; a cluster has one per front-end) ---- */

static struct {
    char ip[320];                   /* "ADDRESS DOMAIN" */
    double start;
    int n;
} reg_rate[REG_RATE_SLOTS];

/* 1 when one more registration on domain from the address of peer
 * ("ip:port") is within `limit` per hour. */
static int reg_rate_take(const char *peer, const char *domain, long limit, double now)
{
    char ip[sizeof reg_rate[0].ip];
    const char *colon = strrchr(peer, ':');
    int pn = colon ? (int)(colon - peer) : (int)strlen(peer);
    uint32_t h = 2166136261u;

    if (limit <= 0)
        return 1;
    /* per domain: each domain's own limit counts its own registrations */
    int n = snprintf(ip, sizeof ip, "%.*s %s", pn, peer, domain);
    if (n < 0 || n >= (int)sizeof ip)
        n = (int)sizeof ip - 1;
    for (int i = 0; i < n; i++)
        h = (h ^ (uint8_t)ip[i]) * 16777619u;
    int pick = -1;
    for (int k = 0; k < REG_RATE_PROBE; k++) {
        int i = (int)((h + (uint32_t)k) % REG_RATE_SLOTS);
        if (!strcmp(reg_rate[i].ip, ip)) {
            pick = i;
            break;
        }
        if (pick < 0 || reg_rate[i].start < reg_rate[pick].start)
            pick = i;                       /* else the oldest window goes */
    }
    if (strcmp(reg_rate[pick].ip, ip) || now - reg_rate[pick].start >= REG_WINDOW) {
        snprintf(reg_rate[pick].ip, sizeof reg_rate[pick].ip, "%s", ip);
        reg_rate[pick].start = now;
        reg_rate[pick].n = 0;
    }
    if (reg_rate[pick].n >= limit)
        return 0;
    reg_rate[pick].n++;
    return 1;
}

/* ---- replies ------------------------------------------------------------------ */

/* Written at once (not through the sm's XEP-0198 queue): registration
 * comes before a session, removal ends it. */
static void reg_reply(struct c2s_conn *c, const char *id, const char *type, const char *inner)
{
    struct sb_buf *b = &reg_out;
    c2s_iq_open(b, id, type);
    if (inner && *inner)
        sb_buf_printf(b, ">%s</iq>", inner);
    else
        sb_buf_adds(b, "/>");
    c2s_conn_write(c, b->data, b->len);
}

static void reg_error(struct c2s_conn *c, const char *id, const char *type, const char *cond)
{
    char inner[200];
    snprintf(inner, sizeof inner, "<error type='%s'><%s xmlns='" NS_STANZA "'/></error>", type,
             cond);
    reg_reply(c, id, "error", inner);
}

static void reg_form(struct c2s_conn *c, const char *id)
{
    int invite = sb_config_bool_in("domain", c->domain, "register_invite_only", 0);
    struct sb_buf *b = &reg_text;
    sb_buf_reset(b);
    sb_buf_adds(b, "<query xmlns='" NS_REGISTER "'><instructions>Choose a user name and "
                   "password");
    sb_buf_adds(b, invite ? "; an invitation token is required.</instructions>"
                          : ".</instructions>");
    sb_buf_adds(b, "<username/><password/>"
                   "<x xmlns='" NS_XDATA "' type='form'><title>Register</title>"
                   "<field type='hidden' var='FORM_TYPE'><value>" NS_REGISTER "</value></field>"
                   "<field type='text-single' var='username' label='User name'><required/></field>"
                   "<field type='text-private' var='password' label='Password'><required/></field>");
    if (invite)
        sb_buf_adds(b, "<field type='text-single' var='token' label='Invitation'><required/>"
                       "</field>");
    sb_buf_adds(b, "</x></query>");
    reg_reply(c, id, "result", b->data);
}

/* ---- the fields of a set ---------------------------------------------------------- */

struct reg_fields {
    char *username, *password, *token;   /* malloc'd, NULL when absent */
    int remove;
};

static void reg_fields_free(struct reg_fields *f)
{
    free(f->username);
    if (f->password) {
        memset(f->password, 0, strlen(f->password));
        free(f->password);
    }
    free(f->token);
}

/* The text of n, NULL when over REG_FIELD_MAX. */
static char *reg_value(const struct xml_node *n)
{
    sb_buf_reset(&reg_text);
    xml_text(n, &reg_text);
    const char *t = reg_text.data ? reg_text.data : "";
    return strlen(t) > REG_FIELD_MAX ? NULL : strdup(t);
}

static void reg_set(char **slot, char *v)
{
    free(*slot);
    *slot = v;
}

/* Legacy children (<username/>, <password/>) or a jabber:x:data form
 * (username, password, token): the form wins. */
static void reg_fields_read(const struct xml_node *q, struct reg_fields *f)
{
    const struct xml_node *n, *x = xml_child(q, "x", NS_XDATA);

    memset(f, 0, sizeof *f);
    f->remove = xml_child(q, "remove", NULL) != NULL;
    if ((n = xml_child(q, "username", NULL)))
        f->username = reg_value(n);
    if ((n = xml_child(q, "password", NULL)))
        f->password = reg_value(n);
    for (n = x ? x->children : NULL; n; n = n->next) {
        const char *var = n->name && !strcmp(n->name, "field") ? xml_attr(n, "var") : NULL;
        const struct xml_node *v = var ? xml_child(n, "value", NULL) : NULL;
        if (!v)
            continue;
        if (!strcmp(var, "username"))
            reg_set(&f->username, reg_value(v));
        else if (!strcmp(var, "password"))
            reg_set(&f->password, reg_value(v));
        else if (!strcmp(var, "token"))
            reg_set(&f->token, reg_value(v));
    }
}

/* ---- database --------------------------------------------------------------------- */

#define REG_INVITE_SQL \
    "WITH inv AS (DELETE FROM invites WHERE domain=$1 AND hash=$11" \
    " AND (expires_at IS NULL OR expires_at > now()) RETURNING 1)" \
    " INSERT INTO users(domain, username, scram_sha1_salt, scram_sha1_iter," \
    " scram_sha1_stored, scram_sha1_server, scram_sha256_salt, scram_sha256_iter," \
    " scram_sha256_stored, scram_sha256_server)" \
    " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM inv"

/* One statement deletes the account and its rows in every table. */
static const char *reg_remove_statement(void)
{
    if (reg_remove_sql)
        return reg_remove_sql;
    struct sb_buf b = {0};
    sb_buf_adds(&b, "WITH u AS (DELETE FROM users WHERE domain=$1 AND username=$2 RETURNING 1),"
                    " tr AS (" AUTH_ACCOUNT_TRASH_SQL ")");
    for (size_t i = 0; i < auth_account_ntables; i++)
        sb_buf_printf(&b, ", t%zu AS (DELETE FROM %s WHERE domain=$1 AND username=$2)", i,
                      auth_account_tables[i]);
    sb_buf_adds(&b, " SELECT count(*) FROM u");
    reg_remove_sql = b.data ? strdup(b.data) : NULL;
    sb_buf_free(&b);
    return reg_remove_sql;
}

static const char *reg_op_name(enum reg_op op)
{
    return op == REG_CREATE ? "register" : op == REG_PASSWD ? "passwd" : "remove";
}

static void reg_on_published(redisReply *rep, void *arg)
{
    if (!rep || rep->type == REDIS_REPLY_ERROR)
        log_warn("auth_cache_publish_failed", "channel=%s", AUTH_CACHE_CHANNEL);
}

/* The old keys must not serve a login anywhere, not even from a front-end's
 * credential cache during a PostgreSQL outage: forget them here at once and
 * on every other front-end through Redis. */
static void reg_forget_credentials(const char *user, const char *domain)
{
    char bare[JID_BARE_MAX + 1], msg[JID_BARE_MAX + 8];
    snprintf(bare, sizeof bare, "%s@%s", user, domain);
    snprintf(msg, sizeof msg, "forget %s", bare);       /* one argument */
    auth_cache_forget(bare);
    if (!c2s.rd || rdev_cmd(c2s.rd, reg_on_published, NULL, "PUBLISH %s %s",
                            AUTH_CACHE_CHANNEL, msg) != SB_OK)
        log_warn("auth_cache_publish_failed", "channel=%s", AUTH_CACHE_CHANNEL);
}

static void reg_done(PGresult *res, void *arg)
{
    struct c2s_reg *r = arg;
    struct c2s_conn *c = r->c;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int rows = st == PGRES_COMMAND_OK ? atoi(PQcmdTuples(res))
             : st == PGRES_TUPLES_OK && PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : -1;

    if (c)
        c->reg = NULL;
    if (!c || c->state == C2S_S_CLOSING) {
        free(r);
        return;
    }
    const char *cond = NULL, *type = "cancel", *why = NULL;
    if (rows < 0 && state && !strcmp(state, "23505")) {
        cond = "conflict", why = "taken";
    } else if (rows < 0) {
        cond = "internal-server-error", type = "wait", why = "store-unavailable";
        if (res)
            log_warn("register_store_error", "error=%s", sb_log_q(PQresultErrorMessage(res)));
    } else if (rows == 0) {
        cond = r->op == REG_CREATE ? "forbidden" : "item-not-found";
        why = r->op == REG_CREATE ? "invite" : "no-account";
    }
    log_info("register_done", "peer=%s op=%s user=%s domain=%s result=%s%s%s", c->peer,
             reg_op_name(r->op), sb_log_q(r->user), sb_log_q(c->domain), cond ? cond : "ok",
             why ? " reason=" : "", why ? why : "");
    if (cond)
        reg_error(c, r->id, type, cond);
    else
        reg_reply(c, r->id, "result", NULL);
    if (!cond && (r->op == REG_PASSWD || r->op == REG_REMOVE))
        reg_forget_credentials(r->user, c->domain);
    if (!cond && r->op == REG_PASSWD &&
        sb_config_bool_in("domain", c->domain, "passwd_ends_sessions", 0)) {
        char bare[JID_BARE_MAX + 1];
        if (c->jid && jid_bare_of(c->jid, bare, sizeof bare) >= 0)
            /* RFC 6120 §4.9.3.16: the credentials no longer hold */
            c2s_route_end_other_sessions(bare, c->sid, "reset", "password changed");
    }
    if (!cond && r->op == REG_REMOVE)
        c2s_stream_error_full(c, "not-authorized", NULL, "account removed", NULL,
                              "account-removed");
    free(r);
}

static void reg_query(struct c2s_conn *c, const char *id, enum reg_op op, const char *user,
                      const char *sql, int n, const char *const *params)
{
    struct c2s_reg *r = calloc(1, sizeof(*r));
    if (!r || !sql || pgev_query(c2s.pg, sql, n, params, reg_done, r) != SB_OK) {
        free(r);
        reg_error(c, id, "wait", "internal-server-error");
        return;
    }
    r->c = c;
    r->op = op;
    snprintf(r->id, sizeof r->id, "%s", id ? id : "");
    snprintf(r->user, sizeof r->user, "%s", user);
    c->reg = r;
}

/* Derive and write the keys (create or passwd); password is the raw field. */
static void reg_keys(struct c2s_conn *c, const char *id, enum reg_op op, const char *user,
                     const char *password, const char *token)
{
    char *pw = NULL, hash[AUTH_TOKEN_HASH_HEX + 1];
    struct auth_keys k;

    if (auth_saslprep(password, &pw) != SB_OK || !pw[0]) {
        free(pw);
        reg_error(c, id, "modify", "not-acceptable");
        return;
    }
    auth_keys_derive(pw, auth_scram_iterations(), &k);
    memset(pw, 0, strlen(pw));
    free(pw);
    if (token)
        auth_token_hash(token, hash);
    const char *p[11] = {c->domain, user, k.v[0], k.v[1], k.v[2], k.v[3], k.v[4],
                         k.v[5], k.v[6], k.v[7], hash};
    const char *sql = op == REG_PASSWD ? AUTH_USER_PASSWD_SQL
                    : token ? REG_INVITE_SQL : AUTH_USER_INSERT_SQL;
    reg_query(c, id, op, user, sql, token ? 11 : 10, p);
}

/* ---- before SASL: a new account ------------------------------------------------------ */

static void reg_create(struct c2s_conn *c, const char *id, struct reg_fields *f)
{
    char user[JID_PART_MAX + 1];
    int invite = sb_config_bool_in("domain", c->domain, "register_invite_only", 0);

    if (f->remove) {
        reg_error(c, id, "cancel", "not-allowed");     /* no account on this stream */
        return;
    }
    if (!f->username || !f->password || !f->username[0] || !f->password[0]) {
        reg_error(c, id, "modify", "not-acceptable");
        return;
    }
    if (jid_nodeprep(f->username, user) != SB_OK) {
        reg_error(c, id, "modify", "jid-malformed");
        return;
    }
    long limit = strtol(sb_config_str_in("domain", c->domain, "register_per_ip_per_hour", "5"),
                        NULL, 10);
    if (!reg_rate_take(c->peer, c->domain, limit, ev_now(c2s.loop))) {
        log_warn("register_rate_limited", "peer=%s domain=%s limit=%ld", c->peer,
                 sb_log_q(c->domain), limit);
        reg_error(c, id, "wait", "resource-constraint");
        return;
    }
    if (invite && (!f->token || !f->token[0])) {
        log_info("register_done", "peer=%s op=register user=%s domain=%s result=forbidden "
                 "reason=no-invite", c->peer, sb_log_q(user), sb_log_q(c->domain));
        reg_error(c, id, "auth", "forbidden");
        return;
    }
    reg_keys(c, id, REG_CREATE, user, f->password, invite ? f->token : NULL);
}

/* ---- after SASL: the own account -------------------------------------------------------- */

static void reg_own(struct c2s_conn *c, const char *id, const char *type, struct reg_fields *f)
{
    char user[JID_PART_MAX + 1], want[JID_PART_MAX + 1];
    const char *at = c->jid ? strchr(c->jid, '@') : NULL;
    size_t n = at ? (size_t)(at - c->jid) : 0;

    if (!at || n > JID_PART_MAX) {
        reg_error(c, id, "cancel", "not-allowed");
        return;
    }
    memcpy(user, c->jid, n);
    user[n] = '\0';
    if (!strcmp(type, "get")) {
        struct sb_buf *b = &reg_text;
        sb_buf_reset(b);
        sb_buf_adds(b, "<query xmlns='" NS_REGISTER "'><registered/><username>");
        xml_escape_text(b, user, n);
        sb_buf_adds(b, "</username><password/></query>");
        reg_reply(c, id, "result", b->data);
        return;
    }
    if ((c->flags & C2S_F_ANON) || auth_backend_of(c->domain) != AUTH_BE_INTERNAL) {
        log_info("register_done", "peer=%s op=%s user=%s domain=%s result=not-allowed "
                 "reason=%s", c->peer, f->remove ? "remove" : "passwd", sb_log_q(user),
                 sb_log_q(c->domain), (c->flags & C2S_F_ANON) ? "anonymous" : "external");
        reg_error(c, id, "cancel", "not-allowed");
        return;
    }
    if (f->remove) {
        const char *p[2] = {c->domain, user};
        reg_query(c, id, REG_REMOVE, user, reg_remove_statement(), 2, p);
        return;
    }
    if (!f->password || !f->password[0]) {
        reg_error(c, id, "modify", "bad-request");
        return;
    }
    if (f->username && (jid_nodeprep(f->username, want) != SB_OK || strcmp(want, user))) {
        reg_error(c, id, "modify", "not-allowed");  /* only the own password */
        return;
    }
    reg_keys(c, id, REG_PASSWD, user, f->password, NULL);
}

/* ---- entry ----------------------------------------------------------------------------- */

int c2s_register_iq(struct c2s_conn *c, struct xml_node *iq)
{
    const struct xml_node *q = xml_child(iq, "query", NS_REGISTER);
    const char *type = xml_attr(iq, "type"), *id = xml_attr(iq, "id");
    int before = c->state == C2S_S_STREAM_OPEN;

    if (!q || !type || (strcmp(type, "get") && strcmp(type, "set")))
        return 0;
    if (before && !c2s_register_offered(c))
        return 0;                  /* not offered: as any stanza before SASL */
    if (c->reg) {
        reg_error(c, id, "wait", "resource-constraint");   /* one at a time */
        return 1;
    }
    if (before && !strcmp(type, "get")) {
        reg_form(c, id);
        return 1;
    }
    struct reg_fields f;
    reg_fields_read(q, &f);
    if (before)
        reg_create(c, id, &f);
    else
        reg_own(c, id, type, &f);
    reg_fields_free(&f);
    return 1;
}

void c2s_register_release(struct c2s_conn *c)
{
    if (c->reg) {
        c->reg->c = NULL;          /* its answer is dropped */
        c->reg = NULL;
    }
}
