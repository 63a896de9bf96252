-- Rate limits counted outside the process: app-wide quotas, which every process of the service
-- spends, and quotas of an hour or more, which must outlive a restart. One row per limit and
-- window (aligned to the epoch: a day's window is a UTC day); a user's limit names its
-- integration and goes with it.
CREATE TABLE rate_windows (
    key            TEXT NOT NULL,
    window_start   INTEGER NOT NULL,
    used           INTEGER NOT NULL,
    integration_id TEXT,
    PRIMARY KEY (key, window_start)
);
