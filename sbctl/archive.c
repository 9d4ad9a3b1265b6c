/* archive.c — `sbctl archive purge`: delete message archive rows
 * (deploy/migrations/005_archive.sql, sm/mod_mam.c) of one account, all or
 * before a date, or of a whole domain older than N days. The sm keeps no
 * cache of archive rows, so nothing needs telling: the next query sees the
 * rows gone. Large purges run in batches of 10000 rows, each its own
 * statement, so the table is never locked for long. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "sbctl.h"

#define PURGE_BATCH "10000"

/* Delete in batches until a batch comes back short; the total in *n. */
static int purge_loop(PGconn *c, const char *where, int np, const char *const *p, long long *n)
{
    char sql[512];
    snprintf(sql, sizeof sql, "DELETE FROM archive WHERE id IN (SELECT id FROM archive"
             " WHERE %s LIMIT " PURGE_BATCH ")", where);
    *n = 0;
    for (;;) {
        PGresult *r = PQexecParams(c, sql, np, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            sbctl_err("cannot purge the archive: %s", sbctl_pg_msg(c, r));
            PQclear(r);
            return -1;
        }
        long long k = atoll(PQcmdTuples(r));
        PQclear(r);
        *n += k;
        if (k < atoll(PURGE_BATCH))
            return 0;
    }
}

static void purge_report(const char *what, const char *name, long long n)
{
    if (sbctl_json) {
        sj_obj(NULL);
        sj_str(what, name);
        sj_int("deleted", n);
        sj_end_obj();
    } else {
        printf("archive %s %s: %lld deleted\n", what, name, n);
    }
}

static int purge_user(PGconn *c, const char *who, const char *before)
{
    struct jid j;
    if (jid_parse(&j, who) != SB_OK || !*j.node || *j.resource) {
        sbctl_err("not a USER@DOMAIN: %s", who);
        return SBCTL_USAGE;
    }
    char bare[JID_BARE_MAX + 1];
    jid_bare(&j, bare);
    const char *p[3] = {j.domain, j.node, before};
    long long n;
    if (purge_loop(c, before ? "domain = $1 AND username = $2 AND ts < $3::timestamptz"
                             : "domain = $1 AND username = $2", before ? 3 : 2, p, &n) != 0)
        return SBCTL_FAIL;
    purge_report("user", bare, n);
    return SBCTL_OK;
}

static int purge_domain(PGconn *c, const char *domain, const char *days)
{
    char *end = NULL;
    long d = strtol(days, &end, 10);
    if (!*days || *end || d < 0) {
        sbctl_err("--older-than wants a number of days, not %s", days);
        return SBCTL_USAGE;
    }
    const char *p[2] = {domain, days};
    long long n;
    if (purge_loop(c, "domain = $1 AND ts < now() - make_interval(days => $2::int)", 2, p,
                   &n) != 0)
        return SBCTL_FAIL;
    purge_report("domain", domain, n);
    return SBCTL_OK;
}

int sbctl_cmd_archive(int argc, char **argv)
{
    const char *user = NULL, *before = NULL, *domain = NULL, *older = NULL;
    if (argc < 1 || strcmp(argv[0], "purge"))
        return SBCTL_USAGE;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--before") && i + 1 < argc)
            before = argv[++i];
        else if (!strcmp(argv[i], "--domain") && i + 1 < argc)
            domain = argv[++i];
        else if (!strcmp(argv[i], "--older-than") && i + 1 < argc)
            older = argv[++i];
        else if (argv[i][0] != '-' && !user)
            user = argv[i];
        else
            return SBCTL_USAGE;
    }
    if (!user == !domain || (domain && (!older || before)) || (user && older))
        return SBCTL_USAGE;
    PGconn *c = sbctl_db_connect();
    if (!c)
        return SBCTL_FAIL;
    int rc = user ? purge_user(c, user, before) : purge_domain(c, domain, older);
    PQfinish(c);
    return rc;
}
