-- The content of records (photos, videos, files, attachments), kept in the blob store under its
-- BLAKE3 hash. `record_blobs` says which blob holds a record's content: a blob is stored once
-- however many records refer to it, and one no row names is garbage. `version` is what the
-- spec's `content.version` rendered when it was downloaded (a Drive revision, a Dropbox `rev`;
-- '' when the content of a record never changes): a record listed with another version has its
-- content downloaded again.
CREATE TABLE record_blobs (
    user_id          TEXT NOT NULL,
    source_platform  TEXT NOT NULL,
    model            TEXT NOT NULL,
    source_object_id TEXT NOT NULL,
    integration_id   TEXT NOT NULL,
    hash             TEXT NOT NULL,
    size             BIGINT NOT NULL,
    content_type     TEXT,
    version          TEXT NOT NULL,
    stored_at        TEXT NOT NULL,
    PRIMARY KEY (user_id, source_platform, model, source_object_id)
);
CREATE INDEX record_blobs_by_hash ON record_blobs (hash);
CREATE INDEX record_blobs_by_integration ON record_blobs (integration_id);

-- Content still to download: written in the transaction of the record's page (so a killed sync
-- loses none, and a record whose page is stored always has its content stored or owed), removed
-- when its blob is stored. `request` is the rendered request as JSON (no credentials: those are
-- added when it is sent); a record listed again replaces it, with a fresh URL where the
-- provider's expire. A download that keeps failing is kept with its error, and retried by later
-- runs up to a limit.
CREATE TABLE downloads (
    integration_id   TEXT NOT NULL,
    stream           TEXT NOT NULL,
    model            TEXT NOT NULL,
    source_object_id TEXT NOT NULL,
    version          TEXT NOT NULL,
    request          TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    queued_at        TEXT NOT NULL,
    PRIMARY KEY (integration_id, model, source_object_id)
);
