//! Running a connector: request → page → records → map → validate → store, page by page.
//!
//! Everything a run needs is compiled once ([`CompiledConnector`], in `plan`); then each root
//! stream's pages are fetched in turn (`fetch`). Each pass over a stream decides where it starts
//! and what each page's checkpoint is (`pass`). A page is mapped as it arrives and queued for
//! the writer task (`writer`), which writes pages in order while the next ones are fetched; the
//! queue is short, so memory holds a few pages (per level of substreams), however long the
//! stream.

mod content;
mod error;
mod fetch;
mod import;
mod pass;
mod plan;
mod session;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{StreamExt, stream};
use serde_json::{Map, Value};

pub use error::{RunReport, SyncError, SyncErrorKind};
pub use plan::CompiledConnector;

use fetch::{Budget, Fetcher, Started, Tally};
use pass::{PassState, full_pass_after};
use plan::CompiledStream;
use writer::WriteQueue;

use crate::account::Integration;
use crate::decode::document::{Node, token_text};
use crate::events::{Counters, Event, Observer};
use crate::extract::Target;
use crate::http::{Authorizer, HttpClient, HttpError, HttpRequest};
use crate::map::{CompiledValue, Lazy, Mapped, PageScope, RecordFields, RecordMapper};
use crate::record::Provenance;
use crate::source::Source;
use crate::source::archive::Export;
use crate::source::http::listing::Listing;
use crate::source::http::paginate::NextPageError;
use crate::source::http::request::RequestError;
use crate::source::http::{HttpPlan, HttpSource, Page};
use crate::state::{Checkpoint, PageCursor, StreamState};
use crate::store::{Batch, RunScope, RunStatus, RunTotals, Sink, StoreError, Sweep};
use crate::template::Templates;

/// One run of a connector for one integration.
pub struct SyncRun<'a, S: Sink> {
    fetcher: Fetcher<'a>,
    sink: S,
    scope: Arc<RunScope>,
    /// This run's id; a pass that starts in this run is numbered by it.
    run_id: i64,
    writer: WriteQueue,
    /// The streams and substream partitions that failed so far while the run went on.
    failures: std::sync::Mutex<Vec<SyncError>>,
    /// Where records' content goes; without one, content is owed but not downloaded.
    blobs: Option<crate::blobs::BlobStore>,
}

type StreamFuture<'f> = Pin<Box<dyn Future<Output = Result<Ended, SyncError>> + Send + 'f>>;

/// How a stream (partition) that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It and everything its records led to were imported.
    Complete,
    /// Its own records were imported, but a substream partition under it failed (noted in the
    /// run's failures). Its pass stored no checkpoint from the page whose children failed on,
    /// so the next run resumes there.
    ChildrenFailed,
}

/// The stream (partition) a pass walks: what each step of its pages needs.
struct Walk<'w> {
    /// The stream's name, for errors and events.
    name: &'w str,
    /// The same, shared by its batches.
    shared_name: Arc<str>,
    stream: &'w CompiledStream,
    /// `parent` in templates (`()` for a root stream).
    parent: minijinja::Value,
    /// `entry` in templates: the export's file the page was read from (archive streams).
    entry: Option<minijinja::Value>,
    /// The export's files copied with the page (archive streams whose content is the file).
    copied: Vec<crate::source::archive::CopiedEntry>,
    /// For an archive stream with `dedupe`: the ids written so far in this import (hashed), so
    /// that a copy of a record read again is skipped.
    written: Option<std::sync::Mutex<std::collections::HashSet<u64>>>,
    /// Where its checkpoint is kept: `""` for a root stream, else the parent's fields.
    partition: String,
    /// How deep in its own recursion.
    depth: u8,
}

/// What a failed request of a stream leads to, when it does not fail the stream.
enum Recovery {
    /// The record the request was about is gone (the stream's `gone`): its id.
    Gone(String),
    /// The provider refused what the pass sent: a full pass starts instead.
    FullPass(Box<PassState>),
}

impl<'a, S: Sink> SyncRun<'a, S> {
    /// Prepares a run.
    pub fn new(
        connector: &'a CompiledConnector,
        integration: &Integration,
        http: &'a HttpClient,
        auth: &'a dyn Authorizer,
        observer: &'a dyn Observer,
        sink: S,
    ) -> Self {
        let fetcher = Fetcher {
            connector,
            http,
            auth,
            tally: Tally {
                counters: Counters::default(),
                inner: observer,
            },
            provenance: Provenance::new(
                &integration.user_id,
                &integration.integration_id,
                &connector.spec.id,
            ),
            config: minijinja::Value::from(minijinja::value::Serde(&integration.config)),
            secrets: minijinja::Value::from(minijinja::value::Serde(&integration.secrets)),
            budget: Budget::new(&connector.spec.limits),
            sessions: std::sync::Mutex::default(),
        };
        Self {
            scope: Arc::new(RunScope {
                platform: Arc::from(connector.spec.id.as_str()),
                user_id: Arc::from(integration.user_id.as_str()),
                integration_id: Arc::from(integration.integration_id.as_str()),
                worker: None,
            }),
            fetcher,
            sink,
            run_id: 0,
            writer: WriteQueue::idle(),
            failures: std::sync::Mutex::default(),
            blobs: None,
        }
    }

    /// Downloads records' content (the streams' `content`) into `blobs` after the listing.
    pub fn with_blobs(mut self, blobs: crate::blobs::BlobStore) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// Names the process that runs this sync (kept with the run in the store).
    pub fn by_worker(mut self, worker: &str) -> Self {
        Arc::make_mut(&mut self.scope).worker = Some(Arc::from(worker));
        self
    }

    /// Runs the named root streams (every root stream when `only` is empty), with their
    /// substreams.
    ///
    /// One stream's failure does not end the others: each root stream and each substream
    /// partition runs to its own end, and the report lists those that failed (the run is
    /// `partial`). The run fails (`Err`) when nothing imported to the end (every root stream it
    /// ran failed), or when a failure ends every stream (refused credentials, a failing store);
    /// pages imported before it stay imported either way.
    pub async fn run(&mut self, only: &[String]) -> Result<RunReport, SyncError> {
        let roots = self.roots(only, false)?;
        if roots.is_empty() {
            return Err(self.fetcher.error(
                "",
                None,
                SyncErrorKind::WrongSource(
                    "the connector reads only data exports, and has nothing to sync",
                ),
            ));
        }
        self.execute(&roots, None).await
    }

    /// Imports a data export: the named root streams that read an archive (every one when
    /// `only` is empty), from `export`. Everything else is as in [`SyncRun::run`]: pages mapped
    /// and written as they are read, a checkpoint with each, failures per stream.
    pub async fn import(
        &mut self,
        export: std::sync::Arc<Export>,
        only: &[String],
    ) -> Result<RunReport, SyncError> {
        let roots = self.roots(only, true)?;
        if roots.is_empty() {
            return Err(self.fetcher.error(
                "",
                None,
                SyncErrorKind::WrongSource("the connector has no stream that reads a data export"),
            ));
        }
        self.execute(&roots, Some(&export)).await
    }

    /// The root streams a run takes: those named in `only` (every one when it is empty) that
    /// read an export (`archive`) or the API (not).
    #[allow(clippy::result_large_err, reason = "made once a run")]
    fn roots(&self, only: &[String], archive: bool) -> Result<Vec<String>, SyncError> {
        let connector = self.fetcher.connector;
        for name in only {
            let Some(stream) = connector.streams.get(name) else {
                return Err(self.fetcher.error(name, None, SyncErrorKind::UnknownStream));
            };
            if stream.requests().is_none() != archive {
                return Err(self.fetcher.error(
                    name,
                    None,
                    SyncErrorKind::WrongSource(if archive {
                        "the stream reads the provider's API, not a data export"
                    } else {
                        "the stream reads a data export, not the provider's API"
                    }),
                ));
            }
        }
        Ok(connector
            .root_streams()
            .filter(|name| only.is_empty() || only.iter().any(|wanted| wanted == name))
            // A stream with a session waits for a person: it runs when asked for by name.
            .filter(|name| {
                !only.is_empty()
                    || connector
                        .streams
                        .get(*name)
                        .is_none_or(|stream| stream.session.is_none())
            })
            .filter(|name| {
                connector
                    .streams
                    .get(*name)
                    .is_some_and(|stream| stream.requests().is_none() == archive)
            })
            .map(str::to_owned)
            .collect())
    }

    /// Runs `roots` (from `export`, for an import), bookkeeping included.
    async fn execute(
        &mut self,
        roots: &[String],
        export: Option<&std::sync::Arc<Export>>,
    ) -> Result<RunReport, SyncError> {
        // Run bookkeeping belongs to no stream.
        self.run_id = self
            .sink
            .start_run(&self.scope)
            .await
            .map_err(|error| self.fetcher.error("", None, error.into()))?;
        self.writer = WriteQueue::start(self.sink.clone());
        let mut fatal = None;
        let mut imported = 0;
        let mut opened = Vec::new();
        // An import reads the streams that read the same files in one pass of the export.
        let groups = match export {
            Some(_) => plan::read_groups(&self.fetcher.connector.spec, roots),
            None => roots.iter().map(|name| vec![name.clone()]).collect(),
        };
        'groups: for group in groups {
            let outcomes = match export {
                Some(export) => self.import_streams(&group, export).await,
                None => {
                    let name = &group[0];
                    let ran = match self.open_session_of(name).await {
                        Ok(session) => {
                            opened.extend(session);
                            self.run_stream(name, minijinja::Value::from(()), String::new(), 0)
                                .await
                                .map(|_| ())
                        }
                        Err(error) => Err(error),
                    };
                    vec![(name.clone(), ran)]
                }
            };
            for (_, ran) in outcomes {
                match ran {
                    Ok(()) => imported += 1,
                    Err(error) if error.ends_run() => {
                        fatal = Some(error);
                        break 'groups;
                    }
                    Err(error) => self.failed(error),
                }
            }
        }
        // Pages mapped before a failure are still written: what was imported stays imported.
        if let Err((stream, error)) = self.writer.finish(&self.fetcher.tally).await {
            // The writer's own error explains why the run stopped.
            fatal = Some(self.fetcher.error(&stream, None, error.into()));
        }
        // Content is downloaded once the records that owe it are stored (with what earlier
        // runs left owed); a download that fails stays owed and fails no stream.
        if fatal.is_none()
            && let Some(blobs) = &self.blobs
            && let Err(error) = self.download_content(blobs).await
        {
            fatal = Some(self.fetcher.error("", None, error.into()));
        }
        // The sessions' media stay reachable until their downloads are done.
        for session in &opened {
            self.fetcher.close_session(session).await;
        }
        let mut failed = std::mem::take(
            self.failures
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let result = match fatal {
            Some(error) => Err(error),
            None if imported == 0 && !failed.is_empty() => Err(failed.remove(0)),
            None => Ok(RunReport { failed }),
        };
        let counted = self.fetcher.tally.counters.totals();
        let totals = RunTotals {
            pages: counted.pages,
            requests: counted.requests,
            written: counted.written,
        };
        let (status, message) = match &result {
            Ok(report) => (report.status(), report.summary()),
            Err(error) => (RunStatus::Failed, Some(error.to_string())),
        };
        let finished = self
            .sink
            .finish_run(self.run_id, &totals, status, message.as_deref())
            .await;
        match (result, finished) {
            (Err(error), _) => Err(error),
            (Ok(_), Err(error)) => Err(self.fetcher.error("", None, error.into())),
            (Ok(report), Ok(())) => Ok(report),
        }
    }

    /// Opens stream `name`'s session, if it has one, for its requests to see.
    async fn open_session_of(&self, name: &str) -> Result<Option<session::OpenSession>, SyncError> {
        let Some(compiled) = self
            .fetcher
            .connector
            .streams
            .get(name)
            .and_then(|stream| stream.session.as_ref())
        else {
            return Ok(None);
        };
        let opened = self.fetcher.open_session(name, compiled).await?;
        self.fetcher
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), opened.value.clone());
        Ok(Some(opened))
    }

    /// Makes the downloads the integration owes into `blobs`.
    async fn download_content(&self, blobs: &crate::blobs::BlobStore) -> Result<(), StoreError> {
        let connector = self.fetcher.connector;
        let context = minijinja::context! {
            config => self.fetcher.config.clone(),
            secrets => self.fetcher.secrets.clone(),
        };
        let headers = connector
            .headers
            .iter()
            .filter_map(|(name, template)| {
                // A header that does not render is left out, as a request would fail on it.
                let value = connector.templates.render(template, &context).ok()?;
                Some((name.clone(), value))
            })
            .collect();
        content::Downloader {
            http: self.fetcher.http,
            auth: self.fetcher.auth,
            observer: &self.fetcher.tally,
            sink: &self.sink,
            blobs,
            scope: &self.scope,
            headers,
            budget: &self.fetcher.budget,
            counters: &self.fetcher.tally.counters,
            connector,
            config: &self.fetcher.config,
        }
        .run()
        .await
    }

    /// Notes a stream (partition) that failed while the run goes on.
    fn failed(&self, error: SyncError) {
        // Info, not a warning: the run reports its failed streams itself (the CLI's summary, the
        // run's stored error).
        tracing::info!(connector = %error.connector, stream = %error.stream, %error, "the stream failed; the others go on");
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(error);
    }

    /// A new pass from `before` (the last completed pass's state).
    async fn new_pass(
        &self,
        name: &str,
        stream: &CompiledStream,
        parent: &minijinja::Value,
        before: StreamState,
    ) -> Result<PassState, SyncError> {
        let mut pass = PassState::new(stream, before, self.run_id, None);
        if pass.sweeps && stream.sweeps() {
            pass.sweeps = self
                .sink
                .holds_records(&self.scope.integration_id, name)
                .await
                .map_err(|error| self.fetcher.error(name, None, error.into()))?;
        }
        pass.start_token = self.log_position(name, stream, parent, &pass).await?;
        Ok(pass)
    }

    /// For a full pass of a change-log stream: the log's current position, asked before the pass
    /// lists anything, so that whatever changes while it lists is in the next run's log.
    async fn log_position(
        &self,
        name: &str,
        stream: &CompiledStream,
        parent: &minijinja::Value,
        pass: &PassState,
    ) -> Result<Option<String>, SyncError> {
        let Some(log) = stream
            .incremental
            .as_ref()
            .and_then(|incremental| incremental.needs_start(&pass.before))
        else {
            return Ok(None);
        };
        let (request, page) = self
            .fetcher
            .fetch_from(name, stream, &log.start, parent, pass, &PageCursor::First)
            .await?;
        match log
            .start
            .records
            .first_in(page.body.root())
            .and_then(token_text)
        {
            Some(position) => Ok(Some(position)),
            None => Err(self.fetcher.error(
                name,
                Some(request.describe()),
                SyncErrorKind::Pagination(format!(
                    "the answer has no change-log position at `{}` (incremental.start_token)",
                    log.start.records.as_str()
                )),
            )),
        }
    }

    /// Loads where a stream (partition) stands: a pass to resume, or a new one from the last
    /// completed pass's state. Substreams without `incremental` keep no state: their parent's
    /// checkpoint covers them.
    async fn begin_pass(
        &self,
        name: &str,
        stream: &CompiledStream,
        parent: &minijinja::Value,
        partition: &str,
    ) -> Result<(PassState, PageCursor, bool), SyncError> {
        if !stream.keeps_state() {
            return Ok((
                PassState::new(stream, StreamState::default(), self.run_id, None),
                PageCursor::First,
                false,
            ));
        }
        let mut stored = self
            .sink
            .checkpoint(&self.scope.integration_id, name, partition)
            .await
            .map_err(|error| self.fetcher.error(name, None, error.into()))?
            .unwrap_or_default();
        let as_stored = stored.clone();
        Ok(match stored.resume.take() {
            Some(resume) => {
                let mut pass = PassState::new(stream, stored, resume.pass, resume.newest);
                pass.stored = as_stored;
                pass.sweeps = resume.sweeps;
                // The position asked when the pass began: changes since then are in the log.
                pass.start_token = match resume.start_token {
                    Some(position) => Some(position),
                    None => self.log_position(name, stream, parent, &pass).await?,
                };
                (pass, resume.page, true)
            }
            None => {
                // Time to list everything again (`reconcile`): the pass starts as a first one
                // would, sending no cursor or token, and marks what it does not see deleted.
                if stream.incremental.is_some()
                    && stored != StreamState::default()
                    && stream.reconciles_now(&stored, jiff::Timestamp::now())
                {
                    tracing::info!(connector = %self.fetcher.connector.spec.id, stream = name, "listing everything again (`reconcile`): what is not listed is marked deleted");
                    stored = StreamState {
                        listed_all_at: stored.listed_all_at,
                        ..StreamState::default()
                    };
                }
                // A kept page token (Dropbox's cursor) continues the listing where the last
                // completed pass ended.
                let start = stream
                    .incremental
                    .as_ref()
                    .and_then(|incremental| incremental.continues_from(&stored))
                    .zip(stream.requests())
                    .map_or(PageCursor::First, |(token, listing)| {
                        listing.paginator.continue_at(token)
                    });
                (
                    self.new_pass(name, stream, parent, stored).await?,
                    start,
                    false,
                )
            }
        })
    }

    /// Runs one stream (partition) to its end: a root stream once, a substream once per parent
    /// record, a recursing stream again for its own records while `depth` allows.
    fn run_stream<'f>(
        &'f self,
        name: &'f str,
        parent: minijinja::Value,
        partition: String,
        depth: u8,
    ) -> StreamFuture<'f>
    where
        'a: 'f,
    {
        Box::pin(async move {
            let Some(stream) = self.fetcher.connector.streams.get(name) else {
                return Err(self.fetcher.error(name, None, SyncErrorKind::UnknownStream));
            };
            let walk = Walk {
                name,
                shared_name: Arc::from(name),
                stream,
                parent,
                entry: None,
                copied: Vec::new(),
                written: None,
                partition,
                depth,
            };
            self.walk(&walk).await
        })
    }

    /// Walks a stream (partition)'s pages, from where it stands to its last page.
    ///
    /// Each page: fetched (the next one already under way when the stream has no children),
    /// its records picked out, the next page told, the checkpoint made, the records mapped and
    /// queued for the writer, then the page's substreams and recursion run.
    async fn walk(&self, walk: &Walk<'_>) -> Result<Ended, SyncError> {
        let (name, stream, parent) = (walk.name, walk.stream, &walk.parent);
        let (mut pass, mut cursor, mut resumed) = self
            .begin_pass(name, stream, parent, &walk.partition)
            .await?;
        pass.pages.start(&cursor);
        let mut fetched = self
            .fetcher
            .fetch(name, stream, parent, &pass, &cursor)
            .await;
        let mut ended = Ended::Complete;
        loop {
            let read = match fetched {
                Ok(fetched) => fetched,
                Err(error) => match self.recover(walk, &pass, &cursor, resumed, error).await? {
                    Recovery::Gone(id) => {
                        self.send_tombstone(walk, id).await?;
                        return Ok(Ended::Complete);
                    }
                    Recovery::FullPass(fresh) => {
                        pass = *fresh;
                        cursor = PageCursor::First;
                        pass.pages.start(&cursor);
                        resumed = false;
                        fetched = self
                            .fetcher
                            .fetch(name, stream, parent, &pass, &cursor)
                            .await;
                        continue;
                    }
                },
            };
            resumed = false;
            let Some(listing) = stream.listing(&pass) else {
                return Err(self.fetcher.error(
                    name,
                    None,
                    SyncErrorKind::WrongSource(
                        "the stream reads a data export, not the provider's API",
                    ),
                ));
            };
            let body = Target::new(HttpSource::body(&read).root());
            let records = self.records_of(name, listing, &body);
            let next = self.next_page(name, stream, listing, &cursor, &read, records.len())?;
            // Paging that loops or never ends: this page is still imported, then the stream
            // stops (its checkpoint at the next page, where a later run may go on).
            let looping = next.as_ref().and_then(|next| {
                let limit = self.fetcher.connector.spec.limits.max_pages;
                pass.pages.follow(next, limit).err().map(|problem| {
                    self.fetcher.error(
                        name,
                        Some(HttpSource::origin(&read)),
                        SyncErrorKind::Pagination(problem),
                    )
                })
            });
            pass.see(stream, &records);
            let (checkpoint, sweeps) = pass.after_page(
                stream,
                &walk.shared_name,
                &walk.partition,
                next.as_ref(),
                body.node(),
            );

            // The next page is requested before this one is mapped: its exchange is its own
            // task (see `HttpClient::fetch`), so its body arrives while this page is mapped and
            // queued (it is decoded when awaited, on this task). One page is read ahead, no
            // more. A stream with substreams or recursion asks for its next page only after this
            // page's children: they take longer than any page, and the provider sees requests in
            // the order a reader would make them.
            let prefetch = match &next {
                Some(next) if !stream.has_children() && looping.is_none() => Some(
                    Started::start(self.fetcher.fetch(name, stream, parent, &pass, next)).await,
                ),
                _ => None,
            };

            // Mapped pages go to the writer task and are written while the next ones are
            // fetched and mapped; the queue is short, so memory stays a few pages. A stream with
            // substreams stores its checkpoint after theirs, so that a resumed pass never skips
            // a child that was not stored; once a child failed, the pass stores no checkpoint at
            // all (nor the sweep that completes it), and the next run resumes before that page.
            if !stream.has_children() {
                self.store_page(walk, &pass, &records, body.node(), checkpoint, sweeps)
                    .await?;
            } else {
                self.store_page(walk, &pass, &records, body.node(), None, vec![])
                    .await?;
                if self.run_children(walk, &records).await? == Ended::ChildrenFailed {
                    ended = Ended::ChildrenFailed;
                }
                if ended == Ended::Complete && (checkpoint.is_some() || !sweeps.is_empty()) {
                    let batch = Batch {
                        checkpoint,
                        sweeps,
                        ..self.batch(&walk.shared_name)
                    };
                    self.send(name, batch).await?;
                }
            }

            if let Some(error) = looping {
                return Err(error);
            }
            let Some(next) = &next else {
                return Ok(ended); // the last page
            };
            fetched = match prefetch {
                Some(prefetch) => prefetch.finish().await,
                None => self.fetcher.fetch(name, stream, parent, &pass, next).await,
            };
            cursor = next.clone();
        }
    }

    /// What a failed request of a stream leads to: the record it was about is gone, a full pass
    /// starts instead, or (`Err`) the stream fails.
    async fn recover(
        &self,
        walk: &Walk<'_>,
        pass: &PassState,
        cursor: &PageCursor,
        resumed: bool,
        error: SyncError,
    ) -> Result<Recovery, SyncError> {
        let (name, stream) = (walk.name, walk.stream);
        let gone = self
            .gone(stream, &error, cursor, &walk.parent)
            .map_err(|render| {
                self.fetcher
                    .error(name, error.request.clone(), render.into())
            })?;
        if let Some(id) = gone {
            tracing::info!(connector = %self.fetcher.connector.spec.id, stream = name, %error, id, "the record is gone; marking it deleted");
            return Ok(Recovery::Gone(id));
        }
        let Some(before) = full_pass_after(&error, stream, &pass.before, resumed) else {
            return Err(error);
        };
        tracing::warn!(connector = %self.fetcher.connector.spec.id, stream = name, %error, "starting a full pass");
        let pass = self.new_pass(name, stream, &walk.parent, before).await?;
        Ok(Recovery::FullPass(Box::new(pass)))
    }

    /// The records of a page, where the listing's `records` path finds them.
    fn records_of<'p>(
        &self,
        name: &str,
        listing: &Listing,
        body: &Target<'p, '_>,
    ) -> Vec<&'p Node<'p>> {
        let mut records = Vec::new();
        listing
            .records
            .for_each(body, |record| records.push(record));
        self.fetcher.tally.event(&Event::Page {
            stream: name,
            records: records.len(),
        });
        records
    }

    /// The page after the one at `cursor` (read as `read`, with `records` records), or `None`
    /// after the last.
    #[allow(
        clippy::result_large_err,
        reason = "an error ends the stream: made at most once a stream"
    )]
    fn next_page(
        &self,
        name: &str,
        stream: &CompiledStream,
        listing: &Listing,
        cursor: &PageCursor,
        read: &(HttpRequest, Page),
        records: usize,
    ) -> Result<Option<PageCursor>, SyncError> {
        let plan = HttpPlan {
            listing,
            decoder: &stream.decoder,
            max_body: stream.max_body,
        };
        self.fetcher
            .source()
            .next(&plan, cursor, read, records)
            .map_err(|error| {
                let NextPageError::StopWhen(_) = error;
                self.fetcher.error(
                    name,
                    Some(HttpSource::origin(read)),
                    SyncErrorKind::Template(error.to_string()),
                )
            })
    }

    /// An empty batch of this run's stream `name`, to fill.
    fn batch(&self, name: &Arc<str>) -> Batch {
        Batch {
            scope: Arc::clone(&self.scope),
            stream: Arc::clone(name),
            model: None,
            records: vec![],
            rejects: vec![],
            seen_in_pass: None,
            checkpoint: None,
            sweeps: vec![],
            downloads: vec![],
            stored: vec![],
        }
    }

    /// Maps a page's records and queues them for the writer, with `checkpoint` and `sweeps`.
    /// A page of a stream without a model queues only what moves its checkpoint.
    async fn store_page(
        &self,
        walk: &Walk<'_>,
        pass: &PassState,
        records: &[&Node<'_>],
        body: &Node<'_>,
        checkpoint: Option<Checkpoint>,
        sweeps: Vec<Sweep>,
    ) -> Result<(), SyncError> {
        let mut batch = Batch {
            seen_in_pass: pass.seen_in(walk.stream),
            checkpoint,
            sweeps,
            ..self.batch(&walk.shared_name)
        };
        if let Some(mapper) = &walk.stream.mapper {
            self.map_page(mapper, walk, pass, records, body, &mut batch);
        }
        if let Some(written) = &walk.written {
            // The first copy stands (see `archive.dedupe`).
            let mut written = written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            batch.records.retain(|record| {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                record.id.hash(&mut hasher);
                written.insert(hasher.finish())
            });
            // And the copies' files: the first copy's stands (its stored content was pushed
            // first), a skipped copy's would overwrite it.
            let kept: std::collections::HashSet<&Arc<str>> =
                batch.records.iter().map(|record| &record.id).collect();
            let mut referred = std::collections::HashSet::new();
            batch.stored.retain(|stored| {
                kept.contains(&stored.id)
                    && referred.insert((stored.id.clone(), stored.part.clone()))
            });
        }
        if batch.model.is_some() || batch.checkpoint.is_some() || !batch.sweeps.is_empty() {
            self.send(walk.name, batch).await?;
        }
        Ok(())
    }

    /// Maps a page's records into `batch`, with a tombstone for each id a change log names as
    /// deleted.
    fn map_page(
        &self,
        mapper: &RecordMapper,
        walk: &Walk<'_>,
        pass: &PassState,
        records: &[&Node<'_>],
        body: &Node<'_>,
        batch: &mut Batch,
    ) {
        let templates = &self.fetcher.connector.templates;
        let provenance = &self.fetcher.provenance;
        batch.model = Some(mapper.model());
        batch.records.reserve(records.len());
        let mut scope =
            PageScope::new(&walk.parent, &self.fetcher.config).with_entry(walk.entry.as_ref());
        for raw in records {
            match mapper.map(raw, &mut scope, provenance, templates) {
                Mapped::Record(record) => {
                    let record: crate::record::StoredRecord = record.into();
                    if !record.deleted {
                        for content in &walk.stream.content {
                            if content.is_entry() {
                                self.refer_copied(content, walk, &record.id, raw, batch);
                            } else {
                                self.owe_content(content, &record.id, raw, batch);
                            }
                        }
                    }
                    batch.records.push(record);
                }
                Mapped::Rejected(reject) => batch.rejects.push(reject),
            }
        }
        // A change log names the records it deleted by id alone.
        if let Some(deleted_ids) = walk
            .stream
            .reads_log(pass)
            .and_then(|log| log.deleted_ids.as_ref())
        {
            deleted_ids.for_each(&Target::new(body), |id| {
                if let Some(id) = token_text(id) {
                    batch
                        .records
                        .push(RecordMapper::tombstone(id, provenance).into());
                }
            });
        }
    }

    /// Adds what `raw`'s content owes to `batch`; a download that cannot be rendered is noted
    /// (the record is stored; its content is not owed).
    fn owe_content(
        &self,
        content: &content::CompiledContent,
        id: &Arc<str>,
        raw: &Node<'_>,
        batch: &mut Batch,
    ) {
        let connector = self.fetcher.connector;
        match content.due(
            id,
            raw,
            &self.fetcher.config,
            connector
                .spec
                .base_url
                .as_ref()
                .map_or("", |url| url.as_str()),
            &connector.templates,
        ) {
            Ok(due) => batch.downloads.extend(due),
            Err(error) => tracing::warn!(
                connector = %self.scope.platform,
                stream = %batch.stream,
                record = %id,
                part = content.part(),
                %error,
                "the record is stored, but its content cannot be requested"
            ),
        }
    }

    /// Adds to `batch` the reference of `raw`'s record to its file, copied with the page (an
    /// export's file whose record it is); a file not copied is noted (the record is stored
    /// without it).
    fn refer_copied(
        &self,
        content: &content::CompiledContent,
        walk: &Walk<'_>,
        id: &Arc<str>,
        raw: &Node<'_>,
        batch: &mut Batch,
    ) {
        let connector = self.fetcher.connector;
        match content.copied(
            id,
            raw,
            &walk.copied,
            &self.fetcher.config,
            &connector.templates,
        ) {
            Ok(Some(stored)) => batch.stored.push(stored),
            // Without a blob store (`--no-content`) nothing is copied, and nothing is missed.
            Ok(None) if self.blobs.is_none() => {}
            Ok(None) => tracing::warn!(
                connector = %self.scope.platform,
                stream = %batch.stream,
                record = %id,
                "the record is stored without its file, which is larger than the content's `max_bytes`"
            ),
            Err(error) => tracing::warn!(
                connector = %self.scope.platform,
                stream = %batch.stream,
                record = %id,
                %error,
                "the record is stored without its file"
            ),
        }
    }

    /// Those of `records` for which condition `when` (the spec's `what`) is true; all of them
    /// without one. The error is the condition's, named.
    fn those_where<'n>(
        &self,
        when: Option<&crate::template::TemplateId>,
        what: &str,
        records: &[&'n Node<'n>],
    ) -> Result<Vec<&'n Node<'n>>, String> {
        let Some(when) = when else {
            return Ok(records.to_vec());
        };
        let mut chosen = Vec::with_capacity(records.len());
        for raw in records {
            let context = minijinja::context! { record => minijinja::Value::from(minijinja::value::Serde(raw)) };
            let templates = &self.fetcher.connector.templates;
            if templates
                .test(when, &context)
                .map_err(|error| format!("{what}: {error}"))?
            {
                chosen.push(*raw);
            }
        }
        Ok(chosen)
    }

    /// Runs what a page's records lead to: each substream once per record (a few parent records
    /// at a time), and the stream itself again for the records its `recurse` follows.
    async fn run_children(
        &self,
        walk: &Walk<'_>,
        records: &[&Node<'_>],
    ) -> Result<Ended, SyncError> {
        let (name, stream) = (walk.name, walk.stream);
        let connector = self.fetcher.connector;
        let mut ended = Ended::Complete;
        for child_name in &stream.children {
            let Some(child) = connector.streams.get(child_name) else {
                continue;
            };
            let parents = self
                .those_where(child.parent_when.as_ref(), "parent.when", records)
                .map_err(|error| {
                    self.fetcher
                        .error(child_name, None, SyncErrorKind::Template(error))
                })?;
            let child_ended = self
                .run_for_each(
                    child_name,
                    &child.parent_fields,
                    &parents,
                    child.concurrency,
                    0,
                )
                .await?;
            if child_ended == Ended::ChildrenFailed {
                ended = Ended::ChildrenFailed;
            }
        }
        let Some(recurse) = stream
            .recurse
            .as_ref()
            .filter(|recurse| walk.depth < recurse.max_depth)
        else {
            return Ok(ended);
        };
        let followed = self
            .those_where(recurse.when.as_ref(), "recurse.when", records)
            .map_err(|error| {
                self.fetcher
                    .error(name, None, SyncErrorKind::Template(error))
            })?;
        let recursed = self
            .run_for_each(
                name,
                &recurse.fields,
                &followed,
                stream.concurrency,
                walk.depth + 1,
            )
            .await?;
        Ok(if recursed == Ended::ChildrenFailed {
            Ended::ChildrenFailed
        } else {
            ended
        })
    }

    /// Runs stream `name` once for each of `records`, as its parent (the `parent` value and the
    /// partition key come from `fields`), `concurrency` at a time. A partition that fails is
    /// noted and the others go on (`ChildrenFailed`); a failure that ends the run starts no more
    /// partitions and is returned once those under way have ended.
    async fn run_for_each(
        &self,
        name: &str,
        fields: &[(String, CompiledValue)],
        records: &[&Node<'_>],
        concurrency: usize,
        depth: u8,
    ) -> Result<Ended, SyncError> {
        let templates = &self.fetcher.connector.templates;
        let mut parents = Vec::with_capacity(records.len());
        let mut ended = Ended::Complete;
        for raw in records {
            match parent_value(fields, raw, &self.fetcher.config, templates) {
                Ok(parent) => parents.push(parent),
                Err(error) => {
                    self.failed(
                        self.fetcher
                            .error(name, None, SyncErrorKind::Template(error)),
                    );
                    ended = Ended::ChildrenFailed;
                }
            }
        }
        // A record named twice on a page (a change log lists a message once per change) runs its
        // children once.
        let mut seen = std::collections::HashSet::with_capacity(parents.len());
        parents.retain(|(_, partition)| seen.insert(partition.clone()));
        let fatal = std::sync::Mutex::new(None::<SyncError>);
        let incomplete = std::sync::atomic::AtomicBool::new(false);
        let lock = || {
            fatal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        stream::iter(parents)
            .for_each_concurrent(concurrency, |(parent, partition)| async {
                if lock().is_some() {
                    return;
                }
                match self.run_stream(name, parent, partition, depth).await {
                    Ok(Ended::Complete) => {}
                    Ok(Ended::ChildrenFailed) => incomplete.store(true, Ordering::Relaxed),
                    Err(error) if error.ends_run() => {
                        lock().get_or_insert(error);
                    }
                    Err(error) => {
                        self.failed(error);
                        incomplete.store(true, Ordering::Relaxed);
                    }
                }
            })
            .await;
        if let Some(error) = lock().take() {
            return Err(error);
        }
        if incomplete.into_inner() {
            ended = Ended::ChildrenFailed;
        }
        Ok(ended)
    }

    /// The id of the record a failed first request of `stream` was fetching, when the failure
    /// says that record is gone (the stream's `gone`).
    fn gone(
        &self,
        stream: &CompiledStream,
        error: &SyncError,
        cursor: &PageCursor,
        parent: &minijinja::Value,
    ) -> Result<Option<String>, RequestError> {
        let (Some(gone), SyncErrorKind::Http(HttpError::Status { status, .. })) =
            (&stream.gone, &error.kind)
        else {
            return Ok(None);
        };
        if *cursor != PageCursor::First || !gone.on.contains(status) {
            return Ok(None);
        }
        let context = minijinja::context! {
            parent => parent.clone(),
            config => self.fetcher.config.clone(),
        };
        let id = self
            .fetcher
            .connector
            .templates
            .render(&gone.id, &context)?;
        let id = id.trim();
        Ok((!id.is_empty()).then(|| id.to_owned()))
    }

    /// Marks the record with provider id `id` deleted.
    async fn send_tombstone(&self, walk: &Walk<'_>, id: String) -> Result<(), SyncError> {
        let Some(mapper) = &walk.stream.mapper else {
            return Ok(()); // refused by validation: `gone` needs a model
        };
        let batch = Batch::records(
            Arc::clone(&self.scope),
            Arc::clone(&walk.shared_name),
            mapper.model(),
            vec![RecordMapper::tombstone(id, &self.fetcher.provenance)],
            vec![],
        );
        self.send(walk.name, batch).await
    }

    /// Queues a batch for the writer.
    async fn send(&self, name: &str, batch: Batch) -> Result<(), SyncError> {
        self.writer
            .send(batch, &self.fetcher.tally)
            .await
            .map_err(|()| {
                self.fetcher.error(
                    name,
                    None,
                    SyncErrorKind::Store(StoreError::Writer("stopped".to_owned())),
                )
            })
    }
}

/// The `parent` a child sees (its declared fields, taken from one parent record), and the
/// partition key its checkpoints are stored under (those fields as JSON).
fn parent_value(
    fields: &[(String, CompiledValue)],
    record: &Node<'_>,
    config: &minijinja::Value,
    templates: &Templates,
) -> Result<(minijinja::Value, String), String> {
    let none = minijinja::Value::from(());
    let context = Lazy::new(record, &RecordFields::All, &none, config);
    let target = Target::new(record);
    let mut values = Map::new();
    for (name, source) in fields {
        let value = source
            .value(&target, &context, templates)
            .map_err(|error| format!("parent field `{name}`: {error}"))?;
        values.insert(
            name.clone(),
            value.map_or(Value::Null, std::borrow::Cow::into_owned),
        );
    }
    let partition = serde_json::to_string(&values).unwrap_or_default();
    Ok((
        minijinja::Value::from(minijinja::value::Serde(values)),
        partition,
    ))
}
