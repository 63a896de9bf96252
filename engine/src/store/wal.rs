//! Copying SQLite's write-ahead log back into the database file off the writer's path.
//!
//! By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: the
//! committing connection copies the log into the database file and waits for two `fsync`s. On
//! the import bench that wait was about 40% of the writer's time (the rows are written twice,
//! once to the log and once to the file, and the second write waits for the disk). Here the
//! store's connections never checkpoint (`wal_autocheckpoint = 0`); a second connection on its
//! own thread does, woken after each commit of records, while the writer goes on writing.
//!
//! A `PASSIVE` checkpoint never blocks the writer, but under a steady writer it never catches
//! up either, and SQLite only starts the log over once a checkpoint has copied all of it. So
//! when the log holds more than [`LOG_LIMIT_BYTES`], the checkpointer asks for a `RESTART`
//! checkpoint, which holds the next commit until the log is copied and can start over: the log
//! on disk stays bounded, and the writer pays for a checkpoint only when it outruns the disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::Notify;

use super::StoreError;

/// Past this much log the next checkpoint holds the writer until the log can start over.
pub(super) const LOG_LIMIT_BYTES: i64 = 64 << 20;

/// What the store's handles share with the checkpointer task.
#[derive(Debug, Default)]
struct Signal {
    wake: Notify,
    closed: AtomicBool,
}

/// The handle to a running checkpointer; it stops when the last store handle drops.
#[derive(Debug)]
pub(super) struct Checkpointer {
    signal: Arc<Signal>,
    /// The checkpointer's task, until [`Checkpointer::stop`] waits for it.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts a checkpointer for the database file at `path`, which the store's own
    /// connections opened in WAL mode with automatic checkpoints off.
    pub(super) async fn start(path: &Path) -> Result<Self, StoreError> {
        let mut connection = SqliteConnectOptions::new()
            .filename(path)
            // A `RESTART` checkpoint waits here for the writer's transaction to end.
            .busy_timeout(Duration::from_secs(30))
            .connect()
            .await?;
        // Files made before the store chose its page size keep SQLite's default.
        let (page_size,): (i64,) = sqlx::query_as("PRAGMA page_size")
            .fetch_one(&mut connection)
            .await?;
        let limit_frames = LOG_LIMIT_BYTES / page_size.max(512);
        let signal = Arc::new(Signal::default());
        let task = tokio::spawn(run(
            connection,
            limit_frames,
            Arc::clone(&signal),
            path.display().to_string(),
        ));
        Ok(Self {
            signal,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Stops the checkpointer and waits until its connection is closed. Closed last, it copies
    /// what is left of the log into the file and removes the log.
    pub(super) async fn stop(&self) {
        self.signal.closed.store(true, Ordering::Release);
        self.signal.wake.notify_one();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            // A checkpointer that panicked has nothing left to close.
            let _ = task.await;
        }
    }

    /// Says that a transaction was committed: the log has something to copy. Cheap; wakes the
    /// checkpointer at most once however often it is called while it works.
    pub(super) fn committed(&self) {
        self.signal.wake.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.signal.closed.store(true, Ordering::Release);
        self.signal.wake.notify_one();
    }
}

/// How long the checkpointer sleeps without being woken: the store's other writes (leases,
/// integrations) are small and do not wake it, and a service may go long without a sync.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(30);

async fn run(
    mut connection: SqliteConnection,
    limit_frames: i64,
    signal: Arc<Signal>,
    file: String,
) {
    loop {
        // Timing out is not an error: it is the idle checkpoint.
        let _ = tokio::time::timeout(IDLE_CHECKPOINT, signal.wake.notified()).await;
        if signal.closed.load(Ordering::Acquire) {
            break;
        }
        if let Err(error) = checkpoint(&mut connection, limit_frames).await {
            // The log stays as it is and the next commit wakes a new attempt; reads and writes
            // are unaffected (they go through the log).
            tracing::warn!(database = %file, %error, "checkpointing the SQLite log failed; will retry after the next write");
        }
    }
    // Closing the last connection to the file checkpoints what is left.
    if let Err(error) = connection.close().await {
        tracing::warn!(database = %file, %error, "closing the checkpoint connection failed");
    }
}

/// Copies what it can of the log into the file; past `limit_frames` frames in the log, holds
/// the writer until all of it is copied and the log can start over.
async fn checkpoint(
    connection: &mut SqliteConnection,
    limit_frames: i64,
) -> Result<(), sqlx::Error> {
    // Columns: whether it was blocked, frames in the log, frames copied into the file.
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *connection)
            .await?;
    if frames > limit_frames {
        sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}
