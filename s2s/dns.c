/* dns.c — asynchronous DNS for outgoing streams: c-ares driven by the libev
 * loop (an ev_io per resolver socket from the socket-state callback, one
 * ev_timer from ares_timeout). A domain's SRV records are asked for both
 * services at once, `_xmpps-server._tcp` (direct TLS, XEP-0368) and
 * `_xmpp-server._tcp` (STARTTLS, RFC 6120 §3.2.1), merged and ordered by
 * priority then weight (RFC 2782). With no SRV record at all the caller
 * falls back to the domain's A/AAAA on the default port; a single "."
 * target means the service is deliberately absent. The resolver address
 * may be configured (tests point it at a local dnsmasq). */
#include "s2s.h"
#include "log.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DNS_MAX_TARGETS 32
#define DNS_MAX_ADDRS 16
#define DNS_MAX_FDS 16

static ares_channel dns_ch;
static int dns_ready;
static ev_timer dns_timer;
static struct {
    ev_io w;
    int used;
} dns_fds[DNS_MAX_FDS];

struct s2s_dns_req {
    int cancelled;
    int starting, done;          /* answered inside the start call */
    int pending;                 /* answers still to come */
    s2s_srv_cb srv_cb;
    s2s_addr_cb addr_cb;
    void *ud;
    int port;
    int nt, any_records, absent;
    struct s2s_target t[DNS_MAX_TARGETS];
    int prio[DNS_MAX_TARGETS], weight[DNS_MAX_TARGETS];
    char domain[S2S_DOMAIN_MAX + 1];
};

static void dns_rearm(void);
static struct s2s_dns_req *dns_started(struct s2s_dns_req *r);

static void dns_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    ares_process_fd(dns_ch, (revents & EV_READ) ? w->fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? w->fd : ARES_SOCKET_BAD);
    dns_rearm();
}

static void dns_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    ares_process_fd(dns_ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns_rearm();
}

static void dns_rearm(void)
{
    if (!dns_ready)
        return;
    struct timeval tv, *tp = ares_timeout(dns_ch, NULL, &tv);
    ev_timer_stop(s2s.loop, &dns_timer);
    if (tp) {
        ev_timer_set(&dns_timer, tp->tv_sec + tp->tv_usec / 1e6 + 0.001, 0.);
        ev_timer_start(s2s.loop, &dns_timer);
    }
}

static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    int free_slot = -1;
    for (int i = 0; i < DNS_MAX_FDS; i++) {
        if (dns_fds[i].used && dns_fds[i].w.fd == fd) {
            ev_io_stop(s2s.loop, &dns_fds[i].w);
            if (!readable && !writable) {
                dns_fds[i].used = 0;
                return;
            }
            ev_io_set(&dns_fds[i].w, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
            ev_io_start(s2s.loop, &dns_fds[i].w);
            return;
        }
        if (!dns_fds[i].used && free_slot < 0)
            free_slot = i;
    }
    if (!readable && !writable)
        return;
    if (free_slot < 0) {
        log_error("dns_too_many_sockets", "fd=%d", (int)fd);
        return;
    }
    dns_fds[free_slot].used = 1;
    ev_io_init(&dns_fds[free_slot].w, dns_io_cb, fd,
               (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(s2s.loop, &dns_fds[free_slot].w);
}

sb_rc s2s_dns_init(const char *servers)
{
    int r = ares_library_init(ARES_LIB_INIT_ALL);
    if (r != ARES_SUCCESS) {
        log_error("dns_init_failed", "error=%s", sb_log_q(ares_strerror(r)));
        return SB_ERROR;
    }
    struct ares_options o;
    memset(&o, 0, sizeof o);
    o.sock_state_cb = dns_sock_state;
    o.timeout = 1500;     /* ms per try */
    o.tries = 2;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    r = ares_init_options(&dns_ch, &o, mask);
    if (r != ARES_SUCCESS) {
        log_error("dns_init_failed", "error=%s", sb_log_q(ares_strerror(r)));
        return SB_ERROR;
    }
    if (servers && *servers) {
        r = ares_set_servers_ports_csv(dns_ch, servers);
        if (r != ARES_SUCCESS) {
            log_error("dns_servers_invalid", "resolver=%s error=%s", sb_log_q(servers),
                      sb_log_q(ares_strerror(r)));
            ares_destroy(dns_ch);
            return SB_ERROR;
        }
    }
    ev_init(&dns_timer, dns_timer_cb);
    dns_ready = 1;
    log_info("dns_ready", "resolver=%s", servers && *servers ? servers : "system");
    return SB_OK;
}

void s2s_dns_deinit(void)
{
    if (!dns_ready)
        return;
    ares_destroy(dns_ch);    /* pending callbacks run with ARES_EDESTRUCTION */
    ev_timer_stop(s2s.loop, &dns_timer);
    for (int i = 0; i < DNS_MAX_FDS; i++)
        if (dns_fds[i].used) {
            ev_io_stop(s2s.loop, &dns_fds[i].w);
            dns_fds[i].used = 0;
        }
    dns_ready = 0;
    ares_library_cleanup();
}

void s2s_dns_cancel(struct s2s_dns_req *r)
{
    if (r)
        r->cancelled = 1;    /* freed by its last callback */
}

/* ---- SRV ------------------------------------------------------------------- */

static void dns_srv_done(struct s2s_dns_req *r)
{
    if (!r->cancelled) {
        s2s_dns_sort(r->t, r->prio, r->weight, r->nt);
        int fallback = !r->any_records && !r->absent;
        log_info("dns_srv", "domain=%s targets=%d fallback=%d absent=%d", r->domain, r->nt,
                 fallback, r->absent);
        r->srv_cb(r->ud, r->t, r->nt, fallback);
    }
    if (r->starting)
        r->done = 1;             /* the start call frees it */
    else
        free(r);
}

static void dns_srv_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen,
                           int direct_tls)
{
    struct s2s_dns_req *r = arg;
    struct ares_srv_reply *srv = NULL;
    if (status == ARES_SUCCESS && ares_parse_srv_reply(abuf, alen, &srv) == ARES_SUCCESS) {
        for (struct ares_srv_reply *s = srv; s; s = s->next) {
            r->any_records = 1;
            if (!strcmp(s->host, "") || !strcmp(s->host, ".")) {
                /* RFC 2782: "." means the service is decidedly not available. */
                if (!direct_tls)
                    r->absent = 1;
                continue;
            }
            if (r->nt >= DNS_MAX_TARGETS)
                break;
            struct s2s_target *t = &r->t[r->nt];
            snprintf(t->host, sizeof t->host, "%s", s->host);
            t->port = s->port;
            t->direct_tls = direct_tls;
            r->prio[r->nt] = s->priority;
            r->weight[r->nt] = s->weight;
            r->nt++;
        }
        ares_free_data(srv);
    } else if (status != ARES_ENOTFOUND && status != ARES_ENODATA && status != ARES_SUCCESS) {
        log_info("dns_srv_failed", "domain=%s tls=%d error=%s", r->domain, direct_tls,
                 sb_log_q(ares_strerror(status)));
    }
    if (--r->pending == 0)
        dns_srv_done(r);
}

static void dns_srv_xmpps(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_srv_answer(arg, status, timeouts, abuf, alen, 1);
}

static void dns_srv_xmpp(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_srv_answer(arg, status, timeouts, abuf, alen, 0);
}

struct s2s_dns_req *s2s_dns_srv(const char *domain, s2s_srv_cb cb, void *ud)
{
    struct s2s_dns_req *r = NULL;
    if (!dns_ready || strlen(domain) > 240 || !(r = calloc(1, sizeof *r))) {
        cb(ud, NULL, 0, 0);      /* NULL always means: answered already */
        return NULL;
    }
    r->srv_cb = cb;
    r->ud = ud;
    snprintf(r->domain, sizeof r->domain, "%s", domain);
    char name[300];
    r->pending = 2;
    r->starting = 1;
    snprintf(name, sizeof name, "_xmpps-server._tcp.%s", domain);
    ares_query(dns_ch, name, ns_c_in, ns_t_srv, dns_srv_xmpps, r);
    snprintf(name, sizeof name, "_xmpp-server._tcp.%s", domain);
    ares_query(dns_ch, name, ns_c_in, ns_t_srv, dns_srv_xmpp, r);
    return dns_started(r);
}

/* ---- addresses --------------------------------------------------------------- */

static void dns_addr_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct s2s_dns_req *r = arg;
    struct sockaddr_storage a[DNS_MAX_ADDRS];
    int n = 0;
    if (status == ARES_SUCCESS && res) {
        for (struct ares_addrinfo_node *nd = res->nodes; nd && n < DNS_MAX_ADDRS; nd = nd->ai_next) {
            if (nd->ai_family != AF_INET && nd->ai_family != AF_INET6)
                continue;
            memset(&a[n], 0, sizeof a[n]);
            memcpy(&a[n], nd->ai_addr, (size_t)nd->ai_addrlen);
            if (nd->ai_family == AF_INET)
                ((struct sockaddr_in *)&a[n])->sin_port = htons((uint16_t)r->port);
            else
                ((struct sockaddr_in6 *)&a[n])->sin6_port = htons((uint16_t)r->port);
            n++;
        }
    } else {
        log_info("dns_addr_failed", "host=%s error=%s", r->domain, sb_log_q(ares_strerror(status)));
    }
    if (res)
        ares_freeaddrinfo(res);
    if (!r->cancelled)
        r->addr_cb(r->ud, a, n);
    if (r->starting)
        r->done = 1;
    else
        free(r);
}

/* c-ares may answer inside the call (a cache, a bad name): then the request
 * is already finished and the caller gets NULL with its callback run. */
static struct s2s_dns_req *dns_started(struct s2s_dns_req *r)
{
    r->starting = 0;
    dns_rearm();
    if (r->done) {
        free(r);
        return NULL;
    }
    return r;
}

struct s2s_dns_req *s2s_dns_addr(const char *host, int port, s2s_addr_cb cb, void *ud)
{
    struct s2s_dns_req *r = NULL;
    if (!dns_ready || !(r = calloc(1, sizeof *r))) {
        cb(ud, NULL, 0);
        return NULL;
    }
    r->addr_cb = cb;
    r->ud = ud;
    r->port = port;
    snprintf(r->domain, sizeof r->domain, "%s", host);
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r->starting = 1;
    ares_getaddrinfo(dns_ch, host, NULL, &hints, dns_addr_answer, r);
    return dns_started(r);
}
