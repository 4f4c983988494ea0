-- latchkey schema v5 (PostgreSQL) = SQLite's v6: mutual TLS (RFC 8705) and sender-constrained
-- opaque tokens. A tls_client_auth client is known by one subject DN or subject alternative name of its
-- certificate (RFC 8705 §2.1.2): which one (the metadata name, like
-- 'tls_client_auth_san_dns') and its value. Opaque tokens keep their confirmation claim
-- (RFC 7800 `cnf`, as JSON) so introspection can report the binding (RFC 8705 §3.2,
-- RFC 9449 §6.2).
ALTER TABLE clients ADD COLUMN tls_subject_kind TEXT;
ALTER TABLE clients ADD COLUMN tls_subject TEXT;
ALTER TABLE opaque_tokens ADD COLUMN cnf TEXT;
