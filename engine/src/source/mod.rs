//! Where records come from. A source turns a stream's plan and its stored position into pages
//! of raw records, and says where the next page starts so that a run can resume there.
//!
//! - [`http`]: the provider's API, page by page: requests rendered from the spec, paginators,
//!   incremental cursors, sync tokens and change logs.

pub mod http;
