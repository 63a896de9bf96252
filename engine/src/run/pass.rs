//! One pass over a stream (partition): where it starts, what it sends, what it has seen, and
//! the checkpoint each page leaves behind.
//!
//! A pass lists a stream once, from its first page (or a kept page token) to its last. Whether
//! a pass lists everything or only changes, whether it marks what it did not see as deleted, and
//! when a failure starts a full pass instead, are decided here, from the plan and the stored
//! state; the run only follows these decisions.

use std::sync::Arc;

use serde_json::Value;

use super::error::{SyncError, SyncErrorKind};
use super::plan::CompiledStream;
use crate::decode::document::Node;
use crate::http::HttpError;
use crate::source::http::incremental::{ChangeLog, CompiledIncremental};
use crate::source::http::listing::Listing;
use crate::source::http::request::Injection;
use crate::state::{Checkpoint, PageCursor, Resume, StreamState};
use crate::store::Sweep;

impl CompiledStream {
    /// The change log `pass` reads, when it reads one instead of listing everything.
    pub(super) fn reads_log(&self, pass: &PassState) -> Option<&ChangeLog> {
        self.incremental
            .as_ref()
            .and_then(|incremental| incremental.reads_log(&pass.before))
    }

    /// What `pass` lists with: a change log's own listing when it reads one, else the stream's;
    /// `None` for a stream that reads an export.
    pub(super) fn listing(&self, pass: &PassState) -> Option<&Listing> {
        self.reads_log(pass)
            .map(|log| &log.log)
            .or_else(|| self.requests())
    }
}

/// What one pass over a stream (partition) sends and has seen so far.
pub(super) struct PassState {
    /// The state as last stored (resume point included): when the stream began, then as each
    /// queued checkpoint leaves it.
    pub(super) stored: StreamState,
    /// The state the pass started from (stored by the last completed pass).
    pub(super) before: StreamState,
    /// The pass id: the run that began it.
    pub(super) pass: i64,
    /// The incremental value it sends.
    pub(super) injection: Option<Injection>,
    /// `state` in templates.
    pub(super) template_state: minijinja::Value,
    /// The newest cursor value seen so far.
    pub(super) newest: Option<Value>,
    /// Whether the pass, completed, marks what it did not see as deleted. Only a pass that lists
    /// everything may (it sends no cursor or token and continues no earlier listing: every pass
    /// of a full-refresh stream, an incremental stream's first pass and its pass after a reset),
    /// and only when the stream held records as it began: a first import has nothing to sweep,
    /// so it keeps no list of the ids it sees.
    pub(super) sweeps: bool,
    /// Whether the pass lists everything (it sends no cursor or token and continues no earlier
    /// listing), whether or not it sweeps.
    pub(super) lists_all: bool,
    /// For a full pass of a change-log stream: the log's position asked before the pass listed
    /// anything, kept when the pass completes.
    pub(super) start_token: Option<String>,
    /// The pages this pass (in this run) has been sent to.
    pub(super) pages: PagesFollowed,
}

/// The pages a pass has followed, so that paging that loops ends the pass rather than the
/// machine: a provider that names a page it named before (`A, B, A, ...`: only an immediate
/// repeat was caught before), or a new token on every page without end (caught by the count).
///
/// Cursors are kept as 64-bit hashes: a pass holds at most `limits.max_pages` of them (800 KB at
/// the default), where next-page URLs of a kilobyte each would take a hundred megabytes; a false
/// repeat among 100,000 hashes has a chance of about 3 in 10^10.
#[derive(Debug, Default)]
pub(super) struct PagesFollowed {
    seen: std::collections::HashSet<u64>,
}

impl PagesFollowed {
    /// Notes the page the pass starts at (the first, or where a resumed pass stood).
    pub(super) fn start(&mut self, at: &PageCursor) {
        self.seen.clear();
        self.seen.insert(Self::hash(at));
    }

    /// Notes that the pass goes on to `next`; why it may not.
    pub(super) fn follow(&mut self, next: &PageCursor, max_pages: u32) -> Result<(), String> {
        if !self.seen.insert(Self::hash(next)) {
            return Err(format!(
                "the provider named a page it had already named ({}); stopping instead of looping",
                describe(next)
            ));
        }
        if self.seen.len() > usize::try_from(max_pages).unwrap_or(usize::MAX) {
            return Err(format!(
                "the stream reached {max_pages} pages in one pass (the connector's `limits.max_pages`); its paging may never end"
            ));
        }
        Ok(())
    }

    fn hash(cursor: &PageCursor) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        // Fixed keys: the same cursor hashes the same in every pass.
        BuildHasherDefault::<DefaultHasher>::default().hash_one(cursor)
    }
}

/// A cursor as shown in a message: a token or URL shortened.
fn describe(cursor: &PageCursor) -> String {
    let shown = |text: &str| crate::extract::shortened(text, 80);
    match cursor {
        PageCursor::First => "the first page".to_owned(),
        PageCursor::Token(token) => format!("token `{}`", shown(token)),
        PageCursor::Url(url) => format!("URL {}", shown(&crate::http::redacted_text(url))),
        PageCursor::Offset(offset) => format!("offset {offset}"),
        PageCursor::Number(number) => format!("page {number}"),
        PageCursor::Entry(at) => format!("`{}` after {} documents", shown(&at.path), at.documents),
    }
}

impl PassState {
    /// A pass from `before` (the last completed pass's state), numbered `pass`, having seen
    /// `newest` so far (a resumed pass's).
    pub(super) fn new(
        stream: &CompiledStream,
        before: StreamState,
        pass: i64,
        newest: Option<Value>,
    ) -> Self {
        let incremental = stream.incremental.as_ref();
        let injection = incremental.and_then(|incremental| incremental.injection(&before));
        let continues = incremental.is_some_and(|incremental| {
            incremental.continues_from(&before).is_some()
                || incremental.reads_log(&before).is_some()
        });
        Self {
            stored: before.clone(),
            sweeps: injection.is_none() && !continues,
            lists_all: injection.is_none() && !continues,
            start_token: None,
            pages: PagesFollowed::default(),
            injection,
            template_state: CompiledIncremental::template_state(incremental, &before),
            before,
            pass,
            newest,
        }
    }

    /// Notes the records of a page: the newest incremental cursor value among them.
    pub(super) fn see(&mut self, stream: &CompiledStream, records: &[&Node<'_>]) {
        if let Some(incremental) = &stream.incremental {
            for raw in records {
                self.newest = incremental.newest(self.newest.take(), raw);
            }
        }
    }

    /// Where the stream (partition) stands once the page just fetched is stored, and the full
    /// passes that page completes: the next page of this pass, or, after the last page (`next`
    /// is `None`), the completed pass's cursor or token. `None` for a stream that keeps no state,
    /// and for a pass that changed nothing (a sync token that came back the same): a no-change
    /// sync writes nothing.
    pub(super) fn after_page(
        &mut self,
        stream: &CompiledStream,
        name: &Arc<str>,
        partition: &str,
        next: Option<&PageCursor>,
        body: &Node<'_>,
    ) -> (Option<Checkpoint>, Vec<Sweep>) {
        if !stream.keeps_state() {
            return (None, vec![]);
        }
        let state = match next {
            Some(next) => StreamState {
                resume: Some(Resume {
                    pass: self.pass,
                    page: next.clone(),
                    newest: self.newest.clone(),
                    sweeps: self.sweeps,
                    start_token: self.start_token.clone(),
                }),
                ..self.before.clone()
            },
            None => {
                let mut state = CompiledIncremental::completed(
                    stream.incremental.as_ref(),
                    &self.before,
                    self.newest.clone(),
                    self.start_token.clone().or_else(|| {
                        stream
                            .incremental
                            .as_ref()
                            .and_then(|incremental| incremental.page_token(body))
                    }),
                );
                // A stream that reconciles notes when it last listed everything.
                if stream.reconcile.is_some() && self.lists_all {
                    state.listed_all_at = Some(jiff::Timestamp::now());
                }
                state
            }
        };
        let sweeps = match (next, stream.sweeps() && self.sweeps) {
            (None, true) => vec![Sweep {
                stream: Arc::clone(name),
                pass: self.pass,
            }],
            _ => vec![],
        };
        let checkpoint = (state != self.stored).then(|| {
            self.stored = state.clone();
            Checkpoint {
                stream: Arc::clone(name),
                partition: partition.to_owned(),
                state,
            }
        });
        (checkpoint, sweeps)
    }

    /// The pass these records are seen in, for a pass that marks what it did not see.
    pub(super) fn seen_in(&self, stream: &CompiledStream) -> Option<i64> {
        (stream.sweeps() && self.sweeps).then_some(self.pass)
    }
}

/// Whether a failed request starts a full pass instead of failing the stream, and the state that
/// pass starts from: a remembered token the provider no longer takes (Google's 410, Dropbox's
/// 409 reset) drops the token and cursor; a stored resume point it refuses (an expired page
/// token: a 4xx other than 401 and 429) starts the pass again with the same cursor. Nothing
/// stored is lost; the pass upserts over it.
pub(super) fn full_pass_after(
    error: &SyncError,
    stream: &CompiledStream,
    before: &StreamState,
    resumed: bool,
) -> Option<StreamState> {
    let SyncErrorKind::Http(HttpError::Status { status, .. }) = &error.kind else {
        return None;
    };
    let token_expired = before.sync_token.is_some()
        && stream
            .incremental
            .as_ref()
            .is_some_and(|incremental| incremental.resets_on(*status));
    let resume_refused = resumed && (400..500).contains(status) && *status != 401 && *status != 429;
    (token_expired || resume_refused).then(|| StreamState {
        sync_token: None,
        cursor: if token_expired {
            None
        } else {
            before.cursor.clone()
        },
        resume: None,
        listed_all_at: before.listed_all_at,
    })
}
