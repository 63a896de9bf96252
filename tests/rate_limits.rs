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
    assert!(stream_a.check("api.example.com").is_ok());
    assert!(stream_b.check("api.example.com").is_ok());
    // Two requests per minute: the third waits 30 s, whichever stream asks.
    assert_eq!(
        stream_a.check("api.example.com"),
        Err(Duration::from_secs(30))
    );
    assert_eq!(
        stream_b.check("api.example.com"),
        Err(Duration::from_secs(30))
    );
    assert!(
        other_user.check("api.example.com").is_ok(),
        "another integration has its own allowance"
    );
    clock.advance(Duration::from_secs(30));
    assert!(stream_b.check("api.example.com").is_ok());
    assert!(stream_a.check("api.example.com").is_err());
}

#[test]
fn app_scoped_limits_are_shared_by_every_integration_of_a_connector() {
    let clock = FakeRelativeClock::default();
    let registry = RateLimitRegistry::with_fake_clock(clock.clone());
    let spec = limited_spec("app");
    let alice = registry.gate(&spec, "alice");
    let bob = registry.gate(&spec, "bob");
    assert!(alice.check("api.example.com").is_ok());
    assert!(bob.check("api.example.com").is_ok());
    assert_eq!(alice.check("api.example.com"), Err(Duration::from_secs(30)));
    assert_eq!(bob.check("api.example.com"), Err(Duration::from_secs(30)));
    let mut other_connector = (*spec).clone();
    other_connector.id = "another_api".to_owned();
    assert!(
        registry
            .gate(&other_connector, "alice")
            .check("api.example.com")
            .is_ok(),
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

/// Whether a request through `gate` goes at once: `false` when the gate holds it back (it is
/// then left waiting, and dropped).
async fn goes_at_once(gate: &engine::ratelimit::RateGate) -> bool {
    let mut waited = false;
    let went = tokio::time::timeout(
        Duration::from_millis(300),
        gate.acquire("api.example.com", |_| waited = true),
    )
    .await
    .is_ok();
    went && !waited
}

/// An app's daily quota is spent by every process of the service, and a restart does not give
/// it back: two registries (two workers, each with its own connection to the database) share
/// one count, and a third opened afterwards (a restart) finds it spent. On SQLite and
/// PostgreSQL.
#[tokio::test]
async fn app_and_daily_quotas_are_shared_by_workers_and_kept_across_restarts() {
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    records: $.items[*]",
        "rate_limits:\n  - { requests: 3, per: 1d, scope: app }\n  - { requests: 2, per: 1d, scope: user }",
    ));
    for test in hypernet_tests::test_stores("shared_quota").await {
        let worker = |store: engine::store::AnyStore| {
            RateLimitRegistry::default().with_shared_windows(Arc::new(store))
        };
        let first = worker(test.store.clone());
        let second = worker(engine::store::AnyStore::open(&test.location).await.unwrap());
        // Alice's integration on one worker, Bob's on the other: the app's 3 a day are theirs
        // together.
        let alice = first.gate(&spec, "alice");
        let bob = second.gate(&spec, "bob");
        assert!(goes_at_once(&alice).await, "{}", test.backend);
        assert!(goes_at_once(&bob).await, "{}", test.backend);
        assert!(goes_at_once(&bob).await, "{}", test.backend);
        assert!(
            !goes_at_once(&alice).await,
            "{}: the app's quota is spent across workers",
            test.backend
        );
        drop((first, second));

        // A restart: a new registry on a new connection.
        let restarted = worker(engine::store::AnyStore::open(&test.location).await.unwrap());
        assert!(
            !goes_at_once(&restarted.gate(&spec, "carol")).await,
            "{}: the app's quota stays spent after a restart",
            test.backend
        );
    }
}

/// A user's daily quota is kept across restarts too, for that integration only.
#[tokio::test]
async fn a_users_daily_quota_outlives_a_restart() {
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    records: $.items[*]",
        "rate_limits:\n  - { requests: 2, per: 1d, scope: user }",
    ));
    for test in hypernet_tests::test_stores("daily_quota").await {
        let worker = |store: engine::store::AnyStore| {
            RateLimitRegistry::default().with_shared_windows(Arc::new(store))
        };
        let before = worker(test.store.clone()).gate(&spec, "alice");
        assert!(goes_at_once(&before).await);
        assert!(goes_at_once(&before).await);
        let restarted = worker(engine::store::AnyStore::open(&test.location).await.unwrap());
        assert!(
            !goes_at_once(&restarted.gate(&spec, "alice")).await,
            "{}: alice's quota stays spent",
            test.backend
        );
        assert!(
            goes_at_once(&restarted.gate(&spec, "bob")).await,
            "{}: bob's is his own",
            test.backend
        );
    }
}

#[test]
fn shared_windows_are_aligned_to_the_epoch() {
    use engine::ratelimit::window_at;
    let day = Duration::from_secs(86_400);
    let noon = std::time::UNIX_EPOCH + day * 20_000 + Duration::from_secs(43_200);
    // A day's window is the UTC day, with half of it left at noon.
    assert_eq!(
        window_at(noon, day),
        (20_000 * 86_400, Duration::from_secs(43_200))
    );
    // Fifteen minutes: 12:00:10.5 is 10.5 s into the window that began at noon.
    let later = noon + Duration::from_millis(10_500);
    assert_eq!(
        window_at(later, Duration::from_secs(900)),
        (20_000 * 86_400 + 43_200, Duration::from_millis(889_500))
    );
}

/// A limit with `hosts` counts only the requests to them: Google Photos' API (10,000 a day)
/// and its media bytes (75,000 a day) are two allowances, and a download does not spend the
/// API's.
#[test]
fn a_limit_with_hosts_counts_only_their_requests() {
    let clock = FakeRelativeClock::default();
    let registry = RateLimitRegistry::with_fake_clock(clock.clone());
    let spec = spec_from(
        &spec_yaml(
            "    request: { path: /items }\n    records: $.items[*]",
            "rate_limits:\n  - { requests: 1, per: 1m, hosts: [api.example.com] }\n  - { requests: 2, per: 1m, hosts: ['*.media.example.com'] }",
        )
        .replace(
            "allowed_hosts: [api.example.com]",
            "allowed_hosts: [api.example.com, '*.media.example.com']",
        ),
    );
    let gate = registry.gate(&spec, "alice");
    // The API's one request a minute; then it waits, whatever the media host has left.
    assert!(gate.check("api.example.com").is_ok());
    assert_eq!(gate.check("api.example.com"), Err(Duration::from_secs(60)));
    // The media hosts' two, which the API's wait does not hold up.
    assert!(gate.check("eu.media.example.com").is_ok());
    assert!(gate.check("us.media.example.com").is_ok());
    assert_eq!(
        gate.check("eu.media.example.com"),
        Err(Duration::from_secs(30))
    );
    // A limit without hosts counts every request, whatever its host.
    let every = limited_spec("user");
    let gate = registry.gate(&every, "bob");
    assert!(gate.check("api.example.com").is_ok());
    assert!(gate.check("eu.media.example.com").is_ok());
    assert!(gate.check("api.example.com").is_err());
    assert!(gate.check("eu.media.example.com").is_err());
}
