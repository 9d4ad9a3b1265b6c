/* proc.c — the common start of every daemon: arguments, config, logging,
 * the libev loop and signal handling; for the front-ends also the run
 * itself (open, loop, graceful stop, clean-up) and the router link. */
#include "proc.h"
#include "config.h"
#include "curve.h"
#include "pgev.h"
#include "log.h"
#include "metrics.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void proc_usage(const char *argv0, const char *kind)
{
    fprintf(stderr,
            "usage: %s [-c CONFIG] [-n INSTANCE]\n"
            "  -c CONFIG    cluster INI file (default: $SB_CONFIG)\n"
            "  -n INSTANCE  instance name (default: $SB_INSTANCE, else \"%s\")\n",
            argv0, kind);
}

sb_rc sb_proc_init(struct sb_proc *p, int argc, char **argv, const char *kind)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->config_path = getenv("SB_CONFIG");
    p->instance = getenv("SB_INSTANCE");
    const char *argv0 = argc > 0 ? argv[0] : kind;

    int c;
    optind = 1;
    while ((c = getopt(argc, argv, "c:n:h")) != -1) {
        switch (c) {
        case 'c': p->config_path = optarg; break;
        case 'n': p->instance = optarg; break;
        default:
            proc_usage(argv0, kind);
            return SB_ERROR;
        }
    }
    if (optind < argc) {
        proc_usage(argv0, kind);
        return SB_ERROR;
    }
    if (p->config_path && !*p->config_path)
        p->config_path = NULL;
    if (!p->instance || !*p->instance)
        p->instance = kind;

    /* Log with the instance name before the config is read, so a bad file
     * is reported in the usual format. */
    sb_log_init(p->instance, SB_LOG_INFO);
    if (sb_config_load(p->config_path, kind, p->instance) != SB_OK) {
        fprintf(stderr, "%s: cannot load config %s\n", argv0,
                p->config_path ? p->config_path : "(none)");
        return SB_ERROR;
    }
    sb_log_init(p->instance, sb_log_level_parse(sb_config_str("log_level", "info")));

    signal(SIGPIPE, SIG_IGN);
    p->loop = ev_default_loop(EVFLAG_AUTO);
    if (!p->loop) {
        log_error("loop_init_failed", "kind=%s", kind);
        return SB_ERROR;
    }
    log_info("start", "kind=%s pid=%d config=%s", kind, (int)getpid(),
             p->config_path ? p->config_path : "-");
    /* Metrics are served from the start; a port in use is only logged
     * (metrics_listen_failed): the process's real job comes first. */
    sb_metrics_start(p->loop);
    return SB_OK;
}

static void proc_on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct sb_proc *p = w->data;
    log_info("signal", "sig=%s action=stop", w->signum == SIGTERM ? "TERM" : "INT");
    if (p->on_stop)
        p->on_stop(p, p->ud);
    else
        ev_break(loop, EVBREAK_ALL);
}

/* SIGHUP: read the file again, apply the log level here (every process),
 * then let the process apply what else it can (on_reload). A file that
 * cannot be read leaves everything as it was. */
static void proc_on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct sb_proc *p = w->data;
    log_info("signal", "sig=HUP action=reload");
    if (sb_config_reload() != SB_OK) {
        log_error("reload_failed", "config=%s note=\"kept the configuration in force\"",
                  p->config_path ? p->config_path : "-");
        return;
    }
    sb_log_level old = sb_log_level_get();
    sb_log_level lvl = sb_log_level_parse(sb_config_str("log_level", "info"));
    sb_log_set_level(lvl);
    if (lvl != old)
        log_info("reload", "what=log_level from=%s to=%s", sb_log_level_name(old),
                 sb_log_level_name(lvl));
    if (p->on_reload)
        p->on_reload(p, p->ud);
    log_info("reload", "what=done config=%s", p->config_path ? p->config_path : "-");
}

void sb_proc_signals(struct sb_proc *p)
{
    ev_signal_init(&p->sig_term, proc_on_stop_signal, SIGTERM);
    ev_signal_init(&p->sig_int, proc_on_stop_signal, SIGINT);
    ev_signal_init(&p->sig_hup, proc_on_hup, SIGHUP);
    p->sig_term.data = p->sig_int.data = p->sig_hup.data = p;
    ev_signal_start(p->loop, &p->sig_term);
    ev_signal_start(p->loop, &p->sig_int);
    ev_signal_start(p->loop, &p->sig_hup);
}

/* ---- the run of a front-end --------------------------------------------- */

static const struct sb_proc_daemon *proc_d;
static ev_timer proc_grace;
static int proc_stopping;

static void proc_grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    log_warn("shutdown_grace_over", "grace=%g", proc_d->grace);
    ev_break(loop, EVBREAK_ALL);
}

static void proc_run_stop(struct sb_proc *p, void *ud)
{
    if (proc_stopping) {
        ev_break(p->loop, EVBREAK_ALL);   /* second signal: now */
        return;
    }
    proc_stopping = 1;
    if (!proc_d->stop()) {
        ev_break(p->loop, EVBREAK_ALL);
        return;
    }
    ev_timer_init(&proc_grace, proc_grace_cb, proc_d->grace, 0.);
    ev_timer_start(p->loop, &proc_grace);
}

int sb_proc_run(struct sb_proc *p, const struct sb_proc_daemon *d)
{
    proc_d = d;
    if (d->configure() != SB_OK) {
        sb_config_free();
        return 1;
    }
    int rc = 1;
    if (d->open() == SB_OK) {
        p->on_stop = proc_run_stop;
        sb_proc_signals(p);
        d->started();
        ev_run(p->loop, 0);
        rc = p->failed;
    }
    ev_timer_stop(p->loop, &proc_grace);
    d->cleanup();
    if (p->pg)
        pgev_free(p->pg);             /* its last callbacks may still use the link */
    if (p->link)
        link_free(p->link);
    sb_curve_free(p->curve);    /* after the link's sockets are closed */
    p->curve = NULL;
    p->link = NULL;
    p->pg = NULL;
    sb_metrics_stop();
    log_info("stopped", "rc=%d", rc);
    sb_config_free();
    return rc;
}

struct pgev *sb_proc_pg(struct sb_proc *p)
{
    return p->pg = pgev_new(p->loop, sb_config_str("postgres", "dbname=switchboard"));
}

/* Lease and start-up news from the link. */
static void proc_on_link_state(struct link *l, enum link_state st, void *ud)
{
    struct sb_proc *p = ud;
    if (st == LINK_NO_ROUTER) {
        log_error("start_failed", "why=no-router routers=%s",
                  sb_log_q(sb_config_routers()));
        p->failed = 1;
        ev_break(p->loop, EVBREAK_ALL);
    } else if (st == LINK_LEASE_LOST && proc_d && proc_d->lease_lost) {
        proc_d->lease_lost();
    } else if (st == LINK_LEASE_HELD && proc_d && proc_d->lease_held) {
        proc_d->lease_held();
    }
}

const char *sb_proc_routers(void)
{
    return sb_config_str("routers", sb_config_str("router", "tcp://127.0.0.1:15555"));
}

struct link *sb_proc_link(struct sb_proc *p, link_recv_cb cb, void *ud)
{
    if (sb_curve_load(&p->curve, p->instance) != SB_OK)
        return NULL;
    struct link_opts lo = {
        .curve = p->curve,
        .endpoint = sb_config_routers(),
        .router_wait = atof(sb_config_str("router_wait", "10")),
        .instance = p->instance,
        .kind = p->kind,
        .domains = "",
        .heartbeat = atof(sb_config_str("heartbeat", "1")),
        .batch_window = sb_config_int("batch_window_us", 1000) / 1e6,
    };
    p->link = link_new(p->loop, &lo, cb, ud);
    if (p->link)
        link_set_on_state(p->link, proc_on_link_state, p);
    return p->link;
}
