//! `connector serve`: the service: OAuth connect, scheduled syncs, a JSON API and a web page.

use std::path::PathBuf;

use engine::spec::{ByteSize, Duration};
use serde_json::json;
use server::{Config, Identity, Limits};

use crate::{Failure, Outcome};

/// Arguments of `connector serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run every connector against the replay of its own fixtures, with a stand-in OAuth
    /// provider: the whole flow with no accounts. Creates an API key for user `local` and
    /// prints a link that signs the browser in.
    #[arg(long)]
    sandbox: bool,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080", env = "HYPERNET_LISTEN")]
    listen: std::net::SocketAddr,
    /// The URL users reach the service at, when it is behind a proxy (OAuth redirect URIs are
    /// `<URL>/integrations/<connector>/callback`; register them with each provider).
    #[arg(long, env = "HYPERNET_PUBLIC_URL")]
    public_url: Option<url::Url>,
    /// Send every provider request to this server instead of the connectors' hosts (a
    /// recording or replay proxy, a staging mirror), as `connector sync --via` does.
    #[arg(long, value_name = "URL", conflicts_with = "sandbox")]
    via: Option<url::Url>,
    /// The database: an SQLite file (the default) or a PostgreSQL URL. Several processes may
    /// serve one PostgreSQL database: they share the syncs and never run one twice at once.
    #[arg(long, env = "DATABASE_URL", default_value = "hypernet.sqlite")]
    db: String,
    /// The token key file, used when HYPERNET_TOKEN_KEY is not set (created if missing).
    #[arg(long, default_value = "hypernet.key")]
    key_file: PathBuf,
    /// The folder of connectors.
    #[arg(long, default_value = "connectors")]
    connectors_root: PathBuf,
    /// Trust this header (set by Hypernet's gateway) to name the user, instead of API keys.
    /// Only for a service that nothing but the gateway can reach.
    #[arg(long, value_name = "HEADER")]
    trusted_header: Option<String>,
    /// Create an API key for USER, print it, and exit.
    #[arg(long, value_name = "USER")]
    create_key: Option<String>,
    /// Syncs running at once in this process.
    #[arg(long, default_value_t = Limits::DEFAULT.global, value_parser = clap::value_parser!(u16).range(1..))]
    max_syncs: u16,
    /// Syncs of one connector running at once in this process.
    #[arg(long, default_value_t = Limits::DEFAULT.per_connector, value_parser = clap::value_parser!(u16).range(1..))]
    max_syncs_per_connector: u16,
    /// Initial imports running at once in this process (kept below --max-syncs so that
    /// incremental syncs always find a slot).
    #[arg(long, default_value_t = Limits::DEFAULT.initial, value_parser = clap::value_parser!(u16).range(1..))]
    max_initial_imports: u16,
    /// Time between syncs of every integration (`30m`, `6h`), instead of each connector's
    /// `schedule.every`.
    #[arg(long, value_name = "DURATION")]
    sync_every: Option<Duration>,
    /// How often to look for due syncs (`2s`).
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    poll: Duration,
    /// How long a claimed sync is leased before another process may take it over (`60s`).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    lease: Duration,
    /// This process's name in sync runs (default: host:pid).
    #[arg(long)]
    worker: Option<String>,
    /// Serve the API only; leave syncing to other processes.
    #[arg(long)]
    no_scheduler: bool,
    /// A user who operates the service and may read what spans every user (`/metrics`).
    /// Repeat for several.
    #[arg(
        long = "operator",
        value_name = "USER",
        env = "HYPERNET_OPERATORS",
        value_delimiter = ','
    )]
    operators: Vec<String>,
    /// Where uploaded exports wait for their import (each is deleted when its import ends).
    #[arg(long, default_value = "hypernet-uploads", value_name = "DIR")]
    uploads: PathBuf,
    /// The largest export accepted as an upload (`20GiB`, `500MB`).
    #[arg(long, default_value = "20GiB", value_name = "SIZE")]
    max_upload: ByteSize,
    /// A folder of exports on this machine that operators may import by path
    /// (`POST /integrations/{id}/imports` with `{"paths": [...]}`), for exports too large to
    /// upload through a browser. Default: none, and imports by path are refused.
    #[arg(long, value_name = "DIR", env = "HYPERNET_IMPORT_ROOT")]
    import_root: Option<PathBuf>,
    /// Where records' content (photos, files, attachments) is kept: a folder, or S3-compatible
    /// storage as s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION] (credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). Default: a folder beside an SQLite
    /// database (hypernet.sqlite: hypernet.blobs/), or hypernet-blobs/ for PostgreSQL.
    #[arg(long, env = "HYPERNET_BLOBS", value_name = "LOCATION")]
    blobs: Option<String>,
    /// Print the address (and the sandbox's sign-in link) as one JSON line.
    #[arg(long)]
    json: bool,
}

/// Runs the command until interrupted.
pub async fn run(args: &Args) -> Result<Outcome, Failure> {
    let mut config = Config::new(args.db.clone(), args.connectors_root.clone());
    config.listen = args.listen;
    config.public_url = args.public_url.clone();
    config.sandbox = args.sandbox;
    config.via = args.via.clone();
    config.key_file = args.key_file.clone();
    config.identity = match &args.trusted_header {
        Some(header) => Identity::TrustedHeader(header.to_ascii_lowercase()),
        None => Identity::ApiKeys,
    };
    config.limits = Limits {
        global: args.max_syncs,
        per_connector: args.max_syncs_per_connector,
        initial: args.max_initial_imports,
    };
    config.sync_every = args.sync_every.map(Duration::get);
    config.poll = args.poll.get();
    config.lease = args.lease.get();
    config.operators = args.operators.clone();
    config.uploads = args.uploads.clone();
    config.max_upload = args.max_upload.get();
    config.import_root = args.import_root.clone();
    config.blobs = args
        .blobs
        .as_deref()
        .map(engine::blobs::BlobLocation::parse)
        .transpose()
        .map_err(|error| Failure::usage(format!("--blobs: {error}")))?;
    if let Some(worker) = &args.worker {
        config.worker = worker.clone();
    }
    config.scheduler = !args.no_scheduler;

    if let Some(user) = &args.create_key {
        return create_key(&args.db, user).await;
    }
    let running = server::start(config).await.map_err(Failure::problem)?;
    let url = running.state.public_url.clone();
    let mut login = None;
    if args.sandbox && args.trusted_header.is_none() {
        let key = server::new_key();
        if let Err(error) = running
            .state
            .tables
            .add_api_key(&server::key_hash(&key), "local")
            .await
        {
            return Err(Failure::problem(format!(
                "cannot create the sandbox's API key: {error}"
            )));
        }
        let mut link = url.clone();
        link.set_fragment(Some(&format!("key={key}")));
        login = Some((link, key));
    }
    let connectors = running.state.catalog.iter().count();
    if args.json {
        say!(
            "{}",
            json!({
                "url": url.as_str(),
                "login_url": login.as_ref().map(|(link, _)| link.as_str()),
                "api_key": login.as_ref().map(|(_, key)| key.as_str()),
                "connectors": connectors,
                "sandbox": args.sandbox,
                "database": engine::store::redact(&args.db),
            })
        );
    } else {
        say!(
            "Hypernet Connect is serving {connectors} connectors at {url}{}",
            if args.sandbox { " (sandbox)" } else { "" }
        );
        say!("Database: {}", engine::store::redact(&args.db));
        if let Some((link, key)) = &login {
            say!("Open this link to sign in as user `local`: {link}");
            say!("API key for scripts (Authorization: Bearer): {key}");
        }
        say!("Press Ctrl-C to stop; running syncs resume from their checkpoints next time.");
    }
    tokio::select! {
        result = running.server => match result {
            Ok(Ok(())) => Ok(Outcome::Success),
            Ok(Err(error)) => Err(Failure::problem(format!("the server stopped: {error}"))),
            Err(error) => Err(Failure::problem(format!("the server task failed: {error}"))),
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping");
            Ok(Outcome::Success)
        }
    }
}

/// `--create-key USER`: creates an API key for `user` and prints it.
async fn create_key(db: &str, user: &str) -> Result<Outcome, Failure> {
    if user.trim().is_empty() {
        return Err(Failure::usage("--create-key needs a user id"));
    }
    let store = engine::store::AnyStore::open(db).await.map_err(|error| {
        Failure::problem(format!(
            "cannot open the database {}: {error}",
            engine::store::redact(db)
        ))
    })?;
    let key = server::new_key();
    server::tables::ServiceTables::on(&store)
        .add_api_key(&server::key_hash(&key), user)
        .await
        .map_err(|error| Failure::problem(error.to_string()))?;
    say!("{key}");
    eprintln!("API key for user `{user}` created; it is shown once (only its hash is stored).");
    Ok(Outcome::Success)
}
