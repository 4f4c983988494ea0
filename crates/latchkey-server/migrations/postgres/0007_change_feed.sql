-- latchkey schema v7 (PostgreSQL): the change feed. Every transaction that changes a client,
-- its secrets or the signing keys moves `generation` on by one (holding its row lock until
-- commit, so generations commit in order) and writes one row here, numbered by the generation
-- it moved to, so the rows are contiguous. A server that holds generation g fetches the rows
-- after g and drops just the cached records they name: one change costs the same work with 10
-- clients or 10 million. Rows are purged once they are far behind.
--   kind 'client'  one client was created, changed or deleted (client_id names it);
--   kind 'keys'    the signing keys changed;
--   kind 'clients' clients were added in bulk (an import): forget the ids known not to exist.
CREATE TABLE changes (
    generation  BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL,
    client_id   TEXT
);
