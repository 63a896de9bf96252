//! Data exports: the files of an export the person downloaded (a zip, tar.gz or folder), read
//! entry by entry and document by document.
//!
//! An archive stream selects entries by glob (`archive.entries`) and splits each into
//! documents (`archive.split` with the stream's `decode`): a page is a run of documents, up to
//! [`PAGE_DOCUMENTS`], possibly across entries, and its cursor is the entry and the documents
//! read of it ([`EntryCursor`]), so an import killed anywhere resumes at the next document.
//!
//! Reading is blocking work (inflating, framing, parsing): it runs on its own thread
//! ([`read_pages`]) and hands pages over a short channel, so memory holds a few pages whatever
//! the export's size, and mapping and writing go on while the next page is read.

mod export;
mod join;

use std::sync::Arc;

use tokio::sync::mpsc;

pub use export::{ArchiveError, ArchiveLimits, EntryInfo, Export, Flow, inside_name};
pub use join::{JoinError, JoinIndex, JoinPlan, MAX_JOIN_BYTES};

use crate::decode::document::Document;
use crate::decode::{DecodeError, FramePosition};
use crate::decode::{Decoder, PageBuilder};
use crate::extract::CompiledPath;
use crate::spec::Selection;
use crate::state::EntryCursor;

/// The most documents a page holds.
pub const PAGE_DOCUMENTS: usize = 1000;

/// The most frame bytes a page holds: a page of large documents (ENEX notes with their images)
/// ends sooner.
pub const PAGE_BYTES: usize = 8 << 20;

/// How an archive stream reads, compiled once.
#[derive(Debug)]
pub struct ArchivePlan {
    /// The entries it reads.
    pub selection: Selection,
    /// How each entry splits into documents, and what they are.
    pub decoder: Decoder,
    /// Selects the records in a page (the array of its documents).
    pub records: CompiledPath,
    /// The largest document (frame), in bytes.
    pub max_document: usize,
    /// Whether a completed import marks what it did not see as deleted.
    pub complete: bool,
    /// Whether a page holds the documents of one file only (the stream's templates read
    /// `entry`, which is the page's file): pages then end where files do.
    pub page_per_entry: bool,
    /// Other files' documents joined to each document.
    pub join: Option<JoinPlan>,
    /// Whether a record read again in the same import (a copy) is skipped.
    pub dedupe: bool,
    /// When the stream's content is its files (`content.entry`): the largest file copied, in
    /// bytes. Larger files are read (their records are imported) but not copied.
    pub copy_entries: Option<u64>,
}

/// Where the files of a stream whose content is its files (`content.entry`) are copied as they
/// are read: the blob store, which the import provides (this stage knows nothing of it). A
/// file is copied on the reading thread, in the same pass that decodes it, and kept before the
/// page with its record is sent: a stored record's content is always stored.
pub trait EntryCopies: Send + Sync {
    /// Starts copying a file of at most `limit` bytes.
    fn begin(&self, limit: u64) -> Result<Box<dyn EntryCopy>, CopyError>;
}

/// One file being copied.
pub trait EntryCopy: Send {
    /// Copies the next bytes of the file.
    fn write(&mut self, bytes: &[u8]) -> Result<(), CopyError>;
    /// The file went by whole: keeps the copy, and says the hex BLAKE3 hash it is kept under.
    fn keep(self: Box<Self>) -> Result<String, CopyError>;
}

/// Why a file was not copied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// It is larger than the content's `max_bytes`: its record is imported without it.
    #[error("the file is larger than the content's `max_bytes`")]
    TooLarge,
    /// The copy could not be written (a full disk, an unreachable object store): the import
    /// stops, to be resumed.
    #[error("{0}")]
    Failed(String),
}

/// A file of a page copied whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedEntry {
    /// Its path inside the export.
    pub path: String,
    /// The hex BLAKE3 hash the copy is kept under (the `blake3` of its media facts).
    pub hash: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A file's copy as it is read.
#[derive(Default)]
struct CopyState {
    copy: Option<Box<dyn EntryCopy>>,
    size: u64,
    /// The whole file went by.
    ended: bool,
    /// Why the copy stopped early, if it did.
    stopped: Option<CopyError>,
}

impl CopyState {
    fn pass(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(copy) = &mut self.copy {
            match copy.write(bytes) {
                Ok(()) => self.size += bytes.len() as u64,
                Err(error) => {
                    self.copy = None;
                    self.stopped = Some(error);
                }
            }
        }
    }

    /// Keeps the copy of `entry` once it went by whole, adding it to `copied`.
    fn settle(
        &mut self,
        entry: &EntryInfo,
        copied: &mut Vec<CopiedEntry>,
    ) -> Result<(), ArchiveReadError> {
        let failed = |reason: String| ArchiveReadError::Copy {
            entry: entry.path.clone(),
            reason,
        };
        if let Some(CopyError::Failed(reason)) = self.stopped.take() {
            return Err(failed(reason));
        }
        if !self.ended {
            return Ok(());
        }
        if let Some(copy) = self.copy.take() {
            match copy.keep() {
                Ok(hash) => copied.push(CopiedEntry {
                    path: entry.path.clone(),
                    hash,
                    size: self.size,
                }),
                Err(CopyError::TooLarge) => {}
                Err(CopyError::Failed(reason)) => return Err(failed(reason)),
            }
        }
        Ok(())
    }
}

/// `entry` in templates: the path inside the export of a file, with its `name`
/// (`jane.doe@gmail.com.ics`), `stem` (`jane.doe@gmail.com`), `extension` (`ics`, empty for
/// none) and `folder` (`Takeout/Calendar`, empty at the top).
pub fn entry_value(path: &str) -> minijinja::Value {
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, extension),
        _ => (name, ""),
    };
    minijinja::context! {
        path => path,
        name => name,
        stem => stem,
        extension => extension,
        folder => folder,
    }
}

/// A run of documents read from an export.
#[derive(Debug)]
pub struct ArchivePage {
    /// The documents, as one array.
    pub body: Document,
    /// Where the page after this one starts; `None` after the last.
    pub next: Option<EntryCursor>,
    /// The entry the page's first document is in.
    pub entry: String,
    /// The selected entries' unpacked bytes read so far, of [`ArchivePage::total`].
    pub read: u64,
    /// The selected entries' unpacked bytes, where the export says them (not a tar's).
    pub total: Option<u64>,
    /// The selected entries begun so far: 0 on the last page of an export that has none of
    /// the stream's files (a Takeout of other products).
    pub entries: u64,
    /// The files copied with this page (see [`EntryCopies`]).
    pub copied: Vec<CopiedEntry>,
}

/// Why an export's documents could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveReadError {
    /// The export itself: damaged, or an entry refused.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A document that could not be decoded.
    #[error("`{entry}`, document {document}: {error}")]
    Decode {
        /// The entry.
        entry: String,
        /// The document's number in the entry, from 1.
        document: u64,
        /// Why.
        error: DecodeError,
    },
    /// The files joined could not be indexed.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// A file could not be copied into the store.
    #[error("`{entry}`: its bytes could not be stored: {reason}")]
    Copy {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The stored cursor names an entry the export does not have at that place.
    #[error(
        "the import was resuming at `{0}`, which this export does not have there; it starts again"
    )]
    Moved(String),
}

/// What the reading thread sends: a page, or why reading stopped.
pub type PageResult = Result<ArchivePage, ArchiveReadError>;

/// Reads the pages of what `plan` selects in `export`, from `from` (`None`: the first entry),
/// on a blocking thread, sending each page to the returned channel; reading stops when the
/// receiver is dropped. With `copies`, the files of a stream whose content is its files are
/// copied there as they are read.
pub fn read_pages(
    export: Arc<Export>,
    plan: Arc<ArchivePlan>,
    from: Option<EntryCursor>,
    copies: Option<Arc<dyn EntryCopies>>,
) -> mpsc::Receiver<PageResult> {
    let (sender, pages) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut reader = PageReader::new(&export, &plan, &sender);
        reader.copies = copies.filter(|_| plan.copy_entries.is_some());
        let result = reader.read_all(from);
        match result {
            Ok(()) => reader.finish(),
            Err(error) => {
                let _ = sender.blocking_send(Err(error));
            }
        }
    });
    pages
}

/// An entry's reader that keeps the first I/O error it gives, and copies what it reads when
/// the entry is copied.
struct Watched<'w> {
    inner: &'w mut dyn std::io::BufRead,
    failure: &'w std::cell::RefCell<Option<std::io::Error>>,
    copy: Option<&'w std::cell::RefCell<CopyState>>,
}

impl Watched<'_> {
    fn watch<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        result.map_err(|error| {
            let told = std::io::Error::new(error.kind(), error.to_string());
            let mut failure = self.failure.borrow_mut();
            if failure.is_none() {
                *failure = Some(error);
            }
            told
        })
    }
}

impl std::io::Read for Watched<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let result = self.inner.read(buffer);
        if let (Ok(read), Some(copy)) = (&result, self.copy) {
            let mut copy = copy.borrow_mut();
            if *read == 0 && !buffer.is_empty() {
                copy.ended = true;
            }
            copy.pass(&buffer[..*read]);
        }
        self.watch(result)
    }
}

impl std::io::BufRead for Watched<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        // Two steps: the buffer borrows `inner`, the error goes to `failure`.
        if let Err(error) = self.inner.fill_buf() {
            return Err(self.watch::<()>(Err(error)).unwrap_err());
        }
        let buffer = self.inner.fill_buf()?;
        if buffer.is_empty()
            && let Some(copy) = self.copy
        {
            copy.borrow_mut().ended = true;
        }
        Ok(buffer)
    }

    fn consume(&mut self, amount: usize) {
        if let Some(copy) = self.copy {
            // The bytes consumed are still the buffer's: `fill_buf` reads nothing more until
            // they are.
            match self.inner.fill_buf() {
                Ok(buffer) => copy.borrow_mut().pass(&buffer[..amount.min(buffer.len())]),
                Err(error) => {
                    copy.borrow_mut().stopped = Some(CopyError::Failed(error.to_string()));
                }
            }
        }
        self.inner.consume(amount);
    }
}

/// What an I/O error reading `entry` means: the refusal it carries, or a damaged archive.
fn as_archive_error(error: std::io::Error, entry: &EntryInfo) -> ArchiveError {
    let reason = error.to_string();
    match error
        .into_inner()
        .and_then(|inner| inner.downcast::<ArchiveError>().ok())
    {
        Some(refusal) => *refusal,
        None => export::damaged(&entry.part, format!("`{}`: {reason}", entry.path)),
    }
}

/// Fills pages on the reading thread.
struct PageReader<'r> {
    export: &'r Export,
    plan: &'r ArchivePlan,
    sender: &'r mpsc::Sender<PageResult>,
    /// The page being filled: its documents decoded together (`Decoder::page_builder`), or
    /// one by one (a format without a page builder, a stream that joins other files).
    joined: Option<PageBuilder>,
    values: Vec<serde_json::Value>,
    /// The entry of the page's first document.
    first_entry: Option<String>,
    read: u64,
    total: Option<u64>,
    entries: u64,
    /// The receiver is gone: stop.
    closed: bool,
    /// The joined documents, when the stream joins any.
    join: Option<JoinIndex>,
    /// Where the stream's files are copied, when its content is its files.
    copies: Option<Arc<dyn EntryCopies>>,
    /// The files copied since the last page was sent.
    copied: Vec<CopiedEntry>,
}

impl<'r> PageReader<'r> {
    fn new(
        export: &'r Export,
        plan: &'r ArchivePlan,
        sender: &'r mpsc::Sender<PageResult>,
    ) -> Self {
        let selection = &plan.selection;
        Self {
            export,
            plan,
            sender,
            joined: match plan.join {
                Some(_) => None,
                None => plan.decoder.page_builder(),
            },
            values: Vec::new(),
            first_entry: None,
            read: 0,
            total: export.size_of(&|path| selection.matches(path)),
            entries: 0,
            closed: false,
            join: None,
            copies: None,
            copied: Vec::new(),
        }
    }

    fn read_all(&mut self, from: Option<EntryCursor>) -> Result<(), ArchiveReadError> {
        let plan = self.plan;
        let export = self.export;
        if let Some(join) = &plan.join {
            self.join = Some(JoinIndex::build(export, join)?);
        }
        let start = from.as_ref().map_or(0, |cursor| cursor.entry);
        let mut first = true;
        let wanted = |path: &str| plan.selection.matches(path);
        export.try_each_entry(&wanted, start, &mut |entry, reader| {
            let skip = match (&from, first) {
                (Some(cursor), true) => {
                    if cursor.path != entry.path {
                        return Err(ArchiveReadError::Moved(cursor.path.clone()));
                    }
                    cursor.documents
                }
                _ => 0,
            };
            first = false;
            self.entries += 1;
            self.read_entry(entry, reader, skip)?;
            Ok(if self.closed {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })
    }

    /// Reads one entry's documents after the first `skip`, sending each page as it fills.
    fn read_entry(
        &mut self,
        entry: &EntryInfo,
        reader: &mut dyn std::io::BufRead,
        skip: u64,
    ) -> Result<(), ArchiveReadError> {
        let decoder = &self.plan.decoder;
        let from = FramePosition {
            frames: skip,
            offset: 0,
        };
        let decode_error = |document: u64, error: DecodeError| ArchiveReadError::Decode {
            entry: entry.path.clone(),
            document,
            error,
        };
        // An I/O error under the decoder (a refusal, a damaged archive) is told as what it is,
        // not as a document that does not decode.
        let failure = std::cell::RefCell::new(None);
        // A file whose document was read before a resume was copied with its page: it is read
        // again to find where to go on (whole files are one document), not copied again.
        let copy = match (&self.copies, self.plan.copy_entries) {
            (Some(copies), Some(limit)) if skip == 0 => {
                let copy = copies
                    .begin(limit)
                    .map_err(|error| ArchiveReadError::Copy {
                        entry: entry.path.clone(),
                        reason: error.to_string(),
                    })?;
                Some(std::cell::RefCell::new(CopyState {
                    copy: Some(copy),
                    ..CopyState::default()
                }))
            }
            _ => None,
        };
        let mut watched = Watched {
            inner: reader,
            failure: &failure,
            copy: copy.as_ref(),
        };
        let decode_error = |document: u64, error: DecodeError| match failure.borrow_mut().take() {
            Some(io) => ArchiveReadError::Archive(as_archive_error(io, entry)),
            None => decode_error(document, error),
        };
        // A page of one file only: the one being filled ends where this file begins.
        if self.plan.page_per_entry && self.documents() > 0 {
            let next = EntryCursor {
                export: self.export.fingerprint().to_owned(),
                entry: entry.ordinal,
                path: entry.path.clone(),
                documents: skip,
            };
            self.send(Some(next))
                .map_err(|error| decode_error(skip, error))?;
            if self.closed {
                return Ok(());
            }
        }
        let mut frames = decoder
            .frames(&mut watched, from, self.plan.max_document)
            .map_err(|error| decode_error(skip, error))?;
        let mut offset = 0;
        // `entry` for the join's templates, made when first needed.
        let mut file: Option<minijinja::Value> = None;
        loop {
            let document = frames.position().frames + 1;
            if let Some(joined) = &mut self.joined {
                if !joined
                    .read_next(&mut frames)
                    .map_err(|error| decode_error(document, error))?
                {
                    break;
                }
            } else {
                let Some(frame) = frames
                    .next_frame()
                    .map_err(|error| decode_error(document, error))?
                else {
                    break;
                };
                let mut value = decoder
                    .frame_value(frame)
                    .map_err(|error| decode_error(document, error))?;
                if let (Some(plan), Some(index)) = (&self.plan.join, &self.join)
                    && value.is_object()
                {
                    let file = file.get_or_insert_with(|| entry_value(&entry.path));
                    if let Some(joined) = index.find(plan, &value, file)
                        && let Some(object) = value.as_object_mut()
                    {
                        object.insert(plan.into.clone(), joined);
                    }
                }
                self.values.push(value);
            }
            if self.first_entry.is_none() {
                self.first_entry = Some(entry.path.clone());
            }
            // The file went by whole with its document: its copy is kept before the page with
            // its record is sent. (A file whose document was read before a resume is not copied
            // again: it was kept with its page.)
            if let Some(copy) = &copy {
                copy.borrow_mut().settle(entry, &mut self.copied)?;
            }
            let position = frames.position();
            self.read += position.offset - offset;
            offset = position.offset;
            let bytes = self.joined.as_ref().map_or(0, PageBuilder::bytes);
            if self.documents() >= PAGE_DOCUMENTS || bytes >= PAGE_BYTES {
                let next = EntryCursor {
                    export: self.export.fingerprint().to_owned(),
                    entry: entry.ordinal,
                    path: entry.path.clone(),
                    documents: position.frames,
                };
                self.send(Some(next))
                    .map_err(|error| decode_error(document, error))?;
                if self.closed {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The documents of the page filled so far.
    fn documents(&self) -> usize {
        self.joined
            .as_ref()
            .map_or(self.values.len(), PageBuilder::documents)
    }

    /// Sends the page filled so far (with `next`, where the one after starts).
    fn send(&mut self, next: Option<EntryCursor>) -> Result<(), DecodeError> {
        let body = match &mut self.joined {
            Some(joined) => joined.take()?,
            None => {
                Document::from_value(serde_json::Value::Array(std::mem::take(&mut self.values)))
            }
        };
        let page = ArchivePage {
            body,
            next,
            entry: self.first_entry.take().unwrap_or_default(),
            read: self.read,
            total: self.total,
            entries: self.entries,
            copied: std::mem::take(&mut self.copied),
        };
        if self.sender.blocking_send(Ok(page)).is_err() {
            self.closed = true;
        }
        Ok(())
    }

    /// Sends the last page (possibly empty: it completes the pass).
    fn finish(&mut self) {
        if self.closed {
            return;
        }
        if let Err(error) = self.send(None) {
            let entry = self.first_entry.take().unwrap_or_default();
            let _ = self.sender.blocking_send(Err(ArchiveReadError::Decode {
                entry,
                document: 0,
                error,
            }));
        }
    }
}
