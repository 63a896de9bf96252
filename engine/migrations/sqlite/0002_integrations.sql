-- Connected accounts. `tokens` is a TokenSet sealed by engine::secrets (never plaintext);
-- `config` holds config values and those captured during authorization.
CREATE TABLE integrations (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    connector   TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'needs_reauth')),
    config      TEXT NOT NULL DEFAULT '{}',
    tokens      BLOB,
    scopes      TEXT,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
