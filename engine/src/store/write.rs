//! Writing a page: records, rejects, seen ids, the checkpoint and deletion sweeps, in one
//! transaction.

use std::sync::Arc;

use sqlx::{Arguments, AssertSqlSafe, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

use super::scope::{ScopeKey, scope_key};
use super::{
    Backend, Batch, RunScope, RunStatus, RunTotals, StoreError, StoredRecord, StreamState,
};
use crate::events::WriteCounts;
use crate::on_every_backend;
use crate::record::Provenance;

/// Statements stay well below the bound-parameter limits (SQLite 32766, PostgreSQL 65535).
const ROWS_PER_STATEMENT: usize = 500;

pub(super) fn now() -> String {
    stamp(jiff::Timestamp::now())
}

/// A timestamp as stored: RFC 3339 UTC with exactly six fractional digits, so that stored times
/// compare correctly as text in both backends (jiff's own display drops trailing zeros, and
/// `...:45Z` would sort after `...:45.1Z`).
pub fn stamp(at: jiff::Timestamp) -> String {
    format!("{at:.6}")
}

/// What every row of one page's `INSERT INTO records` shares, as shared strings: binding an
/// `Arc<str>` hands the text to the driver without a copy (binding a `&str` copies it into a new
/// allocation per row in sqlx's SQLite driver).
struct SharedColumns {
    /// The key of (user, platform, model): see [`scope_key`].
    scope: ScopeKey,
    user_id: Arc<str>,
    platform: Arc<str>,
    model: Arc<str>,
    integration_id: Arc<str>,
    stream: Arc<str>,
    at: Arc<str>,
}

/// Runs `INSERT INTO records` of `rows`, then `on_conflict`, and says how many rows it changed;
/// one builder for records and tombstones.
///
/// The values all rows share are bound once, in a one-row `shared` table joined with the page's
/// rows, so that each row binds only its id and JSON. Placeholders stay plain `?` in SQLite:
/// numbered ones (`$1` used in every row) make sqlx look each one up by name, which SQLite answers
/// with a linear scan (see BENCHMARKS.md). The `WHERE true` keeps SQLite from reading
/// `ON CONFLICT` as part of the join.
///
/// The text is written here rather than by `sqlx::QueryBuilder`, which writes every separator
/// and placeholder through `fmt` and cost about a thousand instructions a row; the placeholders
/// are still the driver's own ([`Arguments::format_placeholder`]).
async fn insert_records<DB>(
    connection: &mut DB::Connection,
    shared: &SharedColumns,
    rows: &[&StoredRecord],
    tombstones: bool,
    on_conflict: &str,
) -> Result<u64, sqlx::Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> Arc<str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    let mut sql = String::with_capacity(400 + rows.len() * 24);
    let mut arguments = DB::Arguments::default();
    sql.push_str(
        "INSERT INTO records (scope, user_id, source_platform, model, integration_id, stream, first_seen_at, updated_at, ",
    );
    // A tombstone keeps whatever data is stored (see `write_listed`): a new row gets what the
    // deletion's payload said.
    if tombstones {
        sql.push_str("deleted_at, ");
    }
    sql.push_str("source_object_id, data) SELECT shared.*, page.column1, page.column2");
    sql.push_str(" FROM (SELECT ");
    arguments
        .add(&shared.scope[..])
        .map_err(sqlx::Error::Encode)?;
    arguments
        .format_placeholder(&mut sql)
        .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    let mut bind = |sql: &mut String, value: &Arc<str>| -> Result<(), sqlx::Error> {
        arguments
            .add(Arc::clone(value))
            .map_err(sqlx::Error::Encode)?;
        arguments
            .format_placeholder(sql)
            .map_err(|error| sqlx::Error::Encode(Box::new(error)))
    };
    let mut columns = vec![
        &shared.user_id,
        &shared.platform,
        &shared.model,
        &shared.integration_id,
        &shared.stream,
        &shared.at,
        &shared.at,
    ];
    if tombstones {
        columns.push(&shared.at);
    }
    for value in columns {
        sql.push_str(", ");
        bind(&mut sql, value)?;
    }
    sql.push_str(") AS shared, (VALUES ");
    // The provenance is in the row's columns: the JSON keeps the model fields only.
    let provenance = Provenance::new(&shared.user_id, &shared.integration_id, &shared.platform);
    for (index, record) in rows.iter().enumerate() {
        sql.push_str(if index > 0 { ", (" } else { "(" });
        bind(&mut sql, &record.id)?;
        sql.push_str(", ");
        let fields: Arc<str> = Arc::from(provenance.fields_of(&record.id, &record.json));
        bind(&mut sql, &fields)?;
        sql.push_str(DB::JSON_PARAM_SUFFIX);
        sql.push(')');
    }
    sql.push_str(") AS page WHERE true");
    sql.push_str(on_conflict);
    // Only the store's own constants and the driver's placeholders are in the text: every value
    // (ids and JSON from the provider included) is bound.
    let result = sqlx::query_with(AssertSqlSafe(sql), arguments)
        .execute(&mut *connection)
        .await?;
    Ok(DB::rows_affected(&result))
}

/// Writes `listed`: records, or tombstones when `deleted` (at most [`ROWS_PER_STATEMENT`]), and
/// says what happened to them.
///
/// A tombstone keeps the data already stored (the record's last known state) and only says when
/// it was deleted; a record first seen deleted keeps what its deletion said. Records take two
/// statements whose row counts say what happened, so that no row has to come back (returning a
/// row per record cost a third of the write): the first inserts the new records; the second,
/// only when some were already stored, rewrites those whose content changed or that were
/// deleted (the rows just inserted have the same data and are skipped). Unchanged means the same
/// JSON text (SQLite) or the same JSON value (PostgreSQL's `jsonb`): mapping writes a record's
/// text the same way each time.
async fn write_listed<DB>(
    connection: &mut DB::Connection,
    shared: &SharedColumns,
    listed: &[&StoredRecord],
    deleted: bool,
) -> Result<WriteCounts, sqlx::Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> Arc<str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    let count = listed.len() as u64;
    if deleted {
        let marked = insert_records::<DB>(
            connection,
            shared,
            &last_of_each(listed),
            true,
            " ON CONFLICT (scope, source_object_id) DO UPDATE SET \
             deleted_at = excluded.deleted_at, updated_at = excluded.updated_at \
             WHERE records.deleted_at IS NULL",
        )
        .await?;
        return Ok(WriteCounts {
            deleted: marked,
            unchanged: count.saturating_sub(marked),
            ..WriteCounts::default()
        });
    }
    let new = insert_records::<DB>(
        connection,
        shared,
        listed,
        false,
        " ON CONFLICT (scope, source_object_id) DO NOTHING",
    )
    .await?;
    let updated = if new < count {
        insert_records::<DB>(
            connection,
            shared,
            &last_of_each(listed),
            false,
            " ON CONFLICT (scope, source_object_id) DO UPDATE SET \
             integration_id = excluded.integration_id, stream = excluded.stream, data = excluded.data, \
             updated_at = excluded.updated_at, deleted_at = NULL \
             WHERE records.data <> excluded.data OR records.deleted_at IS NOT NULL \
             OR records.integration_id <> excluded.integration_id",
        )
        .await?
    } else {
        0
    };
    Ok(WriteCounts {
        new,
        updated,
        unchanged: count.saturating_sub(new + updated),
        ..WriteCounts::default()
    })
}

/// Whether batch `next` goes into the same statements as `batch`, the one before it in a write:
/// the same account, stream, model and pass, and `batch` completes no pass (a sweep must come
/// after the records of its pass and before those of the next).
fn one_statement(batch: &Batch, next: &Batch) -> bool {
    batch.sweeps.is_empty()
        && (Arc::ptr_eq(&batch.scope, &next.scope)
            || (batch.scope.user_id == next.scope.user_id
                && batch.scope.platform == next.scope.platform
                && batch.scope.integration_id == next.scope.integration_id))
        && batch.stream == next.stream
        && batch.model == next.model
        && batch.seen_in_pass == next.seen_in_pass
}

/// The last of the records that share an id, in order. An upsert names each row once:
/// PostgreSQL refuses an `ON CONFLICT DO UPDATE` that would update one row twice, and a later
/// listing of a record is the newer one (a change log lists a message once per change; offset
/// pages overlap when items move).
fn last_of_each<'r>(records: &[&'r StoredRecord]) -> Vec<&'r StoredRecord> {
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    let mut last: Vec<&StoredRecord> = records
        .iter()
        .rev()
        .filter(|record| seen.insert(&*record.id))
        .copied()
        .collect();
    last.reverse();
    last
}

/// Each stream's (and partition's) last checkpoint in `batches`, in the order they first
/// appear: the earlier ones would be overwritten in the same transaction.
fn latest_checkpoints(batches: &[Batch]) -> Vec<(&RunScope, &super::Checkpoint)> {
    let mut latest: Vec<(&RunScope, &super::Checkpoint)> = Vec::new();
    for batch in batches {
        let Some(checkpoint) = &batch.checkpoint else {
            continue;
        };
        let same = |(scope, kept): &&mut (&RunScope, &super::Checkpoint)| {
            scope.integration_id == batch.scope.integration_id
                && kept.stream == checkpoint.stream
                && kept.partition == checkpoint.partition
        };
        match latest.iter_mut().find(same) {
            Some(kept) => kept.1 = checkpoint,
            None => latest.push((&batch.scope, checkpoint)),
        }
    }
    latest
}

on_every_backend! {
impl Sink for Store {
    async fn write_pages(&mut self, batches: &[Batch]) -> Result<WriteCounts, StoreError> {
        let counts = self.write_pages_uncommitted(batches).await?;
        self.commit().await?;
        Ok(counts)
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        if let Some(transaction) = self.open_transaction().take() {
            transaction.commit().await?;
            self.committed();
        }
        Ok(())
    }

    async fn write_pages_uncommitted(
        &mut self,
        batches: &[Batch],
    ) -> Result<WriteCounts, StoreError> {
        let mut counts = WriteCounts::default();
        let at: Arc<str> = Arc::from(now());
        // The transaction an earlier write left open, or a new one. It goes back only when
        // everything here succeeded: on an error it is dropped, which rolls it back.
        let mut transaction = match self.open_transaction().take() {
            Some(transaction) => transaction,
            None => self.pool.begin().await?,
        };
        for group in batches.chunk_by(one_statement) {
            // `one_statement` puts every batch of a group in the same scope and stream.
            let Some(batch) = group.last() else { continue };
            let scope = &*batch.scope;

            if let Some(model) = batch.model {
                let mut records: Vec<&StoredRecord> =
                    group.iter().flat_map(|batch| &batch.records).collect();
                // Each run of records (or of tombstones) in the order of their ids, the order
                // of the identity index: a provider's ids are random (Google's, Spotify's), and
                // rows given in the index's order update each of its leaves once per
                // statement, where rows in listing order visit a random leaf each, read it again
                // and write it again. Ids listed twice keep their order (the sort is stable), so
                // the later listing still wins.
                for run in records.chunk_by_mut(|record, next| record.deleted == next.deleted) {
                    run.sort_by(|a, b| a.id.cmp(&b.id));
                }
                let shared = SharedColumns {
                    scope: scope_key(&scope.user_id, &scope.platform, model.name()),
                    user_id: Arc::clone(&scope.user_id),
                    platform: Arc::clone(&scope.platform),
                    model: Arc::from(model.name()),
                    integration_id: Arc::clone(&scope.integration_id),
                    stream: Arc::clone(&batch.stream),
                    at: Arc::clone(&at),
                };
                // Records and tombstones in the order they were listed, so that a record
                // deleted and then listed again ends up stored, and one listed and then deleted
                // ends up deleted with its data kept.
                for listed in records.chunk_by(|record, next| record.deleted == next.deleted) {
                    let deleted = listed.first().is_some_and(|record| record.deleted);
                    for chunk in listed.chunks(ROWS_PER_STATEMENT) {
                        let written =
                            write_listed::<DB>(&mut transaction, &shared, chunk, deleted).await?;
                        counts += written;
                    }
                }

                if group.iter().any(|batch| !batch.downloads.is_empty()) {
                    Self::owe_content(&mut transaction, group, model.name(), &at).await?;
                }
                if group.iter().any(|batch| !batch.stored.is_empty()) {
                    Self::refer_stored(&mut transaction, group, model.name(), &at).await?;
                }

                if let Some(pass) = batch.seen_in_pass {
                    // By the records' rows: a new record's is the table's last, so the ids a
                    // first pass sees are appended, whatever the order of the provider's ids.
                    for chunk in records.chunks(ROWS_PER_STATEMENT) {
                        let mut query = QueryBuilder::<DB>::new(
                            "INSERT INTO sync_seen (integration_id, stream, pass_id, record) SELECT ",
                        );
                        query
                            .separated(", ")
                            .push_bind(&*scope.integration_id)
                            .push_bind(&*batch.stream)
                            .push_bind(pass);
                        query
                            .push(", r.id FROM records r WHERE r.scope = ")
                            .push_bind(&shared.scope[..])
                            .push(" AND r.source_object_id IN (");
                        let mut ids = query.separated(", ");
                        for record in chunk {
                            ids.push_bind(Arc::clone(&record.id));
                        }
                        query.push(") ORDER BY r.id ON CONFLICT DO NOTHING");
                        query.build().execute(&mut *transaction).await?;
                    }
                }
            }

            let rejects: Vec<(&Batch, &super::Reject)> = group
                .iter()
                .flat_map(|batch| batch.rejects.iter().map(move |reject| (batch, reject)))
                .collect();
            counts.rejected += rejects.len() as u64;
            let raws: Vec<String> = rejects
                .iter()
                .map(|(_, reject)| reject.raw.to_string())
                .collect();
            for (chunk, raws) in rejects
                .chunks(ROWS_PER_STATEMENT)
                .zip(raws.chunks(ROWS_PER_STATEMENT))
            {
                let mut query = QueryBuilder::<DB>::new(
                    "INSERT INTO rejects (source_platform, integration_id, stream, source_object_id, reason, raw, seen_at) ",
                );
                query.push_values(chunk.iter().zip(raws), |mut row, ((batch, reject), raw)| {
                    row.push_bind(&*batch.scope.platform)
                        .push_bind(&*batch.scope.integration_id)
                        .push_bind(&*batch.stream)
                        .push_bind(reject.id.as_deref())
                        .push_bind(reject.reason.as_str())
                        .push_bind(raw.as_str())
                        .push_bind(&*at);
                });
                query.build().execute(&mut *transaction).await?;
            }

            // Only a group's last batch completes passes (see `one_statement`): the sweeps come
            // after every record of the group.
            for sweep in &batch.sweeps {
                // What the completed pass did not see is gone at the provider: keep it, marked.
                let mut query = QueryBuilder::<DB>::new("UPDATE records SET deleted_at = ");
                query
                    .push_bind(&*at)
                    .push(", updated_at = ")
                    .push_bind(&*at)
                    .push(" WHERE integration_id = ")
                    .push_bind(&*scope.integration_id)
                    .push(" AND stream = ")
                    .push_bind(&*sweep.stream)
                    .push(" AND deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM sync_seen s WHERE s.integration_id = records.integration_id AND s.stream = records.stream AND s.pass_id = ")
                    .push_bind(sweep.pass)
                    .push(" AND s.record = records.id)");
                counts.deleted +=
                    DB::rows_affected(&query.build().execute(&mut *transaction).await?);
                let mut query =
                    QueryBuilder::<DB>::new("DELETE FROM sync_seen WHERE integration_id = ");
                query
                    .push_bind(&*scope.integration_id)
                    .push(" AND stream = ")
                    .push_bind(&*sweep.stream);
                query.build().execute(&mut *transaction).await?;
            }
        }

        for (scope, checkpoint) in latest_checkpoints(batches) {
            let state = serde_json::to_string(&checkpoint.state).unwrap_or_default();
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO checkpoints (integration_id, stream, partition_key, state, updated_at) VALUES (",
            );
            query
                .separated(", ")
                .push_bind(&*scope.integration_id)
                .push_bind(&*checkpoint.stream)
                .push_bind(checkpoint.partition.as_str())
                .push_bind(state.as_str())
                .push_bind(&*at);
            query.push(
                ") ON CONFLICT (integration_id, stream, partition_key) DO UPDATE SET \
                 state = excluded.state, updated_at = excluded.updated_at",
            );
            query.build().execute(&mut *transaction).await?;
        }
        *self.open_transaction() = Some(transaction);
        Ok(counts)
    }

    async fn checkpoint(
        &self,
        integration_id: &str,
        stream: &str,
        partition: &str,
    ) -> Result<Option<StreamState>, StoreError> {
        let mut query =
            QueryBuilder::<DB>::new("SELECT state FROM checkpoints WHERE integration_id = ");
        query
            .push_bind(integration_id)
            .push(" AND stream = ")
            .push_bind(stream)
            .push(" AND partition_key = ")
            .push_bind(partition);
        let Some(row) = query.build().fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let state: String = row.try_get(0usize)?;
        serde_json::from_str(&state)
            .map(Some)
            .map_err(|error| StoreError::Corrupt {
                what: "checkpoint",
                reason: error.to_string(),
            })
    }

    async fn holds_records(&self, integration_id: &str, stream: &str) -> Result<bool, StoreError> {
        let mut query = QueryBuilder::<DB>::new("SELECT 1 FROM records WHERE integration_id = ");
        query
            .push_bind(integration_id)
            .push(" AND stream = ")
            .push_bind(stream)
            .push(" AND deleted_at IS NULL LIMIT 1");
        Ok(query.build().fetch_optional(&self.pool).await?.is_some())
    }

    async fn start_run(&self, scope: &RunScope) -> Result<i64, StoreError> {
        self.insert_run(scope).await
    }

    async fn due_downloads(
        &self,
        integration_id: &str,
        max_attempts: i64,
        after: Option<&super::DueAt>,
        limit: i64,
    ) -> Result<Vec<super::DueDownload>, StoreError> {
        self.select_due_downloads(integration_id, max_attempts, after, limit)
            .await
    }

    async fn content_stored(
        &self,
        scope: &RunScope,
        due: &super::DueDownload,
        blob: &crate::blobs::BlobRef,
    ) -> Result<(), StoreError> {
        self.store_content(scope, due, blob).await
    }

    async fn download_failed(
        &self,
        scope: &RunScope,
        due: &super::DueDownload,
        error: &str,
    ) -> Result<(), StoreError> {
        self.note_download_failure(scope, due, error).await
    }

    async fn finish_run(
        &self,
        run_id: i64,
        totals: &RunTotals,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update_run(run_id, totals, status, error).await?;
        self.committed();
        Ok(())
    }
}
}
