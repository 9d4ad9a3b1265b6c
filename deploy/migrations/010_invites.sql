-- 010_invites.sql — invitations for XEP-0077 in-band registration on a
-- domain with `register_invite_only = 1`: `sbctl invite create DOMAIN`
-- prints a random token once; only its SHA-256 (hex) is kept here. A
-- registration that presents it deletes the row in the same statement
-- that creates the account (one use).
CREATE TABLE invites (
    id          bigserial PRIMARY KEY,
    domain      text NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    hash        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz                       -- NULL: never
);
