//! Importing a data export: an archive stream's pages, read from the export on their own
//! thread, mapped and written like an API's, with a checkpoint inside the export with each.

use std::sync::Arc;

use super::pass::PassState;
use super::plan::Reads;
use super::{SyncError, SyncErrorKind, SyncRun, Walk};
use crate::blobs::{BlobStore, BlobWriter, Expected};
use crate::decode::document::Node;
use crate::events::{Event, Observer};
use crate::extract::Target;
use crate::source::archive::{
    ArchivePage, ArchivePlan, ArchiveReadError, CopyError, EntryCopies, EntryCopy, Export,
    read_pages,
};
use crate::state::{EntryCursor, PageCursor};
use crate::store::Sink;

/// One stream of a read: its walk through the pages and its pass.
struct Reader<'r> {
    walk: Walk<'r>,
    plan: &'r Arc<ArchivePlan>,
    pass: PassState,
}

impl<S: Sink> SyncRun<'_, S> {
    /// Imports the archive streams `names` from `export`, from where their last import stopped,
    /// in one read of the export when they read the same files (see `ReadKey`) and stopped at
    /// the same place; each stream selects its records in the pages read and keeps its own
    /// checkpoint. Returns each stream's outcome, in the order given.
    pub(super) async fn import_streams(
        &self,
        names: &[String],
        export: &Arc<Export>,
    ) -> Vec<(String, Result<(), SyncError>)> {
        let mut readers = Vec::with_capacity(names.len());
        let mut outcomes = Vec::new();
        let mut starts = Vec::with_capacity(names.len());
        for name in names {
            match self.begin_import(name, export).await {
                Ok((reader, from)) => {
                    readers.push(reader);
                    starts.push(from);
                }
                Err(error) => outcomes.push((name.clone(), Err(error))),
            }
        }
        if starts.windows(2).all(|pair| pair[0] == pair[1]) {
            let from = starts.into_iter().next().flatten();
            outcomes.extend(self.read_export(readers, from, export).await);
        } else {
            // Stopped at different places: each resumes where it stopped, on its own read.
            for (reader, from) in readers.into_iter().zip(starts) {
                outcomes.extend(self.read_export(vec![reader], from, export).await);
            }
        }
        let order = |name: &String| names.iter().position(|given| given == name);
        outcomes.sort_by_key(|(name, _)| order(name));
        outcomes
    }

    /// A stream's reader and where in `export` it resumes.
    async fn begin_import<'w>(
        &'w self,
        name: &'w str,
        export: &Arc<Export>,
    ) -> Result<(Reader<'w>, Option<EntryCursor>), SyncError> {
        let Some(stream) = self.fetcher.connector.streams.get(name) else {
            return Err(self.fetcher.error(name, None, SyncErrorKind::UnknownStream));
        };
        let Reads::Archive(plan) = &stream.reads else {
            return Err(self.fetcher.error(
                name,
                None,
                SyncErrorKind::WrongSource(
                    "the stream reads the provider's API, not a data export",
                ),
            ));
        };
        let walk = Walk {
            name,
            shared_name: Arc::from(name),
            stream,
            parent: minijinja::Value::from(()),
            entry: None,
            copied: Vec::new(),
            written: plan.dedupe.then(std::sync::Mutex::default),
            partition: String::new(),
            depth: 0,
        };
        let (mut pass, cursor, _) = self.begin_pass(name, stream, &walk.parent, "").await?;
        // An unfinished import goes on only in the export it began with; another export (a newer
        // download) is read from its start, in a new pass.
        let from = match cursor {
            PageCursor::Entry(at) if at.export == export.fingerprint() => Some(at),
            PageCursor::First => None,
            other => {
                tracing::info!(connector = %self.fetcher.connector.spec.id, stream = name, at = ?other, "the unfinished import was of another export; reading this one from its start");
                pass = self
                    .new_pass(name, stream, &walk.parent, pass.before.clone())
                    .await?;
                None
            }
        };
        Ok((Reader { walk, plan, pass }, from))
    }

    /// Reads `export` from `from` once, for every stream of `readers` (which read the same
    /// files), each importing its records from each page.
    async fn read_export(
        &self,
        mut readers: Vec<Reader<'_>>,
        from: Option<EntryCursor>,
        export: &Arc<Export>,
    ) -> Vec<(String, Result<(), SyncError>)> {
        let mut outcomes = Vec::new();
        let Some(first) = readers.first() else {
            return outcomes;
        };
        let plan = Arc::clone(first.plan);
        let copies = self.blobs.as_ref().map(|blobs| {
            Arc::new(BlobCopies {
                blobs: blobs.clone(),
                runtime: tokio::runtime::Handle::current(),
            }) as Arc<dyn EntryCopies>
        });
        let read = |from: Option<EntryCursor>| {
            read_pages(Arc::clone(export), Arc::clone(&plan), from, copies.clone())
        };
        let mut pages = read(from.clone());
        let mut at = from.map(|at| at.path);
        loop {
            let page = match pages.recv().await {
                Some(Ok(page)) => page,
                // The stream's globs changed since the import stopped: read the export again.
                Some(Err(ArchiveReadError::Moved(path))) => {
                    tracing::info!(connector = %self.fetcher.connector.spec.id, path, "the unfinished import's entry is not where it was; reading the export from its start");
                    for reader in &mut readers {
                        let walk = &reader.walk;
                        match self
                            .new_pass(
                                walk.name,
                                walk.stream,
                                &walk.parent,
                                reader.pass.before.clone(),
                            )
                            .await
                        {
                            Ok(pass) => reader.pass = pass,
                            Err(error) => return self.fail_all(readers, outcomes, error),
                        }
                        // A new pass sees every record again.
                        if let Some(written) = &walk.written {
                            written
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .clear();
                        }
                    }
                    pages = read(None);
                    at = None;
                    continue;
                }
                Some(Err(error)) => {
                    let name = readers[0].walk.name;
                    let error = self.archive_error(name, at.as_deref(), error);
                    return self.fail_all(readers, outcomes, error);
                }
                None => {
                    // The reading thread ended without a last page: it panicked.
                    let error = self.fetcher.error(
                        readers[0].walk.name,
                        at,
                        SyncErrorKind::Template(
                            "reading the export stopped unexpectedly".to_owned(),
                        ),
                    );
                    return self.fail_all(readers, outcomes, error);
                }
            };
            let last = page.next.is_none();
            // An export without the streams' files (a Takeout of other products) says nothing
            // about their records: none is marked deleted, and the passes stay open.
            if last && page.entries == 0 {
                tracing::info!(connector = %self.fetcher.connector.spec.id, "the export has none of the stream's files; nothing changed");
                outcomes.extend(
                    readers
                        .into_iter()
                        .map(|reader| (reader.walk.name.to_owned(), Ok(()))),
                );
                return outcomes;
            }
            at = page.next.as_ref().map(|next| next.path.clone());
            let mut index = 0;
            while index < readers.len() {
                let reader = &mut readers[index];
                if reader.plan.page_per_entry {
                    reader.walk.entry = Some(crate::source::archive::entry_value(&page.entry));
                }
                reader.walk.copied.clone_from(&page.copied);
                match self
                    .import_page(&reader.walk, &mut reader.pass, reader.plan, &page)
                    .await
                {
                    Ok(()) => index += 1,
                    // This stream stops; the others read on.
                    Err(error) => {
                        let reader = readers.remove(index);
                        outcomes.push((reader.walk.name.to_owned(), Err(error)));
                    }
                }
            }
            if last || readers.is_empty() {
                outcomes.extend(
                    readers
                        .into_iter()
                        .map(|reader| (reader.walk.name.to_owned(), Ok(()))),
                );
                return outcomes;
            }
        }
    }

    /// `error` for the first of `readers`, and for the others the same, told as shared.
    fn fail_all(
        &self,
        readers: Vec<Reader<'_>>,
        mut outcomes: Vec<(String, Result<(), SyncError>)>,
        error: SyncError,
    ) -> Vec<(String, Result<(), SyncError>)> {
        let told = error.to_string();
        let told_with = readers
            .first()
            .map(|reader| reader.walk.name.to_owned())
            .unwrap_or_default();
        let mut error = Some(error);
        for reader in readers {
            let name = reader.walk.name.to_owned();
            let result = match error.take() {
                Some(error) => Err(error),
                None => Err(self.fetcher.error(
                    &name,
                    None,
                    SyncErrorKind::SharedRead {
                        stream: told_with.clone(),
                        reason: told.clone(),
                    },
                )),
            };
            outcomes.push((name, result));
        }
        outcomes
    }

    /// Maps and queues one page of an export, with its checkpoint.
    async fn import_page(
        &self,
        walk: &Walk<'_>,
        pass: &mut PassState,
        plan: &ArchivePlan,
        page: &ArchivePage,
    ) -> Result<(), SyncError> {
        // Records are selected in the page, the array of its documents, as in an API's page:
        // `$[*]` takes every document, a filter (`$[?@.uri != null]`) some.
        let body = page.body.root();
        let mut records: Vec<&Node<'_>> = Vec::new();
        plan.records
            .for_each(&Target::new(body), |record| records.push(record));
        self.fetcher.tally.event(&Event::Page {
            stream: walk.name,
            records: records.len(),
        });
        self.fetcher.tally.event(&Event::Read {
            stream: walk.name,
            read: page.read,
            total: page.total,
        });
        let next = page.next.clone().map(PageCursor::Entry);
        let (checkpoint, sweeps) =
            pass.after_page(walk.stream, &walk.shared_name, "", next.as_ref(), body);
        self.store_page(walk, pass, &records, body, checkpoint, sweeps)
            .await
    }

    fn archive_error(&self, name: &str, at: Option<&str>, error: ArchiveReadError) -> SyncError {
        let mut error = self.fetcher.error(name, None, error.into());
        if let (Some(at), SyncErrorKind::Archive(ArchiveReadError::Archive(_))) = (at, &error.kind)
        {
            error.request = Some(format!("reading after `{at}`"));
        }
        error
    }
}

/// The blob store as the reading thread copies an export's files into it: each file staged as
/// it is read and stored under its hash once read whole. The reading thread is a blocking one,
/// so the store's writes are run to completion on the runtime from there.
struct BlobCopies {
    blobs: BlobStore,
    runtime: tokio::runtime::Handle,
}

impl EntryCopies for BlobCopies {
    fn begin(&self, limit: u64) -> Result<Box<dyn EntryCopy>, CopyError> {
        let writer = self
            .runtime
            .block_on(self.blobs.writer(limit))
            .map_err(|error| CopyError::Failed(error.to_string()))?;
        Ok(Box::new(BlobCopy {
            writer,
            blobs: self.blobs.clone(),
            runtime: self.runtime.clone(),
        }))
    }
}

/// One file being copied into the blob store.
struct BlobCopy {
    writer: BlobWriter,
    blobs: BlobStore,
    runtime: tokio::runtime::Handle,
}

impl EntryCopy for BlobCopy {
    fn write(&mut self, bytes: &[u8]) -> Result<(), CopyError> {
        self.runtime
            .block_on(self.writer.write(bytes))
            .map_err(copy_error)
    }

    fn keep(self: Box<Self>) -> Result<String, CopyError> {
        let Self {
            writer,
            blobs,
            runtime,
        } = *self;
        let blob = runtime
            .block_on(writer.finish(&blobs, Expected::default()))
            .map_err(copy_error)?;
        Ok(blob.hash.to_hex())
    }
}

fn copy_error(error: crate::blobs::BlobError) -> CopyError {
    match error {
        crate::blobs::BlobError::TooLarge { .. } => CopyError::TooLarge,
        other => CopyError::Failed(other.to_string()),
    }
}
