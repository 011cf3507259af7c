-- The control plane instance that inserted a record ('' = unknown), so that when several
-- control planes share a database a survivor can clean up the half-made spawns (rows still
-- `creating`) of one that died. Not part of the API's sandbox object.
-- The SQLite twin is migrations/sqlite/0002_sandbox_created_by.sql.
ALTER TABLE sandboxes ADD COLUMN created_by TEXT COLLATE "C" NOT NULL DEFAULT '';
