/* main.c — sbctl: the Switchboard admin CLI.
 *   sbctl [-c FILE] <command> …   (config from -c or $SB_CONFIG, section [sbctl])
 * Exit codes: 0 ok, 1 failure, 2 usage. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "sbctl.h"

static void sbctl_usage(void)
{
    fprintf(stderr,
            "usage: sbctl [-c CONFIG] <command>\n"
            "  db migrate                              apply new deploy/migrations/*.sql\n"
            "  domain add NAME [--anonymous]           create a domain\n"
            "  domain list                             list domains\n"
            "  user add USER@DOMAIN [PASSWORD]         create an account (password from stdin if omitted)\n"
            "  user del USER@DOMAIN                    delete an account and its roster\n"
            "  user passwd USER@DOMAIN [PASSWORD]      set a new password\n"
            "  user list DOMAIN                        list accounts of a domain\n"
            "  user bulk-add DOMAIN PREFIX N PASSPREFIX  PREFIX1..N with PASSPREFIX1..N\n"
            "  status                                  live instances, from the router\n"
            "  drain INSTANCE [--timeout S] [--no-wait]  a front-end sends its clients away and exits\n"
            "  metrics [INSTANCE]                      what the instance's /metrics serves (all without one)\n"
            "  keys generate [--dir DIR] NAME...       bus CURVE keys: server.key, NAME.key\n"
            "                                          (kept if present), members.pub\n"
            "config: -c FILE or $SB_CONFIG; keys from [sbctl] then [cluster]\n");
}

void sbctl_err(const char *fmt, ...)
{
    va_list ap;
    fputs("sbctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int main(int argc, char **argv)
{
    const char *cfg = getenv("SB_CONFIG");
    int c;

    sb_log_init("sbctl", SB_LOG_WARN);
    while ((c = getopt(argc, argv, "+c:h")) != -1) {
        switch (c) {
        case 'c':
            cfg = optarg;
            break;
        case 'h':
            sbctl_usage();
            return SBCTL_OK;
        default:
            sbctl_usage();
            return SBCTL_USAGE;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        sbctl_usage();
        return SBCTL_USAGE;
    }
    if (cfg && !*cfg)
        cfg = NULL;
    if (cfg && access(cfg, R_OK) != 0) {
        sbctl_err("cannot read config file %s: %s", cfg, strerror(errno));
        return SBCTL_FAIL;
    }
    if (sb_config_load(cfg, "sbctl", NULL) != SB_OK) {
        sbctl_err("cannot read config file %s", cfg);
        return SBCTL_FAIL;
    }
    sb_log_init("sbctl", sb_log_level_parse(sb_config_str("log_level", "warn")) > SB_LOG_WARN
                             ? SB_LOG_ERROR : SB_LOG_WARN);

    int rc;
    if (strcmp(argv[0], "db") == 0 && argc >= 2 && strcmp(argv[1], "migrate") == 0)
        rc = sbctl_cmd_migrate(argc - 2, argv + 2);
    else if (strcmp(argv[0], "domain") == 0)
        rc = sbctl_cmd_domain(argc - 1, argv + 1);
    else if (strcmp(argv[0], "user") == 0)
        rc = sbctl_cmd_user(argc - 1, argv + 1);
    else if (strcmp(argv[0], "status") == 0)
        rc = sbctl_cmd_status(argc - 1, argv + 1);
    else if (strcmp(argv[0], "keys") == 0)
        rc = sbctl_cmd_keys(argc - 1, argv + 1);
    else if (strcmp(argv[0], "drain") == 0)
        rc = sbctl_cmd_drain(argc - 1, argv + 1);
    else if (strcmp(argv[0], "metrics") == 0)
        rc = sbctl_cmd_metrics(argc - 1, argv + 1);
    else
        rc = SBCTL_USAGE;
    if (rc == SBCTL_USAGE)
        sbctl_usage();
    sb_config_free();
    return rc;
}
