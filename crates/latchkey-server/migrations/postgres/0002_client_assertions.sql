-- latchkey schema v2 (PostgreSQL): private_key_jwt. Clients may register public keys instead of
-- a secret, and each client assertion id (RFC 7523 §3 item 7) may be used once.

-- The client's public keys as a JWK Set (JSON), for private_key_jwt; NULL for secret clients.
ALTER TABLE clients ADD COLUMN public_keys TEXT;

-- Single-use client assertion ids.
-- A (client_id, jti) pair may authenticate once; the primary key makes two concurrent replays,
-- on any replicas, give exactly one success. Rows are kept until the assertion's own expiry.
CREATE TABLE assertion_jtis (
    client_id   TEXT COLLATE "C" NOT NULL,
    jti         TEXT COLLATE "C" NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX assertion_jtis_by_expiry ON assertion_jtis (expires_at);
