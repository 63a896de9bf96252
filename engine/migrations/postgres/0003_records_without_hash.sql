-- A record counts as unchanged when its stored JSON value is the same (`jsonb` equality), so
-- the content hash the first schema kept is not needed.
ALTER TABLE records DROP COLUMN content_hash;
