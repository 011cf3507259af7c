-- Initial schema, the twin of migrations/sqlite/0001_init.sql: same tables, columns and indexes.
-- Timestamps are TEXT in the same fixed UTC shape, `%Y-%m-%dT%H:%M:%S%.9fZ`, because
-- `timestamptz` keeps only microseconds and the store contract round-trips nanoseconds.
-- Every TEXT column is COLLATE "C": byte order, like SQLite's BINARY, so timestamp strings
-- compare as times and ORDER BY id/name gives the same order on both backends whatever the
-- database's default collation is. JSON columns are TEXT, as in SQLite.

CREATE TABLE sandboxes (
    id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    state          TEXT COLLATE "C" NOT NULL,
    provider       TEXT COLLATE "C" NOT NULL DEFAULT '',
    image          TEXT COLLATE "C" NOT NULL DEFAULT '',
    memory_mb      BIGINT NOT NULL DEFAULT 0,
    vcpus          BIGINT NOT NULL DEFAULT 0,
    metadata       TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    template       TEXT COLLATE "C" NOT NULL DEFAULT '',
    owner_id       TEXT COLLATE "C" NOT NULL DEFAULT '',
    vm_id          TEXT COLLATE "C" NOT NULL DEFAULT '',
    worker_id      TEXT COLLATE "C" NOT NULL DEFAULT 'local',
    tenant_id      TEXT COLLATE "C" NOT NULL DEFAULT '',
    preview_domain TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at     TEXT COLLATE "C" NOT NULL,
    expires_at     TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL
);

-- Rows are never deleted (destroy is a state change), so every hot query is served by a partial
-- index that leaves destroyed rows out. Queries repeat these predicates with literal strings.
CREATE INDEX sandboxes_live_by_created ON sandboxes (created_at, id)
    WHERE state <> 'destroyed';
CREATE INDEX sandboxes_active_by_owner ON sandboxes (owner_id)
    WHERE state NOT IN ('destroyed', 'expired');
CREATE INDEX sandboxes_active_by_expiry ON sandboxes (expires_at)
    WHERE state NOT IN ('destroyed', 'expired');

-- stdout/stderr are BYTEA (UTF-8 bytes): Postgres TEXT cannot hold U+0000, which command
-- output may contain.
CREATE TABLE exec_logs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sandbox_id  TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id),
    command     TEXT COLLATE "C" NOT NULL,
    exit_code   BIGINT NOT NULL,
    stdout      BYTEA  NOT NULL,
    stderr      BYTEA  NOT NULL,
    duration_ms BIGINT NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX exec_logs_by_sandbox ON exec_logs (sandbox_id, created_at);

CREATE TABLE templates (
    name          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    version       BIGINT NOT NULL,
    image         TEXT COLLATE "C" NOT NULL,
    description   TEXT COLLATE "C" NOT NULL DEFAULT '',
    setup         TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    allowed_hosts TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    memory_mb     BIGINT NOT NULL,
    cpu_cores     BIGINT NOT NULL,
    ttl_seconds   BIGINT NOT NULL,
    env           TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    secrets       TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    pool_size     BIGINT NOT NULL DEFAULT 0,
    created_at    TEXT COLLATE "C" NOT NULL,
    updated_at    TEXT COLLATE "C" NOT NULL
);

CREATE TABLE owner_quotas (
    owner_id                 TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    max_sandboxes            BIGINT NOT NULL DEFAULT 0,
    max_ttl_seconds          BIGINT NOT NULL DEFAULT 0,
    max_exec_timeout_seconds BIGINT NOT NULL DEFAULT 0,
    created_at               TEXT COLLATE "C" NOT NULL,
    updated_at               TEXT COLLATE "C" NOT NULL
);

CREATE TABLE workers (
    id             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    hostname       TEXT COLLATE "C" NOT NULL DEFAULT '',
    status         TEXT COLLATE "C" NOT NULL DEFAULT '',
    -- NULL = not sent (supports every provider); otherwise a JSON array of strings.
    providers      TEXT COLLATE "C",
    capabilities   TEXT COLLATE "C",
    capacity       TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    last_heartbeat TEXT COLLATE "C" NOT NULL,
    created_at     TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL
);

-- A released lease keeps its row with holder_id NULL, so `generation` keeps increasing for the
-- resource across release and re-acquire (fencing tokens never repeat).
CREATE TABLE leases (
    resource_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    resource_type TEXT COLLATE "C" NOT NULL,
    holder_id     TEXT COLLATE "C",
    generation    BIGINT NOT NULL,
    expires_at    TEXT COLLATE "C" NOT NULL,
    created_at    TEXT COLLATE "C" NOT NULL,
    updated_at    TEXT COLLATE "C" NOT NULL
);
CREATE INDEX leases_held ON leases (resource_id) WHERE holder_id IS NOT NULL;

CREATE TABLE admin_audit_logs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor       TEXT COLLATE "C" NOT NULL DEFAULT '',
    method      TEXT COLLATE "C" NOT NULL DEFAULT '',
    path        TEXT COLLATE "C" NOT NULL DEFAULT '',
    status      BIGINT NOT NULL DEFAULT 0,
    duration_ms BIGINT NOT NULL DEFAULT 0,
    request_id  TEXT COLLATE "C" NOT NULL DEFAULT '',
    remote_addr TEXT COLLATE "C" NOT NULL DEFAULT '',
    user_agent  TEXT COLLATE "C" NOT NULL DEFAULT '',
    tenant_id   TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at  TEXT COLLATE "C" NOT NULL
);
CREATE INDEX admin_audit_logs_by_created ON admin_audit_logs (created_at);
