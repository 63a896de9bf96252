//! A sink that keeps records in memory, for `connector test` and for inspecting a run.

use std::collections::BTreeMap;

use super::{Batch, Sink, StoreError};
use crate::events::WriteCounts;
use crate::map::{MappedRecord, Reject};

/// Keeps every record by stream, in arrival order, with the same new/updated/unchanged
/// accounting as a database (keyed by stream and id).
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Records by stream.
    pub records: BTreeMap<String, Vec<MappedRecord>>,
    /// Rejects by stream.
    pub rejects: BTreeMap<String, Vec<Reject>>,
}

impl Sink for MemorySink {
    async fn write(&mut self, batch: Batch<'_>) -> Result<WriteCounts, StoreError> {
        let mut counts = WriteCounts {
            rejected: batch.rejects.len() as u64,
            ..WriteCounts::default()
        };
        let stored = self.records.entry(batch.stream.to_owned()).or_default();
        for record in batch.records {
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
        self.rejects
            .entry(batch.stream.to_owned())
            .or_default()
            .extend(batch.rejects.iter().cloned());
        Ok(counts)
    }
}
