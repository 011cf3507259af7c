-- Volumes (sandbox-model.md §2, docs/state.md): named disks that outlive the sandboxes that
-- mount them. `worker_id` is the worker whose provider holds the data ('local' = this control
-- plane's own providers); a spawn with the volume is placed there.
-- The Postgres twin is migrations/postgres/0008_volumes.sql.
CREATE TABLE volumes (
    name       TEXT NOT NULL PRIMARY KEY,
    size_mb    INTEGER NOT NULL DEFAULT 0,
    provider   TEXT NOT NULL,
    worker_id  TEXT NOT NULL DEFAULT 'local',
    created_at TEXT NOT NULL
);

-- Which sandbox mounts which volume where. Rows stay with destroyed sandboxes (history, like
-- the sandbox rows) until the volume is deleted; "in use" joins live sandboxes only.
CREATE TABLE volume_mounts (
    sandbox_id TEXT NOT NULL,
    volume     TEXT NOT NULL,
    mount_path TEXT NOT NULL,
    read_only  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sandbox_id, mount_path)
);
CREATE INDEX volume_mounts_by_volume ON volume_mounts (volume, sandbox_id);
