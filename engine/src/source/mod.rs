//! Where records come from. A [`Source`] reads a stream's pages from a position and says where
//! the next page starts, so that a run can store that position with each page and resume there.
//!
//! - [`http`]: the provider's API, page by page: requests rendered from the spec, paginators,
//!   incremental cursors, sync tokens and change logs.
//! - [`archive`]: the files of a data export the person downloaded, entry by entry, document
//!   by document.
//!
//! A source decodes what it reads ([`crate::decode`]) and leaves everything after that (the
//! records on a page, mapping, storing, checkpoints) to the run, which works the same whatever
//! the source.

pub mod archive;
pub mod http;

use std::future::Future;

use crate::decode::document::Document;
use crate::source::http::paginate::NextPageError;
use crate::source::http::request::Injection;
use crate::state::PageCursor;

/// What a pass asks of a source besides the position.
pub struct Ask<'a> {
    /// What the spec's templates see: `config`, `secrets`, `state` (the pass's stored cursor and
    /// token) and `parent` (a substream's parent record).
    pub context: &'a minijinja::Value,
    /// What the pass sends besides (an incremental cursor or token).
    pub injections: &'a [Injection],
}

/// Reads a stream's pages.
pub trait Source: Send + Sync {
    /// How a stream reads from this source, compiled once (HTTP: a listing).
    type Plan: Send + Sync;
    /// A page as read (HTTP: the request sent and the decoded answer).
    type Page: Send;
    /// Why a page could not be read.
    type Error: std::error::Error + Send;

    /// Reads the page at `at` of what `plan` lists.
    fn read<'a>(
        &'a self,
        plan: &'a Self::Plan,
        at: &'a PageCursor,
        ask: &'a Ask<'a>,
    ) -> impl Future<Output = Result<Self::Page, Self::Error>> + Send + 'a;

    /// The decoded page: where its records, next-page tokens and cursors are read from.
    fn body(page: &Self::Page) -> &Document;

    /// Where the page after `page` (read at `at`, holding `records` records) starts, or `None`
    /// after the last.
    fn next(
        &self,
        plan: &Self::Plan,
        at: &PageCursor,
        page: &Self::Page,
        records: usize,
    ) -> Result<Option<PageCursor>, NextPageError>;

    /// Where a page came from, for messages (HTTP: `GET https://host/path?query`).
    fn origin(page: &Self::Page) -> String;
}
