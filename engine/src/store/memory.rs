//! A sink that keeps records in memory, for `connector test` and for inspecting a run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Batch, Sink, StoreError};
use crate::events::WriteCounts;
use crate::map::{MappedRecord, Reject};

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

impl Sink for MemorySink {
    async fn write(&mut self, batch: &Batch) -> Result<WriteCounts, StoreError> {
        let mut counts = WriteCounts {
            rejected: batch.rejects.len() as u64,
            ..WriteCounts::default()
        };
        let mut contents = self.contents.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = contents
            .records
            .entry(batch.stream.to_string())
            .or_default();
        for record in &batch.records {
            match stored.iter_mut().find(|existing| existing.id == record.id) {
                Some(existing) if existing == record => counts.unchanged += 1,
                Some(existing) => {
                    if record.deleted {
                        counts.deleted += 1;
                    } else {
                        counts.updated += 1;
                    }
                    *existing = record.clone();
                }
                None => {
                    if record.deleted {
                        counts.deleted += 1;
                    } else {
                        counts.new += 1;
                    }
                    stored.push(record.clone());
                }
            }
        }
        contents
            .rejects
            .entry(batch.stream.to_string())
            .or_default()
            .extend(batch.rejects.iter().cloned());
        Ok(counts)
    }
}
