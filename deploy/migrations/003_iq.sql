-- 003_iq.sql — what the server keeps for the iq features of the sm
-- (sm/mod_vcard.c, mod_private.c, mod_last.c, mod_blocking.c).
-- Like the roster, no foreign key to users: anonymous accounts have no
-- users row. `sbctl user del` removes an account's rows here itself.

-- XEP-0054: the <vCard xmlns='vcard-temp'/> element as serialised XML.
CREATE TABLE vcards (
    domain      text NOT NULL,
    username    text NOT NULL,
    vcard       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, username)
);

-- XEP-0049: the serialised children of one namespace.
CREATE TABLE private_storage (
    domain      text NOT NULL,
    username    text NOT NULL,
    namespace   text NOT NULL,
    data        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, username, namespace)
);

-- XEP-0012: when the last session ended, and the unavailable status text.
CREATE TABLE last_activity (
    domain      text NOT NULL,
    username    text NOT NULL,
    logout_at   timestamptz NOT NULL,
    status      text NOT NULL DEFAULT '',
    PRIMARY KEY (domain, username)
);

-- XEP-0191: one row per blocked JID (domain, bare or full, as prepared).
-- item_bare is its bare part (node@domain or domain): the sm that owns a
-- user loads "who blocks me" with it, to refuse what they send.
CREATE TABLE blocklist (
    domain      text NOT NULL,
    username    text NOT NULL,
    item        text NOT NULL,
    item_bare   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, username, item)
);
CREATE INDEX blocklist_by_item_bare ON blocklist (item_bare);
