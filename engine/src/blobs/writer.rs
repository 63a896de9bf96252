//! Staging a blob: its bytes into a private file, hashed, counted and checked as they come.

use std::path::Path;

use md5::Digest as _;
use tokio::io::AsyncWriteExt as _;

use super::{BlobError, BlobHash, BlobRef, BlobStore};

/// A checksum a provider gives for a file's content, checked once all of it has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// MD5 of the bytes (Google Drive's `md5Checksum`).
    Md5([u8; 16]),
    /// SHA-256 of the bytes (Google Drive's `sha256Checksum`, OneDrive's `sha256Hash`).
    Sha256([u8; 32]),
    /// Dropbox's `content_hash`: SHA-256 over the SHA-256 of each 4 MiB block, in order.
    DropboxContentHash([u8; 32]),
}

impl Checksum {
    /// Reads a checksum of `kind` (`md5`, `sha256`, `dropbox`) from its hex digits.
    pub fn from_hex(kind: &str, hex: &str) -> Result<Self, String> {
        fn digits<const N: usize>(hex: &str) -> Result<[u8; N], String> {
            let text = hex.trim();
            if text.len() != N * 2 {
                return Err(format!("expected {} hex digits, got {}", N * 2, text.len()));
            }
            let mut out = [0; N];
            for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
                let pair = std::str::from_utf8(pair).map_err(|_| "not hex".to_owned())?;
                *byte = u8::from_str_radix(pair, 16).map_err(|_| format!("`{pair}` is not hex"))?;
            }
            Ok(out)
        }
        match kind {
            "md5" => digits(hex).map(Self::Md5),
            "sha256" => digits(hex).map(Self::Sha256),
            "dropbox" => digits(hex).map(Self::DropboxContentHash),
            other => Err(format!(
                "unknown checksum `{other}`; expected md5, sha256 or dropbox"
            )),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Md5(_) => "MD5",
            Self::Sha256(_) => "SHA-256",
            Self::DropboxContentHash(_) => "Dropbox content hash",
        }
    }
}

/// What the provider announced about the content, checked when it has all come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Its size in bytes.
    pub size: Option<u64>,
    /// A checksum of it.
    pub checksum: Option<Checksum>,
    /// Its MIME type (kept on the blob's reference; not checked).
    pub content_type: Option<String>,
}

/// Dropbox hashes its content in blocks of this size.
const DROPBOX_BLOCK: usize = 4 << 20;

/// Computes the provider's checksum alongside BLAKE3, only when one is expected.
enum Verifier {
    None,
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
    Dropbox {
        overall: sha2::Sha256,
        block: sha2::Sha256,
        in_block: usize,
    },
}

impl Verifier {
    fn for_checksum(checksum: Option<&Checksum>) -> Self {
        match checksum {
            None => Self::None,
            Some(Checksum::Md5(_)) => Self::Md5(md5::Md5::new()),
            Some(Checksum::Sha256(_)) => Self::Sha256(sha2::Sha256::new()),
            Some(Checksum::DropboxContentHash(_)) => Self::Dropbox {
                overall: sha2::Sha256::new(),
                block: sha2::Sha256::new(),
                in_block: 0,
            },
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        match self {
            Self::None => {}
            Self::Md5(hasher) => hasher.update(bytes),
            Self::Sha256(hasher) => hasher.update(bytes),
            Self::Dropbox {
                overall,
                block,
                in_block,
            } => {
                while !bytes.is_empty() {
                    let take = (DROPBOX_BLOCK - *in_block).min(bytes.len());
                    block.update(&bytes[..take]);
                    *in_block += take;
                    bytes = &bytes[take..];
                    if *in_block == DROPBOX_BLOCK {
                        overall.update(std::mem::take(block).finalize());
                        *in_block = 0;
                    }
                }
            }
        }
    }

    /// Whether the bytes seen have the checksum.
    fn matches(self, checksum: &Checksum) -> bool {
        match (self, checksum) {
            (Self::Md5(hasher), Checksum::Md5(want)) => hasher.finalize().as_slice() == want,
            (Self::Sha256(hasher), Checksum::Sha256(want)) => hasher.finalize().as_slice() == want,
            (
                Self::Dropbox {
                    mut overall,
                    block,
                    in_block,
                },
                Checksum::DropboxContentHash(want),
            ) => {
                if in_block > 0 {
                    overall.update(block.finalize());
                }
                overall.finalize().as_slice() == want
            }
            _ => false,
        }
    }
}

/// A blob being written: chunks go to a staged file in the store's staging folder. Dropped
/// before [`BlobWriter::finish`], the staged file is removed and nothing is stored.
pub struct BlobWriter {
    file: tokio::io::BufWriter<tokio::fs::File>,
    /// Removes the staged file when the writer is dropped (kept once committed).
    path: tempfile::TempPath,
    hasher: blake3::Hasher,
    verifier: Option<Verifier>,
    size: u64,
    limit: u64,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// A new staged file in `staging`, for at most `limit` bytes.
    pub(super) async fn stage(staging: &Path, limit: u64) -> Result<Self, BlobError> {
        let named = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(staging)
            .map_err(BlobError::io("staging a blob in", staging))?;
        let (file, path) = named.into_parts();
        Ok(Self {
            // Writes reach the file a quarter MiB at a time (each a trip to tokio's blocking
            // pool), whatever size the chunks come in.
            file: tokio::io::BufWriter::with_capacity(256 << 10, tokio::fs::File::from_std(file)),
            path,
            hasher: blake3::Hasher::new(),
            verifier: None,
            size: 0,
            limit,
        })
    }

    /// Checks the content against `checksum` as it is written (call before the first chunk).
    pub fn verify(&mut self, checksum: Option<&Checksum>) {
        if self.size == 0 {
            self.verifier = Some(Verifier::for_checksum(checksum));
        }
    }

    /// How many bytes were written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts the content over, checked against `checksum`: what was written is dropped (a
    /// download asked again whose answer does not continue it).
    pub async fn restart(&mut self, checksum: Option<&Checksum>) -> Result<(), BlobError> {
        use tokio::io::AsyncSeekExt as _;
        self.file
            .flush()
            .await
            .map_err(BlobError::io("writing the staged blob", &self.path))?;
        let file = self.file.get_mut();
        file.set_len(0)
            .await
            .map_err(BlobError::io("emptying the staged blob", &self.path))?;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(BlobError::io("emptying the staged blob", &self.path))?;
        self.hasher.reset();
        self.verifier = Some(Verifier::for_checksum(checksum));
        self.size = 0;
        Ok(())
    }

    /// Writes the next chunk. Fails once the content passes the limit: the caller stops reading.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let size = self.size.saturating_add(chunk.len() as u64);
        if size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.size = size;
        self.hasher.update(chunk);
        if let Some(verifier) = &mut self.verifier {
            verifier.update(chunk);
        }
        self.file
            .write_all(chunk)
            .await
            .map_err(BlobError::io("writing the staged blob", &self.path))
    }

    /// Checks the content against what was announced, and stores it under its hash (once,
    /// whatever else already refers to the same bytes).
    pub async fn finish(
        mut self,
        store: &BlobStore,
        expected: Expected,
    ) -> Result<BlobRef, BlobError> {
        if let Some(size) = expected.size
            && size != self.size
        {
            return Err(BlobError::Mismatch(format!(
                "{} bytes came where {size} were announced",
                self.size
            )));
        }
        if let Some(checksum) = &expected.checksum {
            let verifier = self.verifier.take().unwrap_or(Verifier::None);
            if !verifier.matches(checksum) {
                return Err(BlobError::Mismatch(format!(
                    "its {} differs from the provider's",
                    checksum.name()
                )));
            }
        }
        self.file
            .flush()
            .await
            .map_err(BlobError::io("writing the staged blob", &self.path))?;
        // On disk before it is renamed into place: a blob is whole or absent after a crash.
        self.file
            .get_mut()
            .sync_all()
            .await
            .map_err(BlobError::io("syncing the staged blob", &self.path))?;
        let hash = BlobHash(*self.hasher.finalize().as_bytes());
        store.commit(&self.path, &hash).await?;
        Ok(BlobRef {
            hash,
            size: self.size,
            content_type: expected.content_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(checksum: &Checksum, bytes: &[u8], chunk: usize) -> bool {
        let mut verifier = Verifier::for_checksum(Some(checksum));
        for piece in bytes.chunks(chunk.max(1)) {
            verifier.update(piece);
        }
        verifier.matches(checksum)
    }

    #[test]
    fn dropbox_content_hash_is_checked_in_blocks_whatever_the_chunks() {
        // Dropbox's own test vector is a 9.7 MB image we do not ship
        // (https://www.dropbox.com/developers/reference/content-hash); the algorithm is computed
        // here from whole blocks and compared with the streamed check over any chunking.
        let bytes: Vec<u8> = (0..(DROPBOX_BLOCK * 2 + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut overall = sha2::Sha256::new();
        for block in bytes.chunks(DROPBOX_BLOCK) {
            overall.update(sha2::Sha256::digest(block));
        }
        let want = Checksum::DropboxContentHash(overall.finalize().into());
        for chunk in [1000, DROPBOX_BLOCK, DROPBOX_BLOCK + 7, bytes.len()] {
            assert!(verified(&want, &bytes, chunk), "chunks of {chunk}");
        }
        assert!(!verified(&want, &bytes[1..], 4096));
        // The empty file's content hash is SHA-256 of nothing (no blocks).
        let empty = Checksum::from_hex(
            "dropbox",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .unwrap();
        assert!(verified(&empty, b"", 1));
    }

    #[test]
    fn md5_and_sha256_check_the_bytes() {
        let md5 = Checksum::from_hex("md5", "5d41402abc4b2a76b9719d911017c592").unwrap();
        assert!(verified(&md5, b"hello", 2));
        assert!(!verified(&md5, b"hellp", 2));
        let sha = Checksum::from_hex(
            "sha256",
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        )
        .unwrap();
        assert!(verified(&sha, b"hello", 3));
        assert!(Checksum::from_hex("md5", "5d41").is_err());
        assert!(Checksum::from_hex("crc32", "00").is_err());
        assert!(Checksum::from_hex("md5", "zz41402abc4b2a76b9719d911017c592").is_err());
    }
}
