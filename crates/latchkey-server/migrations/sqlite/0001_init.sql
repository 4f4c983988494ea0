-- latchkey schema v1 (SQLite). Times are seconds since the Unix epoch.
CREATE TABLE clients (
    client_id         TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    scope             TEXT NOT NULL,     -- space-separated scope tokens
    audience          TEXT NOT NULL,     -- space-separated absolute URIs
    grant_types       TEXT NOT NULL,     -- space-separated grant type names
    token_ttl_seconds INTEGER NOT NULL,
    auth_method       TEXT NOT NULL,
    enabled           INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;

CREATE TABLE client_secrets (
    secret_id    TEXT PRIMARY KEY NOT NULL,
    client_id    TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    secret_hash  BLOB NOT NULL,          -- SHA-256 of the secret; the secret itself is never stored
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER
) STRICT;
CREATE INDEX client_secrets_by_client ON client_secrets (client_id);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY NOT NULL,
    alg          TEXT NOT NULL,
    state        TEXT NOT NULL,          -- next | current | retired
    private_key  BLOB NOT NULL,          -- PKCS#8 DER
    public_jwk   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;
-- Checklist H: at most one signing key per algorithm, even when several servers start at once.
CREATE UNIQUE INDEX one_current_key_per_alg ON signing_keys (alg) WHERE state = 'current';

-- Every change to clients or their secrets increases this counter in the same transaction.
-- Servers poll it to invalidate their in-memory client cache.
CREATE TABLE client_generation (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL
) STRICT;
INSERT INTO client_generation (id, generation) VALUES (1, 0);

-- The generation each running server has applied to its cache; the admin CLI waits for all of
-- them after a change, so `client disable` has taken effect everywhere when it returns.
CREATE TABLE server_acks (
    server_id   TEXT PRIMARY KEY NOT NULL,
    generation  INTEGER NOT NULL
) STRICT;
