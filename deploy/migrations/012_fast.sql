-- 012_fast.sql — XEP-0484 FAST tokens (SASL2 HT-SHA-256-* mechanisms).
-- A FAST login proves HMAC(token, "Initiator" || cb-data), so the server
-- must be able to compute the token; it is never stored. A row keeps a
-- random seed, and the token is HMAC-SHA-256 keyed by the cluster's
-- `sasl_secret` over (domain, username, user-agent id, seed): a copy of
-- this table alone gives no usable token. Tokens are bound to one client
-- (the SASL2 user-agent id) and one mechanism. At most two rows per
-- client: the current token and the previous one, which stays valid until
-- the client logs in with the current one (XEP-0484 §4.3 rotation).
-- `last_count` is the highest FAST `count` seen (replay protection).
CREATE TABLE fast_tokens (
    id          bigserial PRIMARY KEY,
    domain      text NOT NULL,
    username    text NOT NULL,
    ua_id       text NOT NULL,
    mechanism   text NOT NULL,
    seed        text NOT NULL,                -- hex, 16 random bytes
    current     boolean NOT NULL DEFAULT true,
    last_count  bigint NOT NULL DEFAULT -1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    FOREIGN KEY (domain, username) REFERENCES users(domain, username) ON DELETE CASCADE
);
CREATE INDEX fast_tokens_by_client ON fast_tokens (domain, username, ua_id);
