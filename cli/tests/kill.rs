//! Crash safety: a real `connector sync` process is killed with SIGKILL at several points (in the
//! middle of a page body, between pages, during a substream), restarted, and its final table is
//! compared with an uninterrupted run's: the same rows, no duplicates, no gaps. On SQLite, and on
//! PostgreSQL when the tests have a server (see the README).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::state::PageCursor;
use engine::store::Sink;
use hypernet_tests::{TestStore, connectors_folder, files_of, serve, test_stores};
use serde_json::{Value, json};
use tokio::sync::Notify;

const ALBUMS: usize = 24;
const PER_PAGE: usize = 3;

const SPEC: &str = r#"id: kill_api
name: Kill test API
version: 1.0.0
category: media
description: Albums with photos, for the crash-safety test.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
retry:
  max_attempts: 1
streams:
  albums:
    model: note
    request: { path: /albums, query: { pageSize: "3" } }
    paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
    records: $.albums[*]
    id: $.id
    map:
      title: $.title
  photos:
    model: note
    parent: { stream: albums, fields: { album_id: $.id } }
    request: { path: "/albums/{{ parent.album_id }}/photos" }
    records: $.photos[*]
    id: $.id
    map:
      title: $.title
      content: "{{ parent.album_id }}"
"#;

/// Where the provider stops answering, so the test can kill the process there.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hang {
    /// Half of the body of the albums page starting at this offset, then nothing.
    MidPage(usize),
    /// No answer at all to the albums page starting at this offset.
    BeforePage(usize),
    /// No answer to this album's photos.
    Child(usize),
}

/// When the test kills the process once the provider hangs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kill {
    /// At once, whatever the writer is doing: the resume point may be behind the hung page by
    /// what the writer had not yet committed.
    AtOnce,
    /// Once the writer has committed the checkpoint of everything before the hung page (the
    /// fetcher is stuck, so the queue drains): the resume point must be the hung page itself.
    Settled,
}

#[derive(Default)]
struct Provider {
    hang: Option<Hang>,
    requests: Vec<String>,
}

struct Shared {
    provider: Mutex<Provider>,
    hung: Notify,
}

fn albums_page(start: usize) -> Value {
    let end = (start + PER_PAGE).min(ALBUMS);
    let albums: Vec<Value> = (start..end)
        .map(|index| json!({"id": format!("a{index}"), "title": format!("Album {index}")}))
        .collect();
    let mut page = json!({"albums": albums});
    if end < ALBUMS {
        page["nextPageToken"] = json!(end.to_string());
    }
    page
}

/// A response that never completes.
fn hang_forever(prefix: Vec<u8>) -> Response {
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(prefix)])
        .chain(futures_util::stream::pending());
    use futures_util::StreamExt;
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .map(IntoResponse::into_response)
        .unwrap_or_else(|_| ().into_response())
}

async fn albums(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let start: usize = query
        .get("pageToken")
        .map_or(0, |token| token.parse().unwrap_or(0));
    let hang = {
        let mut provider = shared.provider.lock().unwrap();
        provider.requests.push(format!("albums@{start}"));
        provider.hang
    };
    let body = serde_json::to_vec(&albums_page(start)).unwrap_or_default();
    match hang {
        Some(Hang::MidPage(at)) if at == start => {
            shared.hung.notify_one();
            hang_forever(body[..body.len() / 2].to_vec())
        }
        Some(Hang::BeforePage(at)) if at == start => {
            shared.hung.notify_one();
            hang_forever(vec![])
        }
        _ => ([("content-type", "application/json")], body).into_response(),
    }
}

async fn photos(State(shared): State<Arc<Shared>>, UrlPath(album): UrlPath<String>) -> Response {
    let index: usize = album.trim_start_matches('a').parse().unwrap_or(0);
    let hang = {
        let mut provider = shared.provider.lock().unwrap();
        provider.requests.push(format!("photos@{album}"));
        provider.hang
    };
    if hang == Some(Hang::Child(index)) {
        shared.hung.notify_one();
        return hang_forever(vec![]);
    }
    let photos: Vec<Value> = (0..2)
        .map(|photo| json!({"id": format!("{album}-p{photo}"), "title": format!("Photo {photo} of {album}")}))
        .collect();
    axum::Json(json!({"photos": photos})).into_response()
}

async fn provider() -> (Arc<Shared>, url::Url) {
    let shared = Arc::new(Shared {
        provider: Mutex::new(Provider::default()),
        hung: Notify::new(),
    });
    let app = axum::Router::new()
        .route("/albums", get(albums))
        .route("/albums/{album}/photos", get(photos))
        .with_state(Arc::clone(&shared));
    (shared, serve(app).await)
}

fn sync(root: &Path, via: &url::Url, db: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_connector"))
        .args(["sync", "kill_api", "--json", "--connectors-root"])
        .arg(root)
        .args(["--via", via.as_str(), "--db", db, "--key-file"])
        .arg(root.join("hypernet.key"))
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start connector sync")
}

async fn finish(child: Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait for connector sync")
}

async fn table(test: &TestStore) -> Vec<(String, String, Value, bool)> {
    test.store.dump("kill_api").await.expect("dump")
}

/// The albums page the stored checkpoint resumes from (0 before the first is stored).
async fn resume_offset(test: &TestStore) -> usize {
    let state = test
        .store
        .checkpoint("kill_api:local", "albums", "")
        .await
        .expect("read the checkpoint");
    match state
        .and_then(|state| state.resume)
        .map(|resume| resume.page)
    {
        Some(PageCursor::Token(token)) => token.parse().expect("an offset token"),
        _ => 0,
    }
}

/// Waits for `future`; a minute without it fails the test, saying `what` never happened.
async fn within_a_minute(future: impl std::future::Future<Output = ()>, what: String) {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what}"));
}

/// Waits until the stored checkpoint resumes from `offset`.
async fn settle(test: &TestStore, offset: usize, hang: Hang) {
    let settled = async {
        while resume_offset(test).await != offset {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let what = format!(
        "{}: {hang:?}: the checkpoint never reached page {offset}",
        test.backend
    );
    within_a_minute(settled, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_at_any_point_resumes_to_the_same_table() {
    let root = connectors_folder(&[("kill_api", SPEC)]);
    let (shared, via) = provider().await;

    for reference in test_stores("kill_reference").await {
        let output = finish(sync(root.path(), &via, &reference.location)).await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = table(&reference).await;
        assert_eq!(
            expected.len(),
            ALBUMS * 3,
            "{}: albums and two photos each",
            reference.backend
        );
        shared.provider.lock().unwrap().requests.clear();

        for (hang, kill) in [
            (Hang::MidPage(6), Kill::Settled),
            (Hang::BeforePage(21), Kill::AtOnce),
            (Hang::Child(7), Kill::Settled),
            (Hang::MidPage(0), Kill::AtOnce),
        ] {
            let hung_page = match hang {
                Hang::MidPage(at) | Hang::BeforePage(at) => at,
                Hang::Child(album) => album / PER_PAGE * PER_PAGE,
            };
            let test = test_stores("kill")
                .await
                .into_iter()
                .find(|test| test.backend == reference.backend)
                .unwrap();
            shared.provider.lock().unwrap().hang = Some(hang);
            let hung = shared.hung.notified();
            let mut child = sync(root.path(), &via, &test.location);
            let what = format!(
                "{}: {hang:?}: the sync never reached the point",
                test.backend
            );
            within_a_minute(hung, what).await;
            if kill == Kill::Settled {
                settle(&test, hung_page, hang).await;
            }
            child.kill().expect("SIGKILL");
            let killed = finish(child).await;
            assert!(!killed.status.success());
            let partial = table(&test).await.len();
            assert!(
                partial < expected.len(),
                "{}: {hang:?}: killed before the end",
                test.backend
            );

            shared.provider.lock().unwrap().hang = None;
            shared.provider.lock().unwrap().requests.clear();
            let output = finish(sync(root.path(), &via, &test.location)).await;
            assert!(
                output.status.success(),
                "{}: {hang:?}: {}",
                test.backend,
                String::from_utf8_lossy(&output.stderr)
            );
            let after = table(&test).await;
            let ids = |rows: &[(String, String, Value, bool)]| -> Vec<String> {
                rows.iter()
                    .map(|row| format!("{}{}", row.1, if row.3 { " (deleted)" } else { "" }))
                    .collect()
            };
            assert_eq!(
                ids(&after),
                ids(&expected),
                "{}: {hang:?}: the same rows as the uninterrupted run",
                test.backend
            );
            assert!(
                after == expected,
                "{}: {hang:?}: the same data as the uninterrupted run",
                test.backend
            );

            // It resumed from the killed run's last committed checkpoint, not from the first page.
            let restarted = std::mem::take(&mut shared.provider.lock().unwrap().requests);
            let resumed_at: usize = restarted
                .first()
                .and_then(|request| request.strip_prefix("albums@"))
                .and_then(|offset| offset.parse().ok())
                .unwrap_or(usize::MAX);
            // Killed at once, the run loses what its writer had not committed: while pages keep
            // coming it commits every 8,192 records or second, which here may be the whole run
            // so far. Settled, the fetcher is stuck, the queue drained and everything committed.
            let earliest = match kill {
                Kill::Settled => hung_page,
                Kill::AtOnce => 0,
            };
            assert!(
                (earliest..=hung_page).contains(&resumed_at) && resumed_at.is_multiple_of(PER_PAGE),
                "{}: {hang:?}: resumed at {resumed_at}: {restarted:?}",
                test.backend
            );

            let runs = test.store.runs("kill_api:local").await.unwrap();
            let statuses: Vec<&str> = runs.iter().map(|run| run.status.as_str()).collect();
            assert_eq!(
                statuses,
                ["succeeded", "running"],
                "{}: the killed run stays marked running",
                test.backend
            );
        }
    }
}

const EXPORT_SPEC: &str = r#"id: kill_export
name: Kill test export
version: 1.0.0
category: music
description: Plays from a data export, for the crash-safety test of imports.
docs_url: https://example.com/export
streams:
  plays:
    model: listening_event
    archive:
      entries: ["History/plays_*.json"]
      split: array
      complete: true
    records: $[*]
    id: "{{ record.uri }}@{{ record.ts }}"
    map:
      track_title: $.title
      played_at: $.ts
      track_uri: $.uri
      played_ms: $.ms
"#;

/// Files in the export, and plays in each: enough that a debug build takes seconds, so the
/// test can kill it in the middle, and that the writer, which commits every 8,192 records while
/// pages keep coming, commits inside each file.
const EXPORT_FILES: usize = 3;
const PLAYS_PER_FILE: usize = 20_000;

/// An unpacked export of `EXPORT_FILES` JSON arrays of plays, with Spotify-like random ids.
fn export_folder() -> tempfile::TempDir {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().expect("temp dir");
    let history = dir.path().join("History");
    std::fs::create_dir_all(&history).expect("export folder");
    let mut random = rand::rngs::StdRng::seed_from_u64(23);
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for file in 0..EXPORT_FILES {
        let plays: Vec<Value> = (0..PLAYS_PER_FILE)
            .map(|play| {
                let id: String = (0..22)
                    .map(|_| BASE62[random.random_range(0..BASE62.len())] as char)
                    .collect();
                let second = (file * PLAYS_PER_FILE + play) as i64 * 200;
                let ts = jiff::Timestamp::from_second(1_500_000_000 + second).expect("a time");
                json!({
                    "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    "uri": format!("spotify:track:{id}"),
                    "title": format!("Track {file}-{play}"),
                    "ms": random.random_range(1_000..400_000),
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&plays).expect("JSON");
        std::fs::write(history.join(format!("plays_{file}.json")), text).expect("write");
    }
    dir
}

fn import(root: &Path, export: &Path, db: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_connector"))
        .args(["import", "kill_export"])
        .arg(export)
        .args(["--json", "--connectors-root"])
        .arg(root)
        .args(["--db", db, "--key-file"])
        .arg(root.join("hypernet.key"))
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start connector import")
}

/// Where the stored checkpoint resumes inside the export: the entry and the documents read.
async fn export_position(test: &TestStore) -> Option<(u64, u64)> {
    let state = test
        .store
        .checkpoint("kill_export:local", "plays", "")
        .await
        .expect("read the checkpoint")?;
    match state.resume?.page {
        PageCursor::Entry(at) => Some((at.entry, at.documents)),
        _ => None,
    }
}

/// An import killed with SIGKILL in the middle of one file of the export, then of the next,
/// resumes inside the file where its last committed checkpoint stands: the same table as an
/// uninterrupted import, nothing read twice, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_inside_the_export_resumes_there() {
    let root = connectors_folder(&[("kill_export", EXPORT_SPEC)]);
    let export = export_folder();
    let total = EXPORT_FILES * PLAYS_PER_FILE;
    for reference in test_stores("kill_import_reference").await {
        let output = finish(import(root.path(), export.path(), &reference.location)).await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let expected = reference.store.dump("kill_export").await.expect("dump");
        assert_eq!(expected.len(), total, "{}", reference.backend);

        for entry in [0_u64, 1] {
            let test = test_stores("kill_import")
                .await
                .into_iter()
                .find(|test| test.backend == reference.backend)
                .unwrap();
            let mut child = import(root.path(), export.path(), &test.location);
            let inside = async {
                loop {
                    if let Some((at, documents)) = export_position(&test).await
                        && at == entry
                        && documents > 0
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let what = format!(
                "{}: the import never stood inside entry {entry}",
                test.backend
            );
            within_a_minute(inside, what).await;
            child.kill().expect("SIGKILL");
            let killed = finish(child).await;
            assert!(!killed.status.success(), "{}: killed", test.backend);
            let partial = test.store.dump("kill_export").await.expect("dump").len();
            assert!(
                0 < partial && partial < total,
                "{}: entry {entry}: killed in the middle ({partial} of {total})",
                test.backend
            );

            let output = finish(import(root.path(), export.path(), &test.location)).await;
            assert!(
                output.status.success(),
                "{}: {}",
                test.backend,
                String::from_utf8_lossy(&output.stderr)
            );
            let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
            // Resumed at the committed checkpoint: every play not yet stored is new, and none
            // stored before the kill was read again.
            assert_eq!(
                (summary["new"].as_u64(), summary["unchanged"].as_u64()),
                (Some((total - partial) as u64), Some(0)),
                "{}: entry {entry}: {summary}",
                test.backend
            );
            let after = test.store.dump("kill_export").await.expect("dump");
            assert!(
                after == expected,
                "{}: entry {entry}: the same table as the uninterrupted import",
                test.backend
            );
        }
    }
}

const MEDIA_SPEC: &str = r#"id: kill_media
name: Kill test media
version: 1.0.0
category: media
description: Photos with their bytes, for the crash-safety test of downloads.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com, media.example.com]
retry:
  max_attempts: 1
# One download at a time, so that the photos before the one that hangs are stored when the
# process is killed (with several at once, those after it may be too).
limits:
  max_concurrent_downloads: 1
streams:
  photos:
    model: media
    request: { path: /photos }
    records: $.photos[*]
    id: $.id
    map:
      media_type: photo
      file_path: $.url
      title: $.name
    content:
      request: { path: "https://media.example.com/{{ record.id }}" }
      content_type: image/jpeg
"#;

const PHOTOS: usize = 6;

/// The bytes of photo `index`: 300 KB, different for each.
fn photo_bytes(index: usize) -> Vec<u8> {
    (0..300_000)
        .map(|at| ((at * 7 + index * 13) % 251) as u8)
        .collect()
}

#[derive(Default)]
struct Media {
    /// Downloads asked, by photo.
    fetched: Vec<usize>,
    /// The photo whose download hangs half-way (the process is killed there).
    hang: Option<usize>,
}

async fn media_provider() -> (Arc<(Mutex<Media>, Notify)>, url::Url) {
    let shared = Arc::new((Mutex::new(Media::default()), Notify::new()));
    let listing = || async {
        let photos: Vec<Value> = (0..PHOTOS)
            .map(|index| json!({"id": format!("p{index}"), "name": format!("IMG_{index:04}.JPG"), "url": format!("https://example.com/p{index}")}))
            .collect();
        axum::Json(json!({"photos": photos}))
    };
    let bytes = |State(shared): State<Arc<(Mutex<Media>, Notify)>>,
                 UrlPath(id): UrlPath<String>| async move {
        let index: usize = id.trim_start_matches('p').parse().unwrap_or(0);
        let hang = {
            let mut media = shared.0.lock().unwrap();
            media.fetched.push(index);
            media.hang
        };
        let bytes = photo_bytes(index);
        if hang == Some(index) {
            shared.1.notify_one();
            let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(
                bytes[..bytes.len() / 2].to_vec(),
            )])
            .chain(futures_util::stream::pending());
            use futures_util::StreamExt;
            return Response::builder()
                .header("content-length", bytes.len().to_string())
                .body(Body::from_stream(stream))
                .map(IntoResponse::into_response)
                .unwrap_or_else(|_| ().into_response());
        }
        bytes.into_response()
    };
    let app = axum::Router::new()
        .route("/photos", get(listing))
        .route("/{id}", get(bytes))
        .with_state(Arc::clone(&shared));
    (shared, serve(app).await)
}

fn sync_media(root: &Path, via: &url::Url, db: &str, blobs: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_connector"))
        .args(["sync", "kill_media", "--json", "--connectors-root"])
        .arg(root)
        .args(["--via", via.as_str(), "--db", db, "--blobs"])
        .arg(blobs)
        .arg("--key-file")
        .arg(root.join("hypernet.key"))
        .env_remove("DATABASE_URL")
        .env_remove("HYPERNET_BLOBS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start connector sync")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_inside_its_downloads_resumes_them_without_fetching_again() {
    let root = connectors_folder(&[("kill_media", MEDIA_SPEC)]);
    for test in test_stores("kill_downloads").await {
        let blobs = tempfile::tempdir().unwrap();
        let (shared, via) = media_provider().await;
        // The fourth photo's download hangs half-way: the first three are stored by then.
        shared.0.lock().unwrap().hang = Some(3);
        let child = sync_media(root.path(), &via, &test.location, blobs.path());
        within_a_minute(
            shared.1.notified(),
            format!("{}: the download never hung", test.backend),
        )
        .await;
        // Killed once the hanging download is being staged (its answer has begun).
        let staging = blobs.path().join(".staging");
        within_a_minute(
            async {
                while files_of(&staging).is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            format!("{}: the hanging download was never staged", test.backend),
        )
        .await;
        let mut child = child;
        child.kill().expect("kill connector sync");
        let _ = finish(child).await;

        // Killed: every record stored, three photos' bytes, the rest owed, one half staged.
        let stored = |blobs: &Path| files_of(&blobs.join("b3")).len();
        assert_eq!(
            table_of(&test, "kill_media").await.len(),
            PHOTOS,
            "{}",
            test.backend
        );
        assert_eq!(stored(blobs.path()), 3, "{}", test.backend);
        let staged: Vec<String> = files_of(&blobs.path().join(".staging"))
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(staged.len(), 1, "{}: {staged:?}", test.backend);

        // Restarted: the three owed are downloaded, the three stored are not asked again.
        shared.0.lock().unwrap().hang = None;
        shared.0.lock().unwrap().fetched.clear();
        let output = finish(sync_media(root.path(), &via, &test.location, blobs.path())).await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
        assert_eq!(summary["contents"], 3, "{}: {summary}", test.backend);
        let mut fetched = shared.0.lock().unwrap().fetched.clone();
        fetched.sort_unstable();
        assert_eq!(fetched, vec![3, 4, 5], "{}", test.backend);
        let mut on_disk: Vec<Vec<u8>> = files_of(&blobs.path().join("b3"))
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect();
        on_disk.sort();
        let mut want: Vec<Vec<u8>> = (0..PHOTOS).map(photo_bytes).collect();
        want.sort();
        assert!(
            on_disk == want,
            "{}: the stored bytes are not the photos",
            test.backend
        );
    }
}

async fn table_of(test: &TestStore, connector: &str) -> Vec<(String, String, Value, bool)> {
    test.store.dump(connector).await.expect("dump")
}
