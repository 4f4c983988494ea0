-- latchkey schema v15 (SQLite): token rates and quotas per client. `token_rate` and
-- `token_quota` are like '100/min' or '10000/day' (NULL: none); `quota_mode` is 'enforce'
-- (429 past a limit) or 'monitor' (logged, counted and audited). `quota_windows` holds what
-- the servers took together: for a quota, the tokens taken in each fixed window (`used`); for
-- a rate (window_start 0), the token bucket's theoretical arrival time in milliseconds. Each
-- server takes tokens from it in leases, so a limit holds across servers and restarts.
ALTER TABLE clients ADD COLUMN token_rate TEXT;
ALTER TABLE clients ADD COLUMN token_quota TEXT;
ALTER TABLE clients ADD COLUMN quota_mode TEXT NOT NULL DEFAULT 'enforce';
CREATE TABLE quota_windows (
    client_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    window_start  INTEGER NOT NULL,
    used          INTEGER NOT NULL,
    PRIMARY KEY (client_id, kind, window_start)
) STRICT;
