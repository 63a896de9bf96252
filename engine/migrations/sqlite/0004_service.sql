-- The service (`connector serve`): scheduling, pending OAuth authorizations, API keys.
--
-- A sync is claimed by writing a lease (owner and expiry) on its integration row; the owner
-- renews it while the sync runs. A process that dies stops renewing, the lease expires, and
-- another process claims the integration and resumes from its checkpoints.
ALTER TABLE integrations ADD COLUMN sync_every_secs INTEGER;
ALTER TABLE integrations ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE integrations ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
ALTER TABLE integrations ADD COLUMN lease_owner TEXT;
ALTER TABLE integrations ADD COLUMN lease_until TEXT;
CREATE INDEX integrations_by_user ON integrations (user_id);
CREATE INDEX integrations_due ON integrations (next_sync_at);

-- Which process ran a sync.
ALTER TABLE sync_runs ADD COLUMN worker TEXT;

-- An authorization in progress: the state parameter names it; `sealed` holds the PKCE verifier
-- and redirect URI, encrypted like tokens. Taken (deleted) by the callback, at most once.
CREATE TABLE oauth_pending (
    state      TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    connector  TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    created_at TEXT NOT NULL
);

-- API keys, stored as BLAKE3 hashes: a leaked database does not leak working keys.
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
