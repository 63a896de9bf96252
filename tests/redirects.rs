//! Redirects over real loopback HTTP (issue 22, point 1): every hop is checked as the first
//! request is (https, an allowed host); within the origin a redirect is the same request again;
//! to another allowed origin only a bare GET follows (no credentials, none of the spec's
//! headers, no body); anything else fails the stream with the reason, and the other host hears
//! nothing.

#[path = "common/test_api.rs"]
mod test_api;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use engine::http::{HttpError, SANDBOX_HOST_HEADER};
use engine::run::SyncErrorKind;
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::json;
use test_api::{expected_ids, ids, notes, spec_yaml};

const KEY: &str = "k-secret-123";

/// What a server saw of one request: the host it was meant for, the method, its headers and
/// body.
#[derive(Debug, Clone)]
struct Seen {
    host: String,
    method: String,
    api_key: Option<String>,
    version: Option<String>,
    referer: Option<String>,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn seen(log: &Log, method: &axum::http::Method, headers: &HeaderMap, body: &str) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    log.lock().unwrap().push(Seen {
        host: header(SANDBOX_HOST_HEADER).unwrap_or_default(),
        method: method.to_string(),
        api_key: header("x-api-key"),
        version: header("x-api-version"),
        referer: header("referer"),
        body: body.to_owned(),
    });
}

/// The Test API with an API key in a header, a connector header, `cdn.example.com` allowed too,
/// and the `items` stream as `request` says.
fn spec(request: &str) -> Arc<engine::spec::ConnectorSpec> {
    let yaml = spec_yaml(
        &format!("    request: {request}\n    records: $.items[*]"),
        "headers:\n  X-Api-Version: \"2022-06-28\"\nconfig:\n  api_key: { description: The key., secret: true }",
    )
    .replace(
        "kind: none",
        "kind: api_key\n  location: header\n  name: X-Api-Key\n  value: \"{{ secrets.api_key }}\"",
    )
    .replace(
        "allowed_hosts: [api.example.com]",
        "allowed_hosts: [api.example.com, cdn.example.com]",
    );
    spec_from(&yaml)
}

fn options() -> RunOptions {
    let mut config = serde_json::Map::new();
    config.insert("api_key".to_owned(), json!(KEY));
    RunOptions {
        config,
        ..RunOptions::default()
    }
}

/// A server whose `/items` redirects with `status` to `location` and whose every other path
/// answers the page; each request logged.
fn redirecting(status: StatusCode, location: String) -> (axum::Router, Log) {
    let log = Log::default();
    let (first, rest) = (Arc::clone(&log), Arc::clone(&log));
    let app = axum::Router::new()
        .route(
            "/items",
            any(
                move |method: axum::http::Method, headers: HeaderMap, body: String| async move {
                    seen(&first, &method, &headers, &body);
                    (status, [("location", location)], "moved").into_response()
                },
            ),
        )
        .fallback(
            move |method: axum::http::Method, headers: HeaderMap, body: String| async move {
                seen(&rest, &method, &headers, &body);
                Json(json!({"items": notes(0..2)}))
            },
        );
    (app, log)
}

/// Runs the `items` stream as `request` says against a server whose `/items` redirects with
/// `status` to `location`: the run's result, what the server saw, and what was stored.
async fn follow(
    status: StatusCode,
    location: &str,
    request: &str,
) -> (
    Result<engine::run::RunReport, engine::run::SyncError>,
    Log,
    MemorySink,
) {
    let (app, log) = redirecting(status, location.to_owned());
    let server = serve(app).await;
    let sink = MemorySink::default();
    let (result, _) = run(&spec(request), &server, &sink, options()).await;
    (result, log, sink)
}

/// A server that records whatever reaches it.
async fn bystander() -> (url::Url, Log) {
    let log = Log::default();
    let inner = Arc::clone(&log);
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, headers: HeaderMap, body: String| async move {
            seen(&inner, &method, &headers, &body);
            Json(json!({"items": [{"id": "stolen", "title": "Not the user's"}]}))
        },
    );
    (serve(app).await, log)
}

fn refused_redirect(result: Result<engine::run::RunReport, engine::run::SyncError>) -> String {
    let error = result.expect_err("the redirect must not be followed");
    assert!(
        matches!(error.kind, SyncErrorKind::Http(HttpError::Redirect { .. })),
        "{error}"
    );
    assert!(
        error.hint().contains("connector's authors"),
        "{}",
        error.hint()
    );
    let message = error.to_string();
    assert!(!message.contains(KEY), "{message}");
    message
}

#[tokio::test]
async fn a_redirect_to_another_port_is_refused_and_that_server_hears_nothing() {
    for status in [StatusCode::FOUND, StatusCode::TEMPORARY_REDIRECT] {
        let (elsewhere, heard) = bystander().await;
        let (app, log) = redirecting(status, format!("{elsewhere}steal"));
        let server = serve(app).await;
        let sink = MemorySink::default();
        let (result, _) = run(&spec("{ path: /items }"), &server, &sink, options()).await;
        let message = refused_redirect(result);
        assert!(message.contains("not https"), "{message}");
        assert!(heard.lock().unwrap().is_empty(), "{status}: {heard:?}");
        assert_eq!(log.lock().unwrap().len(), 1, "asked once, not retried");
        assert!(ids(&sink).is_empty(), "nothing stored");
    }
}

#[tokio::test]
async fn a_redirect_to_an_undeclared_host_is_refused() {
    let (app, log) = redirecting(
        StatusCode::MOVED_PERMANENTLY,
        "https://collector.example/steal?key=1".to_owned(),
    );
    let server = serve(app).await;
    let sink = MemorySink::default();
    let (result, _) = run(&spec("{ path: /items }"), &server, &sink, options()).await;
    let message = refused_redirect(result);
    assert!(message.contains("collector.example"), "{message}");
    // The sandbox transport would have sent it to the same loopback server: it was not.
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn within_the_origin_a_redirect_is_the_same_request_again() {
    let (result, log, sink) = follow(
        StatusCode::PERMANENT_REDIRECT,
        "/v2/items?page=1",
        "{ method: POST, path: /items, body: { json: { q: all } } }",
    )
    .await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..2));
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    let again = &log[1];
    assert_eq!(again.host, "api.example.com");
    assert_eq!(again.method, "POST", "308 keeps the method");
    assert_eq!(again.body, r#"{"q":"all"}"#, "and the body");
    assert_eq!(again.api_key.as_deref(), Some(KEY), "and the credentials");
    assert_eq!(again.version.as_deref(), Some("2022-06-28"));
}

#[tokio::test]
async fn to_another_allowed_host_only_a_bare_get_follows() {
    let (result, log, sink) = follow(
        StatusCode::FOUND,
        "https://cdn.example.com/items.json",
        "{ method: POST, path: /items, body: { json: { key: k-secret-123 } } }",
    )
    .await;
    result.unwrap();
    assert_eq!(ids(&sink), expected_ids(0..2));
    let log = log.lock().unwrap();
    let followed = &log[1];
    assert_eq!(followed.host, "cdn.example.com");
    assert_eq!(followed.method, "GET", "302 turns into a GET");
    assert_eq!(followed.api_key, None, "no credentials across origins");
    assert_eq!(followed.version, None, "none of the spec's headers");
    assert_eq!(followed.body, "", "no body");
    assert_eq!(followed.referer, None, "no Referer naming the first URL");
}

#[tokio::test]
async fn a_307_would_resend_the_body_to_another_host_and_is_refused() {
    let (result, log, _sink) = follow(
        StatusCode::TEMPORARY_REDIRECT,
        "https://cdn.example.com/items",
        "{ method: POST, path: /items, body: { json: { secret: k-secret-123 } } }",
    )
    .await;
    let message = refused_redirect(result);
    assert!(message.contains("body"), "{message}");
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_redirect_loop_ends() {
    let log = Log::default();
    let inner = Arc::clone(&log);
    let app = axum::Router::new().route(
        "/items",
        get(
            move |method: axum::http::Method, headers: HeaderMap| async move {
                seen(&inner, &method, &headers, "");
                (StatusCode::FOUND, [("location", "/items")]).into_response()
            },
        ),
    );
    let server = serve(app).await;
    let sink = MemorySink::default();
    let (result, _) = run(&spec("{ path: /items }"), &server, &sink, options()).await;
    let message = refused_redirect(result);
    assert!(message.contains("too many redirects"), "{message}");
    assert_eq!(
        log.lock().unwrap().len(),
        6,
        "the request and five redirects"
    );
}

/// Outside the sandbox, a declared host is resolved and refused when it names no public
/// address (DNS rebinding, a metadata service): `localhost` resolves to loopback from
/// /etc/hosts, with no network needed. Nothing listens there: a refusal says why.
#[tokio::test]
async fn a_declared_host_that_resolves_to_a_private_address_is_refused() {
    use engine::credentials::static_auth::StaticAuth;
    use engine::events::Counters;
    use engine::http::{ClientOptions, HttpClient, HttpRequest, Transport};
    use engine::ratelimit::RateGate;
    use engine::spec::HostPattern;

    let spec = spec("{ path: /items }");
    let http = HttpClient::new(
        vec![HostPattern::from("localhost")],
        spec.retry.clone(),
        RateGate::unlimited(),
        ClientOptions {
            transport: Transport::Direct,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let request = HttpRequest {
        method: reqwest::Method::GET,
        url: url::Url::parse("https://localhost:9/items").unwrap(),
        headers: vec![],
        body: None,
        max_body: None,
    };
    let counters = Counters::default();
    let error = http
        .fetch(&request, &StaticAuth::None, &counters, |_| {
            Ok::<_, String>(())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, engine::http::HttpError::NotPublic { .. }),
        "a refusal, not a failure to retry: {error}"
    );
    assert!(
        error.to_string().contains("not a public address"),
        "{error}"
    );
    assert_eq!(counters.totals().retries, 0, "a refusal is not retried");
}
