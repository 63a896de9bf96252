-- The PostgreSQL store: the same tables as the SQLite store (see ../sqlite), created at once.
-- Timestamps are RFC 3339 UTC text in both backends, so one set of queries serves both and they
-- sort correctly as text; `data` is JSONB here so it can be queried and indexed.

CREATE TABLE integrations (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    connector    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'needs_reauth')),
    config       TEXT NOT NULL DEFAULT '{}',
    tokens       BYTEA,
    scopes       TEXT,
    last_error   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    last_sync_at TEXT,
    next_sync_at TEXT
);

CREATE TABLE records (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_platform  TEXT NOT NULL,
    model            TEXT NOT NULL,
    source_object_id TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    integration_id   TEXT NOT NULL,
    data             JSONB NOT NULL,
    content_hash     BYTEA NOT NULL,
    first_seen_at    TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    deleted_at       TEXT,
    stream           TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX records_identity ON records (user_id, source_platform, model, source_object_id);
CREATE INDEX records_by_stream ON records (integration_id, stream);

CREATE TABLE rejects (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_platform  TEXT NOT NULL,
    stream           TEXT NOT NULL,
    source_object_id TEXT,
    reason           TEXT NOT NULL,
    raw              TEXT NOT NULL,
    seen_at          TEXT NOT NULL,
    integration_id   TEXT NOT NULL DEFAULT ''
);

CREATE TABLE sync_runs (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    integration_id    TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    connector         TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    pages             BIGINT NOT NULL DEFAULT 0,
    requests          BIGINT NOT NULL DEFAULT 0,
    records_new       BIGINT NOT NULL DEFAULT 0,
    records_updated   BIGINT NOT NULL DEFAULT 0,
    records_unchanged BIGINT NOT NULL DEFAULT 0,
    records_deleted   BIGINT NOT NULL DEFAULT 0,
    records_rejected  BIGINT NOT NULL DEFAULT 0,
    error             TEXT
);
CREATE INDEX sync_runs_by_integration ON sync_runs (integration_id, id);

CREATE TABLE checkpoints (
    integration_id TEXT NOT NULL,
    stream         TEXT NOT NULL,
    partition_key  TEXT NOT NULL,
    state          TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (integration_id, stream, partition_key)
);

CREATE TABLE sync_seen (
    integration_id   TEXT NOT NULL,
    stream           TEXT NOT NULL,
    pass_id          BIGINT NOT NULL,
    source_object_id TEXT NOT NULL,
    PRIMARY KEY (integration_id, stream, pass_id, source_object_id)
);

CREATE TABLE audit_log (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    action         TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX audit_log_by_integration ON audit_log (integration_id, id);
