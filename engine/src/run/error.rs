//! How a run fails: which connector, stream and request, what happened, and what the user can
//! do about it.

use crate::http::HttpError;
use crate::source::http::request::RequestError;
use crate::store::{RunStatus, StoreError};

/// What went wrong, where.
#[derive(Debug, thiserror::Error)]
pub enum SyncErrorKind {
    /// Sending a request.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Rendering a request.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The provider's paging misbehaved: it named the same next page twice, or its answer lacks
    /// the change-log position the spec says it carries.
    #[error("{0}")]
    Pagination(String),
    /// One of the connector's templates or conditions failed on what the provider sent
    /// (`stop_when`, `recurse.when`, a parent field): the spec's fault, not the provider's.
    #[error("{0}")]
    Template(String),
    /// Writing records.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stream does not exist.
    #[error("no such stream")]
    UnknownStream,
    /// The provider answered 200 with an error inside (the spec's `response_error`).
    #[error("the provider answered with an error: {0}")]
    Provider(String),
    /// The run reached one of the connector's `limits` (requests, time): it stops, keeping what
    /// it imported.
    #[error("{0}")]
    Limit(String),
    /// Reading a data export: a damaged archive, an entry refused, a document that does not
    /// decode.
    #[error(transparent)]
    Archive(#[from] crate::source::archive::ArchiveReadError),
    /// The stream reads what the run does not have: a data export in a sync, the provider's API
    /// in an import.
    #[error("{0}")]
    WrongSource(&'static str),
    /// The stream's session was not completed (the person did not finish in time, or the
    /// provider's answer lacked what the spec reads).
    #[error("{0}")]
    Session(String),
    /// Reading a data export failed for the stream this one shares its read with (the error is
    /// told in full there).
    #[error("reading the export, shared with the stream `{stream}`, failed: {reason}")]
    SharedRead {
        /// The stream the error is told with.
        stream: String,
        /// The error.
        reason: String,
    },
}

/// A failed sync: which connector, stream and request, what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{connector} / {stream}{}: {kind}", request.as_ref().map(|request| format!(" / {request}")).unwrap_or_default())]
pub struct SyncError {
    /// The connector.
    pub connector: String,
    /// The stream.
    pub stream: String,
    /// The request, as `METHOD URL`, when one was involved.
    pub request: Option<String>,
    /// What happened.
    pub kind: SyncErrorKind,
}

impl SyncError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match &self.kind {
            SyncErrorKind::Http(error) => error.hint().to_owned(),
            SyncErrorKind::Request(_) => "check the integration's config values; if they are right, report it to the connector's authors".to_owned(),
            SyncErrorKind::Pagination(_) => "the provider's paging misbehaved; try again later, or report it to the connector's authors".to_owned(),
            SyncErrorKind::Template(_) => "a template of the connector failed on what the provider sent; report it to the connector's authors with this message".to_owned(),
            SyncErrorKind::Store(_) => "check that the database is reachable and has free space; the sync resumes where it stopped".to_owned(),
            SyncErrorKind::UnknownStream => "run `connector validate` to list the connector's streams".to_owned(),
            SyncErrorKind::Provider(_) => "the provider's message says what it refused: check the account's access (scopes, membership) and the config values".to_owned(),
            SyncErrorKind::Limit(_) => "what was imported is kept and the next sync resumes where this one stopped; if the account really holds this much, raise the connector's `limits`".to_owned(),
            SyncErrorKind::Archive(crate::source::archive::ArchiveReadError::Archive(_)) => "download the export again from the provider and import the new file; nothing of this one was changed".to_owned(),
            SyncErrorKind::Archive(_) => "what was imported is kept; if the file came from the provider as it is, report it to the connector's authors with this message".to_owned(),
            SyncErrorKind::SharedRead { stream, .. } => format!("see the error of the stream `{stream}`"),
            SyncErrorKind::Session(_) => "sync the stream again for a new session, and finish choosing on the page it names before it times out".to_owned(),
            SyncErrorKind::WrongSource(_) => "import a stream that reads an export with `connector import CONNECTOR FILE`; sync the others with `connector sync`".to_owned(),
        }
    }
}

impl SyncError {
    /// Whether the error ends the whole run rather than one stream: refused credentials (every
    /// other request would be refused too; the user must connect again), a failing store
    /// (nothing more could be kept), or a run-wide limit reached.
    pub fn ends_run(&self) -> bool {
        self.credentials_refused()
            || matches!(self.kind, SyncErrorKind::Store(_) | SyncErrorKind::Limit(_))
    }

    /// Whether the provider refused the credentials and they could not be renewed: the
    /// integration needs to be connected again (`needs_reauth`); its records are kept.
    pub fn credentials_refused(&self) -> bool {
        matches!(
            self.kind,
            SyncErrorKind::Http(HttpError::Unauthorized { .. } | HttpError::Refresh(_))
        )
    }
}

/// What a run that imported left out: the streams (and substream partitions) that failed while
/// the others went on. Empty when every stream succeeded.
#[derive(Debug, Default)]
pub struct RunReport {
    /// The failures, in the order they happened.
    pub failed: Vec<SyncError>,
}

/// How many failures a run's stored message names; the rest are counted.
const FAILURES_NAMED: usize = 5;

impl RunReport {
    /// `Succeeded`, or `Partial` when some streams failed.
    pub fn status(&self) -> RunStatus {
        if self.failed.is_empty() {
            RunStatus::Succeeded
        } else {
            RunStatus::Partial
        }
    }

    /// The run taken as all or nothing (a connector's fixture test): `Err` with the first
    /// failure when any stream failed.
    #[allow(
        clippy::result_large_err,
        reason = "made once a run; the same error the run itself returns"
    )]
    pub fn require_all(self) -> Result<(), SyncError> {
        match self.failed.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// For a partial run, which streams failed and why, as one message (the first few named,
    /// the rest counted): what the run's row keeps.
    pub fn summary(&self) -> Option<String> {
        let (named, rest) = self.failed.split_at(self.failed.len().min(FAILURES_NAMED));
        let first = named.first()?;
        let mut summary = format!(
            "{} stream{} failed: {first}",
            self.failed.len(),
            if self.failed.len() == 1 { "" } else { "s" }
        );
        for error in &named[1..] {
            summary.push_str("; ");
            summary.push_str(&error.to_string());
        }
        if !rest.is_empty() {
            summary.push_str(&format!("; and {} more", rest.len()));
        }
        Some(summary)
    }
}
