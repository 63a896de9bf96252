//! `connector disconnect CONNECTOR`: revoke and forget an account's tokens; optionally delete
//! what was imported through it (imported data otherwise stays, as the user's).

use super::credentials::{Account, cipher, integration_id, sandbox_if};
use crate::{Failure, Outcome};
use engine::http::Transport;
use engine::sandbox::Sandbox;

/// Arguments of `connector disconnect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The connector: an id (a folder under `--connectors-root`) or a path.
    connector: String,
    /// Also delete every record imported through this integration.
    #[arg(long)]
    delete_data: bool,
    /// The account was connected with `connector auth --sandbox`.
    #[arg(long)]
    sandbox: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    account: Account,
}

/// Runs the command.
pub async fn run(args: &Args) -> Result<Outcome, Failure> {
    let (files, spec) = super::open_connector(&args.connector, &args.account.connectors_root)?;
    let store = args.account.open_store().await.map_err(Failure::problem)?;
    let id = integration_id(&spec, &args.account);
    let stored = store
        .integration(&id)
        .await
        .map_err(|error| Failure::problem(error.to_string()))?
        .ok_or_else(|| Failure::problem(format!("{id} is not connected; nothing to disconnect")))?;
    let cipher = cipher(&args.account.key_file)
        .map_err(|error| Failure::problem(format!("{}: {error}", spec.id)))?;
    // The sandbox's stand-in provider, where revocation goes, lives as long as `sandbox`.
    let sandbox = sandbox_if(args.sandbox, &files, &spec)
        .await
        .map_err(Failure::problem)?;
    let transport = sandbox
        .as_ref()
        .map_or(Transport::Direct, Sandbox::transport);
    let blobs = args.account.blob_store()?;
    let report = engine::account::disconnect(
        &store,
        &blobs,
        &stored,
        Some(&spec),
        args.account.oauth_client(&spec, args.sandbox),
        &cipher,
        transport,
        args.delete_data,
    )
    .await
    .map_err(|error| Failure::problem(error.to_string()))?;
    let (revoked, records_deleted) = (report.revoked, report.records_deleted);
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        say!("Disconnected {id}; its tokens are deleted.");
        match (&report.revocation_error, revoked) {
            (Some(error), _) => say!(
                "Revoking at the provider failed ({error}); remove Hypernet's access in your {} account settings.",
                spec.name
            ),
            (None, true) => say!("Access was revoked at {}.", spec.name),
            (None, false) => say!(
                "{} has no revocation endpoint; remove Hypernet's access in your account settings there.",
                spec.name
            ),
        }
        if args.delete_data {
            say!(
                "{records_deleted} imported records deleted, and {} files of their content no other record uses.",
                report.blobs_deleted
            );
        } else {
            say!("Imported records are kept; run again with --delete-data to delete them.");
        }
    }
    Ok(if report.revocation_error.is_some() {
        Outcome::Problems
    } else {
        Outcome::Success
    })
}
