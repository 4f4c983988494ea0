-- latchkey schema v11 (SQLite): each client's version, moved on by every change to its row, so
-- that a change made against a version it read (the admin API's If-Match) is applied by one
-- conditional statement or not at all: a concurrent change in between makes it fail.
ALTER TABLE clients ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
