//! `connector test [CONNECTOR...]`: every stream against its recorded fixtures, compared with
//! the snapshots beside the connector.

use std::path::PathBuf;

use engine::sandbox::{ConnectorFiles, TestReport, test_connector};

use super::progress::Progress;
use crate::{Failure, Outcome};

/// Arguments of `connector test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connector ids (folders under `--connectors`) or paths. Default: every connector with
    /// fixtures.
    connectors: Vec<String>,
    /// Write this run's records as the new snapshots.
    #[arg(long)]
    accept: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The folder of connectors.
    #[arg(long, default_value = "connectors")]
    connectors_root: PathBuf,
}

/// Runs the command.
pub async fn run(args: &Args) -> Result<Outcome, Failure> {
    let names: Vec<String> = if args.connectors.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir(&args.connectors_root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.path().join("fixtures").is_dir())
                    .map(|entry| entry.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    } else {
        args.connectors.clone()
    };
    if names.is_empty() {
        return Err(Failure::usage(format!(
            "no connectors with fixtures under {}",
            args.connectors_root.display()
        )));
    }
    let mut reports = Vec::new();
    for name in &names {
        let files = ConnectorFiles::locate(name, &args.connectors_root).map_err(Failure::usage)?;
        let progress = Progress::new(&format!("testing {name}"), args.json);
        let report = test_connector(&files, args.accept, &progress).await;
        progress.finish();
        let report = report.map_err(|error| Failure::problem(format!("{name}: {error}")))?;
        reports.push(report);
    }
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    } else {
        for report in &reports {
            print_report(report);
        }
        // The tally, last: what a person reads after a long run.
        let failed: Vec<&str> = reports
            .iter()
            .filter(|report| !report.passed)
            .map(|report| report.connector.as_str())
            .collect();
        let tested = match reports.len() {
            1 => "1 connector".to_owned(),
            count => format!("{count} connectors"),
        };
        if failed.is_empty() {
            say!("{tested} tested: all passed");
        } else {
            say!(
                "{tested} tested: {} passed, {} failed ({})",
                reports.len() - failed.len(),
                failed.len(),
                failed.join(", ")
            );
        }
    }
    Ok(if reports.iter().all(|report| report.passed) {
        Outcome::Success
    } else {
        Outcome::Problems
    })
}

fn print_report(report: &TestReport) {
    let verdict = if report.passed { "ok" } else { "FAILED" };
    say!("{}: {verdict}", report.connector);
    for stream in &report.streams {
        say!("  stream {}: {}", stream.stream, stream.status);
        if let Some(diff) = &stream.diff {
            for line in diff.lines() {
                say!("    {line}");
            }
        }
    }
    for fixture in &report.unused_fixtures {
        say!("  fixture never requested: {fixture}");
    }
    for request in &report.unmatched_requests {
        say!("  request without a fixture: {request}");
    }
    if let Some(error) = &report.error {
        say!("  sync failed: {error}");
    }
    if report
        .streams
        .iter()
        .any(|stream| stream.status == "new" || stream.status == "differs")
    {
        say!(
            "  review the diff, then run `connector test {} --accept` to keep this run as the snapshot",
            report.connector
        );
    }
}
