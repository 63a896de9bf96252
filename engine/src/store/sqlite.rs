//! The embedded store: one SQLite file.
//!
//! Each page is one transaction: read the stored hashes of the page's ids, then upsert only the
//! new and changed records with one multi-row statement. Re-running a sync over unchanged data
//! writes nothing.

use std::path::Path;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Batch, Sink, StoreError};
use crate::events::WriteCounts;
use crate::map::MappedRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite allows 32766 bound parameters per statement; rows are written in chunks well below.
const ROWS_PER_STATEMENT: usize = 500;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable across process crashes; only an OS crash can lose the
            // last transactions, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(30));
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        // One connection: SQLite has one writer, and a single connection keeps an in-memory
        // database alive and shared.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool, for queries outside the sink interface.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// How many records are stored for `platform` (deleted ones included).
    pub async fn count(&self, platform: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM records WHERE source_platform = ?")
            .bind(platform)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or_default())
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

struct PendingRow<'a> {
    record: &'a MappedRecord,
    json: String,
    /// The first 16 bytes of the BLAKE3 hash of `json`: ample to tell changed content apart.
    hash: [u8; 16],
}

impl Sink for SqliteStore {
    async fn write(&mut self, batch: &Batch) -> Result<WriteCounts, StoreError> {
        let mut counts = WriteCounts {
            rejected: batch.rejects.len() as u64,
            ..WriteCounts::default()
        };
        let model = batch.model.name();
        let at = now();
        let mut transaction = self.pool.begin().await?;

        let (tombstones, live): (Vec<&MappedRecord>, Vec<&MappedRecord>) =
            batch.records.iter().partition(|record| record.deleted);
        let rows: Vec<PendingRow<'_>> = live
            .into_iter()
            .map(|record| {
                let json = serde_json::to_string(&record.data).unwrap_or_default();
                let digest = blake3::hash(json.as_bytes());
                let mut hash = [0u8; 16];
                hash.copy_from_slice(&digest.as_bytes()[..16]);
                PendingRow { record, json, hash }
            })
            .collect();

        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            // One statement does the work of "read the stored hash, then write if it differs":
            // the WHERE skips unchanged rows, RETURNING reports the rows written, and a row whose
            // first_seen_at is this write's timestamp is new.
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO records (source_platform, model, source_object_id, user_id, integration_id, data, content_hash, first_seen_at, updated_at, deleted_at) ",
            );
            query.push_values(chunk, |mut row, item| {
                row.push_bind(&*batch.platform)
                    .push_bind(model)
                    .push_bind(&item.record.id)
                    .push_bind(text_field(item.record, "user_id"))
                    .push_bind(text_field(item.record, "source_integration_id"))
                    .push_bind(&item.json)
                    .push_bind(item.hash.to_vec())
                    .push_bind(&at)
                    .push_bind(&at)
                    .push_bind(None::<String>);
            });
            query
                .push(
                    " ON CONFLICT (source_platform, model, source_object_id) DO UPDATE SET \
                     user_id = excluded.user_id, integration_id = excluded.integration_id, data = excluded.data, \
                     content_hash = excluded.content_hash, updated_at = excluded.updated_at, deleted_at = NULL \
                     WHERE records.content_hash != excluded.content_hash OR records.deleted_at IS NOT NULL \
                     RETURNING first_seen_at = ",
                )
                .push_bind(&at);
            let written = query.build().fetch_all(&mut *transaction).await?;
            let new = written
                .iter()
                .map(|row| row.try_get::<bool, _>(0))
                .filter(|is_new| matches!(is_new, Ok(true)))
                .count() as u64;
            counts.new += new;
            counts.updated += written.len() as u64 - new;
            counts.unchanged += (chunk.len() - written.len()) as u64;
        }

        for chunk in tombstones.chunks(ROWS_PER_STATEMENT) {
            // A tombstone keeps the data already stored and only says when it was deleted.
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO records (source_platform, model, source_object_id, user_id, integration_id, data, content_hash, first_seen_at, updated_at, deleted_at) ",
            );
            query.push_values(chunk, |mut row, record| {
                let json = serde_json::to_string(&record.data).unwrap_or_default();
                row.push_bind(&*batch.platform)
                    .push_bind(model)
                    .push_bind(&record.id)
                    .push_bind(text_field(record, "user_id"))
                    .push_bind(text_field(record, "source_integration_id"))
                    .push_bind(json)
                    .push_bind(Vec::<u8>::new())
                    .push_bind(&at)
                    .push_bind(&at)
                    .push_bind(&at);
            });
            query.push(
                " ON CONFLICT (source_platform, model, source_object_id) DO UPDATE SET \
                 deleted_at = excluded.deleted_at, updated_at = excluded.updated_at \
                 WHERE records.deleted_at IS NULL RETURNING 1",
            );
            let marked = query.build().fetch_all(&mut *transaction).await?.len();
            counts.deleted += marked as u64;
            counts.unchanged += (chunk.len() - marked) as u64;
        }

        for chunk in batch.rejects.chunks(ROWS_PER_STATEMENT) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO rejects (source_platform, stream, source_object_id, reason, raw, seen_at) ",
            );
            query.push_values(chunk, |mut row, reject| {
                row.push_bind(&*batch.platform)
                    .push_bind(&*batch.stream)
                    .push_bind(reject.id.as_deref())
                    .push_bind(&reject.reason)
                    .push_bind(reject.raw.to_string())
                    .push_bind(&at);
            });
            query.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(counts)
    }
}

fn text_field<'a>(record: &'a MappedRecord, name: &str) -> &'a str {
    record
        .data
        .get(name)
        .and_then(|value| value.as_str())
        .unwrap_or_default()
}
