//! An export as the person downloaded it: one or more zip files, tar.gz files or folders, read
//! as one tree of entries.
//!
//! Nothing is ever unpacked to disk: each entry is read as a stream, so a hostile name (`../`,
//! an absolute path) could not write anywhere, but it is refused all the same, with links,
//! because an export has neither and their presence means the file is not what it claims. Every
//! entry's unpacked bytes are counted as they are read (not taken from headers, which can lie),
//! against a ratio to what it was packed in and a total: a zip bomb stops at the first byte
//! over, with an error naming the entry.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// How much an export may unpack to, whatever it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// All entries' unpacked bytes together.
    pub max_unpacked: u64,
    /// An entry's unpacked bytes over its packed bytes (zip), or the whole archive's (tar.gz),
    /// once past [`Self::RATIO_FROM`]. Real exports pack 2-30×; deflate's most is about 1030×.
    pub max_ratio: u64,
    /// Entries in the export.
    pub max_entries: usize,
}

impl ArchiveLimits {
    /// Below this many unpacked bytes no ratio is checked: small files of repeated text pack
    /// well and harm nothing.
    pub const RATIO_FROM: u64 = 1 << 20;
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_unpacked: 4 << 40, // 4 TiB: a large Takeout is under 1 TiB
            max_ratio: 200,
            max_entries: 10_000_000,
        }
    }
}

/// Why an export could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The path could not be opened or read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is none of the kinds an export comes in.
    #[error("{} is neither a zip, a tar.gz, a tar nor a folder", path.display())]
    NotAnArchive {
        /// The file.
        path: PathBuf,
    },
    /// The archive is damaged or cut short (an interrupted download).
    #[error("{} is damaged or incomplete ({reason}); download the export again", path.display())]
    Damaged {
        /// The archive.
        path: PathBuf,
        /// What its reader said.
        reason: String,
    },
    /// An entry the import refuses: a name leaving the export, a link, a bomb.
    #[error("{}: entry `{entry}` {reason}; the export is not imported", path.display())]
    Refused {
        /// The archive.
        path: PathBuf,
        /// The entry's name as written in the archive.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The export has more entries than the import reads.
    #[error("{} has more than {max} entries", path.display())]
    TooManyEntries {
        /// The archive or folder.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
}

/// One entry of an export, as a stream reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The part of the export it is in (a zip, a tar.gz, a folder).
    pub part: PathBuf,
    /// Its position among the entries the stream reads, from 0.
    pub ordinal: u64,
    /// Its path inside the export, `/`-separated.
    pub path: String,
    /// Its unpacked size, where the archive says it before it is read.
    pub size: Option<u64>,
}

/// What a visitor of entries says after each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on to the next entry.
    Continue,
    /// Stop here.
    Stop,
}

/// One downloaded part of an export.
#[derive(Debug)]
enum Part {
    /// A folder (an export already unpacked): its files, sorted by path.
    Folder(Vec<(String, PathBuf, u64)>),
    /// A zip file: its entries' indexes in the zip, sorted by path, with their sizes.
    Zip(Vec<ZipEntry>),
    /// A tar file, gzipped or not: read in archive order, in one pass.
    Tar {
        /// Whether it is gzipped.
        gzip: bool,
    },
}

#[derive(Debug)]
struct ZipEntry {
    index: usize,
    path: String,
    size: u64,
    packed: u64,
}

/// An export: its parts, in the order given.
#[derive(Debug)]
pub struct Export {
    parts: Vec<(PathBuf, Part)>,
    limits: ArchiveLimits,
    fingerprint: String,
}

impl Export {
    /// Opens the parts of an export (a Takeout in several zips is one export), checking every
    /// entry's name and kind before anything is read.
    pub fn open(paths: &[PathBuf], limits: ArchiveLimits) -> Result<Self, ArchiveError> {
        let mut parts = Vec::with_capacity(paths.len());
        let mut fingerprint = blake3::Hasher::new();
        for path in paths {
            let part = open_part(path, &limits, &mut fingerprint)?;
            parts.push((path.clone(), part));
        }
        Ok(Self {
            parts,
            limits,
            fingerprint: fingerprint.finalize().to_hex()[..16].to_owned(),
        })
    }

    /// What identifies this export's content: a resumed import goes on only in the export it
    /// began with.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The unpacked bytes of the entries `wanted` selects, where the export says it before it
    /// is read (not for a tar).
    pub fn size_of(&self, wanted: &dyn Fn(&str) -> bool) -> Option<u64> {
        let mut total = 0;
        for (_, part) in &self.parts {
            match part {
                Part::Folder(files) => {
                    total += files
                        .iter()
                        .filter(|(name, ..)| wanted(name))
                        .map(|(.., size)| size)
                        .sum::<u64>();
                }
                Part::Zip(entries) => {
                    total += entries
                        .iter()
                        .filter(|entry| wanted(&entry.path))
                        .map(|entry| entry.size)
                        .sum::<u64>();
                }
                Part::Tar { .. } => return None,
            }
        }
        Some(total)
    }

    /// [`Export::each_entry`] with a visitor that fails in its own error type: its first
    /// failure stops the walk and is returned, and the export's own errors become that type.
    pub fn try_each_entry<E: From<ArchiveError>>(
        &self,
        wanted: &dyn Fn(&str) -> bool,
        from: u64,
        visit: &mut dyn FnMut(&EntryInfo, &mut dyn BufRead) -> Result<Flow, E>,
    ) -> Result<(), E> {
        let mut failure = None;
        self.each_entry(wanted, from, &mut |entry, reader| {
            visit(entry, reader).or_else(|error| {
                failure = Some(error);
                Ok(Flow::Stop)
            })
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// Visits the entries `wanted` selects, in order (each part in turn; a folder's and a zip's
    /// entries by path, a tar's in archive order), from the one numbered `from`, each with a
    /// reader of its unpacked bytes, bounded by the limits.
    pub fn each_entry(
        &self,
        wanted: &dyn Fn(&str) -> bool,
        from: u64,
        visit: &mut dyn FnMut(&EntryInfo, &mut dyn BufRead) -> Result<Flow, ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let mut ordinal = 0_u64;
        let mut budget = Budget {
            unpacked: 0,
            limits: self.limits,
        };
        for (path, part) in &self.parts {
            let flow = match part {
                Part::Folder(files) => {
                    let mut flow = Flow::Continue;
                    for (name, file, size) in files.iter().filter(|(name, ..)| wanted(name)) {
                        ordinal += 1;
                        if ordinal - 1 < from {
                            continue;
                        }
                        let info = EntryInfo {
                            part: path.clone(),
                            ordinal: ordinal - 1,
                            path: name.clone(),
                            size: Some(*size),
                        };
                        let opened = open_file(file)?;
                        let mut reader = BufReader::with_capacity(64 << 10, opened);
                        flow = visit(&info, &mut reader)?;
                        if flow == Flow::Stop {
                            break;
                        }
                    }
                    flow
                }
                Part::Zip(entries) => {
                    let file = open_file(path)?;
                    let mut zip = zip::ZipArchive::new(BufReader::new(file))
                        .map_err(|error| damaged(path, error))?;
                    let mut flow = Flow::Continue;
                    for entry in entries.iter().filter(|entry| wanted(&entry.path)) {
                        ordinal += 1;
                        if ordinal - 1 < from {
                            continue;
                        }
                        let info = EntryInfo {
                            part: path.clone(),
                            ordinal: ordinal - 1,
                            path: entry.path.clone(),
                            size: Some(entry.size),
                        };
                        let file = zip
                            .by_index(entry.index)
                            .map_err(|error| damaged(path, error))?;
                        let cap = budget.cap(entry.size, Some(entry.packed));
                        let mut reader = BufReader::with_capacity(
                            64 << 10,
                            Counted::new(file, cap, entry.path.clone(), path),
                        );
                        flow = visit(&info, &mut reader)?;
                        budget.unpacked += reader.get_ref().read;
                        if flow == Flow::Stop {
                            break;
                        }
                    }
                    flow
                }
                Part::Tar { gzip } => self.each_tar_entry(
                    path,
                    *gzip,
                    wanted,
                    from,
                    &mut ordinal,
                    &mut budget,
                    visit,
                )?,
            };
            if flow == Flow::Stop {
                return Ok(());
            }
        }
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one part's share of `each_entry`"
    )]
    fn each_tar_entry(
        &self,
        path: &Path,
        gzip: bool,
        wanted: &dyn Fn(&str) -> bool,
        from: u64,
        ordinal: &mut u64,
        budget: &mut Budget,
        visit: &mut dyn FnMut(&EntryInfo, &mut dyn BufRead) -> Result<Flow, ArchiveError>,
    ) -> Result<Flow, ArchiveError> {
        let file = open_file(path)?;
        let packed = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        let raw: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        // The whole tar's unpacked bytes (what the gzip stream gives) against its packed size:
        // a tar.gz bomb stops however its entries divide it.
        let whole = budget.cap(u64::MAX, gzip.then_some(packed));
        let mut archive = tar::Archive::new(Counted::new(raw, whole, String::new(), path));
        let entries = archive.entries().map_err(|error| damaged(path, error))?;
        let mut seen = 0_usize;
        for entry in entries {
            let entry = entry.map_err(|error| damaged(path, error))?;
            seen += 1;
            if seen > self.limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    path: path.to_owned(),
                    max: self.limits.max_entries,
                });
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                return Err(link(path, &name));
            }
            if !kind.is_file() {
                continue; // folders, and the pax and GNU headers the tar crate reads itself
            }
            let inside = inside_name(&name).map_err(|reason| refused(path, &name, reason))?;
            if !wanted(&inside) {
                continue;
            }
            *ordinal += 1;
            if *ordinal - 1 < from {
                continue;
            }
            let info = EntryInfo {
                part: path.to_owned(),
                ordinal: *ordinal - 1,
                path: inside,
                size: Some(entry.size()),
            };
            let mut reader = BufReader::with_capacity(64 << 10, entry);
            if visit(&info, &mut reader)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }
}

/// What the entries read so far have unpacked.
struct Budget {
    unpacked: u64,
    limits: ArchiveLimits,
}

impl Budget {
    /// The most an entry of `size` (as its header says) packed in `packed` bytes may unpack to.
    /// The header's size is not trusted: the cap is the limits', and reading more is an error.
    fn cap(&self, size: u64, packed: Option<u64>) -> Cap {
        let left = self.limits.max_unpacked.saturating_sub(self.unpacked);
        let by_ratio = packed.map(|packed| {
            packed
                .saturating_mul(self.limits.max_ratio)
                .max(ArchiveLimits::RATIO_FROM)
        });
        Cap {
            declared: size,
            total: left,
            ratio: by_ratio,
            limits: self.limits,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Cap {
    declared: u64,
    total: u64,
    ratio: Option<u64>,
    limits: ArchiveLimits,
}

/// A reader of an entry's unpacked bytes that counts them and stops at its cap with an error.
struct Counted<R> {
    inner: R,
    read: u64,
    cap: Cap,
    entry: String,
    archive: PathBuf,
}

impl<R: Read> Counted<R> {
    fn new(inner: R, cap: Cap, entry: String, archive: &Path) -> Self {
        Self {
            inner,
            read: 0,
            cap,
            entry,
            archive: archive.to_owned(),
        }
    }

    fn over(&self) -> Option<String> {
        let cap = self.cap;
        if self.read > cap.declared {
            return Some(format!(
                "unpacks to more than the {} bytes its header says",
                cap.declared
            ));
        }
        if self.read > cap.total {
            return Some(format!(
                "takes the export past {} unpacked bytes",
                cap.limits.max_unpacked
            ));
        }
        match cap.ratio {
            Some(ratio) if self.read > ratio => Some(format!(
                "unpacks to more than {}× its packed size (a zip bomb?)",
                cap.limits.max_ratio
            )),
            _ => None,
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.read += read as u64;
        match self.over() {
            None => Ok(read),
            // The refusal itself travels inside the I/O error, to be told as it is.
            Some(reason) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                refused(&self.archive, &self.entry, &reason),
            )),
        }
    }
}

/// Opens a file of the export, telling which one could not be opened.
fn open_file(path: &Path) -> Result<File, ArchiveError> {
    File::open(path).map_err(|error| ArchiveError::Io {
        path: path.to_owned(),
        error,
    })
}

pub(super) fn damaged(path: &Path, error: impl ToString) -> ArchiveError {
    ArchiveError::Damaged {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// An entry that is a link: an export holds files only, and a link could lead anywhere.
fn link(path: &Path, entry: &str) -> ArchiveError {
    refused(path, entry, "is a link; an export holds files only")
}

fn refused(path: &Path, entry: &str, reason: &str) -> ArchiveError {
    ArchiveError::Refused {
        path: path.to_owned(),
        entry: crate::extract::shortened(entry, 200),
        reason: reason.to_owned(),
    }
}

/// An entry's name as a path inside the export (`/`-separated, no `.` parts, no leading `./`),
/// or why it is refused: absolute, or going up out of the export.
pub fn inside_name(name: &str) -> Result<String, &'static str> {
    let name = name.replace('\\', "/");
    if name.starts_with('/') || name.as_bytes().get(1) == Some(&b':') {
        return Err("has an absolute path");
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("leads out of the export (`..`)"),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err("has an empty name");
    }
    Ok(parts.join("/"))
}

/// Opens one part: a folder, a zip, or a tar (gzipped or not), told apart by content.
fn open_part(
    path: &Path,
    limits: &ArchiveLimits,
    fingerprint: &mut blake3::Hasher,
) -> Result<Part, ArchiveError> {
    let io = |error| ArchiveError::Io {
        path: path.to_owned(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        let mut files = Vec::new();
        walk_folder(path, path, 0, limits, &mut files)?;
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, _, size) in &files {
            fingerprint.update(name.as_bytes());
            fingerprint.update(&size.to_le_bytes());
        }
        return Ok(Part::Folder(files));
    }
    let mut magic = [0_u8; 512];
    let mut file = File::open(path).map_err(io)?;
    let read = read_up_to(&mut file, &mut magic).map_err(io)?;
    let magic = &magic[..read];
    fingerprint.update(&meta.len().to_le_bytes());
    if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        return open_zip(path, file, limits, fingerprint);
    }
    fingerprint.update(magic);
    if magic.starts_with(&[0x1f, 0x8b]) {
        return Ok(Part::Tar { gzip: true });
    }
    if magic.len() >= 262 && &magic[257..262] == b"ustar" {
        return Ok(Part::Tar { gzip: false });
    }
    Err(ArchiveError::NotAnArchive {
        path: path.to_owned(),
    })
}

fn read_up_to(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut read = 0;
    while read < buffer.len() {
        match file.read(&mut buffer[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}

fn open_zip(
    path: &Path,
    file: File,
    limits: &ArchiveLimits,
    fingerprint: &mut blake3::Hasher,
) -> Result<Part, ArchiveError> {
    let mut zip =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|error| damaged(path, error))?;
    if zip.len() > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            path: path.to_owned(),
            max: limits.max_entries,
        });
    }
    let mut entries = Vec::with_capacity(zip.len());
    for index in 0..zip.len() {
        let entry = zip
            .by_index_raw(index)
            .map_err(|error| damaged(path, error))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if entry.is_symlink() {
            return Err(link(path, &name));
        }
        if entry.is_dir() {
            continue;
        }
        let inside = inside_name(&name).map_err(|reason| refused(path, &name, reason))?;
        fingerprint.update(inside.as_bytes());
        fingerprint.update(&entry.crc32().to_le_bytes());
        fingerprint.update(&entry.size().to_le_bytes());
        entries.push(ZipEntry {
            index,
            path: inside,
            size: entry.size(),
            packed: entry.compressed_size(),
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Part::Zip(entries))
}

/// The deepest folder nesting an unpacked export may have.
const MAX_FOLDER_DEPTH: usize = 64;

fn walk_folder(
    root: &Path,
    folder: &Path,
    depth: usize,
    limits: &ArchiveLimits,
    files: &mut Vec<(String, PathBuf, u64)>,
) -> Result<(), ArchiveError> {
    let io = |error| ArchiveError::Io {
        path: folder.to_owned(),
        error,
    };
    if depth > MAX_FOLDER_DEPTH {
        return Err(refused(
            root,
            &folder.display().to_string(),
            "nests folders too deep",
        ));
    }
    for item in std::fs::read_dir(folder).map_err(io)? {
        let item = item.map_err(io)?;
        let path = item.path();
        // Not followed: a link could lead anywhere on the machine.
        let kind = item.file_type().map_err(io)?;
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if kind.is_symlink() {
            return Err(link(root, &name));
        }
        if kind.is_dir() {
            walk_folder(root, &path, depth + 1, limits, files)?;
        } else if kind.is_file() {
            let size = item.metadata().map_err(io)?.len();
            files.push((name, path, size));
            if files.len() > limits.max_entries {
                return Err(ArchiveError::TooManyEntries {
                    path: root.to_owned(),
                    max: limits.max_entries,
                });
            }
        }
    }
    Ok(())
}
