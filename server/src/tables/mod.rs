//! The service's own tables, beside the engine's: sync scheduling with leases, pending
//! authorizations, API keys, and the per-user views its API serves (integration summaries,
//! pages of records).
//!
//! The engine's store keeps what any run needs (records, checkpoints, runs, the integrations
//! registry); these are the service's, so its queries live here. Their schema stays in the
//! engine's migrations: one database has one migration history (sqlx keeps one table of applied
//! migrations, and databases deployed so far have these tables in it), and the leases are
//! columns of the integrations table the engine owns.
//!
//! Scheduling works across processes: a sync is claimed by writing a lease on its integration
//! row, chosen with `FOR UPDATE SKIP LOCKED` on PostgreSQL (two processes never pick the same
//! row; each skips what the other is claiming) and under SQLite's single writer on SQLite. The
//! lease is renewed while the sync runs; a process that dies stops renewing, and once the lease
//! expires another process claims the integration and resumes it from its checkpoints.

use engine::on_every_backend;
use engine::store::{AnyStore, IntegrationStatus, Store, StoreError, stamp};
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::{ColumnIndex, Decode, QueryBuilder, Row, Type};

fn now() -> String {
    stamp(jiff::Timestamp::now())
}

/// The service's tables on one database.
#[derive(Debug)]
pub struct Tables<DB: sqlx::Database> {
    pub(crate) store: Store<DB>,
}

impl<DB: sqlx::Database> Clone for Tables<DB> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
        }
    }
}

/// The service's tables on whichever database the store is.
#[derive(Debug, Clone)]
pub enum ServiceTables {
    /// On an SQLite file.
    Sqlite(Tables<sqlx::Sqlite>),
    /// On a PostgreSQL database.
    Postgres(Tables<sqlx::Postgres>),
}

/// Runs the same expression on whichever database it is.
macro_rules! on_tables {
    ($tables:expr, $inner:ident => $body:expr) => {
        match $tables {
            ServiceTables::Sqlite($inner) => $body,
            ServiceTables::Postgres($inner) => $body,
        }
    };
}

// After `on_tables`, which it uses.
mod imports;

pub use imports::{
    ImportClaim, ImportRow, ImportSource, ImportStatus, MAX_IMPORT_ATTEMPTS, NewImport,
};

impl ServiceTables {
    /// The service's tables on `store`'s database (sharing its connections).
    pub fn on(store: &AnyStore) -> Self {
        match store {
            AnyStore::Sqlite(store) => Self::Sqlite(Tables {
                store: store.clone(),
            }),
            AnyStore::Postgres(store) => Self::Postgres(Tables {
                store: store.clone(),
            }),
        }
    }

    /// See [`Tables::claim_due`].
    pub async fn claim_due(
        &self,
        worker: &str,
        lease: std::time::Duration,
        lane: Lane,
        busy: &[&str],
    ) -> Result<Option<Claim>, StoreError> {
        on_tables!(self, tables => tables.claim_due(worker, lease, lane, busy).await)
    }

    /// See [`Tables::renew_lease`].
    pub async fn renew_lease(
        &self,
        integration_id: &str,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        on_tables!(self, tables => tables.renew_lease(integration_id, worker, lease).await)
    }

    /// See [`Tables::release`].
    pub async fn release(
        &self,
        integration_id: &str,
        worker: &str,
        release: &Release,
    ) -> Result<(), StoreError> {
        on_tables!(self, tables => tables.release(integration_id, worker, release).await)
    }

    /// See [`Tables::schedule`].
    pub async fn schedule(
        &self,
        integration_id: &str,
        at: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        on_tables!(self, tables => tables.schedule(integration_id, at).await)
    }

    /// See [`Tables::set_streams`].
    pub async fn set_streams(
        &self,
        integration_id: &str,
        streams: Option<&[String]>,
    ) -> Result<(), StoreError> {
        on_tables!(self, tables => tables.set_streams(integration_id, streams).await)
    }

    /// See [`Tables::set_interval`].
    pub async fn set_interval(
        &self,
        integration_id: &str,
        every_secs: Option<u64>,
    ) -> Result<(), StoreError> {
        on_tables!(self, tables => tables.set_interval(integration_id, every_secs).await)
    }

    /// See [`Tables::integrations_of`].
    pub async fn integrations_of(
        &self,
        user_id: &str,
    ) -> Result<Vec<IntegrationSummary>, StoreError> {
        on_tables!(self, tables => tables.integrations_of(user_id).await)
    }

    /// See [`Tables::integration_summary`].
    pub async fn integration_summary(
        &self,
        integration_id: &str,
    ) -> Result<Option<IntegrationSummary>, StoreError> {
        on_tables!(self, tables => tables.integration_summary(integration_id).await)
    }

    /// See [`Tables::records_page`].
    pub async fn records_page(
        &self,
        user_id: &str,
        model: Option<&str>,
        since: Option<jiff::Timestamp>,
        after: i64,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        on_tables!(self, tables => tables.records_page(user_id, model, since, after, limit).await)
    }

    /// See [`Tables::owned_blob`].
    pub async fn owned_blob(
        &self,
        user_id: &str,
        hash: &str,
    ) -> Result<Option<(i64, Option<String>)>, StoreError> {
        on_tables!(self, tables => tables.owned_blob(user_id, hash).await)
    }

    /// See [`Tables::record_part`].
    pub async fn record_part(
        &self,
        user_id: &str,
        record: i64,
        part: &str,
    ) -> Result<Option<StoredPart>, StoreError> {
        on_tables!(self, tables => tables.record_part(user_id, record, part).await)
    }

    /// See [`Tables::keep_thumbnail`].
    pub async fn keep_thumbnail(
        &self,
        user_id: &str,
        of: &StoredPart,
        thumbnail: &engine::blobs::BlobRef,
    ) -> Result<(), StoreError> {
        on_tables!(self, tables => tables.keep_thumbnail(user_id, of, thumbnail).await)
    }

    /// See [`Tables::save_pending`].
    pub async fn save_pending(
        &self,
        state: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), StoreError> {
        on_tables!(self, tables => tables.save_pending(state, pending).await)
    }

    /// See [`Tables::take_pending`].
    pub async fn take_pending(
        &self,
        state: &str,
        user_id: &str,
        connector: &str,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        on_tables!(self, tables => tables.take_pending(state, user_id, connector).await)
    }

    /// See [`Tables::add_api_key`].
    pub async fn add_api_key(&self, key_hash: &str, user_id: &str) -> Result<(), StoreError> {
        on_tables!(self, tables => tables.add_api_key(key_hash, user_id).await)
    }

    /// See [`Tables::api_key_user`].
    pub async fn api_key_user(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        on_tables!(self, tables => tables.api_key_user(key_hash).await)
    }
}

/// Which integrations a claim may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Only integrations that have never finished an import (large initial imports).
    Initial,
    /// Only integrations that have (short incremental syncs).
    Incremental,
}

/// A claimed sync: the integration is leased to the claiming worker until released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The integration.
    pub integration_id: String,
    /// Its connector.
    pub connector: String,
    /// Failed syncs in a row before this one.
    pub failures: u32,
    /// The operator's interval for it, overriding the connector's schedule.
    pub every_secs: Option<u64>,
    /// The root streams the person chose; empty for every stream.
    pub streams: Vec<String>,
}

/// The streams kept as a JSON array; none (or unreadable) is every stream.
fn chosen_streams(stored: Option<String>) -> Vec<String> {
    stored
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// How a claimed sync ended, for the scheduler's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// When it is due next (RFC 3339).
    pub next_sync_at: jiff::Timestamp,
    /// Whether it succeeded: an integration's first success ends its initial import.
    pub succeeded: bool,
    /// Failed syncs in a row, this one included (0 after a success).
    pub failures: u32,
    /// The error and what to do, for the user; `None` clears the last one.
    pub error: Option<String>,
}

/// An integration as the API shows it: no tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IntegrationSummary {
    /// Its id.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The connector id.
    pub connector: String,
    /// Which of the user's accounts of the connector (`""`: the first, default one).
    pub account: String,
    /// `active` or `needs_reauth`.
    pub status: &'static str,
    /// The granted scopes.
    pub scopes: Option<String>,
    /// The last error and what to do about it.
    pub last_error: Option<String>,
    /// When it was connected.
    pub created_at: String,
    /// When its last sync ended.
    pub last_sync_at: Option<String>,
    /// When it is due next (`null` while it needs the user to connect again).
    pub next_sync_at: Option<String>,
    /// Failed syncs in a row.
    pub failures: u32,
    /// Whether a sync of it runs now (in any process).
    pub running: bool,
    /// Whether it is no longer synced by itself because its last syncs never ended (the process
    /// running each died): a sync asked for by a person (`POST .../sync`) lifts this.
    pub quarantined: bool,
    /// The root streams the person chose to import; `null` for every stream.
    pub streams: Option<Vec<String>>,
    /// Whether its first import has finished.
    pub imported: bool,
    /// The operator's or user's interval between its syncs, in seconds, when it overrides the
    /// connector's schedule.
    pub sync_every_secs: Option<u64>,
}

/// One stored record, as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordRow {
    /// The record's id in this service (`GET /media/{id}` serves its content).
    pub id: String,
    /// The integration that imported it.
    pub integration_id: String,
    /// The connector.
    pub source_platform: String,
    /// The model.
    pub model: String,
    /// The record's identity at the provider: the stream's `key`, else the provider's id.
    pub source_object_id: String,
    /// The provider's own id for the record (the same as `source_object_id` unless the
    /// stream's `key` is more than that id, such as a calendar and an event id).
    pub provider_id: String,
    /// The model record.
    #[schema(value_type = Object)]
    pub data: Value,
    /// When it last changed.
    pub updated_at: String,
    /// When the provider deleted it, if it did.
    pub deleted_at: Option<String>,
    /// Its content (the photo, the file) in the blob store, once downloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<RecordContent>,
    /// Its content's other parts (a message's HTML body, its attachments), by part name
    /// (`html`, `attachments/1.2`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, RecordContent>,
}

/// A record's content in the blob store.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordContent {
    /// The BLAKE3 hash of the bytes (64 hex digits).
    pub hash: String,
    /// Their size in bytes.
    pub size: i64,
    /// Their MIME type, when known.
    pub content_type: Option<String>,
    /// Their file name as the provider gives it (an attachment's), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Where the owner fetches them: `/blobs/{hash}`.
    pub url: String,
    /// For a photo of a type thumbnails are made of (JPEG, PNG, GIF, WebP), where its
    /// thumbnail is: `/media/{id}?thumbnail=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

impl RecordContent {
    /// Read from a row's columns `hash, size, content_type, file_name` starting at `at`;
    /// `None` when the hash is (a record without content).
    fn read<R: Row>(row: &R, at: usize) -> Result<Option<Self>, sqlx::Error>
    where
        usize: sqlx::ColumnIndex<R>,
        for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let Some(hash) = row.try_get::<Option<String>, _>(at)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            url: format!("/blobs/{hash}"),
            hash,
            size: row.try_get::<Option<i64>, _>(at + 1)?.unwrap_or_default(),
            content_type: row.try_get(at + 2)?,
            file_name: row.try_get(at + 3)?,
            thumbnail_url: None,
        }))
    }
}

/// The part of a record's content a user asked for, as `record_blobs` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPart {
    /// The record's connector, model and provider id (the blob's row's key).
    pub source_platform: String,
    /// The record's model.
    pub model: String,
    /// The provider's id of the record.
    pub source_object_id: String,
    /// The integration that imported it.
    pub integration_id: String,
    /// The part's blob.
    pub hash: String,
    /// Its MIME type, when known.
    pub content_type: Option<String>,
    /// Its file name, when the provider gives one.
    pub file_name: Option<String>,
    /// For the record's own content: the thumbnail made of this very blob, if one was.
    pub thumbnail: Option<String>,
}

/// The `part` under which a record's thumbnail is kept: a spec's part names are `[a-z0-9_]`, so
/// none is this. Its `version` is the hash of the blob it was made of.
pub const THUMBNAIL_PART: &str = ".thumbnail";

/// A page of records and where the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecordPage {
    /// The records, oldest row first.
    pub records: Vec<RecordRow>,
    /// Pass it as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// An authorization in progress, taken by its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAuthorization {
    /// The user who started it.
    pub user_id: String,
    /// The connector.
    pub connector: String,
    /// What the callback needs (PKCE verifier, redirect URI), sealed.
    pub sealed: Vec<u8>,
    /// When it started.
    pub created_at: String,
}

/// How long an authorization may take before its state is refused.
const PENDING_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_secs(15 * 60);

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn status_name(status: &str) -> &'static str {
    if status == IntegrationStatus::NeedsReauth.as_str() {
        IntegrationStatus::NeedsReauth.as_str()
    } else {
        IntegrationStatus::Active.as_str()
    }
}

const SUMMARY_COLUMNS: &str = "id, user_id, connector, status, scopes, last_error, created_at, last_sync_at, \
     next_sync_at, failures, lease_until, imported, sync_every_secs, account, unfinished, streams FROM integrations";

/// Claims in a row that never ended (the process running the sync died) after which an
/// integration is no longer claimed: quarantined until a person asks for a sync again.
pub const QUARANTINE_AFTER: u32 = 3;

on_every_backend! {
impl Tables {
    /// Claims the integration that has waited longest past its due time in `lane`, leasing it
    /// to `worker` for `lease`; integrations of the connectors in `busy` are left for later. An
    /// integration without a due time (saved before connecting set one) is due at once.
    pub async fn claim_due(
        &self,
        worker: &str,
        lease: std::time::Duration,
        lane: Lane,
        busy: &[&str],
    ) -> Result<Option<Claim>, StoreError> {
        let now_at = jiff::Timestamp::now();
        let now = stamp(now_at);
        let until = stamp(now_at + lease);
        let mut query = QueryBuilder::<DB>::new("UPDATE integrations SET lease_owner = ");
        query
            .push_bind(worker)
            .push(", lease_until = ")
            .push_bind(until.as_str())
            // Counted at the claim, cleared at the release: what is left counts syncs whose
            // process died.
            .push(", unfinished = unfinished + 1")
            .push(" WHERE id = (SELECT id FROM integrations WHERE status = 'active' AND unfinished < ")
            .push_bind(i64::from(QUARANTINE_AFTER))
            .push(" AND (next_sync_at IS NULL OR next_sync_at <= ")
            .push_bind(now.as_str())
            .push(") AND (lease_until IS NULL OR lease_until < ")
            .push_bind(now.as_str())
            .push(") AND imported = ")
            .push_bind(i64::from(lane == Lane::Incremental));
        if !busy.is_empty() {
            query.push(" AND connector NOT IN (");
            let mut list = query.separated(", ");
            for connector in busy {
                list.push_bind(*connector);
            }
            query.push(")");
        }
        query
            .push(" ORDER BY next_sync_at LIMIT 1")
            .push(DB::SKIP_LOCKED)
            // Checked again on the row itself: what the subquery saw may have been claimed since.
            .push(") AND (lease_until IS NULL OR lease_until < ")
            .push_bind(now.as_str())
            .push(") RETURNING id, connector, failures, sync_every_secs, streams");
        let Some(row) = query.build().fetch_optional(self.store.pool()).await? else {
            return Ok(None);
        };
        let every: Option<i64> = row.try_get(3usize)?;
        Ok(Some(Claim {
            integration_id: row.try_get(0usize)?,
            connector: row.try_get(1usize)?,
            failures: count(row.try_get(2usize)?),
            every_secs: every.and_then(|secs| u64::try_from(secs).ok()),
            streams: chosen_streams(row.try_get(4usize)?),
        }))
    }

    /// Extends `worker`'s lease on an integration; `false` when it no longer holds it (the
    /// integration was deleted, or the lease expired and another worker took it).
    pub async fn renew_lease(
        &self,
        integration_id: &str,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let until = stamp(jiff::Timestamp::now() + lease);
        let mut query = QueryBuilder::<DB>::new("UPDATE integrations SET lease_until = ");
        query
            .push_bind(until.as_str())
            .push(" WHERE id = ")
            .push_bind(integration_id)
            .push(" AND lease_owner = ")
            .push_bind(worker);
        let done = query.build().execute(self.store.pool()).await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// Ends `worker`'s lease with the sync's outcome.
    pub async fn release(
        &self,
        integration_id: &str,
        worker: &str,
        release: &Release,
    ) -> Result<(), StoreError> {
        let now = now();
        let next = stamp(release.next_sync_at);
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE integrations SET lease_owner = NULL, lease_until = NULL, unfinished = 0, last_sync_at = ",
        );
        query
            .push_bind(now.as_str())
            .push(", next_sync_at = ")
            .push_bind(next.as_str())
            .push(", failures = ")
            .push_bind(i64::from(release.failures))
            .push(", last_error = ")
            .push_bind(release.error.as_deref());
        if release.succeeded {
            query.push(", imported = 1");
        }
        query
            .push(" WHERE id = ")
            .push_bind(integration_id)
            .push(" AND lease_owner = ")
            .push_bind(worker);
        query.build().execute(self.store.pool()).await?;
        Ok(())
    }

    /// Makes an integration due at `at` (now, for "sync now"; the first import after
    /// connecting), and out of quarantine: a person asked for it. An integration that needs the
    /// user to connect again stays unscheduled.
    pub async fn schedule(
        &self,
        integration_id: &str,
        at: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let at = stamp(at);
        let mut query =
            QueryBuilder::<DB>::new("UPDATE integrations SET unfinished = 0, next_sync_at = ");
        query
            .push_bind(at.as_str())
            .push(" WHERE id = ")
            .push_bind(integration_id);
        query.build().execute(self.store.pool()).await?;
        Ok(())
    }

    /// Sets the root streams a person chose to import (`None`: every stream).
    pub async fn set_streams(
        &self,
        integration_id: &str,
        streams: Option<&[String]>,
    ) -> Result<(), StoreError> {
        let text = streams.map(|streams| serde_json::Value::from(streams).to_string());
        let mut query = QueryBuilder::<DB>::new("UPDATE integrations SET streams = ");
        query
            .push_bind(text.as_deref())
            .push(" WHERE id = ")
            .push_bind(integration_id);
        query.build().execute(self.store.pool()).await?;
        Ok(())
    }

    /// Sets (or, with `None`, clears) the operator's sync interval for an integration.
    pub async fn set_interval(
        &self,
        integration_id: &str,
        every_secs: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<DB>::new("UPDATE integrations SET sync_every_secs = ");
        query
            .push_bind(every_secs.and_then(|secs| i64::try_from(secs).ok()))
            .push(" WHERE id = ")
            .push_bind(integration_id);
        query.build().execute(self.store.pool()).await?;
        Ok(())
    }

    /// A user's integrations, oldest first.
    pub async fn integrations_of(
        &self,
        user_id: &str,
    ) -> Result<Vec<IntegrationSummary>, StoreError> {
        let mut query =
            QueryBuilder::<DB>::new(format!("SELECT {SUMMARY_COLUMNS} WHERE user_id = "));
        query.push_bind(user_id).push(" ORDER BY created_at, id");
        let rows = query.build().fetch_all(self.store.pool()).await?;
        let now = now();
        rows.iter().map(|row| summary(row, &now)).collect()
    }

    /// One integration's summary.
    pub async fn integration_summary(
        &self,
        integration_id: &str,
    ) -> Result<Option<IntegrationSummary>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!("SELECT {SUMMARY_COLUMNS} WHERE id = "));
        query.push_bind(integration_id);
        let now = now();
        query
            .build()
            .fetch_optional(self.store.pool())
            .await?
            .map(|row| summary(&row, &now))
            .transpose()
    }

    /// The size and type of blob `hash` when one of `user_id`'s records refers to it; `None`
    /// otherwise (another user's content is not theirs to fetch, even by its hash).
    pub async fn owned_blob(
        &self,
        user_id: &str,
        hash: &str,
    ) -> Result<Option<(i64, Option<String>)>, StoreError> {
        let mut query =
            QueryBuilder::<DB>::new("SELECT size, content_type FROM record_blobs WHERE user_id = ");
        query
            .push_bind(user_id)
            .push(" AND hash = ")
            .push_bind(hash)
            .push(" LIMIT 1");
        let Some(row) = query.build().fetch_optional(self.store.pool()).await? else {
            return Ok(None);
        };
        Ok(Some((row.try_get(0usize)?, row.try_get(1usize)?)))
    }

    /// Adds the content parts other than the record's own to `records`, the rows `ids` (in
    /// the same order).
    async fn add_parts(
        &self,
        user_id: &str,
        ids: &[i64],
        records: &mut [RecordRow],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<DB>::new(
            "SELECT r.id, b.part, b.hash, b.size, b.content_type, b.file_name FROM records r \
             JOIN record_blobs b ON b.user_id = r.user_id AND b.source_platform = r.source_platform \
             AND b.model = r.model AND b.source_object_id = r.source_object_id AND b.part <> '' \
             AND b.part <> '.thumbnail' WHERE r.user_id = ",
        );
        query.push_bind(user_id).push(" AND r.id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(") ORDER BY r.id, b.part");
        let rows = query.build().fetch_all(self.store.pool()).await?;
        for row in &rows {
            let id: i64 = row.try_get(0usize)?;
            let (Ok(at), Some(content)) = (ids.binary_search(&id), RecordContent::read(row, 2)?)
            else {
                continue;
            };
            records[at].parts.insert(row.try_get(1usize)?, content);
        }
        Ok(())
    }

    /// Part `part` of the content of the user's record `record` (the row id `GET /records`
    /// gives); `None` when the record is not theirs or has no such part.
    pub async fn record_part(
        &self,
        user_id: &str,
        record: i64,
        part: &str,
    ) -> Result<Option<StoredPart>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT b.source_platform, b.model, b.source_object_id, b.integration_id, b.hash, \
             b.content_type, b.file_name, t.hash FROM records r JOIN record_blobs b \
             ON b.user_id = r.user_id AND b.source_platform = r.source_platform \
             AND b.model = r.model AND b.source_object_id = r.source_object_id \
             LEFT JOIN record_blobs t ON t.user_id = b.user_id \
             AND t.source_platform = b.source_platform AND t.model = b.model \
             AND t.source_object_id = b.source_object_id AND t.part = ",
        );
        query
            .push_bind(THUMBNAIL_PART)
            .push(" AND t.version = b.hash WHERE r.user_id = ")
            .push_bind(user_id)
            .push(" AND r.id = ")
            .push_bind(record)
            .push(" AND b.part = ")
            .push_bind(part);
        let Some(row) = query.build().fetch_optional(self.store.pool()).await? else {
            return Ok(None);
        };
        Ok(Some(StoredPart {
            source_platform: row.try_get(0usize)?,
            model: row.try_get(1usize)?,
            source_object_id: row.try_get(2usize)?,
            integration_id: row.try_get(3usize)?,
            hash: row.try_get(4usize)?,
            content_type: row.try_get(5usize)?,
            file_name: row.try_get(6usize)?,
            thumbnail: row.try_get(7usize)?,
        }))
    }

    /// Keeps `thumbnail` as the thumbnail of the record whose content is `of`, made of its
    /// blob (a later blob of the record gets a thumbnail of its own).
    pub async fn keep_thumbnail(
        &self,
        user_id: &str,
        of: &StoredPart,
        thumbnail: &engine::blobs::BlobRef,
    ) -> Result<(), StoreError> {
        let hash = thumbnail.hash.to_hex();
        let at = now();
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO record_blobs (user_id, source_platform, model, source_object_id, part, \
             integration_id, hash, size, content_type, version, stored_at) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(user_id)
            .push_bind(of.source_platform.as_str())
            .push_bind(of.model.as_str())
            .push_bind(of.source_object_id.as_str())
            .push_bind(THUMBNAIL_PART)
            .push_bind(of.integration_id.as_str())
            .push_bind(hash.as_str())
            .push_bind(i64::try_from(thumbnail.size).unwrap_or(i64::MAX))
            .push_bind("image/jpeg")
            .push_bind(of.hash.as_str())
            .push_bind(at.as_str());
        query.push(
            ") ON CONFLICT (user_id, source_platform, model, source_object_id, part) DO UPDATE SET \
             hash = excluded.hash, size = excluded.size, version = excluded.version, \
             stored_at = excluded.stored_at",
        );
        query.build().execute(self.store.pool()).await?;
        Ok(())
    }

    /// A user's records, in the order they were first stored, `limit` at a time; `model` and
    /// `since` (an RFC 3339 time: records changed at or after it) narrow them.
    pub async fn records_page(
        &self,
        user_id: &str,
        model: Option<&str>,
        since: Option<jiff::Timestamp>,
        after: i64,
        limit: u32,
    ) -> Result<RecordPage, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT r.id, r.integration_id, r.source_platform, r.model, r.source_object_id, r.data",
        );
        query
            .push(DB::JSON_TEXT_SUFFIX)
            .push(
                ", r.updated_at, r.deleted_at, b.hash, b.size, b.content_type, b.file_name \
                 FROM records r LEFT JOIN record_blobs b ON b.user_id = r.user_id \
                 AND b.source_platform = r.source_platform AND b.model = r.model \
                 AND b.source_object_id = r.source_object_id AND b.part = '' WHERE r.user_id = ",
            )
            .push_bind(user_id)
            .push(" AND r.id > ")
            .push_bind(after);
        if let Some(model) = model {
            query.push(" AND r.model = ").push_bind(model);
        }
        let since = since.map(stamp);
        if let Some(since) = &since {
            query.push(" AND r.updated_at >= ").push_bind(since.as_str());
        }
        // One more than asked: whether it exists says whether there is a next page.
        query
            .push(" ORDER BY r.id LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = query.build().fetch_all(self.store.pool()).await?;
        let mut records = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows.iter().take(limit as usize) {
            let data: String = row.try_get(5usize)?;
            last = Some(row.try_get::<i64, _>(0usize)?);
            let integration_id: String = row.try_get(1usize)?;
            let source_platform: String = row.try_get(2usize)?;
            let source_object_id: String = row.try_get(4usize)?;
            // The row keeps its provenance in columns; the record carries it again.
            let data = engine::record::with_provenance(
                &data,
                user_id,
                &integration_id,
                &source_platform,
                &source_object_id,
            )
            .map_err(|error| StoreError::Corrupt {
                what: "record",
                reason: error.to_string(),
            })?;
            let provider_id = data
                .get(engine::models::PROVIDER_ID)
                .and_then(serde_json::Value::as_str)
                .unwrap_or(&source_object_id)
                .to_owned();
            let id: i64 = row.try_get(0usize)?;
            let mut content = RecordContent::read(row, 8)?;
            if let Some(content) = &mut content
                && content
                    .content_type
                    .as_deref()
                    .is_some_and(engine::blobs::can_thumbnail)
            {
                content.thumbnail_url = Some(format!("/media/{id}?thumbnail=true"));
            }
            records.push(RecordRow {
                id: id.to_string(),
                integration_id,
                source_platform,
                model: row.try_get(3usize)?,
                source_object_id,
                provider_id,
                data: serde_json::Value::Object(data),
                updated_at: row.try_get(6usize)?,
                deleted_at: row.try_get(7usize)?,
                content,
                parts: BTreeMap::new(),
            });
            ids.push(last.unwrap_or_default());
        }
        self.add_parts(user_id, &ids, &mut records).await?;
        let next_cursor = (rows.len() > limit as usize)
            .then_some(last)
            .flatten()
            .map(|id| id.to_string());
        Ok(RecordPage {
            records,
            next_cursor,
        })
    }

    /// Remembers an authorization in progress under its `state`; forgets expired ones.
    pub async fn save_pending(
        &self,
        state: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), StoreError> {
        let expired = stamp(jiff::Timestamp::now() - PENDING_LIFETIME);
        let mut query = QueryBuilder::<DB>::new("DELETE FROM oauth_pending WHERE created_at < ");
        query.push_bind(expired.as_str());
        query.build().execute(self.store.pool()).await?;
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO oauth_pending (state, user_id, connector, sealed, created_at) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(state)
            .push_bind(pending.user_id.as_str())
            .push_bind(pending.connector.as_str())
            .push_bind(pending.sealed.as_slice())
            .push_bind(pending.created_at.as_str());
        query.push(")");
        query.build().execute(self.store.pool()).await?;
        Ok(())
    }

    /// Takes the authorization `state` names, when `user_id` started it for `connector`: it can
    /// be taken once, and not after it expired. Another user's callback with the same state
    /// takes nothing, so replaying someone's callback cannot cancel their authorization.
    pub async fn take_pending(
        &self,
        state: &str,
        user_id: &str,
        connector: &str,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        let mut query = QueryBuilder::<DB>::new("DELETE FROM oauth_pending WHERE state = ");
        query
            .push_bind(state)
            .push(" AND user_id = ")
            .push_bind(user_id)
            .push(" AND connector = ")
            .push_bind(connector)
            .push(" RETURNING user_id, connector, sealed, created_at");
        let Some(row) = query.build().fetch_optional(self.store.pool()).await? else {
            return Ok(None);
        };
        let pending = PendingAuthorization {
            user_id: row.try_get(0usize)?,
            connector: row.try_get(1usize)?,
            sealed: row.try_get(2usize)?,
            created_at: row.try_get(3usize)?,
        };
        let expired = stamp(jiff::Timestamp::now() - PENDING_LIFETIME);
        Ok((pending.created_at >= expired).then_some(pending))
    }

    /// Adds an API key (by its hash) for a user.
    pub async fn add_api_key(&self, key_hash: &str, user_id: &str) -> Result<(), StoreError> {
        let now = now();
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO api_keys (key_hash, user_id, created_at) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(key_hash)
            .push_bind(user_id)
            .push_bind(now.as_str());
        query.push(")");
        query.build().execute(self.store.pool()).await?;
        Ok(())
    }

    /// The user whose API key hashes to `key_hash`.
    pub async fn api_key_user(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        let mut query = QueryBuilder::<DB>::new("SELECT user_id FROM api_keys WHERE key_hash = ");
        query.push_bind(key_hash);
        Ok(match query.build().fetch_optional(self.store.pool()).await? {
            Some(row) => Some(row.try_get(0usize)?),
            None => None,
        })
    }
}
}

fn summary<R: Row>(row: &R, now: &str) -> Result<IntegrationSummary, StoreError>
where
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let status: String = row.try_get(3usize)?;
    let lease_until: Option<String> = row.try_get(10usize)?;
    let status = status_name(&status);
    Ok(IntegrationSummary {
        id: row.try_get(0usize)?,
        user_id: row.try_get(1usize)?,
        connector: row.try_get(2usize)?,
        status,
        scopes: row.try_get(4usize)?,
        last_error: row.try_get(5usize)?,
        created_at: row.try_get(6usize)?,
        last_sync_at: row.try_get(7usize)?,
        next_sync_at: if status == IntegrationStatus::Active.as_str() {
            row.try_get(8usize)?
        } else {
            None
        },
        failures: count(row.try_get(9usize)?),
        running: lease_until.is_some_and(|until| until.as_str() > now),
        quarantined: count(row.try_get(14usize)?) >= QUARANTINE_AFTER,
        streams: Some(chosen_streams(row.try_get(15usize)?)).filter(|streams| !streams.is_empty()),
        imported: row.try_get::<i64, _>(11usize)? != 0,
        sync_every_secs: row
            .try_get::<Option<i64>, _>(12usize)?
            .and_then(|secs| u64::try_from(secs).ok()),
        account: row.try_get(13usize)?,
    })
}
