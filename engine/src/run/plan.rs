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
    /// Which parent records have children of this stream (`parent.when`).
    pub(super) parent_when: Option<TemplateId>,
    pub(super) children: Vec<String>,
    pub(super) is_root: bool,
    pub(super) incremental: Option<CompiledIncremental>,
    pub(super) unseen_deleted: bool,
    /// How often a pass lists everything again (`reconcile.every`).
    pub(super) reconcile: Option<std::time::Duration>,
    /// How many parent records' requests run at once.
    pub(super) concurrency: usize,
    pub(super) recurse: Option<CompiledRecurse>,
    pub(super) gone: Option<CompiledGone>,
    /// How its records' content is kept: each part.
    pub(super) content: Vec<super::content::CompiledContent>,
    /// The session opened before it lists, if any.
    pub(super) session: Option<super::session::CompiledSession>,
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
    spec: &ConnectorSpec,
) -> Result<ArchivePlan, BuildError> {
    let selection = archive.selection().map_err(|error| {
        BuildError::Archive(format!(
            "archive.{}[{}]: {}",
            error.list, error.index, error.reason
        ))
    })?;
    let mut decoder =
        Decoder::for_archive(&archive.split, stream.decode).map_err(BuildError::Archive)?;
    // Streams that read other elements of the same XML files frame them all, so that one read
    // serves them all (Apple Health's records and workouts in one pass over export.xml); each
    // selects its own with `records`. A stream read alone frames them all too, so that its
    // stored positions count the same frames however it is run.
    if let crate::decode::Framing::XmlElements(names) = &mut decoder.framing {
        *names = shared_elements(stream, spec);
    }
    let max_document = stream.max_body.unwrap_or(max_body).get();
    Ok(ArchivePlan {
        selection,
        decoder,
        records: CompiledPath::compile(stream.records.as_str())?,
        max_document: usize::try_from(max_document).unwrap_or(usize::MAX),
        complete: archive.complete,
        page_per_entry: reads_entry(stream),
        dedupe: archive.dedupe,
        // Checked to be the only part (spec check): the file's own bytes.
        copy_entries: stream
            .content
            .iter()
            .flat_map(|contents| contents.parts())
            .find(|content| content.entry)
            .map(|content| content.max_bytes.get()),
        join: archive
            .join
            .as_ref()
            .map(|join| compile_join(join, max_document))
            .transpose()?,
    })
}

/// An archive stream's join, compiled.
fn compile_join(
    join: &crate::spec::Join,
    max_document: u64,
) -> Result<crate::source::archive::JoinPlan, BuildError> {
    let selection = join.selection().map_err(|error| {
        BuildError::Archive(format!(
            "archive.{}[{}]: {}",
            error.list, error.index, error.reason
        ))
    })?;
    let decoder = Decoder::for_archive(&join.split, join.decode)
        .map_err(|error| BuildError::Archive(format!("archive.join: {error}")))?;
    let mut templates = crate::template::Templates::default();
    let compile = |templates: &mut crate::template::Templates, source: &str| {
        templates
            .add(source)
            .map_err(|error| BuildError::Archive(format!("archive.join: {error}")))
    };
    let key = compile(&mut templates, join.key.as_str())?;
    let candidates = join
        .candidates
        .iter()
        .map(|candidate| compile(&mut templates, candidate.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let select = join
        .select
        .as_ref()
        .map(|path| CompiledPath::compile(path.as_str()))
        .transpose()?;
    Ok(crate::source::archive::JoinPlan {
        selection,
        decoder,
        select,
        templates,
        key,
        candidates,
        into: join.into.clone(),
        max_document: usize::try_from(max_document).unwrap_or(usize::MAX),
    })
}

/// The XML element names of every archive stream of `spec` that reads what `stream` reads
/// (see [`ReadKey`]) split into elements, `stream`'s own first.
fn shared_elements(stream: &crate::spec::Stream, spec: &ConnectorSpec) -> Vec<String> {
    let key = ReadKey::of(stream);
    let mut names: Vec<String> = Vec::new();
    let own = stream.archive.iter().chain(
        spec.streams
            .values()
            .filter(|other| key.is_some() && ReadKey::of(other) == key)
            .filter_map(|other| other.archive.as_ref()),
    );
    for archive in own {
        if let crate::spec::Split::Element(name) = &archive.split
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    names
}

/// `roots` in groups that are imported in one read (each stream alone but for those with the
/// same [`ReadKey`]), in the order of their first stream.
pub(super) fn read_groups(spec: &ConnectorSpec, roots: &[String]) -> Vec<Vec<String>> {
    let mut groups: Vec<(Option<ReadKey>, Vec<String>)> = Vec::new();
    for name in roots {
        let key = spec.streams.get(name).and_then(ReadKey::of);
        match groups
            .iter_mut()
            .find(|(other, _)| key.is_some() && *other == key)
        {
            Some((_, group)) => group.push(name.clone()),
            None => groups.push((key, vec![name.clone()])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// What makes two archive streams' reads one: the same files, decoded alike, split into XML
/// elements, joined to nothing, and paged alike. Streams with equal keys are imported in one
/// read of the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadKey {
    entries: Vec<String>,
    exclude: Vec<String>,
    page_per_entry: bool,
}

impl ReadKey {
    /// The stream's key, if it can share its read.
    pub(super) fn of(stream: &crate::spec::Stream) -> Option<Self> {
        let archive = stream.archive.as_ref()?;
        let shares = stream.decode == crate::spec::Decode::Xml
            && matches!(archive.split, crate::spec::Split::Element(_))
            && archive.join.is_none();
        shares.then(|| Self {
            entries: archive.entries.clone(),
            exclude: archive.exclude.clone(),
            page_per_entry: reads_entry(stream),
        })
    }
}

/// Whether the stream's templates may read `entry` (the name standing alone, not a record's
/// attribute `record.entry`): a guess on the side of yes, which costs only smaller pages.
fn reads_entry(stream: &crate::spec::Stream) -> bool {
    let text = serde_json::to_string(&(&stream.id, &stream.key, &stream.map, &stream.deleted))
        .unwrap_or_default();
    text.match_indices("entry").any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + "entry".len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '\'')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
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

    /// Whether the next pass of a stream that reconciles lists everything, from its stored
    /// state: it never has, or its last such pass is `reconcile.every` old.
    pub(super) fn reconciles_now(
        &self,
        state: &crate::state::StreamState,
        now: jiff::Timestamp,
    ) -> bool {
        let Some(every) = self.reconcile else {
            return false;
        };
        state.listed_all_at.is_none_or(|at| {
            now.duration_since(at)
                .try_into()
                .is_ok_and(|since: std::time::Duration| since >= every)
        })
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
    /// The connector's own `headers`, for requests compiled without them (content downloads:
    /// their rendered requests are kept, and these may hold secrets).
    pub(super) headers: Vec<(String, TemplateId)>,
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
                    &spec,
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
                parent_when: stream
                    .parent
                    .as_ref()
                    .and_then(|parent| parent.when.as_ref())
                    .map(|when| templates.add_condition(when.as_str()))
                    .transpose()?,
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
                reconcile: stream
                    .reconcile
                    .as_ref()
                    .map(|reconcile| reconcile.every.get()),
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
                content: stream
                    .content
                    .iter()
                    .flat_map(|contents| contents.parts())
                    .map(|content| {
                        super::content::CompiledContent::compile(content, &mut templates)
                    })
                    .collect::<Result<_, _>>()?,
                session: stream
                    .session
                    .as_ref()
                    .map(|session| {
                        super::session::CompiledSession::compile(
                            session,
                            &spec.headers,
                            &mut templates,
                        )
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
        let headers = spec
            .headers
            .iter()
            .map(|(name, value)| Ok((name.clone(), templates.add(value.as_str())?)))
            .collect::<Result<Vec<_>, BuildError>>()?;
        Ok(Self {
            spec,
            templates,
            streams,
            response_error,
            headers,
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
