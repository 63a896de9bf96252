//! A run's plan: the connector with every path, template and request compiled once, ready to
//! run many times.

use std::sync::Arc;

use indexmap::IndexMap;

use crate::decode::Decoder;
use crate::extract::CompiledPath;
use crate::map::{CompiledValue, RecordMapper};
use crate::source::archive::ArchivePlan;
use crate::source::http::incremental::CompiledIncremental;
use crate::source::http::listing::Listing;
use crate::spec::ConnectorSpec;
use crate::template::{BuildError, TemplateId, Templates};

/// Where a stream's records come from.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per stream, compiled once; a box would only add a pointer to every page's path"
)]
pub(super) enum Reads {
    /// The provider's API: the stream's own request, paging and records.
    Requests(Listing),
    /// The files of a data export.
    Archive(Arc<ArchivePlan>),
}

#[derive(Debug)]
pub(super) struct CompiledStream {
    pub(super) reads: Reads,
    /// How its pages decode.
    pub(super) decoder: Decoder,
    /// The largest page body its own `max_body` allows (else the client's limit).
    pub(super) max_body: Option<u64>,
    pub(super) mapper: Option<RecordMapper>,
    /// This stream's `parent.fields`, evaluated on each parent record.
    pub(super) parent_fields: Vec<(String, CompiledValue)>,
    pub(super) children: Vec<String>,
    pub(super) is_root: bool,
    pub(super) incremental: Option<CompiledIncremental>,
    pub(super) unseen_deleted: bool,
    /// How many parent records' requests run at once.
    pub(super) concurrency: usize,
    pub(super) recurse: Option<CompiledRecurse>,
    pub(super) gone: Option<CompiledGone>,
}

/// A stream's `gone`, compiled.
#[derive(Debug)]
pub(super) struct CompiledGone {
    pub(super) on: Vec<u16>,
    pub(super) id: TemplateId,
}

/// A stream's `recurse`, compiled.
#[derive(Debug)]
pub(super) struct CompiledRecurse {
    pub(super) fields: Vec<(String, CompiledValue)>,
    pub(super) when: Option<TemplateId>,
    pub(super) max_depth: u8,
}

/// An archive stream's plan.
fn compile_archive(
    archive: &crate::spec::ArchiveEntries,
    stream: &crate::spec::Stream,
    max_body: crate::spec::ByteSize,
) -> Result<ArchivePlan, BuildError> {
    let selection = archive.selection().map_err(|error| {
        BuildError::Archive(format!(
            "archive.{}[{}]: {}",
            error.list, error.index, error.reason
        ))
    })?;
    let decoder =
        Decoder::for_archive(&archive.split, stream.decode).map_err(BuildError::Archive)?;
    let max_document = stream.max_body.unwrap_or(max_body).get();
    Ok(ArchivePlan {
        selection,
        decoder,
        records: CompiledPath::compile(stream.records.as_str())?,
        max_document: usize::try_from(max_document).unwrap_or(usize::MAX),
        complete: archive.complete,
    })
}

impl CompiledStream {
    /// The stream's request listing, for a stream that sends requests.
    pub(super) fn requests(&self) -> Option<&Listing> {
        match &self.reads {
            Reads::Requests(listing) => Some(listing),
            Reads::Archive(_) => None,
        }
    }

    /// Whether the stream runs more requests for each of its records: substreams, or itself
    /// again (`recurse`).
    pub(super) fn has_children(&self) -> bool {
        !self.children.is_empty() || self.recurse.is_some()
    }

    /// Root streams keep a checkpoint (to resume, and for incremental state); substreams only
    /// when they are incremental (one per parent: Calendar's per-calendar sync tokens).
    pub(super) fn keeps_state(&self) -> bool {
        self.is_root || self.incremental.is_some()
    }

    /// Whether a completed full pass marks what it did not see as deleted: root streams with a
    /// model that do not opt out. (Which passes may is [`super::pass::PassState`]'s `sweeps`.)
    pub(super) fn sweeps(&self) -> bool {
        self.is_root && self.unseen_deleted && self.mapper.is_some()
    }
}

/// A connector with every path, template and request compiled, ready to run many times.
#[derive(Debug)]
pub struct CompiledConnector {
    pub(super) spec: Arc<ConnectorSpec>,
    pub(super) templates: Templates,
    pub(super) streams: IndexMap<String, CompiledStream>,
    /// The spec's `response_error`: its condition and message path.
    pub(super) response_error: Option<(TemplateId, Option<CompiledPath>)>,
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
                        Ok((
                            field.clone(),
                            CompiledValue::compile(source, &mut templates)?,
                        ))
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
            let reads = match (&stream.request, &stream.archive) {
                (Some(request), _) => Reads::Requests(Listing::compile(
                    request,
                    &stream.paginate,
                    &stream.records,
                    &spec.headers,
                    &mut templates,
                )?),
                (None, Some(archive)) => Reads::Archive(Arc::new(compile_archive(
                    archive,
                    stream,
                    spec.limits.max_body,
                )?)),
                (None, None) => {
                    return Err(BuildError::Archive(format!(
                        "stream `{name}` has neither a `request` nor an `archive`"
                    )));
                }
            };
            let compiled = CompiledStream {
                reads,
                decoder: Decoder::from(stream.decode),
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
                // An export deletes what it lacks only when it says it is complete.
                unseen_deleted: match &stream.archive {
                    Some(archive) => archive.complete,
                    None => stream.unseen_deleted,
                },
                max_body: stream.max_body.map(crate::spec::ByteSize::get),
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
                                    Ok((
                                        field.clone(),
                                        CompiledValue::compile(source, &mut templates)?,
                                    ))
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
