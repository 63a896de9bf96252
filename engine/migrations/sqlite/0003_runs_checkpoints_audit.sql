-- Records belong to a user: the identity becomes (user, platform, model, provider id), and each
-- record remembers the stream that brought it (deletion sweeps work per stream).
ALTER TABLE records ADD COLUMN stream TEXT NOT NULL DEFAULT '';
DROP INDEX records_identity;
CREATE UNIQUE INDEX records_identity ON records (user_id, source_platform, model, source_object_id);
CREATE INDEX records_by_stream ON records (integration_id, stream);

ALTER TABLE rejects ADD COLUMN integration_id TEXT NOT NULL DEFAULT '';
ALTER TABLE integrations ADD COLUMN last_sync_at TEXT;
ALTER TABLE integrations ADD COLUMN next_sync_at TEXT;

-- One row per run of a connector for an integration.
CREATE TABLE sync_runs (
    id                INTEGER PRIMARY KEY,
    integration_id    TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    connector         TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    pages             INTEGER NOT NULL DEFAULT 0,
    requests          INTEGER NOT NULL DEFAULT 0,
    records_new       INTEGER NOT NULL DEFAULT 0,
    records_updated   INTEGER NOT NULL DEFAULT 0,
    records_unchanged INTEGER NOT NULL DEFAULT 0,
    records_deleted   INTEGER NOT NULL DEFAULT 0,
    records_rejected  INTEGER NOT NULL DEFAULT 0,
    error             TEXT
);
CREATE INDEX sync_runs_by_integration ON sync_runs (integration_id, id);

-- Where each stream (and, for substreams, each partition: one parent's values) stands: the
-- incremental cursor or sync token, and where an unfinished pass resumes. Written in the same
-- transaction as the records it covers.
CREATE TABLE checkpoints (
    integration_id TEXT NOT NULL,
    stream         TEXT NOT NULL,
    partition_key  TEXT NOT NULL,
    state          TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (integration_id, stream, partition_key)
);

-- The ids a full pass has seen so far: what the pass did not see when it completes was deleted.
-- (A stream has one model, so the id alone names the record. Small rows: WITHOUT ROWID.)
CREATE TABLE sync_seen (
    integration_id   TEXT NOT NULL,
    stream           TEXT NOT NULL,
    pass_id          INTEGER NOT NULL,
    source_object_id TEXT NOT NULL,
    PRIMARY KEY (integration_id, stream, pass_id, source_object_id)
) WITHOUT ROWID;

-- Who did what to which integration, when.
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY,
    at             TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    integration_id TEXT NOT NULL,
    action         TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX audit_log_by_integration ON audit_log (integration_id, id);
