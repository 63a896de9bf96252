//! Connected accounts, with their tokens sealed by [`crate::credentials::secrets`].

use serde_json::{Map, Value};
use sqlx::{QueryBuilder, Row};

use super::StoreError;
use super::write::now;
use crate::on_every_backend;

/// Whether an integration can sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrationStatus {
    /// Connected and working.
    Active,
    /// Its tokens were refused and cannot be renewed: the user must connect again. Its imported
    /// records are kept.
    NeedsReauth,
}

impl IntegrationStatus {
    /// The name stored and shown (`active`, `needs_reauth`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsReauth => "needs_reauth",
        }
    }
}

/// An integration as stored.
#[derive(Debug, Clone)]
pub struct StoredIntegration {
    /// Its id.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The connector id.
    pub connector: String,
    /// Which of the user's accounts of the connector: `""` for the first (default) one, else
    /// its name (`--account work`, or the identity the provider gave when it was connected).
    pub account: String,
    /// Whether it can sync.
    pub status: IntegrationStatus,
    /// Config and captured values.
    pub config: Map<String, Value>,
    /// The sealed tokens.
    pub sealed_tokens: Option<Vec<u8>>,
    /// The granted scopes.
    pub scopes: Option<String>,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// The root streams the person chose to import; `None`: every stream. Saving `None` over
    /// an existing integration keeps its choice (reconnecting does not undo it).
    pub streams: Option<Vec<String>>,
}

/// What an integration keeps to sync: deleted with it, always.
const STATE_TABLES: [&str; 5] = [
    "checkpoints",
    "sync_seen",
    "rate_windows",
    "imports",
    // Content owed: it cannot be downloaded without the integration's credentials.
    "downloads",
];

/// What was imported through an integration, or quotes it: deleted with it when the person asks
/// for the data to go too. `records` first: `purge_disconnected` counts it.
/// `record_blobs` says which blobs the records' content is in: the blobs no other record uses
/// are deleted from the blob store after (`account::disconnect`).
const DATA_TABLES: [&str; 4] = ["records", "record_blobs", "rejects", "sync_runs"];

on_every_backend! {
impl Store {
    /// Creates or replaces an integration (after connecting or reconnecting): active, no error,
    /// and due for a sync at once. Due in the same statement: made due by a second one, a
    /// scheduler could claim it in between (a row without a due time is due), finish the
    /// import, and then find it due again.
    pub async fn save_integration(
        &self,
        integration: &StoredIntegration,
    ) -> Result<(), StoreError> {
        let now = now();
        let config = Value::Object(integration.config.clone()).to_string();
        let streams = integration
            .streams
            .as_ref()
            .map(|streams| Value::from(streams.as_slice()).to_string());
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO integrations (id, user_id, connector, account, status, config, tokens, scopes, last_error, created_at, updated_at, next_sync_at, streams) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(integration.id.as_str())
            .push_bind(integration.user_id.as_str())
            .push_bind(integration.connector.as_str())
            .push_bind(integration.account.as_str())
            .push_bind(integration.status.as_str())
            .push_bind(config.as_str())
            .push_bind(integration.sealed_tokens.as_deref())
            .push_bind(integration.scopes.as_deref())
            .push_bind(integration.last_error.as_deref())
            .push_bind(now.as_str())
            .push_bind(now.as_str())
            .push_bind(now.as_str())
            .push_bind(streams.as_deref());
        query.push(
            ") ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, connector = excluded.connector, account = excluded.account, status = excluded.status, \
             config = excluded.config, tokens = excluded.tokens, scopes = excluded.scopes, last_error = excluded.last_error, \
             updated_at = excluded.updated_at, next_sync_at = excluded.next_sync_at, failures = 0, \
             streams = COALESCE(excluded.streams, integrations.streams)",
        );
        query.build().execute(&self.pool).await?;
        self.audit(
            &integration.user_id,
            &integration.id,
            "connected",
            &format!(
                "{}{} connected; scopes: {}",
                integration.connector,
                match integration.account.as_str() {
                    "" => String::new(),
                    account => format!(" ({account})"),
                },
                integration.scopes.as_deref().unwrap_or("none")
            ),
        )
        .await
    }

    /// The integration `id`, if it exists.
    pub async fn integration(&self, id: &str) -> Result<Option<StoredIntegration>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT id, user_id, connector, status, config, tokens, scopes, last_error, account, streams FROM integrations WHERE id = ",
        );
        query.push_bind(id);
        let Some(row) = query.build().fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let status: String = row.try_get(3usize)?;
        let config: String = row.try_get(4usize)?;
        Ok(Some(StoredIntegration {
            id: row.try_get(0usize)?,
            user_id: row.try_get(1usize)?,
            connector: row.try_get(2usize)?,
            status: if status == "needs_reauth" {
                IntegrationStatus::NeedsReauth
            } else {
                IntegrationStatus::Active
            },
            config: serde_json::from_str(&config).map_err(|error| StoreError::Corrupt {
                what: "integration config",
                reason: error.to_string(),
            })?,
            sealed_tokens: row.try_get(5usize)?,
            scopes: row.try_get(6usize)?,
            last_error: row.try_get(7usize)?,
            streams: row
                .try_get::<Option<String>, _>(9usize)?
                .and_then(|text| serde_json::from_str(&text).ok()),
            account: row.try_get(8usize)?,
        }))
    }

    /// Replaces an integration's sealed tokens (after a refresh).
    pub async fn save_tokens(&self, id: &str, sealed_tokens: &[u8]) -> Result<(), StoreError> {
        let now = now();
        let mut query = QueryBuilder::<DB>::new("UPDATE integrations SET tokens = ");
        query
            .push_bind(sealed_tokens)
            .push(", updated_at = ")
            .push_bind(now.as_str())
            .push(" WHERE id = ")
            .push_bind(id);
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    /// Marks an integration as needing the user to connect again, with the reason.
    pub async fn mark_needs_reauth(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        let now = now();
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE integrations SET status = 'needs_reauth', last_error = ",
        );
        query
            .push_bind(reason)
            .push(", updated_at = ")
            .push_bind(now.as_str())
            .push(" WHERE id = ")
            .push_bind(id);
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    /// Removes an integration, its tokens and its checkpoints, and any authorization of its
    /// connector the user has under way (its state would connect the account again); with
    /// `delete_data`, also every trace of what was imported through it: its records, its
    /// rejects (which hold the raw provider payload) and its runs (whose errors may quote the
    /// provider). Returns how many records were deleted. The audit log keeps both facts, and
    /// nothing of the content.
    pub async fn delete_integration(&self, id: &str, delete_data: bool) -> Result<u64, StoreError> {
        let (user_id, connector) = self
            .integration(id)
            .await?
            .map(|integration| (integration.user_id, integration.connector))
            .unwrap_or_default();
        let mut transaction = self.pool.begin().await?;
        let mut query = QueryBuilder::<DB>::new("DELETE FROM oauth_pending WHERE user_id = ");
        query
            .push_bind(user_id.as_str())
            .push(" AND connector = ")
            .push_bind(connector.as_str());
        query.build().execute(&mut *transaction).await?;
        let deleted = if delete_data {
            let mut query =
                QueryBuilder::<DB>::new("SELECT COUNT(*) FROM records WHERE integration_id = ");
            query.push_bind(id);
            let count: i64 = query
                .build()
                .fetch_one(&mut *transaction)
                .await?
                .try_get(0usize)?;
            for table in DATA_TABLES {
                let mut query =
                    QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE integration_id = "));
                query.push_bind(id);
                query.build().execute(&mut *transaction).await?;
            }
            // A failed run's audit entry quotes its error, which may quote the provider: the log
            // keeps that the run happened, not what it said.
            let mut query = QueryBuilder::<DB>::new(
                "UPDATE audit_log SET detail = 'a run that failed in whole or part; its error was removed with the data' WHERE action = 'sync_finished' AND (detail LIKE 'run % failed: %' OR detail LIKE 'run % partial: %') AND integration_id = ",
            );
            query.push_bind(id);
            query.build().execute(&mut *transaction).await?;
            u64::try_from(count).unwrap_or_default()
        } else {
            0
        };
        for table in STATE_TABLES {
            let mut query =
                QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE integration_id = "));
            query.push_bind(id);
            query.build().execute(&mut *transaction).await?;
        }
        let mut query = QueryBuilder::<DB>::new("DELETE FROM integrations WHERE id = ");
        query.push_bind(id);
        query.build().execute(&mut *transaction).await?;
        transaction.commit().await?;
        self.audit(
            &user_id,
            id,
            "disconnected",
            "tokens and checkpoints removed",
        )
        .await?;
        if delete_data {
            self.audit(
                &user_id,
                id,
                "records_deleted",
                &format!("{deleted} records deleted at the user's request"),
            )
            .await?;
        }
        Ok(deleted)
    }

    /// Cleans up after a disconnected integration once a sync that was running when it was
    /// disconnected has surely stopped (it may have written a last page or checkpoint after the
    /// deletion): removes its checkpoints and scratch rows, and with `delete_data` its records.
    /// Does nothing if the integration exists again (the user reconnected). Returns how many
    /// records were deleted.
    pub async fn purge_disconnected(&self, id: &str, delete_data: bool) -> Result<u64, StoreError> {
        if self.integration(id).await?.is_some() {
            return Ok(0);
        }
        let mut tables = STATE_TABLES.to_vec();
        if delete_data {
            tables.extend(DATA_TABLES);
        }
        let mut deleted = 0;
        for table in tables {
            let mut query =
                QueryBuilder::<DB>::new(format!("DELETE FROM {table} WHERE integration_id = "));
            query.push_bind(id);
            let done = query.build().execute(&self.pool).await?;
            if table == "records" {
                deleted = DB::rows_affected(&done);
            }
        }
        Ok(deleted)
    }
}
}
