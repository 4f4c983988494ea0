-- latchkey schema v4 (PostgreSQL) = SQLite's v5: federated workload identity. A client may
-- authenticate with a JWT that a trusted external issuer (a Kubernetes cluster, a CI system)
-- gave the workload, instead of any secret or key of its own.
ALTER TABLE clients ADD COLUMN federated_issuer TEXT;
ALTER TABLE clients ADD COLUMN federated_subject TEXT;
ALTER TABLE clients ADD COLUMN federated_audience TEXT;
