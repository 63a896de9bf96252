//! One module per `connector` subcommand.

pub mod auth;
pub mod credentials;
pub mod disconnect;
pub mod gc;
pub mod history;
pub mod import;
pub mod progress;
pub mod schema;
pub mod serve;
pub mod sync;
pub mod test;
pub mod validate;

use engine::sandbox::ConnectorFiles;
use engine::spec::{self, ConnectorSpec};

use crate::{Failure, Outcome};

/// Finds a connector by id or path and loads its spec: an unknown connector is a usage error,
/// an invalid spec a problem. The spec's own report (`file:line:column: ...` diagnostics) is
/// the whole message, printed without the `error: ` prefix.
pub fn open_connector(
    name: &str,
    connectors_root: &std::path::Path,
) -> Result<(ConnectorFiles, ConnectorSpec), Failure> {
    let files = ConnectorFiles::locate(name, connectors_root).map_err(Failure::usage)?;
    let spec = spec::load(&files.spec)
        .map_err(|error| Failure::verbatim(Outcome::Problems, error.to_string()))?;
    Ok((files, spec))
}
