/* rate.c — per-session inbound limits, transport-neutral (TCP, BOSH and
 * WebSocket sessions all pass through here):
 *
 *   bytes    a token bucket of `max_rate` bytes/s holding up to `rate_burst`.
 *            A transport that took more than the bucket held stops reading
 *            that session until the debt is paid (TCP back-pressure, like
 *            ejabberd's shapers and Prosody's limits): the client is slowed,
 *            nobody else is.
 *   stanzas  a bucket of `max_stanzas_per_sec` elements/s holding up to
 *            `stanza_burst`. Bursts are fine; a client that keeps sending
 *            faster than the rate empties it and is closed with
 *            policy-violation (logged `rate_limited`).
 *
 * Buckets start full and refill from one timestamp per session; 0 turns a
 * limit off. Two floats and a double per session, no timers of their own:
 * the conn's deadline timer resumes a throttled reader (conn.c). The
 * per-address login bucket (limits.c) refills with the same arithmetic,
 * c2s_bucket_refill. */
#include "c2s.h"
#include "log.h"

void c2s_rate_init(struct c2s_conn *c)
{
    c->rx_tokens = (float)c2s.cfg.rate_burst;
    c->st_tokens = (float)c2s.cfg.stanza_burst;
    c->rate_at = ev_now(c2s.loop);
}

float c2s_bucket_refill(float tokens, double dt, double rate, double burst)
{
    double t = tokens + (dt > 0 ? dt : 0) * rate;
    return (float)(t > burst ? burst : t);
}

/* Refill both buckets for the time since the last look. */
static void rate_refill(struct c2s_conn *c)
{
    double now = ev_now(c2s.loop), dt = now - c->rate_at;
    const struct c2s_cfg *cfg = &c2s.cfg;
    if (dt <= 0)
        return;
    c->rate_at = now;
    c->rx_tokens = c2s_bucket_refill(c->rx_tokens, dt, cfg->max_rate, cfg->rate_burst);
    c->st_tokens = c2s_bucket_refill(c->st_tokens, dt, cfg->max_stanzas, cfg->stanza_burst);
}

double c2s_rate_bytes(struct c2s_conn *c, size_t n)
{
    if (c2s.cfg.max_rate <= 0)
        return 0;
    rate_refill(c);
    c->rx_tokens -= (float)n;
    if (c->rx_tokens >= 0)
        return 0;
    double wait = -c->rx_tokens / c2s.cfg.max_rate;
    log_debug("throttled", "peer=%s sid=%s jid=%s wait_ms=%.0f", c->peer,
              *c->sid ? c->sid : "-", c->jid ? c->jid : "-", wait * 1e3);
    return wait;
}

double c2s_rate_resume_at(const struct c2s_conn *c)
{
    if (c2s.cfg.max_rate <= 0 || c->rx_tokens >= 0)
        return c->rate_at;
    return c->rate_at + -c->rx_tokens / c2s.cfg.max_rate;
}

int c2s_rate_stanza(struct c2s_conn *c)
{
    if (c2s.cfg.max_stanzas <= 0)
        return 0;
    rate_refill(c);
    if (c->st_tokens >= 1) {
        c->st_tokens -= 1;
        return 0;
    }
    log_warn("rate_limited", "peer=%s sid=%s jid=%s limit=%g/s burst=%g", c->peer,
             *c->sid ? c->sid : "-", c->jid ? c->jid : "-", c2s.cfg.max_stanzas,
             c2s.cfg.stanza_burst);
    c2s_stream_error(c, "policy-violation", "stanza-rate");
    return 1;
}
