//! Sync runs, the audit log, and counting records.

use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use super::write::now;
use super::{RunScope, StoreError};
use crate::events::WriteCounts;
use crate::on_every_backend;

/// What a run did, as stored with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunTotals {
    /// Pages decoded.
    pub pages: u64,
    /// Requests sent (every attempt).
    pub requests: u64,
    /// What the writes did: counts of records `new`, `updated`, `unchanged`, `deleted` and
    /// `rejected`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub written: WriteCounts,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every stream it ran imported.
    Succeeded,
    /// Some streams (or substream partitions) failed while others imported; the run's error
    /// names which and why.
    Partial,
    /// Nothing imported to the end: every stream failed, or something ended the whole run (the
    /// credentials were refused, the store failed).
    Failed,
}

impl RunStatus {
    /// The status as stored (`sync_runs.status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }
}

/// A stored sync run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncRunRow {
    /// Its id.
    pub id: i64,
    /// The integration.
    pub integration_id: String,
    /// `running`, `succeeded`, `partial` or `failed` (see [`RunStatus`]; a run still `running`
    /// after its process ended was killed: the next run resumes from its checkpoints).
    pub status: String,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// What it did.
    pub totals: RunTotals,
    /// Why it failed; for a partial run, which streams failed and why.
    pub error: Option<String>,
    /// The process that ran it, when a service worker did.
    pub worker: Option<String>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// When.
    pub at: String,
    /// Whose account.
    pub user_id: String,
    /// Which integration.
    pub integration_id: String,
    /// What happened: `connected`, `sync_started`, `sync_finished`, `disconnected`,
    /// `records_deleted`, ...
    pub action: String,
    /// The details.
    pub detail: String,
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

on_every_backend! {
impl Store {
    pub(super) async fn insert_run(&self, scope: &RunScope) -> Result<i64, StoreError> {
        let at = now();
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO sync_runs (integration_id, user_id, connector, status, started_at, worker) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(&*scope.integration_id)
            .push_bind(&*scope.user_id)
            .push_bind(&*scope.platform)
            .push_bind("running")
            .push_bind(at.as_str())
            .push_bind(scope.worker.as_deref());
        query.push(") RETURNING id");
        let row = query.build().fetch_one(&self.pool).await?;
        let id: i64 = row.try_get(0usize)?;
        self.audit(
            &scope.user_id,
            &scope.integration_id,
            "sync_started",
            &match &scope.worker {
                Some(worker) => format!("run {id} of {} by {worker}", scope.platform),
                None => format!("run {id} of {}", scope.platform),
            },
        )
        .await?;
        Ok(id)
    }

    pub(super) async fn update_run(
        &self,
        run_id: i64,
        totals: &RunTotals,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let at = now();
        let written = &totals.written;
        let mut query = QueryBuilder::<DB>::new("UPDATE sync_runs SET status = ");
        query
            .push_bind(status.as_str())
            .push(", finished_at = ")
            .push_bind(at.as_str())
            .push(", pages = ")
            .push_bind(signed(totals.pages))
            .push(", requests = ")
            .push_bind(signed(totals.requests))
            .push(", records_new = ")
            .push_bind(signed(written.new))
            .push(", records_updated = ")
            .push_bind(signed(written.updated))
            .push(", records_unchanged = ")
            .push_bind(signed(written.unchanged))
            .push(", records_deleted = ")
            .push_bind(signed(written.deleted))
            .push(", records_rejected = ")
            .push_bind(signed(written.rejected))
            .push(", error = ")
            .push_bind(error)
            .push(" WHERE id = ")
            .push_bind(run_id)
            .push(" RETURNING integration_id, user_id");
        let row = query.build().fetch_one(&self.pool).await?;
        let integration_id: String = row.try_get(0usize)?;
        let user_id: String = row.try_get(1usize)?;
        let mut query = QueryBuilder::<DB>::new("UPDATE integrations SET last_sync_at = ");
        query
            .push_bind(at.as_str())
            .push(" WHERE id = ")
            .push_bind(integration_id.as_str());
        query.build().execute(&self.pool).await?;
        let counts = format!(
            "{} new, {} updated, {} unchanged, {} deleted, {} rejected",
            written.new, written.updated, written.unchanged, written.deleted, written.rejected
        );
        let detail = match (status, error) {
            (RunStatus::Failed, error) => {
                format!(
                    "run {run_id} failed: {}",
                    error.unwrap_or("no reason given")
                )
            }
            (RunStatus::Partial, Some(error)) => format!("run {run_id} partial: {counts}; {error}"),
            (_, _) => format!("run {run_id}: {counts}"),
        };
        self.audit(&user_id, &integration_id, "sync_finished", &detail)
            .await
    }

    /// The runs of an integration, newest first.
    pub async fn runs(&self, integration_id: &str) -> Result<Vec<SyncRunRow>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT id, integration_id, status, started_at, finished_at, pages, requests, records_new, records_updated, \
             records_unchanged, records_deleted, records_rejected, error, worker FROM sync_runs WHERE integration_id = ",
        );
        query.push_bind(integration_id).push(" ORDER BY id DESC");
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(SyncRunRow {
                    id: row.try_get(0usize)?,
                    integration_id: row.try_get(1usize)?,
                    status: row.try_get(2usize)?,
                    started_at: row.try_get(3usize)?,
                    finished_at: row.try_get(4usize)?,
                    totals: RunTotals {
                        pages: count(row.try_get(5usize)?),
                        requests: count(row.try_get(6usize)?),
                        written: WriteCounts {
                            new: count(row.try_get(7usize)?),
                            updated: count(row.try_get(8usize)?),
                            unchanged: count(row.try_get(9usize)?),
                            deleted: count(row.try_get(10usize)?),
                            rejected: count(row.try_get(11usize)?),
                        },
                    },
                    error: row.try_get(12usize)?,
                    worker: row.try_get(13usize)?,
                })
            })
            .collect()
    }

    /// Adds a line to the audit log.
    pub async fn audit(
        &self,
        user_id: &str,
        integration_id: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let at = now();
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO audit_log (at, user_id, integration_id, action, detail) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(at.as_str())
            .push_bind(user_id)
            .push_bind(integration_id)
            .push_bind(action)
            .push_bind(detail);
        query.push(")");
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    /// The audit log of an integration, oldest first.
    pub async fn audit_log(&self, integration_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        self.read_audit("integration_id", integration_id, " ORDER BY id", None)
            .await
    }

    /// A user's audit log, newest first, at most `limit` lines.
    pub async fn audit_of_user(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.read_audit("user_id", user_id, " ORDER BY id DESC", Some(limit))
            .await
    }

    /// The audit lines whose `column` is `value`, in `order`.
    async fn read_audit(
        &self,
        column: &'static str,
        value: &str,
        order: &'static str,
        limit: Option<u32>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(format!(
            "SELECT at, user_id, integration_id, action, detail FROM audit_log WHERE {column} = "
        ));
        query.push_bind(value).push(order);
        if let Some(limit) = limit {
            query.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    at: row.try_get(0usize)?,
                    user_id: row.try_get(1usize)?,
                    integration_id: row.try_get(2usize)?,
                    action: row.try_get(3usize)?,
                    detail: row.try_get(4usize)?,
                })
            })
            .collect()
    }

    /// How many records are stored for `platform` (deleted ones included).
    pub async fn count(&self, platform: &str) -> Result<u64, StoreError> {
        let mut query =
            QueryBuilder::<DB>::new("SELECT COUNT(*) FROM records WHERE source_platform = ");
        query.push_bind(platform);
        let row = query.build().fetch_one(&self.pool).await?;
        Ok(count(row.try_get(0usize)?))
    }

    /// Every record of `platform` as `(model, source_object_id, data, deleted)`, ordered: for
    /// comparing stores and runs.
    pub async fn dump(
        &self,
        platform: &str,
    ) -> Result<Vec<(String, String, serde_json::Value, bool)>, StoreError> {
        let mut query = QueryBuilder::<DB>::new("SELECT model, source_object_id, data");
        query
            .push(DB::JSON_TEXT_SUFFIX)
            .push(", deleted_at, user_id, integration_id FROM records WHERE source_platform = ")
            .push_bind(platform)
            .push(" ORDER BY model, source_object_id");
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let deleted: Option<String> = row.try_get(3usize)?;
                let data: String = row.try_get(2usize)?;
                let object_id: String = row.try_get(1usize)?;
                let user_id: String = row.try_get(4usize)?;
                let integration_id: String = row.try_get(5usize)?;
                let data = crate::record::with_provenance(
                    &data,
                    &user_id,
                    &integration_id,
                    platform,
                    &object_id,
                )
                .map_err(|error| StoreError::Corrupt {
                    what: "record",
                    reason: error.to_string(),
                })?;
                Ok((
                    row.try_get(0usize)?,
                    object_id,
                    serde_json::Value::Object(data),
                    deleted.is_some(),
                ))
            })
            .collect()
    }
}
}
