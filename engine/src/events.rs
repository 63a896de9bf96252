//! What a running sync reports as it goes: for progress bars, logs and summaries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Something that happened during a sync.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// A request is going out (every attempt counts).
    Request,
    /// An attempt failed and will be retried after `wait`.
    Retry {
        /// The attempt that failed, from 1.
        attempt: u32,
        /// The wait before the next.
        wait: Duration,
        /// Why it failed.
        reason: &'a str,
    },
    /// A rate limit holds the next request back for `wait`.
    RateLimited {
        /// How long.
        wait: Duration,
    },
    /// A page of a stream was decoded.
    Page {
        /// The stream.
        stream: &'a str,
        /// Records on the page.
        records: usize,
    },
    /// A page's records were written.
    Stored(WriteCounts),
    /// An import read on in its export.
    Read {
        /// The stream.
        stream: &'a str,
        /// The stream's files' unpacked bytes read so far.
        read: u64,
        /// Their unpacked bytes, where the export says them before they are read.
        total: Option<u64>,
    },
    /// A record's content was stored in the blob store (or found there, the same bytes).
    ContentStored {
        /// Its size.
        bytes: u64,
    },
    /// A record's content could not be downloaded; it stays owed.
    ContentFailed,
    /// A stream's session waits for the person at `url` (Google Photos' Picker): tell them.
    SessionOpened {
        /// The stream.
        stream: &'a str,
        /// The page they open.
        url: &'a str,
    },
}

/// What writing one page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WriteCounts {
    /// Records seen for the first time.
    pub new: u64,
    /// Records whose content changed.
    pub updated: u64,
    /// Records already stored as they are (not rewritten).
    pub unchanged: u64,
    /// Records marked deleted.
    pub deleted: u64,
    /// Records that could not be mapped or did not fit their model (kept as rejects).
    pub rejected: u64,
}

/// Receives events. Implementations must be cheap: they run on the sync's hot path.
pub trait Observer: Send + Sync {
    /// Called for each event.
    fn event(&self, event: &Event<'_>);
}

/// Counts everything; the basis of every summary.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    rate_limit_waits: AtomicU64,
    rate_limit_wait_ms: AtomicU64,
    pages: AtomicU64,
    records: AtomicU64,
    new: AtomicU64,
    updated: AtomicU64,
    unchanged: AtomicU64,
    deleted: AtomicU64,
    rejected: AtomicU64,
    read: AtomicU64,
    read_total: AtomicU64,
    contents: AtomicU64,
    content_bytes: AtomicU64,
    contents_failed: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
    /// Times a rate limit held a request back.
    pub rate_limit_waits: u64,
    /// Total time held back, in milliseconds.
    pub rate_limit_wait_ms: u64,
    /// Pages decoded.
    pub pages: u64,
    /// Records on those pages.
    pub records: u64,
    /// What was written.
    #[serde(flatten)]
    pub written: WriteCounts,
    /// An import's progress through the stream it reads now: its files' unpacked bytes read.
    #[serde(skip_serializing_if = "is_zero")]
    pub read_bytes: u64,
    /// Those files' unpacked size, where the export says it before they are read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_total_bytes: Option<u64>,
    /// Records' content stored in the blob store.
    #[serde(skip_serializing_if = "is_zero")]
    pub contents: u64,
    /// The bytes of that content.
    #[serde(skip_serializing_if = "is_zero")]
    pub content_bytes: u64,
    /// Content that could not be downloaded (owed still, retried by later runs).
    #[serde(skip_serializing_if = "is_zero")]
    pub contents_failed: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Counters {
    /// The counts so far.
    pub fn totals(&self) -> Totals {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Totals {
            requests: load(&self.requests),
            retries: load(&self.retries),
            rate_limit_waits: load(&self.rate_limit_waits),
            rate_limit_wait_ms: load(&self.rate_limit_wait_ms),
            pages: load(&self.pages),
            records: load(&self.records),
            written: WriteCounts {
                new: load(&self.new),
                updated: load(&self.updated),
                unchanged: load(&self.unchanged),
                deleted: load(&self.deleted),
                rejected: load(&self.rejected),
            },
            read_bytes: load(&self.read),
            read_total_bytes: Some(load(&self.read_total)).filter(|total| *total > 0),
            contents: load(&self.contents),
            content_bytes: load(&self.content_bytes),
            contents_failed: load(&self.contents_failed),
        }
    }
}

impl Observer for Counters {
    fn event(&self, event: &Event<'_>) {
        let add = |counter: &AtomicU64, amount: u64| counter.fetch_add(amount, Ordering::Relaxed);
        match event {
            Event::Request => add(&self.requests, 1),
            Event::Retry { .. } => add(&self.retries, 1),
            Event::RateLimited { wait } => {
                add(&self.rate_limit_waits, 1);
                add(
                    &self.rate_limit_wait_ms,
                    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                )
            }
            Event::Page { records, .. } => {
                add(&self.pages, 1);
                add(&self.records, *records as u64)
            }
            Event::Stored(counts) => {
                add(&self.new, counts.new);
                add(&self.updated, counts.updated);
                add(&self.unchanged, counts.unchanged);
                add(&self.deleted, counts.deleted);
                add(&self.rejected, counts.rejected)
            }
            Event::Read { read, total, .. } => {
                // The stream being read now: the figures start again with each stream.
                self.read_total
                    .store(total.unwrap_or_default(), Ordering::Relaxed);
                self.read.swap(*read, Ordering::Relaxed)
            }
            Event::ContentStored { bytes } => {
                add(&self.contents, 1);
                add(&self.content_bytes, *bytes)
            }
            Event::ContentFailed => add(&self.contents_failed, 1),
            Event::SessionOpened { .. } => 0,
        };
    }
}

impl std::ops::AddAssign for WriteCounts {
    fn add_assign(&mut self, other: Self) {
        self.new += other.new;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
        self.rejected += other.rejected;
    }
}
