/* stats.c — what the generator measures: a log-linear latency histogram
 * (about 3 % resolution, no allocation per sample) and the CPU seconds and
 * RSS of watched server processes, read from /proc at the edges of a step. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "sbbench.h"

struct sbb_watch sbb_watch[SBB_MAXWATCH];
int sbb_nwatch;

/* ---- histogram (microseconds) -------------------------------------------- */

static int hist_bucket(uint64_t us)
{
    if (us < 64)
        return (int)us;
    int e = 63 - __builtin_clzll(us);          /* ≥ 6 */
    int i = 64 + (e - 6) * 32 + (int)((us >> (e - 5)) & 31);
    return i < SBB_HBUCKETS ? i : SBB_HBUCKETS - 1;
}

static double hist_value(int i)                /* bucket midpoint, µs */
{
    if (i < 64)
        return i + 0.5;
    int e = (i - 64) / 32 + 6, sub = (i - 64) % 32;
    double lo = (double)(1ULL << e) + (double)sub * (double)(1ULL << (e - 5));
    return lo + (double)(1ULL << (e - 5)) / 2;
}

void sbb_hist_add(struct sbb_hist *h, double secs)
{
    if (secs < 0)
        secs = 0;
    h->b[hist_bucket((uint64_t)(secs * 1e6))]++;
    h->n++;
    if (secs > h->max)
        h->max = secs;
}

double sbb_hist_pct(const struct sbb_hist *h, double p)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)((double)h->n * p / 100.0 + 0.999999), acc = 0;
    if (want < 1)
        want = 1;
    for (int i = 0; i < SBB_HBUCKETS; i++) {
        acc += h->b[i];
        if (acc >= want) {
            double v = hist_value(i) / 1e6;
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- /proc ------------------------------------------------------------------ */

static long clk_tck;

/* utime+stime (+ cutime+cstime when with_dead) of pid, seconds; -1 if gone. */
static double proc_cpu(int pid, int with_dead, int *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* fields after ')': state ppid ... utime(14) stime(15) cutime cstime */
    char st;
    int pp;
    unsigned long long ut, stt;
    long long cut, cst;
    if (sscanf(p + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld",
               &st, &pp, &ut, &stt, &cut, &cst) != 6)
        return -1;
    if (ppid)
        *ppid = pp;
    double t = (double)(ut + stt);
    if (with_dead)
        t += (double)(cut + cst);
    return t / (double)clk_tck;
}

static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kb = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* The process and, for NAME:PID+, its live children (PostgreSQL backends). */
static void watch_sample(struct sbb_watch *w, double *cpu, long *rss)
{
    *cpu = proc_cpu(w->pid, w->children, NULL);
    *rss = proc_rss_kb(w->pid);
    if (*cpu < 0)
        *cpu = 0;
    if (!w->children)
        return;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int pid = atoi(e->d_name), pp = 0;
        if (pid <= 0 || pid == w->pid)
            continue;
        double c = proc_cpu(pid, 0, &pp);
        if (c >= 0 && pp == w->pid) {
            *cpu += c;
            *rss += proc_rss_kb(pid);
        }
    }
    if (d)
        closedir(d);
}

int sbb_watch_add(const char *spec)
{
    if (sbb_nwatch >= SBB_MAXWATCH)
        return -1;
    struct sbb_watch *w = &sbb_watch[sbb_nwatch];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(w->name))
        return -1;
    memset(w, 0, sizeof(*w));
    memcpy(w->name, spec, (size_t)(colon - spec));
    w->pid = atoi(colon + 1);
    w->children = strchr(colon, '+') != NULL;
    if (w->pid <= 0)
        return -1;
    sbb_nwatch++;
    return 0;
}

void sbb_watch_begin(void)
{
    if (!clk_tck)
        clk_tck = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < sbb_nwatch; i++)
        watch_sample(&sbb_watch[i], &sbb_watch[i].cpu0, &sbb_watch[i].rss0_kb);
}

void sbb_watch_end(void)
{
    for (int i = 0; i < sbb_nwatch; i++) {
        double c;
        watch_sample(&sbb_watch[i], &c, &sbb_watch[i].rss_kb);
        sbb_watch[i].cpu = c - sbb_watch[i].cpu0;
    }
}

double sbb_self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}
