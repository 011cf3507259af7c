-- Snapshots (sandbox-model.md §2, docs/state.md): a sandbox's files (`kind` 'filesystem') or
-- memory too ('memory'), kept by the provider on the worker that made it. A row is written
-- only once the provider's snapshot is complete.
-- The Postgres twin is migrations/postgres/0009_snapshots.sql.
CREATE TABLE snapshots (
    id         TEXT NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL DEFAULT '',
    sandbox_id TEXT NOT NULL,
    provider   TEXT NOT NULL,
    image      TEXT NOT NULL DEFAULT '',
    kind       TEXT NOT NULL,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    worker_id  TEXT NOT NULL DEFAULT 'local',
    created_at TEXT NOT NULL
);
CREATE INDEX snapshots_by_created ON snapshots (created_at, id);
