//! `connector validate [PATH...]`: every problem in every spec, as `file:line:column: ...`.

use std::path::{Path, PathBuf};

use engine::spec::{self, Diagnostic, LoadError};
use serde::Serialize;

use crate::{Failure, Outcome};

/// Arguments of `connector validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spec files, or folders searched for `connector.yaml` files. Default: `connectors/`.
    paths: Vec<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    valid: usize,
    invalid: usize,
    specs: Vec<SpecReport>,
}

#[derive(Debug, Serialize)]
struct SpecReport {
    file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    connector: Option<String>,
    valid: bool,
    diagnostics: Vec<Diagnostic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<Outcome, Failure> {
    let roots = if args.paths.is_empty() {
        vec![PathBuf::from("connectors")]
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    for root in &roots {
        match spec_files(root) {
            Ok(found) if found.is_empty() => {
                return Err(Failure::usage(format!(
                    "no connector.yaml under {}",
                    root.display()
                )));
            }
            Ok(found) => files.extend(found),
            Err(error) => {
                return Err(Failure::usage(format!(
                    "cannot read {}: {error}",
                    root.display()
                )));
            }
        }
    }

    let specs: Vec<SpecReport> = files.into_iter().map(check).collect();
    let invalid = specs.iter().filter(|report| !report.valid).count();
    let report = Report {
        valid: specs.len() - invalid,
        invalid,
        specs,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|error| Failure::problem(format!("cannot print the report: {error}")))?;
        say!("{text}");
    } else {
        print_text(&report);
    }
    Ok(if invalid == 0 {
        Outcome::Success
    } else {
        Outcome::Problems
    })
}

fn check(file: PathBuf) -> SpecReport {
    match spec::load(&file) {
        Ok(spec) => SpecReport {
            file,
            connector: Some(spec.id),
            valid: true,
            diagnostics: vec![],
            error: None,
        },
        Err(LoadError::Invalid(diagnostics)) => SpecReport {
            file,
            connector: None,
            valid: false,
            diagnostics,
            error: None,
        },
        Err(error) => SpecReport {
            file,
            connector: None,
            valid: false,
            diagnostics: vec![],
            error: Some(error.to_string()),
        },
    }
}

fn print_text(report: &Report) {
    for spec in &report.specs {
        for diagnostic in &spec.diagnostics {
            say!("{diagnostic}");
        }
        if let Some(error) = &spec.error {
            say!("{error}");
        }
    }
    let problems: usize = report
        .specs
        .iter()
        .map(|spec| {
            spec.diagnostics
                .len()
                .max(usize::from(spec.error.is_some()))
        })
        .sum();
    let total = report.valid + report.invalid;
    if report.invalid == 0 {
        say!("{total} spec{} valid", if total == 1 { "" } else { "s" });
    } else {
        say!(
            "{} of {total} spec{} invalid, {problems} problem{}",
            report.invalid,
            if total == 1 { "" } else { "s" },
            if problems == 1 { "" } else { "s" }
        );
    }
}

/// The spec files a path names: the file itself, or every `connector.yaml` below a folder.
fn spec_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        std::fs::metadata(path)?;
        return Ok(vec![path.to_owned()]);
    }
    let mut found = Vec::new();
    let mut folders = vec![path.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                folders.push(entry.path());
            } else if entry.file_name() == "connector.yaml" {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}
