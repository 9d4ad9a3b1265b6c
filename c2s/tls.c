/* tls.c — GnuTLS for client connections: one credential and one priority
 * cache for the process (both reloaded on SIGHUP), the certificate of each
 * handshake from the domain table (common/certs.h: by the stream's `to`
 * on STARTTLS, by SNI on direct TLS and HTTPS), and a server session per
 * connection. Handshakes and records run in common/tlsconn (TCP) and
 * web_http.c (HTTPS). */
#include "c2s.h"
#include "certs.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static struct tlsconn_creds tls_creds;

/* Credentials replaced by a reload: sessions that started with them keep
 * pointers into them (gnutls does not count references), so they are freed
 * only at exit. One entry per SIGHUP. */
struct tls_old {
    struct tls_old *next;
    struct tlsconn_creds creds;
};
static struct tls_old *tls_retired;

sb_rc c2s_tls_reload(const struct c2s_cfg *cfg)
{
    if (sb_certs_load(cfg->cert, cfg->key, cfg->cert_dir) != SB_OK)
        return SB_ERROR;               /* logged; the old pairs stay */
    struct tlsconn_creds fresh;
    if (tlsconn_creds_init(&fresh, cfg->tls_priority) != SB_OK)
        return SB_ERROR;               /* logged; the old priority stays */
    struct tls_old *old = malloc(sizeof *old);
    if (!old) {
        tlsconn_creds_free(&fresh);
        return SB_ERROR;
    }
    old->creds = tls_creds;
    old->next = tls_retired;
    tls_retired = old;
    tls_creds = fresh;
    log_info("tls_reloaded", "cert=%s cert_dir=%s own=%d priority=%s", cfg->cert,
             *cfg->cert_dir ? cfg->cert_dir : "-", sb_certs_count(),
             sb_log_q(cfg->tls_priority));
    return SB_OK;
}

sb_rc c2s_tls_init(const struct c2s_cfg *cfg)
{
    if (sb_certs_load(cfg->cert, cfg->key, cfg->cert_dir) != SB_OK ||
        tlsconn_creds_init(&tls_creds, cfg->tls_priority) != SB_OK)
        return SB_ERROR;
    log_info("tls_ready", "cert=%s cert_dir=%s priority=%s", cfg->cert,
             *cfg->cert_dir ? cfg->cert_dir : "-", sb_log_q(cfg->tls_priority));
    return SB_OK;
}

int c2s_tls_available(void)
{
    return tls_creds.cred != NULL && tls_creds.prio != NULL;
}

void c2s_tls_deinit(void)
{
    tlsconn_creds_free(&tls_creds);
    while (tls_retired) {
        struct tls_old *o = tls_retired;
        tls_retired = o->next;
        tlsconn_creds_free(&o->creds);
        free(o);
    }
    sb_certs_free();
}

sb_rc c2s_tls_session_new(int fd, const char *domain, gnutls_session_t *out)
{
    if (tlsconn_session_new(&tls_creds, GNUTLS_SERVER, fd, out) != SB_OK)
        return SB_ERROR;
    gnutls_certificate_server_set_request(*out, GNUTLS_CERT_IGNORE);
    if (domain)
        sb_certs_session_domain(*out, domain);
    return SB_OK;
}

/* The channel bindings of a TCP stream's TLS session, for SCRAM-*-PLUS:
 * tls-exporter only on TLS 1.3 (RFC 9266 §3: on TLS 1.2 it is safe only
 * with extended master secret, and we keep one rule), tls-server-end-point
 * (RFC 5929 §4.1: a hash of our certificate) whenever GnuTLS gives it.
 * Both come from GnuTLS (gnutls_session_channel_binding). BOSH/WS
 * sessions have no TLS session of their own (one HTTP connection each,
 * or a proxy in front): nothing, so no -PLUS there. Nor with
 * `channel_binding = 0` (some clients, e.g. slixmpp 1.8, pick -PLUS on TLS
 * 1.3 and then fail: they bind only with tls-unique). */
int c2s_tls_channel_bindings(const struct c2s_conn *c, struct sasl_cb *out)
{
    gnutls_datum_t d;
    gnutls_session_t s = c->tc.tls;

    memset(out, 0, sizeof(*out));
    if (!s || c->state == C2S_S_TLS_HANDSHAKE || !c2s.cfg.channel_binding)
        return 0;
    if (gnutls_protocol_get_version(s) == GNUTLS_TLS1_3 &&
        gnutls_session_channel_binding(s, GNUTLS_CB_TLS_EXPORTER, &d) == GNUTLS_E_SUCCESS) {
        if (d.size <= sizeof out->exporter) {
            memcpy(out->exporter, d.data, d.size);
            out->exporter_len = d.size;
        }
        gnutls_free(d.data);
    }
    if (gnutls_session_channel_binding(s, GNUTLS_CB_TLS_SERVER_END_POINT, &d) ==
        GNUTLS_E_SUCCESS) {
        if (d.size <= sizeof out->endpoint) {
            memcpy(out->endpoint, d.data, d.size);
            out->endpoint_len = d.size;
        }
        gnutls_free(d.data);
    }
    return out->exporter_len || out->endpoint_len;
}
