-- A record's content may have several parts (a message's HTML body and each of its
-- attachments): `part` names one ('' for the record's own content; `attachments/1.2` for a
-- part per item, with the item's key). `file_name` is the part's name as the record gives it.
ALTER TABLE record_blobs ADD COLUMN part TEXT NOT NULL DEFAULT '';
ALTER TABLE record_blobs ADD COLUMN file_name TEXT;
ALTER TABLE record_blobs DROP CONSTRAINT record_blobs_pkey;
ALTER TABLE record_blobs ADD PRIMARY KEY (user_id, source_platform, model, source_object_id, part);

ALTER TABLE downloads ADD COLUMN part TEXT NOT NULL DEFAULT '';
ALTER TABLE downloads ADD COLUMN file_name TEXT;
ALTER TABLE downloads DROP CONSTRAINT downloads_pkey;
ALTER TABLE downloads ADD PRIMARY KEY (integration_id, model, source_object_id, part);
