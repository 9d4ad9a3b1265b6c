/* tls.c — GnuTLS for client connections: one certificate credential and one
 * priority cache for the process, a server session per connection, and the
 * handshake driven by the loop (never blocking: GNUTLS_NONBLOCK on a
 * non-blocking socket, the direction of the next wait taken from
 * gnutls_record_get_direction). */
#include "c2s.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static gnutls_certificate_credentials_t tls_cred;
static gnutls_priority_t tls_prio;

/* Credentials replaced by a reload: sessions that started with them keep
 * pointers into them (gnutls does not count references), so they are freed
 * only at exit. One pair per SIGHUP. */
struct tls_old {
    struct tls_old *next;
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
};
static struct tls_old *tls_retired;

/* Load cert/key and the priority string into fresh objects. */
static sb_rc tls_load(const struct c2s_cfg *cfg, gnutls_certificate_credentials_t *cred,
                      gnutls_priority_t *prio)
{
    *cred = NULL;
    *prio = NULL;
    int r = gnutls_certificate_allocate_credentials(cred);
    if (r < 0) {
        log_error("tls_init_failed", "error=%s", sb_log_q(gnutls_strerror(r)));
        return SB_ERROR;
    }
    r = gnutls_certificate_set_x509_key_file(*cred, cfg->cert, cfg->key, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
        log_error("tls_cert_failed", "cert=%s key=%s error=%s", cfg->cert, cfg->key,
                  sb_log_q(gnutls_strerror(r)));
        gnutls_certificate_free_credentials(*cred);
        *cred = NULL;
        return SB_ERROR;
    }
    const char *errpos = NULL;
    r = gnutls_priority_init(prio, cfg->tls_priority, &errpos);
    if (r < 0) {
        log_error("tls_priority_failed", "priority=%s at=%s", sb_log_q(cfg->tls_priority),
                  sb_log_q(errpos ? errpos : "-"));
        gnutls_certificate_free_credentials(*cred);
        *cred = NULL;
        *prio = NULL;
        return SB_ERROR;
    }
    return SB_OK;
}

sb_rc c2s_tls_reload(const struct c2s_cfg *cfg)
{
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    if (tls_load(cfg, &cred, &prio) != SB_OK)
        return SB_ERROR;               /* logged; the old credentials stay */
    struct tls_old *old = malloc(sizeof *old);
    if (!old) {
        gnutls_priority_deinit(prio);
        gnutls_certificate_free_credentials(cred);
        return SB_ERROR;
    }
    old->cred = tls_cred;
    old->prio = tls_prio;
    old->next = tls_retired;
    tls_retired = old;
    tls_cred = cred;
    tls_prio = prio;
    log_info("tls_reloaded", "cert=%s priority=%s", cfg->cert, sb_log_q(cfg->tls_priority));
    return SB_OK;
}

sb_rc c2s_tls_init(const struct c2s_cfg *cfg)
{
    if (tls_load(cfg, &tls_cred, &tls_prio) != SB_OK)
        return SB_ERROR;
    log_info("tls_ready", "cert=%s priority=%s", cfg->cert, sb_log_q(cfg->tls_priority));
    return SB_OK;
}

int c2s_tls_available(void)
{
    return tls_cred != NULL && tls_prio != NULL;
}

void c2s_tls_deinit(void)
{
    if (tls_prio)
        gnutls_priority_deinit(tls_prio);
    if (tls_cred)
        gnutls_certificate_free_credentials(tls_cred);
    tls_prio = NULL;
    tls_cred = NULL;
    while (tls_retired) {
        struct tls_old *o = tls_retired;
        tls_retired = o->next;
        if (o->prio)
            gnutls_priority_deinit(o->prio);
        if (o->cred)
            gnutls_certificate_free_credentials(o->cred);
        free(o);
    }
}

sb_rc c2s_tls_session_new(int fd, gnutls_session_t *out)
{
    if (!c2s_tls_available())
        return SB_ERROR;
    gnutls_session_t s;
    if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0)
        return SB_ERROR;
    if (gnutls_priority_set(s, tls_prio) < 0 ||
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, tls_cred) < 0) {
        gnutls_deinit(s);
        return SB_ERROR;
    }
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_IGNORE);
    gnutls_transport_set_int(s, fd);
    gnutls_handshake_set_timeout(s, 0);   /* the caller's deadline bounds it */
    *out = s;
    return SB_OK;
}

sb_rc c2s_tls_start(struct c2s_conn *c)
{
    gnutls_session_t s;
    if (c2s_tls_session_new(c->fd, &s) != SB_OK)
        return SB_ERROR;
    c->tls = s;
    c->flags |= C2S_F_TLS;
    c2s_conn_set_state(c, C2S_S_TLS_HANDSHAKE);
    return SB_OK;
}

void c2s_tls_handshake(struct c2s_conn *c)
{
    for (int tries = 0;; tries++) {
        int r = gnutls_handshake(c->tls);
        if (r == GNUTLS_E_SUCCESS)
            break;
        if (r == GNUTLS_E_AGAIN) {
            c2s_conn_want(c);
            return;
        }
        if ((r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(r)) && tries < 8)
            continue;
        log_info("tls_handshake_failed", "peer=%s error=%s", c->peer,
                 sb_log_q(gnutls_strerror(r)));
        c2s_conn_close(c, "tls-handshake-failed");
        return;
    }
    char *desc = gnutls_session_get_desc(c->tls);
    log_debug("tls_established", "peer=%s suite=%s", c->peer, sb_log_q(desc ? desc : "?"));
    gnutls_free(desc);
    /* A new stream starts over TLS (RFC 6120 §5.4.3.3). */
    c2s_conn_set_state(c, C2S_S_CONNECTED);
    c2s_conn_want(c);
    /* The client may already have sent its header in the same flight. */
    if (gnutls_record_check_pending(c->tls) > 0)
        ev_feed_event(c2s.loop, &c->io, EV_READ);
}
