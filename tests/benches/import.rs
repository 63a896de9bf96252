//! Import throughput and memory: Google-Photos-shaped records (about 600 bytes of JSON each,
//! 100 per page) served from a loopback server process, imported with the real `google_photos`
//! spec through the real engine (HTTP, JSONPath, templates, conversions, model validation) into
//! an SQLite file.
//!
//! Ids are Google's: `AF1Qip` and 38 random base64url characters, in no order, as the Library
//! API lists them (a new id lands on a random leaf of the store's index). `--ordered-ids` serves
//! ids that grow with the page instead, every insert at the index's right edge: a labelled
//! comparison, not what a person's library looks like.
//!
//! `cargo bench -p hypernet-tests --bench import` runs N = 10k, 100k and 1M, each twice: the
//! release `connector sync google_photos --via <the server> --no-content` (the command a person
//! runs, with its progress reporting and rate limiter; build it first), timed with
//! `/usr/bin/time -v`, and the same import in-process (each in a fresh process, so that its peak
//! RSS is its own). `-- --records N` runs one size in-process, `-- --cli N` through the binary;
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

/// How the served ids are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// Google's shape, in no order: `AF1Qip` + 38 base64url characters drawn from the record's
    /// number (the same every run).
    Random,
    /// `AF1Qip` + the page (12 digits) + the position (26 digits): ascending.
    Ordered,
}

impl Ids {
    fn from_args(args: &[String]) -> Self {
        match args.iter().any(|arg| arg == "--ordered-ids") {
            true => Ids::Ordered,
            false => Ids::Random,
        }
    }

    fn flag(self) -> Option<&'static str> {
        (self == Ids::Ordered).then_some("--ordered-ids")
    }

    fn label(self) -> &'static str {
        match self {
            Ids::Random => "random ids",
            Ids::Ordered => "ordered ids",
        }
    }

    /// The id of the record at `position` of `page`: 44 characters either way.
    fn id(self, page: usize, position: usize) -> String {
        match self {
            Ids::Ordered => format!("AF1Qip{page:0>12}{position:0>26}"),
            Ids::Random => {
                const BASE64URL: &[u8; 64] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                // splitmix64 over the record's number: random-looking, and the same each run.
                let mut state = (page * PAGE_SIZE + position) as u64;
                let mut next = || {
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^ (z >> 31)
                };
                let mut id = String::with_capacity(44);
                id.push_str("AF1Qip");
                let mut bits = 0_u64;
                for index in 0..38 {
                    if index % 10 == 0 {
                        bits = next();
                    }
                    id.push(char::from(BASE64URL[(bits & 63) as usize]));
                    bits >>= 6;
                }
                id
            }
        }
    }
}

fn record(id: &str, position: usize) -> String {
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

/// A full page rendered once; each request copies it and writes its ids into it, so serving
/// costs a memcpy and the figures are the engine's, not the test server's.
struct PageTemplate {
    ids: Ids,
    body: Vec<u8>,
    /// Where each position's id stands in `body` (three times: the id and two URLs).
    slots: Vec<Vec<usize>>,
}

impl PageTemplate {
    fn new(ids: Ids) -> Self {
        // A placeholder per position, as long as an id, found again below.
        let placeholder = |position: usize| format!("@{position:0>43}");
        let records: Vec<String> = (0..PAGE_SIZE)
            .map(|position| record(&placeholder(position), position))
            .collect();
        let body = format!(r#"{{"mediaItems": [{}]"#, records.join(","));
        let slots = (0..PAGE_SIZE)
            .map(|position| {
                body.match_indices(&placeholder(position))
                    .map(|(at, _)| at)
                    .collect()
            })
            .collect();
        Self {
            ids,
            body: body.into_bytes(),
            slots,
        }
    }

    fn page(&self, page: usize, next: Option<usize>) -> Vec<u8> {
        let mut body = self.body.clone();
        for (position, slots) in self.slots.iter().enumerate() {
            let id = self.ids.id(page, position);
            for &slot in slots {
                body[slot..slot + id.len()].copy_from_slice(id.as_bytes());
            }
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
fn serve(total: usize, ids: Ids) {
    let pages = total.div_ceil(PAGE_SIZE);
    let template = Arc::new(PageTemplate::new(ids));
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

/// The server, in its own process (its CPU is not the importer's), serving `total` records.
fn start_server(total: usize, ids: Ids) -> (std::process::Child, url::Url) {
    let exe = std::env::current_exe().expect("own path");
    let mut server = Command::new(exe)
        .args(["--serve", &total.to_string()])
        .args(ids.flag())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server process");
    let mut address = String::new();
    BufReader::new(server.stdout.take().expect("server stdout"))
        .read_line(&mut address)
        .expect("server address");
    let base = url::Url::parse(&format!("http://{}", address.trim())).expect("server URL");
    (server, base)
}

fn result_line(how: &str, ids: Ids, total: usize, seconds: f64, cpu: f64, peak_rss_mib: f64) {
    println!(
        "{how:<14} {:<11} {total:>9} records  {seconds:>7.2} s  {:>9.0} records/s  CPU {:>5.1} µs/record  peak RSS {peak_rss_mib:>6.1} MiB",
        ids.label(),
        total as f64 / seconds,
        cpu * 1e6 / total as f64,
    );
}

/// A fresh database named `hypernet_bench` on the PostgreSQL server of `url` (dropped first if
/// a bench left one), and its URL.
fn fresh_postgres(url: &str) -> String {
    use sqlx::Connection as _;
    importer_runtime().block_on(async {
        let mut connection = sqlx::PgConnection::connect(url)
            .await
            .expect("connect to PostgreSQL");
        for statement in [
            "DROP DATABASE IF EXISTS hypernet_bench WITH (FORCE)",
            "CREATE DATABASE hypernet_bench",
        ] {
            sqlx::raw_sql(statement)
                .execute(&mut connection)
                .await
                .expect(statement);
        }
    });
    let mut bench = url::Url::parse(url).expect("a PostgreSQL URL");
    bench.set_path("/hypernet_bench");
    bench.to_string()
}

/// `connector sync google_photos` as a person runs it (the release binary), through the bench's
/// server, into a fresh SQLite file, or a fresh PostgreSQL database on the server of `postgres`;
/// prints one result line.
fn cli_sync(total: usize, ids: Ids, postgres: Option<&str>) {
    let database = postgres.map(fresh_postgres);
    let (mut server, base) = start_server(total, ids);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).to_str().expect("UTF-8").to_owned();
    let database = database.unwrap_or_else(|| path("bench.sqlite"));
    let connectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors");
    let run = hypernet_tests::timed(
        hypernet_tests::connector_binary(),
        &[
            "sync",
            "google_photos",
            "--via",
            base.as_str(),
            "--access-token",
            "bench",
            "--no-content",
            "--db",
            &database,
            "--key-file",
            &path("key"),
            "--connectors-root",
            connectors.to_str().expect("UTF-8"),
            "--json",
        ],
    );
    server.kill().ok();
    server.wait().ok();
    let summary: serde_json::Value = serde_json::from_str(&run.output).expect("a JSON summary");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(summary["new"], total, "every record stored: {summary}");
    result_line(
        if postgres.is_some() {
            "sync postgres"
        } else {
            "connector sync"
        },
        ids,
        total,
        run.seconds,
        run.cpu_seconds,
        run.peak_rss_mib,
    );
}

/// One import of `total` records in this process; prints one result line.
fn import(total: usize, ids: Ids) {
    let (mut server, base) = start_server(total, ids);

    let runtime = importer_runtime();
    let (seconds, cpu, records) = runtime.block_on(async move {
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
        (seconds, cpu, totals.records)
    });
    server.kill().ok();
    server.wait().ok();
    assert_eq!(records as usize, total);
    result_line(
        "in-process",
        ids,
        total,
        seconds,
        cpu,
        peak_rss_kib() as f64 / 1024.0,
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
fn sqlite_floor(total: usize, ids: Ids) {
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
        // Ids of the bench's shape and order, made by SQLite (random ones are 38 hex digits).
        let id = match ids {
            Ids::Ordered => "printf('AF1Qip%038d', i)",
            Ids::Random => "'AF1Qip' || substr(hex(randomblob(19)), 1, 38)",
        };
        let started = Instant::now();
        for page in 0..total.div_ceil(PAGE_SIZE) {
            let first = page * PAGE_SIZE;
            let last = first + PAGE_SIZE - 1;
            let sql = format!(
                "BEGIN;
                 INSERT INTO records (user_id, source_platform, model, integration_id, stream, first_seen_at, updated_at, source_object_id, scope, data)
                 SELECT 'bench', 'google_photos', 'media', 'bench', 'media_items', '2026-11-26T00:00:00.000000Z', '2026-11-26T00:00:00.000000Z', id, x'00112233445566778899aabbccddeeff', replace('{json}', '{{id}}', id)
                 FROM (WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) SELECT {id} AS id FROM n) WHERE true
                 ON CONFLICT (scope, source_object_id) DO NOTHING;
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
        "sqlite floor   {:<11} {total:>9} records  {seconds:>7.2} s  {:>9.0} records/s",
        ids.label(),
        total as f64 / seconds
    );
}

/// The store's share alone: `total` mapped records (the JSON the import stores for the bench's
/// records), each page with its checkpoint, written and committed eight pages at a time (a first
/// import, nothing to sweep). The run's writer, fed faster than it writes, now commits many such
/// writes together; this keeps the commit of each, to compare with the figures before.
/// The clock covers the log copy left at the end, as in the import.
fn store_only(total: usize, ids: Ids) {
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
                        let id = ids.id(page, position);
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
                stored: vec![],
            })
            .collect();
        let started = Instant::now();
        // Eight pages a write (the run writer's `WRITE_QUEUE_PAGES`).
        for commit in pages.chunks(8) {
            store.write_pages(commit).await.expect("write");
        }
        store.close().await;
        started.elapsed().as_secs_f64()
    });
    println!(
        "store only     {:<11} {total:>9} records  {seconds:>7.2} s  {:>9.0} records/s",
        ids.label(),
        total as f64 / seconds
    );
}

/// The run thread's stages alone, on one thread with no I/O: each page decoded from the bytes the
/// server sends, then its records mapped into the rows the store binds. Prints the CPU time a
/// record costs in each, which is steadier than the import's rate on a shared machine.
fn stages(total: usize, ids: Ids) {
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
    let template = PageTemplate::new(ids);
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
    let ids = Ids::from_args(&args);
    if let Some(total) = value("--serve") {
        return serve(total, ids);
    }
    if let Some(total) = value("--records") {
        return import(total, ids);
    }
    // A PostgreSQL server for `connector sync` rows into PostgreSQL: `--postgres URL`, or
    // HYPERNET_BENCH_POSTGRES for the default run. The bench makes (and drops) a database named
    // `hypernet_bench` on it.
    let postgres = args
        .iter()
        .position(|arg| arg == "--postgres")
        .and_then(|index| args.get(index + 1).cloned());
    if let Some(total) = value("--cli") {
        return cli_sync(total, ids, postgres.as_deref());
    }
    if let Some(total) = value("--store-only") {
        return store_only(total, ids);
    }
    if let Some(total) = value("--sqlite-floor") {
        return sqlite_floor(total, ids);
    }
    if let Some(total) = value("--stages") {
        return stages(total, ids);
    }
    println!(
        "import benchmark: google_photos spec, {PAGE_SIZE} records per page, loopback HTTP, SQLite file, {}",
        ids.label()
    );
    let exe = std::env::current_exe().expect("own path");
    let postgres = std::env::var("HYPERNET_BENCH_POSTGRES").ok();
    for total in [10_000, 100_000, 1_000_000] {
        let mut runs = vec![("--cli", vec![]), ("--records", vec![])];
        if let Some(url) = &postgres
            && total >= 100_000
        {
            runs.push(("--cli", vec!["--postgres", url.as_str()]));
        }
        for (how, more) in runs {
            let status = Command::new(&exe)
                .args([how, &total.to_string()])
                .args(more)
                .args(ids.flag())
                .status()
                .expect("bench process");
            if !status.success() {
                std::process::exit(1);
            }
        }
    }
}
