-- 005_archive.sql — the message archive (XEP-0313 MAM v2) with XEP-0359
-- stanza ids and XEP-0431 full-text search (sm/mod_mam.c).
-- Like the roster, no foreign key to users; `sbctl user del` removes an
-- account's rows here itself (sbctl/account.c account_tables).

-- One row per archived message per owner: a message between two local
-- users is two rows (one in each archive). `id` orders an archive (rows are
-- inserted in the order the sm saw the messages); clients never see it:
-- they see `stanza_id`, random per row (sb_random_id), so no one can guess
-- another archive's ids.
CREATE TABLE archive (
    id          bigserial PRIMARY KEY,
    domain      text NOT NULL,
    username    text NOT NULL,
    stanza_id   text NOT NULL,
    with_bare   text NOT NULL,                   -- the other party, bare
    with_res    text NOT NULL DEFAULT '',        -- and its resource, if any
    outgoing    boolean NOT NULL,                -- sent by the owner
    ts          timestamptz NOT NULL,            -- when the sm archived it
    stanza      text NOT NULL,                   -- the message as delivered
    body_tsv    tsvector NOT NULL                -- [sm] mam_fts_config of <body>
);
-- Per-owner queries walk (domain, username, id) in either direction;
-- `with` filters have their own index; stanza ids are unique per owner (an
-- insert retried after a lost answer does not duplicate a row).
CREATE UNIQUE INDEX archive_by_stanza_id ON archive (domain, username, stanza_id);
CREATE INDEX archive_by_owner ON archive (domain, username, id);
CREATE INDEX archive_by_with ON archive (domain, username, with_bare, id);
CREATE INDEX archive_by_ts ON archive (ts);      -- retention deletes
CREATE INDEX archive_fulltext ON archive USING gin (body_tsv);

-- XEP-0313 §7 preferences: the default and the always/never JID lists.
-- No row: [sm] mam_default.
CREATE TABLE archive_prefs (
    domain        text NOT NULL,
    username      text NOT NULL,
    default_mode  text NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
    PRIMARY KEY (domain, username)
);
CREATE TABLE archive_prefs_jid (
    domain      text NOT NULL,
    username    text NOT NULL,
    jid         text NOT NULL,                   -- bare JID
    always      boolean NOT NULL,                -- false: never
    PRIMARY KEY (domain, username, jid)
);

-- Does owner (d, u) archive a message with bare JID w? The owning sm
-- decides this from its cache for the recipient; the copy of a local
-- sender is written by the recipient's sm, which has no cache of the
-- sender's preferences, so the insert asks here (same rules as
-- common/mam.c mam_wanted). dflt = [sm] mam_default.
CREATE FUNCTION archive_wanted(d text, u text, w text, dflt text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM users WHERE domain = d AND username = u)
       AND coalesce(
           (SELECT always FROM archive_prefs_jid WHERE domain = d AND username = u AND jid = w),
           CASE coalesce((SELECT default_mode FROM archive_prefs
                          WHERE domain = d AND username = u), dflt)
               WHEN 'always' THEN true
               WHEN 'never' THEN false
               ELSE EXISTS (SELECT 1 FROM roster WHERE domain = d AND username = u
                            AND contact = w AND NOT removed)
           END)
$$;
