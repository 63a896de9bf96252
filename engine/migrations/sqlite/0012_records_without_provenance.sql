-- A record's provenance (user, integration, connector, provider id) is in the row's columns;
-- its JSON keeps the model fields only. The four fields were about 60% of an Apple Health
-- sample's JSON, written to the log and the file on every import. Readers add them back from
-- the columns. Rows written before lose them here; SQLite keeps the other members' text as it
-- was (a row whose text changed anyway is counted once as updated by its next import).
UPDATE records
SET data = json_remove(data, '$.user_id', '$.source_integration_id', '$.source_platform', '$.source_object_id')
WHERE json_valid(data);
