//! One stream's failure does not end the others: each root stream and each substream partition
//! runs to its own end, and a run in which some failed and others imported ends `partial`.
//! Against a loopback provider and both stores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engine::run::SyncErrorKind;
use engine::store::RunStatus;
use hypernet_tests::{RunOptions, run, serve, spec_from, test_stores};
use serde_json::{Value, json};

const PLATFORM: &str = "partial_api";

/// A spec with these streams after its header (no retries to wait for).
fn spec(streams: &str) -> String {
    format!(
        r#"id: {PLATFORM}
name: Partial API
version: 1.0.0
category: productivity
description: A provider one of whose endpoints fails.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
retry:
  max_attempts: 1
streams:
{streams}"#
    )
}

/// Three root streams; the middle one's endpoint answers 404.
fn three_roots() -> String {
    spec(
        r#"  notes:
    model: note
    request: { path: /notes }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
  broken:
    model: note
    request: { path: /missing }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
  tasks:
    model: task
    request: { path: /tasks }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
"#,
    )
}

fn items(prefix: &str, count: usize) -> Value {
    json!({"items": (0..count).map(|n| json!({"id": format!("{prefix}{n}"), "title": format!("{prefix} {n}")})).collect::<Vec<_>>()})
}

/// Ids stored for the platform, by model, sorted.
async fn stored(store: &engine::store::AnyStore) -> Vec<String> {
    let mut ids: Vec<String> = store
        .dump(PLATFORM)
        .await
        .unwrap()
        .into_iter()
        .map(|(model, id, _, _)| format!("{model}/{id}"))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_failing_stream_leaves_the_others_imported_and_the_run_partial() {
    let app = axum::Router::new()
        .route("/notes", get(|| async { Json(items("n", 3)) }))
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such endpoint") }),
        )
        .route("/tasks", get(|| async { Json(items("t", 2)) }));
    let server = serve(app).await;
    let spec = spec_from(&three_roots());
    for test in test_stores("partial_roots").await {
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        let report = result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
        assert_eq!(report.status(), RunStatus::Partial, "{}", test.backend);
        assert_eq!(report.failed.len(), 1, "{}", test.backend);
        let failure = &report.failed[0];
        assert_eq!(failure.stream, "broken");
        assert!(
            matches!(&failure.kind, SyncErrorKind::Http(error) if error.to_string().contains("404")),
            "{failure}"
        );
        // The stream before the failing one and the one after it are both stored.
        assert_eq!(
            stored(&test.store).await,
            ["note/n0", "note/n1", "note/n2", "task/t0", "task/t1"],
            "{}",
            test.backend
        );
        let runs = test.store.runs("integration-1").await.unwrap();
        assert_eq!(runs[0].status, "partial", "{}", test.backend);
        let error = runs[0].error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("1 stream failed: partial_api / broken / GET "),
            "{}: {error}",
            test.backend
        );
    }
}

#[tokio::test]
async fn when_every_stream_fails_the_run_fails() {
    let app = axum::Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "gone") });
    let server = serve(app).await;
    let spec = spec_from(&three_roots());
    for test in test_stores("partial_all_fail").await {
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        let error = result.expect_err("nothing imported");
        assert_eq!(error.stream, "notes", "{}: the first failure", test.backend);
        let runs = test.store.runs("integration-1").await.unwrap();
        assert_eq!(runs[0].status, "failed", "{}", test.backend);
        assert!(stored(&test.store).await.is_empty());
    }
}

#[tokio::test]
async fn refused_credentials_end_the_whole_run() {
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&requests);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().push(uri.path().to_owned());
            (StatusCode::UNAUTHORIZED, "token expired")
        }
    });
    let server = serve(app).await;
    let spec = spec_from(&three_roots());
    for test in test_stores("partial_unauthorized").await {
        requests.lock().unwrap().clear();
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        let error = result.expect_err("refused credentials fail the run");
        assert!(error.ends_run(), "{error}");
        assert_eq!(
            *requests.lock().unwrap(),
            ["/notes"],
            "{}: no other stream is tried once the credentials are refused",
            test.backend
        );
        assert_eq!(
            test.store.runs("integration-1").await.unwrap()[0].status,
            "failed"
        );
    }
}

/// Folders (incremental: a completed pass keeps a sync token, and the next run lists only
/// changes) and their files.
fn folders_spec() -> String {
    spec(
        r#"  folders:
    model: note
    request: { path: /folders }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
    paginate: { kind: cursor, token: $.next, param: cursor }
    incremental: { kind: sync_token, token: $.nextSyncToken, param: syncToken }
  files:
    model: task
    parent: { stream: folders, fields: { folder: $.id } }
    request: { path: "/folders/{{ parent.folder }}/files" }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
"#,
    )
}

#[tokio::test]
async fn a_failing_substream_partition_leaves_its_siblings_and_the_next_run_resumes_before_it() {
    // The files of folder f1 fail (500) while `fail` is set.
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let failing = Arc::clone(&fail);
    let with_token = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&with_token);
    let app = axum::Router::new()
        .route(
            "/folders",
            get(move |Query(query): Query<HashMap<String, String>>| {
                let counted = Arc::clone(&counted);
                async move {
                    if query.contains_key("syncToken") {
                        // Nothing changed since the token.
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return Json(json!({"items": [], "nextSyncToken": "s1"}));
                    }
                    // Two pages: f0, f1 then f2, which ends with the token.
                    Json(match query.get("cursor").map(String::as_str) {
                        None => json!({"items": [{"id": "f0", "title": "F0"}, {"id": "f1", "title": "F1"}], "next": "p2"}),
                        Some(_) => json!({"items": [{"id": "f2", "title": "F2"}], "nextSyncToken": "s1"}),
                    })
                }
            }),
        )
        .route(
            "/folders/{folder}/files",
            get(move |Path(folder): Path<String>| {
                let failing = Arc::clone(&failing);
                async move {
                    if folder == "f1" && failing.load(std::sync::atomic::Ordering::SeqCst) {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "disk on fire").into_response();
                    }
                    let page: Response = Json(items(&format!("{folder}-"), 2)).into_response();
                    page
                }
            }),
        );
    let server = serve(app).await;
    let spec = spec_from(&folders_spec());
    for test in test_stores("partial_partition").await {
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        with_token.store(0, std::sync::atomic::Ordering::SeqCst);
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        let report = result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
        assert_eq!(report.status(), RunStatus::Partial);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].stream, "files");
        assert!(
            report.failed[0].to_string().contains("/folders/f1/files"),
            "{}",
            report.failed[0]
        );
        // Every folder, and the files of every folder but f1 (f2's on the page after).
        assert_eq!(
            stored(&test.store).await,
            [
                "note/f0",
                "note/f1",
                "note/f2",
                "task/f0-0",
                "task/f0-1",
                "task/f2-0",
                "task/f2-1"
            ],
            "{}",
            test.backend
        );
        // The folders' pass stored no checkpoint from the page whose files failed (not even the
        // sync token that would have made the next run list only changes): the next run lists
        // that page again, and with the provider well again, f1's files come home.
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        let report = result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
        assert_eq!(report.status(), RunStatus::Succeeded, "{}", test.backend);
        assert_eq!(
            stored(&test.store).await,
            [
                "note/f0",
                "note/f1",
                "note/f2",
                "task/f0-0",
                "task/f0-1",
                "task/f1-0",
                "task/f1-1",
                "task/f2-0",
                "task/f2-1"
            ],
            "{}",
            test.backend
        );
        assert_eq!(with_token.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Now the pass completed, its token is kept: the third run asks only for changes.
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        assert_eq!(result.unwrap().status(), RunStatus::Succeeded);
        assert_eq!(with_token.load(std::sync::atomic::Ordering::SeqCst), 1);
        let runs = test.store.runs("integration-1").await.unwrap();
        let statuses: Vec<&str> = runs.iter().map(|run| run.status.as_str()).collect();
        assert_eq!(
            statuses,
            ["succeeded", "succeeded", "partial"],
            "{}",
            test.backend
        );
    }
}
