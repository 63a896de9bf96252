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
/// Refuses a `--stream` the connector does not have, saying the nearest name and listing the
/// streams a person may give (`archive`: those that read a data export, else those that read
/// the API). The run would refuse it too, but as a failed run (exit 1) with nothing to choose
/// from.
pub fn check_streams(spec: &ConnectorSpec, given: &[String], archive: bool) -> Result<(), Failure> {
    let choices: Vec<&str> = spec
        .streams
        .iter()
        .filter(|(_, stream)| stream.parent.is_none() && stream.archive.is_some() == archive)
        .map(|(name, _)| name.as_str())
        .collect();
    for name in given {
        if choices.contains(&name.as_str()) {
            continue;
        }
        let near = spec::did_you_mean(name, choices.iter().copied())
            .map(|near| format!(" (did you mean `{near}`?)"))
            .unwrap_or_default();
        let reads = if archive {
            "read a data export"
        } else {
            "read its API"
        };
        return Err(Failure::usage(format!(
            "{} has no stream `{name}`{near}; the streams that {reads}: {}",
            spec.id,
            choices.join(", ")
        )));
    }
    Ok(())
}

pub fn open_connector(
    name: &str,
    connectors_root: &std::path::Path,
) -> Result<(ConnectorFiles, ConnectorSpec), Failure> {
    let files = ConnectorFiles::locate(name, connectors_root).map_err(Failure::usage)?;
    let spec = spec::load(&files.spec)
        .map_err(|error| Failure::verbatim(Outcome::Problems, error.to_string()))?;
    Ok((files, spec))
}
