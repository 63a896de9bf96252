//! Where mapped records go: a [`Sink`]. The [`Store`] (SQLite, the embedded default, or
//! PostgreSQL) keeps records, rejects, sync runs, checkpoints and an audit log; other sinks
//! forward pages elsewhere.
//!
//! The store has two jobs, in two parts: the pipeline's sink (`write`, `runs`: pages with their
//! checkpoints, runs, the audit log) and the registry of connected accounts (`integrations`).
//! The service's own tables (leases, API keys, pending authorizations) are the server's
//! queries, written with [`on_every_backend!`](crate::on_every_backend) on the same database;
//! their schema is in these migrations, since one database has one migration history.

mod backend;
mod content;
mod http;
mod integrations;
mod memory;
mod open;
mod rate_windows;
mod runs;
mod scope;
mod wal;
mod write;

use std::future::Future;
use std::sync::Arc;

pub use backend::Backend;
pub use http::HttpSink;
pub use integrations::{IntegrationStatus, StoredIntegration};
pub use memory::{MemoryContents, MemorySink, StoredContent};
pub use open::{AnyStore, redact};
pub use runs::{AuditEntry, RunStatus, RunTotals, SyncRunRow};
pub use write::stamp;

use crate::events::WriteCounts;
use crate::models::ModelKind;
use crate::record::{MappedRecord, Reject, StoredRecord};
use crate::state::{Checkpoint, StreamState};

/// The store on one database: SQLite ([`SqliteStore`]) or PostgreSQL ([`PostgresStore`]).
/// Clones share one connection pool.
#[derive(Debug)]
pub struct Store<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    /// For an SQLite file: the connection that checkpoints its log (see [`wal`]).
    wal: Option<Arc<wal::Checkpointer>>,
    /// The transaction [`Sink::write_pages_uncommitted`] left open for [`Sink::commit`]: this
    /// handle's own (a clone starts with none). Only `&mut self` methods touch it, through
    /// `Mutex::get_mut`, so it is never locked; the mutex makes the handle `Sync`.
    open: std::sync::Mutex<Option<sqlx::Transaction<'static, DB>>>,
}

impl<DB: sqlx::Database> Store<DB> {
    fn with_pool(pool: sqlx::Pool<DB>, wal: Option<Arc<wal::Checkpointer>>) -> Self {
        Self {
            pool,
            wal,
            open: std::sync::Mutex::new(None),
        }
    }

    /// This handle's open transaction, if a write left one (see the field `open`).
    fn open_transaction(&mut self) -> &mut Option<sqlx::Transaction<'static, DB>> {
        self.open
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<DB: sqlx::Database> Clone for Store<DB> {
    fn clone(&self) -> Self {
        Self::with_pool(self.pool.clone(), self.wal.clone())
    }
}

impl<DB: sqlx::Database> Store<DB> {
    /// Says that a transaction was committed, so that an SQLite file's checkpointer copies its
    /// log into the file. The store calls it after its own writes of records and runs; call it
    /// after writing through [`Store::pool`] directly.
    pub fn committed(&self) {
        if let Some(wal) = &self.wal {
            wal.committed();
        }
    }
}

impl<DB: sqlx::Database> Store<DB> {
    /// Closes the store for every handle: waits for the statements under way, closes the
    /// connections and, for an SQLite file, lets the last one copy the log into the file, so
    /// that the file alone holds everything when this returns. Handles used afterwards fail.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(wal) = &self.wal {
            wal.stop().await;
        }
    }

    /// The underlying pool, for queries outside the store's interface.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }
}

/// The embedded store: one SQLite file.
pub type SqliteStore = Store<sqlx::Sqlite>;
/// The store on a PostgreSQL server.
pub type PostgresStore = Store<sqlx::Postgres>;

/// Which run and account a page belongs to.
#[derive(Debug, Clone)]
pub struct RunScope {
    /// The connector id.
    pub platform: Arc<str>,
    /// Who owns the records.
    pub user_id: Arc<str>,
    /// The connected account.
    pub integration_id: Arc<str>,
    /// The process that runs it (`connector serve` names itself), kept with the run.
    pub worker: Option<Arc<str>>,
}

/// One page of one stream, with the checkpoint that covers it: written in one transaction, so a
/// stored checkpoint never points past records that are not stored. Owned, so that a page can be
/// handed to the writer while the next one is fetched and mapped.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The run's account.
    pub scope: Arc<RunScope>,
    /// The stream.
    pub stream: Arc<str>,
    /// The model of `records`; `None` for a batch that only moves a checkpoint.
    pub model: Option<ModelKind>,
    /// Mapped records (tombstones included).
    pub records: Vec<StoredRecord>,
    /// Records that could not be mapped.
    pub rejects: Vec<Reject>,
    /// For a full pass: the pass these records were seen in (what a completed pass did not see
    /// is marked deleted).
    pub seen_in_pass: Option<i64>,
    /// The stream's new checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// Full passes that completed with this page: mark what they did not see as deleted.
    pub sweeps: Vec<Sweep>,
    /// The content of this page's records still to download (owed unless already stored in the
    /// same version), kept with the page so that a stored record always has its content stored
    /// or owed.
    pub downloads: Vec<ContentDue>,
    /// The content of this page's records stored already (an export's files, copied as they
    /// were read), referred to in the page's transaction.
    pub stored: Vec<ContentStored>,
}

/// A record's content already in the blob store, as its page hands it to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentStored {
    /// The record's id.
    pub id: Arc<str>,
    /// Which part of its content (`""` for the record's own).
    pub part: String,
    /// The part's file name.
    pub file_name: Option<String>,
    /// The blob.
    pub blob: crate::blobs::BlobRef,
}

/// A record's content to download into the blob store, as its page hands it to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDue {
    /// The record's id.
    pub id: Arc<str>,
    /// Which part of its content (`""` for the record's own; `attachments/1.2`).
    pub part: String,
    /// The part's file name as the record gives it.
    pub file_name: Option<String>,
    /// What the spec's `content.version` rendered (`""` without one).
    pub version: String,
    /// The rendered request, as JSON (no credentials).
    pub request: String,
}

/// A download the store holds for an integration, to be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDownload {
    /// The record's stream.
    pub stream: String,
    /// The record's model.
    pub model: String,
    /// The record's id.
    pub id: String,
    /// Which part of its content (`""` for the record's own).
    pub part: String,
    /// The part's file name as the record gives it.
    pub file_name: Option<String>,
    /// The content's version.
    pub version: String,
    /// The rendered request, as JSON.
    pub request: String,
    /// How many times it failed before.
    pub attempts: i64,
    /// Where it stands in the order downloads are made.
    pub at: DueAt,
}

/// Where a download stands in the order downloads are made: its record's row (the order in
/// which records were first stored), then its part. A run reads its downloads a few at a time,
/// each read after where the last one ended, so it holds a few whatever it owes, and tries each
/// once (one that fails is behind the reads that follow).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueAt {
    /// The record's row.
    pub record: i64,
    /// The part.
    pub part: String,
}

impl Batch {
    /// A batch of records and nothing else.
    pub fn records(
        scope: Arc<RunScope>,
        stream: Arc<str>,
        model: ModelKind,
        records: Vec<MappedRecord>,
        rejects: Vec<Reject>,
    ) -> Self {
        Self {
            scope,
            stream,
            model: Some(model),
            records: records.into_iter().map(StoredRecord::from).collect(),
            rejects,
            seen_in_pass: None,
            checkpoint: None,
            sweeps: vec![],
            downloads: vec![],
            stored: vec![],
        }
    }
}

/// A completed full pass of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// The stream.
    pub stream: Arc<str>,
    /// The pass.
    pub pass: i64,
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused.
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    /// The writer stopped unexpectedly (a bug: it panicked).
    #[error("the writer stopped: {0}")]
    Writer(String),
    /// The schema could not be brought up to date.
    #[error("the database schema could not be migrated: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is not one the store knows.
    #[error("unsupported database `{0}`: give a file path, `sqlite://PATH` or `postgres://...`")]
    Unsupported(String),
    /// A stored value could not be read back.
    #[error("a stored {what} is unreadable: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The records API refused a batch.
    #[error("the records API answered {status}: {body}")]
    Api {
        /// The HTTP status (0 when none came back).
        status: u16,
        /// What it said.
        body: String,
    },
}

/// Receives mapped records, one page at a time, and keeps each stream's checkpoint. A write is
/// all or nothing.
///
/// A run writes on its own task (pages are written while the next ones are fetched and mapped),
/// so a sink is a cheap handle: clones share one destination.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Writes pages in the order given; says what they did together. Each page is written with
    /// its checkpoint, all or nothing; a database writes them all in one transaction (the run's
    /// writer gathers pages that arrive together: one commit instead of one per page). A record
    /// listed more than once is stored as its last listing.
    fn write_pages(
        &mut self,
        batches: &[Batch],
    ) -> impl Future<Output = Result<WriteCounts, StoreError>> + Send;

    /// Writes pages as [`Sink::write_pages`] does, into a transaction left open for the pages
    /// that follow until [`Sink::commit`] (a sink without transactions writes them at once).
    /// The run's writer keeps one open while pages keep coming, so that a commit carries many
    /// pages: a provider's ids are random, and each commit rewrites every index leaf its records
    /// landed on. What is not committed is lost with the process, checkpoints included, so a
    /// killed run resumes from the last commit. After an error the open transaction is gone
    /// (rolled back).
    fn write_pages_uncommitted(
        &mut self,
        batches: &[Batch],
    ) -> impl Future<Output = Result<WriteCounts, StoreError>> + Send {
        self.write_pages(batches)
    }

    /// Commits what [`Sink::write_pages_uncommitted`] wrote; nothing to do when nothing is open.
    fn commit(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }

    /// Writes one page and its checkpoint in one transaction; says what it did.
    fn write(
        &mut self,
        batch: &Batch,
    ) -> impl Future<Output = Result<WriteCounts, StoreError>> + Send {
        self.write_pages(std::slice::from_ref(batch))
    }

    /// The stored checkpoint of a stream's partition (`""` for a root stream).
    fn checkpoint(
        &self,
        integration_id: &str,
        stream: &str,
        partition: &str,
    ) -> impl Future<Output = Result<Option<StreamState>, StoreError>> + Send;

    /// Whether a stream of an integration holds records not marked deleted. A pass that begins
    /// on a stream that holds none has nothing to mark deleted when it completes, so it need not
    /// keep the ids it sees. A sink that cannot tell says yes, which is always safe.
    fn holds_records(
        &self,
        integration_id: &str,
        stream: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = (integration_id, stream);
        async { Ok(true) }
    }

    /// Up to `limit` downloads owed for an integration's records that failed fewer than
    /// `max_attempts` times, in their order ([`DueAt`]), after `after`. A sink that keeps no
    /// content owes none.
    fn due_downloads(
        &self,
        integration_id: &str,
        max_attempts: i64,
        after: Option<&DueAt>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<DueDownload>, StoreError>> + Send {
        let _ = (integration_id, max_attempts, after, limit);
        async { Ok(vec![]) }
    }

    /// Says that a record's content is stored as `blob`: the record refers to it, and the
    /// download is no longer owed.
    fn content_stored(
        &self,
        scope: &RunScope,
        due: &DueDownload,
        blob: &crate::blobs::BlobRef,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (scope, due, blob);
        async { Ok(()) }
    }

    /// Says that a download failed (`error`); it stays owed, counted.
    fn download_failed(
        &self,
        scope: &RunScope,
        due: &DueDownload,
        error: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (scope, due, error);
        async { Ok(()) }
    }

    /// Records that a run started; returns its id (passes are numbered by the run that began
    /// them).
    fn start_run(&self, scope: &RunScope) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Records how a run ended: its status, and why it failed (for a partial run, which streams
    /// failed and why).
    fn finish_run(
        &self,
        run_id: i64,
        totals: &RunTotals,
        status: RunStatus,
        error: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
