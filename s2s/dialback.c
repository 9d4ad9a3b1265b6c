/* dialback.c — Server Dialback (XEP-0220) in its three roles, with keys
 * derived as XEP-0185 recommends from the cluster-wide `dialback_secret`:
 *   originating    we opened a stream and prove we own our domain by a key
 *   receiving      a peer sent us a key: ask its authoritative server
 *   authoritative  a peer asks whether a key we issued is good: recompute it
 * Because the key is a function of the secret, the domains and the stream
 * id only, any instance of the cluster answers for any other. */
#include "s2s.h"
#include "jid.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

static struct sb_buf db_buf;
static struct sb_buf db_text;

static void db_attr(struct sb_buf *b, const char *name, const char *v)
{
    sb_buf_printf(b, " %s='", name);
    xml_escape_attr(b, v, strlen(v));
    sb_buf_adds(b, "'");
}

/* ---- originating ----------------------------------------------------------- */

void s2s_db_send_result(struct s2s_conn *c)
{
    char key[65];
    s2s_db_key(s2s.cfg.secret, c->remote, c->local, c->sid, key);
    struct sb_buf *b = &db_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<db:result");
    db_attr(b, "from", c->local);
    db_attr(b, "to", c->remote);
    sb_buf_printf(b, ">%s</db:result>", key);
    c->state = S2S_S_DIALBACK;
    s2s_conn_write(c, b->data, b->len);
    log_debug("dialback_sent", "local=%s remote=%s", c->local, c->remote);
}

/* ---- receiving --------------------------------------------------------------- */

static void db_result_reply(struct s2s_conn *c, const char *local, const char *remote,
                            const char *type, const char *cond)
{
    struct sb_buf *b = &db_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<db:result");
    db_attr(b, "from", local);
    db_attr(b, "to", remote);
    db_attr(b, "type", type);
    if (cond)
        sb_buf_printf(b, "><error type='cancel'><%s xmlns='" S2S_NS_STANZAS "'/></error>"
                         "</db:result>", cond);
    else
        sb_buf_adds(b, "/>");
    s2s_conn_write(c, b->data, b->len);
}

/* Prepared domains of a dialback element; SB_ERROR after a stream error. */
static sb_rc db_domains(struct s2s_conn *c, struct xml_node *n, char *from, const char **local)
{
    char to[JID_PART_MAX + 1];
    const char *f = xml_attr(n, "from"), *t = xml_attr(n, "to");
    if (!f || strchr(f, '@') || strchr(f, '/') || jid_nameprep(f, from) != SB_OK) {
        s2s_stream_error(c, "invalid-from", "dialback-from");
        return SB_ERROR;
    }
    *local = t && jid_nameprep(t, to) == SB_OK ? sb_domains_find(to) : NULL;
    if (!*local) {
        s2s_stream_error(c, "host-unknown", "dialback-to");
        return SB_ERROR;
    }
    if (s2s.cfg.require_tls && !(c->flags & S2S_F_TLS)) {
        s2s_stream_error(c, "policy-violation", "dialback-without-tls");
        return SB_ERROR;
    }
    return SB_OK;
}

void s2s_db_in_result(struct s2s_conn *c, struct xml_node *n)
{
    char remote[JID_PART_MAX + 1];
    const char *local;
    if (xml_attr(n, "type")) {
        s2s_stream_error(c, "unsupported-stanza-type", "typed-db-result");
        return;
    }
    if (db_domains(c, n, remote, &local) != SB_OK)
        return;
    if (s2s.cfg.require_valid_certs && !s2s_tls_peer_valid(c, remote)) {
        db_result_reply(c, local, remote, "error", "not-authorized");
        return;
    }
    if (!s2s_policy_allows(local, remote)) {
        log_info("policy_refused", "dir=in local=%s remote=%s how=dialback", local, remote);
        db_result_reply(c, local, remote, "error", "not-allowed");
        return;
    }
    if (s2s_in_pair(c, remote, local)) {
        db_result_reply(c, local, remote, "valid", NULL);
        return;
    }
    xml_text(n, &db_text);
    const char *key = db_text.data ? db_text.data : "";
    if (!*key || strlen(key) > 255) {
        db_result_reply(c, local, remote, "invalid", NULL);
        s2s_stream_error(c, "not-authorized", "dialback-key-malformed");
        return;
    }
    log_info("dialback_verify", "peer=%s remote=%s local=%s", c->peer, remote, local);
    s2s_out_verify(local, remote, c->serial, c->sid, key);
}

void s2s_db_verdict(unsigned long serial, const char *remote, const char *local,
                    const char *type)
{
    struct s2s_conn *c = s2s_conn_by_serial(serial);
    if (!c)
        return;
    if (!strcmp(type, "valid")) {
        if (s2s_in_add_pair(c, remote, local, S2S_AUTH_DIALBACK) != SB_OK) {
            s2s_stream_error(c, "resource-constraint", "nomem");
            return;
        }
        db_result_reply(c, local, remote, "valid", NULL);
    } else if (!strcmp(type, "invalid")) {
        log_info("dialback_invalid", "peer=%s remote=%s local=%s", c->peer, remote, local);
        db_result_reply(c, local, remote, "invalid", NULL);
        s2s_stream_error(c, "not-authorized", "dialback-key-invalid");
    } else {
        log_info("dialback_unverified", "peer=%s remote=%s local=%s", c->peer, remote, local);
        db_result_reply(c, local, remote, "error", "remote-server-not-found");
    }
}

/* ---- authoritative --------------------------------------------------------------- */

void s2s_db_in_verify(struct s2s_conn *c, struct xml_node *n)
{
    char remote[JID_PART_MAX + 1];
    const char *local;
    if (xml_attr(n, "type")) {
        s2s_stream_error(c, "unsupported-stanza-type", "typed-db-verify");
        return;
    }
    if (db_domains(c, n, remote, &local) != SB_OK)
        return;
    const char *id = xml_attr(n, "id");
    xml_text(n, &db_text);
    char expect[65];
    int ok = 0;
    if (id && *id && db_text.data) {
        s2s_db_key(s2s.cfg.secret, remote, local, id, expect);
        ok = s2s_db_key_equal(expect, db_text.data);
    }
    log_info("dialback_answer", "peer=%s remote=%s local=%s valid=%d", c->peer, remote, local, ok);
    struct sb_buf *b = &db_buf;
    sb_buf_reset(b);
    sb_buf_adds(b, "<db:verify");
    db_attr(b, "from", local);
    db_attr(b, "to", remote);
    db_attr(b, "id", id ? id : "");
    db_attr(b, "type", ok ? "valid" : "invalid");
    sb_buf_adds(b, "/>");
    s2s_conn_write(c, b->data, b->len);
}
