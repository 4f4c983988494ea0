-- latchkey schema v2 (PostgreSQL): single-use client assertion ids (RFC 7523 §3 item 7).
-- A (client_id, jti) pair may authenticate once; the primary key makes two concurrent replays,
-- on any replicas, give exactly one success. Rows are kept until the assertion's own expiry.
CREATE TABLE assertion_jtis (
    client_id   TEXT COLLATE "C" NOT NULL,
    jti         TEXT COLLATE "C" NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX assertion_jtis_by_expiry ON assertion_jtis (expires_at);
