/* certs.h — which certificate a TLS handshake presents: the one of the
 * local domain it is for. One table per process (c2s, bosh, s2s):
 *   - the default pair (`cert`/`key`), for every domain without its own;
 *   - per served domain, `[domain.NAME] cert` (+ `key`; default: the key is
 *     in the cert file), else `cert_dir`/NAME.pem (the chain, and the key
 *     too unless `cert_dir`/NAME.key exists).
 * The files are read at start, on SIGHUP and when the set of served
 * domains changes (common/domains.h), never during a handshake: a
 * handshake looks its domain up in the loaded table (sorted, bsearch).
 *
 * The domain of a handshake is the one its owner names before it starts
 * (sb_certs_session_domain: a STARTTLS stream's `to`, an outgoing s2s
 * stream's `from`), else the client's SNI (direct TLS), else the default.
 * Pairs replaced by a reload stay allocated until sb_certs_free (gnutls
 * keeps pointers to them in sessions already running), so nobody is
 * dropped and new handshakes see the new files. */
#ifndef SB_CERTS_H
#define SB_CERTS_H

#include <gnutls/gnutls.h>

#include "sb.h"

/* Read the default pair and, for the served domains (sb_domains_csv), their
 * own. SB_ERROR (logged) when the default pair does not load: at start the
 * caller gives up, on a reload the pairs in force stay. A domain whose
 * files fail keeps its previous pair (one log line naming the file and
 * the GnuTLS error). dir may be NULL or "" (no directory). */
sb_rc sb_certs_load(const char *cert, const char *key, const char *dir);
/* The served domains changed: load the pairs of domains that have none yet
 * (when their files exist), forget those of domains no longer served. */
void sb_certs_domains_changed(void);
/* Handshakes on cred take their certificate from this table (server and
 * client role: an outgoing s2s stream's client certificate). */
void sb_certs_attach(gnutls_certificate_credentials_t cred);
/* The domain session s is for, known before its handshake (the session's
 * user pointer; domain must outlive the handshake: an interned name).
 * "" means the default pair; unset (NULL) lets SNI choose. */
void sb_certs_session_domain(gnutls_session_t s, const char *domain);
/* Number of domains with a pair of their own (for logs and status). */
int sb_certs_count(void);
void sb_certs_free(void);

#endif
