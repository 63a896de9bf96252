//! The Hypernet Connect service (`connector serve`): connect accounts through OAuth, sync them
//! on a schedule, and show it all in a JSON API and a web page.
//!
//! - [`catalog`]: the connectors offered (and, in sandbox mode, their replays);
//! - [`identity`]: who is asking (API keys or a trusted gateway header);
//! - [`connect`]: the OAuth round trip and config-only connections;
//! - [`api`]: integrations, records, the audit log, health and metrics;
//! - [`imports`]: data exports uploaded (or named in the import folder) and imported;
//! - [`openapi`]: the API's OpenAPI document, generated from the handlers and their types;
//! - [`scheduler`] and [`runner`]: claiming due syncs across processes and running them.

pub mod api;
pub mod catalog;
pub mod connect;
pub mod content;
pub mod error;
pub mod identity;
pub mod imports;
pub mod metrics;
pub mod openapi;
pub mod runner;
pub mod scheduler;
pub mod state;
pub mod tables;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use engine::credentials::secrets::TokenCipher;
use engine::ratelimit::RateLimitRegistry;
use engine::store::{AnyStore, redact};

use crate::tables::ServiceTables;

pub use identity::{key_hash, new_key};
pub use state::{AppState, Config, Identity, Limits, Service};

/// The routes. (`{id}` is an integration id, or for `authorize` and `callback` a connector id:
/// the router wants one name per position.) Every route but `/`, `/healthz` and `/openapi.json` (which hold no one's data)
/// needs an authenticated user.
///
/// Every handler here carries its `#[utoipa::path]`, and [`openapi`] lists them all: a route
/// added here goes there too (`tests/serve.rs` checks that the document and the router agree).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(web::page))
        .route("/openapi.json", get(web::openapi))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route(
            "/session",
            post(api::start_session).delete(api::end_session),
        )
        .route("/me", get(api::me))
        .route("/connectors", get(api::connectors))
        .route("/integrations", get(api::list).post(connect::create))
        .route(
            "/integrations/{id}",
            get(api::get).patch(api::update).delete(api::delete),
        )
        .route("/integrations/{id}/sync", post(api::sync_now))
        // An export is streamed to disk under the service's own cap (`--max-upload`), not the
        // API's 64 KiB.
        .route(
            "/integrations/{id}/imports",
            post(imports::create).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/integrations/{id}/authorize", get(connect::authorize))
        .route("/integrations/{id}/callback", get(connect::callback))
        .route("/records", get(api::records))
        .route("/blobs/{hash}", get(content::blob))
        .route("/media/{record}", get(content::media))
        .route("/audit", get(api::audit))
        .fallback(api::fallback)
        // The API's bodies are a few config values: 64 KiB is far above any, and far below what
        // a client could make the service buffer (axum's default is 2 MiB per request).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(state)
}

/// The largest request body the API reads, in bytes.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// A running service.
pub struct Running {
    /// Where it listens.
    pub address: std::net::SocketAddr,
    /// Its shared state.
    pub state: AppState,
    /// The server task; it ends only on error.
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Opens the database, loads the catalog, binds, and starts serving (and scheduling, unless
/// the configuration says not to).
pub async fn start(config: Config) -> Result<Running, String> {
    let store = AnyStore::open(&config.database).await.map_err(|error| {
        format!(
            "cannot open the database {}: {error}",
            redact(&config.database)
        )
    })?;
    let catalog =
        catalog::Catalog::load(&config.connectors_root, config.sandbox, config.via.as_ref())
            .await?;
    let cipher = TokenCipher::from_env_or_file(&config.key_file)
        .map_err(|error| format!("cannot load the token key: {error}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot read the listening address: {error}"))?;
    let public_url = match &config.public_url {
        Some(url) => url.clone(),
        None => url::Url::parse(&format!("http://{address}"))
            .map_err(|error| format!("bad listening address: {error}"))?,
    };
    // App-wide and daily quotas are counted in the database, shared by every process of the
    // service and kept across restarts; a sandbox or `--via` service spends none.
    let rate_limits = if config.sandbox || config.via.is_some() {
        RateLimitRegistry::default()
    } else {
        RateLimitRegistry::default().with_shared_windows(Arc::new(store.clone()))
    };
    let blobs_at = config
        .blobs
        .clone()
        .unwrap_or_else(|| engine::blobs::BlobLocation::beside_database(&config.database));
    let blobs = engine::blobs::BlobStore::open(&blobs_at)
        .map_err(|error| format!("cannot open the blob store at {blobs_at}: {error}"))?;
    let state = Arc::new(Service {
        blobs,
        thumbnails: tokio::sync::Semaphore::new(2),
        requested: std::sync::Mutex::default(),
        sessions: Arc::default(),
        tables: ServiceTables::on(&store),
        store,
        catalog,
        cipher: Arc::new(cipher),
        identity: config.identity.clone(),
        public_url,
        sandbox: config.sandbox,
        metrics: Arc::default(),
        // App-wide and daily quotas are counted in the database, shared by every process of
        // the service and kept across restarts; a sandbox or `--via` service spends none.
        rate_limits,
        progress: std::sync::Mutex::default(),
        wake: tokio::sync::Notify::new(),
        config,
    });
    if state.config.scheduler {
        tokio::spawn(scheduler::run(Arc::clone(&state)));
    }
    let app = router(Arc::clone(&state));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Running {
        address,
        state,
        server,
    })
}
