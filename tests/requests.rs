//! What goes on the wire, over real loopback HTTP: API keys and the connector's headers, and a
//! request that, once started, reaches the server while nobody awaits it (the run's read-ahead).

#[path = "common/test_api.rs"]
mod test_api;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::routing::get;
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::json;
use test_api::{expected_ids, ids, notes, spec_yaml};

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
        max_body: None,
    };
    let (auth, counters) = (StaticAuth::None, Counters::default());
    let decoder = engine::decode::Decoder::from(engine::spec::Decode::Json);
    let mut fetch = Box::pin(engine::source::http::fetch_page(
        &http, &request, &decoder, &auth, &counters,
    ));
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
