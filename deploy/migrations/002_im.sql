-- 002_im.sql — presence subscriptions and offline messages (RFC 6121).
-- Pending inbound subscription requests: kept until the user answers,
-- re-sent at each initial presence. A contact need not be in the roster.
CREATE TABLE roster_pending (
    domain      text NOT NULL,
    username    text NOT NULL,
    contact     text NOT NULL,                   -- bare JID of the requester
    stanza      text NOT NULL,                   -- the request as received
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, username, contact)
);

-- Messages stored for a user without an available resource, each with its
-- XEP-0203 delay stamp already inside; deleted once handed to a session.
CREATE TABLE offline (
    id          bigserial PRIMARY KEY,
    domain      text NOT NULL,
    username    text NOT NULL,
    stanza      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offline_by_user ON offline (domain, username, id);
