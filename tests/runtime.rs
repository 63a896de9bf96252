//! The import runtime over real loopback HTTP: every paginator, every retry case, rate limits,
//! rejects and the SQLite store. Each test serves a provider-shaped API with axum and points
//! the engine at it through the sandbox transport, so requests take the real HTTP path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use engine::http::HttpError;
use engine::ratelimit::{FakeRelativeClock, RateLimitRegistry};
use engine::run::SyncErrorKind;
use engine::store::{MemorySink, SqliteStore};
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::{Value, json};

/// A spec with one `items` stream of notes; `stream` is spliced into the stream, `top` into the
/// connector.
fn spec_yaml(stream: &str, top: &str) -> String {
    format!(
        r#"id: test_api
name: Test API
version: 1.0.0
category: productivity
description: A test provider.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
retry:
  max_attempts: 3
  backoff: {{ initial: 1ms, max: 5ms }}
{top}
streams:
  items:
    model: note
    id: $.id
    map:
      title: $.title
{stream}
"#
    )
}

/// The base spec with its `items` stream replaced by `streams` (YAML at the `streams:` level).
fn with_streams(streams: &str) -> String {
    spec_yaml("", "").replace(
        "  items:\n    model: note\n    id: $.id\n    map:\n      title: $.title\n",
        streams,
    )
}

fn notes(range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|index| json!({"id": format!("n{index}"), "title": format!("Note {index}")}))
        .collect()
}

fn ids(sink: &MemorySink) -> Vec<String> {
    sink.contents()
        .records
        .get("items")
        .map(|records| records.iter().map(|record| record.id.clone()).collect())
        .unwrap_or_default()
}

fn expected_ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|index| format!("n{index}")).collect()
}

// ----- paginators ---------------------------------------------------------------------------

#[tokio::test]
async fn cursor_in_the_query_follows_tokens_past_an_empty_page() {
    let app = axum::Router::new().route(
        "/items",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            assert_eq!(query.get("limit").map(String::as_str), Some("2"));
            match query.get("pageToken").map(String::as_str) {
                None => Json(json!({"items": notes(0..2), "nextPageToken": "t1"})),
                Some("t1") => Json(json!({"items": [], "nextPageToken": "t2"})),
                Some("t2") => Json(json!({"items": notes(2..3), "nextPageToken": ""})),
                Some(other) => panic!("unexpected token {other}"),
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items, query: { limit: \"2\" } }\n    paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }\n    records: $.items[*]",
        "",
    ));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..3));
    assert_eq!(recorder.totals().pages, 3);
}

#[tokio::test]
async fn cursor_in_a_json_body_stops_when_has_more_is_false() {
    let app = axum::Router::new().route(
        "/v1/search",
        post(|Json(body): Json<Value>| async move {
            assert_eq!(body["filter"], json!({"property": "object", "value": "page"}));
            match body.get("start_cursor").and_then(Value::as_str) {
                None => Json(json!({"object": "list", "results": notes(0..2), "has_more": true, "next_cursor": "c1"})),
                // Notion sends a cursor on the last page too; `has_more` is what says stop.
                Some("c1") => Json(json!({"object": "list", "results": notes(2..4), "has_more": false, "next_cursor": "c2"})),
                Some(other) => panic!("unexpected cursor {other}"),
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        r#"    request:
      method: POST
      path: /v1/search
      body: { json: { filter: { property: object, value: page }, page_size: 100 } }
    paginate: { kind: cursor, token: $.next_cursor, param: start_cursor, location: body, stop_when: "not response.has_more" }
    records: $.results[*]"#,
        "",
    ));
    let sink = MemorySink::default();
    let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..4));
}

#[tokio::test]
async fn cursor_with_a_next_request_uses_the_continue_endpoint() {
    let app = axum::Router::new()
        .route(
            "/2/files/list_folder",
            post(|| async {
                Json(json!({"entries": notes(0..2), "cursor": "k1", "has_more": true}))
            }),
        )
        .route(
            "/2/files/list_folder/continue",
            post(|Json(body): Json<Value>| async move {
                match body["cursor"].as_str() {
                    Some("k1") => {
                        Json(json!({"entries": notes(2..3), "cursor": "k2", "has_more": false}))
                    }
                    other => panic!("unexpected cursor {other:?}"),
                }
            }),
        );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        r#"    request: { method: POST, path: /2/files/list_folder, body: { json: { path: "", recursive: true } } }
    paginate:
      kind: cursor
      token: $.cursor
      param: cursor
      stop_when: "not response.has_more"
      next_request: { method: POST, path: /2/files/list_folder/continue, body: { json: { cursor: "{{ page.token }}" } } }
    records: $.entries[*]"#,
        "",
    ));
    let sink = MemorySink::default();
    let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..3));
}

#[tokio::test]
async fn next_url_from_the_body_is_followed_on_an_allowed_host() {
    let app = axum::Router::new().route(
        "/v1.0/me/messages",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            match query.get("$skiptoken").map(String::as_str) {
                None => Json(json!({"value": notes(0..2), "@odata.nextLink": "https://api.example.com/v1.0/me/messages?$skiptoken=s1"})),
                Some("s1") => Json(json!({"value": notes(2..3)})),
                Some(other) => panic!("unexpected skiptoken {other}"),
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /v1.0/me/messages }\n    paginate: { kind: next_url, from: { body: \"$['@odata.nextLink']\" } }\n    records: $.value[*]",
        "",
    ));
    let sink = MemorySink::default();
    let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..3));
}

#[tokio::test]
async fn next_url_to_an_undeclared_host_is_refused() {
    let app = axum::Router::new().route(
        "/items",
        get(|| async {
            Json(json!({"items": notes(0..1), "next": "https://evil.example.net/items?page=2"}))
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    paginate: { kind: next_url, from: { body: $.next } }\n    records: $.items[*]",
        "",
    ));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    assert!(
        matches!(
            error.kind,
            SyncErrorKind::Http(HttpError::HostNotAllowed { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("evil.example.net"), "{error}");
    assert_eq!(
        recorder.totals().requests,
        1,
        "the refused request must never be sent"
    );
    assert_eq!(
        ids(&sink),
        expected_ids(0..1),
        "records before the refusal are kept"
    );
}

#[tokio::test]
async fn next_url_from_the_link_header() {
    let app = axum::Router::new().route(
        "/repos",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            let mut headers = HeaderMap::new();
            let body = match query.get("page").map(String::as_str) {
                None => {
                    headers.insert(
                        "link",
                        "<https://api.example.com/repos?page=2>; rel=\"next\", <https://api.example.com/repos?page=2>; rel=\"last\"".parse().unwrap(),
                    );
                    json!(notes(0..2))
                }
                Some("2") => json!(notes(2..3)),
                Some(other) => panic!("unexpected page {other}"),
            };
            (headers, Json(body))
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /repos }\n    paginate: { kind: next_url, from: { link_header: next } }\n    records: $[*]",
        "",
    ));
    let sink = MemorySink::default();
    let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..3));
}

#[tokio::test]
async fn offset_and_limit_stop_on_a_short_page() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let app = axum::Router::new().route(
        "/items",
        get(move |Query(query): Query<HashMap<String, usize>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let (offset, limit) = (query["offset"], query["limit"]);
                Json(json!({"data": notes(offset..(offset + limit).min(5))}))
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    paginate: { kind: offset_limit, offset_param: offset, limit_param: limit, limit: 2 }\n    records: $.data[*]",
        "",
    ));
    let sink = MemorySink::default();
    let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..5));
    assert_eq!(
        requests.load(Ordering::SeqCst),
        3,
        "pages of 2, 2 and 1: the short page ends it"
    );
}

#[tokio::test]
async fn page_numbers_stop_on_an_empty_page() {
    // Strava: plain arrays, `page` and `per_page`; the end is an empty array.
    let app = axum::Router::new().route(
        "/api/v3/athlete/activities",
        get(|Query(query): Query<HashMap<String, usize>>| async move {
            assert_eq!(query["per_page"], 2);
            let start = (query["page"] - 1) * 2;
            Json(json!(notes(start..(start + 2).min(4))))
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /api/v3/athlete/activities }\n    paginate: { kind: page_number, page_param: page, size_param: per_page, size: 2 }\n    records: $[*]",
        "",
    ));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..4));
    assert_eq!(
        recorder.totals().pages,
        3,
        "pages 1 and 2 are full, page 3 is empty"
    );
}

#[tokio::test]
async fn a_repeated_token_is_an_error_not_a_loop() {
    let app = axum::Router::new().route(
        "/items",
        get(|| async { Json(json!({"items": notes(0..1), "next": "same"})) }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    paginate: { kind: cursor, token: $.next, param: cursor }\n    records: $.items[*]",
        "",
    ));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error.kind, SyncErrorKind::Pagination(_)),
        "{error}"
    );
    assert_eq!(recorder.totals().requests, 2);
}

// ----- retries ------------------------------------------------------------------------------

/// A handler that answers `failures` with `failure()` first, then the page.
fn flaky<F, R>(failures: usize, failure: F) -> (axum::Router, Arc<AtomicUsize>)
where
    F: Fn() -> R + Clone + Send + Sync + 'static,
    R: IntoResponse,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/items",
        get(move || {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            let failure = failure.clone();
            async move {
                if call < failures {
                    failure().into_response()
                } else {
                    Json(json!({"items": notes(0..2)})).into_response()
                }
            }
        }),
    );
    (app, calls)
}

fn simple_spec() -> Arc<engine::spec::ConnectorSpec> {
    spec_from(&spec_yaml(
        "    request: { path: /items }\n    records: $.items[*]",
        "",
    ))
}

#[tokio::test]
async fn status_429_waits_as_retry_after_says() {
    let (app, calls) = flaky(1, || {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
    });
    let server = serve(app).await;
    let sink = MemorySink::default();
    let (result, recorder) = run(&simple_spec(), &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(recorder.totals().retries, 1);
    let retry = recorder
        .events()
        .into_iter()
        .find(|event| event.starts_with("Retry"))
        .unwrap();
    assert!(
        retry.contains("wait: 1s") && retry.contains("status 429"),
        "{retry}"
    );
}

#[tokio::test]
async fn status_503_then_success() {
    let (app, calls) = flaky(2, || StatusCode::SERVICE_UNAVAILABLE);
    let server = serve(app).await;
    let sink = MemorySink::default();
    let (result, recorder) = run(&simple_spec(), &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(recorder.totals().retries, 2);
    assert_eq!(ids(&sink), expected_ids(0..2));
}

#[tokio::test]
async fn truncated_json_is_retried() {
    let (app, calls) = flaky(1, || {
        (
            [("content-type", "application/json")],
            r#"{"items": [{"id": "n0", "ti"#,
        )
    });
    let server = serve(app).await;
    let sink = MemorySink::default();
    let (result, recorder) = run(&simple_spec(), &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let retry = recorder
        .events()
        .into_iter()
        .find(|event| event.starts_with("Retry"))
        .unwrap();
    assert!(retry.contains("JSON body could not be decoded"), "{retry}");
}

#[tokio::test]
async fn a_connection_reset_mid_body_is_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw server: the first response promises 500 bytes and hangs up after a few.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut connection_number = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            connection_number += 1;
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).await;
            if connection_number == 1 {
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"items\": [").await;
                drop(socket);
            } else {
                let body = json!({"items": notes(0..2)}).to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        }
    });
    let server = url::Url::parse(&format!("http://{address}")).unwrap();
    let sink = MemorySink::default();
    let (result, recorder) = run(&simple_spec(), &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(recorder.totals().retries, 1);
    assert_eq!(ids(&sink), expected_ids(0..2));
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/items",
        get(move || {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Json(json!({"items": notes(0..1)}))
            }
        }),
    );
    let server = serve(app).await;
    let sink = MemorySink::default();
    let options = RunOptions {
        timeout: Duration::from_millis(300),
        ..RunOptions::default()
    };
    let (result, recorder) = run(&simple_spec(), &server, &sink, options).await;
    result.unwrap();
    let retry = recorder
        .events()
        .into_iter()
        .find(|event| event.starts_with("Retry"))
        .unwrap();
    assert!(retry.contains("timed out"), "{retry}");
}

#[tokio::test]
async fn other_client_errors_fail_at_once_with_a_useful_message() {
    let (app, calls) = flaky(usize::MAX, || {
        (
            StatusCode::FORBIDDEN,
            r#"{"error": {"code": 403, "message": "Request had insufficient authentication scopes."}}"#,
        )
    });
    let server = serve(app).await;
    let sink = MemorySink::default();
    let (result, _) = run(&simple_spec(), &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a 403 is not retried");
    let message = error.to_string();
    assert!(
        message.starts_with(
            "test_api / items / GET https://api.example.com/items: the provider answered 403"
        ),
        "{message}"
    );
    assert!(
        message.contains("insufficient authentication scopes"),
        "{message}"
    );
    assert!(error.hint().contains("scopes"), "{}", error.hint());
}

#[tokio::test]
async fn retries_run_out() {
    let (app, calls) = flaky(usize::MAX, || StatusCode::INTERNAL_SERVER_ERROR);
    let server = serve(app).await;
    let sink = MemorySink::default();
    let (result, _) = run(&simple_spec(), &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "max_attempts is 3");
    assert!(
        matches!(
            error.kind,
            SyncErrorKind::Http(HttpError::RetriesExhausted { attempts: 3, .. })
        ),
        "{error}"
    );
    assert!(error.hint().contains("try again later"));
}

#[tokio::test]
async fn a_401_with_static_credentials_asks_to_reconnect() {
    let (app, calls) = flaky(usize::MAX, || (StatusCode::UNAUTHORIZED, "invalid token"));
    let server = serve(app).await;
    let spec = spec_from(
        &spec_yaml("    request: { path: /items }\n    records: $.items[*]", "")
            .replace(
                "kind: none",
                "kind: bearer\n  token: \"{{ secrets.token }}\"",
            )
            .replace(
                "retry:",
                "config:\n  token: { description: The API token., secret: true }\nretry:",
            ),
    );
    let sink = MemorySink::default();
    let mut config = serde_json::Map::new();
    config.insert("token".to_owned(), json!("expired"));
    let (result, _) = run(
        &spec,
        &server,
        &sink,
        RunOptions {
            config,
            ..RunOptions::default()
        },
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        matches!(
            error.kind,
            SyncErrorKind::Http(HttpError::Unauthorized { .. })
        ),
        "{error}"
    );
    assert!(error.hint().contains("connect the account again"));
}

// ----- auth on the wire ---------------------------------------------------------------------

#[tokio::test]
async fn api_keys_and_connector_headers_are_sent() {
    let app = axum::Router::new().route(
        "/items",
        get(
            |headers: HeaderMap, Query(query): Query<HashMap<String, String>>| async move {
                assert_eq!(headers["x-api-version"], "2022-06-28");
                assert_eq!(query.get("key").map(String::as_str), Some("k-123"));
                Json(json!({"items": notes(0..1)}))
            },
        ),
    );
    let server = serve(app).await;
    let yaml = spec_yaml("    request: { path: /items }\n    records: $.items[*]", "headers:\n  X-Api-Version: \"2022-06-28\"\nconfig:\n  api_key: { description: The key., secret: true }")
        .replace("kind: none", "kind: api_key\n  location: query\n  name: key\n  value: \"{{ secrets.api_key }}\"");
    let spec = spec_from(&yaml);
    let mut config = serde_json::Map::new();
    config.insert("api_key".to_owned(), json!("k-123"));
    let sink = MemorySink::default();
    let (result, _) = run(
        &spec,
        &server,
        &sink,
        RunOptions {
            config,
            ..RunOptions::default()
        },
    )
    .await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..1));
}

// ----- rate limits --------------------------------------------------------------------------

fn limited_spec(scope: &str) -> Arc<engine::spec::ConnectorSpec> {
    spec_from(&spec_yaml(
        "    request: { path: /items }\n    records: $.items[*]",
        &format!("rate_limits:\n  - {{ requests: 2, per: 1m, scope: {scope} }}"),
    ))
}

#[test]
fn user_scoped_limits_are_shared_by_an_integrations_streams_only() {
    let clock = FakeRelativeClock::default();
    let registry = RateLimitRegistry::with_fake_clock(clock.clone());
    let spec = limited_spec("user");
    let stream_a = registry.gate(&spec, "alice");
    let stream_b = registry.gate(&spec, "alice");
    let other_user = registry.gate(&spec, "bob");
    assert!(stream_a.check().is_ok());
    assert!(stream_b.check().is_ok());
    // Two requests per minute: the third waits 30 s, whichever stream asks.
    assert_eq!(stream_a.check(), Err(Duration::from_secs(30)));
    assert_eq!(stream_b.check(), Err(Duration::from_secs(30)));
    assert!(
        other_user.check().is_ok(),
        "another integration has its own allowance"
    );
    clock.advance(Duration::from_secs(30));
    assert!(stream_b.check().is_ok());
    assert!(stream_a.check().is_err());
}

#[test]
fn app_scoped_limits_are_shared_by_every_integration_of_a_connector() {
    let clock = FakeRelativeClock::default();
    let registry = RateLimitRegistry::with_fake_clock(clock.clone());
    let spec = limited_spec("app");
    let alice = registry.gate(&spec, "alice");
    let bob = registry.gate(&spec, "bob");
    assert!(alice.check().is_ok());
    assert!(bob.check().is_ok());
    assert_eq!(alice.check(), Err(Duration::from_secs(30)));
    assert_eq!(bob.check(), Err(Duration::from_secs(30)));
    let mut other_connector = (*spec).clone();
    other_connector.id = "another_api".to_owned();
    assert!(
        registry.gate(&other_connector, "alice").check().is_ok(),
        "other connectors are not affected"
    );
}

#[tokio::test]
async fn waiting_for_a_rate_limit_is_reported_not_an_error() {
    let app = axum::Router::new().route(
        "/items",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            match query.get("page").map(String::as_str) {
                None => Json(json!({"items": notes(0..1), "next": "p2"})),
                Some("p2") => Json(json!({"items": notes(1..2), "next": "p3"})),
                _ => Json(json!({"items": notes(2..3)})),
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    paginate: { kind: cursor, token: $.next, param: page }\n    records: $.items[*]",
        "rate_limits:\n  - { requests: 1, per: 100ms }",
    ));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..3));
    assert!(
        recorder.totals().rate_limit_waits >= 1,
        "{:?}",
        recorder.totals()
    );
}

// ----- mapping, validation, store -----------------------------------------------------------

fn media_spec() -> Arc<engine::spec::ConnectorSpec> {
    spec_from(&spec_yaml("", "").replace(
        "    model: note\n    id: $.id\n    map:\n      title: $.title\n",
        r#"    model: media
    request: { path: /media }
    records: $.items[*]
    id: $.id
    map:
      media_type: "{{ record.kind or ('video' if record.mimeType is startingwith('video/') else 'photo') }}"
      file_path: $.baseUrl
      width: $.width
      taken_at: { from: $.time, as: epoch_millis }
"#,
    ))
}

#[tokio::test]
async fn records_that_do_not_fit_are_rejected_with_a_reason_and_kept() {
    let app = axum::Router::new().route(
        "/media",
        get(|| async {
            Json(json!({"items": [
                {"id": "a", "mimeType": "image/jpeg", "baseUrl": "https://example.com/a", "width": "4032", "time": "1700000000000"},
                {"id": "b", "mimeType": "image/jpeg", "baseUrl": "https://example.com/b", "width": "wide", "time": "1700000000000"},
                {"id": "c", "mimeType": "video/mp4", "width": 1920, "time": 1700000000000u64},
                {"mimeType": "image/png", "baseUrl": "https://example.com/d"},
                {"id": "e", "kind": "hologram", "mimeType": "image/jpeg", "baseUrl": "https://example.com/e", "width": 1}
            ]}))
        }),
    );
    let server = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.sqlite"))
        .await
        .unwrap();
    let (result, recorder) = run(&media_spec(), &server, &store, RunOptions::default()).await;
    result.unwrap();
    let totals = recorder.totals();
    assert_eq!(
        (totals.written.new, totals.written.rejected),
        (1, 4),
        "{totals:?}"
    );
    let rejects: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT source_object_id, reason FROM rejects ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        rejects[0],
        (
            Some("b".to_owned()),
            "width: \"wide\" is not a whole number".to_owned()
        )
    );
    assert_eq!(rejects[1].0.as_deref(), Some("c"));
    assert!(
        rejects[1].1.contains("file_path: required"),
        "{}",
        rejects[1].1
    );
    assert_eq!(rejects[2], (None, "the record has no id".to_owned()));
    // Converted, but not one of the model's media types: the model's schema refuses it.
    assert_eq!(rejects[3].0.as_deref(), Some("e"));
    assert!(
        rejects[3]
            .1
            .starts_with("does not fit model `media`: media_type: \"hologram\""),
        "{}",
        rejects[3].1
    );
    let stored: (String,) = sqlx::query_as("SELECT data FROM records WHERE source_object_id = 'a'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let data: Value = serde_json::from_str(&stored.0).unwrap();
    assert_eq!(data["width"], 4032);
    assert_eq!(data["taken_at"], "2023-11-14T22:13:20Z");
    assert_eq!(data["source_platform"], "test_api");
}

#[tokio::test]
async fn a_second_sync_of_unchanged_data_writes_nothing_and_changes_are_updates() {
    let version = Arc::new(AtomicUsize::new(0));
    let current = Arc::clone(&version);
    let app = axum::Router::new().route(
        "/items",
        get(move || {
            let version = current.load(Ordering::SeqCst);
            async move {
                let mut items = notes(0..3);
                if version > 0 {
                    items[1]["title"] = json!("Renamed");
                }
                Json(json!({"items": items}))
            }
        }),
    );
    let server = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.sqlite");
    let spec = simple_spec();
    for (round, expected) in [(0, (3, 0, 0)), (0, (0, 0, 3)), (1, (0, 1, 2))] {
        version.store(round, Ordering::SeqCst);
        let store = SqliteStore::open(&path).await.unwrap();
        let (result, recorder) = run(&spec, &server, &store, RunOptions::default()).await;
        result.unwrap();
        let written = recorder.totals().written;
        assert_eq!((written.new, written.updated, written.unchanged), expected);
        assert_eq!(store.count("test_api").await.unwrap(), 3);
    }
}

#[tokio::test]
async fn tombstones_mark_stored_records_deleted_and_keep_their_data() {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&cancelled);
    let app = axum::Router::new().route(
        "/items",
        get(move || {
            let cancelled = flag.load(Ordering::SeqCst) == 1;
            async move {
                let second = if cancelled { json!({"id": "n1", "status": "cancelled"}) } else { json!({"id": "n1", "title": "Note 1", "status": "confirmed"}) };
                Json(json!({"items": [{"id": "n0", "title": "Note 0", "status": "confirmed"}, second]}))
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    records: $.items[*]\n    deleted: record.status == 'cancelled'",
        "",
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.sqlite");
    for round in 0..2 {
        cancelled.store(round, Ordering::SeqCst);
        let store = SqliteStore::open(&path).await.unwrap();
        let (result, recorder) = run(&spec, &server, &store, RunOptions::default()).await;
        result.unwrap();
        if round == 1 {
            assert_eq!(recorder.totals().written.deleted, 1);
        }
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let (data, deleted_at): (String, Option<String>) =
        sqlx::query_as("SELECT data, deleted_at FROM records WHERE source_object_id = 'n1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(deleted_at.is_some());
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap()["title"],
        "Note 1",
        "the tombstone keeps what was imported"
    );
}

#[tokio::test]
async fn substreams_run_once_per_parent_record() {
    let app = axum::Router::new()
        .route("/calendars", get(|| async { Json(json!({"items": [{"id": "work@x"}, {"id": "home"}]})) }))
        .route(
            "/calendars/{calendar}/events",
            get(|axum::extract::Path(calendar): axum::extract::Path<String>| async move {
                Json(json!({"items": [{"id": format!("{calendar}-e1"), "title": format!("Event in {calendar}")}]}))
            }),
        );
    let server = serve(app).await;
    let yaml = with_streams(
        r#"  calendars:
    request: { path: /calendars }
    records: $.items[*]
    id: $.id
  items:
    model: note
    parent: { stream: calendars, fields: { calendar_id: $.id } }
    request: { path: "/calendars/{{ parent.calendar_id | urlencode }}/events" }
    records: $.items[*]
    id: $.id
    map:
      title: $.title
      tags: "{{ parent.calendar_id }}"
"#,
    );
    let spec = spec_from(&yaml.replace(
        "      tags: \"{{ parent.calendar_id }}\"\n",
        "      content: \"{{ parent.calendar_id }}\"\n",
    ));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), ["work@x-e1", "home-e1"]);
    assert_eq!(
        sink.contents().records["items"][0].data().unwrap()["content"],
        "work@x"
    );
    assert_eq!(recorder.totals().requests, 3);
    assert!(
        !sink.contents().records.contains_key("calendars"),
        "a stream without a model stores nothing"
    );
}

// ----- body formats -------------------------------------------------------------------------

#[tokio::test]
async fn csv_xml_and_json_lines_bodies() {
    let app = axum::Router::new()
        .route("/export.csv", get(|| async { "id,title\nn0,Note 0\nn1,\"Note 1, with comma\"\n" }))
        .route("/feed.xml", get(|| async { r#"<?xml version="1.0"?><feed><entry id="n0"><title>Note 0</title></entry><entry id="n1"><title>A &amp; B</title></entry></feed>"# }))
        .route("/items.jsonl", get(|| async { "{\"id\": \"n0\", \"title\": \"Note 0\"}\n{\"id\": \"n1\", \"title\": \"Note 1\"}\n" }));
    let server = serve(app).await;
    for (path, decode, records, id, second_title) in [
        ("/export.csv", "csv", "$[*]", "$.id", "Note 1, with comma"),
        ("/feed.xml", "xml", "$.feed.entry[*]", "$['@id']", "A & B"),
        ("/items.jsonl", "jsonl", "$[*]", "$.id", "Note 1"),
    ] {
        let stream = format!(
            "    request: {{ path: {path} }}\n    decode: {decode}\n    records: \"{records}\""
        );
        let spec = spec_from(
            &spec_yaml(&stream, "").replace("    id: $.id\n", &format!("    id: \"{id}\"\n")),
        );
        let sink = MemorySink::default();
        let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(ids(&sink), expected_ids(0..2), "{decode}");
        assert_eq!(
            sink.contents().records["items"][1].data().unwrap()["title"],
            second_title,
            "{decode}"
        );
    }
}

/// Parent records' substream requests run a few at a time: up to `parent.concurrency`, never
/// more.
#[tokio::test]
async fn substreams_run_concurrently_up_to_the_spec_limit() {
    for limit in [1_usize, 3] {
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counter, peak) = (Arc::clone(&in_flight), Arc::clone(&most));
        let app = axum::Router::new()
            .route(
                "/calendars",
                get(|| async {
                    let items: Vec<Value> = (0..8).map(|index| json!({"id": format!("c{index}")})).collect();
                    Json(json!({"items": items}))
                }),
            )
            .route(
                "/calendars/{calendar}/events",
                get(move |axum::extract::Path(calendar): axum::extract::Path<String>| {
                    let (counter, peak) = (Arc::clone(&counter), Arc::clone(&peak));
                    async move {
                        let now = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        // Long enough for the others to start if they are allowed to.
                        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                        counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        Json(json!({"items": [{"id": format!("{calendar}-e1"), "title": "Event"}]}))
                    }
                }),
            );
        let server = serve(app).await;
        let yaml = with_streams(&format!(
            r#"  calendars:
    request: {{ path: /calendars }}
    records: $.items[*]
    id: $.id
  items:
    model: note
    parent: {{ stream: calendars, fields: {{ calendar_id: $.id }}, concurrency: {limit} }}
    request: {{ path: "/calendars/{{{{ parent.calendar_id }}}}/events" }}
    records: $.items[*]
    id: $.id
    map:
      title: $.title
"#
        ));
        let sink = MemorySink::default();
        let (result, _) = run(&spec_from(&yaml), &server, &sink, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(ids(&sink).len(), 8);
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            limit,
            "at most {limit} at once"
        );
    }
}

/// Notion-shaped blocks: a page's blocks, and the children of blocks that have them, down to
/// `recurse.max_depth` levels below the first.
#[tokio::test]
async fn a_recursing_stream_follows_children_down_to_its_depth_bound() {
    // A chain: page → b1 → b1.1 → b1.1.1 → b1.1.1.1, and b2 without children.
    fn children(of: &str) -> Vec<Value> {
        let block = |id: &str, has_children: bool| {
            json!({"object": "block", "id": id, "has_children": has_children, "type": "paragraph",
                   "paragraph": {"rich_text": [{"type": "text", "plain_text": format!("Text of {id}")}]}})
        };
        match of {
            "page" => vec![block("b1", true), block("b2", false)],
            "b1" => vec![block("b1.1", true)],
            "b1.1" => vec![block("b1.1.1", true)],
            "b1.1.1" => vec![block("b1.1.1.1", false)],
            _ => vec![],
        }
    }
    let fetched = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&fetched);
    let app = axum::Router::new()
        .route("/pages", get(|| async { Json(json!({"object": "list", "results": [{"object": "page", "id": "page"}], "next_cursor": null, "has_more": false})) }))
        .route(
            "/blocks/{block}/children",
            get(move |axum::extract::Path(block): axum::extract::Path<String>| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().unwrap().push(block.clone());
                    Json(json!({"object": "list", "results": children(&block), "next_cursor": null, "has_more": false, "type": "block_list"}))
                }
            }),
        );
    let server = serve(app).await;
    let yaml = with_streams(
        r#"  pages:
    request: { path: /pages }
    records: $.results[*]
    id: $.id
  items:
    model: note
    parent: { stream: pages, fields: { block_id: $.id } }
    request: { path: "/blocks/{{ parent.block_id }}/children" }
    records: $.results[*]
    id: $.id
    recurse:
      fields: { block_id: $.id }
      when: record.has_children
      max_depth: 2
    map:
      title: $.paragraph.rich_text[0].plain_text
"#,
    );
    let sink = MemorySink::default();
    let (result, _) = run(&spec_from(&yaml), &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(
        ids(&sink),
        ["b1", "b2", "b1.1", "b1.1.1"],
        "two levels below the first, no deeper"
    );
    assert_eq!(
        *fetched.lock().unwrap(),
        ["page", "b1", "b1.1"],
        "b2 has no children: not fetched; b1.1.1 is past the bound"
    );
}

/// Slack answers errors with HTTP 200 and `{"ok": false, "error": ...}`: the spec's
/// `response_error` turns such a page into a failure that names connector, stream, request and
/// the provider's message, instead of an empty page.
#[tokio::test]
async fn errors_inside_http_200_fail_the_stream_with_the_providers_message() {
    let app = axum::Router::new().route(
        "/items",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            match query.get("cursor").map(String::as_str) {
                None => Json(json!({"ok": true, "items": notes(0..2), "response_metadata": {"next_cursor": "c2"}})),
                _ => Json(json!({"ok": false, "error": "not_in_channel"})),
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    paginate: { kind: cursor, token: $.response_metadata.next_cursor, param: cursor }\n    records: $.items[*]",
        "response_error:\n  when: response.ok == false\n  message: $.error",
    ));
    let sink = MemorySink::default();
    let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
    let error = result.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("test_api / items / GET https://api.example.com/items?cursor=c2")
            && text.contains("the provider answered with an error: not_in_channel"),
        "{text}"
    );
    assert!(error.hint().contains("check the account's access"));
    assert_eq!(ids(&sink), expected_ids(0..2), "the good page is kept");
}

/// Microsoft Graph's delta queries: next-URL paging whose last page carries a `@odata.deltaLink`;
/// kept (`incremental: page_token`), the next run calls that URL and receives only changes,
/// removals included.
#[tokio::test]
async fn a_kept_delta_link_is_called_on_the_next_run() {
    let calls = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/items",
        get(move |Query(query): Query<HashMap<String, String>>| {
            let log = Arc::clone(&log);
            async move {
                let base = "https://api.example.com/items";
                let call = query.keys().next().cloned().unwrap_or_default();
                log.lock().unwrap().push(call.clone());
                Json(match call.as_str() {
                    "$skiptoken" => json!({"value": notes(2..3), "@odata.deltaLink": format!("{base}?$deltatoken=d1")}),
                    "$deltatoken" => json!({"value": [{"id": "n0", "@removed": {"reason": "deleted"}}, {"id": "n7", "title": "Note 7"}], "@odata.deltaLink": format!("{base}?$deltatoken=d2")}),
                    _ => json!({"value": notes(0..2), "@odata.nextLink": format!("{base}?$skiptoken=s1")}),
                })
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    paginate: { kind: next_url, from: { body: \"$['@odata.nextLink']\" } }\n    records: $.value[*]\n    incremental: { kind: page_token, token: \"$['@odata.deltaLink']\" }\n    deleted: \"record['@removed'] is defined\"",
        "",
    ));
    let sink = MemorySink::default();
    run(&spec, &server, &sink, RunOptions::default())
        .await
        .0
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), ["", "$skiptoken"]);
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        ["", "$skiptoken", "$deltatoken"],
        "one call: the delta link"
    );
    let written = recorder.totals().written;
    assert_eq!((written.new, written.deleted), (1, 1));
    let contents = sink.contents();
    let deleted: Vec<&str> = contents.records["items"]
        .iter()
        .filter(|record| record.deleted)
        .map(|record| record.id.as_str())
        .collect();
    assert_eq!(deleted, ["n0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_once_started_reaches_the_server_without_being_awaited() {
    // A run asks for its next page before it maps the current one (`sync`'s read-ahead); that
    // only helps if the exchange goes on while the run is busy and does not poll it.
    use engine::credentials::static_auth::StaticAuth;
    use engine::events::Counters;
    use engine::http::HttpRequest;
    use std::sync::atomic::AtomicBool;

    let asked = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&asked);
    let server = serve(axum::Router::new().route(
        "/v1/items",
        get(move || {
            seen.store(true, Ordering::SeqCst);
            async { Json(json!({"items": [{"id": "1", "title": "One"}]})) }
        }),
    ))
    .await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /v1/items }\n    records: $.items[*]\n",
        "",
    ));
    let http = hypernet_tests::sandbox_client(&spec, &server);
    let request = HttpRequest {
        method: reqwest::Method::GET,
        url: url::Url::parse("https://api.example.com/v1/items").unwrap(),
        headers: vec![],
        body: None,
    };
    let (auth, counters) = (StaticAuth::None, Counters::default());
    let mut fetch = Box::pin(http.fetch(&request, engine::spec::Decode::Json, &auth, &counters));
    // Polled once, as the run starts it; then left alone. (On a busy machine the exchange may
    // even be over by the time that one poll looks.)
    let mut early = None;
    std::future::poll_fn(|context| {
        if let std::task::Poll::Ready(result) = fetch.as_mut().poll(context) {
            early = Some(result);
        }
        std::task::Poll::Ready(())
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !asked.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the server while nobody awaited it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let page = match early {
        Some(result) => result.unwrap(),
        None => fetch.await.unwrap(),
    };
    assert_eq!(page.body, json!({"items": [{"id": "1", "title": "One"}]}));
}
