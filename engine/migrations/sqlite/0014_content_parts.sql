-- A record's content may have several parts (a message's HTML body and each of its
-- attachments): `part` names one ('' for the record's own content; `attachments/1.2` for a
-- part per item, with the item's key). `file_name` is the part's name as the record gives it.
-- SQLite cannot change a primary key in place: the two tables are made again.
CREATE TABLE record_blobs_parts (
    user_id          TEXT NOT NULL,
    source_platform  TEXT NOT NULL,
    model            TEXT NOT NULL,
    source_object_id TEXT NOT NULL,
    part             TEXT NOT NULL DEFAULT '',
    integration_id   TEXT NOT NULL,
    hash             TEXT NOT NULL,
    size             INTEGER NOT NULL,
    content_type     TEXT,
    file_name        TEXT,
    version          TEXT NOT NULL,
    stored_at        TEXT NOT NULL,
    PRIMARY KEY (user_id, source_platform, model, source_object_id, part)
);
INSERT INTO record_blobs_parts (user_id, source_platform, model, source_object_id, integration_id, hash, size, content_type, version, stored_at)
    SELECT user_id, source_platform, model, source_object_id, integration_id, hash, size, content_type, version, stored_at FROM record_blobs;
DROP TABLE record_blobs;
ALTER TABLE record_blobs_parts RENAME TO record_blobs;
CREATE INDEX record_blobs_by_hash ON record_blobs (hash);
CREATE INDEX record_blobs_by_integration ON record_blobs (integration_id);

CREATE TABLE downloads_parts (
    integration_id   TEXT NOT NULL,
    stream           TEXT NOT NULL,
    model            TEXT NOT NULL,
    source_object_id TEXT NOT NULL,
    part             TEXT NOT NULL DEFAULT '',
    version          TEXT NOT NULL,
    request          TEXT NOT NULL,
    file_name        TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    queued_at        TEXT NOT NULL,
    PRIMARY KEY (integration_id, model, source_object_id, part)
);
INSERT INTO downloads_parts (integration_id, stream, model, source_object_id, version, request, attempts, last_error, queued_at)
    SELECT integration_id, stream, model, source_object_id, version, request, attempts, last_error, queued_at FROM downloads;
DROP TABLE downloads;
ALTER TABLE downloads_parts RENAME TO downloads;
