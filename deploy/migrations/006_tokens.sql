-- 006_tokens.sql — our own login tokens (SASL X-OAUTH2 / OAUTHBEARER on a
-- domain with `tokens = own`): `sbctl token issue` prints a random token
-- once; only its SHA-256 (hex) is kept here. Revoking deletes the row (and
-- ends the sessions that logged in with it); deleting the account deletes
-- its tokens.
CREATE TABLE tokens (
    id          bigserial PRIMARY KEY,
    domain      text NOT NULL,
    username    text NOT NULL,
    hash        text NOT NULL UNIQUE,         -- hex SHA-256 of the whole token
    scope       text NOT NULL DEFAULT 'xmpp', -- space-separated; a login needs 'xmpp'
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,                  -- NULL: never
    last_used   timestamptz,
    FOREIGN KEY (domain, username) REFERENCES users(domain, username) ON DELETE CASCADE
);
CREATE INDEX tokens_by_user ON tokens (domain, username);
