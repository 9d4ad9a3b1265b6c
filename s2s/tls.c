/* tls.c — GnuTLS for server-to-server streams. One credential holds our
 * certificate (presented as server on incoming streams and as client on
 * outgoing ones, so peers can authenticate us with SASL EXTERNAL) and the
 * trust anchors (the system's and/or a CA file) used to judge the peer's
 * certificate. Handshakes and records run in common/tlsconn. */
#include "s2s.h"
#include "log.h"

#include <string.h>

static struct tlsconn_creds tls_creds;

sb_rc s2s_tls_init(const struct s2s_cfg *cfg)
{
    if (tlsconn_creds_load(&tls_creds, cfg->cert, cfg->key, cfg->tls_priority) != SB_OK)
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
    log_info("tls_ready", "cert=%s trust_anchors=%d", cfg->cert, anchors);
    return SB_OK;
}

int s2s_tls_available(void)
{
    return tls_creds.cred != NULL && tls_creds.prio != NULL;
}

void s2s_tls_deinit(void)
{
    tlsconn_creds_free(&tls_creds);
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
