-- 008_pep.sql — PEP (XEP-0163): each account's personal pubsub nodes and
-- their items (sm/mod_pep.c). Loaded with the account (sm/acct.c) and
-- cached in the owning sm; written through on publish, retract, delete
-- and configuration. No foreign key to users (anonymous accounts have
-- PEP nodes but no users row), like the other per-account tables; `sbctl
-- user del` / `domain del` remove the rows (sbctl/account.c).
CREATE TABLE pep_nodes (
    domain        text NOT NULL,
    username      text NOT NULL,
    node          text NOT NULL,
    access_model  text NOT NULL DEFAULT 'presence',   -- presence | open | whitelist
    persist_items boolean NOT NULL DEFAULT true,
    max_items     integer NOT NULL DEFAULT 1,          -- -1: `max` (the server's limit)
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, username, node)
);

-- Items of nodes with persist_items (the others keep theirs in memory).
-- seq orders them: the newest has the highest; a re-published id moves up.
CREATE TABLE pep_items (
    domain        text NOT NULL,
    username      text NOT NULL,
    node          text NOT NULL,
    item_id       text NOT NULL,
    payload       text NOT NULL,                       -- the serialised payload element
    seq           bigint NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, username, node, item_id)
);
