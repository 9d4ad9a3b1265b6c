/* keepalive.c — noticing dead clients of bound sessions (XEP-0199 §4.2):
 * any byte from the client (a stanza, a whitespace keepalive, a ping
 * answer) counts as life. After `ping_interval` seconds of silence the
 * server sends <iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>; after
 * `ping_timeout` more without a byte, or after `idle_timeout` of silence
 * whatever the pings did, the stream is closed with `connection-timeout`.
 * 0 disables each. The answer to our ping is consumed here, never routed.
 * conn.c calls in from its read path and its one timer per connection.
 * Only the TCP transport: BOSH (XEP-0124 inactivity) and WebSocket have
 * their own liveness rules in their transports. */
#include "c2s.h"
#include "log.h"

#include <string.h>

#define KEEPALIVE_ID "c2s-ping-"

void c2s_keepalive_seen(struct c2s_conn *c)
{
    c->last_rx = ev_now(c2s.loop);
    c->flags &= ~C2S_F_PING_OUT;
}

/* The earliest keepalive deadline of a bound connection, 0 if none. */
double c2s_keepalive_next(const struct c2s_conn *c)
{
    const struct c2s_cfg *cfg = &c2s.cfg;
    double next = 0;
    if (c->tp != &c2s_tcp_transport)
        return 0;                       /* BOSH/WebSocket keep their own time */
    if (cfg->ping_interval > 0)
        next = c->last_rx + cfg->ping_interval +
               ((c->flags & C2S_F_PING_OUT) ? cfg->ping_timeout : 0);
    if (cfg->idle_timeout > 0 && (next == 0 || c->last_rx + cfg->idle_timeout < next))
        next = c->last_rx + cfg->idle_timeout;
    return next;
}

static void keepalive_ping(struct c2s_conn *c)
{
    if (c2s_sm_enabled(c)) {            /* XEP-0198: an <r/> is the ping */
        c->flags |= C2S_F_PING_OUT;
        c2s_conn_writes(c, "<r xmlns='urn:xmpp:sm:3'/>");
        return;
    }
    struct sb_buf b = SB_BUF_INIT;
    char id[sizeof KEEPALIVE_ID + 8];
    memcpy(id, KEEPALIVE_ID, sizeof KEEPALIVE_ID - 1);
    sb_random_id(id + sizeof KEEPALIVE_ID - 1, 8);
    sb_buf_adds(&b, "<iq type='get' id='");
    sb_buf_adds(&b, id);
    if (c->domain) {
        sb_buf_adds(&b, "' from='");
        xml_escape_attr(&b, c->domain, strlen(c->domain));
    }
    sb_buf_adds(&b, "' to='");
    xml_escape_attr(&b, c->jid, strlen(c->jid));
    sb_buf_adds(&b, "'><ping xmlns='urn:xmpp:ping'/></iq>");
    c->flags |= C2S_F_PING_OUT;
    log_debug("keepalive_ping", "sid=%s jid=%s", c->sid, c->jid);
    if (b.data)
        c2s_conn_write(c, b.data, b.len);
    sb_buf_free(&b);
}

/* From the timer of a bound connection. Returns 1 when c was closed. */
int c2s_keepalive_check(struct c2s_conn *c, double now)
{
    const struct c2s_cfg *cfg = &c2s.cfg;
    double silent = now - c->last_rx;
    if (c->tp != &c2s_tcp_transport)
        return 0;
    if (cfg->idle_timeout > 0 && silent >= cfg->idle_timeout) {
        c2s_stream_error(c, "connection-timeout", "idle-timeout");
        return 1;
    }
    if (cfg->ping_interval <= 0 || silent < cfg->ping_interval)
        return 0;
    if (!(c->flags & C2S_F_PING_OUT)) {
        keepalive_ping(c);
        return c->state == C2S_S_CLOSING;   /* a failed write closes */
    }
    if (silent >= cfg->ping_interval + cfg->ping_timeout) {
        c2s_stream_error(c, "connection-timeout", "ping-timeout");
        return 1;
    }
    return 0;
}

/* The client's result (or error) for our ping: consumed. */
int c2s_keepalive_answer(struct c2s_conn *c, const struct xml_node *n)
{
    const char *type = xml_attr(n, "type"), *id = xml_attr(n, "id");
    const char *to = xml_attr(n, "to");
    if (strcmp(n->name, "iq") || !type || (strcmp(type, "result") && strcmp(type, "error")) ||
        !id || strncmp(id, KEEPALIVE_ID, sizeof KEEPALIVE_ID - 1))
        return 0;
    return !to || !*to || (c->domain && !strcmp(to, c->domain));
}
