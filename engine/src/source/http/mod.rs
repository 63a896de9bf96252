//! The HTTP source: a stream's requests, how its pages follow each other, and how a later pass
//! asks only for what changed.
//!
//! - [`request`]: a request template rendered for one page;
//! - [`paginate`]: the paginators (cursor, next URL, Link header, offset, page number);
//! - [`listing`]: a stream's request, paginator and records path, compiled together;
//! - [`incremental`]: cursors, sync tokens, page tokens and change logs.

pub mod incremental;
pub mod listing;
pub mod paginate;
pub mod request;

use reqwest::header::HeaderMap;

use crate::decode::Decoder;
use crate::decode::document::Document;
use crate::events::Observer;
use crate::http::{Authorizer, HttpClient, HttpError, HttpRequest};
use crate::source::{Ask, Source};
use crate::state::PageCursor;
use crate::template::Templates;
use listing::Listing;
use paginate::{NextPageError, PageRequest};
use request::RequestError;

/// The HTTP source of one run: the client its requests go through, the credentials that sign
/// them, and the connector's base URL and templates.
pub struct HttpSource<'a> {
    /// Sends the requests (allowed hosts, rate limits, retries).
    pub client: &'a HttpClient,
    /// Signs them.
    pub auth: &'a dyn Authorizer,
    /// Counts what happens.
    pub observer: &'a dyn Observer,
    /// The connector's `base_url`, before relative paths.
    pub base_url: &'a str,
    /// The connector's compiled templates.
    pub templates: &'a Templates,
}

/// What a listing reads with: its requests and paging, and how its answers decode.
#[derive(Debug, Clone, Copy)]
pub struct HttpPlan<'p> {
    /// The listing.
    pub listing: &'p Listing,
    /// How its answers decode.
    pub decoder: &'p Decoder,
    /// The largest answer accepted; `None`: the client's limit.
    pub max_body: Option<u64>,
}

/// Why a page of the HTTP source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The request could not be rendered.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The request failed (`request` is what was sent, described).
    #[error("{error}")]
    Http {
        /// The request, as `METHOD URL`.
        request: String,
        /// What happened.
        error: HttpError,
    },
}

impl HttpSource<'_> {
    /// The request for the page at `at` of `listing`: the listing's request with the
    /// paginator's and the pass's values, or the next-page URL the provider gave.
    pub fn request(
        &self,
        listing: &Listing,
        at: &PageCursor,
        ask: &Ask<'_>,
    ) -> Result<HttpRequest, RequestError> {
        let context = minijinja::context! {
            page => listing.paginator.page_value(at),
            ..ask.context.clone()
        };
        match listing.paginator.request(at) {
            PageRequest::Render {
                plan,
                mut injections,
            } => {
                injections.extend(ask.injections.iter().cloned());
                plan.unwrap_or(&listing.request).render(
                    self.base_url,
                    &context,
                    self.templates,
                    &injections,
                )
            }
            PageRequest::Url(url) => {
                let mut request =
                    listing
                        .request
                        .render(self.base_url, &context, self.templates, &[])?;
                request.url = url::Url::parse(url).map_err(|error| RequestError::Url {
                    url: url.to_owned(),
                    reason: error.to_string(),
                })?;
                request.method = reqwest::Method::GET;
                request.body = None;
                Ok(request)
            }
        }
    }
}

impl<'p> Source for HttpSource<'p> {
    type Plan = HttpPlan<'p>;
    type Page = (HttpRequest, Page);
    type Error = ReadError;

    async fn read<'a>(
        &'a self,
        plan: &'a HttpPlan<'p>,
        at: &'a PageCursor,
        ask: &'a Ask<'a>,
    ) -> Result<Self::Page, ReadError> {
        let mut request = self.request(plan.listing, at, ask)?;
        request.max_body = plan.max_body;
        let read = fetch_page(
            self.client,
            &request,
            plan.decoder,
            self.auth,
            self.observer,
        );
        match read.await {
            Ok(page) => Ok((request, page)),
            Err(error) => Err(ReadError::Http {
                request: request.describe(),
                error,
            }),
        }
    }

    fn body((_, page): &Self::Page) -> &Document {
        &page.body
    }

    fn next(
        &self,
        plan: &HttpPlan<'p>,
        at: &PageCursor,
        (_, page): &Self::Page,
        records: usize,
    ) -> Result<Option<PageCursor>, NextPageError> {
        plan.listing
            .paginator
            .next(at, page.body.root(), &page.headers, records, self.templates)
    }

    fn origin((request, _): &Self::Page) -> String {
        request.describe()
    }
}

/// A page of the HTTP source: the answer, decoded.
#[derive(Debug)]
pub struct Page {
    /// The status (2xx).
    pub status: u16,
    /// The response headers (a `Link` header names the next page).
    pub headers: HeaderMap,
    /// The decoded body.
    pub body: Document,
}

/// Sends `request` and decodes its answer as `decoder` says. A body that does not decode (a
/// page cut off mid-way) is retried like a failed exchange.
pub async fn fetch_page(
    client: &HttpClient,
    request: &HttpRequest,
    decoder: &Decoder,
    auth: &dyn Authorizer,
    observer: &dyn Observer,
) -> Result<Page, HttpError> {
    client
        .fetch(request, auth, observer, |response| {
            let body = decoder
                .page(&response.body)
                .map_err(|error| error.to_string())?;
            Ok(Page {
                status: response.status,
                headers: response.headers,
                body,
            })
        })
        .await
}
