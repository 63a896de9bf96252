-- Several accounts of one connector per user (two Gmail addresses, two banks): an integration
-- is a user's account of a connector, named by `account` ('' for the first, default one, which
-- keeps the id `connector:user` every integration had before).
ALTER TABLE integrations ADD COLUMN account TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX integrations_by_account ON integrations (user_id, connector, account);
