//! Records' content: what each mapped record owes (its rendered download, stored with its page)
//! and the downloads themselves, made after the run's listing into the blob store.
//!
//! A download is rendered when its record is mapped, from the provider's record as it was
//! listed (Google Photos' `baseUrl` is valid for an hour from then), and kept in the store with
//! the page; the run then makes the downloads its integration owes, oldest first. A record
//! listed again replaces its owed request with a fresh one. A download that fails is kept with
//! its error and retried by the next runs, up to [`MAX_ATTEMPTS`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{TryStreamExt as _, stream};

use serde::{Deserialize, Serialize};

use crate::blobs::{BlobError, BlobRef, BlobStore, BlobWriter, Checksum, Expected};
use crate::decode::document::Node;
use crate::events::{Event, Observer};
use crate::extract::{CompiledPath, Target};
use crate::http::{
    Authorizer, HttpClient, HttpError, HttpRequest, Refusal, RequestBody, Streaming,
};
use crate::map::{CompiledValue, Lazy, RecordFields};
use crate::source::http::request::{KeptRequest, RequestPlan};
use crate::spec::{ChecksumKind, Content, Encoding};
use crate::store::{ContentDue, DueAt, DueDownload, RunScope, Sink, StoreError};
use crate::template::{BuildError, TemplateId, Templates};

/// How many times a download may fail (over as many runs) before it is left alone; its error
/// stays in the store.
pub(super) const MAX_ATTEMPTS: i64 = 5;

/// How many owed downloads are read from the store at a time.
const DUE_PER_READ: i64 = 100;

/// One part of a stream's `content`, compiled.
#[derive(Debug)]
pub(super) struct CompiledContent {
    /// Its name (`""` for the record's own content).
    part: String,
    /// With `for_each`: a part per item it selects, told apart by `key`.
    for_each: Option<(CompiledPath, Option<CompiledValue>)>,
    source: Source,
    when: Option<TemplateId>,
    max_bytes: u64,
    size: Option<CompiledValue>,
    checksum: Option<(ChecksumKind, CompiledValue)>,
    content_type: Option<CompiledValue>,
    version: Option<CompiledValue>,
    file_name: Option<CompiledValue>,
    /// How a fresh URL is had when the request's has expired.
    refresh: Option<CompiledRefresh>,
    /// What of the record the templates read.
    fields: RecordFields,
}

/// A part's `refresh`, compiled.
#[derive(Debug)]
struct CompiledRefresh {
    request: RequestPlan,
    record: Option<CompiledPath>,
    on: Vec<u16>,
    /// What of the record its request reads: kept with each owed download, so that the
    /// request is rendered only when a URL has expired (rendering it for every record was a
    /// sixth of a listing's CPU: BENCHMARKS.md, "Owing content").
    fields: RecordFields,
}

/// Where a part's bytes are.
#[derive(Debug)]
enum Source {
    /// Downloaded: the answer's body, or a string in its JSON (`answer`).
    Request(RequestPlan, Option<Encoded>),
    /// In the record, encoded.
    Inline(CompiledValue, Encoding),
    /// A document made of a tree the provider serves.
    Collect(Box<CompiledCollect>),
    /// The export's file the record was read from, copied as it was read: nothing is owed.
    Entry,
}

/// A part's `collect`, compiled.
#[derive(Debug)]
struct CompiledCollect {
    request: RequestPlan,
    paging: Option<(serde_json_path::JsonPath, String)>,
    records: serde_json_path::JsonPath,
    children: Option<TemplateId>,
    max_depth: u8,
    max_nodes: u32,
    text: Option<TemplateId>,
    kind: TemplateId,
    kinds: std::collections::HashMap<String, TemplateId>,
    default: Option<TemplateId>,
    indent: String,
    spaced: std::collections::HashSet<String>,
}

/// How many pages of one node's children are read, at most.
const MAX_CHILD_PAGES: usize = 1_000;

impl CompiledCollect {
    fn compile(
        collect: &crate::spec::Collect,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        let path = |text: &str| {
            serde_json_path::JsonPath::parse(text)
                .map_err(|error| BuildError::Invalid(format!("`{text}`: {error}")))
        };
        let render = &collect.render;
        Ok(Self {
            request: RequestPlan::compile(&collect.request, &indexmap::IndexMap::new(), templates)?,
            paging: collect
                .paginate
                .as_ref()
                .map(|paging| {
                    Ok::<_, BuildError>((path(paging.token.as_str())?, paging.param.clone()))
                })
                .transpose()?,
            records: path(collect.records.as_str())?,
            children: collect
                .children
                .as_ref()
                .map(|children| templates.add_condition(children.as_str()))
                .transpose()?,
            max_depth: collect.max_depth,
            max_nodes: collect.max_nodes,
            text: render
                .text
                .as_ref()
                .map(|text| templates.add(text.as_str()))
                .transpose()?,
            kind: templates.add(render.kind.as_str())?,
            kinds: render
                .kinds
                .iter()
                .map(|(kind, template)| Ok((kind.clone(), templates.add(template.as_str())?)))
                .collect::<Result<_, BuildError>>()?,
            default: render
                .default
                .as_ref()
                .map(|text| templates.add(text.as_str()))
                .transpose()?,
            indent: render.indent.clone(),
            spaced: render.spaced.iter().cloned().collect(),
        })
    }

    /// The line `node` (at `depth`) becomes; `None` for a kind with no template.
    fn line(
        &self,
        node: &minijinja::Value,
        depth: u8,
        config: &minijinja::Value,
        templates: &Templates,
    ) -> Result<Option<String>, String> {
        let base = minijinja::context! { node => node.clone(), config => config.clone() };
        let text = match &self.text {
            Some(id) => templates
                .render(id, &base)
                .map_err(|error| format!("render.text: {error}"))?,
            None => String::new(),
        };
        let kind = templates
            .render(&self.kind, &base)
            .map_err(|error| format!("render.kind: {error}"))?;
        let Some(template) = self.kinds.get(kind.trim()).or(self.default.as_ref()) else {
            return Ok(None);
        };
        let context = minijinja::context! {
            node => node.clone(), text => text, depth => depth, config => config.clone()
        };
        let line = templates
            .render(template, &context)
            .map_err(|error| format!("render of a `{kind}`: {error}"))?;
        let mut indented = self.indent.repeat(usize::from(depth));
        indented.push_str(&line);
        if self.spaced.contains(kind.trim()) {
            indented.push('\n');
        }
        Ok(Some(indented))
    }
}

/// A string of encoded bytes in a JSON answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Encoded {
    /// Its JSONPath.
    json: String,
    encoding: Encoding,
}

/// A download as the store keeps it: the rendered request (without credentials), or the
/// bytes themselves for a part that is in its record, and what the content must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    /// The request (none for a part that is in its record).
    #[serde(flatten)]
    request: KeptRequest,
    /// Where the bytes are in the answer, when it is JSON around them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<Encoded>,
    /// The bytes, encoded, for a part that is in its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inline: Option<(String, Encoding)>,
    /// The request is the top of a tree to collect (the part's `collect`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    collect: bool,
    max_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checksum: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    /// The request for the record again, when the URL has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh: Option<RefreshOrder>,
}

/// How to fetch a record again, and the statuses that call for it: what its request reads of
/// the record, rendered when needed. Downloads owed before 2026-12-08 hold the rendered request
/// instead (`request`), which is still sent as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RefreshOrder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record: Option<serde_json::Value>,
    #[serde(flatten)]
    request: KeptRequest,
    on: Vec<u16>,
}

impl CompiledContent {
    pub(super) fn compile(
        content: &Content,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        let mut fields = RecordFields::default();
        let value = |source: &crate::spec::ValueSource,
                     templates: &mut Templates,
                     fields: &mut RecordFields| {
            if let crate::spec::ValueSource::Template(text) = source {
                fields.add(text.as_str(), false);
            }
            CompiledValue::compile(source, templates)
        };
        let source = match (&content.request, &content.inline, &content.collect) {
            (Some(request), _, _) => {
                // The connector's own `headers` may hold secrets: they are added when the
                // request is sent, not kept with it.
                let plan = RequestPlan::compile(request, &indexmap::IndexMap::new(), templates)?;
                let texts = std::iter::once(request.path.as_str())
                    .chain(request.query.values().map(|value| value.as_str()))
                    .chain(request.headers.values().map(|value| value.as_str()));
                for text in texts {
                    fields.add(text, false);
                }
                // A JSON body's strings are templates too (Dropbox sends the path in a header,
                // but others post it); reading the record whole is always right.
                if request.body.is_some() {
                    fields = RecordFields::All;
                }
                let answer = content.answer.as_ref().map(|answer| Encoded {
                    json: answer.json.as_str().to_owned(),
                    encoding: answer.encoding,
                });
                if let Some(answer) = &answer {
                    CompiledPath::compile(&answer.json)?;
                }
                Source::Request(plan, answer)
            }
            (None, Some(inline), _) => Source::Inline(
                value(&inline.from, templates, &mut fields)?,
                inline.encoding,
            ),
            (None, None, Some(collect)) => {
                // The top request reads the record as `node`: whole.
                fields = RecordFields::All;
                Source::Collect(Box::new(CompiledCollect::compile(collect, templates)?))
            }
            (None, None, None) if content.entry => Source::Entry,
            (None, None, None) => {
                return Err(BuildError::Invalid(
                    "a content part has no `request`, `inline` or `collect`".to_owned(),
                ));
            }
        };
        let when = match &content.when {
            Some(when) => {
                fields.add(when.as_str(), true);
                Some(templates.add_condition(when.as_str())?)
            }
            None => None,
        };
        let refresh = match &content.refresh {
            Some(refresh) => {
                let texts = std::iter::once(refresh.request.path.as_str())
                    .chain(refresh.request.query.values().map(|value| value.as_str()))
                    .chain(refresh.request.headers.values().map(|value| value.as_str()));
                let mut read = RecordFields::default();
                for text in texts {
                    read.add(text, false);
                }
                if refresh.request.body.is_some() {
                    read = RecordFields::All;
                }
                Some(CompiledRefresh {
                    fields: read,
                    request: RequestPlan::compile(
                        &refresh.request,
                        &indexmap::IndexMap::new(),
                        templates,
                    )?,
                    record: refresh
                        .record
                        .as_ref()
                        .map(|path| CompiledPath::compile(path.as_str()))
                        .transpose()?,
                    on: refresh.on.clone(),
                })
            }
            None => None,
        };
        let mut optional = |source: Option<&crate::spec::ValueSource>| {
            source
                .map(|source| value(source, templates, &mut fields))
                .transpose()
        };
        let for_each = match &content.for_each {
            Some(path) => Some((
                CompiledPath::compile(path.as_str())?,
                optional(content.key.as_ref())?,
            )),
            None => None,
        };
        let size = optional(content.size.as_ref())?;
        let content_type = optional(content.content_type.as_ref())?;
        let version = optional(content.version.as_ref())?;
        let file_name = optional(content.file_name.as_ref())?;
        let checksum = match &content.checksum {
            Some(checksum) => Some((
                checksum.kind,
                optional(Some(&checksum.value))?
                    .ok_or_else(|| BuildError::Invalid("a checksum without a value".to_owned()))?,
            )),
            None => None,
        };
        Ok(Self {
            part: content.part.clone().unwrap_or_default(),
            for_each,
            source,
            when,
            max_bytes: content.max_bytes.get(),
            size,
            checksum,
            content_type,
            version,
            file_name,
            refresh,
            fields,
        })
    }

    /// The part's name.
    pub(super) fn part(&self) -> &str {
        &self.part
    }

    /// Whether the part is the export's file the record was read from (`entry`).
    pub(super) fn is_entry(&self) -> bool {
        matches!(self.source, Source::Entry)
    }

    /// The content of `record` (listed as `raw`, a file's media facts) stored while its page
    /// was read, for a part that is its file (`entry`): the copy of `copied` whose hash is
    /// the facts' `blake3`. `None` when the file was not copied (larger than `max_bytes`).
    pub(super) fn copied(
        &self,
        id: &Arc<str>,
        raw: &Node<'_>,
        copied: &[crate::source::archive::CopiedEntry],
        config: &minijinja::Value,
        templates: &Templates,
    ) -> Result<Option<crate::store::ContentStored>, String> {
        use crate::decode::document::get;
        let Some(hash) = get(raw, "blake3").and_then(|hash| hash.as_str()) else {
            return Ok(None);
        };
        let Some(file) = copied.iter().find(|file| file.hash == hash) else {
            return Ok(None);
        };
        let content_type = match &self.content_type {
            Some(source) => {
                let parent = minijinja::Value::from(());
                let context = Lazy::new(raw, &self.fields, &parent, config);
                text(
                    &source
                        .value(&Target::new(raw), &context, templates)
                        .map_err(|error| format!("content.content_type: {error}"))?,
                )
            }
            None => get(raw, "content_type")
                .and_then(|kind| kind.as_str())
                .map(str::to_owned),
        };
        let name = file.path.rsplit('/').next().unwrap_or(&file.path);
        let hash = file
            .hash
            .parse()
            .map_err(|_| format!("the file's copy is kept under `{}`, not a hash", file.hash))?;
        Ok(Some(crate::store::ContentStored {
            id: Arc::clone(id),
            part: self.part.clone(),
            file_name: Some(name.to_owned()),
            blob: BlobRef {
                hash,
                size: file.size,
                content_type,
            },
        }))
    }

    /// What `record` (listed as `raw`) owes of this part: nothing when `when` says it has none
    /// (or, for a part per item, it has no item), or the rendered downloads. An error says
    /// which part could not be made.
    pub(super) fn due(
        &self,
        id: &Arc<str>,
        raw: &Node<'_>,
        config: &minijinja::Value,
        base_url: &str,
        templates: &Templates,
    ) -> Result<Vec<ContentDue>, String> {
        let parent = minijinja::Value::from(());
        let Some((path, key)) = &self.for_each else {
            let context = Lazy::new(raw, &self.fields, &parent, config);
            let due = self.one(
                id,
                raw,
                &context,
                config,
                self.part.clone(),
                base_url,
                templates,
            )?;
            return Ok(due.into_iter().collect());
        };
        let mut items = Vec::new();
        path.for_each(&Target::new(raw), |item| items.push(item));
        let mut owed = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let context = Lazy::new(raw, &self.fields, &parent, config).with_item(item);
            let key = match key {
                Some(key) => text(
                    &key.value(&Target::new(item), &context, templates)
                        .map_err(|error| format!("content.key: {error}"))?,
                )
                .ok_or_else(|| format!("content.key: item {index} has no key"))?,
                None => index.to_string(),
            };
            let part = format!("{}/{key}", self.part);
            owed.extend(self.one(id, item, &context, config, part, base_url, templates)?);
        }
        Ok(owed)
    }

    /// The download a record fetched again owes (`fresh`, the answer to its refresh request),
    /// for a part that is not per item; `None` when the fresh record has none.
    fn again(
        &self,
        id: &Arc<str>,
        fresh: &Node<'_>,
        config: &minijinja::Value,
        base_url: &str,
        templates: &Templates,
    ) -> Result<Option<ContentDue>, String> {
        let record = match self
            .refresh
            .as_ref()
            .and_then(|refresh| refresh.record.as_ref())
        {
            Some(path) => path.first(&Target::new(fresh)).ok_or_else(|| {
                "the record is not in the answer to its refresh request".to_owned()
            })?,
            None => fresh,
        };
        let parent = minijinja::Value::from(());
        let context = Lazy::new(record, &self.fields, &parent, config);
        self.one(
            id,
            record,
            &context,
            config,
            self.part.clone(),
            base_url,
            templates,
        )
    }

    /// What one record (or item: `node`) owes of the part.
    #[allow(clippy::too_many_arguments)]
    fn one(
        &self,
        id: &Arc<str>,
        node: &Node<'_>,
        context: &Lazy<'_>,
        config: &minijinja::Value,
        part: String,
        base_url: &str,
        templates: &Templates,
    ) -> Result<Option<ContentDue>, String> {
        if let Some(when) = &self.when {
            let has = templates
                .test(when, context.context())
                .map_err(|error| format!("content.when: {error}"))?;
            if !has {
                return Ok(None);
            }
        }
        let target = Target::new(node);
        let value =
            |what: &str, source: Option<&CompiledValue>| -> Result<Option<String>, String> {
                let Some(source) = source else {
                    return Ok(None);
                };
                let value = source
                    .value(&target, context, templates)
                    .map_err(|error| format!("content.{what}: {error}"))?;
                Ok(text(&value))
            };
        let mut order = Order {
            request: KeptRequest::default(),
            answer: None,
            inline: None,
            collect: false,
            max_bytes: self.max_bytes,
            size: value("size", self.size.as_ref())?
                .map(|size| {
                    size.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("content.size: `{size}` is not a number of bytes"))
                })
                .transpose()?,
            checksum: match &self.checksum {
                Some((kind, source)) => value("checksum", Some(source))?
                    .map(|hex| {
                        Checksum::from_hex(kind.name(), &hex)
                            .map_err(|error| format!("content.checksum: {error}"))?;
                        Ok::<_, String>((kind.name().to_owned(), hex))
                    })
                    .transpose()?,
                None => None,
            },
            content_type: value("content_type", self.content_type.as_ref())?,
            refresh: None,
        };
        match &self.source {
            Source::Request(plan, answer) => {
                order.request = plan
                    .render_kept(base_url, context.context(), templates)
                    .map_err(|error| format!("content.request: {error}"))?;
                order.answer = answer.clone();
                if let Some(refresh) = &self.refresh {
                    order.refresh = Some(RefreshOrder {
                        record: Some(refresh.fields.kept(node)),
                        request: KeptRequest::default(),
                        on: refresh.on.clone(),
                    });
                }
            }
            Source::Collect(collect) => {
                let top = minijinja::context! {
                    node => minijinja::Value::from(minijinja::value::Serde(node)),
                    config => config.clone(),
                };
                let request = collect
                    .request
                    .render(base_url, &top, templates, &[])
                    .map_err(|error| format!("content.collect.request: {error}"))?;
                order.request = KeptRequest::of(request);
                order.collect = true;
            }
            Source::Entry => return Ok(None),
            Source::Inline(source, encoding) => {
                // A record without the bytes has no such part (Gmail: a message without an
                // HTML body).
                let Some(data) = value("inline", Some(source))? else {
                    return Ok(None);
                };
                // Encoded bytes are at least three quarters of their text.
                let least = if *encoding == Encoding::Text {
                    data.len()
                } else {
                    data.len() / 4 * 3
                };
                if least as u64 > self.max_bytes.saturating_add(2) {
                    return Err(format!(
                        "content.inline: the content is larger than {} bytes, the part's `max_bytes`",
                        self.max_bytes
                    ));
                }
                order.inline = Some((data, *encoding));
            }
        }
        Ok(Some(ContentDue {
            id: Arc::clone(id),
            part,
            file_name: value("file_name", self.file_name.as_ref())?,
            version: value("version", self.version.as_ref())?.unwrap_or_default(),
            request: serde_json::to_string(&order).map_err(|error| error.to_string())?,
        }))
    }
}

/// A value as the text a download keeps: a string or a number; nothing for anything else.
fn text(value: &Option<std::borrow::Cow<'_, serde_json::Value>>) -> Option<String> {
    match value.as_deref()? {
        serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
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
    /// The streams' content parts, to make a request again from a record fetched again.
    pub(super) connector: &'a super::plan::CompiledConnector,
    /// The integration's config, as templates see it.
    pub(super) config: &'a minijinja::Value,
}

/// Why a download failed: what to say, and the status the provider answered, if that is why.
struct Failed {
    reason: String,
    status: Option<u16>,
}

impl From<String> for Failed {
    fn from(reason: String) -> Self {
        Self {
            reason,
            status: None,
        }
    }
}

impl<S: Sink> Downloader<'_, S> {
    /// Makes every download the integration owes, in their order (see [`DueAt`]), until none
    /// is left that has not failed too often. Fails only when the store does; a failed download
    /// is noted and the others go on.
    pub(super) async fn run(&self) -> Result<(), StoreError> {
        // Each download is tried once a run: each read starts after the last one's end, so one
        // that failed (still owed) or was owed again meanwhile waits for the next run, and the
        // loop ends whatever the store answers; the run holds one read's downloads at a time.
        let mut after: Option<DueAt> = None;
        loop {
            let due = self
                .sink
                .due_downloads(
                    &self.scope.integration_id,
                    MAX_ATTEMPTS,
                    after.as_ref(),
                    DUE_PER_READ,
                )
                .await?;
            let Some(last) = due.last() else {
                return Ok(());
            };
            after = Some(last.at.clone());
            // `limits.max_concurrent_downloads` at a time; past the run's limits the rest stays
            // owed, for the next run.
            let stopped = AtomicBool::new(false);
            let at_once = usize::from(self.connector.spec.limits.max_concurrent_downloads.max(1));
            stream::iter(due.into_iter().map(Ok))
                .try_for_each_concurrent(at_once, |download| self.one(download, &stopped))
                .await?;
            if stopped.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
    }

    /// Makes `download` and records how it went, unless the run's limits are reached (then
    /// `stopped` says so, and it stays owed).
    async fn one(&self, download: DueDownload, stopped: &AtomicBool) -> Result<(), StoreError> {
        if stopped.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(spent) = self.budget.spent(self.counters.totals().requests) {
            if !stopped.swap(true, Ordering::Relaxed) {
                tracing::warn!(connector = %self.scope.platform, "{spent}; the content not downloaded yet stays owed");
            }
            return Ok(());
        }
        let deadline = self.budget.deadline();
        let Ok(downloaded) = tokio::time::timeout_at(deadline, self.download(&download)).await
        else {
            if !stopped.swap(true, Ordering::Relaxed) {
                tracing::warn!(connector = %self.scope.platform, "the run reached the connector's time limit (`limits.max_run_time`); the content not downloaded yet stays owed");
            }
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
                    .download_failed(self.scope, &download, &error)
                    .await?;
                self.observer.event(&Event::ContentFailed);
            }
        }
        Ok(())
    }

    /// One download into the blob store (or, for a part that is in its record, its bytes
    /// kept); the error says why it failed and what to do. A request whose URL has expired (the
    /// part's `refresh.on`) is made again once, from the record fetched again.
    async fn download(&self, due: &DueDownload) -> Result<BlobRef, String> {
        let order: Order = serde_json::from_str(&due.request)
            .map_err(|error| format!("the owed request is unreadable: {error}"))?;
        if order.collect {
            return self.collect(due, &order).await;
        }
        let failed = match self.fetch(&order).await {
            Ok(blob) => return Ok(blob),
            Err(failed) => failed,
        };
        let expired = order.refresh.as_ref().filter(|refresh| {
            failed
                .status
                .is_some_and(|status| refresh.on.contains(&status))
        });
        let Some(refresh) = expired else {
            return Err(failed.reason);
        };
        tracing::info!(
            connector = %self.scope.platform,
            stream = %due.stream,
            record = %due.id,
            "the content's URL has expired; the record is fetched again for a fresh one"
        );
        let fresh = self.refreshed(due, refresh).await.map_err(|error| {
            format!(
                "{} (its URL had expired, and fetching the record again failed: {error})",
                failed.reason
            )
        })?;
        self.fetch(&fresh).await.map_err(|failed| failed.reason)
    }

    /// The compiled part `due` was owed by: the spec as it is now.
    fn part_of(&self, due: &DueDownload) -> Result<&CompiledContent, String> {
        self.connector
            .streams
            .get(&due.stream)
            .and_then(|stream| stream.content.iter().find(|part| part.part == due.part))
            .ok_or_else(|| {
                format!(
                    "the stream `{}` has no content part `{}` any more",
                    due.stream, due.part
                )
            })
    }

    /// A document collected from the tree whose top request `order` holds: the nodes' lines,
    /// depth first, kept as one blob.
    async fn collect(&self, due: &DueDownload, order: &Order) -> Result<BlobRef, String> {
        let Source::Collect(collect) = &self.part_of(due)?.source else {
            return Err(format!(
                "the content part `{}` no longer collects a tree",
                due.part
            ));
        };
        let collect = &**collect;
        let templates = &self.connector.templates;
        let base_url = self
            .connector
            .spec
            .base_url
            .as_ref()
            .map_or("", |url| url.as_str());
        let top = self.request_of(&order.request)?;
        let mut document = String::new();
        let mut nodes: u32 = 0;
        let mut levels = vec![(self.children(collect, top).await?.into_iter(), 0u8)];
        while let Some((level, depth)) = levels.last_mut() {
            let depth = *depth;
            let Some(node) = level.next() else {
                levels.pop();
                continue;
            };
            nodes += 1;
            if nodes > collect.max_nodes {
                return Err(format!(
                    "the document has more than {} nodes, the part's `collect.max_nodes`",
                    collect.max_nodes
                ));
            }
            let node = minijinja::Value::from(minijinja::value::Serde(&node));
            if let Some(line) = collect.line(&node, depth, self.config, templates)? {
                document.push_str(&line);
                document.push('\n');
                if document.len() as u64 > order.max_bytes {
                    return Err(format!(
                        "the document is larger than {} bytes, the part's `max_bytes`",
                        order.max_bytes
                    ));
                }
            }
            let context = minijinja::context! { node => node, config => self.config.clone() };
            let has_children = match &collect.children {
                Some(children) => templates
                    .test(children, &context)
                    .map_err(|error| format!("collect.children: {error}"))?,
                None => false,
            };
            if has_children && depth < collect.max_depth {
                let request = collect
                    .request
                    .render(base_url, &context, templates, &[])
                    .map_err(|error| format!("collect.request: {error}"))?;
                let request = self.request_of(&KeptRequest::of(request))?;
                let children = self.children(collect, request).await?;
                levels.push((children.into_iter(), depth + 1));
            }
        }
        self.keep(document.as_bytes(), order, None, None)
            .await
            .map_err(|error| error.to_string())
    }

    /// A node's children: every page of them.
    async fn children(
        &self,
        collect: &CompiledCollect,
        mut request: HttpRequest,
    ) -> Result<Vec<serde_json::Value>, String> {
        let mut nodes = Vec::new();
        for _ in 0..MAX_CHILD_PAGES {
            if let Some(spent) = self.budget.spent(self.counters.totals().requests) {
                return Err(format!(
                    "{spent}; the document is made again by the next run"
                ));
            }
            let page: serde_json::Value = self
                .http
                .fetch(&request, self.auth, self.observer, |answer| {
                    serde_json::from_slice(&answer.body)
                        .map_err(|error| format!("the answer is not JSON: {error}"))
                })
                .await
                .map_err(|error| format!("{error} ({})", error.hint()))?;
            nodes.extend(collect.records.query(&page).all().into_iter().cloned());
            let cursor = collect.paging.as_ref().and_then(|(token, param)| {
                match token.query(&page).first() {
                    Some(serde_json::Value::String(cursor)) if !cursor.is_empty() => {
                        Some((param, cursor.clone()))
                    }
                    _ => None,
                }
            });
            let Some((param, cursor)) = cursor else {
                return Ok(nodes);
            };
            let kept: Vec<(String, String)> = request
                .url
                .query_pairs()
                .filter(|(name, _)| name != param.as_str())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
            request
                .url
                .query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair(param, &cursor);
        }
        Err(format!(
            "a node has more than {MAX_CHILD_PAGES} pages of children"
        ))
    }

    /// A request to send: the connector's headers added to those rendered.
    fn request_of(&self, kept: &KeptRequest) -> Result<HttpRequest, String> {
        let mut headers = self.headers.clone();
        headers.extend(kept.headers.iter().cloned());
        Ok(HttpRequest {
            method: reqwest::Method::from_bytes(kept.method.as_bytes())
                .map_err(|_| format!("`{}` is not an HTTP method", kept.method))?,
            url: url::Url::parse(&kept.url).map_err(|error| format!("`{}`: {error}", kept.url))?,
            headers,
            body: kept.json.clone().map(RequestBody::Json),
            max_body: None,
        })
    }

    /// The record of `due` fetched again, and the download made from it.
    async fn refreshed(&self, due: &DueDownload, refresh: &RefreshOrder) -> Result<Order, String> {
        let part = self.part_of(due)?;
        let spec = &self.connector.spec;
        let base_url = spec.base_url.as_ref().map_or("", |url| url.as_str());
        let request = match &refresh.record {
            Some(record) => {
                let plan = part.refresh.as_ref().ok_or_else(|| {
                    format!(
                        "the content part `{}` no longer fetches its record again",
                        due.part
                    )
                })?;
                let context = minijinja::context! {
                    record => minijinja::Value::from(minijinja::value::Serde(record)),
                    config => self.config.clone(),
                };
                let rendered = plan
                    .request
                    .render(base_url, &context, &self.connector.templates, &[])
                    .map_err(|error| format!("content.refresh.request: {error}"))?;
                self.request_of(&KeptRequest::of(rendered))?
            }
            None => self.request_of(&refresh.request)?,
        };
        let document = self
            .http
            .fetch(&request, self.auth, self.observer, |answer| {
                let text = String::from_utf8(answer.body.to_vec())
                    .map_err(|_| "the answer is not UTF-8 text".to_owned())?;
                crate::decode::document::Document::json(text)
                    .map_err(|error| format!("the answer is not JSON: {error}"))
            })
            .await
            .map_err(|error| format!("{error} ({})", error.hint()))?;
        let id: Arc<str> = Arc::from(due.id.as_str());
        let owed = part
            .again(
                &id,
                document.root(),
                self.config,
                base_url,
                &self.connector.templates,
            )?
            .ok_or_else(|| "the record fetched again has no such content".to_owned())?;
        let mut order: Order =
            serde_json::from_str(&owed.request).map_err(|error| error.to_string())?;
        // Made once: a fresh URL that has expired too is not refreshed again.
        order.refresh = None;
        Ok(order)
    }

    /// Makes one download (or keeps a part's bytes from its record).
    async fn fetch(&self, order: &Order) -> Result<BlobRef, Failed> {
        let checksum = order
            .checksum
            .as_ref()
            .map(|(kind, hex)| Checksum::from_hex(kind, hex))
            .transpose()?;
        if let Some((data, encoding)) = &order.inline {
            let bytes = encoding
                .decode(data)
                .map_err(|error| format!("the record's content is {error}"))?;
            return self
                .keep(&bytes, order, checksum, None)
                .await
                .map_err(|error| Failed::from(error.to_string()));
        }
        let mut request = self.request_of(&order.request)?;
        // JSON around the bytes is larger than they are: base64 by a third.
        request.max_body = Some(match order.answer {
            Some(_) => order.max_bytes.saturating_mul(4) / 3 + 64 * 1024,
            None => order.max_bytes,
        });
        let checksum = &checksum;
        let partial = &Partial::default();
        let downloaded = self
            .http
            .download_with(
                &request,
                &|| partial.range(),
                self.auth,
                self.observer,
                |answer| async move {
                    match &order.answer {
                        Some(encoded) => {
                            self.unwrap(answer, order, encoded, checksum.clone()).await
                        }
                        None => self.store(answer, order, checksum.clone(), partial).await,
                    }
                },
            )
            .await;
        match downloaded {
            Ok(Ok(blob)) => Ok(blob),
            Ok(Err(error)) => Err(Failed::from(format!(
                "{error} (check the blob store: its disk's free space and permissions, or the S3 server)"
            ))),
            Err(HttpError::TooLarge { url, limit }) => Err(Failed::from(format!(
                "the content at {url} is larger than {limit} bytes, the stream's `content.max_bytes`; raise it if such files are expected"
            ))),
            Err(error) => Err(Failed {
                status: match &error {
                    HttpError::Status { status, .. } => Some(*status),
                    _ => None,
                },
                reason: format!("{error} ({})", error.hint()),
            }),
        }
    }

    /// Reads an answer whose JSON carries the bytes encoded (Gmail's attachments), and keeps
    /// them. An answer without them, or not JSON, is refused without retrying: asking again
    /// would get the same.
    async fn unwrap(
        &self,
        mut answer: Streaming,
        order: &Order,
        encoded: &Encoded,
        checksum: Option<Checksum>,
    ) -> Result<Result<BlobRef, BlobError>, Refusal> {
        let mut body = Vec::new();
        while let Some(chunk) = answer.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        let refuse = |reason: String| {
            Refusal::Stop(HttpError::Unexpected {
                url: answer.url().to_owned(),
                reason,
            })
        };
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| refuse(format!("the answer is not JSON: {error}")))?;
        drop(body);
        let path = serde_json_path::JsonPath::parse(&encoded.json)
            .map_err(|error| refuse(format!("`{}`: {error}", encoded.json)))?;
        let Some(serde_json::Value::String(data)) = path.query(&value).first() else {
            return Err(refuse(format!(
                "the answer has no string at `{}` (the content's `answer.json`)",
                encoded.json
            )));
        };
        let bytes = encoded
            .encoding
            .decode(data)
            .map_err(|error| refuse(format!("`{}` is {error}", encoded.json)))?;
        drop(value);
        let declared = declared_type(&answer.headers).filter(|kind| kind != "application/json");
        Ok(self.keep(&bytes, order, checksum, declared).await)
    }

    /// Keeps bytes already in memory (a part in its record, or decoded from an answer).
    async fn keep(
        &self,
        bytes: &[u8],
        order: &Order,
        checksum: Option<Checksum>,
        declared: Option<String>,
    ) -> Result<BlobRef, BlobError> {
        let mut writer = self.blobs.writer(order.max_bytes).await?;
        writer.verify(checksum.as_ref());
        writer.write(bytes).await?;
        let sniffed = infer::get(bytes).map(|kind| kind.mime_type().to_owned());
        let expected = Expected {
            size: order.size,
            checksum,
            content_type: order.content_type.clone().or(declared).or(sniffed),
        };
        writer.finish(self.blobs, expected).await
    }

    /// Streams one answer into a staged blob and commits it. A failing blob store comes back
    /// as the inner error: retrying the request would not help.
    async fn store(
        &self,
        mut answer: Streaming,
        order: &Order,
        checksum: Option<Checksum>,
        partial: &Partial,
    ) -> Result<Result<BlobRef, BlobError>, Refusal> {
        let mut writer = match partial.take_writer() {
            Some(writer) => writer,
            None => match self.blobs.writer(order.max_bytes).await {
                Ok(mut writer) => {
                    writer.verify(checksum.as_ref());
                    writer
                }
                Err(error) => return Ok(Err(error)),
            },
        };
        // An answer to a `Range` that starts where the bytes so far end continues them;
        // anything else (a whole answer: the file changed, or the server ignores ranges) starts
        // over.
        let continues = writer.size() > 0
            && answer.status == 206
            && range_start(&answer.headers) == Some(writer.size());
        if !continues {
            if answer.status == 206 {
                partial.forget();
                return Err(Refusal::Retry(
                    "the server answered a part that does not continue the download".to_owned(),
                ));
            }
            if writer.size() > 0
                && let Err(error) = writer.restart(checksum.as_ref()).await
            {
                return Ok(Err(error));
            }
            partial.begin(&answer.headers);
        }
        loop {
            let chunk = match answer.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                // Cut off: the next attempt asks for the rest (see `Partial`).
                Err(Refusal::Retry(reason)) => {
                    partial.keep(writer);
                    return Err(Refusal::Retry(reason));
                }
                Err(refusal) => return Err(refusal),
            };
            if writer.size() == 0 {
                partial.sniff(&chunk);
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
        let declared = declared_type(&answer.headers);
        let content_type = order
            .content_type
            .clone()
            .or(declared)
            .or_else(|| partial.sniffed().map(str::to_owned));
        let expected = Expected {
            size: order.size,
            checksum,
            content_type,
        };
        match writer.finish(self.blobs, expected).await {
            // A body that is not what was announced may have been cut short: asked again, whole.
            Err(BlobError::Mismatch(reason)) => {
                partial.forget();
                Err(Refusal::Retry(reason))
            }
            finished => Ok(finished),
        }
    }
}

/// What one download has of its bytes across the attempts of its request: an answer cut off
/// is asked again from where it stopped (`Range: bytes=N-`), with the version the first answer
/// named (its strong `ETag`, else its `Last-Modified`) as `If-Range`, so that a file changed in
/// between comes whole and starts over. Without a version the request is made whole again.
/// What a killed run had written is not kept: its staged file is removed, and the next run
/// downloads the file from its start.
#[derive(Default)]
struct Partial {
    /// The staged bytes, between attempts.
    writer: std::sync::Mutex<Option<BlobWriter>>,
    /// The offset the next attempt asks from, and the version it names.
    resume: std::sync::Mutex<Option<(u64, String)>>,
    /// The type the first bytes say, for an answer that says none.
    sniffed: std::sync::Mutex<Option<&'static str>>,
}

impl Partial {
    fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The headers of the next attempt: none, or the range after the bytes kept.
    fn range(&self) -> Vec<(String, String)> {
        match &*Self::lock(&self.resume) {
            Some((from, version)) if *from > 0 => vec![
                ("Range".to_owned(), format!("bytes={from}-")),
                ("If-Range".to_owned(), version.clone()),
            ],
            _ => vec![],
        }
    }

    fn take_writer(&self) -> Option<BlobWriter> {
        Self::lock(&self.writer).take()
    }

    /// A whole answer begins: its version, if it names one, is what a resumed attempt asks
    /// for.
    fn begin(&self, headers: &reqwest::header::HeaderMap) {
        let header = |name| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        // A weak ETag (`W/"..."`) may not be sent in `If-Range`.
        let version = header(reqwest::header::ETAG)
            .filter(|tag| tag.starts_with('"'))
            .or_else(|| header(reqwest::header::LAST_MODIFIED));
        *Self::lock(&self.resume) = version.map(|version| (0, version));
        *Self::lock(&self.sniffed) = None;
    }

    /// Keeps `writer`'s bytes for the next attempt, which asks for the rest.
    fn keep(&self, writer: BlobWriter) {
        if let Some((from, _)) = &mut *Self::lock(&self.resume) {
            *from = writer.size();
        }
        *Self::lock(&self.writer) = Some(writer);
    }

    /// The next attempt asks for the whole file.
    fn forget(&self) {
        *Self::lock(&self.resume) = None;
        *Self::lock(&self.writer) = None;
    }

    fn sniff(&self, first: &[u8]) {
        *Self::lock(&self.sniffed) = infer::get(first).map(|kind| kind.mime_type());
    }

    fn sniffed(&self) -> Option<&'static str> {
        *Self::lock(&self.sniffed)
    }
}

/// Where a `206` answer's part starts (`Content-Range: bytes 1048576-3145727/3145728`).
fn range_start(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let value = headers.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let (start, _) = value.trim().strip_prefix("bytes ")?.split_once('-')?;
    start.trim().parse().ok()
}

/// The type an answer declares for its body, without parameters; none for the generic
/// `application/octet-stream` (Dropbox sends every file as it).
fn declared_type(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or(value)
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|value| !value.is_empty() && value != "application/octet-stream")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A download owes its refresh as what the request reads of the record; one owed before
    /// (with the request rendered) is still read, and its request sent as it was kept.
    #[test]
    fn owed_refreshes_keep_the_record_and_old_ones_their_request() {
        let order = Order {
            request: KeptRequest {
                method: "GET".to_owned(),
                url: "https://lh3.googleusercontent.com/lr/AAJ1LKc=d".to_owned(),
                ..KeptRequest::default()
            },
            answer: None,
            inline: None,
            collect: false,
            max_bytes: 1 << 30,
            size: None,
            checksum: None,
            content_type: Some("image/jpeg".to_owned()),
            refresh: Some(RefreshOrder {
                record: Some(serde_json::json!({"id": "AF1QipO5r2Lk8wQz"})),
                request: KeptRequest::default(),
                on: vec![403],
            }),
        };
        let text = serde_json::to_string(&order).unwrap();
        assert!(
            text.contains(r#""refresh":{"record":{"id":"AF1QipO5r2Lk8wQz"},"on":[403]}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Order>(&text).unwrap(), order);

        let before = r#"{"method":"GET","url":"https://lh3.googleusercontent.com/lr/AAJ1LKc=d","max_bytes":1073741824,"refresh":{"method":"GET","url":"https://photoslibrary.googleapis.com/v1/mediaItems/AF1QipO5r2Lk8wQz","on":[403]}}"#;
        let kept: Order = serde_json::from_str(before).unwrap();
        let refresh = kept.refresh.unwrap();
        assert_eq!(refresh.record, None);
        assert_eq!(
            refresh.request.url,
            "https://photoslibrary.googleapis.com/v1/mediaItems/AF1QipO5r2Lk8wQz"
        );
        assert_eq!(refresh.on, [403]);
    }
}
