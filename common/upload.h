/* upload.h — XEP-0363 HTTP File Upload, the pieces every process shares:
 * sb-sm hands out slots (sm/mod_upload.c), sb-bosh serves the PUT and GET
 * (c2s/web_upload.c), sbctl purges (sbctl/upload.c).
 *
 * A slot is verifiable by any sb-bosh without shared state: the PUT URL is
 *   <url>/<id>/<name>?e=<expiry>&n=<size>&s=<hex HMAC-SHA256>
 * signed with the cluster's [upload] secret over the path `<id>/<name>`,
 * the size, the content type and the expiry (unix seconds). `id` is 32
 * random characters [a-z0-9] (165 bits), so the GET URL <url>/<id>/<name>
 * is public but unguessable. The PUT's Content-Type (absent:
 * application/octet-stream) must be the one signed, its Content-Length
 * the size. The signature rides in the URL rather than in a <header/>:
 * XEP-0363 lets clients drop headers, no client can drop the URL. `name` is the client's file name
 * percent-encoded (upload_name_encode).
 *
 * The store (upload_store_*) is one small interface over a directory:
 * <dir>/<id[0..1]>/<id>, written under a temporary name and renamed, with a
 * one-line header (the content type and name) before the bytes. For more
 * than one sb-bosh host the directory must be shared storage (NFS, CephFS…):
 * any bosh may take the PUT and any other the GET. Another backend (an
 * S3-compatible store) would implement the same functions. */
#ifndef SB_UPLOAD_H
#define SB_UPLOAD_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>
#include "sb.h"

#define UPLOAD_ID_LEN 32
#define UPLOAD_NAME_MAX 255             /* bytes of the client's name */
#define UPLOAD_ENAME_MAX (UPLOAD_NAME_MAX * 3)
#define UPLOAD_CTYPE_MAX 100
#define UPLOAD_SIG_HEX 64

/* [upload], read by sb-sm, sb-bosh and sbctl alike (environment
 * SB_UPLOAD_<KEY>, then [upload], then [cluster]). */
struct upload_cfg {
    const char *url;            /* base URL of the files, no trailing '/'; "" = off */
    char prefix[128];           /* its path part, what sb-bosh serves ("/upload") */
    const char *dir;            /* the store's directory */
    char secret[128];           /* HMAC key (secret or secret_file, >= 16 chars) */
    long long max_size;         /* bytes of one file (max_file_size) */
    long long quota;            /* bytes per user over expire_days; 0 = none */
    long expire_days;           /* files and quota rows kept this long; 0 = ever */
    long slot_ttl;              /* seconds a PUT URL stays valid */
    const char *types;          /* allowed content types (space/comma list); "" = any */
};

/* SB_OK: configured; SB_DONE: off (no url); SB_ERROR: logged. */
sb_rc upload_cfg_load(struct upload_cfg *c);
/* Is this content type allowed (c->types)? Matched without parameters,
 * case-insensitive; "type/ *" entries match a whole type. */
int upload_type_allowed(const struct upload_cfg *c, const char *ctype);
/* A content type safe to echo in an HTTP header: token/token[; params]. */
int upload_ctype_valid(const char *ctype);

/* A decimal of at most 18 digits, nothing else (sizes, expiries), or -1. */
long long upload_decimal(const char *s);

/* Percent-encode a file name (everything but A-Za-z0-9-._~) into out
 * (UPLOAD_ENAME_MAX + 1). SB_ERROR: empty, over UPLOAD_NAME_MAX, or a
 * control character. */
sb_rc upload_name_encode(const char *name, char *out, size_t cap);
/* Is s a well-formed id / encoded name? */
int upload_id_valid(const char *s, size_t len);
int upload_ename_valid(const char *s, size_t len);

/* hex HMAC-SHA256 of "<path>\n<size>\n<ctype>\n<expiry>" into out[65]. */
void upload_sign(const char *secret, const char *path, long long size, const char *ctype,
                 long long expiry, char out[UPLOAD_SIG_HEX + 1]);
/* Constant-time check of a hex signature. */
int upload_sig_ok(const char *secret, const char *path, long long size, const char *ctype,
                  long long expiry, const char *sig);

/* ---- the store ------------------------------------------------------------- */
struct upload_put;              /* a file being written */

/* Start writing file `id` (name and ctype go in its header). SB_DONE: it
 * exists already; SB_LIMIT: the disk is full; SB_ERROR: logged. */
sb_rc upload_store_open(const char *dir, const char *id, const char *ename,
                        const char *ctype, struct upload_put **out);
/* SB_OK, SB_LIMIT (disk full: ENOSPC/EDQUOT), SB_ERROR. */
sb_rc upload_store_write(struct upload_put *p, const void *data, size_t len);
/* Rename into place (SB_OK) or, on any failure, drop it; p is freed. */
sb_rc upload_store_commit(struct upload_put *p);
void upload_store_abort(struct upload_put *p);

/* Open stored file id for reading: fd, where its bytes start, how many,
 * its content type (cap >= UPLOAD_CTYPE_MAX + 1) and encoded name.
 * SB_DECLINED: no such file (or a different name). */
sb_rc upload_store_get(const char *dir, const char *id, const char *ename, int *fd,
                       off_t *off, off_t *len, char *ctype, size_t cap);

/* Remove stored file id: SB_OK, SB_DECLINED when there is none. */
sb_rc upload_store_remove(const char *dir, const char *id);

/* Expiry: walk the store removing files (and stale temporaries) whose
 * mtime is older than max_age seconds, at most `budget` entries per call,
 * carrying on where the last call stopped. Returns the files removed;
 * *done set when a whole pass ended. */
struct upload_sweep;
struct upload_sweep *upload_sweep_new(const char *dir);
long upload_sweep_step(struct upload_sweep *s, double max_age, long budget, int *done);
void upload_sweep_free(struct upload_sweep *s);

/* The quota rows' expiry (sm timer, sbctl upload purge): one statement,
 * $1 = expire_days. */
extern const char UPLOAD_PURGE_SQL[];
/* Deleted accounts' files (migration 011, auth/account.h): takes up to
 * UPLOAD_TRASH_BATCH queued ids (rows locked by another taker skipped),
 * returning them. UPLOAD_TRASH_DONE_SQL: $1 the ids (a text array) whose
 * files are gone. */
#define UPLOAD_TRASH_BATCH 500
extern const char UPLOAD_TRASH_TAKE_SQL[];
extern const char UPLOAD_TRASH_DONE_SQL[];

#endif
