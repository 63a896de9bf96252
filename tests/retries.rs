//! Failed requests over real loopback HTTP: what is retried (429 as `Retry-After` says, 5xx,
//! truncated bodies, resets, timeouts) until the attempts run out, and what fails at once with a
//! useful message and hint (other 4xx, a 401, an error a provider reports inside an HTTP 200).

#[path = "common/test_api.rs"]
mod test_api;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use engine::http::HttpError;
use engine::run::SyncErrorKind;
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::json;
use test_api::{expected_ids, ids, notes, simple_spec, spec_yaml};

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
