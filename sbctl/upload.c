/* upload.c — `sbctl upload purge [--older-than DAYS]`: XEP-0363 files older
 * than DAYS (default [upload] expire_days) leave the [upload] dir, and the
 * slots' quota rows as old give their bytes back (the same statement the
 * sm runs every hour, common/upload.h). sb-bosh sweeps the directory by
 * itself too; this is for cron, or for now. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbctl.h"
#include "upload.h"

static int upload_purge(long days)
{
    struct upload_cfg cfg;
    sb_rc rc = upload_cfg_load(&cfg);
    if (rc != SB_OK || !*cfg.dir) {
        sbctl_err("upload is not configured ([upload] url, secret, dir)");
        return SBCTL_FAIL;
    }
    if (days < 0)
        days = cfg.expire_days;
    if (days == 0) {
        sbctl_err("expire_days is 0 (keep forever): give --older-than DAYS");
        return SBCTL_USAGE;
    }
    struct upload_sweep *s = upload_sweep_new(cfg.dir);
    long files = 0;
    int done = 0;
    while (s && !done)
        files += upload_sweep_step(s, (double)days * 86400.0, 10000, &done);
    upload_sweep_free(s);
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    char d[24];
    snprintf(d, sizeof d, "%ld", days);
    const char *p[1] = {d};
    PGresult *r = PQexecParams(c, UPLOAD_PURGE_SQL, 1, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        sbctl_err("cannot purge the upload quota rows: %s", sbctl_pg_msg(c, r));
    long long users = ok ? atoll(PQcmdTuples(r)) : 0;
    PQclear(r);
    PQfinish(c);
    if (!ok)
        return SBCTL_FAIL;
    if (sbctl_json) {
        sj_obj(NULL);
        sj_int("files", files);
        sj_int("users", users);
        sj_int("older_than_days", days);
        sj_end_obj();
    } else {
        printf("upload purge: %ld files older than %ld days deleted, quota given back to %lld users\n",
               files, days, users);
    }
    return SBCTL_OK;
}

int sbctl_cmd_upload(int argc, char **argv)
{
    long days = -1;
    if (argc < 1 || strcmp(argv[0], "purge"))
        return SBCTL_USAGE;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (!strcmp(argv[i], "--older-than") && i + 1 < argc) {
            days = strtol(argv[++i], &end, 10);
            if (!*argv[i] || *end || days < 1)
                return SBCTL_USAGE;
        } else {
            return SBCTL_USAGE;
        }
    }
    return upload_purge(days);
}
