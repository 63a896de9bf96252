//! Connected accounts in the SQLite store, with their tokens sealed by [`crate::secrets`].

use serde_json::{Map, Value};
use sqlx::Row;

use super::{SqliteStore, StoreError};

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
    fn as_str(self) -> &'static str {
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
}

impl SqliteStore {
    /// Creates or replaces an integration (after connecting or reconnecting): active, no error.
    pub async fn save_integration(
        &self,
        integration: &StoredIntegration,
    ) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        sqlx::query(
            "INSERT INTO integrations (id, user_id, connector, status, config, tokens, scopes, last_error, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, connector = excluded.connector, status = excluded.status, \
             config = excluded.config, tokens = excluded.tokens, scopes = excluded.scopes, last_error = excluded.last_error, \
             updated_at = excluded.updated_at",
        )
        .bind(&integration.id)
        .bind(&integration.user_id)
        .bind(&integration.connector)
        .bind(integration.status.as_str())
        .bind(Value::Object(integration.config.clone()).to_string())
        .bind(integration.sealed_tokens.as_deref())
        .bind(integration.scopes.as_deref())
        .bind(integration.last_error.as_deref())
        .bind(&now)
        .bind(&now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The integration `id`, if it exists.
    pub async fn integration(&self, id: &str) -> Result<Option<StoredIntegration>, StoreError> {
        let row = sqlx::query("SELECT id, user_id, connector, status, config, tokens, scopes, last_error FROM integrations WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: String = row.try_get(3)?;
        let config: String = row.try_get(4)?;
        Ok(Some(StoredIntegration {
            id: row.try_get(0)?,
            user_id: row.try_get(1)?,
            connector: row.try_get(2)?,
            status: if status == "needs_reauth" {
                IntegrationStatus::NeedsReauth
            } else {
                IntegrationStatus::Active
            },
            config: serde_json::from_str(&config).unwrap_or_default(),
            sealed_tokens: row.try_get(5)?,
            scopes: row.try_get(6)?,
            last_error: row.try_get(7)?,
        }))
    }

    /// Replaces an integration's sealed tokens (after a refresh).
    pub async fn save_tokens(&self, id: &str, sealed_tokens: &[u8]) -> Result<(), StoreError> {
        sqlx::query("UPDATE integrations SET tokens = ?, updated_at = ? WHERE id = ?")
            .bind(sealed_tokens)
            .bind(jiff::Timestamp::now().to_string())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Marks an integration as needing the user to connect again, with the reason.
    pub async fn mark_needs_reauth(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE integrations SET status = 'needs_reauth', last_error = ?, updated_at = ? WHERE id = ?")
            .bind(reason)
            .bind(jiff::Timestamp::now().to_string())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Removes an integration and its tokens; with `delete_data`, also every record imported
    /// through it. Returns how many records were deleted.
    pub async fn delete_integration(&self, id: &str, delete_data: bool) -> Result<u64, StoreError> {
        let mut transaction = self.pool().begin().await?;
        let deleted = if delete_data {
            sqlx::query("DELETE FROM records WHERE integration_id = ?")
                .bind(id)
                .execute(&mut *transaction)
                .await?
                .rows_affected()
        } else {
            0
        };
        sqlx::query("DELETE FROM integrations WHERE id = ?")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(deleted)
    }
}
