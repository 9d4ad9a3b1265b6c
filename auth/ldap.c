/* ldap.c — passwords checked against an LDAP directory. Not built yet:
 * an LDAP domain answers temporary-auth-failure (logged) until it is. */
#include "log.h"
#include "auth-int.h"

sb_rc auth_ldap_check(struct ev_loop *loop, const char *domain, const char *user,
                      const char *password, auth_check_cb cb, void *arg)
{
    log_warn("ldap_unavailable", "domain=%s reason=not-built", sb_log_q(domain));
    return SB_ERROR;
}
