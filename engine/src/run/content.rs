//! Records' content: what each mapped record owes (its rendered download, stored with its page)
//! and the downloads themselves, made after the run's listing into the blob store.
//!
//! A download is rendered when its record is mapped, from the provider's record as it was
//! listed (Google Photos' `baseUrl` is valid for an hour from then), and kept in the store with
//! the page; the run then makes the downloads its integration owes, oldest first. A record
//! listed again replaces its owed request with a fresh one. A download that fails is kept with
//! its error and retried by the next runs, up to [`MAX_ATTEMPTS`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::blobs::{BlobError, BlobRef, BlobStore, Checksum, Expected};
use crate::decode::document::Node;
use crate::events::{Event, Observer};
use crate::extract::Target;
use crate::http::{
    Authorizer, HttpClient, HttpError, HttpRequest, Refusal, RequestBody, Streaming,
};
use crate::map::{CompiledValue, Lazy, RecordFields};
use crate::source::http::request::RequestPlan;
use crate::spec::{ChecksumKind, Content};
use crate::store::{ContentDue, DueDownload, RunScope, Sink, StoreError};
use crate::template::{BuildError, TemplateId, Templates};

/// How many times a download may fail (over as many runs) before it is left alone; its error
/// stays in the store.
pub(super) const MAX_ATTEMPTS: i64 = 5;

/// How many owed downloads are read from the store at a time.
const DUE_PER_READ: i64 = 100;

/// A stream's `content`, compiled.
#[derive(Debug)]
pub(super) struct CompiledContent {
    request: RequestPlan,
    when: Option<TemplateId>,
    max_bytes: u64,
    size: Option<CompiledValue>,
    checksum: Option<(ChecksumKind, CompiledValue)>,
    content_type: Option<CompiledValue>,
    version: Option<CompiledValue>,
    /// What of the record the templates read.
    fields: RecordFields,
}

/// A download as the store keeps it: the rendered request (without credentials) and what the
/// content must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    method: String,
    url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Value>,
    max_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checksum: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
}

impl CompiledContent {
    pub(super) fn compile(
        content: &Content,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        // The connector's own `headers` may hold secrets: they are added when the request is
        // sent, not kept with it.
        let request =
            RequestPlan::compile(&content.request, &indexmap::IndexMap::new(), templates)?;
        let mut fields = RecordFields::default();
        let value = |source: &crate::spec::ValueSource,
                     templates: &mut Templates,
                     fields: &mut RecordFields| {
            if let crate::spec::ValueSource::Template(text) = source {
                fields.add(text.as_str(), false);
            }
            CompiledValue::compile(source, templates)
        };
        let request_texts = std::iter::once(content.request.path.as_str())
            .chain(content.request.query.values().map(|value| value.as_str()))
            .chain(content.request.headers.values().map(|value| value.as_str()));
        for text in request_texts {
            fields.add(text, false);
        }
        // A JSON body's strings are templates too (Dropbox sends the path in a header, but
        // others post it); reading the record whole is always right.
        if content.request.body.is_some() {
            fields = RecordFields::All;
        }
        let when = match &content.when {
            Some(when) => {
                fields.add(when.as_str(), true);
                Some(templates.add_condition(when.as_str())?)
            }
            None => None,
        };
        Ok(Self {
            request,
            when,
            max_bytes: content.max_bytes.get(),
            size: content
                .size
                .as_ref()
                .map(|source| value(source, templates, &mut fields))
                .transpose()?,
            checksum: content
                .checksum
                .as_ref()
                .map(|checksum| {
                    Ok::<_, BuildError>((
                        checksum.kind,
                        value(&checksum.value, templates, &mut fields)?,
                    ))
                })
                .transpose()?,
            content_type: content
                .content_type
                .as_ref()
                .map(|source| value(source, templates, &mut fields))
                .transpose()?,
            version: content
                .version
                .as_ref()
                .map(|source| value(source, templates, &mut fields))
                .transpose()?,
            fields,
        })
    }

    /// What `record` (listed as `raw`) owes: its rendered download, `None` when `when` says it
    /// has no content. An error says which part could not be made.
    pub(super) fn due(
        &self,
        id: &Arc<str>,
        raw: &Node<'_>,
        config: &minijinja::Value,
        base_url: &str,
        templates: &Templates,
    ) -> Result<Option<ContentDue>, String> {
        let parent = minijinja::Value::from(());
        let context = Lazy::new(raw, &self.fields, &parent, config);
        if let Some(when) = &self.when {
            let has = templates
                .test(when, context.context())
                .map_err(|error| format!("content.when: {error}"))?;
            if !has {
                return Ok(None);
            }
        }
        let request = self
            .request
            .render(base_url, context.context(), templates, &[])
            .map_err(|error| format!("content.request: {error}"))?;
        let target = Target::new(raw);
        let text = |what: &str, source: Option<&CompiledValue>| -> Result<Option<String>, String> {
            let Some(source) = source else {
                return Ok(None);
            };
            let value = source
                .value(&target, &context, templates)
                .map_err(|error| format!("content.{what}: {error}"))?;
            Ok(value.and_then(|value| match value.as_ref() {
                serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
                serde_json::Value::Number(number) => Some(number.to_string()),
                _ => None,
            }))
        };
        let size = text("size", self.size.as_ref())?
            .map(|size| {
                size.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("content.size: `{size}` is not a number of bytes"))
            })
            .transpose()?;
        let checksum = match &self.checksum {
            Some((kind, source)) => text("checksum", Some(source))?
                .map(|hex| {
                    Checksum::from_hex(kind.name(), &hex)
                        .map_err(|error| format!("content.checksum: {error}"))?;
                    Ok::<_, String>((kind.name().to_owned(), hex))
                })
                .transpose()?,
            None => None,
        };
        let order = Order {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers: request.headers,
            json: match request.body {
                Some(RequestBody::Json(value)) => Some(value),
                Some(RequestBody::Form(_)) | None => None,
            },
            max_bytes: self.max_bytes,
            size,
            checksum,
            content_type: text("content_type", self.content_type.as_ref())?,
        };
        Ok(Some(ContentDue {
            id: Arc::clone(id),
            version: text("version", self.version.as_ref())?.unwrap_or_default(),
            request: serde_json::to_string(&order).map_err(|error| error.to_string())?,
        }))
    }
}

/// What a download needs from the run.
pub(super) struct Downloader<'a, S: Sink> {
    pub(super) http: &'a HttpClient,
    pub(super) auth: &'a dyn Authorizer,
    pub(super) observer: &'a dyn Observer,
    pub(super) sink: &'a S,
    pub(super) blobs: &'a BlobStore,
    pub(super) scope: &'a RunScope,
    /// The connector's own headers, rendered with its config and secrets.
    pub(super) headers: Vec<(String, String)>,
    /// The run's limits (`limits.max_requests`, `limits.max_run_time`), which downloads
    /// count against like any request.
    pub(super) budget: &'a super::fetch::Budget,
    /// The run's counts so far (its requests).
    pub(super) counters: &'a crate::events::Counters,
}

impl<S: Sink> Downloader<'_, S> {
    /// Makes every download the integration owes, oldest first, until none is left that has not
    /// failed too often. Fails only when the store does; a failed download is noted and the
    /// others go on.
    pub(super) async fn run(&self) -> Result<(), StoreError> {
        // Each download is tried once a run: one that failed stays owed for the next run, and
        // one owed again while it was made (another version listed meanwhile) waits for it too,
        // so the loop ends whatever the store answers.
        let mut tried: std::collections::HashSet<(String, String)> =
            std::collections::HashSet::new();
        loop {
            let due = self
                .sink
                .due_downloads(
                    &self.scope.integration_id,
                    MAX_ATTEMPTS,
                    DUE_PER_READ + tried.len() as i64,
                )
                .await?;
            let due: Vec<DueDownload> = due
                .into_iter()
                .filter(|due| tried.insert((due.model.clone(), due.id.clone())))
                .collect();
            if due.is_empty() {
                return Ok(());
            }
            for download in due {
                // Past the run's limits the rest stays owed, for the next run.
                if let Some(spent) = self.budget.spent(self.counters.totals().requests) {
                    tracing::warn!(connector = %self.scope.platform, "{spent}; the content not downloaded yet stays owed");
                    return Ok(());
                }
                let deadline = self.budget.deadline();
                let Ok(downloaded) =
                    tokio::time::timeout_at(deadline, self.download(&download)).await
                else {
                    tracing::warn!(connector = %self.scope.platform, "the run reached the connector's time limit (`limits.max_run_time`); the content not downloaded yet stays owed");
                    return Ok(());
                };
                match downloaded {
                    Ok(blob) => {
                        self.sink
                            .content_stored(self.scope, &download, &blob)
                            .await?;
                        self.observer
                            .event(&Event::ContentStored { bytes: blob.size });
                    }
                    Err(error) => {
                        tracing::warn!(
                            connector = %self.scope.platform,
                            stream = %download.stream,
                            record = %download.id,
                            %error,
                            "the record's content was not downloaded; later runs retry it"
                        );
                        self.sink
                            .download_failed(&self.scope.integration_id, &download, &error)
                            .await?;
                        self.observer.event(&Event::ContentFailed);
                    }
                }
            }
        }
    }

    /// One download into the blob store; the error says why it failed and what to do.
    async fn download(&self, due: &DueDownload) -> Result<BlobRef, String> {
        let order: Order = serde_json::from_str(&due.request)
            .map_err(|error| format!("the owed request is unreadable: {error}"))?;
        let url =
            url::Url::parse(&order.url).map_err(|error| format!("`{}`: {error}", order.url))?;
        let method = reqwest::Method::from_bytes(order.method.as_bytes())
            .map_err(|_| format!("`{}` is not an HTTP method", order.method))?;
        let mut headers = self.headers.clone();
        headers.extend(order.headers.iter().cloned());
        let request = HttpRequest {
            method,
            url,
            headers,
            body: order.json.clone().map(RequestBody::Json),
            max_body: Some(order.max_bytes),
        };
        let checksum = order
            .checksum
            .as_ref()
            .map(|(kind, hex)| Checksum::from_hex(kind, hex))
            .transpose()?;
        let order = &order;
        let checksum = &checksum;
        let downloaded = self
            .http
            .download(&request, self.auth, self.observer, |answer| async move {
                self.store(answer, order, checksum.clone()).await
            })
            .await;
        match downloaded {
            Ok(Ok(blob)) => Ok(blob),
            Ok(Err(error)) => Err(format!(
                "{error} (check the blob store: its disk's free space and permissions, or the S3 server)"
            )),
            Err(HttpError::TooLarge { url, limit }) => Err(format!(
                "the content at {url} is larger than {limit} bytes, the stream's `content.max_bytes`; raise it if such files are expected"
            )),
            Err(error) => Err(format!("{error} ({})", error.hint())),
        }
    }

    /// Streams one answer into a staged blob and commits it. A failing blob store comes back
    /// as the inner error: retrying the request would not help.
    async fn store(
        &self,
        mut answer: Streaming,
        order: &Order,
        checksum: Option<Checksum>,
    ) -> Result<Result<BlobRef, BlobError>, Refusal> {
        let writer = self.blobs.writer(order.max_bytes).await;
        let mut writer = match writer {
            Ok(writer) => writer,
            Err(error) => return Ok(Err(error)),
        };
        writer.verify(checksum.as_ref());
        // What the bytes are, from the first of them, for an answer that does not say
        // (Dropbox sends every file as application/octet-stream).
        let mut sniffed: Option<&'static str> = None;
        while let Some(chunk) = answer.chunk().await? {
            if writer.size() == 0 {
                sniffed = infer::get(&chunk).map(|kind| kind.mime_type());
            }
            match writer.write(&chunk).await {
                Ok(()) => {}
                Err(BlobError::TooLarge { limit }) => {
                    return Err(Refusal::Stop(HttpError::TooLarge {
                        url: answer.url().to_owned(),
                        limit,
                    }));
                }
                Err(error) => return Ok(Err(error)),
            }
        }
        let declared = answer
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or(value).trim().to_owned())
            .filter(|value| !value.is_empty() && value != "application/octet-stream");
        let content_type = order
            .content_type
            .clone()
            .or(declared)
            .or_else(|| sniffed.map(str::to_owned));
        let expected = Expected {
            size: order.size,
            checksum,
            content_type,
        };
        match writer.finish(self.blobs, expected).await {
            // A body that is not what was announced may have been cut short: asked again.
            Err(BlobError::Mismatch(reason)) => Err(Refusal::Retry(reason)),
            finished => Ok(finished),
        }
    }
}
