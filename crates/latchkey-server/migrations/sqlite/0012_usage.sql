-- latchkey schema v12 (SQLite): usage accounting. One row per client, minute (Unix seconds of
-- its start) and kind of count ('tokens', 'introspections', 'revocations', or 'denied:' and
-- the OAuth error code); servers add their counts to it every few seconds, so a cluster's
-- servers add up to one total. The janitor deletes rows older than `--usage-retention`.
CREATE TABLE usage_counts (
    client_id  TEXT NOT NULL,
    minute     INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (client_id, minute, kind)
) STRICT;
CREATE INDEX usage_counts_minute ON usage_counts (minute);
