-- latchkey schema v13 (PostgreSQL): a client may get its last token back while it has more
-- than half its lifetime left (`client update --reuse-tokens`).
ALTER TABLE clients ADD COLUMN reuse_tokens BOOLEAN NOT NULL DEFAULT FALSE;
