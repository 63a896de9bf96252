//! Importing a data export: an archive stream's pages, read from the export on their own
//! thread, mapped and written like an API's, with a checkpoint inside the export with each.

use std::sync::Arc;

use super::pass::PassState;
use super::plan::Reads;
use super::{SyncError, SyncErrorKind, SyncRun, Walk};
use crate::decode::document::Node;
use crate::events::{Event, Observer};
use crate::extract::Target;
use crate::source::archive::{ArchivePage, ArchiveReadError, Export, read_pages};
use crate::state::PageCursor;
use crate::store::Sink;

impl<S: Sink> SyncRun<'_, S> {
    /// Imports one archive stream from `export`, from where its last import stopped.
    pub(super) async fn import_stream(
        &self,
        name: &str,
        export: &Arc<Export>,
    ) -> Result<(), SyncError> {
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
            partition: String::new(),
            depth: 0,
        };
        let parent = &walk.parent;
        let (mut pass, cursor, _) = self.begin_pass(name, stream, parent, "").await?;
        // An unfinished import goes on only in the export it began with; another export (a newer
        // download) is read from its start, in a new pass.
        let from = match cursor {
            PageCursor::Entry(at) if at.export == export.fingerprint() => Some(at),
            PageCursor::First => None,
            other => {
                tracing::info!(connector = %self.fetcher.connector.spec.id, stream = name, at = ?other, "the unfinished import was of another export; reading this one from its start");
                pass = self
                    .new_pass(name, stream, parent, pass.before.clone())
                    .await?;
                None
            }
        };
        let mut pages = read_pages(Arc::clone(export), Arc::clone(plan), from.clone());
        let mut at = from.map(|at| at.path);
        loop {
            let page = match pages.recv().await {
                Some(Ok(page)) => page,
                // The stream's globs changed since the import stopped: read the export again.
                Some(Err(ArchiveReadError::Moved(path))) => {
                    tracing::info!(connector = %self.fetcher.connector.spec.id, stream = name, path, "the unfinished import's entry is not where it was; reading the export from its start");
                    pass = self
                        .new_pass(name, stream, parent, pass.before.clone())
                        .await?;
                    pages = read_pages(Arc::clone(export), Arc::clone(plan), None);
                    at = None;
                    continue;
                }
                Some(Err(error)) => return Err(self.archive_error(name, at.as_deref(), error)),
                None => {
                    // The reading thread ended without a last page: it panicked.
                    return Err(self.fetcher.error(
                        name,
                        at,
                        SyncErrorKind::Template(
                            "reading the export stopped unexpectedly".to_owned(),
                        ),
                    ));
                }
            };
            let last = page.next.is_none();
            at = page.next.as_ref().map(|next| next.path.clone());
            self.import_page(&walk, &mut pass, plan.as_ref(), page)
                .await?;
            if last {
                return Ok(());
            }
        }
    }

    /// Maps and queues one page of an export, with its checkpoint.
    async fn import_page(
        &self,
        walk: &Walk<'_>,
        pass: &mut PassState,
        plan: &crate::source::archive::ArchivePlan,
        page: ArchivePage,
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
        let next = page.next.map(PageCursor::Entry);
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
