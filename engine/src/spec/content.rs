//! A stream's `content`: how each record's content (the photo, the file, the attachment) is
//! downloaded into the blob store.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stream::Request;
use super::values::{ByteSize, Condition, ValueSource};

/// How a record's content is downloaded into the blob store, once its record is stored: the
/// bytes a record points at (Google Photos' `baseUrl`, Drive's `alt=media`) are kept, since a
/// provider's URL expires and its file may go. A record owes its content from the moment its
/// page is stored; the downloads run after the run's listing, under the connector's rate limits,
/// retries and `allowed_hosts` (a redirect included), and a killed run leaves them owed for the
/// next. The same bytes are stored once, however many records point at them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// The request for the bytes. Its templates see `record` (the provider's record, as
    /// `map` sees it) and `config`, not `secrets`: a request waits in the store until it is
    /// made, and credentials are added only when it is sent (the connector's auth, and the
    /// connector's `headers`).
    pub request: Request,
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
