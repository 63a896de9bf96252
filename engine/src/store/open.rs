//! Opening a store, and [`AnyStore`]: the one the operator's database URL names.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{
    AuditEntry, Batch, PostgresStore, RunScope, RunStatus, RunTotals, Sink, SqliteStore,
    StoreError, StoredIntegration, StreamState, SyncRunRow,
};
use crate::events::WriteCounts;

/// The page size of the database files the store creates: 16 KiB instead of SQLite's default
/// 4 KiB. A stored record is about 1 KB, so a 4 KiB table page holds three or four: every commit
/// wrote hundreds of log frames (each its own header, checksum and two `pwrite`s) and split
/// pages as often. With 16 KiB pages the import bench spent 7–12% less CPU per record and ran
/// 6–9% faster (BENCHMARKS.md); 8 KiB gained less, 32 and 64 KiB less again.
pub(super) const PAGE_SIZE: u32 = 16_384;

/// Creates the database file, empty and readable by its owner only, when it does not exist:
/// it holds people's data and sealed tokens. SQLite makes its `-wal` and `-shm` files with the
/// same permissions as the database file. An existing file is left as it is.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::Database(sqlx::Error::Io(error))),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // Only a new file takes it (a file in WAL mode keeps the page size it was made with).
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable across process crashes; only an OS crash can lose the
            // last transactions, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // Checkpoints run on their own connection, off the writer's path (see `wal`).
            .pragma("wal_autocheckpoint", "0");
        // One connection: SQLite has one writer, and a single connection keeps an in-memory
        // database alive and shared.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        <sqlx::Sqlite as super::Backend>::migrator()
            .run(&pool)
            .await?;
        let store = Self::with_pool(pool, None);
        store.fill_scopes().await?;
        let wal = Arc::new(super::wal::Checkpointer::start(path).await?);
        // The migrations are in the log.
        wal.committed();
        Ok(Self::with_pool(store.pool, Some(wal)))
    }
}

impl PostgresStore {
    /// Connects to the PostgreSQL database at `url` and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        <sqlx::Postgres as super::Backend>::migrator()
            .run(&pool)
            .await?;
        let store = Self::with_pool(pool, None);
        store.fill_scopes().await?;
        Ok(store)
    }
}

/// A database location without its password, for messages.
pub fn redact(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => location.to_owned(),
    }
}

/// The store a database location names: a PostgreSQL URL (`postgres://...`), or an SQLite file
/// (a path or `sqlite://PATH`).
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// An SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PostgresStore),
}

/// Runs the same expression on whichever store it is.
macro_rules! on_store {
    ($store:expr, $inner:ident => $body:expr) => {
        match $store {
            AnyStore::Sqlite($inner) => $body,
            AnyStore::Postgres($inner) => $body,
        }
    };
}

impl AnyStore {
    /// Opens the store at `location`.
    pub async fn open(location: &str) -> Result<Self, StoreError> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            return Ok(Self::Postgres(PostgresStore::connect(location).await?));
        }
        let path = location.strip_prefix("sqlite://").unwrap_or(location);
        if path.contains("://") {
            return Err(StoreError::Unsupported(location.to_owned()));
        }
        Ok(Self::Sqlite(SqliteStore::open(Path::new(path)).await?))
    }

    /// See [`super::Store::close`].
    pub async fn close(&self) {
        on_store!(self, store => store.close().await);
    }

    /// See [`super::Store::integration`].
    pub async fn integration(&self, id: &str) -> Result<Option<StoredIntegration>, StoreError> {
        on_store!(self, store => store.integration(id).await)
    }

    /// See [`super::Store::save_integration`].
    pub async fn save_integration(
        &self,
        integration: &StoredIntegration,
    ) -> Result<(), StoreError> {
        on_store!(self, store => store.save_integration(integration).await)
    }

    /// See [`super::Store::save_tokens`].
    pub async fn save_tokens(&self, id: &str, sealed_tokens: &[u8]) -> Result<(), StoreError> {
        on_store!(self, store => store.save_tokens(id, sealed_tokens).await)
    }

    /// See [`super::Store::mark_needs_reauth`].
    pub async fn mark_needs_reauth(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        on_store!(self, store => store.mark_needs_reauth(id, reason).await)
    }

    /// See [`super::Store::blobs_of_integration`].
    pub async fn blobs_of_integration(
        &self,
        integration_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        on_store!(self, store => store.blobs_of_integration(integration_id).await)
    }

    /// See [`super::Store::unreferenced_blobs`].
    pub async fn unreferenced_blobs(&self, hashes: &[String]) -> Result<Vec<String>, StoreError> {
        on_store!(self, store => store.unreferenced_blobs(hashes).await)
    }

    /// See [`super::Store::delete_integration`].
    pub async fn delete_integration(&self, id: &str, delete_data: bool) -> Result<u64, StoreError> {
        on_store!(self, store => store.delete_integration(id, delete_data).await)
    }

    /// See [`super::Store::purge_disconnected`].
    pub async fn purge_disconnected(&self, id: &str, delete_data: bool) -> Result<u64, StoreError> {
        on_store!(self, store => store.purge_disconnected(id, delete_data).await)
    }

    /// See [`super::Store::runs`].
    pub async fn runs(&self, integration_id: &str) -> Result<Vec<SyncRunRow>, StoreError> {
        on_store!(self, store => store.runs(integration_id).await)
    }

    /// See [`super::Store::audit_log`].
    pub async fn audit_log(&self, integration_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        on_store!(self, store => store.audit_log(integration_id).await)
    }

    /// See [`super::Store::dump`].
    pub async fn dump(
        &self,
        platform: &str,
    ) -> Result<Vec<(String, String, serde_json::Value, bool)>, StoreError> {
        on_store!(self, store => store.dump(platform).await)
    }

    /// See [`super::Store::audit_of_user`].
    pub async fn audit_of_user(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        on_store!(self, store => store.audit_of_user(user_id, limit).await)
    }

    /// See [`super::Store::audit`].
    pub async fn audit(
        &self,
        user_id: &str,
        integration_id: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        on_store!(self, store => store.audit(user_id, integration_id, action, detail).await)
    }

    /// See [`super::Store::count`].
    pub async fn count(&self, platform: &str) -> Result<u64, StoreError> {
        on_store!(self, store => store.count(platform).await)
    }
}

impl Sink for AnyStore {
    async fn write_pages(&mut self, batches: &[Batch]) -> Result<WriteCounts, StoreError> {
        on_store!(self, store => store.write_pages(batches).await)
    }

    async fn write_pages_uncommitted(
        &mut self,
        batches: &[Batch],
    ) -> Result<WriteCounts, StoreError> {
        on_store!(self, store => store.write_pages_uncommitted(batches).await)
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        on_store!(self, store => store.commit().await)
    }

    async fn checkpoint(
        &self,
        integration_id: &str,
        stream: &str,
        partition: &str,
    ) -> Result<Option<StreamState>, StoreError> {
        on_store!(self, store => store.checkpoint(integration_id, stream, partition).await)
    }

    async fn holds_records(&self, integration_id: &str, stream: &str) -> Result<bool, StoreError> {
        on_store!(self, store => store.holds_records(integration_id, stream).await)
    }

    async fn start_run(&self, scope: &RunScope) -> Result<i64, StoreError> {
        on_store!(self, store => store.start_run(scope).await)
    }

    async fn due_downloads(
        &self,
        integration_id: &str,
        max_attempts: i64,
        after: Option<&super::DueAt>,
        limit: i64,
    ) -> Result<Vec<super::DueDownload>, StoreError> {
        on_store!(self, store => store.due_downloads(integration_id, max_attempts, after, limit).await)
    }

    async fn content_stored(
        &self,
        scope: &RunScope,
        due: &super::DueDownload,
        blob: &crate::blobs::BlobRef,
    ) -> Result<(), StoreError> {
        on_store!(self, store => store.content_stored(scope, due, blob).await)
    }

    async fn download_failed(
        &self,
        scope: &RunScope,
        due: &super::DueDownload,
        error: &str,
    ) -> Result<(), StoreError> {
        on_store!(self, store => store.download_failed(scope, due, error).await)
    }

    async fn finish_run(
        &self,
        run_id: i64,
        totals: &RunTotals,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        on_store!(self, store => store.finish_run(run_id, totals, status, error).await)
    }
}
