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
            links(value)
                .into_iter()
                .find(|(_, rels)| rels.iter().any(|rel| rel.eq_ignore_ascii_case("next")))
                .map(|(target, _)| target.to_owned())
        })
}

/// The link-values of a `Link` header (RFC 8288, section 3): each target with its `rel` values.
///
/// Written here rather than taken from a crate: `parse_link_header` splits the header at every
/// comma, so a next URL with a comma in its query (`?ids=1,2&page=3`, legal in a URI) was cut
/// and paging stopped after the first page; the other parsers found are unmaintained. A target
/// runs from `<` to the first `>` (which a URI cannot hold); parameters follow, their values
/// tokens or quoted strings (which may hold `,` and `;`); a comma outside them ends a link.
/// A link-value that does not parse ends the reading: the links before it are kept.
fn links(header: &str) -> Vec<(&str, Vec<String>)> {
    let bytes = header.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    let skip_space = |at: &mut usize| {
        while *at < bytes.len() && matches!(bytes[*at], b' ' | b'\t') {
            *at += 1;
        }
    };
    loop {
        // Empty list elements are allowed (`#rule`).
        while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b',') {
            at += 1;
        }
        if at >= bytes.len() || bytes[at] != b'<' {
            return found;
        }
        let Some(length) = header[at + 1..].find('>') else {
            return found;
        };
        let target = &header[at + 1..at + 1 + length];
        at += length + 2;
        let mut rels = Vec::new();
        loop {
            skip_space(&mut at);
            if at >= bytes.len() || bytes[at] == b',' {
                break;
            }
            if bytes[at] != b';' {
                return found;
            }
            at += 1;
            skip_space(&mut at);
            let name_start = at;
            while at < bytes.len() && !matches!(bytes[at], b'=' | b';' | b',' | b' ' | b'\t') {
                at += 1;
            }
            let name = &header[name_start..at];
            skip_space(&mut at);
            let mut value = String::new();
            if at < bytes.len() && bytes[at] == b'=' {
                at += 1;
                skip_space(&mut at);
                if at < bytes.len() && bytes[at] == b'"' {
                    // A quoted string: `\` escapes the next character.
                    at += 1;
                    let mut closed = false;
                    while at < bytes.len() {
                        match bytes[at] {
                            b'\\' if at + 1 < bytes.len() => {
                                at += 1;
                                let next = header[at..].chars().next().unwrap_or_default();
                                value.push(next);
                                at += next.len_utf8();
                            }
                            b'"' => {
                                at += 1;
                                closed = true;
                                break;
                            }
                            _ => {
                                let next = header[at..].chars().next().unwrap_or_default();
                                value.push(next);
                                at += next.len_utf8();
                            }
                        }
                    }
                    if !closed {
                        return found;
                    }
                } else {
                    let start = at;
                    while at < bytes.len() && !matches!(bytes[at], b';' | b',' | b' ' | b'\t') {
                        at += 1;
                    }
                    value.push_str(&header[start..at]);
                }
            }
            // `rel` holds space-separated relation types; only its first occurrence counts.
            if name.eq_ignore_ascii_case("rel") && rels.is_empty() {
                rels = value.split_ascii_whitespace().map(str::to_owned).collect();
            }
        }
        found.push((target, rels));
    }
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

    /// The awkward cases of real headers: a comma in the next URL's query (the defect: paging
    /// stopped after page one), commas and semicolons in quoted parameters, several relation
    /// types in one `rel`, no quotes, other spacing and case, empty elements, and headers that
    /// are broken part of the way.
    #[test]
    fn link_headers_are_read_as_rfc_8288_writes_them() {
        let next = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(reqwest::header::LINK, value.parse().unwrap());
            next_link(&headers)
        };
        assert_eq!(
            next("<https://api.example.com/items?ids=1,2,3&page=2>; rel=\"next\", <https://api.example.com/items?ids=1,2,3&page=9>; rel=\"last\"").as_deref(),
            Some("https://api.example.com/items?ids=1,2,3&page=2")
        );
        assert_eq!(
            next("<https://a.example/p1>; title=\"a, b; c\"; rel=\"prev\", <https://a.example/p3>;title=\"x\\\"y\";REL=\"Next last\"").as_deref(),
            Some("https://a.example/p3")
        );
        assert_eq!(
            next(" , <https://a.example/p2> ;rel=next").as_deref(),
            Some("https://a.example/p2")
        );
        assert_eq!(next("<https://a.example/p2>; rel=\"nextpage\""), None);
        assert_eq!(
            links("<https://a.example/1>; rel=next, garbage <x>"),
            [("https://a.example/1", vec!["next".to_owned()])]
        );
        assert_eq!(links("<https://a.example/1; rel=next"), vec![]);
        assert_eq!(links("<https://a.example/1>; title=\"open"), vec![]);
        assert_eq!(
            links("<https://a.example/é>; rel=\"nexté\""),
            [("https://a.example/é", vec!["nexté".to_owned()])]
        );
    }
}
