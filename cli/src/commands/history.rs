//! `connector history CONNECTOR`: an integration's sync runs and audit log.

use engine::store::{AuditEntry, SyncRunRow};
use serde::Serialize;

use super::credentials::{Account, integration_id};
use crate::{Failure, Outcome};

/// Arguments of `connector history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The connector: an id (a folder under `--connectors-root`) or a path.
    connector: String,
    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Print runs and audit log as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    account: Account,
}

#[derive(Debug, Serialize)]
struct History<'a> {
    integration: &'a str,
    runs: &'a [SyncRunRow],
    audit: &'a [AuditEntry],
}

/// Runs the command.
pub async fn run(args: &Args) -> Result<Outcome, Failure> {
    let (_, spec) = super::open_connector(&args.connector, &args.account.connectors_root)?;
    let store = args.account.open_existing_store().await?;
    let id = integration_id(&spec, &args.account);
    let (runs, audit) = match (store.runs(&id).await, store.audit_log(&id).await) {
        (Ok(runs), Ok(audit)) => (runs, audit),
        (Err(error), _) | (_, Err(error)) => return Err(Failure::problem(error.to_string())),
    };
    let runs = &runs[..runs.len().min(args.runs)];
    if args.json {
        let history = History {
            integration: &id,
            runs,
            audit: &audit,
        };
        say!(
            "{}",
            serde_json::to_string_pretty(&history).unwrap_or_default()
        );
        return Ok(Outcome::Success);
    }
    let plural = if runs.len() == 1 { "" } else { "s" };
    say!("{id}: the last {} run{plural}, newest first", runs.len());
    for run in runs {
        let written = &run.totals.written;
        say!(
            "  run {} {} {} → {}: new {} · updated {} · unchanged {} · deleted {} · rejected {} · pages {} · requests {}",
            run.id,
            run.status,
            run.started_at,
            run.finished_at
                .as_deref()
                .unwrap_or("(not finished: killed or still running)"),
            written.new,
            written.updated,
            written.unchanged,
            written.deleted,
            written.rejected,
            run.totals.pages,
            run.totals.requests,
        );
        if let Some(error) = &run.error {
            say!("    error: {error}");
        }
    }
    say!("audit log:");
    for entry in &audit {
        say!("  {} {} {}", entry.at, entry.action, entry.detail);
    }
    Ok(Outcome::Success)
}
