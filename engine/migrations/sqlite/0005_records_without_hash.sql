-- A record counts as unchanged when its stored JSON text is the same (mapping writes a record's
-- text the same way each time), so the content hash the first schema kept is not needed: rows
-- are smaller, and nothing is hashed on the import's path.
ALTER TABLE records DROP COLUMN content_hash;
