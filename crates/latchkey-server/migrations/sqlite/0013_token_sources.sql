-- latchkey schema v13 (SQLite): tokens per client, source address and clock hour, to find
-- clients that do not cache their tokens. `lifetime` is the tokens' lifetime in seconds;
-- `allowed` is how many tokens the address may get in
-- the hour before the client counts as not caching (the server's `--not-caching-threshold`
-- times the lifetimes in an hour). Servers add their counts with each usage flush; the janitor
-- deletes rows older than `--usage-retention`, or than 7 days when that is shorter. The
-- partial index holds only flagged rows.
CREATE TABLE token_sources (
    client_id  TEXT NOT NULL,
    source     TEXT NOT NULL,
    hour       INTEGER NOT NULL,
    tokens     INTEGER NOT NULL,
    lifetime   INTEGER NOT NULL,
    allowed    INTEGER NOT NULL,
    PRIMARY KEY (client_id, hour, source)
) STRICT;
CREATE INDEX token_sources_hour ON token_sources (hour);
CREATE INDEX token_sources_flagged ON token_sources (hour) WHERE tokens > allowed;
