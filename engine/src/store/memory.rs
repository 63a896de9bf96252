//! A sink that keeps records in memory, for `connector test` and for inspecting a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::{
    Batch, DueAt, DueDownload, RunScope, RunStatus, RunTotals, Sink, StoreError, StoredRecord,
    StreamState,
};
use crate::blobs::BlobRef;
use crate::events::WriteCounts;
use crate::record::{MappedRecord, Reject};

/// Keeps every record by stream, in arrival order, with the same new/updated/unchanged
/// accounting as a database (keyed by stream and id). Clones share the same contents.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    contents: Arc<Mutex<MemoryContents>>,
}

/// What a [`MemorySink`] holds.
#[derive(Debug, Clone, Default)]
pub struct MemoryContents {
    /// Records by stream.
    pub records: BTreeMap<String, Vec<MappedRecord>>,
    /// Rejects by stream.
    pub rejects: BTreeMap<String, Vec<Reject>>,
    /// Checkpoints by (stream, partition).
    pub checkpoints: BTreeMap<(String, String), StreamState>,
    /// Runs started so far.
    pub runs: i64,
    /// How each finished run ended, in order.
    pub statuses: Vec<RunStatus>,
    /// How many pages each write carried, in order: the commits a database would have made.
    pub writes: Vec<usize>,
    /// Ids seen by unfinished full passes, by (stream, pass).
    seen: BTreeMap<(String, i64), BTreeSet<String>>,
    /// Records' content stored, by (stream, record id, part), with its version and file name.
    pub content: BTreeMap<(String, String, String), StoredContent>,
    /// Content owed, by (model, record id, part), with the errors of its failed attempts.
    pub owed: BTreeMap<(String, String, String), (DueDownload, Vec<String>)>,
    /// The row number of each (model, record id) that owed content, in the order they first
    /// did: the order downloads are made in (a database's record rows).
    rows: BTreeMap<(String, String), i64>,
}

/// A part of a record's content, as a [`MemorySink`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContent {
    /// The blob.
    pub blob: BlobRef,
    /// The version it was downloaded in.
    pub version: String,
    /// Its file name, where the record gives one.
    pub file_name: Option<String>,
}

impl MemorySink {
    /// A copy of what it holds now.
    pub fn contents(&self) -> MemoryContents {
        self.contents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl MemorySink {
    fn write_page(&self, batch: &Batch) -> WriteCounts {
        let mut counts = WriteCounts {
            rejected: batch.rejects.len() as u64,
            ..WriteCounts::default()
        };
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        if batch.model.is_some() {
            let stored = contents
                .records
                .entry(batch.stream.to_string())
                .or_default();
            for record in batch.records.iter().map(StoredRecord::mapped) {
                match stored.iter_mut().find(|existing| existing.id == record.id) {
                    // A tombstone keeps the record's last known state, as a database does.
                    Some(existing) if record.deleted => {
                        if existing.deleted {
                            counts.unchanged += 1;
                        } else {
                            existing.deleted = true;
                            counts.deleted += 1;
                        }
                    }
                    Some(existing) if *existing == record => counts.unchanged += 1,
                    Some(existing) => {
                        if record.deleted {
                            counts.deleted += 1;
                        } else {
                            counts.updated += 1;
                        }
                        *existing = record;
                    }
                    None => {
                        if record.deleted {
                            counts.deleted += 1;
                        } else {
                            counts.new += 1;
                        }
                        stored.push(record);
                    }
                }
            }
            contents
                .rejects
                .entry(batch.stream.to_string())
                .or_default()
                .extend(batch.rejects.iter().cloned());
            let model = batch.model.map_or("", |model| model.name());
            for due in &batch.downloads {
                let stored = contents.content.get(&(
                    batch.stream.to_string(),
                    due.id.to_string(),
                    due.part.clone(),
                ));
                if stored.is_some_and(|stored| stored.version == due.version) {
                    continue;
                }
                let key = (model.to_owned(), due.id.to_string(), due.part.clone());
                let attempts = contents.owed.get(&key).map_or(0, |(owed, _)| owed.attempts);
                let errors = contents.owed.remove(&key).map(|(_, errors)| errors);
                let next = contents.rows.len() as i64 + 1;
                let record = *contents
                    .rows
                    .entry((model.to_owned(), due.id.to_string()))
                    .or_insert(next);
                contents.owed.insert(
                    key,
                    (
                        DueDownload {
                            stream: batch.stream.to_string(),
                            model: model.to_owned(),
                            id: due.id.to_string(),
                            part: due.part.clone(),
                            file_name: due.file_name.clone(),
                            version: due.version.clone(),
                            request: due.request.clone(),
                            attempts,
                            at: DueAt {
                                record,
                                part: due.part.clone(),
                            },
                        },
                        errors.unwrap_or_default(),
                    ),
                );
            }
        }
        for stored in &batch.stored {
            contents.content.insert(
                (
                    batch.stream.to_string(),
                    stored.id.to_string(),
                    stored.part.clone(),
                ),
                StoredContent {
                    blob: stored.blob.clone(),
                    version: String::new(),
                    file_name: stored.file_name.clone(),
                },
            );
        }
        if let Some(pass) = batch.seen_in_pass {
            let ids = batch.records.iter().map(|record| record.id.to_string());
            contents
                .seen
                .entry((batch.stream.to_string(), pass))
                .or_default()
                .extend(ids);
        }
        for sweep in &batch.sweeps {
            let seen = contents
                .seen
                .remove(&(sweep.stream.to_string(), sweep.pass))
                .unwrap_or_default();
            for record in contents
                .records
                .entry(sweep.stream.to_string())
                .or_default()
                .iter_mut()
                .filter(|record| !record.deleted && !seen.contains(&record.id))
            {
                record.deleted = true;
                counts.deleted += 1;
            }
        }
        if let Some(checkpoint) = &batch.checkpoint {
            contents.checkpoints.insert(
                (checkpoint.stream.to_string(), checkpoint.partition.clone()),
                checkpoint.state.clone(),
            );
        }
        counts
    }
}

impl Sink for MemorySink {
    async fn write_pages(&mut self, batches: &[Batch]) -> Result<WriteCounts, StoreError> {
        let mut counts = WriteCounts::default();
        for batch in batches {
            counts += self.write_page(batch);
        }
        self.contents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .writes
            .push(batches.len());
        Ok(counts)
    }

    async fn checkpoint(
        &self,
        _integration_id: &str,
        stream: &str,
        partition: &str,
    ) -> Result<Option<StreamState>, StoreError> {
        let contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(contents
            .checkpoints
            .get(&(stream.to_owned(), partition.to_owned()))
            .cloned())
    }

    async fn holds_records(&self, _integration_id: &str, stream: &str) -> Result<bool, StoreError> {
        let contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(contents
            .records
            .get(stream)
            .is_some_and(|records| records.iter().any(|record| !record.deleted)))
    }

    async fn due_downloads(
        &self,
        _integration_id: &str,
        max_attempts: i64,
        after: Option<&DueAt>,
        limit: i64,
    ) -> Result<Vec<DueDownload>, StoreError> {
        let contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due: Vec<&DueDownload> = contents
            .owed
            .values()
            .map(|(due, _)| due)
            .filter(|due| due.attempts < max_attempts && after.is_none_or(|after| due.at > *after))
            .collect();
        due.sort_by(|a, b| a.at.cmp(&b.at));
        Ok(due
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .cloned()
            .collect())
    }

    async fn content_stored(
        &self,
        _scope: &RunScope,
        due: &DueDownload,
        blob: &BlobRef,
    ) -> Result<(), StoreError> {
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        contents
            .owed
            .remove(&(due.model.clone(), due.id.clone(), due.part.clone()));
        contents.content.insert(
            (due.stream.clone(), due.id.clone(), due.part.clone()),
            StoredContent {
                blob: blob.clone(),
                version: due.version.clone(),
                file_name: due.file_name.clone(),
            },
        );
        Ok(())
    }

    async fn download_failed(
        &self,
        _scope: &RunScope,
        due: &DueDownload,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((owed, errors)) =
            contents
                .owed
                .get_mut(&(due.model.clone(), due.id.clone(), due.part.clone()))
        {
            owed.attempts += 1;
            errors.push(error.to_owned());
        }
        Ok(())
    }

    async fn start_run(&self, _scope: &RunScope) -> Result<i64, StoreError> {
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        contents.runs += 1;
        Ok(contents.runs)
    }

    async fn finish_run(
        &self,
        _run_id: i64,
        _totals: &RunTotals,
        status: RunStatus,
        _error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        contents.statuses.push(status);
        Ok(())
    }
}
