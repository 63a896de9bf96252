//! Downloading media into the blob store, the way a person does: the release `connector sync
//! google_photos` (the real connector: its listing, then each item's `baseUrl=d`) against a
//! loopback server shaped like Google's (`--via`), timed with `/usr/bin/time -v` (wall time and
//! peak RSS); beside it, `curl` copying the same bytes over loopback to disk (one process, one
//! connection, the files one after the other), the floor any downloader stands on.
//!
//! Each item is a photo of 1 to 5 MB (sizes drawn at random, the same every run), its bytes
//! generated as they are sent, different for every item (no two share a blob). Ids are Google's
//! shape: `AF1Qip` and 38 random base64url characters, in random order.
//!
//! ```sh
//! cargo build --release -p hypernet-cli
//! cargo bench -p hypernet-tests --bench media                  # 100 and 1,000 files
//! cargo bench -p hypernet-tests --bench media -- --files 3000
//! ```
//!
//! The connector's own limit (10,000 requests a day for the app) bounds one sync to fewer than
//! 10,000 items; the bench stays below it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hypernet_tests::{Timed, timed};
use rand::{Rng, SeedableRng};

/// Items per listing page, as the connector asks (`pageSize=100`).
const PAGE: usize = 100;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The library: ids in Google's shape and each photo's size, in listing order.
struct Library {
    items: Vec<(String, u64)>,
}

impl Library {
    fn new(files: usize) -> Self {
        let mut random = rand::rngs::StdRng::seed_from_u64(24);
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let items = (0..files)
            .map(|_| {
                let tail: String = (0..38)
                    .map(|_| ALPHABET[random.random_range(0..ALPHABET.len())] as char)
                    .collect();
                let size = random.random_range(1_000_000..=5_000_000u64);
                (format!("AF1Qip{tail}"), size)
            })
            .collect();
        Self { items }
    }

    fn bytes(&self) -> u64 {
        self.items.iter().map(|(_, size)| size).sum()
    }

    /// One page of `mediaItems.list`, as Google answers it.
    fn page(&self, token: Option<&str>) -> serde_json::Value {
        let start: usize = token.and_then(|token| token.parse().ok()).unwrap_or(0);
        let end = (start + PAGE).min(self.items.len());
        let items: Vec<serde_json::Value> = self.items[start..end]
            .iter()
            .enumerate()
            .map(|(offset, (id, _))| {
                serde_json::json!({
                    "id": id,
                    "productUrl": format!("https://photos.google.com/lr/photo/{id}"),
                    "baseUrl": format!("https://lh3.googleusercontent.com/lr/{id}"),
                    "mimeType": "image/jpeg",
                    "filename": format!("PXL_20240601_{:09}.jpg", start + offset),
                    "mediaMetadata": {
                        "creationTime": "2024-06-01T05:12:31.482Z",
                        "width": "4032",
                        "height": "3024",
                        "photo": {"cameraMake": "Google", "cameraModel": "Pixel 8"}
                    }
                })
            })
            .collect();
        let mut page = serde_json::json!({ "mediaItems": items });
        if end < self.items.len() {
            page["nextPageToken"] = end.to_string().into();
        }
        page
    }
}

/// A photo's bytes, made as they are sent: its id first (so no two photos are alike), then
/// pseudo-random bytes, 64 KiB at a time.
fn photo(id: &str, size: u64) -> Body {
    let seed = id.bytes().fold(0u64, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(u64::from(byte))
    });
    let mut block = vec![0u8; 64 << 10];
    let mut state = seed | 1;
    for chunk in block.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    block[..id.len()].copy_from_slice(id.as_bytes());
    let block = bytes::Bytes::from(block);
    let chunks = (0..size.div_ceil(block.len() as u64)).map(move |index| {
        let start = index * block.len() as u64;
        let length = (size - start).min(block.len() as u64) as usize;
        Ok::<_, std::io::Error>(block.slice(..length))
    });
    Body::from_stream(futures_util::stream::iter(chunks))
}

async fn list(
    State(library): State<Arc<Library>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    axum::Json(library.page(query.get("pageToken").map(String::as_str))).into_response()
}

async fn content(State(library): State<Arc<Library>>, UrlPath(file): UrlPath<String>) -> Response {
    let id = file.trim_end_matches("=d");
    match library.items.iter().find(|(item, _)| item == id) {
        Some((id, size)) => (
            [
                ("content-type", "image/jpeg".to_owned()),
                ("content-length", size.to_string()),
            ],
            photo(id, *size),
        )
            .into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serves `library` on a loopback port from a thread of its own; returns its base URL.
fn serve(library: Arc<Library>) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let router = Router::new()
                .route("/v1/mediaItems", get(list))
                .route("/lr/{file}", get(content))
                .with_state(library);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a port");
            sender
                .send(listener.local_addr().expect("an address"))
                .expect("the bench waits");
            axum::serve(listener, router).await.expect("the server");
        });
    });
    format!("http://{}", receiver.recv().expect("the server's address"))
}

fn row(what: &str, files: usize, bytes: u64, timed: &Timed) {
    println!(
        "| {what} | {files} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} |",
        bytes as f64 / 1e6,
        timed.seconds,
        bytes as f64 / 1e6 / timed.seconds.max(0.001),
        files as f64 / timed.seconds.max(0.001),
        timed.peak_rss_mib
    );
}

fn bench(files: usize) {
    let library = Arc::new(Library::new(files));
    let bytes = library.bytes();
    let base = serve(Arc::clone(&library));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).to_str().expect("UTF-8").to_owned();

    let binary = hypernet_tests::connector_binary();
    let connectors = workspace().join("connectors");
    let ours = timed(
        binary.to_str().expect("UTF-8"),
        &[
            "sync",
            "google_photos",
            "--via",
            &base,
            "--access-token",
            "bench",
            "--db",
            &path("bench.sqlite"),
            "--blobs",
            &path("blobs"),
            "--key-file",
            &path("key"),
            "--connectors-root",
            connectors.to_str().expect("UTF-8"),
            "--json",
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(&ours.output).expect("a JSON summary");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(summary["contents"], files, "{summary}");
    assert_eq!(summary["content_bytes"], bytes, "{summary}");
    row("connector sync google_photos", files, bytes, &ours);
    drop(std::fs::remove_dir_all(dir.path().join("blobs")));

    // curl: the same URLs, each to its own file, one after the other on one connection.
    let config = dir.path().join("curl.config");
    let mut text = String::new();
    std::fs::create_dir_all(dir.path().join("curl")).expect("a folder");
    for (index, (id, _)) in library.items.iter().enumerate() {
        text.push_str(&format!(
            "url = \"{base}/lr/{id}=d\"\noutput = \"{}\"\n",
            path(&format!("curl/{index}"))
        ));
    }
    std::fs::write(&config, text).expect("the curl config");
    let curl = timed(
        "curl",
        &[
            "--silent",
            "--fail",
            "--config",
            config.to_str().expect("UTF-8"),
        ],
    );
    row("curl (same bytes to disk)", files, bytes, &curl);
    println!(
        "connector sync took {:.2}× curl's time for {files} files",
        ours.seconds / curl.seconds.max(0.001)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let files = args
        .iter()
        .position(|arg| arg == "--files")
        .and_then(|at| args.get(at + 1))
        .and_then(|value| value.parse::<usize>().ok());
    println!("| tool | files | MB | seconds | MB/s | files/s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    match files {
        Some(files) => bench(files),
        None => {
            bench(100);
            bench(1000);
        }
    }
}
