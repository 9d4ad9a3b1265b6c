/* metrics.c — `sbctl metrics [INSTANCE]`: what an instance's /metrics
 * endpoint serves, fetched from the `metrics = ADDR:PORT` the INI gives it
 * ([KIND.INSTANCE], else [KIND]), printed as it came. Without INSTANCE,
 * every instance section with a `metrics` key, each body after a comment
 * line naming it. The response is read with http_parser (the library
 * sb-bosh uses), not by hand. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <http_parser.h>

#include "buf.h"
#include "config.h"
#include "sbctl.h"

#define METRICS_TIMEOUT 5

static const char *const metrics_kinds[] = {"router", "sm", "c2s", "bosh", "s2s"};

/* The endpoint of INSTANCE: its own section's key, else the key its kind
 * (name without the trailing digits) would read. NULL when none. */
static const char *metrics_endpoint(const char *instance)
{
    char sect[160];
    for (size_t i = 0; i < sizeof metrics_kinds / sizeof *metrics_kinds; i++) {
        snprintf(sect, sizeof sect, "%s.%s", metrics_kinds[i], instance);
        const char *v = sb_config_str_section(sect, "metrics", NULL);
        if (v && *v)
            return v;
    }
    char kind[64];
    size_t n = strlen(instance);
    while (n > 0 && instance[n - 1] >= '0' && instance[n - 1] <= '9')
        n--;
    if (n == 0 || n >= sizeof kind)
        return NULL;
    memcpy(kind, instance, n);
    kind[n] = '\0';
    const char *v = sb_config_str_in(kind, instance, "metrics", "");
    return *v ? v : NULL;
}

static int metrics_connect(const char *spec, char *host, size_t hcap)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || !colon[1])
        return -1;
    size_t hl = (size_t)(colon - spec);
    const char *h = spec;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0) {
        h = "127.0.0.1";
        hl = strlen(h);
    }
    if (hl >= hcap)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    struct timeval tv = {METRICS_TIMEOUT, 0};
    if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
                    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
                    connect(fd, res->ai_addr, res->ai_addrlen) < 0)) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

struct metrics_resp {
    struct sb_buf body;
    int complete;
};

static int metrics_on_body(http_parser *p, const char *at, size_t len)
{
    struct metrics_resp *r = p->data;
    return sb_buf_add(&r->body, at, len) == SB_OK ? 0 : -1;
}

static int metrics_on_done(http_parser *p)
{
    ((struct metrics_resp *)p->data)->complete = 1;
    return 0;
}

/* GET /metrics from spec into r; 0, or -1 after printing why. */
static int metrics_fetch(const char *instance, const char *spec, struct metrics_resp *r)
{
    char host[256], req[512];
    int fd = metrics_connect(spec, host, sizeof host);
    if (fd < 0) {
        sbctl_err("%s: cannot connect to its metrics endpoint %s: %s", instance, spec,
                  errno ? strerror(errno) : "bad address");
        return -1;
    }
    int n = snprintf(req, sizeof req,
                     "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                     "User-Agent: sbctl\r\n\r\n", spec);
    if (write(fd, req, (size_t)n) != n) {
        sbctl_err("%s: cannot send to %s: %s", instance, spec, strerror(errno));
        close(fd);
        return -1;
    }
    http_parser p;
    http_parser_settings s;
    http_parser_init(&p, HTTP_RESPONSE);
    http_parser_settings_init(&s);
    s.on_body = metrics_on_body;
    s.on_message_complete = metrics_on_done;
    p.data = r;
    char buf[16384];
    ssize_t got = 0;
    int bad = 0;
    while (!r->complete && (got = read(fd, buf, sizeof buf)) > 0)
        if (http_parser_execute(&p, &s, buf, (size_t)got) != (size_t)got) {
            bad = 1;
            break;
        }
    if (!r->complete && !bad && got == 0)
        http_parser_execute(&p, &s, NULL, 0);     /* EOF ends a body without length */
    close(fd);
    if (bad || !r->complete) {
        sbctl_err("%s: no complete answer from %s (%s)", instance, spec,
                  bad ? http_errno_description(HTTP_PARSER_ERRNO(&p)) : "timeout or closed");
        return -1;
    }
    if (p.status_code != 200) {
        sbctl_err("%s: %s answered HTTP %u", instance, spec, p.status_code);
        return -1;
    }
    return 0;
}

static int metrics_print(const char *instance, const char *spec, int header)
{
    struct metrics_resp r = {SB_BUF_INIT, 0};
    int rc = metrics_fetch(instance, spec, &r);
    if (rc == 0) {
        if (header)
            printf("# sbctl: instance=%s endpoint=%s\n", instance, spec);
        fwrite(r.body.data ? r.body.data : "", 1, r.body.len, stdout);
    }
    sb_buf_free(&r.body);
    return rc;
}

struct metrics_all {
    int n, failed;
};

static void metrics_one_section(const char *section, const char *value, void *ud)
{
    struct metrics_all *a = ud;
    const char *dot = strchr(section, '.');
    if (!dot || !dot[1] || !*value)
        return;                      /* [c2s] metrics is a default, not an instance */
    a->n++;
    if (metrics_print(dot + 1, value, 1) != 0)
        a->failed++;
}

int sbctl_cmd_metrics(int argc, char **argv)
{
    if (argc > 1)
        return SBCTL_USAGE;
    if (argc == 1) {
        const char *spec = metrics_endpoint(argv[0]);
        if (!spec) {
            sbctl_err("%s: no `metrics` endpoint for it in the config ([KIND.%s] metrics = "
                      "ADDR:PORT)", argv[0], argv[0]);
            return SBCTL_FAIL;
        }
        return metrics_print(argv[0], spec, 0) == 0 ? SBCTL_OK : SBCTL_FAIL;
    }
    struct metrics_all a = {0, 0};
    sb_config_each_key("metrics", metrics_one_section, &a);
    if (a.n == 0) {
        sbctl_err("no instance section of the config has a `metrics` endpoint");
        return SBCTL_FAIL;
    }
    return a.failed ? SBCTL_FAIL : SBCTL_OK;
}
