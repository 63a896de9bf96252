//! One module per `connector` subcommand.

pub mod auth;
pub mod credentials;
pub mod disconnect;
pub mod history;
pub mod progress;
pub mod schema;
pub mod serve;
pub mod sync;
pub mod test;
pub mod validate;

use engine::sandbox::ConnectorFiles;
use engine::spec::{self, ConnectorSpec};

use crate::Outcome;

/// Finds a connector by id or path and loads its spec, printing the problem when it cannot:
/// an unknown connector is a usage error, an invalid spec a problem.
pub fn open_connector(
    name: &str,
    connectors_root: &std::path::Path,
) -> Result<(ConnectorFiles, ConnectorSpec), Outcome> {
    let files = ConnectorFiles::locate(name, connectors_root).map_err(|error| {
        eprintln!("error: {error}");
        Outcome::UsageError
    })?;
    let spec = spec::load(&files.spec).map_err(|error| {
        eprintln!("{error}");
        Outcome::Problems
    })?;
    Ok((files, spec))
}
