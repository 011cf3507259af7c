-- What the E2B-compatible API keeps of a sandbox it created, besides the sandbox record: the
-- `templateID` the client asked for, the create request's `envVars` (JSON object text) and
-- the per-sandbox access token ('' = `secure: false`). One row per sandbox, written once.
-- The Postgres twin is migrations/postgres/0005_e2b_sandboxes.sql.
CREATE TABLE e2b_sandboxes (
    sandbox_id   TEXT NOT NULL PRIMARY KEY,
    template_id  TEXT NOT NULL,
    env_vars     TEXT NOT NULL DEFAULT '{}',
    access_token TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL
);
