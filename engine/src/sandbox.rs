//! The built-in sandbox: a connector's own fixtures stand in for its provider.
//!
//! Used by `connector test`, `connector sync --sandbox` and the service's sandbox mode. Nothing
//! about a provider is special-cased: every connector with `fixtures/` runs the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::account::Integration;
use crate::credentials::sandbox_authorizer;
use crate::events::Counters;
use crate::events::Observer;
use crate::http::{HttpClient, Transport};
use crate::ratelimit::RateLimitRegistry;
use crate::replay::{ReplayServer, load_fixtures};
use crate::run::{CompiledConnector, RunReport, SyncRun};
use crate::source::archive::{ArchiveLimits, Export};
use crate::spec::{self, ConnectorSpec};
use crate::store::{MemoryContents, MemorySink};

/// A connector's files.
#[derive(Debug, Clone)]
pub struct ConnectorFiles {
    /// The folder holding `connector.yaml`.
    pub folder: PathBuf,
    /// `connector.yaml`.
    pub spec: PathBuf,
}

impl ConnectorFiles {
    /// Finds a connector named as a path (its folder or spec file) or as an id under
    /// `connectors_root`.
    pub fn locate(name: &str, connectors_root: &Path) -> Result<Self, String> {
        let path = Path::new(name);
        let folder = if path.is_file() {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        } else if path.is_dir() {
            path.to_path_buf()
        } else {
            connectors_root.join(name)
        };
        let spec = folder.join("connector.yaml");
        if spec.is_file() {
            return Ok(Self { folder, spec });
        }
        // A mistyped id: the nearest connector under the root, if one is near.
        let ids: Vec<String> = std::fs::read_dir(connectors_root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.path().join("connector.yaml").is_file())
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let suggestion = crate::spec::did_you_mean(name, ids.iter().map(String::as_str))
            .map(|id| format!(" (did you mean `{id}`?)"))
            .unwrap_or_default();
        Err(format!(
            "no connector `{name}`{suggestion}: {} does not exist",
            spec.display()
        ))
    }

    /// The fixtures folder.
    pub fn fixtures(&self) -> PathBuf {
        self.folder.join("fixtures")
    }

    /// The snapshots folder.
    pub fn snapshots(&self) -> PathBuf {
        self.folder.join("snapshots")
    }
}

/// Config for a sandbox run: required values without defaults get a placeholder.
pub fn sandbox_config(spec: &ConnectorSpec) -> Map<String, Value> {
    spec.config
        .iter()
        .filter(|(_, field)| field.default.is_none())
        .map(|(name, _)| (name.clone(), Value::String(format!("sandbox-{name}"))))
        .collect()
}

/// A running replay of a connector's fixtures.
pub struct Sandbox {
    replay: ReplayServer,
}

impl Sandbox {
    /// Starts replaying the connector's fixtures, with a stand-in OAuth provider for `spec`.
    pub async fn start(files: &ConnectorFiles, spec: &ConnectorSpec) -> Result<Self, String> {
        let fixtures = load_fixtures(&files.fixtures()).map_err(|error| error.to_string())?;
        let oauth = crate::replay::SandboxOAuth::for_auth(&spec.auth);
        let replay = ReplayServer::start(fixtures, oauth)
            .await
            .map_err(|error| format!("cannot start the replay server: {error}"))?;
        Ok(Self { replay })
    }

    /// `url` as the sandbox serves it: its scheme, host and port replaced by the replay's, as
    /// the engine's sandbox transport does for requests. For the user's browser.
    pub fn local_url(&self, url: &url::Url) -> url::Url {
        let base = self.replay.base_url();
        let mut local = url.clone();
        let _ = local.set_scheme(base.scheme());
        let _ = local.set_host(base.host_str());
        let _ = local.set_port(base.port());
        local
    }

    /// Where the engine must send requests.
    pub fn transport(&self) -> Transport {
        Transport::Sandbox(self.replay.base_url())
    }

    /// The replay server, for its usage report.
    pub fn replay(&self) -> &ReplayServer {
        &self.replay
    }
}

/// One stream's result in a fixture test.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamOutcome {
    /// The stream.
    pub stream: String,
    /// `matches`, `new` (no snapshot yet), `differs`, or `accepted`.
    pub status: &'static str,
    /// A unified diff, snapshot → this run, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// The result of `connector test` for one connector.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    /// The connector.
    pub connector: String,
    /// Whether everything matched.
    pub passed: bool,
    /// Per stream.
    pub streams: Vec<StreamOutcome>,
    /// Fixtures never requested.
    pub unused_fixtures: Vec<String>,
    /// Requests without a fixture.
    pub unmatched_requests: Vec<String>,
    /// A sync error, if the run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

const SNAPSHOT_HEADER: &str = "---\nsource: connector test\nexpression: ";

/// Runs every stream of a connector against its fixtures and compares the mapped records with
/// the snapshots beside it; with `accept`, writes the new snapshots instead.
pub async fn test_connector(
    files: &ConnectorFiles,
    accept: bool,
    observer: &dyn Observer,
) -> Result<TestReport, String> {
    let spec = Arc::new(spec::load(&files.spec).map_err(|error| error.to_string())?);
    let connector =
        CompiledConnector::compile(Arc::clone(&spec)).map_err(|error| error.to_string())?;
    let sandbox = Sandbox::start(files, &spec).await?;
    let integration = Integration::configure(
        &spec,
        "sandbox-user",
        &format!("{}-sandbox", spec.id),
        &sandbox_config(&spec),
    )?;
    let registry = RateLimitRegistry::default();
    let http = HttpClient::for_connector(
        &spec,
        registry.gate(&spec, &integration.integration_id),
        sandbox.transport(),
    )
    .map_err(|error| error.to_string())?;
    let auth = sandbox_authorizer(&spec, &integration.credentials_context())?;
    let sink = MemorySink::default();
    // Records' content goes to a scratch blob store, gone with the test.
    let scratch = tempfile::tempdir().map_err(|error| format!("a scratch folder: {error}"))?;
    let blobs = crate::blobs::BlobStore::folder(&scratch.path().join("blobs"))
        .map_err(|error| error.to_string())?;
    // A connector that only reads exports has nothing to sync: its exports are imported below.
    let syncs = spec.streams.values().any(|stream| stream.request.is_some());
    // Every stream that reads the API, named: those with a session run only when named, and
    // the sandbox's fixtures stand in for the person who completes it.
    let api_roots: Vec<String> = spec
        .streams
        .iter()
        .filter(|(_, stream)| stream.request.is_some() && stream.parent.is_none())
        .map(|(name, _)| name.clone())
        .collect();
    let first = if !syncs {
        Ok(())
    } else {
        SyncRun::new(
            &connector,
            &integration,
            &http,
            auth.as_ref(),
            observer,
            sink.clone(),
        )
        .with_blobs(blobs.clone())
        .run(&api_roots)
        .await
        .and_then(RunReport::require_all)
    };
    // A second run over the same fixtures must change nothing: incremental streams send their
    // kept cursor or token (their fixtures answer with no changes), the others list the same
    // records again. Its requests count towards the fixtures' use.
    let second = Counters::default();
    let error = match first {
        Err(error) => Some(error),
        Ok(()) if !syncs => None,
        Ok(()) => SyncRun::new(
            &connector,
            &integration,
            &http,
            auth.as_ref(),
            &second,
            sink.clone(),
        )
        .with_blobs(blobs.clone())
        .run(&api_roots)
        .await
        .and_then(RunReport::require_all)
        .err(),
    };
    let mut error = error.map(|error| format!("{error}\n  what to do: {}", error.hint()));
    // The connector's archive streams: each fixture export imported twice (the second changes
    // nothing).
    if error.is_none() {
        error = import_fixture_exports(
            &files.fixtures().join("exports"),
            &connector,
            &integration,
            &http,
            [observer, &second],
            &sink,
            &blobs,
        )
        .await
        .err();
    }
    let written = second.totals().written;
    if error.is_none() && (written.new, written.updated, written.deleted) != (0, 0, 0) {
        error = Some(format!(
            "a second run over the same fixtures wrote records ({} new, {} updated, {} deleted)\n  what to do: give incremental requests fixtures that answer with no changes, and check that ids are stable",
            written.new, written.updated, written.deleted
        ));
    }
    let sink = sink.contents();
    // Content the fixtures could not give is a failure of the test: every download a record
    // owes has a fixture.
    if error.is_none()
        && let Some((due, errors)) = sink.owed.values().next()
    {
        error = Some(format!(
            "stream {}: the content of record {} was not downloaded: {}\n  what to do: add a fixture for its content request (`body_file` for bytes)",
            due.stream,
            due.id,
            errors.last().map_or("it was never tried", String::as_str)
        ));
    }

    if error.is_none() {
        error = dead_mappings(&spec, &sink);
    }

    let mut streams = Vec::new();
    for (name, stream) in &spec.streams {
        if stream.model.is_none() {
            continue;
        }
        let content = render_stream(name, &sink);
        let path = files.snapshots().join(format!("{name}.snap"));
        let previous = std::fs::read_to_string(&path)
            .ok()
            .map(|text| snapshot_body(&text).to_owned());
        let status = match (&previous, accept) {
            (Some(previous), _) if *previous == content => "matches",
            (_, true) => {
                std::fs::create_dir_all(files.snapshots()).map_err(|error| error.to_string())?;
                std::fs::write(&path, format!("{SNAPSHOT_HEADER}{name}\n---\n{content}"))
                    .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
                "accepted"
            }
            (None, false) => "new",
            (Some(_), false) => "differs",
        };
        let diff = (status == "differs" || status == "new").then(|| {
            let before = previous.as_deref().unwrap_or("");
            similar::TextDiff::from_lines(before, content.as_str())
                .unified_diff()
                .context_radius(3)
                .header(&format!("snapshots/{name}.snap"), "this run")
                .to_string()
        });
        streams.push(StreamOutcome {
            stream: name.clone(),
            status,
            diff,
        });
    }
    let unused_fixtures = sandbox.replay().unused();
    let unmatched_requests = sandbox.replay().unmatched();
    let passed = error.is_none()
        && unused_fixtures.is_empty()
        && unmatched_requests.is_empty()
        && streams
            .iter()
            .all(|outcome| matches!(outcome.status, "matches" | "accepted"));
    Ok(TestReport {
        connector: spec.id.clone(),
        passed,
        streams,
        unused_fixtures,
        unmatched_requests,
        error,
    })
}

/// The first mapped field of a stream with records that has a value in none of them, unless it
/// is marked `rare`: a path that never matches (a misspelt member, a field the provider sends
/// elsewhere) maps nothing, and a snapshot without the field shows nothing wrong.
fn dead_mappings(spec: &ConnectorSpec, sink: &MemoryContents) -> Option<String> {
    for (name, stream) in &spec.streams {
        let Some(records) = sink.records.get(name).filter(|records| !records.is_empty()) else {
            continue;
        };
        let data: Vec<Map<String, Value>> = records
            .iter()
            .filter_map(|record| record.data().ok())
            .collect();
        for (field, mapping) in &stream.map {
            if mapping.rare() || data.iter().any(|record| record.contains_key(field)) {
                continue;
            }
            return Some(format!(
                "stream {name}: `map.{field}` has a value in none of its {} records: its source never matches the fixtures\n  what to do: fix the source, add a fixture record in the provider's documented shape that has it, or mark the field `rare: true` if the provider only sends it in cases the fixtures cannot show",
                records.len()
            ));
        }
    }
    None
}

/// Imports each export in `folder` (the connector's `fixtures/exports/`: a folder in the
/// export's documented layout, or a zip), in name order, then again: the first import counted
/// into `passes[0]`, the second into `passes[1]`.
async fn import_fixture_exports(
    folder: &std::path::Path,
    connector: &CompiledConnector,
    integration: &Integration,
    http: &HttpClient,
    passes: [&dyn Observer; 2],
    sink: &MemorySink,
    blobs: &crate::blobs::BlobStore,
) -> Result<(), String> {
    let Ok(listing) = std::fs::read_dir(folder) else {
        return Ok(()); // no exports: the connector has no archive streams to test
    };
    let mut exports: Vec<std::path::PathBuf> = listing
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    exports.sort();
    for path in exports {
        let export = Arc::new(
            Export::open(std::slice::from_ref(&path), ArchiveLimits::default())
                .map_err(|error| error.to_string())?,
        );
        for counted in passes {
            SyncRun::new(
                connector,
                integration,
                http,
                &crate::http::NoCredentials,
                counted,
                sink.clone(),
            )
            .with_blobs(blobs.clone())
            .import(Arc::clone(&export), &[])
            .await
            .and_then(RunReport::require_all)
            .map_err(|error| {
                format!(
                    "importing {}: {error}\n  what to do: {}",
                    path.display(),
                    error.hint()
                )
            })?;
        }
    }
    Ok(())
}

/// The text after an insta-style header (`---` ... `---`).
fn snapshot_body(text: &str) -> &str {
    text.strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map_or(text, |(_, body)| body)
}

/// A stream's records and rejects as snapshot text, records ordered by id: substreams run
/// concurrently, so arrival order is not stable.
fn render_stream(name: &str, sink: &MemoryContents) -> String {
    let records: Vec<Value> = sink
        .records
        .get(name)
        .map(|records| {
            let mut records: Vec<_> = records.iter().collect();
            records.sort_by(|a, b| a.id.cmp(&b.id));
            records
                .into_iter()
                .map(|record| {
                    let mut data = record.data().unwrap_or_else(|error| {
                        serde_json::Map::from_iter([(
                            "unreadable".to_owned(),
                            Value::String(error.to_string()),
                        )])
                    });
                    if record.deleted {
                        data.insert("deleted".to_owned(), Value::Bool(true));
                    }
                    // The content kept for it, as the blob store keeps it: the record's own
                    // as `content`, its other parts by name under `parts`.
                    let stored = sink.content.range(
                        (name.to_owned(), record.id.clone(), String::new())
                            ..=(name.to_owned(), record.id.clone(), "\u{10ffff}".to_owned()),
                    );
                    let mut parts = serde_json::Map::new();
                    for ((_, _, part), stored) in stored {
                        let mut blob = serde_json::to_value(&stored.blob).unwrap_or_default();
                        if let (Some(name), Value::Object(blob)) = (&stored.file_name, &mut blob) {
                            blob.insert("file_name".to_owned(), Value::String(name.clone()));
                        }
                        if part.is_empty() {
                            data.insert("content".to_owned(), blob);
                        } else {
                            parts.insert(part.clone(), blob);
                        }
                    }
                    if !parts.is_empty() {
                        data.insert("parts".to_owned(), Value::Object(parts));
                    }
                    Value::Object(data)
                })
                .collect()
        })
        .unwrap_or_default();
    let rejects: Vec<Value> = sink
        .rejects
        .get(name)
        .map(|rejects| {
            let mut rejects: Vec<_> = rejects.iter().collect();
            rejects.sort_by(|a, b| (&a.id, &a.reason).cmp(&(&b.id, &b.reason)));
            rejects
                .into_iter()
                .map(|reject| serde_json::json!({"id": reject.id, "reason": reject.reason}))
                .collect()
        })
        .unwrap_or_default();
    let document = serde_json::json!({ "records": records, "rejects": rejects });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}
