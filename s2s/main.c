/* main.c — sb-s2s start-up and shutdown: read [s2s] settings (and the
 * cluster's dialback_secret), load the TLS credential and trust anchors
 * (certificates again on SIGHUP),
 * start the resolver, connect to PostgreSQL (local domains) and the
 * router, open the listeners (accepting once the domains are known), and
 * on SIGTERM bounce what still waits, close every stream and exit. */
#include "s2s.h"
#include "config.h"
#include "log.h"
#include "proc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S2S_SHUTDOWN_GRACE 2.0

struct s2s_srv s2s;

static struct sb_proc main_proc;

/* SIGTERM: 1 while streams are still closing (conn.c ends the loop once
 * the last is gone; sb_proc_run's grace bounds it). */
static int main_stop(void)
{
    log_info("shutdown", "conns=%ld routes=%ld", s2s.nconns, s2s_out_count());
    s2s_listen_stop();
    s2s_domains_stop();
    s2s_out_free_all();              /* bounces what waits, closes outgoing streams */
    for (struct s2s_conn *c = s2s.conns; c; c = c->next)
        if (c->dir == S2S_IN || c->dir == S2S_COMP)
            s2s_stream_error(c, "system-shutdown", "shutdown");
    s2s.stopping = 1;
    return s2s.conns != NULL;
}

static double main_seconds(const char *key, long def)
{
    return (double)sb_config_int(key, def);
}

static sb_rc main_config(struct s2s_cfg *cfg)
{
    cfg->listen = sb_config_str("listen", "127.0.0.1");
    cfg->port = (int)sb_config_int("port", 5269);
    cfg->tls_port = (int)sb_config_int("tls_port", 5270);
    cfg->cert = sb_config_str("cert", "var/tls/cert.pem");
    cfg->key = sb_config_str("key", "var/tls/key.pem");
    cfg->cert_dir = sb_config_str("cert_dir", "");
    cfg->cafile = sb_config_str("cafile", "");
    cfg->system_trust = sb_config_bool("system_trust", 1);
    cfg->tls_priority = sb_config_str("tls_priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2");
    cfg->resolver = sb_config_str("resolver", "");
    cfg->default_port = (int)sb_config_int("default_port", 5269);
    cfg->component_port = (int)sb_config_int("component_port", 0);
    cfg->component_listen = sb_config_str("component_listen", "127.0.0.1");
    cfg->connect_timeout = main_seconds("connect_timeout", 30);
    cfg->login_timeout = main_seconds("login_timeout", 60);
    cfg->idle_timeout = main_seconds("idle_timeout", 600);
    cfg->in_idle_timeout = main_seconds("incoming_idle_timeout", 1800);
    cfg->ping_interval = main_seconds("ping_interval", 300);
    cfg->ping_timeout = main_seconds("ping_timeout", 60);
    cfg->max_queue = (int)sb_config_int("max_queue", 1000);
    cfg->max_pending = (size_t)sb_config_int("max_pending", 4194304);
    cfg->require_tls = sb_config_bool("require_tls", 1);
    cfg->require_valid_certs = sb_config_bool("require_valid_certs", 0);
    cfg->secret = sb_config_str("dialback_secret", "");
    cfg->limits.max_stanza = (size_t)sb_config_int("max_stanza", 262144);
    cfg->limits.max_depth = (int)sb_config_int("max_depth", 32);
    cfg->max_in_per_addr = (int)sb_config_int("max_in_per_addr", 100);      /* limits.c */
    cfg->max_in_per_domain = (int)sb_config_int("max_in_per_domain", 20);
    if (strlen(cfg->secret) < 16) {
        log_error("config_invalid", "key=dialback_secret reason=\"set [cluster] dialback_secret "
                  "(at least 16 characters, the same on every s2s instance)\"");
        fprintf(stderr, "sb-s2s: [cluster] dialback_secret is missing or shorter than 16 characters\n");
        return SB_ERROR;
    }
    if (cfg->connect_timeout <= 0 || cfg->login_timeout <= 0 || cfg->idle_timeout <= 0 ||
        cfg->in_idle_timeout <= 0 || cfg->max_queue < 1 || cfg->max_pending < 65536 ||
        cfg->limits.max_stanza < 1024 || cfg->default_port <= 0 || cfg->default_port > 65535) {
        log_error("config_invalid", "connect_timeout=%g login_timeout=%g idle_timeout=%g "
                  "max_queue=%d max_pending=%zu", cfg->connect_timeout, cfg->login_timeout,
                  cfg->idle_timeout, cfg->max_queue, cfg->max_pending);
        return SB_ERROR;
    }
    return SB_OK;
}

static sb_rc main_open(void)
{
    struct s2s_cfg *cfg = &s2s.cfg;
    if (s2s_tls_init(cfg) != SB_OK) {
        if (cfg->require_tls)
            return SB_ERROR;
        log_warn("tls_unavailable", "note=\"federating without TLS (require_tls=0)\"");
    }
    if (s2s_dns_init(cfg->resolver) != SB_OK)
        return SB_ERROR;
    s2s.pg = sb_proc_pg(&main_proc);
    s2s.link = sb_proc_link(&main_proc, s2s_route_recv, NULL);
    if (!s2s.pg || !s2s.link) {
        log_error("start_failed", "pg=%d link=%d", s2s.pg != NULL, s2s.link != NULL);
        return SB_ERROR;
    }
    if (cfg->port > 0 && s2s_listen_open(cfg->listen, cfg->port, 0) != SB_OK)
        return SB_ERROR;
    if (cfg->tls_port > 0 && s2s_tls_available() &&
        s2s_listen_open(cfg->listen, cfg->tls_port, 1) != SB_OK)
        return SB_ERROR;
    /* XEP-0114: plain TCP, so loopback or a private network only */
    if (s2s_comp_init() != SB_OK)
        return SB_ERROR;
    if (cfg->component_port > 0 &&
        s2s_listen_open(cfg->component_listen, cfg->component_port, S2S_LIS_COMPONENT) != SB_OK)
        return SB_ERROR;
    return SB_OK;
}

static void main_cleanup(void)
{
    s2s_out_free_all();
    s2s_conn_free_all();
    s2s_listen_stop();
    s2s_domains_stop();
    s2s_dns_deinit();
    s2s_tls_deinit();                 /* the link and pg: sb_proc_run */
}

static sb_rc main_configure(void)
{
    return main_config(&s2s.cfg);
}

static void main_started(void)
{
    s2s_domains_start();
    log_info("ready", "listen=%s port=%d tls_port=%d require_tls=%d require_valid_certs=%d",
             s2s.cfg.listen, s2s.cfg.port, s2s_tls_available() ? s2s.cfg.tls_port : 0,
             s2s.cfg.require_tls, s2s.cfg.require_valid_certs);
}

/* SIGHUP (the log level is done by proc.c): the certificates, read again
 * from the paths the reloaded file names. The rest needs a restart. */
static void main_on_reload(struct sb_proc *p, void *ud)
{
    struct s2s_cfg n = s2s.cfg;
    n.cert = sb_config_str("cert", "var/tls/cert.pem");
    n.key = sb_config_str("key", "var/tls/key.pem");
    n.cert_dir = sb_config_str("cert_dir", "");
    if (s2s_tls_reload(&n) != SB_OK) {
        log_info("reload", "what=s2s tls=kept");
        return;
    }
    s2s.cfg.cert = n.cert;
    s2s.cfg.key = n.key;
    s2s.cfg.cert_dir = n.cert_dir;
    log_info("reload", "what=s2s tls=reloaded");
}

static const struct sb_proc_daemon main_daemon = {
    .configure = main_configure,
    .open = main_open,
    .started = main_started,
    .stop = main_stop,
    .cleanup = main_cleanup,
    .grace = S2S_SHUTDOWN_GRACE,
};

int main(int argc, char **argv)
{
    if (sb_proc_init(&main_proc, argc, argv, "s2s") != SB_OK)
        return 2;
    s2s.loop = main_proc.loop;
    s2s.instance = main_proc.instance;
    main_proc.on_reload = main_on_reload;
    return sb_proc_run(&main_proc, &main_daemon);
}
