-- This installation's cluster id: random, made once when the schema reaches this version, and
-- never changed. Every control plane on the database labels the runtimes it makes with it, and
-- reconciliation touches only runtimes with its own label, so installations with different
-- databases can share one Docker daemon (or microvm state directory). One row.
-- The SQLite twin is migrations/sqlite/0003_cluster_id.sql.
CREATE TABLE cluster (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id TEXT COLLATE "C" NOT NULL
);
INSERT INTO cluster (singleton, id)
VALUES (1, substr(md5(random()::text || clock_timestamp()::text), 1, 16));
