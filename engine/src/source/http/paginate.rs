//! Walking a stream's pages: what each request adds, and when to stop.
//!
//! Cursor and next-URL pagination continue while the provider names a next page, even past an
//! empty page (Google APIs may return an empty page with a `nextPageToken`). Offset and page
//! number pagination stop on a short or empty page. Every strategy stops when `stop_when` is
//! true. A provider whose paging loops (a token it handed out before, or a new token on every
//! page without end) is caught by the pass that follows it ([`crate::run`]).

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::decode::document::{Node, token_text};
use crate::extract::CompiledPath;
use crate::source::http::request::{Injection, RequestPlan};
use crate::spec::{NextUrlSource, Paginate, ParamLocation};
use crate::state::PageCursor;
use crate::template::{BuildError, TemplateId, Templates};

/// Why the page after the one just fetched cannot be told.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NextPageError {
    /// The spec's `stop_when` failed on the answer: the connector's fault, not the provider's.
    #[error("stop_when: {0}")]
    StopWhen(String),
}

#[derive(Debug, Clone)]
enum Strategy {
    None,
    Cursor {
        token: CompiledPath,
        param: String,
        location: ParamLocation,
        next_request: Option<Box<RequestPlan>>,
    },
    NextUrlBody(CompiledPath),
    NextUrlLinkHeader,
    OffsetLimit {
        offset_param: String,
        limit_param: String,
        limit: u32,
        location: ParamLocation,
    },
    PageNumber {
        page_param: String,
        start: u32,
        size_param: Option<String>,
        size: Option<u32>,
    },
}

/// A compiled paginator.
#[derive(Debug, Clone)]
pub struct Paginator {
    strategy: Strategy,
    stop_when: Option<TemplateId>,
}

/// How the request for a page is made.
#[derive(Debug)]
pub enum PageRequest<'a> {
    /// The stream's request (or the paginator's `next_request`) with these values added.
    Render {
        /// The request to render.
        plan: Option<&'a RequestPlan>,
        /// What to add.
        injections: Vec<Injection>,
    },
    /// This exact URL, with the stream's headers.
    Url(&'a str),
}

impl Paginator {
    /// Compiles a stream's paginator.
    pub fn compile(
        paginate: &Paginate,
        connector_headers: &indexmap::IndexMap<String, crate::spec::Template>,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        let mut stop = None;
        let strategy = match paginate {
            Paginate::None => Strategy::None,
            Paginate::Cursor {
                token,
                param,
                location,
                next_request,
                stop_when,
            } => {
                stop = stop_when.as_ref();
                Strategy::Cursor {
                    token: CompiledPath::compile(token.as_str())?,
                    param: param.clone(),
                    location: *location,
                    next_request: next_request
                        .as_ref()
                        .map(|request| {
                            RequestPlan::compile(request, connector_headers, templates)
                                .map(Box::new)
                        })
                        .transpose()?,
                }
            }
            Paginate::NextUrl { from, stop_when } => {
                stop = stop_when.as_ref();
                match from {
                    NextUrlSource::Body(path) => {
                        Strategy::NextUrlBody(CompiledPath::compile(path.as_str())?)
                    }
                    NextUrlSource::LinkHeader(_) => Strategy::NextUrlLinkHeader,
                }
            }
            Paginate::OffsetLimit {
                offset_param,
                limit_param,
                limit,
                location,
                stop_when,
            } => {
                stop = stop_when.as_ref();
                Strategy::OffsetLimit {
                    offset_param: offset_param.clone(),
                    limit_param: limit_param.clone(),
                    limit: *limit,
                    location: *location,
                }
            }
            Paginate::PageNumber {
                page_param,
                start,
                size_param,
                size,
                stop_when,
            } => {
                stop = stop_when.as_ref();
                Strategy::PageNumber {
                    page_param: page_param.clone(),
                    start: *start,
                    size_param: size_param.clone(),
                    size: *size,
                }
            }
        };
        let stop_when = stop
            .map(|condition| templates.add_condition(condition.as_str()))
            .transpose()?;
        Ok(Self {
            strategy,
            stop_when,
        })
    }

    /// Where a kept continuation token (`incremental: page_token`) resumes a listing: a page
    /// token for cursor paging, a URL (Microsoft Graph's `@odata.deltaLink`) for next-URL paging.
    pub fn continue_at(&self, token: String) -> PageCursor {
        match self.strategy {
            Strategy::NextUrlBody(_) | Strategy::NextUrlLinkHeader => PageCursor::Url(token),
            _ => PageCursor::Token(token),
        }
    }

    /// How to request the page at `cursor`.
    pub fn request<'a>(&'a self, cursor: &'a PageCursor) -> PageRequest<'a> {
        let inject = |location, name: &str, value: Value| Injection {
            location,
            name: name.to_owned(),
            value,
        };
        match (&self.strategy, cursor) {
            (_, PageCursor::Url(url)) => PageRequest::Url(url),
            (
                Strategy::Cursor {
                    param,
                    location,
                    next_request,
                    ..
                },
                PageCursor::Token(token),
            ) => PageRequest::Render {
                plan: next_request.as_deref(),
                // A `next_request` carries the token itself, through `page.token`.
                injections: if next_request.is_some() {
                    vec![]
                } else {
                    vec![inject(*location, param, Value::String(token.clone()))]
                },
            },
            (
                Strategy::OffsetLimit {
                    offset_param,
                    limit_param,
                    limit,
                    location,
                },
                cursor,
            ) => {
                let offset = if let PageCursor::Offset(offset) = cursor {
                    *offset
                } else {
                    0
                };
                PageRequest::Render {
                    plan: None,
                    injections: vec![
                        inject(*location, offset_param, Value::from(offset)),
                        inject(*location, limit_param, Value::from(*limit)),
                    ],
                }
            }
            (
                Strategy::PageNumber {
                    page_param,
                    start,
                    size_param,
                    size,
                },
                cursor,
            ) => {
                let number = if let PageCursor::Number(number) = cursor {
                    *number
                } else {
                    u64::from(*start)
                };
                let mut injections = vec![inject(
                    ParamLocation::Query,
                    page_param,
                    Value::from(number),
                )];
                if let (Some(param), Some(size)) = (size_param, size) {
                    injections.push(inject(ParamLocation::Query, param, Value::from(*size)));
                }
                PageRequest::Render {
                    plan: None,
                    injections,
                }
            }
            _ => PageRequest::Render {
                plan: None,
                injections: vec![],
            },
        }
    }

    /// The `page` template variable at `cursor`.
    pub fn page_value(&self, cursor: &PageCursor) -> minijinja::Value {
        match (&self.strategy, cursor) {
            (_, PageCursor::Token(token)) => minijinja::context! { token => token },
            (_, PageCursor::Url(url)) => minijinja::context! { url => url },
            (Strategy::OffsetLimit { limit, .. }, cursor) => {
                let offset = if let PageCursor::Offset(offset) = cursor {
                    *offset
                } else {
                    0
                };
                minijinja::context! { offset => offset, limit => limit }
            }
            (Strategy::PageNumber { start, size, .. }, cursor) => {
                let number = if let PageCursor::Number(number) = cursor {
                    *number
                } else {
                    u64::from(*start)
                };
                minijinja::context! { number => number, size => size }
            }
            _ => minijinja::context! {},
        }
    }

    /// The cursor of the page after the one at `cursor`, or `None` at the end.
    pub fn next(
        &self,
        cursor: &PageCursor,
        body: &Node<'_>,
        headers: &HeaderMap,
        records: usize,
        templates: &Templates,
    ) -> Result<Option<PageCursor>, NextPageError> {
        if let Some(condition) = &self.stop_when {
            let context = minijinja::context! {
                response => minijinja::Value::from(minijinja::value::Serde(body)),
                page => self.page_value(cursor),
            };
            if templates
                .test(condition, &context)
                .map_err(|error| NextPageError::StopWhen(error.to_string()))?
            {
                return Ok(None);
            }
        }
        let next = match &self.strategy {
            Strategy::None => None,
            Strategy::Cursor { token, .. } => token
                .first_in(body)
                .and_then(token_text)
                .map(PageCursor::Token),
            Strategy::NextUrlBody(path) => match path.first_in(body) {
                Some(Node::Str(url)) if !url.is_empty() => Some(PageCursor::Url(url.to_string())),
                _ => None,
            },
            Strategy::NextUrlLinkHeader => next_link(headers).map(PageCursor::Url),
            Strategy::OffsetLimit { limit, .. } => {
                let offset = if let PageCursor::Offset(offset) = cursor {
                    *offset
                } else {
                    0
                };
                (records as u64 >= u64::from(*limit) && records > 0)
                    .then(|| PageCursor::Offset(offset + records as u64))
            }
            Strategy::PageNumber { start, size, .. } => {
                let number = if let PageCursor::Number(number) = cursor {
                    *number
                } else {
                    u64::from(*start)
                };
                let full = size.is_none_or(|size| records as u64 >= u64::from(size));
                (records > 0 && full).then(|| PageCursor::Number(number + 1))
            }
        };
        Ok(next)
    }
}

/// The `rel="next"` target of an RFC 8288 `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            value.split(',').find_map(|link| {
                let (target, params) = link.split_once(';')?;
                let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
                let is_next = params.split(';').any(|param| {
                    let param = param.trim().replace(' ', "");
                    param.eq_ignore_ascii_case("rel=next")
                        || param.eq_ignore_ascii_case("rel=\"next\"")
                });
                is_next.then(|| target.to_owned())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_yield_the_next_target() {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            "<https://api.example.com/items?page=1>; rel=\"prev\", <https://api.example.com/items?page=3>; rel=\"next\"".parse().unwrap(),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://api.example.com/items?page=3")
        );
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}
