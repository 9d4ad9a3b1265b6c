/* keys.c — `sbctl keys generate [--dir DIR] NAME…`: the bus CURVE keys
 * (common/curve.c). Makes DIR/server.key (+ server.pub) and DIR/NAME.key
 * for each NAME that has none, then rewrites DIR/members.pub from every
 * NAME.key there. Existing keys are kept, so it is safe to run again, and
 * running it for a new name adds that member; deleting DIR/NAME.key and
 * running it without names revokes one. DIR defaults to curve_dir. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "curve.h"
#include "sbctl.h"

static void keys_report(const char *dir, const char *file, sb_rc rc)
{
    printf("%s %s/%s\n", rc == SB_OK ? "created" : "kept   ", dir, file);
}

static int keys_generate(int argc, char **argv)
{
    const char *dir = sb_config_str("curve_dir", "var/keys");
    int i = 0;
    if (i < argc && !strcmp(argv[i], "--dir")) {
        if (i + 1 >= argc)
            return SBCTL_USAGE;
        dir = argv[i + 1];
        i += 2;
    } else if (i < argc && !strncmp(argv[i], "--dir=", 6)) {
        dir = argv[i++] + 6;
    }
    if (!*dir)
        return SBCTL_USAGE;     /* no NAME: just members.pub again (after a removal) */
    for (int j = i; j < argc; j++)
        if (!sb_curve_name_ok(argv[j])) {
            sbctl_err("bad member name '%s' ([A-Za-z0-9_.-], not server/members)", argv[j]);
            return SBCTL_FAIL;
        }
    sb_rc rc = sb_curve_gen_server(dir);
    if (rc == SB_ERROR) {
        sbctl_err("cannot write the server key in %s", dir);
        return SBCTL_FAIL;
    }
    keys_report(dir, "server.key", rc);
    for (; i < argc; i++) {
        char file[80];
        if ((rc = sb_curve_gen_member(dir, argv[i])) == SB_ERROR) {
            sbctl_err("cannot write the key of %s in %s", argv[i], dir);
            return SBCTL_FAIL;
        }
        snprintf(file, sizeof file, "%s.key", argv[i]);
        keys_report(dir, file, rc);
    }
    size_t n = 0;
    if (sb_curve_write_members(dir, &n) != SB_OK) {
        sbctl_err("cannot write %s/members.pub", dir);
        return SBCTL_FAIL;
    }
    printf("wrote   %s/members.pub (%zu members)\n", dir, n);
    return SBCTL_OK;
}

int sbctl_cmd_keys(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "generate"))
        return keys_generate(argc - 1, argv + 1);
    return SBCTL_USAGE;
}
