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
