/* account.h — what an account is in PostgreSQL, shared by sbctl (user
 * add/passwd/del) and the front-ends (XEP-0077 registration, password
 * change, removal): the eight SCRAM columns of `users` derived from a
 * password, the statements that write them, and every table that holds
 * rows of one account (deleted with it). */
#ifndef SB_AUTH_ACCOUNT_H
#define SB_AUTH_ACCOUNT_H

#include "sb.h"

/* The eight credential columns, base64 text, in table order: SHA-1 salt,
 * iter, stored, server, then the same for SHA-256. */
struct auth_keys {
    char v[8][96];
};
/* password: already SASLprepped. Two PBKDF2 runs (≈1 ms at 4096). */
void auth_keys_derive(const char *password, unsigned iter, struct auth_keys *out);

/* $1 domain, $2 username, $3..$10 the auth_keys columns. */
#define AUTH_USER_INSERT_SQL \
    "INSERT INTO users(domain, username, scram_sha1_salt, scram_sha1_iter," \
    " scram_sha1_stored, scram_sha1_server, scram_sha256_salt, scram_sha256_iter," \
    " scram_sha256_stored, scram_sha256_server)" \
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
#define AUTH_USER_PASSWD_SQL \
    "UPDATE users SET scram_sha1_salt=$3, scram_sha1_iter=$4, scram_sha1_stored=$5," \
    " scram_sha1_server=$6, scram_sha256_salt=$7, scram_sha256_iter=$8," \
    " scram_sha256_stored=$9, scram_sha256_server=$10" \
    " WHERE domain=$1 AND username=$2"

/* Every table that holds rows of one account (deploy/migrations: keyed by
 * domain, username; no foreign key, since anonymous accounts have rows but
 * no users row; tables with a foreign key to users, like tokens, go with
 * it by ON DELETE CASCADE). A new per-user table is listed here, and
 * `sbctl user del`, `domain del` and XEP-0077 <remove/> remove its rows. */
extern const char *const auth_account_tables[];
extern const size_t auth_account_ntables;

/* What an account leaves outside PostgreSQL: its uploaded files (XEP-0363)
 * in [upload] dir, which only the sb-bosh processes (and sbctl on their
 * hosts) can reach. Run before the table deletes (or in the same
 * statement: a CTE sees the rows as they were), this queues the ids of the
 * account's files ($1 domain, $2 username; the DOMAIN form: $1 only) in
 * upload_trash; every sb-bosh takes the queue every few seconds and
 * unlinks the files (c2s/web_upload.c), sbctl at once when it sees the
 * directory (sbctl/account.c). */
#define AUTH_ACCOUNT_TRASH_SQL                                                     \
    "INSERT INTO upload_trash (id) SELECT id FROM upload_files"                    \
    " WHERE domain=$1 AND username=$2 ON CONFLICT DO NOTHING RETURNING id"
#define AUTH_DOMAIN_TRASH_SQL                                                      \
    "INSERT INTO upload_trash (id) SELECT id FROM upload_files"                    \
    " WHERE domain=$1 ON CONFLICT DO NOTHING RETURNING id"

#endif
