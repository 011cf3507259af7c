-- Initial schema. Timestamps are TEXT in one fixed UTC shape, `%Y-%m-%dT%H:%M:%S%.9fZ`, so they
-- round-trip to the nanosecond and compare correctly as strings. JSON columns are TEXT.
-- The Postgres twin (migrations/postgres/0001_init.sql) keeps the same tables and columns.

CREATE TABLE sandboxes (
    id             TEXT   NOT NULL PRIMARY KEY,
    state          TEXT   NOT NULL,
    provider       TEXT   NOT NULL DEFAULT '',
    image          TEXT   NOT NULL DEFAULT '',
    memory_mb      BIGINT NOT NULL DEFAULT 0,
    vcpus          BIGINT NOT NULL DEFAULT 0,
    metadata       TEXT   NOT NULL DEFAULT '{}',
    template       TEXT   NOT NULL DEFAULT '',
    owner_id       TEXT   NOT NULL DEFAULT '',
    vm_id          TEXT   NOT NULL DEFAULT '',
    worker_id      TEXT   NOT NULL DEFAULT 'local',
    tenant_id      TEXT   NOT NULL DEFAULT '',
    preview_domain TEXT   NOT NULL DEFAULT '',
    created_at     TEXT   NOT NULL,
    expires_at     TEXT   NOT NULL,
    updated_at     TEXT   NOT NULL
);

-- Rows are never deleted (destroy is a state change), so every hot query is served by a partial
-- index that leaves destroyed rows out. Queries must repeat these predicates verbatim (literal
-- strings, not bound parameters) for SQLite to pick the index.
CREATE INDEX sandboxes_live_by_created ON sandboxes (created_at, id)
    WHERE state <> 'destroyed';
CREATE INDEX sandboxes_active_by_owner ON sandboxes (owner_id)
    WHERE state NOT IN ('destroyed', 'expired');
CREATE INDEX sandboxes_active_by_expiry ON sandboxes (expires_at)
    WHERE state NOT IN ('destroyed', 'expired');

CREATE TABLE exec_logs (
    id          INTEGER NOT NULL PRIMARY KEY,
    sandbox_id  TEXT    NOT NULL REFERENCES sandboxes (id),
    command     TEXT    NOT NULL,
    exit_code   BIGINT  NOT NULL,
    stdout      TEXT    NOT NULL,
    stderr      TEXT    NOT NULL,
    duration_ms BIGINT  NOT NULL,
    created_at  TEXT    NOT NULL
);
CREATE INDEX exec_logs_by_sandbox ON exec_logs (sandbox_id, created_at);

CREATE TABLE templates (
    name          TEXT   NOT NULL PRIMARY KEY,
    version       BIGINT NOT NULL,
    image         TEXT   NOT NULL,
    description   TEXT   NOT NULL DEFAULT '',
    setup         TEXT   NOT NULL DEFAULT '[]',
    allowed_hosts TEXT   NOT NULL DEFAULT '[]',
    memory_mb     BIGINT NOT NULL,
    cpu_cores     BIGINT NOT NULL,
    ttl_seconds   BIGINT NOT NULL,
    env           TEXT   NOT NULL DEFAULT '{}',
    secrets       TEXT   NOT NULL DEFAULT '[]',
    pool_size     BIGINT NOT NULL DEFAULT 0,
    created_at    TEXT   NOT NULL,
    updated_at    TEXT   NOT NULL
);

CREATE TABLE owner_quotas (
    owner_id                 TEXT   NOT NULL PRIMARY KEY,
    max_sandboxes            BIGINT NOT NULL DEFAULT 0,
    max_ttl_seconds          BIGINT NOT NULL DEFAULT 0,
    max_exec_timeout_seconds BIGINT NOT NULL DEFAULT 0,
    created_at               TEXT   NOT NULL,
    updated_at               TEXT   NOT NULL
);

CREATE TABLE workers (
    id             TEXT NOT NULL PRIMARY KEY,
    hostname       TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT '',
    -- NULL = not sent (supports every provider); otherwise a JSON array of strings.
    providers      TEXT,
    capabilities   TEXT,
    capacity       TEXT NOT NULL DEFAULT '{}',
    last_heartbeat TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- A released lease keeps its row with holder_id NULL, so `generation` keeps increasing for the
-- resource across release and re-acquire (fencing tokens never repeat).
CREATE TABLE leases (
    resource_id   TEXT   NOT NULL PRIMARY KEY,
    resource_type TEXT   NOT NULL,
    holder_id     TEXT,
    generation    BIGINT NOT NULL,
    expires_at    TEXT   NOT NULL,
    created_at    TEXT   NOT NULL,
    updated_at    TEXT   NOT NULL
);
CREATE INDEX leases_held ON leases (resource_id) WHERE holder_id IS NOT NULL;

CREATE TABLE admin_audit_logs (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    actor       TEXT    NOT NULL DEFAULT '',
    method      TEXT    NOT NULL DEFAULT '',
    path        TEXT    NOT NULL DEFAULT '',
    status      BIGINT  NOT NULL DEFAULT 0,
    duration_ms BIGINT  NOT NULL DEFAULT 0,
    request_id  TEXT    NOT NULL DEFAULT '',
    remote_addr TEXT    NOT NULL DEFAULT '',
    user_agent  TEXT    NOT NULL DEFAULT '',
    tenant_id   TEXT    NOT NULL DEFAULT '',
    created_at  TEXT    NOT NULL
);
CREATE INDEX admin_audit_logs_by_created ON admin_audit_logs (created_at);
