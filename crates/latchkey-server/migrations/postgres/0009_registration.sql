-- latchkey schema v9 (PostgreSQL): dynamic client registration (RFC 7591/7592).
-- registration_tokens: the initial access tokens an operator creates (`latchkey
-- registration-token create`), stored as the SHA-256 of the token only. A registration counts
-- one use; a token is usable while unexpired, unrevoked (a revoked token is deleted) and under
-- max_uses (NULL: no limit). scope_limit and audience_limit (NULL: none) bound the scope and
-- the audiences a registration may ask for.
-- client_registrations: one row per client registered this way: the SHA-256 of its
-- registration access token (RFC 7592 §1), the initial access token it was registered with,
-- and that token's limits, which keep applying to the client's later updates. Deleting
-- the client deletes its row.
CREATE TABLE registration_tokens (
    token_id     TEXT PRIMARY KEY,
    token_hash   BYTEA NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    max_uses     BIGINT,
    uses         BIGINT NOT NULL DEFAULT 0,
    scope_limit  TEXT,
    audience_limit TEXT
);
CREATE INDEX registration_tokens_expiry ON registration_tokens (expires_at);

CREATE TABLE client_registrations (
    client_id          TEXT PRIMARY KEY REFERENCES clients (client_id) ON DELETE CASCADE,
    access_token_hash  BYTEA NOT NULL UNIQUE,
    token_id           TEXT NOT NULL,
    scope_limit        TEXT,
    audience_limit     TEXT
);
