//! Which user's platform's model a record belongs to, as the store keys it: 16 bytes.
//!
//! The unique index that finds a record was keyed by (user, platform, model, provider id), and
//! every key of an import repeated the same three texts: an Apple Health sample's key was 134
//! bytes, and the index a fifth of the file. Keyed by (scope, provider id) it is shorter by the
//! texts' length, and keeps the ids' own order within a scope: a source whose ids grow (an export
//! in time order, sequential or time-based ids) appends at the index's edge. (A hash of the whole
//! identity would be shorter still for long ids, but it sent every insert to a random leaf:
//! Apple Health's 2M-record import took four times as long.) The texts stay in the row, where
//! readers find them.
//!
//! The key is 128 bits of BLAKE3 over the three texts, each length-prefixed: two scopes share
//! one as unlikely as any 128-bit collision (at a hundred million users' models, about 10^-22).

use sqlx::{QueryBuilder, Row};

use super::StoreError;
use crate::on_every_backend;

/// How many bytes of BLAKE3's output the key keeps.
const KEY_BYTES: usize = 16;

/// The key of a scope, as the `scope` column holds it.
pub(crate) type ScopeKey = [u8; KEY_BYTES];

/// The key of a user's platform's model.
pub(crate) fn scope_key(user_id: &str, platform: &str, model: &str) -> ScopeKey {
    let mut hasher = blake3::Hasher::new();
    for text in [user_id, platform, model] {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    let mut key = [0; KEY_BYTES];
    key.copy_from_slice(&hasher.finalize().as_bytes()[..KEY_BYTES]);
    key
}

on_every_backend! {
impl Store {
    /// Keys the rows written before the store kept a scope (the migration adds the column
    /// empty: SQL has no BLAKE3), one statement per scope. Runs when a store opens, before
    /// anything writes, so that no upsert misses a row it should find.
    pub(super) async fn fill_scopes(&self) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        let scopes = sqlx::query(
            "SELECT DISTINCT user_id, source_platform, model FROM records WHERE scope IS NULL",
        )
        .fetch_all(&mut *transaction)
        .await?;
        for row in &scopes {
            let (user_id, platform, model): (String, String, String) =
                (row.try_get(0usize)?, row.try_get(1usize)?, row.try_get(2usize)?);
            let key = scope_key(&user_id, &platform, &model);
            let mut update = QueryBuilder::<DB>::new("UPDATE records SET scope = ");
            update
                .push_bind(&key[..])
                .push(" WHERE scope IS NULL AND user_id = ")
                .push_bind(user_id.as_str())
                .push(" AND source_platform = ")
                .push_bind(platform.as_str())
                .push(" AND model = ")
                .push_bind(model.as_str());
            update.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}
}

#[cfg(test)]
mod tests {
    use super::scope_key;

    #[test]
    fn each_part_of_a_scope_counts_and_parts_do_not_run_together() {
        let key = scope_key("u", "notes_api", "note");
        assert_eq!(key, scope_key("u", "notes_api", "note"));
        for other in [
            scope_key("v", "notes_api", "note"),
            scope_key("u", "notes", "note"),
            scope_key("u", "notes_api", "media"),
            // The same characters split differently.
            scope_key("u", "notes_apin", "ote"),
            scope_key("un", "otes_api", "note"),
        ] {
            assert_ne!(key, other);
        }
    }
}
