/* proc.h — what every Switchboard daemon does at start: read
 * `-c FILE -n INSTANCE` (or SB_CONFIG / SB_INSTANCE), load the config for
 * its kind and instance, start logging, create the libev loop, and turn
 * SIGTERM/SIGINT into a stop callback (SIGHUP into a reload callback).
 * SIGPIPE is ignored. */
#ifndef SB_PROC_H
#define SB_PROC_H

#include <ev.h>
#include "sb.h"

struct sb_proc;
typedef void (*sb_proc_cb)(struct sb_proc *p, void *ud);

struct sb_proc {
    struct ev_loop *loop;
    const char *kind;         /* "c2s", "sm", "router", … */
    const char *instance;     /* e.g. "c2s1"; defaults to kind */
    const char *config_path;  /* may be NULL */
    sb_proc_cb on_stop, on_reload;
    void *ud;
    ev_signal sig_term, sig_int, sig_hup;
};

/* Parse args, load config, init log. Prints usage and returns SB_ERROR on
 * bad arguments or an unreadable config file. */
sb_rc sb_proc_init(struct sb_proc *p, int argc, char **argv, const char *kind);
/* Install the signal watchers (call after setting on_stop/on_reload/ud). */
void sb_proc_signals(struct sb_proc *p);

#endif
