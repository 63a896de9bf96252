//! The blob store: the content of records (photos, videos, attachments, files), each stored once
//! under its BLAKE3 hash however many records, accounts or sources point at it.
//!
//! A blob is written in two steps. Its bytes are first *staged*: streamed into a private file
//! while they are hashed and counted ([`BlobWriter`]), so a download of any size holds one chunk
//! in memory and a partial download is never visible. Then the staged file is *committed* under
//! its hash (`b3/ab/abcdef…`): in a folder by a rename on the same file system, in S3-compatible
//! object storage by an upload of the file (in parts when it is large). A blob that is already
//! there is not written again. Both steps check what they can: the size against the stream's cap
//! and the size the provider announced, and a checksum where the provider gives one.
//!
//! Which records refer to which blob is the store's business (`record_blobs`): this module
//! only keeps bytes, and deletes what it is told no record uses.

mod location;
mod thumbnail;
mod writer;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _};

pub use location::{BlobLocation, S3Location};
pub use thumbnail::{THUMBNAIL_SIDE, ThumbnailError, can_thumbnail, render as render_thumbnail};
pub use writer::{BlobWriter, Checksum, Expected};

/// The BLAKE3 hash of a blob's bytes: its name in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash([u8; 32]);

impl BlobHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The hash as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Where the blob lives inside the store: `b3/` + the first two hex digits + the hash, so
    /// that no folder holds more than 1/256 of the blobs.
    fn key(&self) -> object_store::path::Path {
        let hex = self.to_hex();
        object_store::path::Path::from_iter(["b3", &hex[..2], &hex])
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

/// Why text is not a blob hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a blob hash is 64 lowercase hex digits (BLAKE3)")]
pub struct NotAHash;

impl FromStr for BlobHash {
    type Err = NotAHash;

    fn from_str(text: &str) -> Result<Self, NotAHash> {
        // Lowercase only: one hash has one name, in URLs and in the database.
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(NotAHash);
        }
        blake3::Hash::from_hex(text)
            .map(|hash| Self(*hash.as_bytes()))
            .map_err(|_| NotAHash)
    }
}

impl serde::Serialize for BlobHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A stored blob as a record refers to it: which bytes, how many, of what type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobRef {
    /// The BLAKE3 hash of the bytes.
    pub hash: BlobHash,
    /// How many bytes.
    pub size: u64,
    /// The MIME type the provider gave (or the one the bytes show), when known.
    pub content_type: Option<String>,
}

/// A blob as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its hash.
    pub hash: BlobHash,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written.
    pub written: std::time::SystemTime,
}

/// Why the blob store failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The content is larger than the cap.
    #[error("the content is larger than {limit} bytes; it was not stored")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// The content is not what the provider announced (size or checksum).
    #[error("the content does not match what the provider announced: {0}")]
    Mismatch(String),
    /// Reading or writing a local file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The object storage failed.
    #[error("the blob storage failed: {0}")]
    Storage(#[from] object_store::Error),
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    Missing(BlobHash),
    /// The store's location is not one this engine knows.
    #[error("{0}")]
    Location(String),
}

impl BlobError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self + use<> {
        let path = path.to_owned();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// Where committed blobs go.
#[derive(Debug, Clone)]
enum Backend {
    /// A folder on this machine; staged files are renamed into it.
    Folder(PathBuf),
    /// S3-compatible object storage; staged files are uploaded.
    Object,
}

/// The blob store: a folder (the default, beside the SQLite file) or S3-compatible object
/// storage. Clones share one store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    /// Reads, lists and deletes, for both backends (`object_store`'s local file system for a
    /// folder), and uploads for object storage.
    objects: Arc<dyn ObjectStore>,
    backend: Backend,
    /// Where blobs are staged while they are written: inside the folder for a folder store (so
    /// that committing is a rename), a local temporary folder for object storage.
    staging: PathBuf,
}

/// The parts of a large staged file uploaded at once to object storage, and their size: S3
/// wants parts of at least 5 MiB; four of 8 MiB in flight bound an upload's memory to 40 MiB.
const UPLOAD_PART: usize = 8 << 20;
const UPLOADS_IN_FLIGHT: usize = 4;

impl BlobStore {
    /// Opens the store at `location`, creating a folder store's folder.
    pub fn open(location: &BlobLocation) -> Result<Self, BlobError> {
        match location {
            BlobLocation::Folder(root) => Self::folder(root),
            BlobLocation::S3(s3) => Self::s3(s3),
        }
    }

    /// A store in the folder `root` (created if missing, readable by its owner only).
    pub fn folder(root: &Path) -> Result<Self, BlobError> {
        let staging = root.join(".staging");
        create_private_dir(root)?;
        create_private_dir(&staging)?;
        let root = root
            .canonicalize()
            .map_err(BlobError::io("opening the blob folder", root))?;
        let objects = object_store::local::LocalFileSystem::new_with_prefix(&root)?
            // A blob the store said was written survives a crash (the rename below does its own).
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Self {
            objects: Arc::new(objects),
            staging: root.join(".staging"),
            backend: Backend::Folder(root),
        })
    }

    /// A store in an S3-compatible bucket.
    pub fn s3(location: &S3Location) -> Result<Self, BlobError> {
        crate::http::install_tls_provider();
        let objects = location.build()?;
        let staging = std::env::temp_dir().join(format!("hypernet-blobs-{}", std::process::id()));
        create_private_dir(&staging)?;
        Ok(Self {
            objects: Arc::new(objects),
            backend: Backend::Object,
            staging,
        })
    }

    /// Starts writing a blob: bytes go to a staged file, hashed and counted as they come.
    pub async fn writer(&self, limit: u64) -> Result<BlobWriter, BlobError> {
        BlobWriter::stage(&self.staging, limit).await
    }

    /// Whether the blob is stored.
    pub async fn contains(&self, hash: &BlobHash) -> Result<bool, BlobError> {
        match self.objects.head(&hash.key()).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// The stored size of a blob.
    pub async fn size(&self, hash: &BlobHash) -> Result<u64, BlobError> {
        match self.objects.head(&hash.key()).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::Missing(*hash)),
            Err(error) => Err(error.into()),
        }
    }

    /// The bytes of a blob, or of `range` of them, as a stream of chunks.
    pub async fn read(
        &self,
        hash: &BlobHash,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        match self.objects.get_opts(&hash.key(), options).await {
            Ok(found) => Ok(found.into_stream().map_err(BlobError::from).boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::Missing(*hash)),
            Err(error) => Err(error.into()),
        }
    }

    /// All the bytes of a blob, for small blobs (thumbnails, tests).
    pub async fn read_all(&self, hash: &BlobHash) -> Result<Bytes, BlobError> {
        match self.objects.get(&hash.key()).await {
            Ok(found) => Ok(found.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::Missing(*hash)),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes a blob; a blob that is not there is already deleted.
    pub async fn delete(&self, hash: &BlobHash) -> Result<(), BlobError> {
        match self.objects.delete(&hash.key()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Every stored blob's hash, in no order. Objects under the store's prefix whose names are
    /// not hashes (left by hand, or by another tool) are skipped.
    pub fn list(&self) -> BoxStream<'_, Result<BlobHash, BlobError>> {
        self.list_stored().map_ok(|stored| stored.hash).boxed()
    }

    /// Every stored blob, with its size and when it was written, in no order.
    pub fn list_stored(&self) -> BoxStream<'_, Result<StoredBlob, BlobError>> {
        let prefix = object_store::path::Path::from("b3");
        self.objects
            .list(Some(&prefix))
            .map_err(BlobError::from)
            .try_filter_map(|meta| async move {
                let Some(hash) = meta
                    .location
                    .filename()
                    .and_then(|name| name.parse::<BlobHash>().ok())
                else {
                    return Ok(None);
                };
                let written = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(
                        u64::try_from(meta.last_modified.timestamp()).unwrap_or_default(),
                    );
                Ok(Some(StoredBlob {
                    hash,
                    size: meta.size,
                    written,
                }))
            })
            .boxed()
    }

    /// Removes staged files older than `age` that no writer finished: what a crash left behind
    /// (a folder store's staging folder is inside it; object storage stages per process, and
    /// its folder goes with the machine's temporary files). Says how many went.
    pub fn sweep_staging(&self, age: std::time::Duration) -> Result<u64, BlobError> {
        let mut removed = 0;
        let entries = std::fs::read_dir(&self.staging)
            .map_err(BlobError::io("reading the staging folder", &self.staging))?;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Puts a staged file under its hash, unless the blob is already there (then the staged
    /// file is dropped: the same bytes are stored once).
    async fn commit(&self, staged: &Path, hash: &BlobHash) -> Result<(), BlobError> {
        if self.contains(hash).await? {
            return Ok(());
        }
        match &self.backend {
            Backend::Folder(root) => {
                let key = hash.key();
                let target = root.join(key.as_ref());
                let parent = target.parent().unwrap_or(root);
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(BlobError::io("creating the blob folder", parent))?;
                // The staged file was synced when it was finished; the rename makes it visible
                // whole or not at all, and syncing the folder keeps the rename across a crash.
                tokio::fs::rename(staged, &target)
                    .await
                    .map_err(BlobError::io("moving a staged blob into place at", &target))?;
                sync_dir(parent).await
            }
            Backend::Object => self.upload(staged, hash).await,
        }
    }

    /// Uploads a staged file to object storage: one request when it is small, in parts when not,
    /// reading the file a part at a time.
    async fn upload(&self, staged: &Path, hash: &BlobHash) -> Result<(), BlobError> {
        use tokio::io::AsyncReadExt as _;
        let key = hash.key();
        let mut file = tokio::fs::File::open(staged)
            .await
            .map_err(BlobError::io("reading the staged blob", staged))?;
        let size = file
            .metadata()
            .await
            .map_err(BlobError::io("reading the staged blob", staged))?
            .len();
        if size <= UPLOAD_PART as u64 {
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .await
                .map_err(BlobError::io("reading the staged blob", staged))?;
            self.objects.put(&key, bytes.into()).await?;
            return Ok(());
        }
        let upload = self.objects.put_multipart(&key).await?;
        let mut parts = object_store::WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART);
        let mut buffer = vec![0; 1 << 20];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(read) => read,
                Err(error) => {
                    // Parts left behind on the server cost money until a lifecycle rule.
                    let _ = parts.abort().await;
                    return Err(BlobError::io("reading the staged blob", staged)(error));
                }
            };
            if read == 0 {
                break;
            }
            if let Err(error) = parts.wait_for_capacity(UPLOADS_IN_FLIGHT).await {
                let _ = parts.abort().await;
                return Err(error.into());
            }
            parts.write(&buffer[..read]);
        }
        parts.finish().await?;
        Ok(())
    }
}

/// Creates a folder readable by its owner only (blobs are people's photos and mail), or leaves an
/// existing one as it is.
fn create_private_dir(path: &Path) -> Result<(), BlobError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .map_err(BlobError::io("creating the blob folder", path))
}

/// Makes a rename inside `dir` durable.
async fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    let owned = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&owned)?.sync_all())
        .await
        .map_err(|error| BlobError::Io {
            action: "syncing the blob folder",
            path: dir.to_owned(),
            source: std::io::Error::other(error),
        })?
        .map_err(BlobError::io("syncing the blob folder", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_reads_back_from_its_hex_and_nothing_else_does() {
        let hash = BlobHash::of(b"hello");
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<BlobHash>(), Ok(hash));
        assert_eq!(hex.to_uppercase().parse::<BlobHash>(), Err(NotAHash));
        assert_eq!(hex[..63].parse::<BlobHash>(), Err(NotAHash));
        assert_eq!(format!("{hex}0").parse::<BlobHash>(), Err(NotAHash));
        assert_eq!("../".repeat(21).parse::<BlobHash>(), Err(NotAHash));
        assert_eq!(hash.key().as_ref(), format!("b3/{}/{hex}", &hex[..2]));
    }
}
