//! The service's configuration and shared state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::credentials::secrets::TokenCipher;
use engine::events::Counters;
use engine::ratelimit::RateLimitRegistry;
use engine::store::AnyStore;
use tokio::sync::Notify;

use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::tables::ServiceTables;

/// How requests are authenticated (the `identity` module reads it; configuration lives here, so
/// that the two form no cycle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// API keys, per user.
    ApiKeys,
    /// A header set by a trusted gateway, naming the user.
    TrustedHeader(String),
}

/// How many syncs run at once, in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In all.
    pub global: u16,
    /// Of one connector (the provider's app-wide quota is shared by all its integrations).
    pub per_connector: u16,
    /// Initial imports (an integration's first, often large, sync). Kept below `global`, so
    /// incremental syncs always find a free slot however many new integrations wait.
    pub initial: u16,
}

impl Limits {
    /// The defaults: 8 syncs, 4 per connector, 4 initial imports.
    pub const DEFAULT: Self = Self {
        global: 8,
        per_connector: 4,
        initial: 4,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database location (SQLite file or PostgreSQL URL).
    pub database: String,
    /// The folder of connectors.
    pub connectors_root: PathBuf,
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The URL users reach the service at (OAuth redirect URIs are built from it); by default
    /// `http://<listen address>`.
    pub public_url: Option<url::Url>,
    /// Run every connector against the replay of its own fixtures and a stand-in OAuth
    /// provider.
    pub sandbox: bool,
    /// Send every provider request (API and OAuth endpoints) to this server instead, as
    /// `connector sync --via` does: URLs are still built and checked against each connector's
    /// allowed hosts. Ignored in sandbox mode.
    pub via: Option<url::Url>,
    /// How requests are authenticated.
    pub identity: Identity,
    /// The token key file, used when `HYPERNET_TOKEN_KEY` is not set.
    pub key_file: PathBuf,
    /// Concurrency limits.
    pub limits: Limits,
    /// How long a claimed sync is leased before another process may take it over (renewed
    /// every third of it while the sync runs).
    pub lease: Duration,
    /// How often the scheduler looks for due syncs (with ±25% jitter).
    pub poll: Duration,
    /// Overrides every connector's default interval between syncs.
    pub sync_every: Option<Duration>,
    /// This process's name in sync runs and leases.
    pub worker: String,
    /// Whether to run the scheduler (a process can serve the API only).
    pub scheduler: bool,
    /// The users who run the service: only they read what spans every user (`/metrics`), and
    /// import from the import folder.
    pub operators: Vec<String>,
    /// Where uploaded exports wait for their import (each deleted when its import ends).
    pub uploads: PathBuf,
    /// The largest export accepted as an upload, in bytes.
    pub max_upload: u64,
    /// A folder on the server whose exports operators may import by path, for those too large to
    /// upload through a browser (a 50 GB Takeout); `None`: imports by path are refused.
    pub import_root: Option<PathBuf>,
    /// Where records' content is kept; `None`: a folder beside an SQLite database.
    pub blobs: Option<engine::blobs::BlobLocation>,
}

/// The largest upload accepted by default: 20 GiB (a large Apple or Meta export; Takeouts come
/// in parts of 2 to 50 GB, and the larger ones belong in the import folder).
pub const DEFAULT_MAX_UPLOAD: u64 = 20 << 30;

impl Config {
    /// Defaults for `database` and `connectors_root`, listening on a free loopback port.
    pub fn new(database: impl Into<String>, connectors_root: impl Into<PathBuf>) -> Self {
        Self {
            database: database.into(),
            connectors_root: connectors_root.into(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            sandbox: false,
            via: None,
            identity: Identity::ApiKeys,
            key_file: PathBuf::from("hypernet.key"),
            limits: Limits::default(),
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(2),
            sync_every: None,
            worker: default_worker(),
            scheduler: true,
            operators: Vec::new(),
            uploads: PathBuf::from("hypernet-uploads"),
            max_upload: DEFAULT_MAX_UPLOAD,
            import_root: None,
            blobs: None,
        }
    }
}

/// `host:pid`: unique among the processes sharing a database.
pub fn default_worker() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// What every request handler and the scheduler share.
pub struct Service {
    /// The database.
    pub store: AnyStore,
    /// The service's own tables on it.
    pub tables: ServiceTables,
    /// The connectors.
    pub catalog: Catalog,
    /// Seals tokens and secrets at rest.
    pub cipher: Arc<TokenCipher>,
    /// How requests are authenticated.
    pub identity: Identity,
    /// Where users reach the service.
    pub public_url: url::Url,
    /// Sandbox mode.
    pub sandbox: bool,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Rate limits shared by every integration's syncs in this process.
    pub rate_limits: RateLimitRegistry,
    /// Live progress of the syncs running in this process, by integration.
    pub progress: Mutex<HashMap<String, Arc<Counters>>>,
    /// Wakes the scheduler (a new integration, "sync now").
    pub wake: Notify,
    /// The configuration.
    pub config: Config,
    /// Where records' content is kept.
    pub blobs: engine::blobs::BlobStore,
    /// The streams a person asked the next sync of an integration to run (a session stream,
    /// such as Google Photos' Picker), by integration. In memory: an interactive request that
    /// a restart forgets, as the person's waiting page would be.
    pub requested: Mutex<HashMap<String, Vec<String>>>,
    /// The sessions waiting for their person now, by integration: the stream and the page.
    pub sessions: Sessions,
    /// Thumbnails made at once: each decodes a photo on a blocking thread, and a page of a
    /// grid asks for dozens.
    pub thumbnails: tokio::sync::Semaphore,
}

/// The shared state handlers get.
pub type AppState = Arc<Service>;

/// The sessions waiting for their person, by integration.
pub type Sessions = Arc<Mutex<HashMap<String, SessionWaiting>>>;

/// A stream's session waiting for the person (Google Photos' Picker): where they go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SessionWaiting {
    /// The stream.
    pub stream: String,
    /// The page the person opens to finish it.
    pub url: String,
}

impl Service {
    /// The live counters of a sync of `integration_id` running in this process.
    pub fn progress_of(&self, integration_id: &str) -> Option<engine::events::Totals> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(integration_id)
            .map(|counters| counters.totals())
    }
}
