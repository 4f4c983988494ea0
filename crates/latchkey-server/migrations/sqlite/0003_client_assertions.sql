-- latchkey schema v3 (SQLite): private_key_jwt. Clients may register public keys instead of a
-- secret, and each client assertion id (RFC 7523 §3 item 7) may be used once.

-- The client's public keys as a JWK Set (JSON), for private_key_jwt; NULL for secret clients.
ALTER TABLE clients ADD COLUMN public_keys TEXT;

-- Single-use client assertion ids.
-- A (client_id, jti) pair may authenticate once; the primary key makes two concurrent replays
-- give exactly one success. Rows are kept until the assertion's own expiry, then purged.
CREATE TABLE assertion_jtis (
    client_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) STRICT;
CREATE INDEX assertion_jtis_by_expiry ON assertion_jtis (expires_at);
