/* main.c — sb-c2s: XMPP over TCP on 5222 (STARTTLS) and 5223 (direct TLS,
 * XEP-0368). Everything else is shared with sb-bosh (srv.c). */
#include "c2s.h"

static const struct c2s_frontend main_tcp = {
    .kind = "c2s",
    .port = 5222,
    .tls_port = 5223,
    .plain_kind = C2S_LIS_STARTTLS,
    .tls_kind = C2S_LIS_TLS,
};

int main(int argc, char **argv)
{
    return c2s_srv_main(argc, argv, &main_tcp);
}
