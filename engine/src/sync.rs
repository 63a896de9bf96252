//! Running a connector: request → page → records → map → validate → store, page by page.
//!
//! Everything a run needs is compiled once ([`CompiledConnector`]); then each root stream's pages
//! are fetched in turn. A page is mapped as it arrives and queued for the writer task, which writes
//! pages in order while the next ones are fetched; the queue is short, so memory holds a few pages
//! (per level of substreams), however long the stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{TryStreamExt, stream};
use indexmap::IndexMap;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::document::{Node, token_text};
use crate::events::{Counters, Event, Observer, WriteCounts};
use crate::extract::{CompiledPath, Target};
use crate::http::{Authorizer, HttpClient, HttpError, HttpRequest, Page};
use crate::incremental::{ChangeLog, CompiledIncremental};
use crate::listing::Listing;
use crate::map::{
    BuildError, Lazy, Mapped, PageScope, Provenance, RecordFields, RecordMapper, Source,
};
use crate::paginate::{PageCursor, PageRequest};
use crate::request::{Injection, RequestError};
use crate::spec::{ConnectorSpec, Decode};
use crate::store::{
    Batch, Checkpoint, Resume, RunScope, RunTotals, Sink, StoreError, StreamState, Sweep,
};
use crate::template::{TemplateId, Templates};

#[derive(Debug)]
struct CompiledStream {
    /// The stream's own request, paging and records.
    listing: Listing,
    decode: Decode,
    mapper: Option<RecordMapper>,
    /// This stream's `parent.fields`, evaluated on each parent record.
    parent_fields: Vec<(String, Source)>,
    children: Vec<String>,
    is_root: bool,
    incremental: Option<CompiledIncremental>,
    unseen_deleted: bool,
    /// How many parent records' requests run at once.
    concurrency: usize,
    recurse: Option<CompiledRecurse>,
    gone: Option<CompiledGone>,
}

/// A stream's `gone`, compiled.
#[derive(Debug)]
struct CompiledGone {
    on: Vec<u16>,
    id: TemplateId,
}

/// A stream's `recurse`, compiled.
#[derive(Debug)]
struct CompiledRecurse {
    fields: Vec<(String, Source)>,
    when: Option<TemplateId>,
    max_depth: u8,
}

impl CompiledStream {
    /// Root streams keep a checkpoint (to resume, and for incremental state); substreams only
    /// when they are incremental (one per parent: Calendar's per-calendar sync tokens).
    fn has_children(&self) -> bool {
        !self.children.is_empty() || self.recurse.is_some()
    }

    fn keeps_state(&self) -> bool {
        self.is_root || self.incremental.is_some()
    }

    /// Whether a completed full pass marks what it did not see as deleted: root streams with a
    /// model that do not opt out. (Which passes are full is [`PassState::full`].)
    fn sweeps(&self) -> bool {
        self.is_root && self.unseen_deleted && self.mapper.is_some()
    }

    /// The change log `pass` reads, when it reads one instead of listing everything.
    fn reads_log(&self, pass: &PassState) -> Option<&ChangeLog> {
        self.incremental
            .as_ref()
            .and_then(|incremental| incremental.reads_log(&pass.before))
    }

    /// What `pass` lists with: a change log's own listing when it reads one, else the stream's.
    fn listing(&self, pass: &PassState) -> &Listing {
        self.reads_log(pass).map_or(&self.listing, |log| &log.log)
    }
}

/// A connector with every path, template and request compiled, ready to run many times.
#[derive(Debug)]
pub struct CompiledConnector {
    spec: Arc<ConnectorSpec>,
    templates: Templates,
    streams: IndexMap<String, CompiledStream>,
    /// The spec's `response_error`: its condition and message path.
    response_error: Option<(TemplateId, Option<CompiledPath>)>,
}

impl CompiledConnector {
    /// Compiles a loaded (and so validated) spec.
    pub fn compile(spec: Arc<ConnectorSpec>) -> Result<Self, BuildError> {
        let mut templates = Templates::default();
        let mut streams = IndexMap::with_capacity(spec.streams.len());
        for (name, stream) in &spec.streams {
            let parent_fields = match &stream.parent {
                Some(parent) => parent
                    .fields
                    .iter()
                    .map(|(field, source)| {
                        Ok((field.clone(), Source::compile(source, &mut templates)?))
                    })
                    .collect::<Result<Vec<_>, BuildError>>()?,
                None => vec![],
            };
            let children = spec
                .streams
                .iter()
                .filter(|(_, other)| {
                    other
                        .parent
                        .as_ref()
                        .is_some_and(|parent| &parent.stream == name)
                })
                .map(|(child, _)| child.clone())
                .collect();
            let compiled = CompiledStream {
                listing: Listing::compile(
                    &stream.request,
                    &stream.paginate,
                    &stream.records,
                    &spec.headers,
                    &mut templates,
                )?,
                decode: stream.decode,
                mapper: stream
                    .model
                    .map(|model| RecordMapper::compile(model, stream, &mut templates))
                    .transpose()?,
                parent_fields,
                children,
                is_root: stream.parent.is_none(),
                incremental: stream
                    .incremental
                    .as_ref()
                    .map(|incremental| {
                        CompiledIncremental::compile(incremental, &spec.headers, &mut templates)
                    })
                    .transpose()?,
                unseen_deleted: stream.unseen_deleted,
                concurrency: stream
                    .parent
                    .as_ref()
                    .map_or(1, |parent| usize::from(parent.concurrency.max(1))),
                recurse: stream
                    .recurse
                    .as_ref()
                    .map(|recurse| {
                        Ok::<_, BuildError>(CompiledRecurse {
                            fields: recurse
                                .fields
                                .iter()
                                .map(|(field, source)| {
                                    Ok((field.clone(), Source::compile(source, &mut templates)?))
                                })
                                .collect::<Result<Vec<_>, BuildError>>()?,
                            when: recurse
                                .when
                                .as_ref()
                                .map(|when| templates.add_condition(when.as_str()))
                                .transpose()?,
                            max_depth: recurse.max_depth,
                        })
                    })
                    .transpose()?,
                gone: stream
                    .gone
                    .as_ref()
                    .map(|gone| {
                        Ok::<_, BuildError>(CompiledGone {
                            on: gone.on.clone(),
                            id: templates.add(gone.id.as_str())?,
                        })
                    })
                    .transpose()?,
            };
            streams.insert(name.clone(), compiled);
        }
        let response_error = spec
            .response_error
            .as_ref()
            .map(|error| {
                Ok::<_, BuildError>((
                    templates.add_condition(error.when.as_str())?,
                    error
                        .message
                        .as_ref()
                        .map(|path| CompiledPath::compile(path.as_str()))
                        .transpose()?,
                ))
            })
            .transpose()?;
        Ok(Self {
            spec,
            templates,
            streams,
            response_error,
        })
    }

    /// The spec.
    pub fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }

    /// The streams that start a run (those without a parent), in spec order.
    pub fn root_streams(&self) -> impl Iterator<Item = &str> {
        self.streams
            .iter()
            .filter(|(_, stream)| stream.is_root)
            .map(|(name, _)| name.as_str())
    }
}

/// The connected account a run imports for, and its configuration.
#[derive(Debug, Clone)]
pub struct Integration {
    /// Who owns the records.
    pub user_id: String,
    /// The connected account's id.
    pub integration_id: String,
    /// Config values (`config.*` in templates).
    pub config: Map<String, Value>,
    /// Secret values (`secrets.*` in templates).
    pub secrets: Map<String, Value>,
}

impl Integration {
    /// An integration with `given` config and secret values, completed by the spec's defaults.
    /// Fails when a value without a default is missing.
    pub fn configure(
        spec: &ConnectorSpec,
        user_id: &str,
        integration_id: &str,
        given: &Map<String, Value>,
    ) -> Result<Self, String> {
        let mut config = Map::new();
        let mut secrets = Map::new();
        for (name, field) in &spec.config {
            let value = match (given.get(name), &field.default) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) => Value::String(default.clone()),
                (None, None) => {
                    return Err(format!("`{name}` is required: {}", field.description));
                }
            };
            if field.secret {
                secrets.insert(name.clone(), value);
            } else {
                config.insert(name.clone(), value);
            }
        }
        // Values captured during authorization are config too, though not declared.
        for (name, value) in given {
            if !spec.config.contains_key(name) {
                config.insert(name.clone(), value.clone());
            }
        }
        Ok(Self {
            user_id: user_id.to_owned(),
            integration_id: integration_id.to_owned(),
            config,
            secrets,
        })
    }

    /// `config` and `secrets` as one template context.
    pub fn credentials_context(&self) -> minijinja::Value {
        minijinja::context! {
            config => minijinja::Value::from(minijinja::value::Serde(&self.config)),
            secrets => minijinja::Value::from(minijinja::value::Serde(&self.secrets)),
        }
    }
}

/// What went wrong, where.
#[derive(Debug, thiserror::Error)]
pub enum SyncErrorKind {
    /// Sending a request.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Rendering a request.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Following the pages.
    #[error("{0}")]
    Pagination(String),
    /// Writing records.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream does not exist.
    #[error("no such stream")]
    UnknownStream,
    /// The provider answered 200 with an error inside (the spec's `response_error`).
    #[error("the provider answered with an error: {0}")]
    Provider(String),
}

/// A failed sync: which connector, stream and request, what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{connector} / {stream}{}: {kind}", request.as_ref().map(|request| format!(" / {request}")).unwrap_or_default())]
pub struct SyncError {
    /// The connector.
    pub connector: String,
    /// The stream.
    pub stream: String,
    /// The request, as `METHOD URL`, when one was involved.
    pub request: Option<String>,
    /// What happened.
    pub kind: SyncErrorKind,
}

impl SyncError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match &self.kind {
            SyncErrorKind::Http(error) => error.hint().to_owned(),
            SyncErrorKind::Request(_) => "check the integration's config values; if they are right, report it to the connector's authors".to_owned(),
            SyncErrorKind::Pagination(_) => "the provider's paging misbehaved; try again later, or report it to the connector's authors".to_owned(),
            SyncErrorKind::Store(_) => "check that the database is reachable and has free space; the sync resumes where it stopped".to_owned(),
            SyncErrorKind::UnknownStream => "run `connector validate` to list the connector's streams".to_owned(),
            SyncErrorKind::Provider(_) => "the provider's message says what it refused: check the account's access (scopes, membership) and the config values".to_owned(),
        }
    }
}

/// What a run shares between its streams: everything but the sink.
struct Fetcher<'a> {
    connector: &'a CompiledConnector,
    http: &'a HttpClient,
    auth: &'a dyn Authorizer,
    tally: Tally<'a>,
    provenance: Provenance,
    config: minijinja::Value,
    secrets: minijinja::Value,
}

/// One run of a connector for one integration.
pub struct SyncRun<'a, S: Sink> {
    fetcher: Fetcher<'a>,
    sink: S,
    scope: Arc<RunScope>,
    /// This run's id; a pass that starts in this run is numbered by it.
    run_id: i64,
    writer: WriteQueue,
}

/// Passes events on and counts them, for the run's stored totals.
struct Tally<'a> {
    counters: Counters,
    inner: &'a dyn Observer,
}

impl Observer for Tally<'_> {
    fn event(&self, event: &Event<'_>) {
        self.counters.event(event);
        self.inner.event(event);
    }
}

/// What one pass over a stream (partition) sends and has seen so far.
struct PassState {
    /// The state as last stored (resume point included): when the stream began, then as each
    /// queued checkpoint leaves it.
    stored: StreamState,
    /// The state the pass started from (stored by the last completed pass).
    before: StreamState,
    /// The pass id: the run that began it.
    pass: i64,
    /// The incremental value it sends.
    injection: Option<Injection>,
    /// `state` in templates.
    template_state: minijinja::Value,
    /// The newest cursor value seen so far.
    newest: Option<Value>,
    /// Whether the pass, completed, marks what it did not see as deleted. Only a pass that lists
    /// everything may (it sends no cursor or token and continues no earlier listing: every pass
    /// of a full-refresh stream, an incremental stream's first pass and its pass after a reset),
    /// and only when the stream held records as it began: a first import has nothing to sweep,
    /// so it keeps no list of the ids it sees.
    sweeps: bool,
    /// For a full pass of a change-log stream: the log's position asked before the pass listed
    /// anything, kept when the pass completes.
    start_token: Option<String>,
}

impl PassState {
    fn new(stream: &CompiledStream, before: StreamState, pass: i64, newest: Option<Value>) -> Self {
        let incremental = stream.incremental.as_ref();
        let injection = incremental.and_then(|incremental| incremental.injection(&before));
        let continues = incremental.is_some_and(|incremental| {
            incremental.continues_from(&before).is_some()
                || incremental.reads_log(&before).is_some()
        });
        Self {
            stored: before.clone(),
            sweeps: injection.is_none() && !continues,
            start_token: None,
            injection,
            template_state: CompiledIncremental::template_state(incremental, &before),
            before,
            pass,
            newest,
        }
    }
}

/// How many mapped pages may wait for the writer, and how many it commits together at most:
/// enough to make a commit worth its cost, few enough that memory stays a handful of pages (a
/// mapped page of 100 records is about 100 KB). With the store's 16 KiB SQLite pages, eight a
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

/// The stream whose page could not be written, and why.
type WriteFailure = (Arc<str>, StoreError);

/// Pages on their way to the sink. The writer is its own task, so the database works on one core
/// while pages are fetched, decoded and mapped on the other; it writes pages in the order they
/// were sent.
struct WriteQueue {
    sender: Option<mpsc::Sender<Batch>>,
    written: std::sync::Mutex<mpsc::UnboundedReceiver<WriteCounts>>,
    task: Option<JoinHandle<Result<(), WriteFailure>>>,
}

impl WriteQueue {
    fn idle() -> Self {
        let (_, written) = mpsc::unbounded_channel();
        Self {
            sender: None,
            written: std::sync::Mutex::new(written),
            task: None,
        }
    }

    fn start<S: Sink>(mut sink: S) -> Self {
        let (sender, mut pages) = mpsc::channel::<Batch>(WRITE_QUEUE_PAGES);
        let (report, written) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // Pages that arrive together are written together, with one commit.
            let mut batches = Vec::with_capacity(WRITE_QUEUE_PAGES);
            while pages.recv_many(&mut batches, WRITE_QUEUE_PAGES).await > 0 {
                let deadline = tokio::time::Instant::now() + WRITE_GATHER;
                while batches.len() < WRITE_QUEUE_PAGES {
                    let room = WRITE_QUEUE_PAGES - batches.len();
                    let more = pages.recv_many(&mut batches, room);
                    match tokio::time::timeout_at(deadline, more).await {
                        // More came; a closed queue (0) or the deadline ends the gathering.
                        Ok(received) if received > 0 => {}
                        Ok(_) | Err(_) => break,
                    }
                }
                match sink.write_pages(&batches).await {
                    // The run may be gone; then nobody needs the report.
                    Ok(counts) => drop(report.send(counts)),
                    Err(error) => {
                        let stream = batches
                            .first()
                            .map_or_else(|| Arc::from(""), |batch| Arc::clone(&batch.stream));
                        return Err((stream, error));
                    }
                }
                batches.clear();
            }
            Ok(())
        });
        Self {
            sender: Some(sender),
            written: std::sync::Mutex::new(written),
            task: Some(task),
        }
    }

    /// Queues a page, waiting while the queue is full. Fails when the writer has stopped (its
    /// error comes from [`WriteQueue::finish`]).
    async fn send(&self, batch: Batch, observer: &dyn Observer) -> Result<(), ()> {
        let sender = self.sender.as_ref().ok_or(())?;
        sender.send(batch).await.map_err(drop)?;
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
    async fn finish(&mut self, observer: &dyn Observer) -> Result<(), WriteFailure> {
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

/// A future polled once, so that what it starts (a request) is under way while the caller does
/// other work before it waits for the result.
struct Started<F: Future> {
    future: Pin<Box<F>>,
    output: Option<F::Output>,
}

impl<F: Future> Started<F> {
    async fn start(future: F) -> Self {
        let mut future = Box::pin(future);
        let output = std::future::poll_fn(|context| {
            std::task::Poll::Ready(match future.as_mut().poll(context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        Self { future, output }
    }

    async fn finish(self) -> F::Output {
        match self.output {
            Some(output) => output,
            None => self.future.await,
        }
    }
}

type StreamFuture<'f> = Pin<Box<dyn Future<Output = Result<(), SyncError>> + Send + 'f>>;

impl Fetcher<'_> {
    fn error(&self, stream: &str, request: Option<String>, kind: SyncErrorKind) -> SyncError {
        SyncError {
            connector: self.connector.spec.id.clone(),
            stream: stream.to_owned(),
            request,
            kind,
        }
    }

    /// Renders and sends the request for the page at `cursor` of what `pass` lists.
    async fn fetch(
        &self,
        name: &str,
        stream: &CompiledStream,
        parent: &minijinja::Value,
        pass: &PassState,
        cursor: &PageCursor,
    ) -> Result<(HttpRequest, Page), SyncError> {
        self.fetch_from(name, stream, stream.listing(pass), parent, pass, cursor)
            .await
    }

    /// Renders and sends the request for the page at `cursor` of `listing`.
    async fn fetch_from(
        &self,
        name: &str,
        stream: &CompiledStream,
        listing: &Listing,
        parent: &minijinja::Value,
        pass: &PassState,
        cursor: &PageCursor,
    ) -> Result<(HttpRequest, Page), SyncError> {
        let templates = &self.connector.templates;
        let base_url = self.connector.spec.base_url.as_str();
        let context = minijinja::context! {
            config => self.config.clone(),
            secrets => self.secrets.clone(),
            state => pass.template_state.clone(),
            parent => parent.clone(),
            page => listing.paginator.page_value(cursor),
        };
        let request = match listing.paginator.request(cursor) {
            PageRequest::Render {
                plan,
                mut injections,
            } => {
                injections.extend(pass.injection.iter().cloned());
                plan.unwrap_or(&listing.request)
                    .render(base_url, &context, templates, &injections)
            }
            PageRequest::Url(url) => listing
                .request
                .render(base_url, &context, templates, &[])
                .and_then(|mut request| {
                    request.url = url::Url::parse(url).map_err(|error| RequestError::Url {
                        url: url.to_owned(),
                        reason: error.to_string(),
                    })?;
                    request.method = reqwest::Method::GET;
                    request.body = None;
                    Ok(request)
                }),
        }
        .map_err(|error| self.error(name, None, error.into()))?;
        let page = self
            .http
            .fetch(&request, stream.decode, self.auth, &self.tally)
            .await
            .map_err(|error| self.error(name, Some(request.describe()), error.into()))?;
        if let Some((when, message)) = &self.connector.response_error {
            let response = minijinja::context! { response => minijinja::Value::from(minijinja::value::Serde(page.body.root())) };
            let failed = templates.test(when, &response).map_err(|error| {
                self.error(
                    name,
                    Some(request.describe()),
                    SyncErrorKind::Provider(format!("response_error.when: {error}")),
                )
            })?;
            if failed {
                let said = message
                    .as_ref()
                    .and_then(|path| path.first_in(page.body.root()))
                    .map_or_else(
                        || "no message".to_owned(),
                        |value| match value {
                            Node::Str(text) => text.to_string(),
                            other => Value::from(other).to_string(),
                        },
                    );
                return Err(self.error(
                    name,
                    Some(request.describe()),
                    SyncErrorKind::Provider(said),
                ));
            }
        }
        Ok((request, page))
    }
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
        }
    }

    /// Names the process that runs this sync (kept with the run in the store).
    pub fn by_worker(mut self, worker: &str) -> Self {
        Arc::make_mut(&mut self.scope).worker = Some(Arc::from(worker));
        self
    }

    /// Runs the named root streams (every root stream when `only` is empty), with their
    /// substreams.
    pub async fn run(&mut self, only: &[String]) -> Result<(), SyncError> {
        let roots: Vec<String> = self
            .fetcher
            .connector
            .root_streams()
            .map(str::to_owned)
            .collect();
        for name in only {
            if !self.fetcher.connector.streams.contains_key(name) {
                return Err(self.fetcher.error(name, None, SyncErrorKind::UnknownStream));
            }
        }
        // Run bookkeeping belongs to no stream.
        self.run_id = self
            .sink
            .start_run(&self.scope)
            .await
            .map_err(|error| self.fetcher.error("", None, error.into()))?;
        self.writer = WriteQueue::start(self.sink.clone());
        let mut produced = Ok(());
        for name in roots
            .iter()
            .filter(|name| only.is_empty() || only.contains(name))
        {
            produced = self
                .run_stream(name, minijinja::Value::from(()), String::new(), 0)
                .await;
            if produced.is_err() {
                break;
            }
        }
        // Pages mapped before a failure are still written: what was imported stays imported.
        let written = self.writer.finish(&self.fetcher.tally).await;
        let result = match (produced, written) {
            // The writer's own error explains why the run stopped.
            (_, Err((stream, error))) => Err(self.fetcher.error(&stream, None, error.into())),
            (produced, Ok(())) => produced,
        };
        let counted = self.fetcher.tally.counters.totals();
        let totals = RunTotals {
            pages: counted.pages,
            requests: counted.requests,
            written: counted.written,
        };
        let message = result.as_ref().err().map(ToString::to_string);
        let finished = self
            .sink
            .finish_run(self.run_id, &totals, message.as_deref())
            .await;
        result.and(finished.map_err(|error| self.fetcher.error("", None, error.into())))
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
                // A kept page token (Dropbox's cursor) continues the listing where the last
                // completed pass ended.
                let start = stream
                    .incremental
                    .as_ref()
                    .and_then(|incremental| incremental.continues_from(&stored))
                    .map_or(PageCursor::First, |token| {
                        stream.listing.paginator.continue_at(token)
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
            let connector = self.fetcher.connector;
            let Some(stream) = connector.streams.get(name) else {
                return Err(self.fetcher.error(name, None, SyncErrorKind::UnknownStream));
            };
            let templates = &connector.templates;
            let stream_name: Arc<str> = Arc::from(name);
            let (mut pass, mut cursor, mut resumed) =
                self.begin_pass(name, stream, &parent, &partition).await?;
            let keeps_state = stream.keeps_state();
            let mut fetched = self
                .fetcher
                .fetch(name, stream, &parent, &pass, &cursor)
                .await;
            loop {
                let (request, page) = match fetched {
                    Ok(fetched) => fetched,
                    Err(error) => {
                        let gone =
                            self.gone(stream, &error, &cursor, &parent)
                                .map_err(|render| {
                                    self.fetcher
                                        .error(name, error.request.clone(), render.into())
                                })?;
                        if let Some(id) = gone {
                            tracing::info!(connector = %connector.spec.id, stream = name, %error, id, "the record is gone; marking it deleted");
                            return self.send_tombstone(name, stream, id).await;
                        }
                        let Some(before) = full_pass_after(&error, stream, &pass.before, resumed)
                        else {
                            return Err(error);
                        };
                        tracing::warn!(connector = %connector.spec.id, stream = name, %error, "starting a full pass");
                        pass = self.new_pass(name, stream, &parent, before).await?;
                        cursor = PageCursor::First;
                        resumed = false;
                        fetched = self
                            .fetcher
                            .fetch(name, stream, &parent, &pass, &cursor)
                            .await;
                        continue;
                    }
                };
                resumed = false;
                let listing = stream.listing(&pass);
                let body = Target::new(page.body.root());
                let mut raw_records: Vec<&Node<'_>> = Vec::new();
                listing
                    .records
                    .for_each(&body, |record| raw_records.push(record));
                self.fetcher.tally.event(&Event::Page {
                    stream: name,
                    records: raw_records.len(),
                });

                let next = listing
                    .paginator
                    .next(
                        &cursor,
                        body.node(),
                        &page.headers,
                        raw_records.len(),
                        templates,
                    )
                    .map_err(|error| {
                        self.fetcher.error(
                            name,
                            Some(request.describe()),
                            SyncErrorKind::Pagination(error),
                        )
                    })?;
                if let Some(incremental) = &stream.incremental {
                    for raw in &raw_records {
                        pass.newest = incremental.newest(pass.newest.take(), raw);
                    }
                }
                // Where the stream stands once this page is stored: the next page of this pass,
                // or, after the last page, the completed pass's cursor or token.
                let (checkpoint, sweeps) = if keeps_state {
                    let state = match &next {
                        Some(next) => StreamState {
                            resume: Some(Resume {
                                pass: pass.pass,
                                page: next.clone(),
                                newest: pass.newest.clone(),
                                sweeps: pass.sweeps,
                                start_token: pass.start_token.clone(),
                            }),
                            ..pass.before.clone()
                        },
                        None => CompiledIncremental::completed(
                            stream.incremental.as_ref(),
                            &pass.before,
                            pass.newest.clone(),
                            pass.start_token.clone().or_else(|| {
                                stream
                                    .incremental
                                    .as_ref()
                                    .and_then(|incremental| incremental.page_token(body.node()))
                            }),
                        ),
                    };
                    let sweeps = match (&next, stream.sweeps() && pass.sweeps) {
                        (None, true) => vec![Sweep {
                            stream: Arc::clone(&stream_name),
                            pass: pass.pass,
                        }],
                        _ => vec![],
                    };
                    // A pass that changed nothing (a sync token that came back the same) leaves the
                    // checkpoint as it is: a no-change sync writes nothing.
                    let checkpoint = (state != pass.stored).then(|| {
                        pass.stored = state.clone();
                        Checkpoint {
                            stream: Arc::clone(&stream_name),
                            partition: partition.clone(),
                            state,
                        }
                    });
                    (checkpoint, sweeps)
                } else {
                    (None, vec![])
                };

                // The next page is requested before this one is mapped: its exchange is its own
                // task (see `HttpClient::fetch`), so its body arrives while this page is mapped
                // and queued (it is decoded when awaited, on this task). One page is read ahead,
                // no more. A stream with substreams or recursion asks for its next page only
                // after this page's children: they take longer than any page, and the provider
                // sees requests in the order a reader would make them.
                let reads_ahead = !stream.has_children() && stream.recurse.is_none();
                let prefetch = match &next {
                    Some(next) if reads_ahead => Some(
                        Started::start(self.fetcher.fetch(name, stream, &parent, &pass, next))
                            .await,
                    ),
                    _ => None,
                };

                // Mapped pages go to the writer task and are written while the next ones are
                // fetched and mapped; the queue is short, so memory stays a few pages. A stream
                // with substreams stores its checkpoint after theirs, so that a resumed pass
                // never skips a child that was not stored.
                let (records_checkpoint, after_children) = if !stream.has_children() {
                    (checkpoint, None)
                } else {
                    (None, checkpoint)
                };
                let mut batch = Batch {
                    scope: Arc::clone(&self.scope),
                    stream: Arc::clone(&stream_name),
                    model: None,
                    records: vec![],
                    rejects: vec![],
                    seen_in_pass: (stream.sweeps() && pass.sweeps).then_some(pass.pass),
                    checkpoint: records_checkpoint,
                    sweeps: vec![],
                };
                if let Some(mapper) = &stream.mapper {
                    batch.model = Some(mapper.model());
                    batch.records.reserve(raw_records.len());
                    let mut scope = PageScope::new(&parent, &self.fetcher.config);
                    for raw in &raw_records {
                        match mapper.map(raw, &mut scope, &self.fetcher.provenance, templates) {
                            Mapped::Record(record) => batch.records.push(record.into()),
                            Mapped::Rejected(reject) => batch.rejects.push(reject),
                        }
                    }
                    // A change log names the records it deleted by id alone.
                    if let Some(deleted_ids) = stream
                        .reads_log(&pass)
                        .and_then(|log| log.deleted_ids.as_ref())
                    {
                        deleted_ids.for_each(&body, |id| {
                            if let Some(id) = token_text(id) {
                                batch.records.push(
                                    RecordMapper::tombstone(id, &self.fetcher.provenance).into(),
                                );
                            }
                        });
                    }
                }
                let mut sweeps = Some(sweeps);
                if after_children.is_none() {
                    batch.sweeps = sweeps.take().unwrap_or_default();
                }
                if batch.model.is_some() || batch.checkpoint.is_some() || !batch.sweeps.is_empty() {
                    self.send(name, batch).await?;
                }

                // Substreams run for each record of the page, a few parent records at a time.
                for child_name in &stream.children {
                    let Some(child) = connector.streams.get(child_name) else {
                        continue;
                    };
                    self.run_for_each(
                        child_name,
                        &child.parent_fields,
                        &raw_records,
                        child.concurrency,
                        0,
                    )
                    .await?;
                }
                if let Some(recurse) = stream
                    .recurse
                    .as_ref()
                    .filter(|recurse| depth < recurse.max_depth)
                {
                    let mut followed = Vec::with_capacity(raw_records.len());
                    for raw in &raw_records {
                        let follow = match &recurse.when {
                            Some(when) => {
                                let context = minijinja::context! { record => minijinja::Value::from(minijinja::value::Serde(raw)) };
                                templates.test(when, &context).map_err(|error| {
                                    self.fetcher.error(
                                        name,
                                        None,
                                        SyncErrorKind::Pagination(format!("recurse.when: {error}")),
                                    )
                                })?
                            }
                            None => true,
                        };
                        if follow {
                            followed.push(*raw);
                        }
                    }
                    self.run_for_each(
                        name,
                        &recurse.fields,
                        &followed,
                        stream.concurrency,
                        depth + 1,
                    )
                    .await?;
                }
                if let Some(checkpoint) = after_children {
                    let batch = Batch {
                        scope: Arc::clone(&self.scope),
                        stream: Arc::clone(&stream_name),
                        model: None,
                        records: vec![],
                        rejects: vec![],
                        seen_in_pass: None,
                        checkpoint: Some(checkpoint),
                        sweeps: sweeps.take().unwrap_or_default(),
                    };
                    self.send(name, batch).await?;
                }

                let Some(next) = &next else {
                    return Ok(()); // the last page
                };
                fetched = match prefetch {
                    Some(prefetch) => prefetch.finish().await,
                    None => self.fetcher.fetch(name, stream, &parent, &pass, next).await,
                };
                cursor = next.clone();
            }
        })
    }

    /// Runs stream `name` once for each of `records`, as its parent (the `parent` value and the
    /// partition key come from `fields`), `concurrency` at a time.
    async fn run_for_each(
        &self,
        name: &str,
        fields: &[(String, Source)],
        records: &[&Node<'_>],
        concurrency: usize,
        depth: u8,
    ) -> Result<(), SyncError> {
        let templates = &self.fetcher.connector.templates;
        let mut parents = records
            .iter()
            .map(|raw| parent_value(fields, raw, &self.fetcher.config, templates))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|error| {
                self.fetcher
                    .error(name, None, SyncErrorKind::Pagination(error))
            })?;
        // A record named twice on a page (a change log lists a message once per change) runs its
        // children once.
        let mut seen = std::collections::HashSet::with_capacity(parents.len());
        parents.retain(|(_, partition)| seen.insert(partition.clone()));
        stream::iter(parents.into_iter().map(Ok))
            .try_for_each_concurrent(concurrency, |(parent, partition)| {
                self.run_stream(name, parent, partition, depth)
            })
            .await
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

    async fn send_tombstone(
        &self,
        name: &str,
        stream: &CompiledStream,
        id: String,
    ) -> Result<(), SyncError> {
        let Some(mapper) = &stream.mapper else {
            return Ok(()); // refused by validation: `gone` needs a model
        };
        let batch = Batch::records(
            Arc::clone(&self.scope),
            Arc::from(name),
            mapper.model(),
            vec![RecordMapper::tombstone(id, &self.fetcher.provenance)],
            vec![],
        );
        self.send(name, batch).await
    }

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

/// Whether a failed request starts a full pass instead of failing the stream, and the state that
/// pass starts from: a remembered token the provider no longer takes (Google's 410, Dropbox's
/// 409 reset) drops the token and cursor; a stored resume point it refuses (an expired page
/// token: a 4xx other than 401 and 429) starts the pass again with the same cursor. Nothing
/// stored is lost; the pass upserts over it.
fn full_pass_after(
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
    })
}

/// The `parent` a child sees (its declared fields, taken from one parent record), and the
/// partition key its checkpoints are stored under (those fields as JSON).
fn parent_value(
    fields: &[(String, Source)],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Counters;
    use crate::models::ModelKind;
    use crate::store::MemorySink;

    fn page() -> Batch {
        let scope = Arc::new(RunScope {
            platform: Arc::from("notes_api"),
            user_id: Arc::from("user"),
            integration_id: Arc::from("integration"),
            worker: None,
        });
        Batch::records(scope, Arc::from("notes"), ModelKind::Note, vec![], vec![])
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
