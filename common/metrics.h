/* metrics.h — Prometheus metrics of one process: counters, gauges and
 * histograms kept as plain structs, and the `/metrics` endpoint that serves
 * them in the text exposition format (version 0.0.4).
 *
 * A metric series is a `struct sb_metric` defined once, at file scope, by
 * SB_COUNTER / SB_GAUGE / SB_HISTOGRAM (or the *_FN forms, read at scrape
 * time). Its labels are fixed there (`type="message"`); series that share a
 * name form one family (one HELP/TYPE). Every name starts with `sb_`;
 * `instance` is never a label (Prometheus adds it from the target).
 *
 * The definition registers the series before main() (a constructor that
 * only links it into a list: no allocation), so a process exports exactly
 * the metrics of the code it is linked with and nobody has to remember an
 * init call. Updates are one add on the struct: each process is one
 * single-threaded libev loop, and the endpoint runs on that same loop, so
 * there is no lock and no allocation on the hot path.
 *
 * The endpoint: `metrics = ADDR:PORT` in the process's kind or instance
 * section (empty = off). A port that cannot be bound is one log line
 * (`metrics_listen_failed`) and the process goes on without it. */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <ev.h>
#include <stdint.h>
#include "sb.h"

struct sb_buf;

enum sb_metric_type { SB_METRIC_COUNTER, SB_METRIC_GAUGE, SB_METRIC_HISTOGRAM };

/* Histogram upper bounds, in seconds, shared by every histogram (round
 * trips and hops: 100 µs … 5 s); +Inf is the count. */
#define SB_METRIC_BUCKETS 15
extern const double sb_metric_bounds[SB_METRIC_BUCKETS];

struct sb_metric {
    const char *name;            /* sb_…_total for counters */
    const char *labels;          /* `type="message"`, or "" */
    const char *help;
    enum sb_metric_type type;
    double (*read)(void);        /* NULL: `value`; else asked at scrape time */
    double value;                /* counter or gauge; histogram: the sum */
    uint64_t count;              /* histogram: observations */
    uint64_t buckets[SB_METRIC_BUCKETS];   /* histogram: per bucket, not cumulative */
    struct sb_metric *next;      /* the registry (sb_metric_register) */
};

void sb_metric_register(struct sb_metric *m);

#define SB_METRIC_DEFINE(var, typ, nm, lbl, hlp, fn)                            \
    static struct sb_metric var = {.name = nm, .labels = lbl, .help = hlp,             \
                            .type = typ, .read = fn};                           \
    __attribute__((constructor)) static void var##_register(void)              \
    {                                                                           \
        sb_metric_register(&var);                                               \
    }
#define SB_COUNTER(var, name, labels, help) \
    SB_METRIC_DEFINE(var, SB_METRIC_COUNTER, name, labels, help, NULL)
#define SB_GAUGE(var, name, labels, help) \
    SB_METRIC_DEFINE(var, SB_METRIC_GAUGE, name, labels, help, NULL)
#define SB_HISTOGRAM(var, name, labels, help) \
    SB_METRIC_DEFINE(var, SB_METRIC_HISTOGRAM, name, labels, help, NULL)
#define SB_COUNTER_FN(var, name, labels, help, fn) \
    SB_METRIC_DEFINE(var, SB_METRIC_COUNTER, name, labels, help, fn)
#define SB_GAUGE_FN(var, name, labels, help, fn) \
    SB_METRIC_DEFINE(var, SB_METRIC_GAUGE, name, labels, help, fn)

/* Four counters of one family by stanza kind (enum sb_stanza_kind below)
 * and an array `var` indexed by it. */
#define SB_STANZA_COUNTERS(var, nm, hlp)                                        \
    SB_COUNTER(var##_message, nm, "type=\"message\"", hlp)                      \
    SB_COUNTER(var##_presence, nm, "type=\"presence\"", hlp)                    \
    SB_COUNTER(var##_iq, nm, "type=\"iq\"", hlp)                                \
    SB_COUNTER(var##_other, nm, "type=\"other\"", hlp)                          \
    static struct sb_metric *const var[] = {&var##_message, &var##_presence,     \
                                            &var##_iq, &var##_other};

static inline void sb_metric_inc(struct sb_metric *m) { m->value += 1; }
static inline void sb_metric_dec(struct sb_metric *m) { m->value -= 1; }
static inline void sb_metric_add(struct sb_metric *m, double v) { m->value += v; }
static inline void sb_metric_set(struct sb_metric *m, double v) { m->value = v; }
/* One observation of v seconds. */
void sb_metric_observe(struct sb_metric *m, double v);

/* The stanza kinds every process counts by ("message", "presence", "iq",
 * "other"): index 0…3 for a top-level element name (NULL → other). */
enum sb_stanza_kind { SB_ST_MESSAGE, SB_ST_PRESENCE, SB_ST_IQ, SB_ST_OTHER, SB_ST_N };
enum sb_stanza_kind sb_stanza_kind_of(const char *name);
/* The same from serialised XML ("<message …"): no parse. */
enum sb_stanza_kind sb_stanza_kind_of_xml(const char *xml, size_t len);

/* Every registered series in the text format, families in registration
 * order. SB_ERROR on out-of-memory. */
sb_rc sb_metrics_render(struct sb_buf *out);

/* Start the endpoint from the `metrics` key (empty: off, SB_DONE). A bad
 * address or a port in use: logged once, SB_ERROR, the process goes on. */
sb_rc sb_metrics_start(struct ev_loop *loop);
void sb_metrics_stop(void);
/* The port actually bound (0: not serving). */
int sb_metrics_port(void);

#endif
