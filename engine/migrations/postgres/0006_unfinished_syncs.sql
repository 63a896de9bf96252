-- Syncs claimed and never released: the process that ran them died (a crash, an abort on a
-- hostile answer, the machine going down). Reset by every release and by "sync now"; at three,
-- the scheduler stops claiming the integration (quarantined) so that one integration whose sync
-- kills its process cannot kill every process that picks it up, forever.
ALTER TABLE integrations ADD COLUMN unfinished BIGINT NOT NULL DEFAULT 0;
