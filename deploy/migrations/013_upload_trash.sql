-- 013_upload_trash.sql — XEP-0363 files of deleted accounts. `sbctl user
-- del`, `domain del --force` and XEP-0077 <remove/> delete the account's
-- upload_files/upload_quota rows and, in the same transaction, queue the
-- file ids here (auth/account.h AUTH_ACCOUNT_TRASH_SQL): the files sit in
-- [upload] dir, which only the sb-bosh processes can reach. Every sb-bosh
-- takes the queue every few seconds (DELETE … RETURNING, SKIP LOCKED, so two
-- never take the same ids) and unlinks the files; sbctl unlinks at once the
-- ones it can see.
CREATE TABLE upload_trash (
    id          text PRIMARY KEY,
    queued_at   timestamptz NOT NULL DEFAULT now()
);
