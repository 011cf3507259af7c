-- Pause and lifecycle (issue 12, docs/state.md). `on_expire` is what the TTL and the idle
-- timeout do ('destroy' | 'pause'); `idle_timeout` is in nanoseconds (0 = none); `paused_at`
-- is when a paused sandbox was frozen ('' when not paused): `expires_at - paused_at` is the
-- TTL it had left; `last_active_at` is the last exec/file/process/preview activity the
-- control plane wrote down ('' = none), at a coarse interval.
-- The SQLite twin is migrations/sqlite/0004_sandbox_lifecycle.sql.
ALTER TABLE sandboxes ADD COLUMN on_expire TEXT COLLATE "C" NOT NULL DEFAULT 'destroy';
ALTER TABLE sandboxes ADD COLUMN idle_timeout BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN paused_at TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN last_active_at TEXT COLLATE "C" NOT NULL DEFAULT '';
