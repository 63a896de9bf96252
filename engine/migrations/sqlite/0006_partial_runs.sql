-- One stream's failure no longer ends the others: a run in which some streams failed and others
-- imported ends `partial`. SQLite cannot change a CHECK constraint in place, so the table is
-- rebuilt with its rows, ids and index.
CREATE TABLE sync_runs_new (
    id                INTEGER PRIMARY KEY,
    integration_id    TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    connector         TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'partial', 'failed')),
    started_at        TEXT NOT NULL,
    finished_at       TEXT,
    pages             INTEGER NOT NULL DEFAULT 0,
    requests          INTEGER NOT NULL DEFAULT 0,
    records_new       INTEGER NOT NULL DEFAULT 0,
    records_updated   INTEGER NOT NULL DEFAULT 0,
    records_unchanged INTEGER NOT NULL DEFAULT 0,
    records_deleted   INTEGER NOT NULL DEFAULT 0,
    records_rejected  INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    worker            TEXT
);
INSERT INTO sync_runs_new
    SELECT id, integration_id, user_id, connector, status, started_at, finished_at, pages,
           requests, records_new, records_updated, records_unchanged, records_deleted,
           records_rejected, error, worker
    FROM sync_runs;
DROP TABLE sync_runs;
ALTER TABLE sync_runs_new RENAME TO sync_runs;
CREATE INDEX sync_runs_by_integration ON sync_runs (integration_id, id);
