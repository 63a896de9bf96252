-- A record's provenance (user, integration, connector, provider id) is in the row's columns;
-- its JSON keeps the model fields only (see the SQLite migration of the same name). Readers add
-- them back from the columns.
UPDATE records
SET data = data - 'user_id' - 'source_integration_id' - 'source_platform' - 'source_object_id';
