//! Raw provider records → Hypernet model records.
//!
//! A [`RecordMapper`] is compiled once per stream and run; mapping one record touches only
//! pre-compiled JSONPaths and templates. The record is converted to a template value once, and
//! only when the stream has templates at all.

mod interpolation;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::convert::{Converter, Output};
use crate::decode::document::{Node, get};
use crate::extract::{CompiledPath, Target};
use crate::models::ModelKind;
use crate::record::{
    MappedRecord, Provenance, Reject, close, into_text, push_json, push_json_str, push_value,
};
use crate::spec::{FieldMapping, Stream, ValueSource};
use crate::template::{BuildError, TemplateId, Templates};
use crate::validate::{FieldCheck, misfit};
use interpolation::Interpolation;

/// Where a value comes from, compiled.
#[derive(Debug, Clone)]
pub enum CompiledValue {
    /// A JSONPath into the record.
    Path(CompiledPath),
    /// A template over `record`, `parent`, `config`.
    Template(TemplateId),
}

impl CompiledValue {
    /// Compiles a value source.
    pub fn compile(source: &ValueSource, templates: &mut Templates) -> Result<Self, BuildError> {
        Ok(match source {
            ValueSource::Path(path) => Self::Path(CompiledPath::compile(path.as_str())?),
            ValueSource::Template(text) => Self::Template(templates.add(text.as_str())?),
        })
    }

    /// The value for `record`; `None` when the path selects nothing or null, or the template
    /// renders empty.
    pub fn value<'a>(
        &self,
        record: &Target<'_, '_>,
        context: &Lazy<'_>,
        templates: &Templates,
    ) -> Result<Option<Cow<'a, Value>>, String> {
        match self {
            Self::Path(path) => Ok(selected(path.first(record))),
            Self::Template(id) => templates
                .render(id, context.get())
                .map(rendered)
                .map_err(|error| error.to_string()),
        }
    }
}

/// A selected node as a value (a copy: it is kept), `None` for nothing or null.
fn selected<'a>(node: Option<&Node<'_>>) -> Option<Cow<'a, Value>> {
    node.filter(|node| !node.is_null())
        .map(|node| Cow::Owned(Value::from(node)))
}

/// A record attribute a template reads: whole, or only some of its own attributes (every read
/// of it is `record.name.attribute`: Google Photos' `record.mediaMetadata.video`, where the
/// whole `mediaMetadata` was converted for every item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    name: String,
    /// `None`: the whole attribute.
    within: Option<Vec<String>>,
}

impl Read {
    fn whole(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            within: None,
        }
    }

    /// Adds `other`, a read of the same attribute.
    fn merge(&mut self, other: Self) {
        match (&mut self.within, other.within) {
            (Some(mine), Some(theirs)) => {
                for attribute in theirs {
                    if !mine.contains(&attribute) {
                        mine.push(attribute);
                    }
                }
            }
            (within, _) => *within = None,
        }
    }

    /// What of `record` the read takes: the attribute made `whole`, or, when only some of its
    /// own are read and it is an object, an `object` of those.
    fn take<T>(
        &self,
        record: &Node<'_>,
        whole: impl Fn(&Node<'_>) -> T,
        object: impl Fn(Vec<(String, T)>) -> T,
    ) -> Option<T> {
        let value = get(record, &self.name)?;
        Some(match &self.within {
            Some(attributes) if value.is_object() => object(
                attributes
                    .iter()
                    .filter_map(|attribute| {
                        Some((attribute.clone(), whole(get(value, attribute)?)))
                    })
                    .collect(),
            ),
            _ => whole(value),
        })
    }
}

/// The record attributes a template's text reads, when every use of `record` in it is a read
/// of one named attribute (`record.name`, `record['name']`, `record["name"]`), or of one of its
/// own (`record.name.attribute`); `None` when one is anything else (the whole record passed
/// on, a dynamic subscript, a method called on the record, `record` in a string).
fn record_reads(source: &str) -> Option<Vec<Read>> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let name_end = |text: &str| text.find(|c: char| !is_name(c)).unwrap_or(text.len());
    let mut reads: Vec<Read> = Vec::new();
    for (at, word) in source.match_indices("record") {
        let before = source[..at].chars().next_back();
        let rest = &source[at + word.len()..];
        // Part of a longer name (`records`, `my_record`), or an attribute of something else.
        if before.is_some_and(|c| is_name(c) || c == '.')
            || rest.chars().next().is_some_and(is_name)
        {
            continue;
        }
        let read = if let Some(attribute) = rest.strip_prefix('.') {
            let (name, after) = attribute.split_at(name_end(attribute));
            // `record.items()` is a method of the record, not an attribute.
            if after.starts_with('(') {
                return None;
            }
            // `record.name.attribute` reads that attribute alone, unless it is a method of
            // `name` (`.items()`), which needs `name` whole.
            match after
                .strip_prefix('.')
                .map(|inner| inner.split_at(name_end(inner)))
            {
                Some((attribute, after)) if !attribute.is_empty() && !after.starts_with('(') => {
                    Read {
                        name: name.to_owned(),
                        within: Some(vec![attribute.to_owned()]),
                    }
                }
                _ => Read::whole(name),
            }
        } else if let Some(quote) = rest
            .strip_prefix('[')
            .and_then(|inside| inside.chars().next().filter(|c| *c == '\'' || *c == '"'))
        {
            let inside = &rest[2..];
            let end = inside.find(quote)?;
            let (name, after) = inside.split_at(end);
            if name.contains('\\') || !after[1..].starts_with(']') {
                return None;
            }
            Read::whole(name)
        } else {
            return None;
        };
        if read.name.is_empty() {
            return None;
        }
        match reads.iter_mut().find(|known| known.name == read.name) {
            Some(known) => known.merge(read),
            None => reads.push(read),
        }
    }
    Some(reads)
}

/// The text of `value` (a text, or a list of texts as a path selects them for a list field)
/// split at `separator`, each part trimmed, empty parts dropped.
fn split_text(value: &Value, separator: &str) -> Value {
    let texts: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    Value::Array(
        texts
            .into_iter()
            .flat_map(|text| match text {
                Value::String(text) => text
                    .split(separator)
                    .map(str::trim)
                    .filter(|part| !part.is_empty())
                    .map(|part| Value::String(part.to_owned()))
                    .collect::<Vec<_>>(),
                other => vec![other.clone()],
            })
            .collect(),
    )
}

/// `value` (a number) multiplied by `scale`: a whole number stays whole when the product is.
fn scaled(value: &Value, scale: f64) -> Result<Value, String> {
    let Some(number) = value.as_f64() else {
        return Err(format!("`scale` multiplies numbers, and this is {value}"));
    };
    let product = number * scale;
    if value.is_i64() && product.fract() == 0.0 && product.abs() < 9.0e15 {
        return Ok(Value::from(product as i64));
    }
    serde_json::Number::from_f64(product)
        .map(Value::Number)
        .ok_or_else(|| format!("{number} × {scale} is not a number"))
}

/// A template's text as a value: an empty render is no value.
fn rendered<'a>(text: String) -> Option<Cow<'a, Value>> {
    (!text.is_empty()).then_some(Cow::Owned(Value::String(text)))
}

/// Which parts of a record a stream's templates read, found when they are compiled.
///
/// Converting a whole record into a template value costs more than everything else done with
/// it, so only the attributes templates name (`record.mimeType`) are converted, unless one
/// uses the record as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RecordFields {
    /// No template reads the record.
    #[default]
    None,
    /// Only these top-level attributes (or some of their own).
    Only(Vec<Read>),
    /// The whole record.
    All,
}

impl RecordFields {
    /// Adds what a template (or, with `condition`, a condition) reads.
    pub fn add(&mut self, source: &str, condition: bool) {
        let env = crate::template::environment();
        let variables = if condition {
            crate::template::condition_variables(&env, source)
        } else {
            crate::template::template_variables(&env, source)
        };
        // A template that does not compile is refused elsewhere; reading it whole is safe.
        if variables.is_err() {
            *self = Self::All;
            return;
        }
        // The record's reads are found in the text: minijinja 3.1's own analysis misses reads
        // inside a slice (`record.ts[:19]`) and reports a subscript (`record['@type']`) as a read
        // of the whole record, which would convert every record whole.
        match record_reads(source) {
            None => *self = Self::All,
            Some(found) => {
                for read in found {
                    match &mut *self {
                        Self::All => {}
                        Self::Only(reads) => {
                            match reads.iter_mut().find(|known| known.name == read.name) {
                                Some(known) => known.merge(read),
                                None => reads.push(read),
                            }
                        }
                        Self::None => *self = Self::Only(vec![read]),
                    }
                }
            }
        }
    }

    /// What one template reads.
    fn of(template: &str) -> Self {
        let mut fields = Self::default();
        fields.add(template, false);
        fields
    }

    /// The attributes read, by name (none at all is an empty list); `None` for the whole record.
    fn names(self) -> Option<Vec<String>> {
        match self {
            Self::None => Some(vec![]),
            Self::Only(reads) => Some(reads.into_iter().map(|read| read.name).collect()),
            Self::All => None,
        }
    }

    /// The parts of `record` read, kept as JSON (the whole record, or an object of the
    /// attributes named that it has), to render the templates later from.
    pub fn kept(&self, record: &Node<'_>) -> serde_json::Value {
        match self {
            Self::All => serde_json::Value::from(record),
            Self::None => serde_json::Value::Object(serde_json::Map::new()),
            Self::Only(reads) => serde_json::Value::Object(
                reads
                    .iter()
                    .filter_map(|read| {
                        let value = read.take(
                            record,
                            |node| serde_json::Value::from(node),
                            |members| serde_json::Value::Object(members.into_iter().collect()),
                        )?;
                        Some((read.name.clone(), value))
                    })
                    .collect(),
            ),
        }
    }

    fn value(&self, record: &Node<'_>) -> minijinja::Value {
        match self {
            Self::All => minijinja::Value::from(minijinja::value::Serde(record)),
            Self::None => minijinja::Value::from(()),
            Self::Only(reads) => minijinja::Value::from(
                reads
                    .iter()
                    .filter_map(|read| {
                        let value = read.take(
                            record,
                            |node| minijinja::Value::from(minijinja::value::Serde(node)),
                            |members| {
                                minijinja::Value::from(
                                    members
                                        .into_iter()
                                        .collect::<std::collections::BTreeMap<_, _>>(),
                                )
                            },
                        )?;
                        Some((read.name.clone(), value))
                    })
                    .collect::<std::collections::BTreeMap<String, minijinja::Value>>(),
            ),
        }
    }
}

/// The template context of one record (`record`, `parent`, `entry`, `config`; `item` for a
/// content part per item), built on first use.
pub struct Lazy<'a> {
    record: &'a Node<'a>,
    fields: &'a RecordFields,
    parent: &'a minijinja::Value,
    entry: Option<&'a minijinja::Value>,
    item: Option<minijinja::Value>,
    config: &'a minijinja::Value,
    built: std::cell::OnceCell<minijinja::Value>,
}

impl<'a> Lazy<'a> {
    /// A context for `record`, converting the parts named by `fields`.
    pub fn new(
        record: &'a Node<'a>,
        fields: &'a RecordFields,
        parent: &'a minijinja::Value,
        config: &'a minijinja::Value,
    ) -> Self {
        Self {
            record,
            fields,
            parent,
            entry: None,
            item: None,
            config,
            built: std::cell::OnceCell::new(),
        }
    }

    /// The same, with `item` (one of the nodes a content part's `for_each` selects).
    pub fn with_item(mut self, item: &Node<'_>) -> Self {
        self.item = Some(minijinja::Value::from(minijinja::value::Serde(item)));
        self
    }

    /// The context, built now if it was not yet.
    pub fn context(&self) -> &minijinja::Value {
        self.get()
    }

    fn get(&self) -> &minijinja::Value {
        self.built.get_or_init(|| {
            minijinja::context! {
                record => self.fields.value(self.record),
                parent => self.parent.clone(),
                entry => self.entry.cloned().unwrap_or_default(),
                item => self.item.clone().unwrap_or_default(),
                config => self.config.clone(),
            }
        })
    }
}

/// At most this many renders of one template are kept for a page.
const RENDERS_KEPT: usize = 8;

/// What the records of one page share while they are mapped: the parent record (for a
/// substream), the integration's config, and the renders of the stream's templates made so far.
///
/// Templates are pure (the sandbox has no clock, randomness or I/O), and within a page `parent`
/// and `config` are fixed, so a template that reads only named record attributes renders the same
/// text for records with the same values there, and the field made of that text (converted,
/// checked, written) is the same too: `media_type` from `mimeType` is made a few times a page
/// instead of once a record. A page's scope is dropped with the page.
pub struct PageScope<'p> {
    parent: &'p minijinja::Value,
    entry: Option<&'p minijinja::Value>,
    config: &'p minijinja::Value,
    /// By map field: the renders of its template kept so far.
    renders: Vec<Vec<Render<'p>>>,
}

/// One render of a template: the record attribute values it read (`None` for an absent one),
/// and the field it made (converted, checked and written as JSON text), or why it could not.
type Render<'p> = (Vec<Option<&'p Node<'p>>>, Finished);

/// A field's value written as the record's JSON text (its key, then the value; nothing for an
/// absent optional field), or why the record cannot have it.
type Finished = Result<Vec<u8>, Failure>;

/// Why a record cannot have a field's value.
#[derive(Debug, Clone)]
enum Failure {
    /// The value does not fit the model: named with the record's other misfits.
    Misfit(String),
    /// The value could not be made (a failed conversion or render, a required field without
    /// one): the record is refused for it.
    Refused(String),
}

impl<'p> PageScope<'p> {
    /// The scope of a page whose records have `parent` (`()` for a root stream), under `config`.
    pub fn new(parent: &'p minijinja::Value, config: &'p minijinja::Value) -> Self {
        Self {
            parent,
            entry: None,
            config,
            renders: Vec::new(),
        }
    }

    /// The same, for a page of documents all read from one file of an export: `entry` in
    /// templates (its `path`, `name`, `stem`, `extension` and `folder`).
    pub fn with_entry(mut self, entry: Option<&'p minijinja::Value>) -> Self {
        self.entry = entry;
        self
    }

    /// What map field `slot`, whose template reads the record attributes `names`, becomes for
    /// `record`: what it became for a record with the same values there (rendered, converted,
    /// checked and written once), or what `finish` makes of it now.
    fn finished(
        &mut self,
        slot: usize,
        names: &[String],
        record: &'p Node<'p>,
        finish: impl FnOnce() -> Finished,
    ) -> Cow<'_, Finished> {
        let read: Vec<Option<&'p Node<'p>>> = names.iter().map(|name| get(record, name)).collect();
        if self.renders.len() <= slot {
            self.renders.resize_with(slot + 1, Vec::new);
        }
        let kept = &mut self.renders[slot];
        if let Some(at) = kept.iter().position(|(values, _)| *values == read) {
            return Cow::Borrowed(&kept[at].1);
        }
        let finished = finish();
        if kept.len() >= RENDERS_KEPT {
            return Cow::Owned(finished);
        }
        let at = kept.len();
        kept.push((read, finished));
        Cow::Borrowed(&kept[at].1)
    }
}

/// Every node `path` selects, as one list: a single selected list is taken as it is.
fn gather<'a>(path: &CompiledPath, record: &Target<'_, '_>) -> Option<Cow<'a, Value>> {
    let mut nodes: Vec<&Node<'_>> = Vec::new();
    path.for_each(record, |node| {
        if !node.is_null() {
            nodes.push(node);
        }
    });
    match nodes.as_slice() {
        [] => None,
        [only] if only.is_array() => Some(Cow::Owned(Value::from(*only))),
        _ => Some(Cow::Owned(Value::Array(
            nodes.into_iter().map(Value::from).collect(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template's record reads are found wherever they stand (minijinja misses those inside a
    /// slice): taking a template for one that reads nothing gave every record of a page the
    /// first one's render. Anything but a named read takes the whole record.
    #[test]
    fn record_reads_are_found_inside_slices_and_or() {
        for (template, wanted) in [
            ("{{ record.a }}", Some(vec!["a".to_owned()])),
            ("{{ record.ts[:19] }}Z", Some(vec!["ts".to_owned()])),
            (
                "{{ record.track.uri }}@{{ record.played_at[:19] }}Z",
                Some(vec!["track".to_owned(), "played_at".to_owned()]),
            ),
            ("{{ record.tags[0] }}", Some(vec!["tags".to_owned()])),
            (
                "{{ (record.a or record.b)[8:] | replace(':', '/') }}",
                Some(vec!["a".to_owned(), "b".to_owned()]),
            ),
            (
                "{{ record['@type'] }}|{{ record[\"@value\"] }}",
                Some(vec!["@type".to_owned(), "@value".to_owned()]),
            ),
            ("{{ record[key] }}", None),
            ("{{ record | tojson }}", None),
            ("{{ 'a record' }}", None),
            ("{{ records }}{{ my_record }}{{ x.record }}", Some(vec![])),
            ("{{ config.x }}", Some(vec![])),
        ] {
            assert_eq!(RecordFields::of(template).names(), wanted, "{template}");
        }
    }

    #[test]
    fn list_fields_gather_every_selected_node() {
        let record = serde_json::json!({"labels": [{"name": "Urgent"}, {"name": "Home"}], "tags": ["a"], "none": []});
        let names = CompiledPath::compile("$.labels[*].name").unwrap();
        assert_eq!(
            gather(&names, &Target::new(&Node::from(&record)))
                .unwrap()
                .into_owned(),
            serde_json::json!(["Urgent", "Home"])
        );
        let whole = CompiledPath::compile("$.tags").unwrap();
        assert_eq!(
            gather(&whole, &Target::new(&Node::from(&record)))
                .unwrap()
                .into_owned(),
            serde_json::json!(["a"])
        );
        assert!(
            gather(
                &CompiledPath::compile("$.none[*]").unwrap(),
                &Target::new(&Node::from(&record))
            )
            .is_none()
        );
    }

    /// The mapper of a media stream with `map`, and its templates.
    fn media_mapper(map: Value) -> (RecordMapper, Templates) {
        let stream: Stream = serde_json::from_value(serde_json::json!({
            "model": "media",
            "request": {"path": "/media"},
            "records": "$.items[*]",
            "id": "$.id",
            "map": map
        }))
        .unwrap();
        let mut templates = Templates::default();
        let mapper = RecordMapper::compile(ModelKind::Media, &stream, &mut templates).unwrap();
        (mapper, templates)
    }

    /// The JSON text written field by field is the record a tree would serialize to: the
    /// provenance first (escaped), then the fields in the spec's order.
    #[test]
    fn records_are_written_as_json_text_in_field_order() {
        let (mapper, templates) = media_mapper(serde_json::json!({
            "width": "$.width",
            "media_type": "{{ 'video' if record.mimeType is startingwith('video/') else 'photo' }}",
            "file_path": "$.baseUrl",
            "title": "$.missing"
        }));
        let provenance = Provenance::new("user \"1\"", "integration-1", "google_photos");
        let raw = serde_json::json!({"id": "a/1", "mimeType": "video/mp4", "baseUrl": "https://x/a", "width": "1920"});
        let none = minijinja::Value::from(());
        let mut scope = PageScope::new(&none, &none);
        let raw = Node::from(&raw);
        let Mapped::Record(record) = mapper.map(&raw, &mut scope, &provenance, &templates) else {
            panic!("maps");
        };
        assert_eq!(
            record.json(),
            r#"{"user_id":"user \"1\"","source_integration_id":"integration-1","source_platform":"google_photos","source_object_id":"a/1","width":1920,"media_type":"video","file_path":"https://x/a"}"#
        );
        assert_eq!(record.data().unwrap()["width"], 1920);
        let tombstone = RecordMapper::tombstone("a/1".to_owned(), &provenance);
        assert_eq!(
            tombstone.data().unwrap()["source_object_id"],
            "a/1",
            "{}",
            tombstone.json()
        );
    }

    /// Text written straight from the page is escaped as JSON, and text that a field converts
    /// or checks (`taken_at` is a date-time) is not written straight.
    #[test]
    fn text_written_straight_from_the_page_is_escaped_and_checked_text_is_checked() {
        let (mapper, templates) = media_mapper(serde_json::json!({
            "media_type": "{{ 'photo' }}",
            "file_path": "$.url",
            "description": "$.caption",
            "taken_at": "$.when"
        }));
        let provenance = Provenance::new("u", "i", "p");
        let none = minijinja::Value::from(());
        let page = crate::decode::document::Document::json(
            r#"[{"id": "1", "url": "https://x/1", "caption": "\"Hi\"\n\u00fc \\ end", "when": "2026-01-02T10:00:00Z"},
                {"id": "2", "url": "https://x/2", "caption": "ok", "when": "yesterday"}]"#
                .to_owned(),
        )
        .unwrap();
        let records = page.root().as_array().unwrap();
        let mut scope = PageScope::new(&none, &none);
        let Mapped::Record(record) = mapper.map(&records[0], &mut scope, &provenance, &templates)
        else {
            panic!("maps");
        };
        assert_eq!(record.data().unwrap()["description"], "\"Hi\"\nü \\ end");
        assert!(
            record
                .json()
                .contains(r#""description":"\"Hi\"\nü \\ end""#),
            "{}",
            record.json()
        );
        let Mapped::Rejected(reject) = mapper.map(&records[1], &mut scope, &provenance, &templates)
        else {
            panic!("a date-time field checks its text");
        };
        assert!(reject.reason.contains("taken_at"), "{}", reject.reason);
    }

    /// Within a page, a template renders once per distinct set of the values it reads; every
    /// record still gets what its own values render to, past the number of renders kept too.
    #[test]
    fn a_page_renders_each_template_once_per_distinct_input() {
        let (mapper, templates) = media_mapper(serde_json::json!({
            "media_type": "{{ 'video' if record.mimeType is startingwith('video/') else 'photo' }}",
            "file_path": "$.url",
            "title": "{{ record.name | upper }} {{ config.suffix }}",
            "description": "{{ record | tojson }}"
        }));
        let provenance = Provenance::new("u", "i", "p");
        let parent = minijinja::Value::from(());
        let config = minijinja::Value::from(minijinja::value::Serde(
            serde_json::json!({"suffix": "(x)"}),
        ));
        let mimes = [
            "image/jpeg",
            "video/mp4",
            "image/jpeg",
            "image/png",
            "video/mp4",
        ];
        let raws: Vec<Value> = (0..12)
            .map(|n| {
                let mut raw = serde_json::json!({"id": format!("r{n}"), "url": "https://x", "name": format!("n{n}")});
                if let Some(mime) = mimes.get(n) {
                    raw["mimeType"] = serde_json::json!(mime);
                }
                raw
            })
            .collect();
        let nodes: Vec<Node> = raws.iter().map(Node::from).collect();
        let mut scope = PageScope::new(&parent, &config);
        for (n, (raw, node)) in raws.iter().zip(&nodes).enumerate() {
            let Mapped::Record(record) = mapper.map(node, &mut scope, &provenance, &templates)
            else {
                panic!("maps");
            };
            let data = record.data().unwrap();
            let expected = if mimes.get(n).is_some_and(|mime| mime.starts_with("video/")) {
                "video"
            } else {
                "photo"
            };
            assert_eq!(data["media_type"], expected, "{n}");
            assert_eq!(data["title"], format!("N{n} (x)"), "{n}");
            // A template that reads the whole record is rendered for each record.
            let description: Value =
                serde_json::from_str(data["description"].as_str().unwrap()).unwrap();
            assert_eq!(description, *raw);
        }
        // media_type: jpeg, mp4, png and no mimeType at all; title: the first 8 names kept.
        let kept: Vec<usize> = scope.renders.iter().map(Vec::len).collect();
        assert_eq!(kept, [4, 0, RENDERS_KEPT]);
    }

    /// A field made once for a page's records with the same values is the same for each of
    /// them: converted, and a misfit or a failed conversion refuses every record it belongs to,
    /// naming the field, while other records of the page map.
    #[test]
    fn a_field_made_once_a_page_fails_each_record_it_fails() {
        // Filters keep the templates from being plain joins, which are made without the page.
        let (mapper, templates) = media_mapper(serde_json::json!({
            "media_type": "{{ record.kind | lower }}",
            "file_path": "$.url",
            "width": { "from": "{{ record.size | lower }}", "as": "integer" }
        }));
        let provenance = Provenance::new("u", "i", "p");
        let none = minijinja::Value::from(());
        let mut scope = PageScope::new(&none, &none);
        let raws: Vec<Value> = [
            ("photo", "640"),
            ("hologram", "640"),
            ("photo", "wide"),
            ("hologram", "640"),
            ("photo", "wide"),
            ("photo", "640"),
        ]
        .iter()
        .enumerate()
        .map(|(n, (kind, size))| {
            serde_json::json!({"id": format!("r{n}"), "url": "https://x", "kind": kind, "size": size})
        })
        .collect();
        let nodes: Vec<Node> = raws.iter().map(Node::from).collect();
        let outcomes: Vec<String> = nodes
            .iter()
            .map(
                |node| match mapper.map(node, &mut scope, &provenance, &templates) {
                    Mapped::Record(record) => {
                        let data = record.data().unwrap();
                        format!("{} {}", data["media_type"], data["width"])
                    }
                    Mapped::Rejected(reject) => reject.reason,
                },
            )
            .collect();
        assert_eq!(outcomes[0], r#""photo" 640"#);
        assert_eq!(outcomes[5], outcomes[0]);
        for n in [1, 3] {
            assert!(
                outcomes[n].contains("does not fit") && outcomes[n].contains("media_type"),
                "{n}: {}",
                outcomes[n]
            );
        }
        for n in [2, 4] {
            assert!(
                outcomes[n].starts_with("width: ") && outcomes[n].contains("whole number"),
                "{n}: {}",
                outcomes[n]
            );
        }
        let kept: Vec<usize> = scope.renders.iter().map(Vec::len).collect();
        assert_eq!(kept, [2, 0, 2], "renders made once per distinct value");
    }

    #[test]
    fn only_the_attributes_templates_read_are_converted() {
        let mut fields = RecordFields::default();
        fields.add(
            "{{ 'video' if record.mimeType is startingwith('video/') else 'photo' }}",
            false,
        );
        fields.add("record.status == 'cancelled'", true);
        fields.add("{{ parent.id }}", false);
        assert_eq!(
            fields,
            RecordFields::Only(vec![Read::whole("mimeType"), Read::whole("status")])
        );
        let value = fields.value(&Node::from(
            &serde_json::json!({"mimeType": "video/mp4", "status": "ok", "big": [1, 2, 3]}),
        ));
        assert_eq!(
            value.get_attr("mimeType").unwrap().as_str(),
            Some("video/mp4")
        );
        assert!(value.get_attr("big").unwrap().is_undefined());
        fields.add("{{ record | tojson }}", false);
        assert_eq!(fields, RecordFields::All);
        // A template that picks attributes by computed name reads the whole record (renders of
        // it are never reused within a page).
        for dynamic in [
            "{% for name in ['a', 'b'] %}{{ record[name] }}{% endfor %}",
            "{{ record[config.field] }}",
            "{% set r = record %}{{ r.a }}",
        ] {
            let mut fields = RecordFields::default();
            fields.add(dynamic, false);
            assert_eq!(fields, RecordFields::All, "{dynamic}");
        }
    }

    /// An attribute read only through its own attributes (`record.mediaMetadata.video`) is
    /// converted with those alone; the templates render as they do over the whole record.
    #[test]
    fn attributes_read_only_through_their_own_are_converted_with_those() {
        let templates_read = [
            "{{ record.baseUrl }}={{ 'dv' if record.mimeType is startingwith('video/') else 'd' }}",
            "record.mediaMetadata.video is not defined or record.mediaMetadata.video.status == 'READY'",
            "{{ record.mediaMetadata.photo.cameraMake }}|{{ record.mediaMetadata.width }}",
        ];
        let mut fields = RecordFields::default();
        for (at, text) in templates_read.iter().enumerate() {
            fields.add(text, at == 1);
        }
        let within = |name: &str, attributes: &[&str]| Read {
            name: name.to_owned(),
            within: Some(attributes.iter().map(|a| (*a).to_owned()).collect()),
        };
        assert_eq!(
            fields,
            RecordFields::Only(vec![
                Read::whole("baseUrl"),
                Read::whole("mimeType"),
                within("mediaMetadata", &["video", "photo", "width"]),
            ])
        );
        let photo = serde_json::json!({
            "baseUrl": "https://lh3.googleusercontent.com/lr/AAJ1",
            "mimeType": "image/jpeg",
            "mediaMetadata": {
                "creationTime": "2024-03-17T06:45:12Z", "width": "4032", "height": "3024",
                "photo": {"cameraMake": "Apple", "cameraModel": "iPhone 15", "isoEquivalent": 50}
            },
        });
        let video = serde_json::json!({
            "baseUrl": "https://lh3.googleusercontent.com/lr/AAJ2",
            "mimeType": "video/mp4",
            "mediaMetadata": {"video": {"fps": 30, "status": "PROCESSING"}},
        });
        let env = crate::template::environment();
        for record in [photo, video, serde_json::json!({"mediaMetadata": [1, 2]})] {
            let node = Node::from(&record);
            let part = minijinja::context! { record => fields.value(&node) };
            let whole = minijinja::context! { record => RecordFields::All.value(&node) };
            for (at, text) in templates_read.iter().enumerate() {
                let render = |context: &minijinja::Value| {
                    if at == 1 {
                        env.compile_expression(text)
                            .unwrap()
                            .eval(context)
                            .unwrap()
                            .to_string()
                    } else {
                        env.render_str(text, context).unwrap()
                    }
                };
                assert_eq!(render(&part), render(&whole), "{text} over {record}");
            }
            let kept = fields.kept(&node);
            assert_eq!(kept["mediaMetadata"].get("height"), None, "{kept}");
        }
        // Whole again when it is read whole, by subscript, or through a method.
        for text in [
            "{{ record.mediaMetadata.video }}{{ record.mediaMetadata }}",
            "{{ record.mediaMetadata.video }}{{ record.mediaMetadata['photo'] }}",
            "{{ record.mediaMetadata.items() | list }}",
            "{{ record.mediaMetadata.video }}{{ record.mediaMetadata.get('photo') }}",
        ] {
            assert_eq!(
                RecordFields::of(text),
                RecordFields::Only(vec![Read::whole("mediaMetadata")]),
                "{text}"
            );
        }
        // A method of the record itself needs the whole record.
        assert_eq!(
            RecordFields::of("{{ record.items() | list }}"),
            RecordFields::All
        );
    }
}

#[derive(Debug, Clone)]
struct FieldPlan {
    name: &'static str,
    /// What goes before the value in the record's JSON text: `,"name":`.
    key: String,
    source: CompiledValue,
    converter: Converter,
    check: FieldCheck,
    default: Option<Value>,
    required: bool,
    /// A string selected for this field is written as it is: the conversion keeps text and the
    /// model takes any string, so there is nothing to convert or check.
    takes_text: bool,
    /// Converted values need a check: the model does not take every value the conversion gives.
    checked: bool,
    /// The factor a converted number is multiplied by (`scale`).
    scale: Option<f64>,
    /// The pattern a date-time is read with (`format`), instead of the converter.
    format: Option<Arc<str>>,
    /// The separator text is split into a list at (`split`), before the converter.
    split: Option<Arc<str>>,
    /// For a template that reads only named record attributes (or none): those names, whose
    /// values are all its output can depend on within a page (see [`PageScope`]).
    reads: Option<Vec<String>>,
    /// For a template that only joins text and record attributes: that join, made without
    /// minijinja (and without the page's renders, which cost as much to look up).
    interpolation: Option<Interpolation>,
}

impl FieldPlan {
    /// Appends the field to `json` (its key, then its value as JSON text) from the value
    /// `selected` (or the field's default): converted, and checked unless the field takes every
    /// value the conversion gives. An absent optional field appends nothing.
    fn finish(
        &self,
        selected: Result<Option<Cow<'_, Value>>, String>,
        json: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let refused =
            |error: &dyn std::fmt::Display| Failure::Refused(format!("{}: {error}", self.name));
        // Empty text is no value for a field that is not text: a CSV's empty cell for a
        // number, a date or a list is a value the row does not have.
        let blank = |value: &Cow<'_, Value>| {
            matches!(value.as_ref(), Value::String(text) if text.trim().is_empty())
                && self.converter.output() != crate::convert::Output::Text
        };
        let value = selected
            .map_err(|error| refused(&error))?
            .filter(|value| !blank(value))
            .or_else(|| self.default.as_ref().map(Cow::Borrowed));
        let Some(value) = value else {
            return match self.required {
                true => Err(refused(&"required, but the record has no value for it")),
                false => Ok(()),
            };
        };
        let value = match &self.split {
            Some(separator) => Cow::Owned(split_text(&value, separator)),
            None => value,
        };
        let mut converted = match &self.format {
            Some(pattern) => Cow::Owned(
                crate::convert::with_format(pattern, &value).map_err(|error| refused(&error))?,
            ),
            None => self
                .converter
                .apply(value)
                .map_err(|error| refused(&error))?,
        };
        if let Some(scale) = self.scale {
            converted = Cow::Owned(scaled(&converted, scale).map_err(|error| refused(&error))?);
        }
        // A conversion that found nothing to make (an address header with no address in it)
        // leaves the field out, as a source that selects nothing does.
        if converted.is_null() {
            return match self.required {
                true => Err(refused(&"required, but the record has no value for it")),
                false => Ok(()),
            };
        }
        if self.checked {
            self.check.check(&converted).map_err(Failure::Misfit)?;
        }
        json.extend_from_slice(self.key.as_bytes());
        push_value(json, &converted);
        Ok(())
    }
}

/// What became of one raw record.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Mapped and valid.
    Record(MappedRecord),
    /// Not mapped; see the reason.
    Rejected(Reject),
}

/// Maps one stream's raw records onto its model.
#[derive(Debug, Clone)]
pub struct RecordMapper {
    model: ModelKind,
    id: CompiledValue,
    /// The key's template, when it only joins record attributes: made without minijinja.
    id_interpolation: Option<Interpolation>,
    /// The record's identity, when the stream's `key` says it apart from the provider's id.
    key: Option<(CompiledValue, Option<Interpolation>)>,
    fields: Vec<FieldPlan>,
    /// Required model fields the stream does not map (refused when a spec is checked; a mapper
    /// compiled from an unchecked stream refuses its records).
    unmapped: Vec<&'static str>,
    deleted: Option<TemplateId>,
    record_fields: RecordFields,
    /// The length of the last record's JSON text: the next one's buffer starts that large.
    size_hint: Arc<AtomicUsize>,
}

impl RecordMapper {
    /// Compiles the mapping of `stream`, which must have a model.
    pub fn compile(
        model: ModelKind,
        stream: &Stream,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        let id = CompiledValue::compile(&stream.id, templates)?;
        let key = stream
            .key
            .as_ref()
            .map(|key| CompiledValue::compile(key, templates))
            .transpose()?;
        let mut record_fields = RecordFields::default();
        let sources = std::iter::once(&stream.id)
            .chain(stream.key.as_ref())
            .chain(stream.map.values().map(FieldMapping::source));
        for source in sources {
            if let ValueSource::Template(text) = source {
                record_fields.add(text.as_str(), false);
            }
        }
        if let Some(condition) = &stream.deleted {
            record_fields.add(condition.as_str(), true);
        }
        let mut fields = Vec::with_capacity(stream.map.len());
        for (name, mapping) in &stream.map {
            // A field the model lacks, or a provenance field (the engine writes those), is
            // refused by validation; never reached for a loaded spec.
            let Some(info) = model.field(name) else {
                continue;
            };
            let default = match mapping {
                FieldMapping::Full(rule) => rule.default.clone(),
                FieldMapping::Short(_) => None,
            };
            let (reads, interpolation) = match mapping.source() {
                ValueSource::Template(text) => (
                    RecordFields::of(text.as_str()).names(),
                    Interpolation::parse(text.as_str()),
                ),
                ValueSource::Path(_) => (None, None),
            };
            let mut key = b",".to_vec();
            push_json(&mut key, info.name);
            key.push(b':');
            let converter = mapping
                .conversion()
                .map_or(Converter::ByKind(info.kind), Converter::Explicit);
            let check = FieldCheck::new(model, info.name);
            fields.push(FieldPlan {
                name: info.name,
                key: into_text(key),
                takes_text: mapping.scale().is_none()
                    && mapping.format().is_none()
                    && mapping.split().is_none()
                    && converter.keeps_text()
                    && check.takes(Output::Text),
                checked: !check.takes(converter.output())
                    || mapping.scale().is_some()
                    || mapping.format().is_some(),
                scale: mapping.scale(),
                format: mapping.format().map(Arc::from),
                split: mapping.split().map(Arc::from),
                check,
                reads,
                interpolation,
                source: CompiledValue::compile(mapping.source(), templates)?,
                converter,
                default,
                required: info.required,
            });
        }
        let deleted = stream
            .deleted
            .as_ref()
            .map(|condition| templates.add_condition(condition.as_str()))
            .transpose()?;
        let unmapped = model
            .fields()
            .iter()
            .filter(|info| info.required && !fields.iter().any(|field| field.name == info.name))
            .map(|info| info.name)
            .collect();
        let interpolation = |source: &ValueSource| match source {
            ValueSource::Template(text) => Interpolation::parse(text.as_str()),
            ValueSource::Path(_) => None,
        };
        let id_interpolation = interpolation(&stream.id);
        let key = key.zip(stream.key.as_ref().map(interpolation));
        Ok(Self {
            model,
            id,
            id_interpolation,
            key,
            fields,
            unmapped,
            deleted,
            record_fields,
            size_hint: Arc::default(),
        })
    }

    /// The model records become.
    pub fn model(&self) -> ModelKind {
        self.model
    }

    /// The record with provider id `id`, marked deleted, with nothing but its identity (a change
    /// log that names deleted records by id alone).
    pub fn tombstone(id: String, provenance: &Provenance) -> MappedRecord {
        let json = close(provenance.open(&id, 0));
        MappedRecord::from_json(id, json, true)
    }

    /// Maps one raw record.
    pub fn map<'p>(
        &self,
        raw: &'p Node<'p>,
        scope: &mut PageScope<'p>,
        provenance: &Provenance,
        templates: &Templates,
    ) -> Mapped {
        let mut context = Lazy::new(raw, &self.record_fields, scope.parent, scope.config);
        context.entry = scope.entry;
        let target = Target::new(raw);
        let reject = |id: Option<String>, reason: String| {
            Mapped::Rejected(Reject {
                id,
                reason,
                raw: Value::from(raw),
            })
        };
        // The text of `source` for this record (`None`: it has none).
        let text_of = |source: &CompiledValue, interpolation: Option<&Interpolation>| {
            let joined = interpolation.and_then(|interpolation| interpolation.render(raw));
            match joined.map_or_else(
                || {
                    source
                        .value(&target, &context, templates)
                        .map(|id| id.map(Cow::into_owned))
                },
                |text| Ok(rendered(text).map(Cow::into_owned)),
            ) {
                Ok(Some(Value::String(id))) => Ok(Some(id)),
                Ok(Some(Value::Number(number))) => Ok(Some(number.to_string())),
                Ok(_) => Ok(None),
                Err(error) => Err(error.to_string()),
            }
        };
        let id = match text_of(&self.id, self.id_interpolation.as_ref()) {
            Ok(Some(id)) => id,
            Ok(None) => return reject(None, "the record has no id".to_owned()),
            Err(error) => return reject(None, format!("id: {error}")),
        };
        // With a `key`, the record is stored by it, and the provider's id kept beside it.
        let (id, provider_id) = match &self.key {
            None => (id, None),
            Some((key, interpolation)) => match text_of(key, interpolation.as_ref()) {
                Ok(Some(key)) => (key, Some(id)),
                Ok(None) => return reject(Some(id), "the record has no key".to_owned()),
                Err(error) => return reject(Some(id), format!("key: {error}")),
            },
        };
        // A deletion keeps what its payload still says (a deleted Dropbox file's name and path,
        // a cancelled instance's series and original start): its fields are mapped as far as
        // they go, and one that is missing or does not fit is left out rather than refused.
        let deleted = match &self.deleted {
            Some(condition) => match templates.test(condition, context.get()) {
                Ok(deleted) => deleted,
                Err(error) => return reject(Some(id), format!("deleted: {error}")),
            },
            None => false,
        };
        // Fields that do not fit the model are all named, not only the first.
        let mut misfits: Vec<String> = match deleted {
            true => Vec::new(),
            false => self
                .unmapped
                .iter()
                .map(|name| format!("\"{name}\" is a required property"))
                .collect(),
        };
        let mut json = provenance.open(&id, self.size_hint.load(Ordering::Relaxed));
        if let Some(provider_id) = &provider_id {
            json.extend_from_slice(b",");
            push_json(&mut json, crate::models::PROVIDER_ID);
            json.push(b':');
            push_json_str(&mut json, provider_id);
        }
        for (slot, field) in self.fields.iter().enumerate() {
            let joined = field
                .interpolation
                .as_ref()
                .and_then(|interpolation| interpolation.render(raw));
            let finished = match (joined, &field.source, field.converter, &field.reads) {
                (Some(text), ..) => field.finish(Ok(rendered(text)), &mut json),
                // A list field gathers every node its path selects (`$.labels[*].name`), as
                // does a conversion into a list (Graph's recipients `as: addresses`).
                (None, CompiledValue::Path(path), converter, _) if converter.gathers() => {
                    field.finish(Ok(gather(path, &target)), &mut json)
                }
                (None, CompiledValue::Path(path), _, _) => match path.first(&target) {
                    Some(Node::Str(text)) if field.takes_text => {
                        json.extend_from_slice(field.key.as_bytes());
                        push_json_str(&mut json, text);
                        Ok(())
                    }
                    node => field.finish(Ok(selected(node)), &mut json),
                },
                // What the field becomes depends only on the values its template reads.
                (None, CompiledValue::Template(template), _, Some(names)) => {
                    let finished = scope.finished(slot, names, raw, || {
                        let text = templates
                            .render(template, context.get())
                            .map_err(|error| error.to_string());
                        let mut written = Vec::new();
                        field
                            .finish(text.map(rendered), &mut written)
                            .map(|()| written)
                    });
                    match &*finished {
                        Ok(written) => {
                            json.extend_from_slice(written);
                            Ok(())
                        }
                        Err(failure) => Err(failure.clone()),
                    }
                }
                _ => field.finish(field.source.value(&target, &context, templates), &mut json),
            };
            match finished {
                Ok(()) => {}
                Err(_) if deleted => {}
                Err(Failure::Misfit(reason)) => misfits.push(reason),
                Err(Failure::Refused(reason)) => return reject(Some(id), reason),
            }
        }
        if deleted {
            return Mapped::Record(MappedRecord::from_json(id, close(json), true));
        }
        if !misfits.is_empty() {
            misfits.truncate(5);
            return reject(Some(id), misfit(self.model, &misfits));
        }
        self.size_hint.store(json.len() + 1, Ordering::Relaxed);
        Mapped::Record(MappedRecord::from_json(id, close(json), false))
    }
}
