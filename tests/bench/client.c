/* client.c — one benchmark client connection. Non-blocking socket (and
 * GnuTLS after STARTTLS) on the shared libev loop, a tiny splitter that cuts
 * the input into top-level elements without building a tree (the generator
 * must stay cheap), and the login state machine:
 *   header → features → [starttls → proceed → handshake → header → features]
 *   → SASL → header → features → bind → [session] → [XEP-0198 enable]
 *   → roster get → presence (SASL: PLAIN, SCRAM-SHA-1/-256[-PLUS], X-OAUTH2,
 *   OAUTHBEARER), or, with --mech fast, features → SASL2 <authenticate/>
 *   with an inline Bind 2 → <success/> → roster get → presence,
 * or, for a connection resuming a XEP-0198 session, SASL → header →
 * features → <resume/> → <resumed/>. A managed connection counts what it
 * receives, answers the server's <r/> and asks with its own every
 * sm_ack_every stanzas sent, like a mobile client. Everything after login
 * goes to sbb_ev.message. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nettle/base64.h>

#include "sbbench.h"

#define NS_SM "urn:xmpp:sm:3"

struct sbb_events sbb_ev;
static gnutls_certificate_credentials_t client_cred;

static const char *const state_names[] = {
    "connecting", "features", "proceed", "handshake", "sasl", "features2",
    "bind", "session", "sm-enable", "resume", "roster", "online", "closing", "dead", "http"};

const char *sbb_state_name(int s)
{
    return s >= 0 && s <= SBB_HTTP ? state_names[s] : "?";
}

double sbb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sbb_tls_init(void)
{
    if (gnutls_certificate_allocate_credentials(&client_cred) != GNUTLS_E_SUCCESS)
        return -1;
    return 0;
}

/* ---- buffers ------------------------------------------------------------ */

void sbb_buf_add(struct sbb_buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            fprintf(stderr, "sbbench: out of memory\n");
            exit(2);
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void sbb_buf_consume(struct sbb_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        if (b->cap > 16384) {       /* a burst grew it: give it back */
            free(b->data);
            b->data = NULL;
            b->cap = 0;
        }
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

/* ---- output --------------------------------------------------------------- */

static void conn_fail(struct sbb_conn *c, const char *why);

static void conn_events(struct sbb_conn *c)
{
    int ev = EV_READ;
    if (c->state == SBB_HANDSHAKE)
        ev = gnutls_record_get_direction(c->tls) ? EV_WRITE : EV_READ;
    else if (c->out.len || c->state == SBB_CONNECTING)
        ev |= EV_WRITE;
    if ((c->io.events & (EV_READ | EV_WRITE)) != ev) {
        ev_io_stop(sbb_loop, &c->io);
        ev_io_set(&c->io, c->fd, ev);
        ev_io_start(sbb_loop, &c->io);
    }
}

static void conn_flush(struct sbb_conn *c)
{
    while (c->out.len && c->state != SBB_DEAD) {
        ssize_t n;
        if (c->tls_on) {
            n = c->tls_pending ? gnutls_record_send(c->tls, NULL, 0)
                               : gnutls_record_send(c->tls, c->out.data, c->out.len);
            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                if (!c->tls_pending)
                    c->tls_pending = c->out.len;
                break;
            }
            c->tls_pending = 0;
            if (n < 0) {
                conn_fail(c, "tls-write");
                return;
            }
        } else {
            n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            if (n < 0) {
                conn_fail(c, "write");
                return;
            }
        }
        sbb_buf_consume(&c->out, (size_t)n);
    }
    if (c->state != SBB_DEAD)
        conn_events(c);
}

void sbb_conn_write(struct sbb_conn *c, const char *data, size_t len)
{
    if (c->state == SBB_DEAD)
        return;
    if (sbb_opt.transport != SBB_TP_TCP) {
        sbb_web_write(c, data, len);   /* one frame, or queued for the next request */
        return;
    }
    sbb_conn_raw(c, data, len);
}

void sbb_conn_raw(struct sbb_conn *c, const char *data, size_t len)
{
    if (c->state == SBB_DEAD)
        return;
    sbb_buf_add(&c->out, data, len);
    if (c->state != SBB_CONNECTING && c->state != SBB_HANDSHAKE && !c->tls_pending)
        conn_flush(c);
}

static void conn_writes(struct sbb_conn *c, const char *s)
{
    sbb_conn_write(c, s, strlen(s));
}

/* A failed write ends the connection through sbb_ev.failed, whose owner
 * may free it: outside an I/O callback (a timer sending) the free waits
 * until this returns, as it does inside one. The caller must look at its
 * pointer again afterwards (the owner has cleared it). */
void sbb_conn_stanza(struct sbb_conn *c, const char *data, size_t len)
{
    int outer = !c->in_io;
    c->in_io = 1;
    sbb_conn_write(c, data, len);
    if (c->state != SBB_DEAD && c->sm_on && ++c->sm_out && sbb_opt.sm_ack_every > 0 &&
        c->sm_out % (uint32_t)sbb_opt.sm_ack_every == 0)
        conn_writes(c, "<r xmlns='" NS_SM "'/>");
    if (outer) {
        c->in_io = 0;
        if (c->zombie)
            free(c);
    }
}

void sbb_conn_header(struct sbb_conn *c)
{
    char h[512];
    if (sbb_opt.transport != SBB_TP_TCP) {
        c->depth = 0;
        c->scan = 0;
        sbb_buf_consume(&c->in, c->in.len);
        sbb_web_open(c);               /* <open/>, or a BOSH session / restart */
        return;
    }
    int n = snprintf(h, sizeof(h), "<?xml version='1.0'?><stream:stream to='%s' "
                     "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                     "version='1.0'>", sbb_opt.domain);
    c->depth = 0;
    c->scan = 0;
    sbb_buf_consume(&c->in, c->in.len);
    sbb_conn_write(c, h, (size_t)n);
}

/* ---- life ------------------------------------------------------------------ */

static void conn_io(struct ev_loop *loop, ev_io *w, int revents);

struct sbb_conn *sbb_conn_start(int user)
{
    return sbb_conn_start_on(user, user - sbb_opt.first);
}

struct sbb_conn *sbb_conn_start_on(int user, int port_ix)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int port = sbb_opt.ports[port_ix % sbb_opt.nports];
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, sbb_opt.host, &sa.sin_addr) != 1)
        return NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (sbb_opt.nsrc > 0) {
        /* --src: spread over several loopback source addresses (each has its
         * own ephemeral ports); the port is chosen at connect time */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr = sbb_opt.src[(unsigned)user % (unsigned)sbb_opt.nsrc];
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            close(fd);
            return NULL;
        }
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    struct sbb_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->user = user;
    c->peer = -1;
    c->sm_want = (uint8_t)sbb_opt.sm;
    c->rid = 1000000 + (unsigned long long)(random() % 1000000000);
    c->t0 = sbb_now();
    c->state = SBB_CONNECTING;
    ev_io_init(&c->io, conn_io, fd, EV_READ | EV_WRITE);
    c->io.data = c;
    ev_io_start(sbb_loop, &c->io);
    return c;
}

static void conn_shut(struct sbb_conn *c)
{
    if (c->fd >= 0) {
        ev_io_stop(sbb_loop, &c->io);
        close(c->fd);
        c->fd = -1;
    }
    if (c->tls) {
        gnutls_deinit(c->tls);
        c->tls = NULL;
    }
    free(c->scram);
    c->scram = NULL;
    free(c->in.data);
    free(c->out.data);
    free(c->raw.data);
    free(c->q.data);
    free(c->sid);
    c->sid = NULL;
    memset(&c->in, 0, sizeof(c->in));
    memset(&c->out, 0, sizeof(c->out));
    memset(&c->raw, 0, sizeof(c->raw));
    memset(&c->q, 0, sizeof(c->q));
}

void sbb_conn_free(struct sbb_conn *c)
{
    if (!c)
        return;
    conn_shut(c);
    if (c->in_io)
        c->zombie = 1;
    else
        free(c);
}

/* A failure (or the end of a stream we did not close): the connection is
 * dead; the owner learns it through sbb_ev.failed and frees it. */
static void conn_fail(struct sbb_conn *c, const char *why)
{
    if (c->state == SBB_DEAD)
        return;
    int was = c->state;
    c->state = SBB_DEAD;
    conn_shut(c);
    if (was == SBB_CLOSING)
        c->closed_ok = 1;
    if (sbb_ev.failed)
        sbb_ev.failed(c, why);
}

void sbb_conn_close(struct sbb_conn *c)
{
    if (c->state == SBB_DEAD || c->state == SBB_CLOSING)
        return;
    if (c->sm_on) {             /* what we read is handled: the server need not keep it */
        char a[80];
        int n = snprintf(a, sizeof(a), "<a xmlns='" NS_SM "' h='%u'/>", c->sm_h);
        sbb_conn_write(c, a, (size_t)n);
    }
    if (sbb_opt.transport != SBB_TP_TCP) {
        if (sbb_web_close(c)) {
            c->state = SBB_CLOSING;
            conn_fail(c, "closed");    /* counted as a clean close */
        } else if (c->state != SBB_DEAD) {
            c->state = SBB_CLOSING;
        }
        return;
    }
    conn_writes(c, "</stream:stream>");
    if (c->state != SBB_DEAD)
        c->state = SBB_CLOSING;
}

void sbb_conn_fail(struct sbb_conn *c, const char *why)
{
    conn_fail(c, why);
}

/* ---- small scanners ------------------------------------------------------- */

/* Value of attribute `name` of the start tag at el into out ("" if none). */
static void attr_get(const char *el, size_t len, const char *name, char *out, size_t cap)
{
    const char *end = memchr(el, '>', len);
    size_t nl = strlen(name);
    out[0] = 0;
    for (const char *p = el + 1; end && p + nl + 2 < end; p++) {
        if ((p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n') && memcmp(p, name, nl) == 0 &&
            p[nl] == '=' && (p[nl + 1] == '\'' || p[nl + 1] == '"')) {
            const char *v = p + nl + 2, *q = memchr(v, p[nl + 1], (size_t)(end - v));
            if (q && (size_t)(q - v) < cap) {
                memcpy(out, v, (size_t)(q - v));
                out[q - v] = 0;
            }
            return;
        }
    }
}

void sbb_attr_get(const char *el, size_t len, const char *name, char *out, size_t cap)
{
    attr_get(el, len, name, out, cap);
}

static int attr_is(const char *el, size_t len, const char *name, const char *want)
{
    char v[64];
    attr_get(el, len, name, v, sizeof(v));
    return strcmp(v, want) == 0;
}

static int has(const char *el, size_t len, const char *s)
{
    return memmem(el, len, s, strlen(s)) != NULL;
}

/* "stream-error:CONDITION" for a <stream:error/>: the first child's name
 * (the defined condition comes first, RFC 6120 §4.9.3). */
static const char *stream_error_reason(const char *el, size_t len)
{
    static char why[64];
    const char *end = el + len;
    const char *p = memchr(el, '>', len);
    p = p ? memchr(p, '<', (size_t)(end - p)) : NULL;
    size_t n = 0;
    if (p && p + 1 < end && p[1] != '/') {
        p++;
        while (p + n < end && p[n] != ' ' && p[n] != '/' && p[n] != '>')
            n++;
    }
    snprintf(why, sizeof(why), "stream-error:%.*s", (int)n, n ? p : "");
    return why;
}

/* Text content of a simple element: between the first '>' and the last '<'. */
static const char *elem_text(const char *el, size_t len, size_t *tl)
{
    const char *gt = memchr(el, '>', len);
    if (!gt || gt[-1] == '/') {
        *tl = 0;
        return el;
    }
    const char *lt = el + len;
    while (lt > gt && *lt != '<')
        lt--;
    *tl = (size_t)(lt - gt - 1);
    return gt + 1;
}

/* ---- login ------------------------------------------------------------------ */

/* The legacy mechanism's name and initial response (base64) into b64; NULL
 * and a reason in *why when it cannot be done. */
static const char *sasl_initial(struct sbb_conn *c, const char *name, char *b64, size_t cap,
                                const char **why)
{
    char raw[1200];
    int rl;
    if (sbb_opt.plain) {
        rl = snprintf(raw, sizeof(raw), "%c%s%c%s%d", 0, name, 0, sbb_opt.passprefix, c->user);
        *why = "no-plain";
    } else if (sbb_opt.xoauth2) {
        const char *tok = sbb_token_get(c->user);
        if (!tok) {
            *why = "no-token";
            return NULL;
        }
        rl = snprintf(raw, sizeof(raw), "%c%s%c%s", 0, name, 0, tok);
        *why = "no-x-oauth2";
    } else if (sbb_opt.oauthbearer) {
        char jid[300], jwt[800];
        snprintf(jid, sizeof(jid), "%s@%s", name, sbb_opt.domain);
        if (sbb_jwt_make(jid, jwt, sizeof(jwt)) < 0) {
            *why = "jwt";
            return NULL;
        }
        /* RFC 7628 §3.1: gs2 header, then kvpairs separated by ^A */
        rl = snprintf(raw, sizeof(raw), "n,a=%s,\001auth=Bearer %s\001\001", jid, jwt);
        *why = "no-oauthbearer";
    } else {
        gnutls_datum_t cb = {NULL, 0};
        if (sbb_opt.plus && (!c->tls_on ||
                             gnutls_session_channel_binding(c->tls, GNUTLS_CB_TLS_EXPORTER, &cb) < 0)) {
            *why = "no-tls-exporter";
            return NULL;
        }
        int r = sbb_scram_first(c->user, name, cb.data, cb.size, &c->scram, b64, cap);
        gnutls_free(cb.data);
        *why = sbb_opt.plus ? "no-scram-sha-256-plus" :
               sbb_opt.sha256 ? "no-scram-sha-256" : "no-scram-sha-1";
        if (r < 0) {
            *why = "scram";
            return NULL;
        }
        return sbb_mech_name();
    }
    if (rl <= 0 || (size_t)rl >= sizeof(raw) || (size_t)BASE64_ENCODE_RAW_LENGTH(rl) + 1 > cap) {
        *why = "sasl-too-long";
        return NULL;
    }
    base64_encode_raw(b64, (size_t)rl, (const uint8_t *)raw);
    b64[BASE64_ENCODE_RAW_LENGTH(rl)] = 0;
    return sbb_mech_name();
}

/* XEP-0388 SASL2 with an inline XEP-0386 Bind 2 (no stream restart, no
 * separate bind): PLAIN asking for a XEP-0484 FAST token (fast_prep), or
 * HT-SHA-256-NONE with that token. */
static void login_sasl2(struct sbb_conn *c, const char *name, const char *el, size_t len)
{
    char b64[900], msg[1600], fast[96] = "";
    const char *mech = sbb_opt.fast_prep ? "PLAIN" : "HT-SHA-256-NONE";
    if (!has(el, len, "urn:xmpp:sasl:2") || (!sbb_opt.fast_prep && !has(el, len, ">HT-SHA-256-NONE<"))) {
        conn_fail(c, "no-sasl2-fast");
        return;
    }
    if (sbb_opt.fast_prep) {
        char raw[600];
        int rl = snprintf(raw, sizeof(raw), "%c%s%c%s%d", 0, name, 0, sbb_opt.passprefix, c->user);
        base64_encode_raw(b64, (size_t)rl, (const uint8_t *)raw);
        b64[BASE64_ENCODE_RAW_LENGTH(rl)] = 0;
        snprintf(fast, sizeof(fast), "<request-token xmlns='urn:xmpp:fast:0' "
                 "mechanism='HT-SHA-256-NONE'/>");
    } else {
        long long count;
        if (sbb_fast_response(c->user, name, b64, sizeof(b64), &count) < 0) {
            conn_fail(c, "no-fast-token");
            return;
        }
        snprintf(fast, sizeof(fast), "<fast xmlns='urn:xmpp:fast:0' count='%lld'/>", count);
    }
    snprintf(msg, sizeof(msg), "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='%s'>"
             "<initial-response>%s</initial-response><user-agent id='sbbench-fast'>"
             "<software>sbbench</software></user-agent>%s"
             "<bind xmlns='urn:xmpp:bind:0'><tag>sbbench</tag></bind></authenticate>",
             mech, b64, fast);
    conn_writes(c, msg);
    c->sasl2 = 1;
    c->state = SBB_SASL;
}

static void login_sasl(struct sbb_conn *c, const char *el, size_t len)
{
    char name[256], b64[1700], msg[1900];
    snprintf(name, sizeof(name), "%s%d", sbb_opt.prefix, c->user);
    if (sbb_opt.fast || sbb_opt.fast_prep) {
        login_sasl2(c, name, el, len);
        return;
    }
    const char *why;
    const char *mech = sasl_initial(c, name, b64, sizeof(b64), &why);
    char want[40];
    snprintf(want, sizeof(want), ">%s<", mech ? mech : "");
    if (!mech || !has(el, len, want)) {
        conn_fail(c, why);
        return;
    }
    snprintf(msg, sizeof(msg), "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
             "mechanism='%s'>%s</auth>", mech, b64);
    conn_writes(c, msg);
    c->state = SBB_SASL;
}

static void login_tls(struct sbb_conn *c)
{
    if (gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK) != GNUTLS_E_SUCCESS ||
        gnutls_set_default_priority(c->tls) != GNUTLS_E_SUCCESS ||
        gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, client_cred) != GNUTLS_E_SUCCESS) {
        conn_fail(c, "tls-init");
        return;
    }
    gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, sbb_opt.domain, strlen(sbb_opt.domain));
    gnutls_transport_set_int(c->tls, c->fd);
    c->state = SBB_HANDSHAKE;
}

static void login_handshake(struct sbb_conn *c)
{
    int r = gnutls_handshake(c->tls);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
        conn_events(c);
        return;
    }
    if (r < 0) {
        conn_fail(c, "tls-handshake");
        return;
    }
    c->tls_on = 1;
    c->state = SBB_FEATURES;
    sbb_conn_header(c);
}

static void login_roster(struct sbb_conn *c)
{
    static const char get[] = "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>";
    sbb_conn_stanza(c, get, sizeof(get) - 1);
    if (c->state != SBB_DEAD)
        c->state = SBB_ROSTER;
}

/* XEP-0198 nonzas: <r/> answered, <a/> noted, <enabled/>/<resumed/>/<failed/>
 * move the login on. 1 when el was one. */
static int sm_element(struct sbb_conn *c, const char *local, const char *el, size_t len)
{
    char v[64];
    if (strcmp(local, "r") && strcmp(local, "a") && strcmp(local, "enabled") &&
        strcmp(local, "resumed") && strcmp(local, "failed"))
        return 0;
    if (!has(el, len, NS_SM))
        return 0;
    if (strcmp(local, "r") == 0) {
        char a[80];
        int n = snprintf(a, sizeof(a), "<a xmlns='" NS_SM "' h='%u'/>", c->sm_h);
        sbb_conn_write(c, a, (size_t)n);
    } else if (strcmp(local, "a") == 0) {
        attr_get(el, len, "h", v, sizeof(v));
        c->sm_acked = (uint32_t)strtoul(v, NULL, 10);
        if (sbb_ev.acked)
            sbb_ev.acked(c, c->sm_acked);
    } else if (strcmp(local, "enabled") == 0 && c->state == SBB_SM_ENABLE) {
        attr_get(el, len, "id", c->sm_id, sizeof(c->sm_id));
        c->sm_on = 1;
        c->sm_h = c->sm_out = 0;
        login_roster(c);
    } else if (strcmp(local, "resumed") == 0 && c->state == SBB_RESUME) {
        attr_get(el, len, "h", v, sizeof(v));
        c->sm_on = 1;
        c->sm_h = c->resume_h;
        c->sm_acked = c->sm_out = (uint32_t)strtoul(v, NULL, 10);
        c->resumed_at = sbb_now();
        if (sbb_ev.acked)
            sbb_ev.acked(c, c->sm_acked);
        c->state = SBB_ONLINE;
        free(c->scram);
        c->scram = NULL;
        if (sbb_ev.online)
            sbb_ev.online(c);
    } else if (strcmp(local, "failed") == 0) {
        attr_get(el, len, "h", v, sizeof(v));   /* what the old session had handled */
        if (v[0] && c->state == SBB_RESUME && sbb_ev.acked)
            sbb_ev.acked(c, (uint32_t)strtoul(v, NULL, 10));
        conn_fail(c, c->state == SBB_RESUME ? "resume-failed" : "sm-failed");
    }
    return 1;
}

static void login_iq(struct sbb_conn *c, const char *el, size_t len, const char *id)
{
    if (!attr_is(el, len, "id", id))
        return;                     /* not the answer we wait for */
    if (!attr_is(el, len, "type", "result")) {
        conn_fail(c, c->state == SBB_BIND ? "bind-error" :
                     c->state == SBB_SESSION ? "session-error" : "roster-error");
        return;
    }
    if (c->state == SBB_BIND && c->want_session) {
        conn_writes(c, "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
        c->state = SBB_SESSION;
    } else if ((c->state == SBB_BIND || c->state == SBB_SESSION) && c->sm_want) {
        conn_writes(c, "<enable xmlns='" NS_SM "' resume='true'/>");
        c->state = SBB_SM_ENABLE;
    } else if (c->state == SBB_BIND || c->state == SBB_SESSION) {
        login_roster(c);
    } else {
        sbb_conn_stanza(c, "<presence/>", 11);
        if (c->state == SBB_DEAD)
            return;                  /* failed (and reported) on the write */
        c->state = SBB_ONLINE;
        free(c->scram);
        c->scram = NULL;
        if (sbb_ev.online)
            sbb_ev.online(c);
    }
}

/* SASL2 <success/>: bound already (Bind 2); the FAST token kept when asked. */
static void sasl2_success(struct sbb_conn *c, const char *el, size_t len)
{
    if (!has(el, len, "urn:xmpp:bind:0")) {
        conn_fail(c, "no-bind2");
        return;
    }
    if (sbb_opt.fast_prep) {
        const char *t = memmem(el, len, "<token ", 7);
        char tok[256];
        if (t)
            attr_get(t, len - (size_t)(t - el), "token", tok, sizeof(tok));
        if (!t || !tok[0] || sbb_token_set(c->user, tok, strlen(tok)) < 0) {
            conn_fail(c, "no-fast-token");
            return;
        }
    }
    login_roster(c);
}

static void conn_element(struct sbb_conn *c, const char *el, size_t len)
{
    char name[32];
    size_t i = 1;
    while (i < len && i < sizeof(name) && el[i] != ' ' && el[i] != '>' && el[i] != '/' &&
           el[i] != '\t' && el[i] != '\n' && el[i] != '\r')
        i++;
    memcpy(name, el + 1, i - 1);
    name[i - 1] = 0;
    const char *local = strchr(name, ':') && strncmp(name, "stream:", 7) != 0
                            ? strchr(name, ':') + 1 : name;

    if (strcmp(name, "stream:error") == 0) {
        conn_fail(c, stream_error_reason(el, len));
        return;
    }
    if (sbb_opt.transport == SBB_TP_WS && strcmp(name, "close") == 0) {
        conn_fail(c, c->state == SBB_CLOSING ? "closed" : "stream-end");   /* RFC 7395 §3.6 */
        return;
    }
    if (c->sm_on && (!strcmp(name, "message") || !strcmp(name, "presence") || !strcmp(name, "iq")))
        c->sm_h++;
    else if ((c->sm_want || c->resume) && sm_element(c, local, el, len))
        return;
    switch (c->state) {
    case SBB_FEATURES:
        if (strcmp(name, "stream:features") != 0)
            break;
        if (sbb_opt.tls && !c->tls_on) {
            if (!has(el, len, "urn:ietf:params:xml:ns:xmpp-tls")) {
                conn_fail(c, "no-starttls");
                return;
            }
            conn_writes(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            c->state = SBB_PROCEED;
        } else {
            login_sasl(c, el, len);
        }
        break;
    case SBB_PROCEED:
        if (strcmp(local, "proceed") == 0)
            login_tls(c);
        else
            conn_fail(c, "starttls-failure");
        break;
    case SBB_SASL: {
        size_t tl;
        const char *t = elem_text(el, len, &tl);
        char out[600];
        if (strcmp(local, "challenge") == 0 && sbb_opt.oauthbearer) {
            /* RFC 7628 §3.2.2: the error's JSON; a lone ^A ends the exchange */
            conn_writes(c, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AQ==</response>");
        } else if (strcmp(local, "challenge") == 0 && !sbb_opt.plain && !c->sasl2) {
            char pw[256];
            snprintf(pw, sizeof(pw), "%s%d", sbb_opt.passprefix, c->user);
            if (sbb_scram_final(c->user, pw, c->scram, t, tl, out, sizeof(out)) < 0) {
                conn_fail(c, "scram-challenge");
                return;
            }
            char msg[800];
            snprintf(msg, sizeof(msg), "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>", out);
            conn_writes(c, msg);
        } else if (strcmp(local, "success") == 0 && c->sasl2) {
            sasl2_success(c, el, len);
        } else if (strcmp(local, "success") == 0) {
            if (c->scram && sbb_scram_verify(c->scram, t, tl) < 0) {
                conn_fail(c, "scram-server-signature");
                return;
            }
            c->state = SBB_FEATURES2;
            sbb_conn_header(c);
        } else {
            conn_fail(c, "sasl-failure");
        }
        break;
    }
    case SBB_FEATURES2:
        if (strcmp(name, "stream:features") != 0)
            break;
        c->want_session = has(el, len, "urn:ietf:params:xml:ns:xmpp-session") != 0;
        if (c->resume) {
            char r[160];
            int n = snprintf(r, sizeof(r), "<resume xmlns='" NS_SM "' previd='%s' h='%u'/>",
                             c->sm_id, c->resume_h);
            sbb_conn_write(c, r, (size_t)n);
            c->state = SBB_RESUME;
            break;
        }
        conn_writes(c, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
        c->state = SBB_BIND;
        break;
    case SBB_BIND:
    case SBB_SESSION:
    case SBB_ROSTER:
        if (strcmp(local, "iq") == 0)
            login_iq(c, el, len, c->state == SBB_BIND ? "b1" : c->state == SBB_SESSION ? "s1" : "r1");
        break;
    case SBB_ONLINE:
    case SBB_CLOSING:
        if (sbb_ev.message && strcmp(local, "message") == 0)
            sbb_ev.message(c, el, len);
        else if (strcmp(local, "iq") == 0 && attr_is(el, len, "type", "get") &&
                 has(el, len, "urn:xmpp:ping")) {
            /* XEP-0199: the server pings a silent client (after 120 s on
             * sb-c2s) and closes it when unanswered; real clients answer */
            char id[128], r[256];
            attr_get(el, len, "id", id, sizeof(id));
            int n = snprintf(r, sizeof(r), "<iq type='result' id='%s'/>", id);
            sbb_conn_write(c, r, (size_t)n);
        }
        else if (sbb_ev.iq && strcmp(local, "iq") == 0)
            sbb_ev.iq(c, el, len);
        else if (sbb_ev.other && (!strcmp(local, "presence") || !strcmp(local, "iq")))
            sbb_ev.other(c, el, len);
        break;
    default:
        break;
    }
}

/* ---- the element splitter --------------------------------------------------- */

/* End of the tag starting at p ('<'), quotes respected; NULL if incomplete. */
static const char *tag_end(const char *p, const char *end)
{
    char q = 0;
    for (p++; p < end; p++) {
        if (q) {
            if (*p == q)
                q = 0;
        } else if (*p == '\'' || *p == '"') {
            q = *p;
        } else if (*p == '>') {
            return p;
        }
    }
    return NULL;
}

static void conn_parse(struct sbb_conn *c)
{
    char *base = c->in.data;
    const char *end = base + c->in.len;
    const char *p = base + c->scan;

    while (p < end && c->state != SBB_DEAD) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt) {
            p = end;
            break;
        }
        const char *gt = tag_end(lt, end);
        if (!gt) {
            p = lt;
            break;
        }
        if (c->depth == 0)
            c->elem_start = (size_t)(lt - base);
        if (lt[1] == '?' || lt[1] == '!') {
            /* declaration or comment: nothing to count */
        } else if (lt[1] == '/') {
            if (c->depth == 0) {                      /* </stream:stream> */
                conn_fail(c, c->state == SBB_CLOSING ? "closed" : "stream-end");
                return;
            }
            if (--c->depth == 0) {
                int restart_before = c->state;
                conn_element(c, base + c->elem_start, (size_t)(gt + 1 - (base + c->elem_start)));
                if (c->state == SBB_DEAD)
                    return;
                /* a restart (SASL success, TLS) replaced the input buffer */
                if ((restart_before == SBB_SASL && c->state == SBB_FEATURES2) ||
                    c->state == SBB_HANDSHAKE)
                    return;
            }
        } else if (gt[-1] == '/') {
            if (c->depth == 0) {
                int restart_before = c->state;
                conn_element(c, lt, (size_t)(gt + 1 - lt));
                if (c->state == SBB_DEAD)
                    return;
                if ((restart_before == SBB_SASL && c->state == SBB_FEATURES2) ||
                    c->state == SBB_HANDSHAKE)
                    return;
            }
        } else if (c->depth == 0 && strncmp(lt, "<stream:stream", 14) == 0) {
            /* stream header: depth stays 0 for its children */
        } else {
            c->depth++;
        }
        p = gt + 1;
    }
    /* drop what is done: everything before the open element (or p) */
    size_t keep_from = c->depth ? c->elem_start : (size_t)(p - base);
    c->scan = (size_t)(p - base) - keep_from;
    c->elem_start = 0;
    sbb_buf_consume(&c->in, keep_from);
}

void sbb_conn_feed(struct sbb_conn *c, const char *data, size_t len)
{
    sbb_buf_add(&c->in, data, len);
    conn_parse(c);
}

/* ---- I/O ---------------------------------------------------------------------- */

static void conn_read(struct sbb_conn *c)
{
    char tmp[65536];
    for (;;) {
        ssize_t n;
        if (c->tls_on) {
            n = gnutls_record_recv(c->tls, tmp, sizeof(tmp));
            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
                return;
            if (n < 0) {
                conn_fail(c, c->state == SBB_CLOSING ? "closed" : "tls-read");
                return;
            }
        } else {
            n = recv(c->fd, tmp, sizeof(tmp), 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            if (n < 0) {
                conn_fail(c, c->state == SBB_CLOSING ? "closed" :
                             errno == ECONNRESET ? "reset" : "read");
                return;
            }
        }
        if (n == 0) {
            conn_fail(c, c->state == SBB_CLOSING ? "closed" : "eof");
            return;
        }
        if (sbb_opt.transport != SBB_TP_TCP)
            sbb_web_input(c, tmp, (size_t)n);
        else
            sbb_conn_feed(c, tmp, (size_t)n);
        if (c->state == SBB_DEAD || c->state == SBB_HANDSHAKE)
            return;
        if ((size_t)n < sizeof(tmp) && !(c->tls_on && gnutls_record_check_pending(c->tls)))
            return;
    }
}

static void conn_io_run(struct sbb_conn *c, int revents);

static void conn_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sbb_conn *c = w->data;
    c->in_io = 1;
    conn_io_run(c, revents);
    c->in_io = 0;
    if (c->zombie)
        free(c);
}

static void conn_io_run(struct sbb_conn *c, int revents)
{
    if (c->state == SBB_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            conn_fail(c, "connect");
            return;
        }
        if (sbb_opt.transport != SBB_TP_TCP) {
            sbb_web_connected(c);     /* the Upgrade, or the BOSH session request */
            conn_flush(c);
            return;
        }
        c->state = SBB_FEATURES;
        sbb_conn_header(c);
        return;
    }
    if (c->state == SBB_HANDSHAKE) {
        login_handshake(c);
        return;
    }
    if (revents & EV_WRITE)
        conn_flush(c);
    if (c->state != SBB_DEAD && (revents & EV_READ))
        conn_read(c);
    if (c->state == SBB_HANDSHAKE)
        login_handshake(c);
}
