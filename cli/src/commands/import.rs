//! `connector import CONNECTOR PATH...`: import a data export (a zip, tar.gz or folder) into
//! the database.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use engine::account::Integration;
use engine::http::{HttpClient, NoCredentials, Transport};
use engine::ratelimit::RateGate;
use engine::run::{CompiledConnector, SyncRun};
use engine::source::archive::{ArchiveLimits, Export};

use super::credentials::{Account, integration_id};
use super::progress::Progress;
use super::sync::{Summary, config_values};
use crate::{Failure, Outcome};

/// Arguments of `connector import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The connector: an id (a folder under `--connectors-root`) or a path.
    connector: String,
    /// The export as downloaded: a zip, a tar.gz, a tar or an unpacked folder. An export in
    /// several parts (Takeout's `-001.zip`, `-002.zip`) is given as all its parts.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Only these streams (repeatable); default: every stream that reads an export.
    #[arg(long = "stream", value_name = "NAME")]
    streams: Vec<String>,
    /// A config value, as NAME=VALUE (repeatable).
    #[arg(long = "config", value_name = "NAME=VALUE")]
    config: Vec<String>,
    /// Import the records only: the files that are records' content (photos, videos) are
    /// not copied into the blob store.
    #[arg(long)]
    no_content: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    account: Account,
}

/// Runs the command.
pub async fn run(args: &Args) -> Result<Outcome, Failure> {
    let (_, spec) = super::open_connector(&args.connector, &args.account.connectors_root)?;
    super::check_streams(&spec, &args.streams, true)?;
    let spec = Arc::new(spec);
    let given = config_values(&spec, &args.config).map_err(Failure::usage)?;
    let integration_id = integration_id(&spec, &args.account);
    let integration = Integration::configure(&spec, &args.account.user, &integration_id, &given)
        .map_err(|error| {
            Failure::usage(format!(
                "{}: {error}; pass it with --config NAME=VALUE",
                spec.id
            ))
        })?;
    let connector = CompiledConnector::compile(Arc::clone(&spec))
        .map_err(|error| Failure::problem(format!("{}: {error}", spec.id)))?;
    // Opening reads every part's directory (a zip's, a folder's) and refuses hostile entries
    // before anything is written.
    let paths = args.paths.clone();
    let export =
        tokio::task::spawn_blocking(move || Export::open(&paths, ArchiveLimits::default()))
            .await
            .map_err(|error| Failure::problem(error.to_string()))?
            .map_err(|error| Failure::problem(error.to_string()))?;
    let store = args.account.open_store().await.map_err(Failure::problem)?;
    // An import sends no request; the client only completes the run's parts.
    let http = HttpClient::for_connector(&spec, RateGate::unlimited(), Transport::Direct)
        .map_err(|error| Failure::problem(format!("{}: {error}", spec.id)))?;
    let blobs = if args.no_content {
        None
    } else {
        Some(args.account.blob_store()?)
    };
    let started = Instant::now();
    let progress = Progress::of_import(&format!("importing {}", spec.id), args.json);
    let mut run = SyncRun::new(
        &connector,
        &integration,
        &http,
        &NoCredentials,
        &progress,
        store.clone(),
    );
    if let Some(blobs) = blobs {
        run = run.with_blobs(blobs);
    }
    let result = run.import(Arc::new(export), &args.streams).await;
    progress.finish();
    store.close().await;
    let mut summary = Summary::of(&spec.id, &args.account.db, &result, &progress, started);
    summary.export = args
        .paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    Ok(summary.report(args.json))
}
