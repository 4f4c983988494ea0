-- latchkey schema v7 (SQLite): how old a federated workload token may be, per client (seconds;
-- NULL means the default of 24 hours).
ALTER TABLE clients ADD COLUMN federated_max_token_age INTEGER;
