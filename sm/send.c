/* send.c — everything the sm puts on the link: stanzas to a session's
 * front-end (the received bytes, unchanged), stanzas built here routed by
 * the recipient's bare JID, stanza errors (RFC 6120 §8.3) and controls. */
#include "sm_int.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"

#include <string.h>

static int put_str(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n >= cap)
        return -1;
    memcpy(dst, s, n + 1);
    return 0;
}

static struct env_hdr *hdr_begin(struct sm_core *c, enum env_kind kind, enum env_route route)
{
    struct env_hdr *h = &c->out;
    env_init(h, kind, route);
    put_str(h->sender, sizeof h->sender, link_instance(c->link));
    return h;
}

SB_STANZA_COUNTERS(send_mx_out, "sb_stanzas_out_total", "Stanzas sent on the bus, by type")

/* A stanza on the link, counted once it is taken. */
static sb_rc send_stanza(struct sm_core *c, const struct env_hdr *h, const char *body, size_t len)
{
    sb_rc rc = link_send(c->link, h, body, len);
    if (rc == SB_OK)
        sb_metric_inc(send_mx_out[sb_stanza_kind_of_xml(body, len)]);
    return rc;
}

sb_rc sm_send_to_session(struct sm_core *c, const struct sm_session *s, const char *op,
                         const char *from, const char *body, size_t len)
{
    struct env_hdr *h = hdr_begin(c, ENV_STANZA, ENV_ROUTE_INSTANCE);
    put_str(h->key, sizeof h->key, s->instance);
    put_str(h->sid, sizeof h->sid, s->sid);
    if (put_str(h->op, sizeof h->op, op ? op : "") < 0 ||
        put_str(h->aux, sizeof h->aux, from ? from : "") < 0 ||
        send_stanza(c, h, body, len) != SB_OK) {
        log_warn("deliver_fail", "res=%s instance=%s", sb_log_q(s->resource), s->instance);
        return SB_ERROR;
    }
    return SB_OK;
}

sb_rc sm_deliver(struct sm_job *j, const struct sm_session *s)
{
    log_debug("deliver", "to=%s res=%s instance=%s name=%s", sb_log_q(j->key),
              sb_log_q(s->resource), s->instance, j->name);
    return sm_deliver_raw(j->core, s, j->from, j->body, j->body_len);
}

/* XEP-0352 holds back before XEP-0198 numbers: a stanza dropped by
 * coalescing never took a number, so the client's h stays right. */
sb_rc sm_deliver_raw(struct sm_core *c, const struct sm_session *s, const char *from,
                     const char *body, size_t len)
{
    if (s->inactive && sm_csi_hold(c, (struct sm_session *)s, from, body, len))
        return SB_OK;
    return sm_deliver_now(c, s, from, body, len);
}

sb_rc sm_deliver_now(struct sm_core *c, const struct sm_session *s, const char *from,
                     const char *body, size_t len)
{
    if (s->smq)     /* the queue owns the session's stanzas: cast is safe */
        return sm_smq_push(c, (struct sm_session *)s, from, body, len);
    return sm_send_to_session(c, s, "", from, body, len);
}

sb_rc sm_send_raw(struct sm_core *c, const char *key, const char *from,
                  const char *body, size_t len)
{
    struct env_hdr *h = hdr_begin(c, ENV_STANZA, ENV_ROUTE_JID);
    if (put_str(h->key, sizeof h->key, key) < 0 ||
        put_str(h->aux, sizeof h->aux, from ? from : "") < 0 ||
        send_stanza(c, h, body, len) != SB_OK) {
        log_warn("send_fail", "reason=link key=%s", sb_log_q(key));
        return SB_ERROR;
    }
    return SB_OK;
}

sb_rc sm_send_node(struct sm_core *c, const struct xml_node *st)
{
    const char *to = xml_attr(st, "to");
    const char *from = xml_attr(st, "from");
    struct env_hdr *h = hdr_begin(c, ENV_STANZA, ENV_ROUTE_JID);
    if (!to || jid_bare_of(to, h->key, sizeof h->key) < 0 ||
        put_str(h->aux, sizeof h->aux, from ? from : "") < 0) {
        log_warn("send_fail", "reason=bad-to to=%s", sb_log_q(to ? to : "-"));
        return SB_ERROR;
    }
    sb_buf_reset(&c->obuf);
    if (xml_serialize(st, &c->obuf) != SB_OK ||
        send_stanza(c, h, c->obuf.data, c->obuf.len) != SB_OK) {
        log_warn("send_fail", "reason=link to=%s", sb_log_q(to));
        return SB_ERROR;
    }
    return SB_OK;
}

/* Turn the parsed stanza into its own error in place: the original payload
 * stays (RFC 6120 §8.3.1 allows it), from/to swap, an <error/> is added. */
sb_rc sm_reply_error(struct sm_job *j, const char *etype, const char *cond)
{
    return sm_reply_error_app(j, etype, cond, NULL, NULL);
}

sb_rc sm_reply_error_app(struct sm_job *j, const char *etype, const char *cond,
                         const char *app, const char *app_ns)
{
    return sm_reply_error_with(j, etype, cond, app, app_ns, NULL);
}

sb_rc sm_reply_error_with(struct sm_job *j, const char *etype, const char *cond,
                          const char *app, const char *app_ns, const struct xml_node *extra)
{
    if (!j->st || !strcmp(j->type, "error") || !*j->from)
        return SB_OK;   /* never answer an error with an error, nor nobody */
    if (!strcmp(j->name, "iq") && strcmp(j->type, "get") && strcmp(j->type, "set"))
        return SB_OK;   /* nor a result */
    struct xml_doc *d = j->doc;
    struct xml_node *st = j->st;
    const char *orig_from = j->from, *orig_to = j->to;
    if (xml_set_attr(d, st, "to", orig_from) != SB_OK ||
        (orig_to && xml_set_attr(d, st, "from", orig_to) != SB_OK) ||
        xml_set_attr(d, st, "type", "error") != SB_OK)
        return SB_ERROR;
    if (!orig_to)
        xml_del_attr(st, "from");
    struct xml_node *e = xml_add_child(d, st, "error");
    struct xml_node *c = e ? xml_add_child(d, e, cond) : NULL;
    if (!c || xml_set_attr(d, e, "type", etype) != SB_OK ||
        xml_set_attr(d, c, "xmlns", SM_NS_STANZAS) != SB_OK)
        return SB_ERROR;
    struct xml_node *a = app ? xml_add_child(d, e, app) : NULL;
    if (app && (!a || xml_set_attr(d, a, "xmlns", app_ns) != SB_OK))
        return SB_ERROR;
    if (extra && !xml_copy_into(d, e, extra))
        return SB_ERROR;
    /* The job's cached attributes now describe the error; keep them honest. */
    j->type = "error";
    j->from = orig_to ? orig_to : "";
    j->to = orig_from;
    log_info("stanza_error", "cond=%s name=%s to=%s from=%s", cond, j->name,
             sb_log_q(orig_from), sb_log_q(orig_to ? orig_to : "-"));
    return sm_send_node(j->core, st);
}

struct xml_doc *sm_iq_result_new(const struct sm_job *j)
{
    struct xml_doc *d = *j->from ? xml_doc_new("iq") : NULL;
    if (!d)
        return NULL;
    if (xml_set_attr(d, d->root, "type", "result") != SB_OK ||
        xml_set_attr(d, d->root, "to", j->from) != SB_OK ||
        (j->id && xml_set_attr(d, d->root, "id", j->id) != SB_OK) ||
        (j->to && xml_set_attr(d, d->root, "from", j->to) != SB_OK)) {
        xml_doc_free(d);
        return NULL;
    }
    return d;
}

sb_rc sm_send_control_body(struct sm_core *c, enum env_route route, const char *key,
                           const char *sid, const char *op, const char *aux,
                           const char *body)
{
    struct env_hdr *h = hdr_begin(c, ENV_CONTROL, route);
    if (put_str(h->key, sizeof h->key, key) < 0 || put_str(h->sid, sizeof h->sid, sid) < 0 ||
        put_str(h->op, sizeof h->op, op) < 0 || put_str(h->aux, sizeof h->aux, aux) < 0 ||
        link_send(c->link, h, body, strlen(body)) != SB_OK) {
        log_warn("control_send_fail", "op=%s key=%s", op, sb_log_q(key));
        return SB_ERROR;
    }
    return SB_OK;
}

sb_rc sm_send_control(struct sm_core *c, enum env_route route, const char *key,
                      const char *sid, const char *op, const char *aux)
{
    return sm_send_control_body(c, route, key, sid, op, aux, "");
}
