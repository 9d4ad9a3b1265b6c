-- 001_init.sql — domains, accounts (SCRAM keys only, never a password),
-- rosters with a per-user version counter and tombstones.
-- Applied by `sbctl db migrate` inside one transaction; recorded in
-- schema_migrations by the tool, not by this file.

CREATE TABLE domains (
    name        text PRIMARY KEY,
    anonymous   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Salts and keys are base64 text; StoredKey/ServerKey per RFC 5802.
CREATE TABLE users (
    domain               text NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    username             text NOT NULL,          -- nodeprepped local part
    scram_sha1_salt      text,
    scram_sha1_iter      integer,
    scram_sha1_stored    text,
    scram_sha1_server    text,
    scram_sha256_salt    text,
    scram_sha256_iter    integer,
    scram_sha256_stored  text,
    scram_sha256_server  text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, username)
);

-- No foreign key to users: anonymous sessions have rosters too, and have
-- no users row. `sbctl user del` removes an account's roster rows itself.
-- One row per contact; removed rows stay as tombstones so a client with an
-- older roster version gets exactly the changes since (XEP-0237).
CREATE TABLE roster (
    domain        text NOT NULL,
    username      text NOT NULL,
    contact       text NOT NULL,                 -- bare JID
    name          text,
    subscription  text NOT NULL DEFAULT 'none'
                  CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask           text,                          -- 'subscribe' while pending out
    groups        text[] NOT NULL DEFAULT '{}',
    version       bigint NOT NULL,
    removed       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (domain, username, contact)
);
CREATE INDEX roster_by_version ON roster (domain, username, version);

-- The current roster version of each user (bumped with every change).
CREATE TABLE roster_version (
    domain    text NOT NULL,
    username  text NOT NULL,
    version   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, username)
);
