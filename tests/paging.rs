//! Every paginator over real loopback HTTP: cursors in the query or in a JSON body, a continue
//! endpoint, next URLs from the body or the Link header (to allowed hosts only), offset/limit and
//! page numbers, and a repeated token, which is an error rather than a loop.

#[path = "common/test_api.rs"]
mod test_api;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use engine::http::HttpError;
use engine::run::SyncErrorKind;
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::{Value, json};
use test_api::{expected_ids, ids, notes, spec_yaml};

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
            // Page 2's next URL has a comma in its query, as a URI may: the paging goes on past
            // it (it was cut at the comma and the sync stopped, silently, after page 2).
            let body = match query.get("page").map(String::as_str) {
                None => {
                    headers.insert(
                        "link",
                        "<https://api.example.com/repos?page=2>; rel=\"next\", <https://api.example.com/repos?page=3>; rel=\"last\"".parse().unwrap(),
                    );
                    json!(notes(0..2))
                }
                Some("2") => {
                    headers.insert(
                        "link",
                        "<https://api.example.com/repos?fields=id,title&page=3>; rel=\"next\", <https://api.example.com/repos?page=1>; rel=\"first\"".parse().unwrap(),
                    );
                    json!(notes(2..3))
                }
                Some("3") => {
                    assert_eq!(query.get("fields").map(String::as_str), Some("id,title"));
                    json!(notes(3..4))
                }
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
    assert_eq!(ids(&sink), expected_ids(0..4));
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
