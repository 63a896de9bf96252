//! `connector gc`: removes from the blob store what no record refers to (content of deleted
//! data a failed deletion left, staged downloads a crash left).

use engine::spec::Duration;

use crate::{Failure, Outcome};

/// Arguments of `connector gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database: an SQLite file (the default) or a PostgreSQL URL (`postgres://...`).
    #[arg(long, env = "DATABASE_URL", default_value = "hypernet.sqlite")]
    db: String,
    /// The blob store (see `connector sync --help`). Default: beside the SQLite file.
    #[arg(long, env = "HYPERNET_BLOBS", value_name = "LOCATION")]
    blobs: Option<String>,
    /// Keep unreferenced blobs and staged files younger than this (`1h`, `30m`): a download
    /// running now commits its blob a moment before it records the reference.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    grace: Duration,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(args: &Args) -> Result<Outcome, Failure> {
    let store = engine::store::AnyStore::open(&args.db)
        .await
        .map_err(|error| {
            Failure::problem(format!(
                "cannot open the database {}: {error}",
                engine::store::redact(&args.db)
            ))
        })?;
    let location = match &args.blobs {
        Some(text) => engine::blobs::BlobLocation::parse(text)
            .map_err(|error| Failure::usage(format!("--blobs: {error}")))?,
        None => engine::blobs::BlobLocation::beside_database(&args.db),
    };
    let blobs = engine::blobs::BlobStore::open(&location)
        .map_err(|error| Failure::problem(format!("the blob store at {location}: {error}")))?;
    let collected = engine::account::collect_garbage(&store, &blobs, args.grace.get())
        .await
        .map_err(|error| Failure::problem(format!("the blob store at {location}: {error}")))?;
    store.close().await;
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&collected).unwrap_or_default()
        );
    } else {
        say!(
            "{location}: {} blobs; {} unreferenced deleted ({:.1} MB freed), {} unreferenced kept for now (younger than {}), {} staged files removed",
            collected.blobs,
            collected.deleted,
            collected.bytes_freed as f64 / 1e6,
            collected.kept_young,
            args.grace,
            collected.staged_removed
        );
    }
    Ok(Outcome::Success)
}
