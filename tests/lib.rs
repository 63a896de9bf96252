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

/// An HTTP client for `spec` whose requests all go to `server`, without rate limits.
pub fn sandbox_client(spec: &ConnectorSpec, server: &url::Url) -> HttpClient {
    HttpClient::new(
        spec.allowed_hosts.clone(),
        spec.retry.clone(),
        engine::ratelimit::RateGate::unlimited(),
        ClientOptions {
            transport: Transport::Sandbox(server.clone()),
            ..ClientOptions::default()
        },
    )
    .expect("an HTTP client")
}

/// A connectors folder (as `--connectors-root` takes) holding each spec text as
/// `<folder>/connector.yaml`.
pub fn connectors_folder(specs: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    for (folder, text) in specs {
        let folder = root.path().join(folder);
        std::fs::create_dir_all(&folder).expect("connector folder");
        std::fs::write(folder.join("connector.yaml"), text).expect("connector.yaml");
    }
    root
}

use std::sync::Arc;

use engine::account::Integration;
use engine::credentials::static_auth::StaticAuth;
use engine::events::{Counters, Event, Observer, Totals};
use engine::http::{ClientOptions, HttpClient, Transport};
use engine::ratelimit::RateLimitRegistry;
use engine::run::{CompiledConnector, RunReport, SyncError, SyncRun};
use engine::spec::{ConnectorSpec, SpecSource};
use engine::store::Sink;

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
    /// The counts.
    pub counters: Counters,
    /// Every event, as its debug text, in order.
    pub events: std::sync::Mutex<Vec<String>>,
}

impl Observer for Recorder {
    fn event(&self, event: &Event<'_>) {
        self.counters.event(event);
        self.events.lock().unwrap().push(format!("{event:?}"));
    }
}

impl Recorder {
    /// The counts so far.
    pub fn totals(&self) -> Totals {
        self.counters.totals()
    }

    /// The events so far.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

/// Options for [`run`].
pub struct RunOptions {
    /// The HTTP client's limit on one attempt.
    pub timeout: std::time::Duration,
    /// The integration's config values.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The token the connector's auth presents, when it takes one.
    pub access_token: Option<String>,
    /// The integration the run imports for (default `integration-1`, of `user-1`).
    pub integration_id: String,
    /// Where records' content is downloaded to (none: content is owed, not downloaded).
    pub blobs: Option<engine::blobs::BlobStore>,
    /// The root streams to run, by name (none: the default ones).
    pub streams: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            timeout: std::time::Duration::from_secs(10),
            config: serde_json::Map::new(),
            access_token: Some("test-token".to_owned()),
            integration_id: "integration-1".to_owned(),
            blobs: None,
            streams: Vec::new(),
        }
    }
}

/// [`run`] with the records' content downloaded into `blobs`, and nothing else changed.
pub async fn run_with_blobs<S: Sink>(
    spec: &Arc<ConnectorSpec>,
    server: &url::Url,
    sink: &S,
    blobs: &engine::blobs::BlobStore,
) -> (Result<RunReport, SyncError>, Recorder) {
    let options = RunOptions {
        blobs: Some(blobs.clone()),
        ..RunOptions::default()
    };
    run(spec, server, sink, options).await
}

/// Runs every stream of `spec` against the server at `server` (all hosts redirected there).
pub async fn run<S: Sink>(
    spec: &Arc<ConnectorSpec>,
    server: &url::Url,
    sink: &S,
    options: RunOptions,
) -> (Result<RunReport, SyncError>, Recorder) {
    let connector = CompiledConnector::compile(Arc::clone(spec)).unwrap();
    let integration =
        Integration::configure(spec, "user-1", &options.integration_id, &options.config).unwrap();
    let registry = RateLimitRegistry::default();
    let http = HttpClient::new(
        spec.allowed_hosts.clone(),
        spec.retry.clone(),
        registry.gate(spec, &integration.integration_id),
        ClientOptions {
            timeout: options.timeout,
            transport: Transport::Sandbox(server.clone()),
            max_body: spec.limits.max_body.get(),
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
    let mut sync = SyncRun::new(
        &connector,
        &integration,
        &http,
        &auth,
        &recorder,
        sink.clone(),
    );
    if let Some(blobs) = options.blobs {
        sync = sync.with_blobs(blobs);
    }
    let result = sync.run(&options.streams).await;
    (result, recorder)
}

/// Imports `export` with every archive stream of `spec`, as `integration-1` of `user-1`.
pub async fn import<S: Sink>(
    spec: &Arc<ConnectorSpec>,
    export: &Arc<engine::source::archive::Export>,
    sink: &S,
) -> (Result<RunReport, SyncError>, Recorder) {
    import_with_blobs(spec, export, sink, None).await
}

/// [`import`], copying the files that are records' content (`content.entry`) into `blobs`.
pub async fn import_with_blobs<S: Sink>(
    spec: &Arc<ConnectorSpec>,
    export: &Arc<engine::source::archive::Export>,
    sink: &S,
    blobs: Option<&engine::blobs::BlobStore>,
) -> (Result<RunReport, SyncError>, Recorder) {
    let connector = CompiledConnector::compile(Arc::clone(spec)).unwrap();
    let integration =
        Integration::configure(spec, "user-1", "integration-1", &serde_json::Map::new()).unwrap();
    let http = HttpClient::for_connector(
        spec,
        engine::ratelimit::RateGate::unlimited(),
        Transport::Direct,
    )
    .unwrap();
    let recorder = Recorder::default();
    let mut run = SyncRun::new(
        &connector,
        &integration,
        &http,
        &engine::http::NoCredentials,
        &recorder,
        sink.clone(),
    );
    if let Some(blobs) = blobs {
        run = run.with_blobs(blobs.clone());
    }
    let result = run.import(Arc::clone(export), &[]).await;
    (result, recorder)
}

/// Opens an export (its parts) with the default limits.
pub fn open_export(
    paths: &[&std::path::Path],
) -> Result<Arc<engine::source::archive::Export>, engine::source::archive::ArchiveError> {
    let paths: Vec<PathBuf> = paths.iter().map(|path| path.to_path_buf()).collect();
    engine::source::archive::Export::open(&paths, engine::source::archive::ArchiveLimits::default())
        .map(Arc::new)
}

/// A store for one test, on one backend; the SQLite file lives as long as this does.
pub struct TestStore {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The store.
    pub store: engine::store::AnyStore,
    /// Where it is (a file path or a URL), for `connector --db`.
    pub location: String,
    _dir: Option<tempfile::TempDir>,
}

/// The stores a storage test runs against: a fresh SQLite file, and a fresh PostgreSQL database
/// when `HYPERNET_TEST_POSTGRES` names a server (`eval "$(bash .ci/postgres)"` sets it up). With
/// `HYPERNET_REQUIRE_POSTGRES=1` (as in CI), a missing server fails the test instead of skipping
/// the PostgreSQL half.
pub async fn test_stores(name: &str) -> Vec<TestStore> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(format!("{name}.sqlite"));
    let location = path.to_string_lossy().into_owned();
    let sqlite = engine::store::AnyStore::open(&location)
        .await
        .expect("SQLite store");
    let mut stores = vec![TestStore {
        backend: "sqlite",
        store: sqlite,
        location,
        _dir: Some(dir),
    }];
    if let Some(location) = empty_postgres(name).await {
        {
            let store = engine::store::AnyStore::open(&location)
                .await
                .expect("PostgreSQL store");
            stores.push(TestStore {
                backend: "postgres",
                store,
                location,
                _dir: None,
            });
        }
    }
    stores
}

/// The URL of a new, empty PostgreSQL database for one test, when `HYPERNET_TEST_POSTGRES`
/// names a server; `None` (with a note) when it does not. With `HYPERNET_REQUIRE_POSTGRES=1`
/// (as in CI), a missing server fails the test instead.
pub async fn empty_postgres(name: &str) -> Option<String> {
    match std::env::var("HYPERNET_TEST_POSTGRES") {
        Ok(admin) => Some(postgres_database(&admin, name).await),
        Err(_) if std::env::var("HYPERNET_REQUIRE_POSTGRES").is_ok_and(|value| value == "1") => {
            panic!("HYPERNET_REQUIRE_POSTGRES=1 but HYPERNET_TEST_POSTGRES is not set");
        }
        Err(_) => {
            eprintln!(
                "note: {name}: HYPERNET_TEST_POSTGRES is not set; PostgreSQL half skipped (see README)"
            );
            None
        }
    }
}

/// Creates an empty database for one test on the server at `admin`; returns its URL.
async fn postgres_database(admin: &str, name: &str) -> String {
    use sqlx::Connection;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let database = format!(
        "hn_test_{}_{}_{serial}",
        name.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(30)
            .collect::<String>()
            .to_lowercase(),
        std::process::id()
    );
    let mut connection = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to HYPERNET_TEST_POSTGRES");
    // Databases are not dropped after a test (to look at after a failure), and process ids
    // come round again on a server that outlives many runs: one of a run long gone may stand
    // under this name.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    )))
    .execute(&mut connection)
    .await
    .expect("drop a test database of an earlier run");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{database}\""
    )))
    .execute(&mut connection)
    .await
    .expect("create a test database");
    let mut url = url::Url::parse(admin).expect("HYPERNET_TEST_POSTGRES is a URL");
    url.set_path(&database);
    url.to_string()
}

/// Every file under `folder`, as (path inside, bytes), sorted.
pub fn files_of(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut folders = vec![folder.to_path_buf()];
    while let Some(current) = folders.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let inside = path
                    .strip_prefix(folder)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                files.push((inside, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// A zip of `files`, deflated, as the providers' export tools write them.
pub fn zip_of(files: &[(String, Vec<u8>)], path: &Path) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        zip.start_file(name.as_str(), options).unwrap();
        std::io::Write::write_all(&mut zip, bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// A blob store a test writes into, and what keeps it alive.
pub struct TestBlobs {
    /// `folder` or `s3`.
    pub backend: &'static str,
    /// The store.
    pub blobs: engine::blobs::BlobStore,
    /// Where it is, as `--blobs` takes it.
    pub location: engine::blobs::BlobLocation,
    _dir: Option<tempfile::TempDir>,
}

/// The blob stores a test runs against: a fresh folder, and a fresh prefix in the S3-compatible
/// bucket `HYPERNET_TEST_S3` names (`eval "$(bash .ci/s3)"` starts one). With
/// `HYPERNET_REQUIRE_S3=1` (as in CI), a missing server fails the test instead of skipping.
pub fn test_blob_stores(name: &str) -> Vec<TestBlobs> {
    use engine::blobs::{BlobLocation, BlobStore};
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = BlobLocation::Folder(dir.path().join("blobs"));
    let mut stores = vec![TestBlobs {
        backend: "folder",
        blobs: BlobStore::open(&folder).expect("folder blob store"),
        location: folder,
        _dir: Some(dir),
    }];
    match std::env::var("HYPERNET_TEST_S3") {
        Ok(url) => {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let BlobLocation::S3(mut s3) = BlobLocation::parse(&url).expect("HYPERNET_TEST_S3")
            else {
                panic!("HYPERNET_TEST_S3 is not an s3:// URL: {url}");
            };
            s3.prefix = format!("{name}-{}-{serial}", std::process::id());
            let location = BlobLocation::S3(s3);
            stores.push(TestBlobs {
                backend: "s3",
                blobs: BlobStore::open(&location).expect("S3 blob store"),
                location,
                _dir: None,
            });
        }
        Err(_) if std::env::var("HYPERNET_REQUIRE_S3").is_ok_and(|value| value == "1") => {
            panic!("HYPERNET_REQUIRE_S3=1 but HYPERNET_TEST_S3 is not set");
        }
        Err(_) => {
            eprintln!("note: {name}: HYPERNET_TEST_S3 is not set; S3 half skipped (see README)")
        }
    }
    stores
}

/// What one command timed by [`timed`] did.
pub struct Timed {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Peak resident memory, in MiB.
    pub peak_rss_mib: f64,
    /// CPU time, user and system, in seconds.
    pub cpu_seconds: f64,
    /// What it printed.
    pub output: String,
}

/// The release `connector` binary of this workspace (the command a person runs), for the
/// benches; they ask for it to be built first rather than build it themselves.
/// `HYPERNET_CONNECTOR_BINARY` names another (a build from before a change, to compare the two
/// interleaved in one session).
pub fn connector_binary() -> std::path::PathBuf {
    let binary = match std::env::var_os("HYPERNET_CONNECTOR_BINARY") {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/connector")
        }
    };
    assert!(
        binary.exists(),
        "build the release binary first: cargo build --release -p hypernet-cli (or name one in HYPERNET_CONNECTOR_BINARY)"
    );
    binary
}

/// Runs `program` under `/usr/bin/time -v` (wall time and peak RSS, for the benches), after the
/// dirty pages of what ran before are written out: a run that follows a 2 GB database
/// otherwise pays for its flush (12.6-12.9 s for the 2M-record Apple Health import after
/// `sync`; 11.9-17.1 s without).
pub fn timed(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Timed {
    let program = program.as_ref();
    let _ = std::process::Command::new("sync").status();
    let output = std::process::Command::new("/usr/bin/time")
        .arg("-v")
        .arg(program)
        .args(args)
        .output()
        .expect("run /usr/bin/time -v (apt-get install time)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{stderr}",
        program.to_string_lossy()
    );
    let field = |name: &str| -> String {
        stderr
            .lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let seconds = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")
        .split(':')
        .map(|part| part.parse::<f64>().unwrap_or(0.0))
        .fold(0.0, |total, part| total * 60.0 + part);
    let peak_kib: f64 = field("Maximum resident set size (kbytes):")
        .parse()
        .unwrap_or(0.0);
    let cpu_seconds = ["User time (seconds):", "System time (seconds):"]
        .iter()
        .map(|name| field(name).parse::<f64>().unwrap_or(0.0))
        .sum();
    Timed {
        seconds,
        peak_rss_mib: peak_kib / 1024.0,
        cpu_seconds,
        output: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}
