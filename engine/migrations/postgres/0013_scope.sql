-- Records are found by (scope, provider id), the scope being 16 bytes of BLAKE3 over (user,
-- platform, model) (see engine/src/store/scope.rs), instead of the four texts: every key of
-- an import repeated the same user, platform and model, and the index was a fifth of the file.
-- The ids' own order is kept within a scope, so ids that grow still append at the index's edge.
-- SQL has no BLAKE3: the store fills the scope of the rows written before when it opens, before
-- anything writes (NULLs do not collide in a unique index).
ALTER TABLE records ADD COLUMN scope BYTEA;
DROP INDEX records_identity;
CREATE UNIQUE INDEX records_identity ON records (scope, source_object_id);

-- The ids a pass has seen, and the content owed, name the record by its row: a new record's row
-- is the table's last, so both are appended to where a key of the provider's random id made
-- another random write each. For the copy below only, records found by integration and id.
CREATE INDEX records_for_migration ON records (integration_id, source_object_id);

CREATE TABLE sync_seen_rows (
    integration_id TEXT NOT NULL,
    stream         TEXT NOT NULL,
    pass_id        BIGINT NOT NULL,
    record         BIGINT NOT NULL,
    PRIMARY KEY (integration_id, stream, pass_id, record)
);
INSERT INTO sync_seen_rows (integration_id, stream, pass_id, record)
    SELECT s.integration_id, s.stream, s.pass_id, r.id
    FROM sync_seen s JOIN records r
      ON r.integration_id = s.integration_id AND r.source_object_id = s.source_object_id
     AND r.stream = s.stream;
DROP TABLE sync_seen;
ALTER TABLE sync_seen_rows RENAME TO sync_seen;

-- An owed download whose record has since moved to another account of the same connector was
-- owed again by that account when it listed the record: the copy keeps the one of the record's
-- current integration.
CREATE TABLE downloads_rows (
    integration_id   TEXT NOT NULL,
    record           BIGINT NOT NULL,
    part             TEXT NOT NULL DEFAULT '',
    stream           TEXT NOT NULL,
    model            TEXT NOT NULL,
    source_object_id TEXT NOT NULL,
    version          TEXT NOT NULL,
    request          TEXT NOT NULL,
    file_name        TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    queued_at        TEXT NOT NULL,
    PRIMARY KEY (integration_id, record, part)
);
INSERT INTO downloads_rows (integration_id, record, part, stream, model, source_object_id, version, request, file_name, attempts, last_error, queued_at)
    SELECT d.integration_id, r.id, d.part, d.stream, d.model, d.source_object_id, d.version,
           d.request, d.file_name, d.attempts, d.last_error, d.queued_at
    FROM downloads d JOIN records r
      ON r.integration_id = d.integration_id AND r.source_object_id = d.source_object_id
     AND r.model = d.model;
DROP TABLE downloads;
ALTER TABLE downloads_rows RENAME TO downloads;

DROP INDEX records_for_migration;
