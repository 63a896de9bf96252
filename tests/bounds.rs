//! A provider (or a spec) that asks for unbounded work gets a bounded run: bodies larger than
//! the limit (compressed or not) are refused without being read further, paging that loops or
//! never ends stops, a run stops at its request and time limits keeping what it imported, and
//! requests in flight share one bound however deep a stream recurses. Each over real loopback
//! HTTP.

#[path = "common/test_api.rs"]
mod test_api;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::get;
use engine::http::HttpError;
use engine::run::SyncErrorKind;
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::json;
use test_api::{expected_ids, ids, notes, spec_yaml};

const ONE_PAGE: &str = "    request: { path: /items }\n    records: $.items[*]";

const CURSOR_PAGES: &str = "    request: { path: /items }\n    paginate: { kind: cursor, token: $.next, param: after }\n    records: $.items[*]";

/// A page of `size` bytes or more: one note and padding.
fn padded_page(size: usize) -> String {
    json!({"items": notes(0..1), "padding": " ".repeat(size)}).to_string()
}

#[tokio::test]
async fn a_body_larger_than_the_limit_fails_its_stream_and_is_not_retried() {
    let app = axum::Router::new().route("/items", get(|| async { padded_page(8 * 1024) }));
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(ONE_PAGE, "limits: { max_body: 4KiB }"));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    assert!(
        matches!(
            error.kind,
            SyncErrorKind::Http(HttpError::TooLarge { limit: 4096, .. })
        ),
        "{error}"
    );
    assert!(error.hint().contains("limits.max_body"), "{}", error.hint());
    assert_eq!(
        recorder.totals().requests,
        1,
        "the same answer would come again"
    );
    assert!(ids(&sink).is_empty());
}

#[tokio::test]
async fn a_compressed_body_is_limited_by_its_decompressed_size() {
    // 4 MiB of JSON in about 4 KiB of gzip: a decompression bomb in miniature.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(padded_page(4 << 20).as_bytes()).unwrap();
    let compressed = Arc::new(encoder.finish().unwrap());
    assert!(compressed.len() < 64 * 1024, "{} bytes", compressed.len());
    let app = axum::Router::new().route(
        "/items",
        get(move || {
            let compressed = Arc::clone(&compressed);
            async move {
                (
                    [
                        ("content-encoding", "gzip"),
                        ("content-type", "application/json"),
                    ],
                    compressed.to_vec(),
                )
                    .into_response()
            }
        }),
    );
    let server = serve(app).await;

    let limited = spec_from(&spec_yaml(ONE_PAGE, "limits: { max_body: 1MiB }"));
    let (result, _) = run(
        &limited,
        &server,
        &MemorySink::default(),
        RunOptions::default(),
    )
    .await;
    let error = result.unwrap_err();
    assert!(
        matches!(error.kind, SyncErrorKind::Http(HttpError::TooLarge { .. })),
        "{error}"
    );

    // The same answer within the limit decodes: the body was decompressed, not refused blindly.
    let roomy = spec_from(&spec_yaml(ONE_PAGE, "limits: { max_body: 8MiB }"));
    let sink = MemorySink::default();
    let (result, _) = run(&roomy, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..1));
}

#[tokio::test]
async fn a_stream_may_accept_larger_bodies_than_its_connector() {
    let app = axum::Router::new().route("/items", get(|| async { padded_page(8 * 1024) }));
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        &format!("{ONE_PAGE}\n    max_body: 16KiB"),
        "limits: { max_body: 4KiB }",
    ));
    let sink = MemorySink::default();
    let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..1));
}

#[tokio::test]
async fn paging_that_returns_to_an_earlier_page_stops_the_stream() {
    // A, B, A, B, ...: not an immediate repeat, which was all that was caught before.
    let app = axum::Router::new().route(
        "/items",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            let next = match query.get("after").map(String::as_str) {
                None | Some("B") => "A",
                _ => "B",
            };
            Json(json!({"items": notes(0..1), "next": next}))
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(CURSOR_PAGES, ""));
    let (result, recorder) = run(
        &spec,
        &server,
        &MemorySink::default(),
        RunOptions::default(),
    )
    .await;
    let error = result.unwrap_err();
    assert!(
        matches!(error.kind, SyncErrorKind::Pagination(_)),
        "{error}"
    );
    assert!(
        error.to_string().contains("already named (token `A`)"),
        "{error}"
    );
    assert_eq!(
        recorder.totals().requests,
        3,
        "first, A, B; A again is not requested"
    );
}

/// A provider whose paging never ends: page N holds note N and names page N + 1.
async fn endless_pages() -> url::Url {
    serve(axum::Router::new().route(
        "/items",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            let page: usize = query.get("after").map_or(0, |token| token.parse().unwrap());
            Json(json!({"items": notes(page..page + 1), "next": (page + 1).to_string()}))
        }),
    ))
    .await
}

#[tokio::test]
async fn paging_that_never_ends_stops_at_the_page_limit_keeping_its_pages() {
    let server = endless_pages().await;
    let spec = spec_from(&spec_yaml(CURSOR_PAGES, "limits: { max_pages: 5 }"));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error.kind, SyncErrorKind::Pagination(_)),
        "{error}"
    );
    assert!(error.to_string().contains("limits.max_pages"), "{error}");
    assert_eq!(recorder.totals().requests, 5);
    assert_eq!(ids(&sink), expected_ids(0..5), "the pages read are kept");
}

#[tokio::test]
async fn a_run_stops_at_its_request_limit() {
    let server = endless_pages().await;
    let spec = spec_from(&spec_yaml(CURSOR_PAGES, "limits: { max_requests: 3 }"));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    assert!(matches!(error.kind, SyncErrorKind::Limit(_)), "{error}");
    assert!(error.to_string().contains("limits.max_requests"), "{error}");
    assert!(error.ends_run());
    assert_eq!(recorder.totals().requests, 3);
    assert_eq!(ids(&sink), expected_ids(0..3));
}

#[tokio::test]
async fn a_run_stops_at_its_time_limit() {
    let app = axum::Router::new().route(
        "/items",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            if query.contains_key("after") {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Json(json!({"items": notes(0..1), "next": "later"}))
        }),
    );
    let server = serve(app).await;
    let mut spec = (*spec_from(&spec_yaml(CURSOR_PAGES, ""))).clone();
    // Below what a spec may set (a minute), so that the test is quick.
    spec.limits.max_run_time = "300ms".parse().unwrap();
    let sink = MemorySink::default();
    let (result, _) = run(&Arc::new(spec), &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    assert!(matches!(error.kind, SyncErrorKind::Limit(_)), "{error}");
    assert!(error.to_string().contains("limits.max_run_time"), "{error}");
    assert_eq!(ids(&sink), expected_ids(0..1), "the first page is kept");
}

/// Notion-shaped blocks four wide and three deep, each level of the recursion allowed 16
/// requests at once: without one bound for the run, the levels multiply.
#[tokio::test]
async fn requests_in_flight_share_one_bound_however_deep_a_stream_recurses() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (Arc::clone(&in_flight), Arc::clone(&most));
    let app =
        axum::Router::new()
            .route(
                "/pages",
                get(|| async { Json(json!({"results": [{"id": "page"}]})) }),
            )
            .route(
                "/blocks/{block}/children",
                get(
                    move |axum::extract::Path(block): axum::extract::Path<String>| {
                        let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
                        async move {
                            let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(current, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            now.fetch_sub(1, Ordering::SeqCst);
                            let children: Vec<_> = (0..4)
                        .map(|index| json!({"id": format!("{block}.{index}"), "title": "block"}))
                        .collect();
                            Json(json!({"results": children}))
                        }
                    },
                ),
            );
    let server = serve(app).await;
    let yaml = spec_yaml("", "limits: { max_concurrency: 3 }").replace(
        "  items:\n    model: note\n    id: $.id\n    map:\n      title: $.title\n",
        r#"  pages:
    request: { path: /pages }
    records: $.results[*]
    id: $.id
  items:
    model: note
    parent: { stream: pages, fields: { block_id: $.id }, concurrency: 16 }
    request: { path: "/blocks/{{ parent.block_id }}/children" }
    records: $.results[*]
    id: $.id
    recurse:
      fields: { block_id: $.id }
      max_depth: 2
    map:
      title: $.title
"#,
    );
    let sink = MemorySink::default();
    let (result, _) = run(&spec_from(&yaml), &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink).len(), 4 + 16 + 64, "every level was imported");
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "at most `limits.max_concurrency` at once, and that many used"
    );
}
