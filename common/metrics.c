/* metrics.c — the registry, the text exposition format, the process's own
 * metrics (CPU, memory) and the `/metrics` endpoint on libmicrohttpd.
 *
 * Why libmicrohttpd in "external polling" epoll mode: the daemon then has
 * no thread of its own; all its sockets sit in one epoll set whose fd we
 * watch with an ev_io on the process loop, and MHD_run() answers requests
 * from there. So a scrape reads the metric structs in the same thread that
 * updates them — no lock, no snapshot — and a slow scraper only ever waits
 * on MHD's non-blocking sockets, never blocks the loop. The listen socket
 * is ours (bound here, handed over with MHD_OPTION_LISTEN_SOCKET) so a port
 * in use is one log line with the reason. */
#include "metrics.h"
#include "buf.h"
#include "config.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

const double sb_metric_bounds[SB_METRIC_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
};

static struct sb_metric *metrics_head, *metrics_tail;

/* Appended, so families come out in the order their first series was
 * defined (within a file: top to bottom). */
void sb_metric_register(struct sb_metric *m)
{
    m->next = NULL;
    if (metrics_tail)
        metrics_tail->next = m;
    else
        metrics_head = m;
    metrics_tail = m;
}

void sb_metric_observe(struct sb_metric *m, double v)
{
    int i = 0;
    while (i < SB_METRIC_BUCKETS && v > sb_metric_bounds[i])
        i++;
    if (i < SB_METRIC_BUCKETS)
        m->buckets[i]++;
    m->count++;
    m->value += v;
}

enum sb_stanza_kind sb_stanza_kind_of(const char *name)
{
    if (!name)
        return SB_ST_OTHER;
    if (strcmp(name, "message") == 0)
        return SB_ST_MESSAGE;
    if (strcmp(name, "presence") == 0)
        return SB_ST_PRESENCE;
    if (strcmp(name, "iq") == 0)
        return SB_ST_IQ;
    return SB_ST_OTHER;
}

enum sb_stanza_kind sb_stanza_kind_of_xml(const char *xml, size_t len)
{
    static const struct { const char *tag; size_t n; enum sb_stanza_kind k; } tags[] = {
        {"<message", 8, SB_ST_MESSAGE}, {"<presence", 9, SB_ST_PRESENCE}, {"<iq", 3, SB_ST_IQ},
    };
    for (size_t i = 0; i < SB_ARRAY_LEN(tags); i++)
        if (len > tags[i].n && memcmp(xml, tags[i].tag, tags[i].n) == 0) {
            char c = xml[tags[i].n];
            if (c == ' ' || c == '>' || c == '/' || c == '\t' || c == '\n' || c == '\r')
                return tags[i].k;
        }
    return SB_ST_OTHER;
}

/* ---- the process itself -------------------------------------------------- */

static double metrics_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double metrics_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%ld %ld", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : 0;
}

static double metrics_started_at;
static double metrics_start_time(void)
{
    return metrics_started_at;
}

__attribute__((constructor)) static void metrics_note_start(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    metrics_started_at = (double)tv.tv_sec + tv.tv_usec / 1e6;
}

SB_COUNTER_FN(m_cpu, "sb_process_cpu_seconds_total", "",
              "User and system CPU time of the process (getrusage)", metrics_cpu_seconds)
SB_GAUGE_FN(m_rss, "sb_process_resident_memory_bytes", "",
            "Resident set size of the process (/proc/self/statm)", metrics_rss_bytes)
SB_GAUGE_FN(m_start, "sb_process_start_time_seconds", "",
            "When the process started, seconds since the epoch", metrics_start_time)
SB_COUNTER(m_scrapes, "sb_metrics_scrapes_total", "", "Requests for /metrics answered")

/* ---- the text format ----------------------------------------------------- */

static const char *metrics_type_name(enum sb_metric_type t)
{
    switch (t) {
    case SB_METRIC_COUNTER: return "counter";
    case SB_METRIC_GAUGE: return "gauge";
    case SB_METRIC_HISTOGRAM: return "histogram";
    }
    return "untyped";
}

/* 15 significant digits: exact for counts, short for seconds. */
static sb_rc metrics_value(struct sb_buf *b, double v)
{
    if (isnan(v))
        return sb_buf_adds(b, "NaN");
    if (isinf(v))
        return sb_buf_adds(b, v > 0 ? "+Inf" : "-Inf");
    return sb_buf_printf(b, "%.15g", v);
}

/* name{labels[,extra]} value */
static sb_rc metrics_sample(struct sb_buf *b, const char *name, const char *suffix,
                            const char *labels, const char *extra, double v)
{
    sb_buf_printf(b, "%s%s", name, suffix);
    int has = labels && *labels, ext = extra && *extra;
    if (has || ext)
        sb_buf_printf(b, "{%s%s%s}", has ? labels : "", has && ext ? "," : "",
                      ext ? extra : "");
    sb_buf_adds(b, " ");
    metrics_value(b, v);
    return sb_buf_adds(b, "\n");
}

static void metrics_histogram(struct sb_buf *b, const struct sb_metric *m)
{
    char le[48];
    uint64_t cum = 0;
    for (int i = 0; i < SB_METRIC_BUCKETS; i++) {
        cum += m->buckets[i];
        snprintf(le, sizeof le, "le=\"%g\"", sb_metric_bounds[i]);
        metrics_sample(b, m->name, "_bucket", m->labels, le, (double)cum);
    }
    metrics_sample(b, m->name, "_bucket", m->labels, "le=\"+Inf\"", (double)m->count);
    metrics_sample(b, m->name, "_sum", m->labels, NULL, m->value);
    metrics_sample(b, m->name, "_count", m->labels, NULL, (double)m->count);
}

static int metrics_seen_before(const struct sb_metric *m)
{
    for (const struct sb_metric *p = metrics_head; p != m; p = p->next)
        if (strcmp(p->name, m->name) == 0)
            return 1;
    return 0;
}

sb_rc sb_metrics_render(struct sb_buf *out)
{
    for (const struct sb_metric *f = metrics_head; f; f = f->next) {
        if (metrics_seen_before(f))
            continue;               /* its family was written with the first */
        sb_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                      metrics_type_name(f->type));
        for (const struct sb_metric *m = f; m; m = m->next) {
            if (strcmp(m->name, f->name) != 0)
                continue;
            if (m->type == SB_METRIC_HISTOGRAM)
                metrics_histogram(out, m);
            else
                metrics_sample(out, m->name, "", m->labels, NULL, m->read ? m->read() : m->value);
        }
    }
    return out->data ? SB_OK : SB_ERROR;
}

/* ---- the endpoint ---------------------------------------------------------- */

static struct {
    struct ev_loop *loop;
    struct MHD_Daemon *d;
    ev_io io;                 /* MHD's epoll fd */
    ev_timer tm;              /* MHD_get_timeout: idle connections, pending work */
    int port;
    struct sb_buf body;
} mx;

static enum MHD_Result metrics_answer(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload, size_t *upload_len, void **ctx)
{
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int found = strcmp(url, "/metrics") == 0;
    unsigned status = MHD_HTTP_OK;
    sb_buf_reset(&mx.body);
    if (!found) {
        status = MHD_HTTP_NOT_FOUND;
        sb_buf_adds(&mx.body, "only /metrics here\n");
    } else if (!get) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        sb_buf_adds(&mx.body, "GET only\n");
    } else {
        sb_metric_inc(&m_scrapes);
        if (sb_metrics_render(&mx.body) != SB_OK)
            return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(
        mx.body.len, mx.body.data ? mx.body.data : (char *)"", MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            status == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8"
                                                  : "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* After every MHD_run: wake again when MHD has something due (0 = at once:
 * data already read into its buffers; none = only on socket activity). */
static void metrics_rearm(void)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    ev_timer_stop(mx.loop, &mx.tm);
    if (MHD_get_timeout(mx.d, &ms) == MHD_YES) {
        ev_timer_set(&mx.tm, (double)ms / 1000.0, 0.);
        ev_timer_start(mx.loop, &mx.tm);
    }
}

static void metrics_run(void)
{
    MHD_run(mx.d);
    metrics_rearm();
}

static void metrics_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    metrics_run();
}

static void metrics_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    metrics_run();
}

/* "127.0.0.1:9100", "[::1]:9100", ":9100" (loopback). */
static sb_rc metrics_parse_addr(const char *spec, char *host, size_t cap, char *port, size_t pcap)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || !colon[1] || strlen(colon + 1) >= pcap)
        return SB_ERROR;
    const char *h = spec;
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0) {
        h = "127.0.0.1";
        hl = strlen(h);
    }
    if (hl >= cap)
        return SB_ERROR;
    memcpy(host, h, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return SB_OK;
}

static int metrics_bind(const char *spec)
{
    char host[256], port[16];
    if (metrics_parse_addr(spec, host, sizeof host, port, sizeof port) != SB_OK) {
        log_error("metrics_listen_failed", "addr=%s error=\"want ADDR:PORT\"", sb_log_q(spec));
        return -1;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        log_error("metrics_listen_failed", "addr=%s error=%s", sb_log_q(spec),
                  sb_log_q(gai_strerror(gai)));
        return -1;
    }
    int one = 1;
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        log_error("metrics_listen_failed", "addr=%s error=%s note=\"serving XMPP without metrics\"",
                  sb_log_q(spec), sb_log_q(strerror(errno)));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int metrics_bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

sb_rc sb_metrics_start(struct ev_loop *loop)
{
    const char *spec = sb_config_str("metrics", "");
    if (!*spec)
        return SB_DONE;
    if (mx.d)
        return SB_OK;
    int fd = metrics_bind(spec);
    if (fd < 0)
        return SB_ERROR;
    mx.loop = loop;
    mx.d = MHD_start_daemon(MHD_USE_EPOLL, 0, NULL, NULL, metrics_answer, NULL,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_END);
    const union MHD_DaemonInfo *info =
        mx.d ? MHD_get_daemon_info(mx.d, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!info) {
        log_error("metrics_listen_failed", "addr=%s error=\"libmicrohttpd did not start\"",
                  sb_log_q(spec));
        if (mx.d)
            MHD_stop_daemon(mx.d);
        mx.d = NULL;
        close(fd);
        return SB_ERROR;
    }
    mx.port = metrics_bound_port(fd);
    ev_io_init(&mx.io, metrics_io_cb, info->epoll_fd, EV_READ);
    ev_init(&mx.tm, metrics_timer_cb);
    ev_io_start(loop, &mx.io);
    log_info("metrics_listen", "addr=%s port=%d path=/metrics", sb_log_q(spec), mx.port);
    return SB_OK;
}

void sb_metrics_stop(void)
{
    if (!mx.d)
        return;
    ev_io_stop(mx.loop, &mx.io);
    ev_timer_stop(mx.loop, &mx.tm);
    MHD_stop_daemon(mx.d);    /* closes the listen socket it was given */
    mx.d = NULL;
    mx.port = 0;
    sb_buf_free(&mx.body);
}

int sb_metrics_port(void)
{
    return mx.port;
}
