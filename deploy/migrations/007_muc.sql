-- 007_muc.sql — sb-muc (XEP-0045): every room's configuration, subject and
-- affiliations, so that the instance a room moves to (its own died, or the
-- set of instances changed) rebuilds it. Temporary rooms have a row while
-- they exist and lose it when their last occupant leaves; persistent ones
-- until destroyed. Occupants are live state: Redis `muc:{room}`.
CREATE TABLE muc_rooms (
    jid             text PRIMARY KEY,           -- room@conference.domain
    name            text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    password        text NOT NULL DEFAULT '',   -- the room secret ('' none): compared, so kept
    persistent      boolean NOT NULL DEFAULT false,
    public          boolean NOT NULL DEFAULT true,
    members_only    boolean NOT NULL DEFAULT false,
    moderated       boolean NOT NULL DEFAULT false,
    whois_anyone    boolean NOT NULL DEFAULT false,
    change_subject  boolean NOT NULL DEFAULT true,
    allow_invites   boolean NOT NULL DEFAULT false,
    max_users       integer NOT NULL DEFAULT 0, -- 0: the service's limit only
    subject         text,
    subject_nick    text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE muc_affiliations (
    room        text NOT NULL REFERENCES muc_rooms(jid) ON DELETE CASCADE,
    jid         text NOT NULL,                  -- a bare JID or a domain
    affiliation text NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
    reason      text NOT NULL DEFAULT '',
    PRIMARY KEY (room, jid)
);
