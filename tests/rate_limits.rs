//! Rate limits: user- and app-scoped allowances on a fake clock, and a run over real loopback
//! HTTP that waits for its limit and reports the wait instead of failing.

#[path = "common/test_api.rs"]
mod test_api;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::Query;
use axum::routing::get;
use engine::ratelimit::{FakeRelativeClock, RateLimitRegistry};
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::json;
use test_api::{expected_ids, ids, notes, spec_yaml};

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
