/* tls.c — GnuTLS for server-to-server streams. One credential holds our
 * certificate (presented as server on incoming streams and as client on
 * outgoing ones, so peers can authenticate us with SASL EXTERNAL) and the
 * trust anchors (the system's and/or a CA file) used to judge the peer's
 * certificate. Handshakes are driven by the loop, never blocking. */
#include "s2s.h"
#include "log.h"

#include <string.h>

static gnutls_certificate_credentials_t tls_cred;
static gnutls_priority_t tls_prio;

sb_rc s2s_tls_init(const struct s2s_cfg *cfg)
{
    int r = gnutls_certificate_allocate_credentials(&tls_cred);
    if (r < 0) {
        log_error("tls_init_failed", "error=%s", sb_log_q(gnutls_strerror(r)));
        return SB_ERROR;
    }
    r = gnutls_certificate_set_x509_key_file(tls_cred, cfg->cert, cfg->key, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
        log_error("tls_cert_failed", "cert=%s key=%s error=%s", cfg->cert, cfg->key,
                  sb_log_q(gnutls_strerror(r)));
        s2s_tls_deinit();
        return SB_ERROR;
    }
    int anchors = 0;
    if (cfg->system_trust) {
        r = gnutls_certificate_set_x509_system_trust(tls_cred);
        if (r < 0)
            log_warn("tls_system_trust_failed", "error=%s", sb_log_q(gnutls_strerror(r)));
        else
            anchors += r;
    }
    if (cfg->cafile && *cfg->cafile) {
        r = gnutls_certificate_set_x509_trust_file(tls_cred, cfg->cafile, GNUTLS_X509_FMT_PEM);
        if (r < 0) {
            log_error("tls_cafile_failed", "cafile=%s error=%s", cfg->cafile,
                      sb_log_q(gnutls_strerror(r)));
            s2s_tls_deinit();
            return SB_ERROR;
        }
        anchors += r;
    }
    const char *errpos = NULL;
    r = gnutls_priority_init(&tls_prio, cfg->tls_priority, &errpos);
    if (r < 0) {
        log_error("tls_priority_failed", "priority=%s at=%s", sb_log_q(cfg->tls_priority),
                  sb_log_q(errpos ? errpos : "-"));
        s2s_tls_deinit();
        return SB_ERROR;
    }
    log_info("tls_ready", "cert=%s trust_anchors=%d", cfg->cert, anchors);
    return SB_OK;
}

int s2s_tls_available(void)
{
    return tls_cred != NULL && tls_prio != NULL;
}

void s2s_tls_deinit(void)
{
    if (tls_prio)
        gnutls_priority_deinit(tls_prio);
    if (tls_cred)
        gnutls_certificate_free_credentials(tls_cred);
    tls_prio = NULL;
    tls_cred = NULL;
}

sb_rc s2s_tls_start(struct s2s_conn *c)
{
    if (!s2s_tls_available())
        return SB_ERROR;
    gnutls_session_t s;
    int server = c->dir == S2S_IN;
    if (gnutls_init(&s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK) < 0)
        return SB_ERROR;
    if (gnutls_priority_set(s, tls_prio) < 0 ||
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, tls_cred) < 0) {
        gnutls_deinit(s);
        return SB_ERROR;
    }
    if (server) {
        /* Ask for the peer's certificate (SASL EXTERNAL), without a CA list
         * so a peer whose issuer we do not know still sends it. */
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUEST);
        gnutls_certificate_send_x509_rdn_sequence(s, 1);
    } else if (c->remote) {
        gnutls_server_name_set(s, GNUTLS_NAME_DNS, c->remote, strlen(c->remote));
    }
    gnutls_transport_set_int(s, c->fd);
    gnutls_handshake_set_timeout(s, 0);   /* the connection deadline bounds it */
    c->tls = s;
    c->flags |= S2S_F_TLS;
    c->cert_ok = -1;
    c->state = S2S_S_TLS_HANDSHAKE;
    return SB_OK;
}

void s2s_tls_handshake(struct s2s_conn *c)
{
    for (int tries = 0;; tries++) {
        int r = gnutls_handshake(c->tls);
        if (r == GNUTLS_E_SUCCESS)
            break;
        if (r == GNUTLS_E_AGAIN) {
            s2s_conn_want(c);
            return;
        }
        if ((r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(r)) && tries < 8)
            continue;
        log_info("tls_handshake_failed", "peer=%s remote=%s error=%s", c->peer,
                 c->remote ? c->remote : "-", sb_log_q(gnutls_strerror(r)));
        s2s_conn_close(c, "tls-handshake-failed");
        return;
    }
    char *desc = gnutls_session_get_desc(c->tls);
    log_debug("tls_established", "peer=%s suite=%s", c->peer, sb_log_q(desc ? desc : "?"));
    gnutls_free(desc);
    /* A new stream starts over TLS (RFC 6120 §5.4.3.3). */
    c->state = S2S_S_WAIT_HEADER;
    c->flags &= ~S2S_F_HDR_SENT;
    if (c->dir == S2S_OUT)
        s2s_stream_send_header(c);
    s2s_conn_want(c);
    if (gnutls_record_check_pending(c->tls) > 0)
        ev_feed_event(s2s.loop, &c->io, EV_READ);
}

int s2s_tls_peer_valid(struct s2s_conn *c, const char *domain)
{
    if (!c->tls || !domain)
        return 0;
    unsigned int list = 0;
    if (!gnutls_certificate_get_peers(c->tls, &list) || list == 0) {
        log_info("peer_cert", "peer=%s domain=%s valid=0 why=no-certificate", c->peer, domain);
        return 0;
    }
    unsigned int status = 0;
    int r = gnutls_certificate_verify_peers3(c->tls, domain, &status);
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
