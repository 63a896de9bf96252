//! A stream: the requests that fetch one kind of record, and how each record becomes a model.
//!
//! A stream's record handling (`decode`, `records`, `id`, `map`, `deleted`) does not depend on
//! where the bytes come from: the provider's API (`request`, with `paginate` and `incremental`)
//! or the files of a data export the person downloaded (`archive`). A stream has one of the two.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{ByteSize, Condition, Duration, JsonPath, Template, ValueSource};
use crate::models::ModelKind;

/// One kind of record fetched from the provider and mapped onto one Hypernet model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    /// What the stream imports, for people reading the spec and the catalog.
    #[serde(default)]
    pub description: Option<String>,
    /// The Hypernet model each record becomes. A stream without one only feeds its substreams
    /// (a calendar list whose calendars each start an events run); its records are not stored.
    #[serde(default)]
    pub model: Option<ModelKind>,
    /// For a substream: the stream whose records each start one run of this one.
    #[serde(default)]
    pub parent: Option<Parent>,
    /// The HTTP request for the first page. A stream has a `request` or an `archive`.
    #[serde(default)]
    pub request: Option<Request>,
    /// For a stream read from a data export (a zip, tar.gz or folder the person downloaded and
    /// imports with `connector import`): which files, and how each splits into documents. A page
    /// is an array of documents read in turn (up to 1,000), and `records` selects in it as in an
    /// API's page: `$[*]` makes each document a record, `$[*].Record` each XML element's
    /// content, `$[?@.uri != null]` only some.
    #[serde(default)]
    pub archive: Option<ArchiveEntries>,
    /// How the next page is requested.
    #[serde(default)]
    pub paginate: Paginate,
    /// The body format.
    #[serde(default)]
    pub decode: Decode,
    /// Selects the records in a decoded page: each node it selects is one record. `$` makes the
    /// whole body one record; `$.items[*]` makes each element of `items` one.
    pub records: JsonPath,
    /// The record's id at the provider. Without `key`, it is also the record's identity, unique
    /// within this stream's model.
    pub id: ValueSource,
    /// The record's identity when the provider's id is not unique alone (Google Calendar's
    /// event ids are unique in their calendar: `"{{ parent.calendar_id }}/{{ record.id }}"`;
    /// Slack's `ts` in its channel): records are stored, updated and deleted by it (their
    /// `source_object_id`), and `id` is kept beside it as the record's `provider_id`, so that
    /// the provider's own id is found, linked and searched by. A change log's `deleted_ids` and
    /// a `gone` id name records by this key. Default: `id`.
    #[serde(default)]
    pub key: Option<ValueSource>,
    /// Model field → where its value comes from. Required with `model`, absent without. A
    /// JSONPath selecting nothing or null leaves an optional field out; for a list field the
    /// JSONPath's selected nodes are gathered into the list (`$.labels[*].name`).
    #[serde(default)]
    pub map: IndexMap<String, FieldMapping>,
    /// How later runs fetch only what changed.
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// True for a record that says it was deleted at the provider; the stored record is kept
    /// as it was last known and marked deleted. A record first seen deleted is kept with what
    /// its payload still says (a deleted file's name and path): its fields are mapped as far as
    /// they go, and one missing or not fitting is left out rather than refused. `record` is the
    /// raw record.
    #[serde(default)]
    pub deleted: Option<Condition>,
    /// For a root stream without `incremental`: whether a pass lists every record that exists,
    /// so that stored records a completed pass did not see are marked deleted (kept, with
    /// `deleted_at`). Set `false` for streams that list only a window, such as "the last 50
    /// plays". A failed or partial pass marks nothing.
    #[serde(default = "yes")]
    pub unseen_deleted: bool,
    /// For a root stream with `incremental`, which only hears of what changed: how often a pass
    /// lists everything again instead, sending no cursor or token (`every: 7d`), so that what
    /// was deleted at the provider without a trace in the changes (Todoist's, Strava's, Slack's
    /// deletions: a cursor on the update time never sees them) is marked deleted once that
    /// pass completes. A failed or partial pass marks nothing. Default: never.
    #[serde(default)]
    pub reconcile: Option<Reconcile>,
    /// Follow the stream's records into their own children (needs `parent`).
    #[serde(default)]
    pub recurse: Option<Recurse>,
    /// The OAuth 2.0 scopes (from `auth.scopes`) this stream needs: a person who leaves the
    /// stream out is not asked for those no chosen stream needs. A substream's scopes go with its
    /// root stream's choice. Scopes no stream names are always asked for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The largest response body of this stream, after decompression; default: the connector's
    /// `limits.max_body`. For streams whose pages are known to be large (an export in one
    /// answer).
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// For a substream with a `model`: the statuses its first request answers when the record
    /// it fetches was deleted since its parent listed it (Gmail: 404 for a message deleted in
    /// between), and that record's id. The record is marked deleted and the run goes on.
    #[serde(default)]
    pub gone: Option<Gone>,
    /// How each record's content (the photo, the file; or several parts, such as a message's
    /// HTML body and attachments) is kept in the blob store. Needs `model`.
    #[serde(default)]
    pub content: Option<super::Contents>,
    /// A step the person completes before the stream lists (Google Photos' Picker); its
    /// requests then see `session`. Only for a root stream; it runs when asked for by name.
    #[serde(default)]
    pub session: Option<super::Session>,
}

fn yes() -> bool {
    true
}

/// Links a substream to its parent stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    /// The parent stream's name.
    pub stream: String,
    /// Values taken from each parent record, seen by this stream's templates as `parent.<name>`.
    pub fields: IndexMap<String, ValueSource>,
    /// How many parent records' requests run at once (1 to 16; default 4), under the
    /// connector's rate limits.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 16))]
    pub concurrency: u8,
    /// Only parent records for which this is true have children (Strava: `record.total_photo_count > 0`
    /// before asking for an activity's photos). Default: every parent record.
    #[serde(default)]
    pub when: Option<Condition>,
}

fn default_concurrency() -> u8 {
    4
}

/// Runs a stream again for some of its own records, as children of them (Notion: a block's
/// children are blocks), up to a depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recurse {
    /// The values each record hands to its own children: the same names as `parent.fields`, so
    /// the stream's request serves both levels.
    pub fields: IndexMap<String, ValueSource>,
    /// Only records for which this is true have children (`record.has_children`). Default:
    /// every record.
    #[serde(default)]
    pub when: Option<Condition>,
    /// How many levels below the first the engine follows (1 to 20).
    #[schemars(range(min = 1, max = 20))]
    pub max_depth: u8,
}

/// An HTTP request. Every value may be a template over `config`, `secrets`, `state`, `parent`
/// and `page`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The HTTP method.
    #[serde(default)]
    pub method: Method,
    /// A path below `base_url`, or an absolute https URL on one of `allowed_hosts`.
    pub path: Template,
    /// Query parameters. A parameter whose value renders empty is left out.
    #[serde(default)]
    pub query: IndexMap<String, Template>,
    /// Request headers, added to the connector's `headers`.
    #[serde(default)]
    pub headers: IndexMap<String, Template>,
    /// The request body.
    #[serde(default)]
    pub body: Option<Body>,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET.
    #[default]
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE: only to delete what the engine made itself (a stream's `session.delete`);
    /// refused anywhere else, since an import never deletes a person's data.
    Delete,
}

/// A request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    /// A JSON document; every string in it is a template.
    Json(serde_json::Value),
    /// An `application/x-www-form-urlencoded` form.
    Form(IndexMap<String, Template>),
}

/// Where a paginator or an incremental cursor puts its value in the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamLocation {
    /// A query parameter.
    #[default]
    Query,
    /// A top-level field of the JSON body.
    Body,
}

/// How the next page is requested. `kind` picks the strategy. Every strategy also stops when a
/// page has no records or when `stop_when` (over `response` and `page`) is true.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Paginate {
    /// One request; no further pages.
    #[default]
    None,
    /// A token from each page is sent with the next request (`pageToken`, `start_cursor`).
    /// Stops when the token is missing, null or empty.
    Cursor {
        /// Where the token is in the decoded page.
        token: JsonPath,
        /// The parameter or body field that carries the token. It replaces a parameter or field
        /// of the same name that the request sets itself (a `pageToken` that starts at a kept
        /// position).
        param: String,
        /// Where `param` goes.
        #[serde(default)]
        location: ParamLocation,
        /// A different request for the pages after the first, such as Dropbox's
        /// `list_folder/continue`; its templates see the token as `page.token`.
        #[serde(default)]
        next_request: Option<Box<Request>>,
        /// Stop early when this is true.
        #[serde(default)]
        stop_when: Option<Condition>,
    },
    /// Each page names the URL of the next (`paging.next`, `@odata.nextLink`, a `Link` header).
    /// Stops when there is none. The URL's host must be one of `allowed_hosts`.
    NextUrl {
        /// Where the next URL is.
        from: NextUrlSource,
        /// Stop early when this is true.
        #[serde(default)]
        stop_when: Option<Condition>,
    },
    /// An offset that grows by `limit` each page. Stops on a page shorter than `limit`.
    OffsetLimit {
        /// The offset parameter.
        offset_param: String,
        /// The page size parameter.
        limit_param: String,
        /// The page size requested.
        limit: u32,
        /// Where the parameters go.
        #[serde(default)]
        location: ParamLocation,
        /// Stop early when this is true.
        #[serde(default)]
        stop_when: Option<Condition>,
    },
    /// A page number that grows by one each page. Stops on an empty page, or on one shorter
    /// than `size` when `size` is set.
    PageNumber {
        /// The page number parameter.
        page_param: String,
        /// The first page's number.
        #[serde(default = "default_first_page")]
        start: u32,
        /// The page size parameter, where the API takes one.
        #[serde(default)]
        size_param: Option<String>,
        /// The page size requested.
        #[serde(default)]
        size: Option<u32>,
        /// Stop early when this is true.
        #[serde(default)]
        stop_when: Option<Condition>,
    },
}

fn default_first_page() -> u32 {
    1
}

impl Paginate {
    /// The `kind` name as written in specs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cursor { .. } => "cursor",
            Self::NextUrl { .. } => "next_url",
            Self::OffsetLimit { .. } => "offset_limit",
            Self::PageNumber { .. } => "page_number",
        }
    }
}

/// Where a page names the next page's URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NextUrlSource {
    /// A JSONPath into the decoded page.
    Body(JsonPath),
    /// The `rel="next"` link of the RFC 8288 `Link` header.
    LinkHeader(LinkHeaderMarker),
}

/// The `link_header` value: the only accepted value is `next`, the relation followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkHeaderMarker {
    /// Follow `rel="next"`.
    Next,
}

/// The files of a data export a stream reads, and how each splits into documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveEntries {
    /// Globs over the paths inside the export (`/`-separated, from its root; case-insensitive):
    /// `*` within one folder, `**` across folders, `{a,b}` for alternatives (localised folder
    /// names: `Takeout/{Google Photos,Google Fotos}/**/*.json`). An entry matching any is read;
    /// entries are read in path order (a tar.gz: in archive order).
    #[schemars(length(min = 1, max = 64))]
    pub entries: Vec<String>,
    /// Globs of entries not to read, though `entries` matches them.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub exclude: Vec<String>,
    /// How one entry splits into documents.
    #[serde(default)]
    pub split: Split,
    /// Whether the export holds every record of the stream, so that a completed import marks
    /// the stream's stored records it did not see as deleted. Off by default: many exports can
    /// be asked for in part (a Takeout of some albums), and importing a part must delete nothing.
    #[serde(default)]
    pub complete: bool,
    /// Whether the export holds some records more than once (Takeout copies a photo into each
    /// of its albums' folders, beside its year folder's): within one import, the first copy
    /// read (in path order) stands and the others are skipped, so that the record does not
    /// change with each copy. Costs 16 bytes of memory a record for the import's length.
    #[serde(default)]
    pub dedupe: bool,
    /// Documents of other files joined to each document read: a photo's sidecar
    /// (`IMG_1234.JPG.supplemental-metadata.json`), its row in a metadata CSV (Apple's
    /// `Photo Details.csv`).
    #[serde(default)]
    pub join: Option<Join>,
}

/// Documents of other files of the export, joined to the documents a stream reads: each of
/// them is indexed by its `key`, and each document read looks up its `match` keys in turn; the
/// first found is put in the document under `into`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// Globs of the files joined (read before the stream's own, whatever their order in the
    /// export).
    #[schemars(length(min = 1, max = 64))]
    pub entries: Vec<String>,
    /// How each splits into documents (`whole`: a sidecar; `rows`: a CSV).
    #[serde(default)]
    pub split: Split,
    /// How each decodes.
    #[serde(default)]
    pub decode: Decode,
    /// What in each joined document is indexed, when not the document itself: a JSONPath
    /// (`$.media[*]`: each photo of an Instagram post, which names its file).
    #[serde(default)]
    pub select: Option<JsonPath>,
    /// Each joined document's key: a template over `record` (the joined document) and `entry`
    /// (its file): `{{ entry.path }}` for a sidecar, `{{ entry.folder }}/{{ record.imgName }}`
    /// for a CSV row that names its photo.
    pub key: Template,
    /// The keys a document read looks up, in order (templates over `record`, the document, and
    /// `entry`, its file); the first found is joined: `{{ entry.path }}.json`.
    #[serde(rename = "match")]
    #[schemars(length(min = 1, max = 32))]
    pub candidates: Vec<Template>,
    /// The key the joined document is put under in each document (an object) read.
    #[serde(default = "default_join_key")]
    pub into: String,
}

fn default_join_key() -> String {
    "joined".to_owned()
}

impl Join {
    /// The globs compiled: which entries are joined.
    pub fn selection(&self) -> Result<Selection, GlobError> {
        Ok(Selection {
            include: glob_set("join.entries", &self.entries)?,
            exclude: glob_set("join.entries", &[])?,
        })
    }
}

/// The longest glob an archive stream may have.
pub const MAX_GLOB_LENGTH: usize = 256;

impl ArchiveEntries {
    /// The globs compiled: which entries the stream reads.
    pub fn selection(&self) -> Result<Selection, GlobError> {
        Ok(Selection {
            include: glob_set("entries", &self.entries)?,
            exclude: glob_set("exclude", &self.exclude)?,
        })
    }
}

fn glob_set(list: &'static str, globs: &[String]) -> Result<globset::GlobSet, GlobError> {
    let mut set = globset::GlobSetBuilder::new();
    for (index, glob) in globs.iter().enumerate() {
        let error = |reason: String| GlobError {
            list,
            index,
            reason,
        };
        if glob.len() > MAX_GLOB_LENGTH {
            return Err(error(format!(
                "it is longer than {MAX_GLOB_LENGTH} characters"
            )));
        }
        if glob.starts_with('/') || glob.split('/').any(|part| part == "..") {
            return Err(error(
                "paths inside an export are relative and never go up (`/`, `..`)".to_owned(),
            ));
        }
        let compiled = globset::GlobBuilder::new(glob)
            .case_insensitive(true)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|problem| error(problem.kind().to_string()))?;
        set.add(compiled);
    }
    set.build().map_err(|problem| GlobError {
        list,
        index: 0,
        reason: problem.to_string(),
    })
}

/// An archive stream's globs, compiled.
#[derive(Debug, Clone)]
pub struct Selection {
    include: globset::GlobSet,
    exclude: globset::GlobSet,
}

impl Selection {
    /// Whether the stream reads the entry at `path` (inside the export, `/`-separated).
    pub fn matches(&self, path: &str) -> bool {
        self.include.is_match(path) && !self.exclude.is_match(path)
    }
}

/// A glob of `archive.entries` or `archive.exclude` that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    /// `entries` or `exclude`.
    pub list: &'static str,
    /// Which glob of the list.
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// How one file of an export splits into documents, each read and dropped in turn, so that a
/// file of any size is read with flat memory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Split {
    /// The whole file is one document (a sidecar, a settings file).
    #[default]
    Whole,
    /// Each line is one JSON document (`decode: jsonl` or `json`).
    Lines,
    /// Each element of the file's top-level JSON array is one document (`decode: json`); a
    /// JavaScript assignment before the array (`window.YTD.tweets.part0 = [`) is skipped.
    Array,
    /// Each CSV row is one document, an object keyed by the header row (`decode: csv`).
    Rows,
    /// Each XML element with this name, wherever it stands, is one document (`decode: xml`):
    /// `{"<name>": {...}}`, so `records: $[*].<name>`. Apple Health: `Record`.
    Element(String),
    /// Each message of an mbox file is one document (`decode: email`): Takeout's Mail.
    Messages,
    /// Each iCalendar or vCard component with this name (`VEVENT`, `VCARD`), wherever it stands,
    /// is one document (`decode: ical` or `vcard`): `{"<NAME>": [{...}]}`, so
    /// `records: $[*].<NAME>[*]`.
    Component(String),
}

/// The format of response bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    /// One JSON document.
    #[default]
    Json,
    /// One JSON document per line; the page is the array of them.
    Jsonl,
    /// CSV with a header row; the page is an array of objects keyed by the header.
    Csv,
    /// XML; elements become objects, attributes `@name` keys, text `$text`.
    Xml,
    /// `application/x-www-form-urlencoded` (OAuth 1.0a token endpoints, some legacy APIs):
    /// one object of text values.
    Form,
    /// An e-mail message (RFC 5322, MIME): `message_id`, `subject`, `date`, `from`/`to`/`cc`/
    /// `bcc`/`reply_to` as `{name, address}` lists, `headers` (lower-cased names), `text`,
    /// `html`, `attachments` (name, type, size, BLAKE3), `size`; with `split: messages`, each
    /// message of an mbox file, with its `envelope`.
    Email,
    /// iCalendar (RFC 5545): `{"VCALENDAR": [{"VEVENT": [...]}]}`; each property
    /// `{value, params, parts, list}` (see docs/spec.md), a list where it may repeat.
    Ical,
    /// vCard (RFC 6350, 3.0, 2.1): `{"VCARD": [...]}`, properties as for `ical`.
    Vcard,
    /// Any file (a photo, a video, a document), as its facts: `size`, `blake3`,
    /// `content_type`, `kind` (`photo`, `video`, `audio`, `other`) and, where the file says
    /// them, `width`, `height`, `taken_at` (or `taken_at_local`), `duration_seconds`,
    /// `camera_make`, `camera_model`, `latitude`, `longitude`, `altitude`. In an export, with
    /// `split: whole`: the file is read through with flat memory, whatever its size.
    Media,
    /// A GPX file (a workout route): `name`, `time`, `creator`, `tracks` (`name`, `type`,
    /// number of `points`), `points` (every track point in order: `latitude`, `longitude`,
    /// `at`, `elevation_meters`, `speed_meters_per_second`, `course_degrees`,
    /// `horizontal_accuracy_meters`, `vertical_accuracy_meters`, `heart_rate`, `cadence`,
    /// other values under `extensions`), `started_at`, `ended_at`, `route_points`, `waypoints`.
    Gpx,
}

/// Where a model field's value comes from: a JSONPath (`$.title`) or a template, written alone,
/// or as `from` with a conversion and a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldMapping {
    /// A JSONPath (starting with `$`) or a template, converted by the field's type.
    Short(ValueSource),
    /// A source with an explicit conversion and/or default.
    Full(FieldRule),
}

impl FieldMapping {
    /// Where the value comes from.
    pub fn source(&self) -> &ValueSource {
        match self {
            Self::Short(source) => source,
            Self::Full(rule) => &rule.from,
        }
    }

    /// The date-time pattern the value is read with, if any.
    pub fn format(&self) -> Option<&str> {
        match self {
            Self::Full(rule) => rule.format.as_deref(),
            Self::Short(_) => None,
        }
    }

    /// The separator text is split into a list at, if any.
    pub fn split(&self) -> Option<&str> {
        match self {
            Self::Full(rule) => rule.split.as_deref(),
            Self::Short(_) => None,
        }
    }

    /// The factor the converted number is multiplied by, if any.
    pub fn scale(&self) -> Option<f64> {
        match self {
            Self::Full(rule) => rule.scale,
            Self::Short(_) => None,
        }
    }

    /// The explicit conversion, if any.
    pub fn conversion(&self) -> Option<Conversion> {
        match self {
            Self::Short(_) => None,
            Self::Full(rule) => rule.conversion,
        }
    }

    /// Whether the field may have no value in any fixture (see [`FieldRule::rare`]).
    pub fn rare(&self) -> bool {
        match self {
            Self::Short(_) => false,
            Self::Full(rule) => rule.rare,
        }
    }
}

/// How often an incremental stream lists everything again (see [`Stream::reconcile`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// The time between two passes that list everything: a run after it has passed lists
    /// everything (`7d`, `24h`).
    pub every: super::values::Duration,
}

/// A field mapping with a conversion or a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// A JSONPath (starting with `$`) or a template.
    pub from: ValueSource,
    /// How the raw value becomes the field's value; by default the field's own type decides.
    #[serde(default, rename = "as")]
    pub conversion: Option<Conversion>,
    /// The value used when the source selects nothing or null.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// A date-time written another way, as a strftime pattern: `%Y-%m-%d %H:%M:%S %z` (Apple
    /// Health's `2024-03-17 07:45:12 +0100`), `%a %b %d %H:%M:%S %z %Y` (X's archive). A pattern
    /// without `%z` reads a time in UTC; text already in RFC 3339 is taken as it is. For
    /// date-time fields, without `as`.
    #[serde(default)]
    pub format: Option<String>,
    /// Multiplies the converted number by this: a change of unit (minutes to seconds: `60`,
    /// kilometres to metres: `1000`). Only for number and whole-number fields.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Splits text at this separator into a list, each part trimmed and empty ones dropped:
    /// Gmail's `X-Gmail-Labels: Inbox,Important`, a CSV column of tags. Only for list fields.
    #[serde(default)]
    pub split: Option<String>,
    /// The field is legitimately absent from every fixture (a value the provider sends in
    /// cases the fixtures cannot show). `connector test` fails when a mapped field has no value
    /// in any record of its stream's fixtures (a path that never matches is a mistake the
    /// snapshots do not show); this says the field is known to be so. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rare: bool,
}

/// A typed conversion of a raw value. Date-times come out as RFC 3339 in UTC and dates as
/// `YYYY-MM-DD`, from year 0 to 9999; a value before year 0 is refused (RFC 3339 cannot write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    /// Text as it is; numbers and booleans as their JSON text.
    String,
    /// A whole number from a JSON number or a decimal string (int64 sent as a string).
    Integer,
    /// A number from a JSON number or a numeric string.
    Number,
    /// `true`/`false` from a JSON boolean or the strings `true`/`false`.
    Boolean,
    /// A date-time from epoch seconds, as a number or a string, fractions allowed (Slack `ts`).
    EpochSeconds,
    /// A date-time from epoch milliseconds, as a number or a string (Gmail `internalDate`).
    EpochMillis,
    /// A date-time from RFC 3339, with or without fractional seconds.
    Rfc3339,
    /// A date-time from RFC 2822 (email `Date` headers).
    Rfc2822,
    /// A date-time from epoch seconds (a number, or its text, fractions allowed), RFC 3339 text
    /// or RFC 2822 text, whichever the value is: for a template that takes the first of two
    /// sources (a sidecar's `photoTakenTime.timestamp`, else the photo's own EXIF time; a
    /// message's `Date` header, else when it arrived).
    Timestamp,
    /// Text whose UTF-8 bytes were written one escape a byte, as if Latin-1 (Facebook's and
    /// Instagram's exports: `Caf\u00c3\u00a9` is `Café`), repaired; text that is not so is
    /// kept as it is.
    Latin1Utf8,
    /// A clock duration, `H:MM:SS` or `MM:SS`, as whole seconds (Netflix's `00:42:17` is 2537).
    ClockDuration,
    /// A number from a money text: currency symbols and codes dropped (`$1,234.56`, `EUR 9.99`,
    /// `12,50 €`). Of `.` and `,`, the last is the decimal mark, unless it is the only one and
    /// three digits follow it (`1,234` is 1234).
    Amount,
    /// A calendar date from `YYYY-MM-DD` (all-day events).
    Date,
    /// Text with HTML entities decoded (Gmail snippets).
    HtmlUnescape,
    /// The text of HTML (Evernote's ENML, a mail's HTML body): tags dropped, blocks as line
    /// breaks, `script` and `style` left out, entities decoded.
    HtmlText,
    /// Text from base64 in either alphabet, padded or not (Gmail's `body.data` is base64url),
    /// read as UTF-8 (bytes that are not are replaced with U+FFFD).
    Base64Text,
    /// The mailboxes of an address header's text (RFC 5322: `"Lee, Ann" <ann@example.com>,
    /// bob@example.com`; RFC 2047 encoded names decoded; groups flattened), each as `{name,
    /// address}`; a list of such texts gives all their mailboxes. Mailboxes without an address
    /// are left out. Objects that already have an `address` are kept as they are.
    Addresses,
    /// The first mailbox of an address header's text (`From`), as for `addresses`.
    Address,
    /// The raw JSON value, unchanged.
    Json,
}

impl Conversion {
    /// The kind of value the conversion produces.
    pub fn output(self) -> ValueKind {
        match self {
            Self::String
            | Self::HtmlUnescape
            | Self::HtmlText
            | Self::Base64Text
            | Self::Latin1Utf8 => ValueKind::String,
            Self::ClockDuration => ValueKind::Integer,
            Self::Amount => ValueKind::Number,
            Self::Integer => ValueKind::Integer,
            Self::Number => ValueKind::Number,
            Self::Boolean => ValueKind::Boolean,
            Self::EpochSeconds
            | Self::EpochMillis
            | Self::Rfc3339
            | Self::Rfc2822
            | Self::Timestamp => ValueKind::DateTime,
            Self::Date => ValueKind::Date,
            Self::Addresses => ValueKind::Array,
            Self::Address => ValueKind::Object,
            Self::Json => ValueKind::Any,
        }
    }
}

/// The kinds of value a model field holds and a conversion produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// True or false.
    Boolean,
    /// An RFC 3339 date-time.
    DateTime,
    /// A calendar date.
    Date,
    /// A calendar date or an RFC 3339 date-time (event start and end).
    DateOrDateTime,
    /// A list.
    Array,
    /// An object.
    Object,
    /// Anything (raw JSON).
    Any,
}

impl ValueKind {
    /// Whether a value of kind `self` can be stored in a field of kind `field`.
    pub fn fits(self, field: ValueKind) -> bool {
        self == field
            || self == Self::Any
            || field == Self::Any
            || (self == Self::Integer && field == Self::Number)
            || (matches!(self, Self::Date | Self::DateTime) && field == Self::DateOrDateTime)
    }

    /// The name used in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::String => "text",
            Self::Integer => "a whole number",
            Self::Number => "a number",
            Self::Boolean => "a boolean",
            Self::DateTime => "a date-time",
            Self::Date => "a date",
            Self::DateOrDateTime => "a date or a date-time",
            Self::Array => "a list",
            Self::Object => "an object",
            Self::Any => "any value",
        }
    }
}

/// How later runs fetch only what changed. `kind` picks the mechanism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Incremental {
    /// The newest value of a record field is remembered and sent on the next run, minus
    /// `lookback` (`updated_min`, Strava's `after`). Templates see it as `state.cursor`.
    Cursor {
        /// The record field that grows with each change, such as `$.updated_at`.
        field: JsonPath,
        /// The parameter that carries the remembered value.
        param: String,
        /// Where `param` goes.
        #[serde(default)]
        location: ParamLocation,
        /// How the value is written in the request.
        #[serde(default)]
        format: CursorFormat,
        /// How far back from the remembered value the next run starts, to catch late writes.
        #[serde(default = "zero_duration")]
        lookback: Duration,
    },
    /// The provider hands out a token on the last page (`nextSyncToken`, a Dropbox cursor) that
    /// returns only changes when sent back. Templates see it as `state.sync_token`.
    SyncToken {
        /// Where the token is in the decoded page.
        token: JsonPath,
        /// The parameter that carries it.
        param: String,
        /// Where `param` goes.
        #[serde(default)]
        location: ParamLocation,
        /// HTTP statuses that mean the token expired and a full sync is needed (Google: 410).
        #[serde(default = "default_reset_statuses")]
        reset_on: Vec<u16>,
    },
    /// The last page's continuation is kept, and the next run continues the listing from it,
    /// receiving only what changed since: a cursor sent with the paginator's `next_request`
    /// (Dropbox's `list_folder/continue`), or, for next-URL paging, a URL to call (Microsoft
    /// Graph's `@odata.deltaLink`). Templates see it as `state.sync_token`.
    PageToken {
        /// Where the token is in the last page (usually the paginator's own `token`).
        token: JsonPath,
        /// HTTP statuses that mean the token expired and a full sync is needed (Dropbox answers
        /// 409 with a `reset` error).
        #[serde(default = "default_reset_statuses")]
        reset_on: Vec<u16>,
    },
    /// The provider keeps a log of changes read from a position (Gmail's `history.list` from a
    /// `historyId`, Drive's `changes.list` from a page token). A full pass first asks `start`
    /// for the log's current position, then lists everything with the stream's own request;
    /// later passes read the log from the position the last pass kept, with `request`, taking
    /// changed records and the ids of deleted ones from it. Templates see the position as
    /// `state.sync_token`.
    ChangeLog {
        /// The request that answers the log's current position. It is sent before a full pass
        /// lists anything, so whatever changes during the listing is in the next run's log.
        start: Box<Request>,
        /// Where the position is in `start`'s answer (`$.historyId`, `$.startPageToken`).
        start_token: JsonPath,
        /// The request that reads the log from `state.sync_token`.
        request: Box<Request>,
        /// How the log's next page is requested.
        #[serde(default)]
        paginate: Paginate,
        /// Selects the new and changed records on a log page, in the shape the stream's own
        /// listing has: they are mapped by the stream's `map` and feed its substreams like
        /// listed records.
        records: JsonPath,
        /// Selects the ids of the records the log says are gone; they are marked deleted (needs
        /// `model`).
        #[serde(default)]
        deleted_ids: Option<JsonPath>,
        /// Where the position to read from next time is, on the log's last page (`$.historyId`,
        /// `$.newStartPageToken`).
        token: JsonPath,
        /// HTTP statuses that mean the kept position expired and a full pass is needed (Gmail
        /// answers 404).
        #[serde(default = "default_reset_statuses")]
        reset_on: Vec<u16>,
    },
}

/// What a substream's request answers when the record it asks for no longer exists, and which
/// record that is: the record is then marked deleted instead of failing the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gone {
    /// The statuses that mean "gone".
    #[serde(default = "default_gone_statuses")]
    pub on: Vec<u16>,
    /// The id of the record that is gone: a template over `parent` and `config`, such as
    /// `{{ parent.message_id }}`.
    pub id: Template,
}

fn default_gone_statuses() -> Vec<u16> {
    vec![404]
}

fn zero_duration() -> Duration {
    Duration::from_secs(0)
}

fn default_reset_statuses() -> Vec<u16> {
    vec![410]
}

/// How an incremental cursor value is written in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CursorFormat {
    /// RFC 3339 (`2026-01-02T03:04:05Z`).
    #[default]
    Rfc3339,
    /// Epoch seconds.
    EpochSeconds,
    /// Epoch milliseconds.
    EpochMillis,
    /// The value exactly as the record had it.
    Raw,
}
