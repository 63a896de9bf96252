//! Import throughput and memory: Google-Photos-shaped records (about 600 bytes of JSON each,
//! 100 per page) served from a loopback server process, imported with the real `google_photos`
//! spec through the real engine (HTTP, JSONPath, templates, conversions, model validation) into
//! an SQLite file.
//!
//! `cargo bench -p hypernet-tests --bench import` runs N = 10k, 100k and 1M, each in a fresh
//! process so that its peak RSS is its own, and prints a table. `-- --records N` runs one size;
//! `-- --store-only N` times the store's share alone (N mapped records written page by page);
//! `-- --sqlite-floor N` times SQLite alone writing the same rows (generated inside SQLite);
//! `-- --stages N` times decoding and mapping alone, on one thread.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use engine::account::Integration;
use engine::credentials::SANDBOX_ACCESS_TOKEN;
use engine::credentials::static_auth::StaticAuth;
use engine::events::Counters;
use engine::run::{CompiledConnector, SyncRun};
use engine::sandbox::sandbox_config;
use engine::store::SqliteStore;

/// The allocator of the `connector` binary, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAGE_SIZE: usize = 100;

/// The width of the page number inside every id; ids are `AKfRoY` + page + position.
const PAGE_DIGITS: usize = 12;

fn record(page: usize, position: usize) -> String {
    let id = format!("AKfRoY{page:0>PAGE_DIGITS$}{position:0>28}");
    let (mime, metadata) = if position.is_multiple_of(10) {
        (
            "video/mp4",
            r#""video": {"cameraMake": "Apple", "cameraModel": "iPhone 15", "fps": 29.97, "status": "READY"}"#,
        )
    } else {
        (
            "image/jpeg",
            r#""photo": {"cameraMake": "Google", "cameraModel": "Pixel 8", "focalLength": 6.9, "apertureFNumber": 1.68, "isoEquivalent": 50}"#,
        )
    };
    let time = jiff::Timestamp::from_second(1_600_000_000 + position as i64 * 3_600)
        .map(|t| t.to_string())
        .unwrap_or_default();
    format!(
        r#"{{"id": "{id}", "description": "Holiday photo number {position}", "productUrl": "https://photos.google.com/lr/photo/{id}", "baseUrl": "https://lh3.googleusercontent.com/lr/{id}", "mimeType": "{mime}", "mediaMetadata": {{"creationTime": "{time}", "width": "4032", "height": "3024", {metadata}}}, "filename": "PXL_{position}.jpg"}}"#
    )
}

/// A full page rendered once; each request copies it and writes its page number into every id,
/// so serving costs a memcpy and the figures are the engine's, not the test server's.
struct PageTemplate {
    body: Vec<u8>,
    /// Where page-number digits stand in `body`.
    slots: Vec<usize>,
}

impl PageTemplate {
    fn new() -> Self {
        let marker = "9".repeat(PAGE_DIGITS);
        let records: Vec<String> = (0..PAGE_SIZE)
            .map(|position| record(999_999_999_999, position))
            .collect();
        let body = format!(r#"{{"mediaItems": [{}]"#, records.join(","));
        let slots = body
            .match_indices(&format!("AKfRoY{marker}"))
            .map(|(at, _)| at + "AKfRoY".len())
            .collect();
        Self {
            body: body.into_bytes(),
            slots,
        }
    }

    fn page(&self, page: usize, next: Option<usize>) -> Vec<u8> {
        let mut body = self.body.clone();
        let digits = format!("{page:0>PAGE_DIGITS$}");
        for &slot in &self.slots {
            body[slot..slot + PAGE_DIGITS].copy_from_slice(digits.as_bytes());
        }
        match next {
            Some(next) => {
                body.extend_from_slice(format!(r#", "nextPageToken": "{next}"}}"#).as_bytes())
            }
            None => body.push(b'}'),
        }
        body
    }
}

/// The server process: `total / PAGE_SIZE` pages; the token is the next page's number.
fn serve(total: usize) {
    let pages = total.div_ceil(PAGE_SIZE);
    let template = Arc::new(PageTemplate::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let app = axum::Router::new().route(
            "/v1/mediaItems",
            axum::routing::get(
                move |axum::extract::Query(query): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| {
                    let template = Arc::clone(&template);
                    async move {
                        let page: usize = query
                            .get("pageToken")
                            .and_then(|token| token.parse().ok())
                            .unwrap_or(0);
                        let next = (page + 1 < pages).then_some(page + 1);
                        (
                            [("content-type", "application/json")],
                            template.page(page, next),
                        )
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("address"));
        std::io::stdout().flush().ok();
        axum::serve(listener, app).await.ok();
    });
}

/// The CPU time this process has used (user and system, all threads), from `/proc/self/stat`
/// in clock ticks of 10 ms: with the server in its own process, the importer's own cost per
/// record, which contention on a shared machine moves far less than the rate.
fn cpu_seconds() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start at state (field 3);
            // utime and stime are fields 14 and 15.
            let (_, fields) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = fields.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One import of `total` records; prints one result line.
fn import(total: usize) {
    let exe = std::env::current_exe().expect("own path");
    let mut server = Command::new(exe)
        .args(["--serve", &total.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("server process");
    let mut address = String::new();
    BufReader::new(server.stdout.take().expect("server stdout"))
        .read_line(&mut address)
        .expect("server address");
    let base = url::Url::parse(&format!("http://{}", address.trim())).expect("server URL");

    let runtime = importer_runtime();
    let (seconds, cpu, requests, records) = runtime.block_on(async move {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../connectors/google_photos/connector.yaml");
        let spec = Arc::new(engine::spec::load(&root).expect("the google_photos spec"));
        let connector = CompiledConnector::compile(Arc::clone(&spec)).expect("compiles");
        let integration = Integration::configure(&spec, "bench", "bench", &sandbox_config(&spec))
            .expect("config");
        // The spec's app-wide daily quota would stop a million-record run; the bench measures
        // the engine, so it runs without limits.
        let http = hypernet_tests::sandbox_client(&spec, &base);
        let auth = StaticAuth::prepare(
            &spec.auth,
            &integration.credentials_context(),
            Some(SANDBOX_ACCESS_TOKEN),
        )
        .expect("auth");
        let dir = tempfile::tempdir().expect("temp dir");
        let database = dir.path().join("bench.sqlite");
        let store = SqliteStore::open(&database).await.expect("store");
        let counters = Counters::default();
        let started = Instant::now();
        let cpu_before = cpu_seconds();
        SyncRun::new(
            &connector,
            &integration,
            &http,
            &auth,
            &counters,
            store.clone(),
        )
        .run(&[])
        .await
        .expect("import");
        // Closed as `connector sync` closes it: every record copied into the database file, not
        // only into the log, so work the checkpointer had not caught up with is counted.
        store.close().await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        let totals = counters.totals();
        assert_eq!(totals.written.new as usize, total, "every record stored");
        let reopened = SqliteStore::open(&database).await.expect("store");
        assert_eq!(
            reopened.count("google_photos").await.expect("count") as usize,
            total
        );
        (seconds, cpu, totals.requests, totals.records)
    });
    server.kill().ok();
    server.wait().ok();
    println!(
        "{total:>9} records  {seconds:>7.2} s  {:>9.0} records/s  {requests:>6} requests  CPU {:>5.1} µs/record  peak RSS {:>6.1} MiB",
        records as f64 / seconds,
        cpu * 1e6 / records as f64,
        peak_rss_kib() as f64 / 1024.0
    );
}

/// The runtime the importer side runs on: the one `connector sync` uses (multi-threaded, one
/// worker per core).
fn importer_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The JSON the import stores for the bench's record `id` at `position` of its page.
fn stored_json(id: &str, position: usize) -> String {
    format!(
        r#"{{"user_id":"bench","source_integration_id":"bench","source_platform":"google_photos","source_object_id":"{id}","media_type":"photo","file_path":"https://lh3.googleusercontent.com/lr/{id}","mime_type":"image/jpeg","title":"PXL_{position}.jpg","description":"Holiday photo number {position}","taken_at":"2020-09-13T12:26:40Z","width":4032,"height":3024,"camera_make":"Google","camera_model":"Pixel 8","url":"https://photos.google.com/lr/photo/{id}"}}"#
    )
}

/// SQLite's own floor for the store's rows: the same schema (the store's migrations), pragmas
/// and rows (the JSON of `--store-only`), one page of 100 with its checkpoint per transaction,
/// but every row generated inside SQLite by one statement, so that no client work is counted.
/// No importer can write faster into this database on this machine.
fn sqlite_floor(total: usize) {
    let runtime = importer_runtime();
    let seconds = runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bench.sqlite");
        // The store's own file, pragmas and connection, checkpointed as the store does it.
        let store = SqliteStore::open(&path).await.expect("store");
        let mut connection = store.pool().acquire().await.expect("connect");
        // The id is the only part that varies, as in `--store-only`. The template goes into the
        // SQL as a literal: it is the bench's own text and holds no single quote.
        let json = stored_json("{id}", 7);
        let started = Instant::now();
        for page in 0..total.div_ceil(PAGE_SIZE) {
            let first = page * PAGE_SIZE;
            let last = first + PAGE_SIZE - 1;
            let sql = format!(
                "BEGIN;
                 INSERT INTO records (user_id, source_platform, model, integration_id, stream, first_seen_at, updated_at, source_object_id, data)
                 SELECT 'bench', 'google_photos', 'media', 'bench', 'media_items', '2026-11-26T00:00:00.000000Z', '2026-11-26T00:00:00.000000Z', id, replace('{json}', '{{id}}', id)
                 FROM (WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) SELECT printf('AKfRoY%040d', i) AS id FROM n) WHERE true
                 ON CONFLICT (user_id, source_platform, model, source_object_id) DO NOTHING;
                 INSERT INTO checkpoints (integration_id, stream, partition_key, state, updated_at) VALUES ('bench', 'media_items', '', '{{}}', '2026-11-26T00:00:00.000000Z')
                 ON CONFLICT (integration_id, stream, partition_key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at;
                 COMMIT;"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *connection)
                .await
                .expect("insert a page");
            store.committed();
        }
        let seconds = started.elapsed().as_secs_f64();
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
            .fetch_one(&mut *connection)
            .await
            .expect("count");
        assert_eq!(count as usize, total.div_ceil(PAGE_SIZE) * PAGE_SIZE);
        seconds
    });
    println!(
        "sqlite floor {total:>9} records  {seconds:>7.2} s  {:>9.0} records/s",
        total as f64 / seconds
    );
}

/// The store's share alone: `total` mapped records (the JSON the import stores for the bench's
/// records), each page with its checkpoint, committed eight pages at a time as the import's
/// writer commits them when pages come faster than it writes (a first import, nothing to sweep).
/// The clock covers the log copy left at the end, as in the import.
fn store_only(total: usize) {
    use engine::models::ModelKind;
    use engine::record::StoredRecord;
    use engine::state::{Checkpoint, StreamState};
    use engine::store::{Batch, RunScope, Sink};
    let runtime = importer_runtime();
    let seconds = runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = dir.path().join("bench.sqlite");
        let mut store = SqliteStore::open(&database).await.expect("store");
        let scope = Arc::new(RunScope {
            platform: Arc::from("google_photos"),
            user_id: Arc::from("bench"),
            integration_id: Arc::from("bench"),
            worker: None,
        });
        let stream: Arc<str> = Arc::from("media_items");
        let pages: Vec<Batch> = (0..total.div_ceil(PAGE_SIZE))
            .map(|page| Batch {
                scope: Arc::clone(&scope),
                stream: Arc::clone(&stream),
                model: Some(ModelKind::Media),
                records: (0..PAGE_SIZE)
                    .map(|position| {
                        let id = format!("AKfRoY{page:0>PAGE_DIGITS$}{position:0>28}");
                        let json = stored_json(&id, position);
                        StoredRecord::from(engine::record::MappedRecord::from_data(
                            id,
                            &serde_json::from_str(&json).expect("record JSON"),
                            false,
                        ))
                    })
                    .collect(),
                rejects: vec![],
                // A first import keeps no seen ids: it has nothing to sweep.
                seen_in_pass: None,
                checkpoint: Some(Checkpoint {
                    stream: Arc::clone(&stream),
                    partition: String::new(),
                    state: StreamState::default(),
                }),
                sweeps: vec![],
                downloads: vec![],
            })
            .collect();
        let started = Instant::now();
        // The run's writer commits up to eight pages together (`sync::WRITE_QUEUE_PAGES`).
        for commit in pages.chunks(8) {
            store.write_pages(commit).await.expect("write");
        }
        store.close().await;
        started.elapsed().as_secs_f64()
    });
    println!(
        "store only {total:>9} records  {seconds:>7.2} s  {:>9.0} records/s",
        total as f64 / seconds
    );
}

/// The run thread's stages alone, on one thread with no I/O: each page decoded from the bytes the
/// server sends, then its records mapped into the rows the store binds. Prints the CPU time a
/// record costs in each, which is steadier than the import's rate on a shared machine.
fn stages(total: usize) {
    use engine::extract::{CompiledPath, Target};
    use engine::map::{Mapped, PageScope, RecordMapper};
    use engine::record::Provenance;
    use engine::record::StoredRecord;
    use engine::template::Templates;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../connectors/google_photos/connector.yaml");
    let spec = engine::spec::load(&root).expect("the google_photos spec");
    let stream = &spec.streams["media_items"];
    let mut templates = Templates::default();
    let mapper = RecordMapper::compile(stream.model.expect("a model"), stream, &mut templates)
        .expect("compiles");
    let records = CompiledPath::compile(stream.records.as_str()).expect("records path");
    let provenance = Provenance::new("bench", "bench", "google_photos");
    let none = minijinja::Value::from(());
    let template = PageTemplate::new();
    let pages = total.div_ceil(PAGE_SIZE);
    let (mut decoding, mut mapping) = (0.0, 0.0);
    let mut stored = 0usize;
    for page in 0..pages {
        let body = template.page(page, (page + 1 < pages).then_some(page + 1));
        let started = Instant::now();
        let decoded = engine::decode::decode(stream.decode, &body).expect("decodes");
        let decoded_at = Instant::now();
        let mut rows = Vec::with_capacity(PAGE_SIZE);
        let mut scope = PageScope::new(&none, &none);
        records.for_each(&Target::new(decoded.root()), |raw| {
            if let Mapped::Record(record) = mapper.map(raw, &mut scope, &provenance, &templates) {
                rows.push(StoredRecord::from(record));
            }
        });
        stored += rows.len();
        drop(rows);
        drop(decoded);
        decoding += (decoded_at - started).as_secs_f64();
        mapping += decoded_at.elapsed().as_secs_f64();
    }
    assert_eq!(stored, pages * PAGE_SIZE, "every record maps");
    let per_record = |seconds: f64| seconds * 1e6 / stored as f64;
    println!(
        "stages {stored:>9} records  decode {:>5.2} µs/record  map {:>5.2} µs/record",
        per_record(decoding),
        per_record(mapping)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|index| args.get(index + 1))
            .and_then(|text| text.parse::<usize>().ok())
    };
    if let Some(total) = value("--serve") {
        return serve(total);
    }
    if let Some(total) = value("--records") {
        return import(total);
    }
    if let Some(total) = value("--store-only") {
        return store_only(total);
    }
    if let Some(total) = value("--sqlite-floor") {
        return sqlite_floor(total);
    }
    if let Some(total) = value("--stages") {
        return stages(total);
    }
    println!(
        "import benchmark: google_photos spec, {PAGE_SIZE} records per page, loopback HTTP, SQLite file"
    );
    let exe = std::env::current_exe().expect("own path");
    for total in [10_000, 100_000, 1_000_000] {
        let status = Command::new(&exe)
            .args(["--records", &total.to_string()])
            .status()
            .expect("bench process");
        if !status.success() {
            std::process::exit(1);
        }
    }
}
