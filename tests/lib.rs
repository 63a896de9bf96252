//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every `connector.yaml` under `connectors/`, sorted.
pub fn connector_specs() -> Vec<PathBuf> {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("connectors"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("connector.yaml"))
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    specs.sort();
    specs
}

use std::sync::Arc;

use engine::auth::StaticAuth;
use engine::events::{Counters, Event, Observer, Totals};
use engine::http::{ClientOptions, HttpClient, Transport};
use engine::ratelimit::RateLimitRegistry;
use engine::spec::{ConnectorSpec, SpecSource};
use engine::store::Sink;
use engine::sync::{CompiledConnector, Integration, SyncError, SyncRun};

/// Reads a spec from YAML text, panicking with the diagnostics if it is invalid.
pub fn spec_from(yaml: &str) -> Arc<ConnectorSpec> {
    let source = SpecSource {
        path: PathBuf::from("test.yaml"),
        text: yaml.to_owned(),
    };
    match engine::spec::parse(&source) {
        Ok(spec) => Arc::new(spec),
        Err(diagnostics) => panic!(
            "invalid test spec:\n{}",
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// A loopback server running `router` on a free port; returns its base URL.
pub async fn serve(router: axum::Router) -> url::Url {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url::Url::parse(&format!("http://{address}")).unwrap()
}

/// Every event of a run, kept for assertions, plus the counts.
#[derive(Default)]
pub struct Recorder {
    pub counters: Counters,
    pub events: std::sync::Mutex<Vec<String>>,
}

impl Observer for Recorder {
    fn event(&self, event: &Event<'_>) {
        self.counters.event(event);
        self.events.lock().unwrap().push(format!("{event:?}"));
    }
}

impl Recorder {
    pub fn totals(&self) -> Totals {
        self.counters.totals()
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

/// Options for [`run`].
pub struct RunOptions {
    pub timeout: std::time::Duration,
    pub config: serde_json::Map<String, serde_json::Value>,
    pub access_token: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            timeout: std::time::Duration::from_secs(10),
            config: serde_json::Map::new(),
            access_token: Some("test-token".to_owned()),
        }
    }
}

/// Runs every stream of `spec` against the server at `server` (all hosts redirected there).
pub async fn run<S: Sink>(
    spec: &Arc<ConnectorSpec>,
    server: &url::Url,
    sink: &S,
    options: RunOptions,
) -> (Result<(), SyncError>, Recorder) {
    let connector = CompiledConnector::compile(Arc::clone(spec)).unwrap();
    let integration =
        Integration::configure(spec, "user-1", "integration-1", &options.config).unwrap();
    let registry = RateLimitRegistry::default();
    let http = HttpClient::new(
        spec.allowed_hosts.clone(),
        spec.retry.clone(),
        registry.gate(spec, &integration.integration_id),
        ClientOptions {
            timeout: options.timeout,
            transport: Transport::Sandbox(server.clone()),
        },
    )
    .unwrap();
    let auth = StaticAuth::prepare(
        &spec.auth,
        &integration.credentials_context(),
        options.access_token.as_deref(),
    )
    .unwrap();
    let recorder = Recorder::default();
    let result = SyncRun::new(
        &connector,
        &integration,
        &http,
        &auth,
        &recorder,
        sink.clone(),
    )
    .run(&[])
    .await;
    (result, recorder)
}
