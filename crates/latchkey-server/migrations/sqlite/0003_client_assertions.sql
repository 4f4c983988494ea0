-- latchkey schema v3 (SQLite): single-use client assertion ids (RFC 7523 §3 item 7).
-- A (client_id, jti) pair may authenticate once; the primary key makes two concurrent replays
-- give exactly one success. Rows are kept until the assertion's own expiry, then purged.
CREATE TABLE assertion_jtis (
    client_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) STRICT;
CREATE INDEX assertion_jtis_by_expiry ON assertion_jtis (expires_at);
