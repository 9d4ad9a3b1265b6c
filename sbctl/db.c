/* db.c — sbctl's PostgreSQL connection and `db migrate`: numbered SQL
 * files applied in order, each in its own transaction, recorded in
 * schema_migrations so a second run does nothing. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "pgev.h"
#include "sbctl.h"

/* Serialises concurrent `db migrate` runs (any constant works). */
#define SBCTL_MIGRATE_LOCK 7253104

const char *sbctl_pg_msg(const PGconn *c, const PGresult *r)
{
    static char line[512];
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
    size_t n = strcspn(m, "\n");

    if (n >= sizeof(line))
        n = sizeof(line) - 1;
    memcpy(line, m, n);
    line[n] = '\0';
    if (strncmp(line, "ERROR:  ", 8) == 0)
        memmove(line, line + 8, strlen(line + 8) + 1);
    return line[0] ? line : "unknown error";
}

PGconn *sbctl_db_connect_quiet(char *err, size_t cap)
{
    const char *ci = sb_config_str("postgres", NULL);
    char secs[24];
    long t = sb_config_int("db_timeout", 3);

    if (!ci || !*ci) {
        snprintf(err, cap, "no PostgreSQL connection string (config key 'postgres' in [cluster])");
        return NULL;
    }
    struct sb_pg_params pp;
    if (sb_pg_params_from_config(&pp, ci) != SB_OK) {
        snprintf(err, cap, "cannot read the PostgreSQL password (postgres_password_file)");
        return NULL;
    }
    /* A database that is down or unreachable must not hang the CLI. */
    snprintf(secs, sizeof secs, "%ld", t < 1 ? 1 : t);
    int n = 0;
    while (n < SB_PG_PARAMS_MAX && pp.kw[n])
        n++;
    if (!strstr(ci, "connect_timeout") && n + 1 < SB_PG_PARAMS_MAX) {
        pp.kw[n] = "connect_timeout";
        pp.val[n] = secs;
        pp.kw[n + 1] = pp.val[n + 1] = NULL;
    }
    PGconn *c = PQconnectdbParams(pp.kw, pp.val, 1);
    sb_pg_params_wipe(&pp);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, cap, "cannot connect to PostgreSQL (%s): %s", ci, sbctl_pg_msg(c, NULL));
        PQfinish(c);
        return NULL;
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

PGconn *sbctl_db_connect(void)
{
    char err[768];
    PGconn *c = sbctl_db_connect_quiet(err, sizeof err);
    if (!c)
        sbctl_err("%s", err);
    return c;
}

int sbctl_db_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        sbctl_err("database error: %s", sbctl_pg_msg(c, r));
    PQclear(r);
    return ok ? 0 : -1;
}

/* ---- migrations --------------------------------------------------------------- */

struct migration {
    int version;
    char name[256];
};

static int migration_cmp(const void *a, const void *b)
{
    return ((const struct migration *)a)->version - ((const struct migration *)b)->version;
}

/* NNN_name.sql files of dir, sorted; count in *n. NULL after an error. */
static struct migration *migration_list(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct migration *list = NULL;
    size_t cap = 0;

    *n = 0;
    if (!d) {
        sbctl_err("cannot open migrations directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (!isdigit((unsigned char)e->d_name[0]) || len < 5 || len >= 256 ||
            strcmp(e->d_name + len - 4, ".sql") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            struct migration *t = realloc(list, cap * sizeof(*t));
            if (!t) {
                sbctl_err("out of memory");
                free(list);
                closedir(d);
                return NULL;
            }
            list = t;
        }
        list[*n].version = atoi(e->d_name);
        snprintf(list[*n].name, sizeof(list[*n].name), "%s", e->d_name);
        (*n)++;
    }
    closedir(d);
    qsort(list, *n, sizeof(*list), migration_cmp);
    for (size_t i = 1; i < *n; i++)
        if (list[i].version == list[i - 1].version) {
            sbctl_err("two migrations share version %d: %s and %s", list[i].version,
                      list[i - 1].name, list[i].name);
            free(list);
            return NULL;
        }
    if (*n == 0)
        sbctl_err("no migration files (NNN_name.sql) in %s", dir);
    return list;
}

static char *migration_read(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) {
        sbctl_err("cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            char *t = realloc(buf, cap);
            if (!t) {
                free(buf);
                fclose(f);
                sbctl_err("out of memory");
                return NULL;
            }
            buf = t;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
    } while (got > 0);
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static int migration_applied(PGconn *c, int version)
{
    char v[16];
    const char *p[1] = {v};
    snprintf(v, sizeof(v), "%d", version);
    PGresult *r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version=$1", 1, NULL,
                               p, NULL, NULL, 0);
    int yes = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) > 0 : -1;
    if (yes < 0)
        sbctl_err("database error: %s", sbctl_pg_msg(c, r));
    PQclear(r);
    return yes;
}

/* One file in one transaction, with its schema_migrations row. */
static int migration_apply(PGconn *c, const char *dir, const struct migration *m)
{
    char *sql = migration_read(dir, m->name), ins[128];
    if (!sql)
        return -1;
    if (sbctl_db_exec(c, "BEGIN") != 0) {
        free(sql);
        return -1;
    }
    PGresult *r = PQexec(c, sql);
    free(sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        sbctl_err("migration %s failed: %s", m->name, sbctl_pg_msg(c, r));
        PQclear(r);
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    PQclear(r);
    snprintf(ins, sizeof(ins), "INSERT INTO schema_migrations(version) VALUES (%d)", m->version);
    if (sbctl_db_exec(c, ins) != 0 || sbctl_db_exec(c, "COMMIT") != 0) {
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    printf("applied %s\n", m->name);
    return 0;
}

int sbctl_cmd_migrate(int argc, char **argv)
{
    const char *dir = getenv("SB_MIGRATIONS");
    size_t n, applied = 0;
    int rc = SBCTL_FAIL;

    if (argc != 0)
        return SBCTL_USAGE;
    if (!dir || !*dir)
        dir = sb_config_str("migrations", "deploy/migrations");
    struct migration *list = migration_list(dir, &n);
    if (!list || n == 0) {
        free(list);
        return SBCTL_FAIL;
    }
    PGconn *c = sbctl_db_connect();
    if (!c) {
        free(list);
        return SBCTL_FAIL;
    }
    char lock[96];
    snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%d)", SBCTL_MIGRATE_LOCK);
    if (sbctl_db_exec(c, lock) != 0 ||
        sbctl_db_exec(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                         " version integer PRIMARY KEY,"
                         " applied_at timestamptz NOT NULL DEFAULT now())") != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        int done = migration_applied(c, list[i].version);
        if (done < 0)
            goto out;
        if (done)
            continue;
        if (migration_apply(c, dir, &list[i]) != 0)
            goto out;
        applied++;
    }
    if (applied == 0)
        printf("schema up to date (version %d)\n", list[n - 1].version);
    rc = SBCTL_OK;
out:
    PQfinish(c);     /* also releases the advisory lock */
    free(list);
    return rc;
}
