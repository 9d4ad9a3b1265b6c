/* web_main.c — sb-bosh: the c2s session core behind HTTP on 5280 and HTTPS
 * on 5281 (BOSH, WebSocket, pre-bind; see web.h). Reads [bosh]: the c2s
 * keys (listen, port, tls_port, cert, key, max_stanza, login_timeout, …)
 * plus wait, hold, inactivity, polling, maxpause, max_body, ws_ping,
 * cors_origins, prebind_secret and the three paths; [upload] for the
 * XEP-0363 files it serves (web_upload.c). */
#include "web.h"
#include "config.h"
#include "log.h"

struct web_cfg web_cfg;

static sb_rc web_init(void)
{
    struct web_cfg *w = &web_cfg;
    w->wait_max = (int)sb_config_int("wait", 60);
    w->hold_max = (int)sb_config_int("hold", 1);
    w->inactivity = (int)sb_config_int("inactivity", 60);
    w->polling = (int)sb_config_int("polling", 2);
    w->maxpause = (int)sb_config_int("maxpause", 120);
    w->max_body = (size_t)sb_config_int("max_body", (long)c2s.cfg.limits.max_stanza + 8192);
    w->ws_ping = (int)sb_config_int("ws_ping", 30);
    w->cors_origins = sb_config_str("cors_origins", "*");
    w->prebind_secret = sb_config_str("prebind_secret", "");
    w->bosh_path = sb_config_str("bosh_path", "/http-bind");
    w->ws_path = sb_config_str("ws_path", "/xmpp-websocket");
    w->prebind_path = sb_config_str("prebind_path", "/http-pre-bind");
    if (w->wait_max < 1 || w->hold_max < 0 || w->hold_max > 4 || w->inactivity < 2 ||
        w->polling < 0 || w->maxpause < 0 || w->max_body < 1024) {
        log_error("config_invalid", "wait=%d hold=%d inactivity=%d polling=%d maxpause=%d "
                  "max_body=%zu", w->wait_max, w->hold_max, w->inactivity, w->polling,
                  w->maxpause, w->max_body);
        return SB_ERROR;
    }
    if (*w->prebind_secret && strlen(w->prebind_secret) < 16) {
        log_error("config_invalid", "key=prebind_secret reason=\"at least 16 characters\"");
        return SB_ERROR;
    }
    sb_secret_digest(w->prebind_secret, strlen(w->prebind_secret), w->prebind_digest);
    web_http_init();
    if (web_upload_init() != SB_OK)
        return SB_ERROR;
    web_bosh_init();
    web_ws_ping_all();
    log_info("web_ready", "bosh=%s ws=%s prebind=%s wait=%d hold=%d inactivity=%d ws_ping=%d "
             "cors=%s", w->bosh_path, w->ws_path, *w->prebind_secret ? w->prebind_path : "off",
             w->wait_max, w->hold_max, w->inactivity, w->ws_ping, sb_log_q(w->cors_origins));
    return SB_OK;
}

static void web_stop(void)
{
    web_http_stop();
}

static void web_cleanup(void)
{
    web_bosh_free_all();
    web_http_free_all();
    web_upload_free_all();
}

static const struct c2s_frontend web_frontend = {
    .kind = "bosh",
    .port = 5280,
    .tls_port = 5281,
    .plain_kind = C2S_LIS_HTTP,
    .tls_kind = C2S_LIS_HTTPS,
    .accept_http = web_http_accept,
    .init = web_init,
    .stop = web_stop,
    .cleanup = web_cleanup,
};

int main(int argc, char **argv)
{
    return c2s_srv_main(argc, argv, &web_frontend);
}
