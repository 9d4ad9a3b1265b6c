/* main.c — sb-sm: the session manager daemon (`sb-sm -c FILE -n sm1`).
 * Everything lives in sm_core; this file only starts and stops it. */
#include "sm.h"
#include "config.h"
#include "log.h"
#include "proc.h"
#include "im.h"

static void sm_on_stop(struct sb_proc *p, void *ud)
{
    ev_break(p->loop, EVBREAK_ALL);
}

/* SIGHUP (the log level is done by proc.c): IM limits now; vcard_max_size
 * and blocklist_max are read where used, so they follow the file already. */
static void sm_on_reload(struct sb_proc *p, void *ud)
{
    sm_im_limits_reload();
}

int main(int argc, char **argv)
{
    struct sb_proc p;
    if (sb_proc_init(&p, argc, argv, "sm") != SB_OK)
        return 2;
    struct sm_core *c = sm_core_new(p.loop, p.instance);
    if (!c)
        return 1;
    p.on_stop = sm_on_stop;
    p.on_reload = sm_on_reload;
    p.ud = c;
    sb_proc_signals(&p);
    ev_run(p.loop, 0);
    sm_core_free(c);
    log_info("stop", "kind=sm");
    sb_config_free();
    return 0;
}
