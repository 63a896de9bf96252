//! Where mapped records go: a [`Sink`]. The SQLite store is the embedded default.

mod integrations;
mod memory;
mod sqlite;

use std::future::Future;

pub use integrations::{IntegrationStatus, StoredIntegration};
pub use memory::MemorySink;
pub use sqlite::SqliteStore;

use crate::events::WriteCounts;
use crate::map::{MappedRecord, Reject};
use crate::models::ModelKind;

/// One page's records of one stream.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The connector id.
    pub platform: &'a str,
    /// The stream.
    pub stream: &'a str,
    /// The model of `records`.
    pub model: ModelKind,
    /// Mapped records (tombstones included).
    pub records: &'a [MappedRecord],
    /// Records that could not be mapped.
    pub rejects: &'a [Reject],
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused.
    #[error("the database failed: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("the database schema could not be migrated: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Receives mapped records, one page at a time. A write is all or nothing.
pub trait Sink: Send {
    /// Writes one page; says what it did.
    fn write(
        &mut self,
        batch: Batch<'_>,
    ) -> impl Future<Output = Result<WriteCounts, StoreError>> + Send;
}
