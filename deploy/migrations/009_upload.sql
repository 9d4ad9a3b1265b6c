-- 009_upload.sql — XEP-0363 HTTP File Upload (sm/mod_upload.c): one row per
-- slot handed out, and the bytes each user holds. A slot request reserves
-- its size in upload_quota with one conditional upsert (atomic under
-- concurrent requests of one user, whichever sm takes them); the expiry
-- (sm's hourly timer, `sbctl upload purge`) deletes rows older than
-- [upload] expire_days and gives their bytes back. The files themselves are
-- in [upload] dir, keyed by id.
CREATE TABLE upload_files (
    id          text PRIMARY KEY,             -- the slot's random id (URL path)
    domain      text NOT NULL,
    username    text NOT NULL,
    size        bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX upload_files_by_age ON upload_files (created_at);

CREATE TABLE upload_quota (
    domain      text NOT NULL,
    username    text NOT NULL,
    bytes       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, username)
);
