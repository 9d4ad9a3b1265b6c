/* srv.c — start-up and shutdown shared by sb-c2s and sb-bosh: read the
 * front-end's section ([c2s] or [bosh]), load the TLS credential, connect to
 * PostgreSQL (domains, credentials) and the router, open the front-end's
 * listeners (accepting starts once the domains are known), and on SIGTERM
 * close every stream with system-shutdown, end every session, flush briefly
 * and exit. What differs between the two is a struct c2s_frontend. */
#include "c2s.h"
#include "config.h"
#include "log.h"
#include "proc.h"
#include "rdev.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define C2S_SHUTDOWN_GRACE 2.0

struct c2s_srv c2s;

static struct sb_proc main_proc;
static ev_timer main_trim;

static void main_trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    double t0 = sb_now();
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    log_debug("malloc_trim", "ms=%.2f conns=%ld heap_used=%zu heap_free=%zu", (sb_now() - t0) * 1e3,
              c2s.nconns, mi.uordblks, mi.fordblks);
}

void c2s_trim_soon(void)
{
    if (!ev_is_active(&main_trim)) {
        ev_timer_init(&main_trim, main_trim_cb, 3.0, 0.);
        ev_timer_start(c2s.loop, &main_trim);
    }
}

void c2s_sessions_changed(void)
{
    if (c2s.link)
        link_set_sessions(c2s.link, c2s.nsessions);
}

/* ---- drain ----------------------------------------------------------------- */

#define C2S_DRAIN_TICK 0.1
#define C2S_DRAIN_SPREAD 5.0      /* at most this long to send everyone away */

static ev_timer drain_tick, drain_deadline;
static long drain_per_tick;

/* Tell a stream to go: to `drain_redirect` (RFC 6120 §4.9.3.19) when
 * configured, else system-shutdown; either way the client reconnects, and
 * this front-end no longer listens. */
static void srv_send_away(struct c2s_conn *c, const char *why)
{
    if (*c2s.cfg.drain_redirect)
        c2s_stream_error_text(c, "see-other-host", c2s.cfg.drain_redirect, why);
    else
        c2s_stream_error(c, "system-shutdown", why);
}

static void drain_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    log_warn("drain_timeout", "conns=%ld sessions=%ld", c2s.nconns, c2s.nsessions);
    ev_break(loop, EVBREAK_ALL);
}

/* A slice of the streams each tick, so the other front-ends see a stream
 * of reconnects rather than one burst; once all are told, the loop ends
 * with the last connection (conn.c) and the process exits 0. */
static void drain_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    long n = 0;
    for (struct c2s_conn *c = c2s.conns, *next; c && n < drain_per_tick; c = next) {
        next = c->next;
        if ((c->state == C2S_S_CLOSING))
            continue;
        srv_send_away(c, "drain");
        n++;
    }
    for (struct c2s_conn *c = c2s.conns; c; c = c->next)
        if (!(c->state == C2S_S_CLOSING))
            return;
    ev_timer_stop(loop, w);
    log_info("drain_sent_away", "conns=%ld", c2s.nconns);
    c2s.stopping = 1;
    if (!c2s.conns)
        ev_break(loop, EVBREAK_ALL);
}

void c2s_drain(double timeout)
{
    if (c2s.draining || c2s.stopping)
        return;
    if (timeout <= 0)
        timeout = c2s.cfg.drain_timeout;
    c2s.draining = 1;
    c2s_listen_stop();
    double spread = timeout / 2 < C2S_DRAIN_SPREAD ? timeout / 2 : C2S_DRAIN_SPREAD;
    long ticks = (long)(spread / C2S_DRAIN_TICK);
    if (ticks < 1)
        ticks = 1;
    drain_per_tick = (c2s.nconns + ticks - 1) / ticks;
    if (drain_per_tick < 1)
        drain_per_tick = 1;
    log_info("drain", "conns=%ld sessions=%ld timeout=%g redirect=%s", c2s.nconns,
             c2s.nsessions, timeout, *c2s.cfg.drain_redirect ? c2s.cfg.drain_redirect : "-");
    ev_timer_init(&drain_tick, drain_tick_cb, 0., C2S_DRAIN_TICK);
    ev_timer_start(c2s.loop, &drain_tick);
    ev_timer_init(&drain_deadline, drain_deadline_cb, timeout, 0.);
    ev_timer_start(c2s.loop, &drain_deadline);
}

/* SIGTERM: 1 while streams are still closing (conn.c ends the loop once
 * the last is gone; sb_proc_run's grace bounds it). */
static int main_stop(void)
{
    c2s.stopping = 1;
    log_info("shutdown", "conns=%ld sessions=%ld", c2s.nconns, c2s.nsessions);
    c2s_listen_stop();
    c2s_domains_stop();
    ev_timer_stop(c2s.loop, &drain_tick);
    for (struct c2s_conn *c = c2s.conns; c; c = c->next)
        srv_send_away(c, "shutdown");
    if (c2s.fe->stop)
        c2s.fe->stop();
    return c2s.conns != NULL;
}

/* The lease ran out (frozen or cut off from every router): every sm has
 * ended our sessions, so clients must not stay on streams nobody can
 * reach. They reconnect, on this front-end or another. */
static void main_lease_lost(void)
{
    long n = 0;
    for (struct c2s_conn *c = c2s.conns, *next; c; c = next) {
        next = c->next;
        c2s_stream_error(c, "connection-timeout", "lease-lost");
        n++;
    }
    log_warn("lease_lost_closed", "streams=%ld sessions=%ld", n, c2s.nsessions);
}

/* Read the front-end's section into cfg (no side effects). */
static void main_read_cfg(struct c2s_cfg *cfg)
{
    cfg->listen = sb_config_str("listen", "127.0.0.1");
    cfg->port = (int)sb_config_int("port", c2s.fe->port);
    cfg->tls_port = (int)sb_config_int("tls_port", c2s.fe->tls_port);
    cfg->cert = sb_config_str("cert", "var/tls/cert.pem");
    cfg->cert_dir = sb_config_str("cert_dir", "");
    cfg->key = sb_config_str("key", "var/tls/key.pem");
    cfg->drain_redirect = sb_config_str("drain_redirect", "");
    cfg->drain_timeout = atof(sb_config_str("drain_timeout", "30"));
    cfg->tls_priority = sb_config_str("tls_priority",
                                      "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2");
    cfg->limits.max_stanza = (size_t)sb_config_int("max_stanza", 262144);
    cfg->limits.max_depth = (int)sb_config_int("max_depth", 32);
    cfg->login_timeout = (double)sb_config_int("login_timeout", 60);
    cfg->bind_timeout = (double)sb_config_int("bind_timeout", 10);
    cfg->max_pending = (size_t)sb_config_int("max_pending", 1048576);
    cfg->max_memory = (size_t)sb_config_int("max_memory_mb", 2048) << 20;
    cfg->parser_idle = (double)sb_config_int("parser_idle", 5);
    cfg->ping_interval = atof(sb_config_str("ping_interval", "120"));
    cfg->ping_timeout = atof(sb_config_str("ping_timeout", "30"));
    cfg->idle_timeout = atof(sb_config_str("idle_timeout", "0"));
    cfg->max_auth_failures = (int)sb_config_int("sasl_retries", 3);
    cfg->allow_plain = sb_config_bool("allow_plain_without_tls", 0);
    cfg->channel_binding = sb_config_bool("channel_binding", 1);
    /* Inbound limits per session (rate.c); 0 turns one off. */
    cfg->max_rate = atof(sb_config_str("max_rate", "102400"));
    cfg->rate_burst = atof(sb_config_str("rate_burst", "262144"));
    cfg->max_stanzas = atof(sb_config_str("max_stanzas_per_sec", "100"));
    cfg->stanza_burst = atof(sb_config_str("stanza_burst", "500"));
    /* Per source address and per account (limits.c); 0 turns one off. */
    cfg->max_conns_per_addr = (int)sb_config_int("max_conns_per_addr", 1000);
    cfg->max_unauth_per_addr = (int)sb_config_int("max_unauth_per_addr", 100);
    cfg->login_failures_per_addr = atof(sb_config_str("login_failures_per_addr", "30"));
    cfg->login_failures_per_account = (int)sb_config_int("login_failures_per_account", 10);
    cfg->login_fail_window = atof(sb_config_str("login_fail_window", "60"));
    cfg->login_lockout_max = atof(sb_config_str("login_lockout_max", "3600"));
    if (cfg->login_fail_window < 1)
        cfg->login_fail_window = 1;
    if (cfg->login_lockout_max < cfg->login_fail_window)
        cfg->login_lockout_max = cfg->login_fail_window;
    /* XEP-0198: ask for an ack after this many stanzas or seconds. */
    cfg->sm_ack_every = (int)sb_config_int("sm_ack_every", 5);
    cfg->fast_ttl = atof(sb_config_str("fast_ttl", "1209600"));     /* 14 days */
    if (cfg->fast_ttl < 60)
        cfg->fast_ttl = 60;
    cfg->sm_ack_after = atof(sb_config_str("sm_ack_after", "30"));
    if (cfg->sm_ack_every < 1)
        cfg->sm_ack_every = 1;
    if (cfg->ping_interval > 0 && cfg->ping_timeout <= 0)
        cfg->ping_timeout = 30;
    if (cfg->max_rate > 0 && cfg->rate_burst < 4096)
        cfg->rate_burst = 4096;       /* room for one read of a normal stanza */
    if (cfg->max_stanzas > 0 && cfg->stanza_burst < 1)
        cfg->stanza_burst = 1;
}

static sb_rc main_check_cfg(const struct c2s_cfg *cfg)
{
    if (cfg->allow_plain && !c2s_is_loopback(cfg->listen)) {
        log_error("config_refused", "key=allow_plain_without_tls listen=%s "
                  "reason=\"plaintext logins are only allowed on a loopback listen address\"",
                  cfg->listen);
        return SB_ERROR;
    }
    if (cfg->login_timeout <= 0 || cfg->max_pending < 4096 || cfg->limits.max_stanza < 1024 ||
        cfg->limits.max_depth < 2 || cfg->max_rate < 0 || cfg->max_stanzas < 0 ||
        cfg->max_conns_per_addr < 0 || cfg->max_unauth_per_addr < 0 ||
        cfg->login_failures_per_addr < 0 || cfg->login_failures_per_account < 0) {
        log_error("config_invalid", "login_timeout=%g max_pending=%zu max_stanza=%zu "
                  "max_depth=%d max_rate=%g max_stanzas_per_sec=%g max_conns_per_addr=%d "
                  "max_unauth_per_addr=%d login_failures_per_addr=%g "
                  "login_failures_per_account=%d", cfg->login_timeout,
                  cfg->max_pending, cfg->limits.max_stanza, cfg->limits.max_depth,
                  cfg->max_rate, cfg->max_stanzas, cfg->max_conns_per_addr,
                  cfg->max_unauth_per_addr, cfg->login_failures_per_addr,
                  cfg->login_failures_per_account);
        return SB_ERROR;
    }
    return SB_OK;
}

static sb_rc main_config(struct c2s_cfg *cfg)
{
    main_read_cfg(cfg);
    if (main_check_cfg(cfg) != SB_OK) {
        fprintf(stderr, "sb-%s: invalid configuration (see the log line above)\n",
                c2s.fe->kind);
        return SB_ERROR;
    }
    if (cfg->allow_plain)
        log_warn("plaintext_allowed", "listen=%s note=\"SASL PLAIN offered without TLS; "
                 "load generators only\"", cfg->listen);
    return SB_OK;
}

/* ---- SIGHUP ---------------------------------------------------------------- */

static int main_str_changed(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") != 0;
}

/* Append "key" to the changed list when a numeric setting moved. */
#define MAIN_DIFF(field, name) \
    do { if (o->field != n->field) sb_buf_printf(b, "%s%s", b->len ? "," : "", name); } while (0)

static void main_cfg_diff(const struct c2s_cfg *o, const struct c2s_cfg *n, struct sb_buf *b)
{
    MAIN_DIFF(limits.max_stanza, "max_stanza");
    MAIN_DIFF(limits.max_depth, "max_depth");
    MAIN_DIFF(login_timeout, "login_timeout");
    MAIN_DIFF(bind_timeout, "bind_timeout");
    MAIN_DIFF(max_pending, "max_pending");
    MAIN_DIFF(max_memory, "max_memory_mb");
    MAIN_DIFF(parser_idle, "parser_idle");
    MAIN_DIFF(ping_interval, "ping_interval");
    MAIN_DIFF(ping_timeout, "ping_timeout");
    MAIN_DIFF(idle_timeout, "idle_timeout");
    MAIN_DIFF(max_auth_failures, "sasl_retries");
    MAIN_DIFF(channel_binding, "channel_binding");
    MAIN_DIFF(max_rate, "max_rate");
    MAIN_DIFF(rate_burst, "rate_burst");
    MAIN_DIFF(max_stanzas, "max_stanzas_per_sec");
    MAIN_DIFF(stanza_burst, "stanza_burst");
    MAIN_DIFF(max_conns_per_addr, "max_conns_per_addr");
    MAIN_DIFF(max_unauth_per_addr, "max_unauth_per_addr");
    MAIN_DIFF(login_failures_per_addr, "login_failures_per_addr");
    MAIN_DIFF(login_failures_per_account, "login_failures_per_account");
    MAIN_DIFF(login_fail_window, "login_fail_window");
    MAIN_DIFF(login_lockout_max, "login_lockout_max");
}

/* Reload what can change without dropping anyone: limits and timeouts
 * (parsers and deadlines created from now on; rates at once), the TLS
 * certificate, key and priority (new handshakes). Listen addresses, ports
 * and allow_plain_without_tls need a restart. */
static void main_on_reload(struct sb_proc *p, void *ud)
{
    struct c2s_cfg n;
    main_read_cfg(&n);
    if (main_check_cfg(&n) != SB_OK) {
        log_error("reload_failed", "what=c2s note=\"kept the settings in force\"");
        return;
    }
    struct c2s_cfg *o = &c2s.cfg;
    struct sb_buf changed = SB_BUF_INIT;
    main_cfg_diff(o, &n, &changed);
    if (main_str_changed(o->listen, n.listen) || o->port != n.port ||
        o->tls_port != n.tls_port || o->allow_plain != n.allow_plain)
        log_warn("reload_needs_restart", "keys=listen,port,tls_port,allow_plain_without_tls");
    int tls_new = 0;
    if (c2s_tls_available() || !o->allow_plain) {
        /* Read the files every time: a renewed certificate keeps its path. */
        if (c2s_tls_reload(&n) == SB_OK)
            tls_new = 1;
        else
            n.cert = o->cert, n.key = o->key, n.tls_priority = o->tls_priority,
            n.cert_dir = o->cert_dir;
    }
    n.listen = o->listen;
    n.port = o->port;
    n.tls_port = o->tls_port;
    n.allow_plain = o->allow_plain;
    *o = n;
    log_info("reload", "what=%s changed=%s tls=%s", c2s.fe->kind,
             changed.len ? changed.data : "-", tls_new ? "reloaded" : "kept");
    sb_buf_free(&changed);
}

/* Many clients, one descriptor each: use the hard limit. */
static void main_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("nofile_limit", "error=setrlimit");
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        log_info("nofile_limit", "max=%llu", (unsigned long long)rl.rlim_cur);
}

static sb_rc main_open(void)
{
    main_raise_nofile();
    struct c2s_cfg *cfg = &c2s.cfg;
    if (c2s_tls_init(cfg) != SB_OK) {
        if (!cfg->allow_plain)
            return SB_ERROR;
        log_warn("tls_unavailable", "note=\"running plaintext only\"");
    }
    if (auth_fake_configure() != SB_OK)
        return SB_ERROR;
    c2s.pg = sb_proc_pg(&main_proc);
    c2s.store = c2s.pg ? auth_store_new(c2s.pg) : NULL;
    if (c2s.store)
        auth_store_set_loop(c2s.store, c2s.loop);   /* extauth pipes, LDAP answers */
    c2s.rd = rdev_from_config(c2s.loop);
    c2s.auth_sub = auth_cache_subscribe(c2s.loop);
    c2s_anon_init();
    c2s.link = sb_proc_link(&main_proc, c2s_route_recv, NULL);
    c2s_route_cred_init();
    if (!c2s.pg || !c2s.store || !c2s.link || !c2s.rd) {
        log_error("start_failed", "pg=%d store=%d link=%d redis=%d", c2s.pg != NULL,
                  c2s.store != NULL, c2s.link != NULL, c2s.rd != NULL);
        return SB_ERROR;
    }
    if (cfg->port > 0 && c2s_listen_open(cfg->listen, cfg->port, c2s.fe->plain_kind) != SB_OK)
        return SB_ERROR;
    if (cfg->tls_port > 0 && c2s_tls_available() &&
        c2s_listen_open(cfg->listen, cfg->tls_port, c2s.fe->tls_kind) != SB_OK)
        return SB_ERROR;
    return c2s.fe->init ? c2s.fe->init() : SB_OK;
}

static void main_cleanup(void)
{
    ev_timer_stop(c2s.loop, &main_trim);
    c2s_conn_free_all();
    c2s_limits_stop();
    c2s_sm_stop();
    c2s_route_stop();
    if (c2s.fe->cleanup)
        c2s.fe->cleanup();
    c2s_listen_stop();
    c2s_domains_stop();
    if (c2s.store)
        auth_store_free(c2s.store);
    auth_cache_stop(c2s.auth_sub);
    c2s.auth_sub = NULL;
    if (c2s.rd)
        rdev_free(c2s.rd);
    c2s_tls_deinit();                 /* the link and pg: sb_proc_run */
}

static sb_rc main_configure(void)
{
    return main_config(&c2s.cfg);
}

static void main_started(void)
{
    c2s_sm_init();
    c2s_limits_init();
    c2s_domains_start();
    log_info("ready", "port=%d tls_port=%d plain=%d", c2s.cfg.port,
             c2s_tls_available() ? c2s.cfg.tls_port : 0, c2s.cfg.allow_plain);
}

static const struct sb_proc_daemon main_daemon = {
    .configure = main_configure,
    .open = main_open,
    .started = main_started,
    .stop = main_stop,
    .cleanup = main_cleanup,
    .lease_lost = main_lease_lost,
    .lease_held = c2s_route_sweep_stale,
    .grace = C2S_SHUTDOWN_GRACE,
};

int c2s_srv_main(int argc, char **argv, const struct c2s_frontend *fe)
{
    c2s.fe = fe;
    if (sb_proc_init(&main_proc, argc, argv, fe->kind) != SB_OK)
        return 2;
    c2s.loop = main_proc.loop;
    c2s.instance = main_proc.instance;
    main_proc.on_reload = main_on_reload;
    return sb_proc_run(&main_proc, &main_daemon);
}
