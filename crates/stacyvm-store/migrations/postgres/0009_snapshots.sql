-- Snapshots (sandbox-model.md §2, docs/state.md): a sandbox's files (`kind` 'filesystem') or
-- memory too ('memory'), kept by the provider on the worker that made it. A row is written
-- only once the provider's snapshot is complete.
-- The SQLite twin is migrations/sqlite/0009_snapshots.sql.
CREATE TABLE snapshots (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL DEFAULT '',
    sandbox_id TEXT COLLATE "C" NOT NULL,
    provider   TEXT COLLATE "C" NOT NULL,
    image      TEXT COLLATE "C" NOT NULL DEFAULT '',
    kind       TEXT COLLATE "C" NOT NULL,
    size_bytes BIGINT NOT NULL DEFAULT 0,
    worker_id  TEXT COLLATE "C" NOT NULL DEFAULT 'local',
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX snapshots_by_created ON snapshots (created_at, id);
