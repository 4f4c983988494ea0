-- latchkey schema v14 (SQLite): a client may get its last token back while it has more than
-- half its lifetime left (`client update --reuse-tokens`).
ALTER TABLE clients ADD COLUMN reuse_tokens INTEGER NOT NULL DEFAULT 0;
