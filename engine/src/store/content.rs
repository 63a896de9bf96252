//! Records' content in the store: the downloads owed (written with their page) and which blob
//! holds each record's content once downloaded.

use sqlx::{QueryBuilder, Row};

use super::scope::{ScopeKey, scope_key};
use super::{Batch, DueAt, DueDownload, RunScope, StoreError};
use crate::blobs::BlobRef;
use crate::on_every_backend;

/// Statements stay well below the bound-parameter limits.
const DOWNLOADS_PER_STATEMENT: usize = 500;

on_every_backend! {
impl Store {
    /// Owes the content of a group of batches' records (one scope, stream and model), inside the
    /// page's transaction: a record whose content is stored in the same version owes nothing,
    /// and one owed already has its request replaced (a fresh URL where the provider's expire).
    pub(super) async fn owe_content(
        connection: &mut DB::Connection,
        group: &[Batch],
        model: &str,
        at: &str,
    ) -> Result<(), sqlx::Error> {
        let Some(batch) = group.last() else {
            return Ok(());
        };
        let scope = &*batch.scope;
        // In the order of the records' ids, as records are written (see `write_pages`). A
        // download owed twice is owed as its later listing says (one statement may not update
        // a row twice): latest first, a stable sort keeps them so, and `dedup` keeps the first.
        let mut owed: Vec<_> = group
            .iter()
            .flat_map(|batch| &batch.downloads)
            .rev()
            .collect();
        owed.sort_by(|a, b| (&a.id, &a.part).cmp(&(&b.id, &b.part)));
        owed.dedup_by(|later, kept| later.id == kept.id && later.part == kept.part);
        let key = scope_key(&scope.user_id, &scope.platform, model);
        for chunk in owed.chunks(DOWNLOADS_PER_STATEMENT) {
            // Keyed by the record's row: a new record's is the table's last, so a first import's
            // downloads are appended, whatever the order of the provider's ids.
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO downloads (integration_id, stream, model, queued_at, record, source_object_id, part, version, request, file_name) SELECT ",
            );
            query
                .separated(", ")
                .push_bind(&*scope.integration_id)
                .push_bind(&*batch.stream)
                .push_bind(model)
                .push_bind(at);
            // The record's row by a lookup per download: as a join, PostgreSQL scanned the
            // records of the scope for each statement (27 ms a statement at 100k records).
            query
                .push(", (SELECT r.id FROM records r WHERE r.scope = ")
                .push_bind(&key[..])
                .push(
                    " AND r.source_object_id = page.column1), page.column1, page.column2, \
                     page.column3, page.column4, page.column5 FROM (",
                );
            query.push_values(chunk, |mut row, due| {
                row.push_bind(&*due.id)
                    .push_bind(due.part.as_str())
                    .push_bind(due.version.as_str())
                    .push_bind(due.request.as_str())
                    .push_bind(due.file_name.as_deref());
            });
            query
                .push(") AS page WHERE NOT EXISTS (SELECT 1 FROM record_blobs b WHERE b.user_id = ")
                .push_bind(&*scope.user_id)
                .push(" AND b.source_platform = ")
                .push_bind(&*scope.platform)
                .push(" AND b.model = ")
                .push_bind(model)
                .push(
                    " AND b.source_object_id = page.column1 AND b.part = page.column2 \
                     AND b.version = page.column3) \
                     ON CONFLICT (integration_id, record, part) DO UPDATE SET \
                     stream = excluded.stream, version = excluded.version, request = excluded.request, \
                     file_name = excluded.file_name",
                );
            query.build().execute(&mut *connection).await?;
        }
        Ok(())
    }

    pub(super) async fn select_due_downloads(
        &self,
        integration_id: &str,
        max_attempts: i64,
        after: Option<&DueAt>,
        limit: i64,
    ) -> Result<Vec<DueDownload>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT stream, model, source_object_id, part, file_name, version, request, attempts, record FROM downloads WHERE integration_id = ",
        );
        query
            .push_bind(integration_id)
            .push(" AND attempts < ")
            .push_bind(max_attempts);
        // In the key's order (integration, record, part): each read starts where the last
        // ended, on the key's index.
        if let Some(after) = after {
            query
                .push(" AND (record > ")
                .push_bind(after.record)
                .push(" OR (record = ")
                .push_bind(after.record)
                .push(" AND part > ")
                .push_bind(after.part.as_str())
                .push("))");
        }
        query
            .push(" ORDER BY record, part LIMIT ")
            .push_bind(limit);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(DueDownload {
                    stream: row.try_get(0usize)?,
                    model: row.try_get(1usize)?,
                    id: row.try_get(2usize)?,
                    part: row.try_get(3usize)?,
                    file_name: row.try_get(4usize)?,
                    version: row.try_get(5usize)?,
                    request: row.try_get(6usize)?,
                    attempts: row.try_get(7usize)?,
                    at: DueAt {
                        record: row.try_get(8usize)?,
                        part: row.try_get(3usize)?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The record refers to `blob`, and its download is no longer owed, in one transaction.
    /// A download owed again meanwhile in another version (the record changed while its
    /// content was downloading) stays owed.
    pub(super) async fn store_content(
        &self,
        scope: &RunScope,
        due: &DueDownload,
        blob: &BlobRef,
    ) -> Result<(), StoreError> {
        let at = super::write::now();
        let mut transaction = self.pool.begin().await?;
        let stored = Refers {
            model: &due.model,
            id: &due.id,
            part: &due.part,
            file_name: due.file_name.as_deref(),
            version: &due.version,
            blob,
        };
        Self::refer(&mut transaction, scope, &stored, &at).await?;
        let key = scope_key(&scope.user_id, &scope.platform, &due.model);
        let mut query =
            QueryBuilder::<DB>::new("DELETE FROM downloads WHERE integration_id = ");
        query.push_bind(&*scope.integration_id);
        push_record_row(&mut query, &key, due);
        query
            .push(" AND part = ")
            .push_bind(due.part.as_str())
            .push(" AND version = ")
            .push_bind(due.version.as_str());
        query.build().execute(&mut *transaction).await?;
        transaction.commit().await?;
        self.committed();
        Ok(())
    }

    /// The records of a group of batches (one scope, stream and model) refer to the content
    /// stored with their page (an export's files, copied as they were read), inside the page's
    /// transaction.
    pub(super) async fn refer_stored(
        connection: &mut DB::Connection,
        group: &[Batch],
        model: &str,
        at: &str,
    ) -> Result<(), sqlx::Error> {
        for batch in group {
            for stored in &batch.stored {
                let refers = Refers {
                    model,
                    id: &stored.id,
                    part: &stored.part,
                    file_name: stored.file_name.as_deref(),
                    version: "",
                    blob: &stored.blob,
                };
                Self::refer(&mut *connection, &batch.scope, &refers, at).await?;
            }
        }
        Ok(())
    }

    /// The record refers to the blob (in place of what it referred to before).
    async fn refer(
        connection: &mut DB::Connection,
        scope: &RunScope,
        refers: &Refers<'_>,
        at: &str,
    ) -> Result<(), sqlx::Error> {
        let blob = refers.blob;
        let hash = blob.hash.to_hex();
        let size = i64::try_from(blob.size).unwrap_or(i64::MAX);
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO record_blobs (user_id, source_platform, model, source_object_id, part, integration_id, hash, size, content_type, file_name, version, stored_at) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(&*scope.user_id)
            .push_bind(&*scope.platform)
            .push_bind(refers.model)
            .push_bind(refers.id)
            .push_bind(refers.part)
            .push_bind(&*scope.integration_id)
            .push_bind(hash.as_str())
            .push_bind(size)
            .push_bind(blob.content_type.as_deref())
            .push_bind(refers.file_name)
            .push_bind(refers.version)
            .push_bind(at);
        query.push(
            ") ON CONFLICT (user_id, source_platform, model, source_object_id, part) DO UPDATE SET \
             integration_id = excluded.integration_id, hash = excluded.hash, size = excluded.size, \
             content_type = excluded.content_type, file_name = excluded.file_name, \
             version = excluded.version, stored_at = excluded.stored_at",
        );
        query.build().execute(&mut *connection).await?;
        Ok(())
    }

    pub(super) async fn note_download_failure(
        &self,
        scope: &RunScope,
        due: &DueDownload,
        error: &str,
    ) -> Result<(), StoreError> {
        let key = scope_key(&scope.user_id, &scope.platform, &due.model);
        let mut query =
            QueryBuilder::<DB>::new("UPDATE downloads SET attempts = attempts + 1, last_error = ");
        query
            .push_bind(error)
            .push(" WHERE integration_id = ")
            .push_bind(&*scope.integration_id);
        push_record_row(&mut query, &key, due);
        query.push(" AND part = ").push_bind(due.part.as_str());
        query.build().execute(&self.pool).await?;
        self.committed();
        Ok(())
    }

    /// The blobs an integration's records refer to.
    pub async fn blobs_of_integration(&self, integration_id: &str) -> Result<Vec<String>, StoreError> {
        let mut query =
            QueryBuilder::<DB>::new("SELECT DISTINCT hash FROM record_blobs WHERE integration_id = ");
        query.push_bind(integration_id);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| row.try_get(0usize))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Those of `hashes` no record refers to.
    pub async fn unreferenced_blobs(&self, hashes: &[String]) -> Result<Vec<String>, StoreError> {
        let mut unreferenced = Vec::new();
        for chunk in hashes.chunks(DOWNLOADS_PER_STATEMENT) {
            let mut query =
                QueryBuilder::<DB>::new("SELECT DISTINCT hash FROM record_blobs WHERE hash IN (");
            let mut list = query.separated(", ");
            for hash in chunk {
                list.push_bind(hash.as_str());
            }
            query.push(")");
            let rows = query.build().fetch_all(&self.pool).await?;
            let referenced: std::collections::HashSet<String> = rows
                .iter()
                .map(|row| row.try_get(0usize))
                .collect::<Result<_, sqlx::Error>>()?;
            unreferenced.extend(chunk.iter().filter(|hash| !referenced.contains(*hash)).cloned());
        }
        Ok(unreferenced)
    }
}
}

/// ` AND record = <the row of `due`'s record>`, for a statement on `downloads`.
/// A record's reference to the blob that holds a part of its content.
struct Refers<'r> {
    model: &'r str,
    id: &'r str,
    part: &'r str,
    file_name: Option<&'r str>,
    /// The version the content was downloaded in (`""` for content that has none).
    version: &'r str,
    blob: &'r BlobRef,
}

fn push_record_row<DB>(query: &mut QueryBuilder<DB>, key: &ScopeKey, due: &DueDownload)
where
    DB: sqlx::Database,
    for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .push(" AND record = (SELECT id FROM records WHERE scope = ")
        .push_bind(&key[..])
        .push(" AND source_object_id = ")
        .push_bind(due.id.as_str())
        .push(")");
}
