//! The writer task: mapped pages on their way to the sink.
//!
//! The writer is its own task, so the database works on one core while pages are fetched,
//! decoded and mapped on the other. It writes pages in the order they were sent, those that
//! arrive together in one write, and commits many writes together while pages keep coming.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::events::{Event, Observer, WriteCounts};
use crate::store::{Batch, Sink, StoreError};

/// How many mapped pages may wait for the writer, and how many it writes together at most
/// (one statement per stream): enough to make a write worth its cost, few enough that memory
/// stays a handful of pages (a mapped page of 100 records is about 100 KB). With the store's 16 KiB SQLite pages, eight a
/// commit cost 12–25% less CPU per record than four on the import bench; sixteen did worse
/// than eight.
const WRITE_QUEUE_PAGES: usize = 8;

/// How long the writer waits for more pages before it commits fewer than [`WRITE_QUEUE_PAGES`].
///
/// Each commit rewrites the pages every insert touches (the tables' and indexes' last leaves and
/// their parents, the checkpoint's row): about 11 of the 34 log pages a commit of 100 records
/// wrote at 4 KiB, and a 16 KiB page costs four times as much to rewrite, so the more pages a
/// commit holds, the less log each writes, and the log's copy into the database file shrinks
/// with it. A source that pages faster than this (a loopback replay, a fast API) fills a
/// commit; a slow one has each page committed this much later, which a crash can only cost as a
/// re-fetch of those pages.
const WRITE_GATHER: Duration = Duration::from_millis(20);

/// How many bytes of mapped records may be queued for the writer or being written, at most:
/// an export's pages hold a thousand records (Spotify's plays map to 700 KB a page), and eight
/// queued pages beside eight being written held 11 MB; the budget keeps memory flat whatever a
/// page holds, and still lets a commit gather several pages. A page larger than the budget
/// takes all of it.
const WRITE_QUEUE_BYTES: usize = 6 << 20;

/// How many records a transaction may hold before it is committed, however fast pages come.
/// Each commit writes every index leaf its records landed on into the log (16 KiB each) and the
/// checkpointer copies it into the file; a provider's ids are random, so a commit of 800
/// records (eight pages) rewrote about as many leaves of the identity index, where one of many
/// thousands rewrites each leaf once for several records. Measured with `connector sync
/// google_photos` on random ids: see BENCHMARKS.md ("Random ids"); 32k and 64k records a
/// commit, with SQLite's cache grown to hold them, gained 0-15% at a million records for 6-30
/// MiB more memory.
const COMMIT_RECORDS: usize = 8_192;

/// How long a transaction may stay open while pages keep coming: what a crash can cost (those
/// pages are fetched again), and how long other writers of the same SQLite file wait.
const COMMIT_AFTER: Duration = Duration::from_secs(1);

/// What the writer has written since its last commit.
#[derive(Default)]
struct Commits {
    records: usize,
    since: Option<tokio::time::Instant>,
    counts: WriteCounts,
}

impl Commits {
    fn wrote(&mut self, records: usize, counts: WriteCounts) {
        self.records += records;
        self.since.get_or_insert_with(tokio::time::Instant::now);
        self.counts += counts;
    }

    /// Whether to commit now: when no page is waiting (a slow source: each write is committed
    /// as before, and nothing waits on an open transaction), or the transaction is big or old.
    /// Waiting up to 50 ms for the next page before committing changed nothing measurable on a
    /// million random ids (28.2-28.9k against 28.7-29.8k records/s) and cost Apple Health's
    /// import 3-5% and 3-5 MiB (BENCHMARKS.md, "The store's keys").
    fn due(&self, idle: bool) -> bool {
        idle || self.records >= COMMIT_RECORDS
            || self
                .since
                .is_some_and(|since| since.elapsed() >= COMMIT_AFTER)
    }

    /// The counts of what was just committed, reported once it is.
    fn committed(&mut self) -> WriteCounts {
        std::mem::take(self).counts
    }
}

/// The stream whose page could not be written, and why.
pub(super) type WriteFailure = (Arc<str>, StoreError);

/// Pages on their way to the sink, and the task that writes them.
pub(super) struct WriteQueue {
    sender: Option<mpsc::Sender<(Batch, OwnedSemaphorePermit)>>,
    /// The bytes of [`WRITE_QUEUE_BYTES`] not taken by queued or unwritten pages, in KiB.
    budget: Arc<Semaphore>,
    written: std::sync::Mutex<mpsc::UnboundedReceiver<WriteCounts>>,
    task: Option<JoinHandle<Result<(), WriteFailure>>>,
}

impl WriteQueue {
    pub(super) fn idle() -> Self {
        let (_, written) = mpsc::unbounded_channel();
        Self {
            sender: None,
            budget: Arc::new(Semaphore::new(0)),
            written: std::sync::Mutex::new(written),
            task: None,
        }
    }

    pub(super) fn start<S: Sink>(mut sink: S) -> Self {
        let (sender, mut pages) = mpsc::channel::<(Batch, OwnedSemaphorePermit)>(WRITE_QUEUE_PAGES);
        let (report, written) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(WRITE_QUEUE_BYTES >> 10));
        let spent = Arc::clone(&budget);
        let task = tokio::spawn(async move {
            // Pages that arrive together are written together; the transaction stays open
            // while more keep coming (see `Commits`).
            let mut batches = Vec::with_capacity(WRITE_QUEUE_PAGES);
            let mut commits = Commits::default();
            let mut stream: Arc<str> = Arc::from("");
            while pages.recv_many(&mut batches, WRITE_QUEUE_PAGES).await > 0 {
                let deadline = tokio::time::Instant::now() + WRITE_GATHER;
                // Pages that took the whole budget are all that can come: no waiting for more.
                while batches.len() < WRITE_QUEUE_PAGES && spent.available_permits() > 0 {
                    let room = WRITE_QUEUE_PAGES - batches.len();
                    let more = pages.recv_many(&mut batches, room);
                    match tokio::time::timeout_at(deadline, more).await {
                        // More came; a closed queue (0) or the deadline ends the gathering.
                        Ok(received) if received > 0 => {}
                        Ok(_) | Err(_) => break,
                    }
                }
                // The pages' bytes go back to the budget once written (with the permits).
                let (pages_now, permits): (Vec<Batch>, Vec<OwnedSemaphorePermit>) =
                    batches.drain(..).unzip();
                let records: usize = pages_now.iter().map(|batch| batch.records.len()).sum();
                let written = sink.write_pages_uncommitted(&pages_now).await;
                if let Some(batch) = pages_now.first() {
                    stream = Arc::clone(&batch.stream);
                }
                drop(pages_now);
                drop(permits);
                match written {
                    Ok(counts) => commits.wrote(records, counts),
                    Err(error) => return Err((stream, error)),
                }
                if commits.due(pages.is_empty()) {
                    sink.commit()
                        .await
                        .map_err(|error| (Arc::clone(&stream), error))?;
                    // The run may be gone; then nobody needs the report.
                    let _ = report.send(commits.committed());
                }
            }
            sink.commit().await.map_err(|error| (stream, error))?;
            let _ = report.send(commits.committed());
            Ok(())
        });
        Self {
            sender: Some(sender),
            budget,
            written: std::sync::Mutex::new(written),
            task: Some(task),
        }
    }

    /// Queues a page, waiting while the queue is full. Fails when the writer has stopped (its
    /// error comes from [`WriteQueue::finish`]).
    pub(super) async fn send(&self, batch: Batch, observer: &dyn Observer) -> Result<(), ()> {
        let sender = self.sender.as_ref().ok_or(())?;
        let bytes: usize = batch
            .records
            .iter()
            .map(|record| record.json.len() + record.id.len())
            .sum();
        let kib = u32::try_from((bytes >> 10).clamp(1, WRITE_QUEUE_BYTES >> 10)).unwrap_or(1);
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(kib)
            .await
            .map_err(drop)?;
        sender.send((batch, permit)).await.map_err(drop)?;
        self.report(observer);
        Ok(())
    }

    fn report(&self, observer: &dyn Observer) {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Ok(counts) = written.try_recv() {
            observer.event(&Event::Stored(counts));
        }
    }

    /// Waits until every queued page is written.
    pub(super) async fn finish(&mut self, observer: &dyn Observer) -> Result<(), WriteFailure> {
        self.sender = None;
        let result = match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(error) => Err((Arc::from(""), StoreError::Writer(error.to_string()))),
            },
            None => Ok(()),
        };
        self.report(observer);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Counters;
    use crate::models::ModelKind;
    use crate::store::{MemorySink, RunScope};

    fn page() -> Batch {
        let scope = Arc::new(RunScope {
            platform: Arc::from("notes_api"),
            user_id: Arc::from("user"),
            integration_id: Arc::from("integration"),
            worker: None,
        });
        Batch::records(scope, Arc::from("notes"), ModelKind::Note, vec![], vec![])
    }

    /// A sink whose writes wait until the test lets them through.
    #[derive(Clone, Default)]
    struct HeldSink {
        open: Arc<tokio::sync::Notify>,
    }

    impl Sink for HeldSink {
        async fn write_pages(&mut self, _: &[Batch]) -> Result<WriteCounts, StoreError> {
            self.open.notified().await;
            Ok(WriteCounts::default())
        }

        async fn checkpoint(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<Option<crate::state::StreamState>, StoreError> {
            Ok(None)
        }

        async fn start_run(&self, _: &RunScope) -> Result<i64, StoreError> {
            Ok(1)
        }

        async fn finish_run(
            &self,
            _: i64,
            _: &crate::store::RunTotals,
            _: crate::store::RunStatus,
            _: Option<&str>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
    }

    /// A page of `records` records of about `bytes` bytes each.
    fn page_of(records: usize, bytes: usize) -> Batch {
        let mut batch = page();
        batch.records = (0..records)
            .map(|n| {
                crate::record::MappedRecord::from_json(
                    format!("r{n}"),
                    format!("{{\"text\":\"{}\"}}", "x".repeat(bytes)),
                    false,
                )
                .into()
            })
            .collect();
        batch
    }

    /// Pages of large records wait for the writer once the bytes queued or being written
    /// reach the budget, however few pages that is.
    #[tokio::test]
    async fn the_bytes_in_flight_are_bounded() {
        let sink = HeldSink::default();
        let counters = Counters::default();
        let queue = WriteQueue::start(sink.clone());
        // Two fifths of the budget each: two pages fit, the third waits.
        let page = || page_of(4, WRITE_QUEUE_BYTES / 10);
        queue.send(page(), &counters).await.unwrap();
        queue.send(page(), &counters).await.unwrap();
        let third = queue.send(page(), &counters);
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut third)
                .await
                .is_err(),
            "a page beyond the budget was queued"
        );
        // The first write ends: its bytes come back, and the third page goes in.
        sink.open.notify_one();
        third.await.unwrap();
    }

    /// Time is paused: the gathering deadline passes only when nothing else can run, so the
    /// groups do not depend on the machine's speed.
    #[tokio::test(start_paused = true)]
    async fn pages_that_arrive_together_are_committed_together() {
        let sink = MemorySink::default();
        let counters = Counters::default();
        let mut queue = WriteQueue::start(sink.clone());
        // A full commit's worth a millisecond apart: the writer waits for them and commits them
        // together.
        for _ in 0..WRITE_QUEUE_PAGES {
            queue.send(page(), &counters).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Two more than that at once: a full commit, and the two left over once the gathering
        // times out.
        for _ in 0..WRITE_QUEUE_PAGES + 2 {
            queue.send(page(), &counters).await.unwrap();
        }
        // Two far apart: each is committed alone.
        tokio::time::sleep(Duration::from_secs(1)).await;
        queue.send(page(), &counters).await.unwrap();
        tokio::time::sleep(WRITE_GATHER * 2).await;
        queue.send(page(), &counters).await.unwrap();
        queue.finish(&counters).await.unwrap();
        let full = WRITE_QUEUE_PAGES;
        assert_eq!(sink.contents().writes, [full, full, 2, 1, 1]);
    }
}
