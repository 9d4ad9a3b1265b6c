/* tls.c — GnuTLS for server-to-server streams. One credential holds the
 * trust anchors (the system's and/or a CA file) used to judge the peer's
 * certificate; our certificate comes from the domain table
 * (common/certs.h): on an incoming stream the one of the stream's `to`
 * (STARTTLS) or of the SNI (direct TLS), on an outgoing one, as client
 * certificate, the one of our `from`, so peers can authenticate each local
 * domain with SASL EXTERNAL. Handshakes and records run in common/tlsconn. */
#include "s2s.h"
#include "certs.h"
#include "log.h"

#include <string.h>

static struct tlsconn_creds tls_creds;

sb_rc s2s_tls_init(const struct s2s_cfg *cfg)
{
    if (sb_certs_load(cfg->cert, cfg->key, cfg->cert_dir) != SB_OK ||
        tlsconn_creds_init(&tls_creds, cfg->tls_priority) != SB_OK)
        return SB_ERROR;
    int anchors = 0, r;
    if (cfg->system_trust) {
        r = gnutls_certificate_set_x509_system_trust(tls_creds.cred);
        if (r < 0)
            log_warn("tls_system_trust_failed", "error=%s", sb_log_q(gnutls_strerror(r)));
        else
            anchors += r;
    }
    if (cfg->cafile && *cfg->cafile) {
        r = gnutls_certificate_set_x509_trust_file(tls_creds.cred, cfg->cafile,
                                                   GNUTLS_X509_FMT_PEM);
        if (r < 0) {
            log_error("tls_cafile_failed", "cafile=%s error=%s", cfg->cafile,
                      sb_log_q(gnutls_strerror(r)));
            s2s_tls_deinit();
            return SB_ERROR;
        }
        anchors += r;
    }
    log_info("tls_ready", "cert=%s cert_dir=%s trust_anchors=%d", cfg->cert,
             *cfg->cert_dir ? cfg->cert_dir : "-", anchors);
    return SB_OK;
}

sb_rc s2s_tls_reload(const struct s2s_cfg *cfg)
{
    if (!s2s_tls_available() || sb_certs_load(cfg->cert, cfg->key, cfg->cert_dir) != SB_OK)
        return SB_ERROR;              /* logged; the pairs in force stay */
    log_info("tls_reloaded", "cert=%s cert_dir=%s own=%d", cfg->cert,
             *cfg->cert_dir ? cfg->cert_dir : "-", sb_certs_count());
    return SB_OK;
}

int s2s_tls_available(void)
{
    return tls_creds.cred != NULL && tls_creds.prio != NULL;
}

void s2s_tls_deinit(void)
{
    tlsconn_creds_free(&tls_creds);
    sb_certs_free();
}

sb_rc s2s_tls_session_new(const struct s2s_conn *c, gnutls_session_t *out)
{
    int server = c->dir == S2S_IN;
    gnutls_session_t s;
    if (tlsconn_session_new(&tls_creds, server ? GNUTLS_SERVER : GNUTLS_CLIENT, c->tc.fd,
                            &s) != SB_OK)
        return SB_ERROR;
    if (server) {
        /* Ask for the peer's certificate (SASL EXTERNAL), without a CA list
         * so a peer whose issuer we do not know still sends it. */
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUEST);
        gnutls_certificate_send_x509_rdn_sequence(s, 1);
    } else if (c->remote) {
        gnutls_server_name_set(s, GNUTLS_NAME_DNS, c->remote, strlen(c->remote));
    }
    /* Whose certificate: incoming direct TLS leaves it to the SNI; else the
     * local domain of the stream (interned: it outlives the session). */
    if (!server || !(c->flags & S2S_F_DIRECT_TLS)) {
        const char *local = c->local ? sb_domains_find(c->local) : NULL;
        sb_certs_session_domain(s, local ? local : "");
    }
    *out = s;
    return SB_OK;
}

int s2s_tls_peer_valid(struct s2s_conn *c, const char *domain)
{
    if (!c->tc.tls || !domain)
        return 0;
    unsigned int list = 0;
    if (!gnutls_certificate_get_peers(c->tc.tls, &list) || list == 0) {
        log_info("peer_cert", "peer=%s domain=%s valid=0 why=no-certificate", c->peer, domain);
        return 0;
    }
    unsigned int status = 0;
    int r = gnutls_certificate_verify_peers3(c->tc.tls, domain, &status);
    if (r < 0 || status != 0) {
        gnutls_datum_t txt = {NULL, 0};
        if (r >= 0)
            gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0);
        log_info("peer_cert", "peer=%s domain=%s valid=0 why=%s", c->peer, domain,
                 sb_log_q(r < 0 ? gnutls_strerror(r) : (txt.data ? (char *)txt.data : "?")));
        gnutls_free(txt.data);
        return 0;
    }
    log_info("peer_cert", "peer=%s domain=%s valid=1", c->peer, domain);
    return 1;
}
