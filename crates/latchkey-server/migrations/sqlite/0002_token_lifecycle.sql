-- latchkey schema v2 (SQLite): introspection rights, opaque tokens, revocation, key lifecycle,
-- secret last use. Times are seconds since the Unix epoch.

ALTER TABLE clients ADD COLUMN can_introspect INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN token_format TEXT NOT NULL DEFAULT 'jwt';    -- jwt | opaque
-- Tokens carry the epoch their client had when they were issued; `client revoke-tokens` and
-- `client disable` move it on, which revokes every token issued before.
ALTER TABLE clients ADD COLUMN token_epoch INTEGER NOT NULL DEFAULT 0;

-- Written in batches from memory, so the token path never waits on it.
ALTER TABLE client_secrets ADD COLUMN last_used_at INTEGER;

-- Key lifecycle: next (published, not signing) → current (signing) → retired (published for
-- verification only) → removed (private key erased, no longer published).
ALTER TABLE signing_keys ADD COLUMN activated_at INTEGER;
ALTER TABLE signing_keys ADD COLUMN retired_at INTEGER;
ALTER TABLE signing_keys ADD COLUMN removed_at INTEGER;
-- NULL: private_key is PKCS#8 in the clear; 'A256GCM:<kek id>': sealed with that KEK.
ALTER TABLE signing_keys ADD COLUMN encryption TEXT;
UPDATE signing_keys SET activated_at = created_at WHERE state = 'current';
CREATE UNIQUE INDEX one_next_key_per_alg ON signing_keys (alg) WHERE state = 'next';

-- The counter servers watch also moves for key changes now, not only for clients.
ALTER TABLE client_generation RENAME TO generation;

-- Opaque (reference) access tokens: only a SHA-256 hash of the token is stored.
CREATE TABLE opaque_tokens (
    token_hash   BLOB PRIMARY KEY NOT NULL,
    jti          TEXT NOT NULL UNIQUE,
    client_id    TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    scope        TEXT NOT NULL,          -- space-separated granted scope
    audience     TEXT NOT NULL,          -- space-separated audiences
    issued_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    epoch        INTEGER NOT NULL         -- the client's token_epoch at issue
) STRICT;
CREATE INDEX opaque_tokens_by_expiry ON opaque_tokens (expires_at);
CREATE INDEX opaque_tokens_by_client ON opaque_tokens (client_id);

-- The deny list: revoked token ids until the token's own expiry. `seq` only grows, so servers
-- fetch what is new since the last row they saw.
CREATE TABLE revoked_tokens (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    jti          TEXT NOT NULL UNIQUE,
    client_id    TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at);
