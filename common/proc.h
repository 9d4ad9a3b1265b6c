/* proc.h — what every Switchboard daemon does at start: read
 * `-c FILE -n INSTANCE` (or SB_CONFIG / SB_INSTANCE), load the config for
 * its kind and instance, start logging, create the libev loop, and turn
 * SIGTERM/SIGINT into a stop callback (SIGHUP into a reload callback).
 * SIGPIPE is ignored. */
#ifndef SB_PROC_H
#define SB_PROC_H

#include <ev.h>
#include "sb.h"
#include "link.h"

struct pgev;

struct sb_proc;
typedef void (*sb_proc_cb)(struct sb_proc *p, void *ud);

struct sb_proc {
    struct ev_loop *loop;
    const char *kind;         /* "c2s", "sm", "router", … */
    const char *instance;     /* e.g. "c2s1"; defaults to kind */
    const char *config_path;  /* may be NULL */
    sb_proc_cb on_stop, on_reload;
    void *ud;
    struct link *link;        /* sb_proc_link's; freed by sb_proc_run */
    struct pgev *pg;          /* sb_proc_pg's; freed by sb_proc_run */
    struct sb_curve *curve;   /* the bus keys sb_proc_link loaded; freed by sb_proc_run */
    ev_signal sig_term, sig_int, sig_hup;
    int failed;               /* set before breaking the loop: exit 1 */
};

/* Parse args, load config, init log. Prints usage and returns SB_ERROR on
 * bad arguments or an unreadable config file. */
sb_rc sb_proc_init(struct sb_proc *p, int argc, char **argv, const char *kind);
/* Install the signal watchers (call after setting on_stop/on_reload/ud). */
void sb_proc_signals(struct sb_proc *p);

/* A front-end daemon's life after sb_proc_init (sb_proc_run). */
struct sb_proc_daemon {
    sb_rc (*configure)(void);   /* read its settings; SB_ERROR: exit 1 */
    sb_rc (*open)(void);        /* clients, router link, listeners; SB_ERROR: exit 1 */
    void (*started)(void);      /* opened, signals armed: start loading, log "ready" */
    /* First SIGTERM/SIGINT: stop accepting, tell every stream. Returns 1
     * while connections remain (the daemon breaks the loop once they are
     * gone; `grace` seconds bound it), 0 to exit now. A second signal exits. */
    int (*stop)(void);
    void (*cleanup)(void);      /* after the loop or a failed open */
    /* The cluster's lease on this process ran out (link.h): everyone else
     * has ended its sessions, so it closes its clients' streams. */
    void (*lease_lost)(void);
    /* A router confirmed the lease (the first time after start, and again
     * after a lost one): the cluster counts this incarnation alive. */
    void (*lease_held)(void);
    double grace;
};
/* configure → open → started → the loop until stopped → cleanup, then the
 * link and PostgreSQL client (sb_proc_link/pg) are freed; logs "stopped",
 * frees the config. Returns the exit code (0, or 1 on failure).
 * p->on_reload/ud may be set before; on_stop is the daemon's stop. */
int sb_proc_run(struct sb_proc *p, const struct sb_proc_daemon *d);
/* The process's router link from the keys `routers` (comma-separated;
 * `router` is the one-router spelling) and `heartbeat` (domains announced
 * later with link_set_domains), kept in p->link. No router answering
 * within `router_wait` seconds ends the run with exit code 1. NULL on
 * failure. */
struct link *sb_proc_link(struct sb_proc *p, link_recv_cb cb, void *ud);
/* The router endpoints from the config ("a,b,…"). */
const char *sb_proc_routers(void);
/* The process's PostgreSQL client (`postgres`, default dbname=switchboard),
 * kept in p->pg. NULL on failure. */
struct pgev *sb_proc_pg(struct sb_proc *p);

#endif
