//! The fetcher: what a run shares between its streams to ask the source for a page.
//!
//! It reads a page from the source with the pass's values (the run's config and secrets, the
//! pass's state and incremental value, the parent record) and checks the answer for an error
//! the provider wraps in a 200 (the spec's `response_error`).

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::error::{SyncError, SyncErrorKind};
use super::pass::PassState;
use super::plan::{CompiledConnector, CompiledStream};
use crate::decode::document::Node;
use crate::events::{Counters, Event, Observer};
use crate::http::{Authorizer, HttpClient, HttpRequest};
use crate::record::Provenance;
use crate::source::http::Page;
use crate::source::http::listing::Listing;
use crate::source::http::{HttpPlan, HttpSource, ReadError};
use crate::source::{Ask, Source};
use crate::state::PageCursor;

/// What a run shares between its streams: everything but the sink.
pub(super) struct Fetcher<'a> {
    pub(super) connector: &'a CompiledConnector,
    pub(super) http: &'a HttpClient,
    pub(super) auth: &'a dyn Authorizer,
    pub(super) tally: Tally<'a>,
    pub(super) provenance: Provenance,
    pub(super) config: minijinja::Value,
    pub(super) secrets: minijinja::Value,
    pub(super) budget: Budget,
    /// The open sessions of the run's streams (`session` in their templates), by stream.
    pub(super) sessions: std::sync::Mutex<std::collections::HashMap<String, minijinja::Value>>,
}

/// What a run may still spend, by the connector's `limits`: requests, time, and requests in
/// flight at once. The last is one semaphore for the whole run, however deep substreams and
/// `recurse` nest (each level runs its partitions a few at a time, and those multiplied: 20,000
/// open connections were seen); a permit is held only while a page is fetched, never while its
/// children run, so levels cannot starve one another.
pub(super) struct Budget {
    deadline: tokio::time::Instant,
    max_run_time: crate::spec::Duration,
    max_requests: u64,
    in_flight: tokio::sync::Semaphore,
}

impl Budget {
    /// The budget of a run starting now.
    pub(super) fn new(limits: &crate::spec::Limits) -> Self {
        Self {
            deadline: tokio::time::Instant::now() + limits.max_run_time.get(),
            max_run_time: limits.max_run_time,
            max_requests: limits.max_requests,
            in_flight: tokio::sync::Semaphore::new(usize::from(limits.max_concurrency.max(1))),
        }
    }

    /// When the run must end.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Why the run may send no more requests, having sent `sent`: `None` while it may.
    pub(super) fn spent(&self, sent: u64) -> Option<String> {
        (sent >= self.max_requests).then(|| {
            format!("the run sent {sent} requests, the connector's limit (`limits.max_requests`)")
        })
    }

    fn out_of_time(&self) -> SyncErrorKind {
        SyncErrorKind::Limit(format!(
            "the run reached the connector's time limit ({}, `limits.max_run_time`)",
            self.max_run_time
        ))
    }
}

/// Passes events on and counts them, for the run's stored totals.
pub(super) struct Tally<'a> {
    pub(super) counters: Counters,
    pub(super) inner: &'a dyn Observer,
}

impl Observer for Tally<'_> {
    fn event(&self, event: &Event<'_>) {
        self.counters.event(event);
        self.inner.event(event);
    }
}

impl Fetcher<'_> {
    /// The run's HTTP source.
    pub(super) fn source(&self) -> HttpSource<'_> {
        HttpSource {
            client: self.http,
            auth: self.auth,
            observer: &self.tally,
            base_url: self
                .connector
                .spec
                .base_url
                .as_ref()
                .map_or("", |url| url.as_str()),
            templates: &self.connector.templates,
        }
    }

    /// An error of this run's connector, on `stream`.
    pub(super) fn error(
        &self,
        stream: &str,
        request: Option<String>,
        kind: SyncErrorKind,
    ) -> SyncError {
        SyncError {
            connector: self.connector.spec.id.clone(),
            stream: stream.to_owned(),
            request,
            kind,
        }
    }

    /// Renders and sends the request for the page at `cursor` of what `pass` lists.
    pub(super) async fn fetch(
        &self,
        name: &str,
        stream: &CompiledStream,
        parent: &minijinja::Value,
        pass: &PassState,
        cursor: &PageCursor,
    ) -> Result<(HttpRequest, Page), SyncError> {
        let Some(listing) = stream.listing(pass) else {
            return Err(self.error(
                name,
                None,
                SyncErrorKind::WrongSource(
                    "the stream reads a data export, not the provider's API",
                ),
            ));
        };
        self.fetch_from(name, stream, listing, parent, pass, cursor)
            .await
    }

    /// Reads the page at `cursor` of `listing` from the HTTP source.
    pub(super) async fn fetch_from(
        &self,
        name: &str,
        stream: &CompiledStream,
        listing: &Listing,
        parent: &minijinja::Value,
        pass: &PassState,
        cursor: &PageCursor,
    ) -> Result<(HttpRequest, Page), SyncError> {
        let source = self.source();
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default();
        let context = minijinja::context! {
            config => self.config.clone(),
            secrets => self.secrets.clone(),
            state => pass.template_state.clone(),
            parent => parent.clone(),
            session => session,
        };
        let ask = Ask {
            context: &context,
            injections: pass.injection.as_slice(),
        };
        let plan = HttpPlan {
            listing,
            decoder: &stream.decoder,
            max_body: stream.max_body,
        };
        let budget = &self.budget;
        if let Some(spent) = budget.spent(self.tally.counters.totals().requests) {
            return Err(self.error(name, None, SyncErrorKind::Limit(spent)));
        }
        // The semaphore is never closed, so a permit always comes.
        let _permit = budget.in_flight.acquire().await.ok();
        let page = tokio::time::timeout_at(budget.deadline, source.read(&plan, cursor, &ask))
            .await
            .map_err(|_| self.error(name, None, budget.out_of_time()))?
            .map_err(|error| match error {
                ReadError::Request(error) => self.error(name, None, error.into()),
                ReadError::Http { request, error } => self.error(name, Some(request), error.into()),
            })?;
        self.provider_refused(&page.1)
            .map_err(|kind| self.error(name, Some(HttpSource::origin(&page)), kind))?;
        Ok(page)
    }

    /// An error the provider answered inside a successful response, by the spec's
    /// `response_error`: its message, or why the condition could not be tested.
    fn provider_refused(&self, page: &Page) -> Result<(), SyncErrorKind> {
        let Some((when, message)) = &self.connector.response_error else {
            return Ok(());
        };
        let response = minijinja::context! {
            response => minijinja::Value::from(minijinja::value::Serde(page.body.root())),
        };
        let failed = self
            .connector
            .templates
            .test(when, &response)
            .map_err(|error| SyncErrorKind::Template(format!("response_error.when: {error}")))?;
        if !failed {
            return Ok(());
        }
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
        Err(SyncErrorKind::Provider(said))
    }
}

/// A future polled once, so that what it starts (a request) is under way while the caller does
/// other work before it waits for the result.
pub(super) struct Started<F: Future> {
    future: Pin<Box<F>>,
    output: Option<F::Output>,
}

impl<F: Future> Started<F> {
    /// Polls `future` once.
    pub(super) async fn start(future: F) -> Self {
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

    /// Waits for the result.
    pub(super) async fn finish(self) -> F::Output {
        match self.output {
            Some(output) => output,
            None => self.future.await,
        }
    }
}
