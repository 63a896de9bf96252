//! A record's identity as the store keys it: 16 bytes that stand for (user, platform, model,
//! provider id).
//!
//! A provider's ids are random (Google's `AF1Qip...`, Spotify's base62), so each new record
//! lands on a random leaf of the unique index that finds a record by its identity, and every
//! commit rewrites the leaves its records landed on. Keyed by the identity's four texts (about
//! 80 bytes for a Google Photos item, 134 for an Apple Health sample) that index was as big as
//! a fifth of the file and stayed out of SQLite's cache; keyed by 16 bytes it is a fifth to an
//! eighth of that size, so a commit rewrites as many fewer leaves. The texts stay in the row,
//! where readers find them.
//!
//! 128 bits of BLAKE3 make two identities that share a key as unlikely as a collision of
//! any 128-bit hash: at a billion records, about 10^-21. Each text is length-prefixed, so no
//! two different identities hash the same input.

use sqlx::{QueryBuilder, Row};

use super::StoreError;
use crate::on_every_backend;

/// How many bytes of BLAKE3's output the key keeps.
const KEY_BYTES: usize = 16;

/// The key of a record's identity, as the `identity` column holds it.
pub(crate) type Key = [u8; KEY_BYTES];

/// The key of a record's identity.
pub(crate) fn identity(user_id: &str, platform: &str, model: &str, id: &str) -> Key {
    let mut hasher = blake3::Hasher::new();
    for text in [user_id, platform, model, id] {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    let mut key = [0; KEY_BYTES];
    key.copy_from_slice(&hasher.finalize().as_bytes()[..KEY_BYTES]);
    key
}

/// How many rows one transaction of [`fill_identities`] keys.
const FILL_ROWS: i64 = 10_000;

on_every_backend! {
impl Store {
    /// Keys the rows written before the store kept an identity (the migration adds the column
    /// empty: SQL has no BLAKE3), a transaction of [`FILL_ROWS`] at a time. Runs when a store
    /// opens, before anything writes, so that no upsert misses a row it should find.
    pub(super) async fn fill_identities(&self) -> Result<(), StoreError> {
        loop {
            let mut transaction = self.pool.begin().await?;
            let mut query = QueryBuilder::<DB>::new(
                "SELECT id, user_id, source_platform, model, source_object_id FROM records \
                 WHERE identity IS NULL ORDER BY id LIMIT ",
            );
            query.push_bind(FILL_ROWS);
            let rows = query.build().fetch_all(&mut *transaction).await?;
            if rows.is_empty() {
                return Ok(());
            }
            for row in &rows {
                let key = identity(
                    &row.try_get::<String, _>(1usize)?,
                    &row.try_get::<String, _>(2usize)?,
                    &row.try_get::<String, _>(3usize)?,
                    &row.try_get::<String, _>(4usize)?,
                );
                let mut update = QueryBuilder::<DB>::new("UPDATE records SET identity = ");
                update
                    .push_bind(&key[..])
                    .push(" WHERE id = ")
                    .push_bind(row.try_get::<i64, _>(0usize)?);
                update.build().execute(&mut *transaction).await?;
            }
            transaction.commit().await?;
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::identity;

    #[test]
    fn each_part_of_an_identity_counts_and_parts_do_not_run_together() {
        let key = identity("u", "notes_api", "note", "n1");
        assert_eq!(key.len(), 16);
        assert_eq!(key, identity("u", "notes_api", "note", "n1"));
        for other in [
            identity("v", "notes_api", "note", "n1"),
            identity("u", "notes", "note", "n1"),
            identity("u", "notes_api", "media", "n1"),
            identity("u", "notes_api", "note", "n2"),
            // The same characters split differently.
            identity("u", "notes_apin", "ote", "n1"),
            identity("un", "otes_api", "note", "n1"),
        ] {
            assert_ne!(key, other);
        }
    }
}
