-- Data exports uploaded to the service (or named in the operator's import folder), imported by
-- the scheduler. An import is leased like a sync: the process running it renews `lease_until`;
-- one that dies stops renewing, and another process (or the same after a restart) claims the
-- import again and resumes it from its checkpoint inside the export. `paths` is a JSON array:
-- an export may come in several parts.
CREATE TABLE imports (
    id             TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    source         TEXT NOT NULL,
    name           TEXT NOT NULL,
    paths          TEXT NOT NULL,
    bytes          BIGINT NOT NULL,
    status         TEXT NOT NULL,
    error          TEXT,
    attempts       BIGINT NOT NULL DEFAULT 0,
    lease_owner    TEXT,
    lease_until    TEXT,
    created_at     TEXT NOT NULL,
    finished_at    TEXT
);
CREATE INDEX imports_by_integration ON imports (integration_id, created_at);
CREATE INDEX imports_waiting ON imports (status, created_at);
-- One import of an integration waits or runs at a time: its streams' checkpoints are one.
CREATE UNIQUE INDEX imports_one_at_a_time ON imports (integration_id) WHERE status IN ('queued', 'running');
