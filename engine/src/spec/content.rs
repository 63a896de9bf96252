//! A stream's `content`: how each record's content (the photo, the file, the attachment) is
//! downloaded into the blob store.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stream::Request;
use super::values::{ByteSize, Condition, JsonPath, Template, ValueSource};

/// A stream's `content`: one (the record's own content) or a list of parts, each named by its
/// `part` (Gmail: the HTML body, and each attachment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Contents {
    /// The record's content.
    One(Box<Content>),
    /// Several parts, each with its own `part` name.
    Many(Vec<Content>),
}

impl Contents {
    /// Every part.
    pub fn parts(&self) -> &[Content] {
        match self {
            Self::One(content) => std::slice::from_ref(content),
            Self::Many(contents) => contents,
        }
    }
}

/// How a record's content is downloaded into the blob store, once its record is stored: the
/// bytes a record points at (Google Photos' `baseUrl`, Drive's `alt=media`) are kept, since a
/// provider's URL expires and its file may go. A record owes its content from the moment its
/// page is stored; the downloads run after the run's listing, under the connector's rate limits,
/// retries and `allowed_hosts` (a redirect included), and a killed run leaves them owed for the
/// next. The same bytes are stored once, however many records point at them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// The part's name, unique in the stream: `[a-z0-9_]`, 1 to 32 characters. Default: none,
    /// the record's own content (the photo, the file).
    #[serde(default)]
    pub part: Option<String>,
    /// A part per item: each node this path selects in the record (Gmail's MIME parts that
    /// have an `attachmentId`: `$..parts[?@.body.attachmentId]`). In such a part, the paths of
    /// `key`, `size`, `checksum`, `content_type`, `file_name` and `inline` select from the item,
    /// and templates see it as `item` beside `record`.
    #[serde(default)]
    pub for_each: Option<JsonPath>,
    /// With `for_each`: what tells the item apart from the record's other items, kept as the
    /// part's key (Gmail's `partId`). Default: its position.
    #[serde(default)]
    pub key: Option<ValueSource>,
    /// The request for the bytes. Its templates see `record` (the provider's record, as
    /// `map` sees it) and `config`, not `secrets`: a request waits in the store until it is
    /// made, and credentials are added only when it is sent (the connector's auth, and the
    /// connector's `headers`). Exactly one of `request`, `inline`, `collect` and `entry`.
    #[serde(default)]
    pub request: Option<Request>,
    /// The content is a document put together from a tree the provider serves a level at a
    /// time (Notion: a page's blocks, and their children), each node rendered as text. Exactly
    /// one of `request`, `inline` and `collect`.
    #[serde(default)]
    pub collect: Option<Collect>,
    /// The bytes are in the record itself, encoded (Gmail's `body.data`, base64url; Graph's
    /// `body.content`, text): they are kept as a blob like downloaded ones.
    #[serde(default)]
    pub inline: Option<Inline>,
    /// The content is the file of the export the record was read from (an archive stream
    /// whose files are records: `split: whole` with `decode: media`, such as Takeout's or
    /// iCloud's photos): its bytes are stored as the import reads them, and the record refers
    /// to them. Exactly one of `request`, `inline`, `collect` and `entry`; such a part has no
    /// `when`, `for_each`, `size`, `checksum`, `version`, `file_name` or `refresh` (the file
    /// is its own version and name). Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub entry: bool,
    /// Where the bytes are in the request's answer, when it is not the bytes themselves
    /// (Gmail's attachments answer `{"size": ..., "data": "<base64url>"}`). Such an answer is
    /// read whole (it is at most `max_bytes`, encoded), not streamed.
    #[serde(default)]
    pub answer: Option<Encoded>,
    /// Only records for which this is true have content (Drive: not folders). Default: every
    /// record of the stream.
    #[serde(default)]
    pub when: Option<Condition>,
    /// The largest content accepted; larger content is not stored (the download is refused,
    /// and says so). Default 2GiB, at most 64GiB.
    #[serde(default = "Content::default_max_bytes")]
    pub max_bytes: ByteSize,
    /// The content's size as the record announces it (Drive's `size`, an int64 as a string):
    /// content of another size is not stored.
    #[serde(default)]
    pub size: Option<ValueSource>,
    /// A checksum the record announces: content that does not match is not stored.
    #[serde(default)]
    pub checksum: Option<ContentChecksum>,
    /// The content's MIME type as the record says it (`$.mimeType`). Default: the answer's
    /// `Content-Type`.
    #[serde(default)]
    pub content_type: Option<ValueSource>,
    /// What changes when the record's content changes (Drive's `version`, Dropbox's `rev`): a
    /// record listed with another version is downloaded again. Default: none, for content that
    /// never changes under one id (a photo, an attachment); a record is downloaded once.
    #[serde(default)]
    pub version: Option<ValueSource>,
    /// The content's file name as the record says it (an attachment's `filename`), kept with
    /// the blob and given to whoever downloads it.
    #[serde(default)]
    pub file_name: Option<ValueSource>,
    /// What to do when the request's URL has expired (Google Photos' `baseUrl` lasts about an
    /// hour, and a long listing or a run that resumes the next day finds it gone): fetch the
    /// record again and make the request from the fresh one. Not for a part per item.
    #[serde(default)]
    pub refresh: Option<ContentRefresh>,
}

/// How a record is fetched again for a fresh content URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentRefresh {
    /// The request for the record (Google Photos: `/v1/mediaItems/{{ record.id }}`); its
    /// templates see `record` and `config`, like the content's.
    pub request: Request,
    /// Where the record is in the answer. Default: the answer is the record.
    #[serde(default)]
    pub record: Option<JsonPath>,
    /// The statuses with which the content's request says its URL has expired.
    #[serde(default = "ContentRefresh::default_on")]
    pub on: Vec<u16>,
}

impl ContentRefresh {
    fn default_on() -> Vec<u16> {
        vec![403, 410]
    }
}

/// A document made of a tree of nodes, read a level at a time: the record's children, then
/// each child's, depth first, in the provider's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Collect {
    /// The request for a node's children. Its templates see `node` (the record itself at the
    /// top, then each node that has children) and `config`.
    pub request: Request,
    /// Where the next page's cursor is, and the query parameter that sends it back (Notion:
    /// `$.next_cursor` as `start_cursor`). Default: one page.
    #[serde(default)]
    pub paginate: Option<CollectPaging>,
    /// Where the nodes are in an answer (`$.results[*]`).
    pub records: JsonPath,
    /// Which nodes have children to ask for (`node.has_children`). Default: none.
    #[serde(default)]
    pub children: Option<Condition>,
    /// How deep the tree is followed below the record's own children (1 to 20; default 10).
    #[serde(default = "Collect::default_max_depth")]
    #[schemars(range(min = 1, max = 20))]
    pub max_depth: u8,
    /// The most nodes one document is made of (1 to 100000; default 10000): more is refused.
    #[serde(default = "Collect::default_max_nodes")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_nodes: u32,
    /// How each node becomes text; the document is the nodes' texts, one per line.
    pub render: Render,
}

impl Collect {
    fn default_max_depth() -> u8 {
        10
    }

    fn default_max_nodes() -> u32 {
        10_000
    }
}

/// Paging of a node's children by cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectPaging {
    /// Where the next page's cursor is; none, null or empty ends the children.
    pub token: JsonPath,
    /// The query parameter it is sent back as.
    pub param: String,
}

/// How a node of a collected tree becomes a line of text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Render {
    /// The node's text, made once and seen by the templates of `kinds` as `text` (Notion: its
    /// rich text runs, with their bold, italic, code and links). Sees `node`.
    #[serde(default)]
    pub text: Option<Template>,
    /// The node's kind, which picks its template in `kinds` (`{{ node.type }}`). Sees `node`.
    pub kind: Template,
    /// A template by kind (`heading_1: "# {{ text }}"`). They see `node`, `text`, `depth` (0
    /// for the record's own children) and `config`.
    pub kinds: indexmap::IndexMap<String, Template>,
    /// The template of kinds `kinds` does not name. Default: such nodes are left out (their
    /// children are still read).
    #[serde(default)]
    pub default: Option<Template>,
    /// Put before a node's text once per level of depth (`"  "`: nested lists). Default none.
    #[serde(default)]
    pub indent: String,
    /// The kinds followed by a blank line (Markdown's paragraphs, headings, code blocks; not
    /// list items, so that a list stays one list). Default none.
    #[serde(default)]
    pub spaced: Vec<String>,
}

/// Content kept in the record itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inline {
    /// Where the encoded bytes are (`$.payload.body.data`). A record without a value there has
    /// no such content.
    pub from: ValueSource,
    /// How they are encoded.
    pub encoding: Encoding,
}

/// Bytes carried as a JSON string in an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encoded {
    /// Where the string is in the answer (`$.data`).
    pub json: JsonPath,
    /// How the bytes are encoded in it.
    pub encoding: Encoding,
}

/// How bytes are written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Base64 (RFC 4648 section 4), padded or not (Graph's `contentBytes`).
    Base64,
    /// Base64 with the URL-safe alphabet (RFC 4648 section 5), padded or not (Gmail's `data`).
    Base64url,
    /// The text itself, kept as UTF-8 (Graph's `body.content`).
    Text,
}

impl Encoding {
    /// The bytes `text` encodes.
    pub fn decode(self, text: &str) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        let config =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let engine = match self {
            Self::Text => return Ok(text.as_bytes().to_vec()),
            Self::Base64 => GeneralPurpose::new(&base64::alphabet::STANDARD, config),
            Self::Base64url => GeneralPurpose::new(&base64::alphabet::URL_SAFE, config),
        };
        // Some providers wrap long base64 in lines (MIME does at 76 columns).
        let text: std::borrow::Cow<'_, str> = if text.contains(['\r', '\n']) {
            text.replace(['\r', '\n'], "").into()
        } else {
            text.into()
        };
        engine
            .decode(text.as_bytes())
            .map_err(|error| format!("not {}: {error}", self.name()))
    }

    /// Its name in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Self::Base64 => "base64",
            Self::Base64url => "base64url",
            Self::Text => "text",
        }
    }
}

/// The largest `content.max_bytes` a spec may set.
pub const MAX_CONTENT_BYTES: ByteSize = ByteSize::mebibytes(64 << 10);

impl Content {
    fn default_max_bytes() -> ByteSize {
        ByteSize::mebibytes(2 << 10)
    }
}

/// A checksum of the content, as the record announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentChecksum {
    /// Which algorithm.
    pub kind: ChecksumKind,
    /// Where its hex digits are (`$.md5Checksum`).
    pub value: ValueSource,
}

/// A checksum algorithm providers give for content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumKind {
    /// MD5 of the bytes (Drive's `md5Checksum`).
    Md5,
    /// SHA-256 of the bytes (Drive's `sha256Checksum`, OneDrive's `sha256Hash`).
    Sha256,
    /// Dropbox's `content_hash`: SHA-256 over the SHA-256 of each 4 MiB block.
    Dropbox,
}

impl ChecksumKind {
    /// The name the blob store reads it by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha256 => "sha256",
            Self::Dropbox => "dropbox",
        }
    }
}
