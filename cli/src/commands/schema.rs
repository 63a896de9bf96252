//! `connector schema`: the generated JSON Schemas and reference pages.

use std::path::PathBuf;

use engine::schema;

use crate::Outcome;

/// Arguments of `connector schema`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write every generated file (schemas/, docs/spec.md, docs/models.md) below `--root`.
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
pub fn run(args: &Args) -> Outcome {
    if !args.write && !args.check {
        let text = serde_json::to_string_pretty(&schema::connector_schema()).unwrap_or_default();
        println!("{text}");
        return Outcome::Success;
    }
    let mut drifted = 0;
    for file in schema::generated_files() {
        let path = args.root.join(&file.path);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(file.contents.as_str()) {
            continue;
        }
        if args.check {
            println!(
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
            eprintln!("error: cannot write {}: {error}", path.display());
            return Outcome::UsageError;
        }
        println!("wrote {}", file.path.display());
    }
    if drifted > 0 {
        println!("run `connector schema --write` and commit the result");
        return Outcome::Problems;
    }
    Outcome::Success
}
