//! Where a stream stands between runs, and where an unfinished pass resumes.
//!
//! A stream's state is what a run reads before it asks a provider for anything, and what it
//! stores with each page: every source (paginated requests, the entries of an archive) resumes
//! from here, and every sink keeps it. It depends on no stage of the pipeline.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A stream's (or one partition's) state, kept as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// The newest incremental cursor value of the last completed pass (`state.cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Value>,
    /// The sync token the last completed pass ended with (`state.sync_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// An unfinished pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Resume>,
    /// For a stream that reconciles (`reconcile`): when its last pass that listed everything
    /// completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_all_at: Option<jiff::Timestamp>,
}

/// Where an unfinished pass goes on. A pass sends the same `cursor`/`sync_token` on every page,
/// so resuming only needs the next page and what the pass has seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The pass (the id of the run that began it).
    pub pass: i64,
    /// The next page to fetch.
    pub page: PageCursor,
    /// The newest cursor value the pass has seen so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<Value>,
    /// Whether the pass, completed, marks what it did not see as deleted (it lists everything,
    /// and the stream held records when it began). Stored as `full` by earlier versions.
    #[serde(default, alias = "full")]
    pub sweeps: bool,
    /// For a full pass of a change-log stream: the log's position asked when the pass began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_token: Option<String>,
}

/// A stream partition's new state, stored with the page that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The stream.
    pub stream: Arc<str>,
    /// `""` for a root stream; for a substream, its parent's values.
    pub partition: String,
    /// The state.
    pub state: StreamState,
}

/// Where in the stream the next request is. Stored in checkpoints, so a pass can resume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "at", content = "value", rename_all = "snake_case")]
pub enum PageCursor {
    /// The first page.
    First,
    /// A token for the next page.
    Token(String),
    /// The next page's full URL.
    Url(String),
    /// An offset.
    Offset(u64),
    /// A page number.
    Number(u64),
    /// A place in a data export: the entry being read and how many of its documents were read.
    Entry(EntryCursor),
}

/// Where an archive stream's import stands inside an export.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryCursor {
    /// The export's fingerprint: an import resumes only in the export it began with.
    pub export: String,
    /// The entry's number among those the stream reads, from 0.
    pub entry: u64,
    /// Its path inside the export (for messages).
    pub path: String,
    /// The entry's documents read so far.
    pub documents: u64,
}
