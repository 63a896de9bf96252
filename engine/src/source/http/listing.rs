//! A listing: the request for a first page, how the later pages are requested, and which nodes
//! of each page are records. A stream lists with its own; a change log reads with another.

use indexmap::IndexMap;

use crate::extract::CompiledPath;
use crate::source::http::paginate::Paginator;
use crate::source::http::request::RequestPlan;
use crate::spec::{JsonPath, Paginate, Request, Template};
use crate::template::{BuildError, Templates};

/// A compiled listing.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The first page's request (and, for next-URL paging, the headers of every page).
    pub request: RequestPlan,
    /// How the next page is requested.
    pub paginator: Paginator,
    /// Selects the records on a page.
    pub records: CompiledPath,
}

impl Listing {
    /// Compiles a listing; `connector_headers` go with every request.
    pub fn compile(
        request: &Request,
        paginate: &Paginate,
        records: &JsonPath,
        connector_headers: &IndexMap<String, Template>,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        Ok(Self {
            request: RequestPlan::compile(request, connector_headers, templates)?,
            paginator: Paginator::compile(paginate, connector_headers, templates)?,
            records: CompiledPath::compile(records.as_str())?,
        })
    }
}
