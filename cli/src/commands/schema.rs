//! `connector schema`: the generated JSON Schemas, the service's OpenAPI document and the
//! reference pages.

use std::path::{Path, PathBuf};

use engine::schema;

use crate::{Failure, Outcome};

/// Arguments of `connector schema`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write every generated file (schemas/, docs/spec.md, docs/models.md, the README's
    /// connector table) below `--root`.
    #[arg(long, conflicts_with = "check")]
    write: bool,
    /// Compare the generated files with those below `--root`; exit 1 on any difference.
    #[arg(long)]
    check: bool,
    /// The repository root.
    #[arg(long, default_value = ".")]
    root: PathBuf,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<Outcome, Failure> {
    if !args.write && !args.check {
        let text = serde_json::to_string_pretty(&schema::connector_schema()).unwrap_or_default();
        say!("{text}");
        return Ok(Outcome::Success);
    }
    let mut files = schema::generated_files();
    // The service's OpenAPI document, generated from its handlers.
    files.push(server::openapi::generated_file());
    files.extend(readme(&args.root).map_err(Failure::usage)?);
    let mut drifted = 0;
    for file in files {
        let path = args.root.join(&file.path);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(file.contents.as_str()) {
            continue;
        }
        if args.check {
            say!(
                "{} differs from what the code generates",
                file.path.display()
            );
            drifted += 1;
            continue;
        }
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &file.contents));
        if let Err(error) = written {
            return Err(Failure::usage(format!(
                "cannot write {}: {error}",
                path.display()
            )));
        }
        say!("wrote {}", file.path.display());
    }
    if drifted > 0 {
        say!("run `connector schema --write` and commit the result");
        return Ok(Outcome::Problems);
    }
    Ok(Outcome::Success)
}

/// README.md below `root` with its connector table made from `root/connectors/*/connector.yaml`;
/// nothing for a root whose README has no table markers (or that has no README: a folder for
/// the schemas alone).
fn readme(root: &Path) -> Result<Option<schema::GeneratedFile>, String> {
    let path = PathBuf::from("README.md");
    let Ok(text) = std::fs::read_to_string(root.join(&path)) else {
        return Ok(None);
    };
    if !text.contains(schema::CONNECTORS_START) {
        return Ok(None);
    }
    let mut specs = Vec::new();
    let folder = root.join("connectors");
    let entries = std::fs::read_dir(&folder)
        .map_err(|error| format!("cannot read {}: {error}", folder.display()))?;
    for entry in entries.flatten() {
        let spec_path = entry.path().join("connector.yaml");
        if spec_path.is_file() {
            specs.push(engine::spec::load(&spec_path).map_err(|error| {
                format!("{error}; run `connector validate` to see every problem")
            })?);
        }
    }
    let contents = schema::with_connector_table(&text, &specs).ok_or_else(|| {
        format!(
            "{} has the connector table's start marker but not its end ({})",
            root.join(&path).display(),
            schema::CONNECTORS_END
        )
    })?;
    Ok(Some(schema::GeneratedFile { path, contents }))
}
