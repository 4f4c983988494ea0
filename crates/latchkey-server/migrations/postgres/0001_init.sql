-- latchkey schema v1 (PostgreSQL): the same tables as SQLite migrations 0001 and 0002 together.
-- Times are seconds since the Unix epoch.
--
-- Identifiers use the "C" collation, so they compare and sort byte by byte, as SQLite's TEXT
-- does, whatever the database's default collation is.

CREATE TABLE clients (
    client_id         TEXT COLLATE "C" PRIMARY KEY,
    name              TEXT NOT NULL,
    scope             TEXT NOT NULL,     -- space-separated scope tokens
    audience          TEXT NOT NULL,     -- space-separated absolute URIs
    grant_types       TEXT NOT NULL,     -- space-separated grant type names
    token_ttl_seconds BIGINT NOT NULL,
    auth_method       TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL,
    can_introspect    BOOLEAN NOT NULL DEFAULT FALSE,
    token_format      TEXT NOT NULL DEFAULT 'jwt',    -- jwt | opaque
    -- Tokens carry the epoch their client had when they were issued; `client revoke-tokens`
    -- and `client disable` move it on, which revokes every token issued before.
    token_epoch       BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE client_secrets (
    secret_id    TEXT COLLATE "C" PRIMARY KEY,
    client_id    TEXT COLLATE "C" NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    secret_hash  BYTEA NOT NULL,         -- SHA-256 of the secret; the secret itself is never stored
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT                  -- written in batches from memory
);
CREATE INDEX client_secrets_by_client ON client_secrets (client_id);

-- Key lifecycle: next (published, not signing) → current (signing) → retired (published for
-- verification only) → removed (private key erased, no longer published).
CREATE TABLE signing_keys (
    kid          TEXT COLLATE "C" PRIMARY KEY,
    alg          TEXT NOT NULL,
    state        TEXT NOT NULL,          -- next | current | retired | removed
    private_key  BYTEA NOT NULL,         -- PKCS#8 DER, or that sealed (see encryption)
    -- NULL: private_key is PKCS#8 in the clear; 'A256GCM:<kek id>': sealed with that KEK.
    encryption   TEXT,
    public_jwk   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT,
    retired_at   BIGINT,
    removed_at   BIGINT
);
-- Checklist H: at most one current and one next key per algorithm, even when several servers
-- start at once.
CREATE UNIQUE INDEX one_current_key_per_alg ON signing_keys (alg) WHERE state = 'current';
CREATE UNIQUE INDEX one_next_key_per_alg ON signing_keys (alg) WHERE state = 'next';

-- Every change to clients, secrets or keys increases `generation` in the same transaction.
-- Servers poll it to reload their in-memory clients and keys.
--
-- `revocation_seq` is the last deny-list position handed out. Each revocation takes the next one
-- by updating this row, so the row lock makes revokers wait for each other and positions commit
-- in order (see `revoked_tokens`).
CREATE TABLE generation (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    generation     BIGINT NOT NULL,
    revocation_seq BIGINT NOT NULL
);
INSERT INTO generation (id, generation, revocation_seq) VALUES (1, 0, 0);

-- The generation each running server has applied to its cache; the admin CLI waits for all of
-- them after a change, so `client disable` has taken effect everywhere when it returns.
CREATE TABLE server_acks (
    server_id   TEXT COLLATE "C" PRIMARY KEY,
    generation  BIGINT NOT NULL
);

-- Opaque (reference) access tokens: only a SHA-256 hash of the token is stored.
CREATE TABLE opaque_tokens (
    token_hash   BYTEA PRIMARY KEY,
    jti          TEXT COLLATE "C" NOT NULL UNIQUE,
    client_id    TEXT COLLATE "C" NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    scope        TEXT NOT NULL,          -- space-separated granted scope
    audience     TEXT NOT NULL,          -- space-separated audiences
    issued_at    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    epoch        BIGINT NOT NULL         -- the client's token_epoch at issue
);
CREATE INDEX opaque_tokens_by_expiry ON opaque_tokens (expires_at);
CREATE INDEX opaque_tokens_by_client ON opaque_tokens (client_id);

-- The deny list: revoked token ids until the token's own expiry. `seq` only grows, so servers
-- fetch what is new since the last row they saw.
--
-- `seq` is deliberately not a sequence (SERIAL or IDENTITY): sequence values are handed out when
-- a row is inserted, not when it commits, so seq 7 could become visible after seq 8 and a server
-- that had already read 8 would never fetch 7. It comes from `generation.revocation_seq` instead,
-- in the revoking transaction.
CREATE TABLE revoked_tokens (
    seq          BIGINT PRIMARY KEY,
    jti          TEXT COLLATE "C" NOT NULL UNIQUE,
    client_id    TEXT COLLATE "C" NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_at);
