-- latchkey schema v4 (SQLite): a private_key_jwt client may name a URL its public keys are
-- fetched from (its jwks_uri, RFC 7591 §2) instead of registering them.
ALTER TABLE clients ADD COLUMN jwks_uri TEXT;
