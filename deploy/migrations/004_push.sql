-- 004_push.sql — XEP-0357 push notifications (sm/mod_push.c): the app
-- servers ("XMPP Push Services") an account enabled. One row per (jid,
-- node) pair; a second <enable/> of the same pair replaces its publish
-- options (XEP-0357 §5). Loaded with the account (sm/acct.c) and cached in
-- the owning sm, so a message costs no extra query. Like the other
-- per-account tables, no foreign key to users; `sbctl user del` and
-- `domain del` remove the rows (sbctl/account.c, account_tables).
CREATE TABLE push_registrations (
    id          bigserial PRIMARY KEY,      -- named in the notification's iq id
    domain      text NOT NULL,
    username    text NOT NULL,
    jid         text NOT NULL,              -- the push service, as prepared
    node        text NOT NULL,
    options     text NOT NULL DEFAULT '',   -- the publish-options <x/> form, serialised
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain, username, jid, node)
);
