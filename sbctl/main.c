/* main.c — sbctl: the Switchboard admin CLI.
 *   sbctl [-c FILE] COMMAND … [--json]
 * The configuration (section [sbctl], then [cluster]) is -c FILE, else
 * $SB_CONFIG, else ./var/switchboard.ini, else
 * /etc/switchboard/switchboard.ini. Exit codes: 0 ok, 1 failure or not
 * found, 2 usage (unknown command or option, on stderr). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "sbctl.h"

#define SBCTL_CONFIG_LOCAL "./var/switchboard.ini"
#define SBCTL_CONFIG_SYSTEM "/etc/switchboard/switchboard.ini"

struct sbctl_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    int config_optional;           /* runs with defaults when no file is found */
    const char *usage;
};

static int cmd_help(int argc, char **argv);

static const struct sbctl_cmd sbctl_cmds[] = {
    {"status", sbctl_cmd_status, 0,
     "  status                                  every instance (kind, address, pid, uptime, lease,\n"
     "                                          sessions, stanza rates), the routers, Redis and\n"
     "                                          PostgreSQL; problems last; exit 1 when unhealthy\n"},
    {"session", sbctl_cmd_session, 0,
     "  session list [USER@DOMAIN | --instance NAME]  live sessions (all, a user's, a front-end's)\n"
     "  session kick FULLJID [--reason TEXT]    end one session (stream error policy-violation)\n"},
    {"user", sbctl_cmd_user, 0,
     "  user add USER@DOMAIN [PASSWORD]         create an account (password from stdin if omitted)\n"
     "  user del USER@DOMAIN                    end its sessions, delete the account and its data\n"
     "  user passwd USER@DOMAIN [PASSWORD]      set a new password\n"
     "  user list DOMAIN                        list accounts of a domain\n"
     "  user bulk-add DOMAIN PREFIX N PASSPREFIX  PREFIX1..N with PASSPREFIX1..N\n"},
    {"token", sbctl_cmd_token, 0,
     "  token issue USER@DOMAIN [--ttl S] [--scope S]  a login token for X-OAUTH2/OAUTHBEARER,\n"
     "                                          printed once (ttl 3600 s, 0 never; scope xmpp)\n"
     "  token list USER@DOMAIN                  its tokens: id, created, expires, last used, scope\n"
     "  token revoke ID|--all USER@DOMAIN       delete the token(s), end the sessions that used them\n"},
    {"invite", sbctl_cmd_invite, 0,
     "  invite create DOMAIN [--ttl S]          a one-use XEP-0077 registration invitation,\n"
     "                                          printed once (ttl 7 days, 0 never)\n"},
    {"domain", sbctl_cmd_domain, 0,
     "  domain add NAME [--anonymous]           serve a domain (every process within a second)\n"
     "  domain del NAME [--force]               stop serving it, end its sessions (--force: even\n"
     "                                          with accounts, which are deleted with their data)\n"
     "  domain list                             domains, whether anonymous, accounts\n"},
    {"archive", sbctl_cmd_archive, 0,
     "  archive purge USER@DOMAIN [--before DATE]  delete a user's archived messages (all, or\n"
     "                                          older than DATE, e.g. 2024-01-31T00:00:00Z)\n"
     "  archive purge --domain D --older-than DAYS  a domain's archived messages older than DAYS\n"},
    {"room", sbctl_cmd_room, 0,
     "  room list [DOMAIN]                      MUC rooms (of DOMAIN's service, or all): name,\n"
     "                                          persistent, public, members-only, archiving, occupants\n"
     "  room info ROOM@SERVICE                  its configuration, affiliations, reserved nicks,\n"
     "                                          occupants, archived messages\n"
     "  room destroy ROOM@SERVICE [--reason TEXT]  destroy it as its owner would (occupants are\n"
     "                                          told); needs a live sb-muc\n"},
    {"upload", sbctl_cmd_upload, 0,
     "  upload purge [--older-than DAYS]        delete uploaded files (XEP-0363) older than DAYS\n"
     "                                          (default [upload] expire_days), free their quota\n"},
    {"drain", sbctl_cmd_drain, 0,
     "  drain INSTANCE [--timeout S] [--no-wait]  a c2s or bosh instance sends its clients to\n"
     "                                          another front-end and exits; waits until it left\n"},
    {"db", sbctl_cmd_migrate, 0,
     "  db migrate                              apply new deploy/migrations/*.sql\n"},
    {"keys", sbctl_cmd_keys, 1,
     "  keys generate [--dir DIR] NAME...       bus CURVE keys: server.key, NAME.key\n"
     "                                          (kept if present), members.pub\n"},
    {"metrics", sbctl_cmd_metrics, 0,
     "  metrics [INSTANCE]                      what the instance's /metrics serves (all without one)\n"},
    {"help", cmd_help, 1,
     "  help [COMMAND]                          this list, or one command's\n"},
};

static void sbctl_usage(FILE *f)
{
    fprintf(f, "usage: sbctl [-c CONFIG] COMMAND ... [--json]\n");
    for (size_t i = 0; i < SB_ARRAY_LEN(sbctl_cmds); i++)
        fputs(sbctl_cmds[i].usage, f);
    fprintf(f, "options: --json (every command: JSON on stdout for scripts), --help\n"
               "config: -c FILE, else $SB_CONFIG, else " SBCTL_CONFIG_LOCAL ", else "
               SBCTL_CONFIG_SYSTEM "\n"
               "exit codes: 0 ok, 1 failure or not found, 2 usage\n");
}

static const struct sbctl_cmd *sbctl_find(const char *name)
{
    for (size_t i = 0; i < SB_ARRAY_LEN(sbctl_cmds); i++)
        if (!strcmp(sbctl_cmds[i].name, name))
            return &sbctl_cmds[i];
    return NULL;
}

static void sbctl_cmd_usage(const struct sbctl_cmd *c, FILE *f)
{
    fprintf(f, "usage: sbctl [-c CONFIG] %s ... [--json]\n%s", c->name, c->usage);
}

static int cmd_help(int argc, char **argv)
{
    const struct sbctl_cmd *c = argc == 1 ? sbctl_find(argv[0]) : NULL;
    if (argc > 1 || (argc == 1 && !c))
        return SBCTL_USAGE;
    if (c)
        sbctl_cmd_usage(c, stdout);
    else
        sbctl_usage(stdout);
    return SBCTL_OK;
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

/* The file to read (see the top), or NULL: none found (optional), or an
 * error was printed (*fail set). */
static const char *sbctl_config_path(const char *given, const char *how, int optional, int *fail)
{
    *fail = 0;
    if (given) {
        if (access(given, R_OK) == 0)
            return given;
        sbctl_err("cannot read config file %s (%s): %s", given, how, strerror(errno));
        *fail = 1;
        return NULL;
    }
    static const char *const defaults[] = {SBCTL_CONFIG_LOCAL, SBCTL_CONFIG_SYSTEM};
    int err[2];
    for (int i = 0; i < 2; i++) {
        if (access(defaults[i], R_OK) == 0)
            return defaults[i];
        err[i] = errno;
    }
    if (!optional) {
        sbctl_err("no config file: %s: %s; %s: %s (give one with -c FILE or $SB_CONFIG)",
                  defaults[0], strerror(err[0]), defaults[1], strerror(err[1]));
        *fail = 1;
    }
    return NULL;
}

/* Take --json and --help out of argv (every command has them). */
static int sbctl_common_opts(int argc, char **argv, int *help)
{
    int n = 0;
    *help = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            sbctl_json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            *help = 1;
        else
            argv[n++] = argv[i];
    }
    argv[n] = NULL;
    return n;
}

int main(int argc, char **argv)
{
    const char *cfg = NULL, *how = "-c";
    int c, help, fail;

    sb_log_init("sbctl", SB_LOG_WARN);
    while ((c = getopt(argc, argv, "+c:h")) != -1) {
        switch (c) {
        case 'c':
            cfg = optarg;
            break;
        case 'h':
            sbctl_usage(stdout);
            return SBCTL_OK;
        default:
            sbctl_usage(stderr);
            return SBCTL_USAGE;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        sbctl_usage(stderr);
        return SBCTL_USAGE;
    }
    const struct sbctl_cmd *cmd = sbctl_find(argv[0]);
    if (!cmd) {
        sbctl_err("unknown command '%s'", argv[0]);
        sbctl_usage(stderr);
        return SBCTL_USAGE;
    }
    argc = sbctl_common_opts(argc - 1, argv + 1, &help);
    argv++;
    if (help) {
        sbctl_cmd_usage(cmd, stdout);
        return SBCTL_OK;
    }
    if (!cfg && getenv("SB_CONFIG") && *getenv("SB_CONFIG")) {
        cfg = getenv("SB_CONFIG");
        how = "$SB_CONFIG";
    }
    cfg = sbctl_config_path(cfg, how, cmd->config_optional, &fail);
    if (fail)
        return SBCTL_FAIL;
    if (sb_config_load(cfg, "sbctl", NULL) != SB_OK) {
        sbctl_err("cannot parse config file %s", cfg);
        return SBCTL_FAIL;
    }
    sb_log_init("sbctl", sb_log_level_parse(sb_config_str("log_level", "warn")) > SB_LOG_WARN
                             ? SB_LOG_ERROR : SB_LOG_WARN);

    int rc;
    if (!strcmp(cmd->name, "db"))
        rc = argc >= 1 && !strcmp(argv[0], "migrate") ? cmd->run(argc - 1, argv + 1) : SBCTL_USAGE;
    else
        rc = cmd->run(argc, argv);
    if (rc == SBCTL_USAGE)
        sbctl_cmd_usage(cmd, stderr);
    fflush(stdout);
    sb_config_free();
    return rc;
}
