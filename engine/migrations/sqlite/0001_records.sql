-- Imported records, one row per (platform, model, provider id). `data` is the model record as
-- JSON (provenance included); `content_hash` lets an unchanged record go unwritten.
--
-- A rowid table with a unique index rather than WITHOUT ROWID: rows are large (the JSON), and
-- SQLite recommends WITHOUT ROWID only for small rows; measured, this layout inserts faster.
CREATE TABLE records (
    id               INTEGER PRIMARY KEY,
    source_platform  TEXT NOT NULL,
    model            TEXT NOT NULL,
    source_object_id TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    integration_id   TEXT NOT NULL,
    data             TEXT NOT NULL,
    content_hash     BLOB NOT NULL,
    first_seen_at    TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    deleted_at       TEXT
);
CREATE UNIQUE INDEX records_identity ON records (source_platform, model, source_object_id);

-- Records that could not be mapped or did not fit their model: never dropped silently.
CREATE TABLE rejects (
    id               INTEGER PRIMARY KEY,
    source_platform  TEXT NOT NULL,
    stream           TEXT NOT NULL,
    source_object_id TEXT,
    reason           TEXT NOT NULL,
    raw              TEXT NOT NULL,
    seen_at          TEXT NOT NULL
);
