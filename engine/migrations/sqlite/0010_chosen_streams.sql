-- The streams a person chose to import for an integration, as a JSON array of root stream
-- names; NULL imports every stream. Scopes are asked for accordingly when connecting.
ALTER TABLE integrations ADD COLUMN streams TEXT;
