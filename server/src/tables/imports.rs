//! The imports table: data exports waiting to be imported, being imported, and done.
//!
//! An import is claimed and leased like a sync (see the module above): the process running it
//! renews the lease; when a process dies mid-import the lease runs out, and the next claim takes
//! the import again and resumes it from its checkpoint inside the export. One import of an
//! integration waits or runs at a time (a partial unique index says so), since its streams'
//! checkpoints are one.

use std::path::PathBuf;

use engine::on_every_backend;
use engine::store::{StoreError, stamp};
use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use super::{ServiceTables, Tables, count, now};

/// Claims of one import (the process running it died each time) after which it is failed
/// rather than claimed again: an export that kills the process must not do so forever.
pub const MAX_IMPORT_ATTEMPTS: u32 = 3;

/// Where an export came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportSource {
    /// Uploaded to the service; the upload is deleted when its import ends.
    Upload,
    /// Named in the operator's import folder; left where it is.
    Folder,
}

impl ImportSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Folder => "folder",
        }
    }

    fn parse(text: &str) -> Self {
        if text == "folder" {
            Self::Folder
        } else {
            Self::Upload
        }
    }
}

/// Where an import is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Waiting for the scheduler.
    Queued,
    /// Being imported (or, with an expired lease, waiting to be resumed).
    Running,
    /// Every stream imported.
    Succeeded,
    /// Some streams failed; the others imported.
    Partial,
    /// Nothing imported to the end; `error` says why.
    Failed,
}

impl ImportStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "partial" => Self::Partial,
            _ => Self::Failed,
        }
    }
}

/// An import as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportRow {
    /// Its id.
    pub id: String,
    /// The integration it imports into.
    pub integration_id: String,
    /// Where the export came from.
    pub source: ImportSource,
    /// The uploaded file's name, or the paths in the import folder.
    pub name: String,
    /// The export's size in bytes, as received (a folder's: its files').
    pub bytes: u64,
    /// Where it is.
    pub status: ImportStatus,
    /// Why it failed, or which streams did, with what to do.
    pub error: Option<String>,
    /// Times it was claimed: more than one when a process died while importing it.
    pub attempts: u32,
    /// When it was received.
    pub created_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
}

/// An import to queue.
#[derive(Debug, Clone)]
pub struct NewImport<'a> {
    /// Its id.
    pub id: &'a str,
    /// The integration.
    pub integration_id: &'a str,
    /// Its owner.
    pub user_id: &'a str,
    /// Where the export came from.
    pub source: ImportSource,
    /// What the person calls it.
    pub name: &'a str,
    /// The export's parts on the server.
    pub paths: &'a [PathBuf],
    /// Their size in bytes.
    pub bytes: u64,
}

/// A claimed import: leased to the claiming worker until finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportClaim {
    /// The import.
    pub id: String,
    /// The integration.
    pub integration_id: String,
    /// Where the export came from.
    pub source: ImportSource,
    /// The export's parts on the server.
    pub paths: Vec<PathBuf>,
    /// Claims so far, this one included.
    pub attempts: u32,
}

fn paths_text(paths: &[PathBuf]) -> String {
    let texts: Vec<String> = paths
        .iter()
        .map(|path| path.to_string_lossy().into_owned())
        .collect();
    serde_json::to_string(&texts).unwrap_or_else(|_| "[]".to_owned())
}

fn paths_of(text: &str) -> Vec<PathBuf> {
    serde_json::from_str::<Vec<String>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(PathBuf::from)
        .collect()
}

const IMPORT_COLUMNS: &str = "id, integration_id, source, name, bytes, status, error, attempts, created_at, finished_at FROM imports";

on_every_backend! {
impl Tables {
    /// Queues an import; `false` (and nothing queued) when one of the integration waits or runs.
    pub async fn add_import(&self, new: &NewImport<'_>) -> Result<bool, StoreError> {
        let now = now();
        let paths = paths_text(new.paths);
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO imports (id, integration_id, user_id, source, name, paths, bytes, status, created_at) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(new.id)
            .push_bind(new.integration_id)
            .push_bind(new.user_id)
            .push_bind(new.source.as_str())
            .push_bind(new.name)
            .push_bind(paths.as_str())
            .push_bind(i64::try_from(new.bytes).unwrap_or(i64::MAX))
            .push_bind(ImportStatus::Queued.as_str())
            .push_bind(now.as_str());
        query.push(
            ") ON CONFLICT (integration_id) WHERE status IN ('queued', 'running') DO NOTHING",
        );
        let done = query.build().execute(self.store.pool()).await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// Claims the oldest import that waits, or whose process stopped renewing its lease,
    /// leasing it to `worker` for `lease`.
    pub async fn claim_import(
        &self,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<Option<ImportClaim>, StoreError> {
        let now_at = jiff::Timestamp::now();
        let now = stamp(now_at);
        let until = stamp(now_at + lease);
        let mut query = QueryBuilder::<DB>::new("UPDATE imports SET status = 'running', lease_owner = ");
        query
            .push_bind(worker)
            .push(", lease_until = ")
            .push_bind(until.as_str())
            .push(", attempts = attempts + 1")
            .push(" WHERE id = (SELECT id FROM imports WHERE status IN ('queued', 'running') AND (lease_until IS NULL OR lease_until < ")
            .push_bind(now.as_str())
            .push(") ORDER BY created_at LIMIT 1")
            .push(DB::SKIP_LOCKED)
            // Checked again on the row itself: what the subquery saw may have been claimed since.
            .push(") AND (lease_until IS NULL OR lease_until < ")
            .push_bind(now.as_str())
            .push(") RETURNING id, integration_id, source, paths, attempts");
        let Some(row) = query.build().fetch_optional(self.store.pool()).await? else {
            return Ok(None);
        };
        let source: String = row.try_get(2usize)?;
        let paths: String = row.try_get(3usize)?;
        Ok(Some(ImportClaim {
            id: row.try_get(0usize)?,
            integration_id: row.try_get(1usize)?,
            source: ImportSource::parse(&source),
            paths: paths_of(&paths),
            attempts: count(row.try_get(4usize)?),
        }))
    }

    /// Extends `worker`'s lease on an import; `false` when it no longer holds it (the
    /// integration was deleted with its imports, or the lease expired and another worker took
    /// it).
    pub async fn renew_import(
        &self,
        id: &str,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let until = stamp(jiff::Timestamp::now() + lease);
        let mut query = QueryBuilder::<DB>::new("UPDATE imports SET lease_until = ");
        query
            .push_bind(until.as_str())
            .push(" WHERE id = ")
            .push_bind(id)
            .push(" AND lease_owner = ")
            .push_bind(worker);
        let done = query.build().execute(self.store.pool()).await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    /// Ends `worker`'s lease on an import with how it ended.
    pub async fn finish_import(
        &self,
        id: &str,
        worker: &str,
        status: ImportStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now();
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE imports SET lease_owner = NULL, lease_until = NULL, status = ",
        );
        query
            .push_bind(status.as_str())
            .push(", error = ")
            .push_bind(error)
            .push(", finished_at = ")
            .push_bind(now.as_str())
            .push(" WHERE id = ")
            .push_bind(id)
            .push(" AND lease_owner = ")
            .push_bind(worker);
        query.build().execute(self.store.pool()).await?;
        Ok(())
    }

    /// An integration's latest `limit` imports, newest first.
    pub async fn imports_of(
        &self,
        integration_id: &str,
        limit: u32,
    ) -> Result<Vec<ImportRow>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!("SELECT {IMPORT_COLUMNS} WHERE integration_id = "));
        query
            .push_bind(integration_id)
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = query.build().fetch_all(self.store.pool()).await?;
        rows.iter()
            .map(|row| {
                let source: String = row.try_get(2usize)?;
                let status: String = row.try_get(5usize)?;
                Ok(ImportRow {
                    id: row.try_get(0usize)?,
                    integration_id: row.try_get(1usize)?,
                    source: ImportSource::parse(&source),
                    name: row.try_get(3usize)?,
                    bytes: u64::try_from(row.try_get::<i64, _>(4usize)?).unwrap_or_default(),
                    status: ImportStatus::parse(&status),
                    error: row.try_get(6usize)?,
                    attempts: count(row.try_get(7usize)?),
                    created_at: row.try_get(8usize)?,
                    finished_at: row.try_get(9usize)?,
                })
            })
            .collect()
    }

    /// The uploads kept for an integration's imports (those not yet imported to their end), to
    /// delete with it.
    pub async fn uploads_of(&self, integration_id: &str) -> Result<Vec<PathBuf>, StoreError> {
        let mut query = QueryBuilder::<DB>::new("SELECT paths FROM imports WHERE source = 'upload' AND integration_id = ");
        query.push_bind(integration_id);
        let rows = query.build().fetch_all(self.store.pool()).await?;
        let mut paths = Vec::new();
        for row in rows {
            let text: String = row.try_get(0usize)?;
            paths.extend(paths_of(&text));
        }
        Ok(paths)
    }
}
}

impl ServiceTables {
    /// See [`Tables::add_import`].
    pub async fn add_import(&self, new: &NewImport<'_>) -> Result<bool, StoreError> {
        on_tables!(self, tables => tables.add_import(new).await)
    }

    /// See [`Tables::claim_import`].
    pub async fn claim_import(
        &self,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<Option<ImportClaim>, StoreError> {
        on_tables!(self, tables => tables.claim_import(worker, lease).await)
    }

    /// See [`Tables::renew_import`].
    pub async fn renew_import(
        &self,
        id: &str,
        worker: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        on_tables!(self, tables => tables.renew_import(id, worker, lease).await)
    }

    /// See [`Tables::finish_import`].
    pub async fn finish_import(
        &self,
        id: &str,
        worker: &str,
        status: ImportStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        on_tables!(self, tables => tables.finish_import(id, worker, status, error).await)
    }

    /// See [`Tables::imports_of`].
    pub async fn imports_of(
        &self,
        integration_id: &str,
        limit: u32,
    ) -> Result<Vec<ImportRow>, StoreError> {
        on_tables!(self, tables => tables.imports_of(integration_id, limit).await)
    }

    /// See [`Tables::uploads_of`].
    pub async fn uploads_of(&self, integration_id: &str) -> Result<Vec<PathBuf>, StoreError> {
        on_tables!(self, tables => tables.uploads_of(integration_id).await)
    }
}
