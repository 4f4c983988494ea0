-- latchkey schema v8 (PostgreSQL): the audit trail. Every change to clients, secrets or
-- signing keys appends one row in the same transaction as the change: when, who (actor_kind:
-- 'cli', 'admin', 'registration' or 'server', and actor_id: the OS user, the admin client, the
-- registered client or the server), what (action, and target: the client id or key id), and
-- the changed fields before and after as JSON (never a secret or its hash). Rows are only
-- appended; the janitor deletes those older than the retention (`--audit-retention`).
CREATE TABLE audit_events (
    seq         BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    changes     TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_target ON audit_events (target, seq);
