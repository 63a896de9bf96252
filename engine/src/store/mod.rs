//! Where mapped records go: a [`Sink`]. The SQLite store is the embedded default.

mod integrations;
mod memory;
mod sqlite;

use std::future::Future;
use std::sync::Arc;

pub use integrations::{IntegrationStatus, StoredIntegration};
pub use memory::{MemoryContents, MemorySink};
pub use sqlite::SqliteStore;

use crate::events::WriteCounts;
use crate::map::{MappedRecord, Reject};
use crate::models::ModelKind;

/// One page's records of one stream. Owned, so that a page can be handed to the writer while the
/// next one is fetched and mapped.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The connector id.
    pub platform: Arc<str>,
    /// The stream.
    pub stream: Arc<str>,
    /// The model of `records`.
    pub model: ModelKind,
    /// Mapped records (tombstones included).
    pub records: Vec<MappedRecord>,
    /// Records that could not be mapped.
    pub rejects: Vec<Reject>,
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
}

/// Receives mapped records, one page at a time. A write is all or nothing.
///
/// A run writes on its own task (pages are written while the next ones are fetched and mapped),
/// so a sink is a cheap handle: clones share one destination.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Writes one page; says what it did.
    fn write(
        &mut self,
        batch: &Batch,
    ) -> impl Future<Output = Result<WriteCounts, StoreError>> + Send;
}
