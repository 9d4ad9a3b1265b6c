/* account.c — the account's columns and tables (account.h). */
#include <stdio.h>

#include "config.h"
#include "account.h"
#include "auth-int.h"

const char *const auth_account_tables[] = {
    "roster", "roster_version", "roster_pending", "offline", "vcards",
    "private_storage", "last_activity", "blocklist", "push_registrations", "archive",
    "archive_prefs", "archive_prefs_jid", "pep_nodes", "pep_items", "fast_tokens",
    "upload_files", "upload_quota",     /* the files: AUTH_ACCOUNT_TRASH_SQL first */
};
const size_t auth_account_ntables = SB_ARRAY_LEN(auth_account_tables);

static void keys_fill(char *salt, char *iter, char *stored, char *server,
                      const struct scram_cred *c)
{
    size_t dl = scram_digest_len(c->hash);
    auth_b64_encode(c->salt, c->saltlen, salt);
    snprintf(iter, 96, "%u", c->iter);
    auth_b64_encode(c->stored_key, dl, stored);
    auth_b64_encode(c->server_key, dl, server);
}

void auth_keys_derive(const char *password, unsigned iter, struct auth_keys *out)
{
    struct scram_cred c;
    scram_cred_make(&c, SCRAM_SHA1, password, iter);
    keys_fill(out->v[0], out->v[1], out->v[2], out->v[3], &c);
    scram_cred_make(&c, SCRAM_SHA256, password, iter);
    keys_fill(out->v[4], out->v[5], out->v[6], out->v[7], &c);
}
