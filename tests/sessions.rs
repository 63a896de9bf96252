//! A stream's `session` (Google Photos' Picker): over loopback HTTP from a provider shaped like
//! the Picker API, on SQLite and PostgreSQL. The session is created, its page announced, polled
//! until the person is done, seen by the listing as `session`, and deleted after the downloads;
//! one never completed fails its stream, saying where the person should have gone, and is
//! deleted too. A stream with a session runs only when asked for by name.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hypernet_tests::{RunOptions, run, serve, spec_from, test_blob_stores, test_stores};

const SPEC: &str = r#"
id: picker_api
name: Picker API
version: 1.0.0
category: media
description: The photos a person picks.
docs_url: https://developers.google.com/photos/picker/reference/rest
auth: { kind: none }
base_url: https://photospicker.googleapis.com
allowed_hosts: [photospicker.googleapis.com, lh3.googleusercontent.com]
retry: { max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
streams:
  everyday:
    model: media
    request: { path: /v1/everyday }
    records: $.items[*]
    id: $.id
    map:
      media_type: photo
      file_path: $.name
  picked:
    model: media
    session:
      create: { method: POST, path: /v1/sessions, body: { json: {} } }
      id: $.id
      url: "{{ answer.pickerUri }}/autoclose"
      poll: { path: "/v1/sessions/{{ session.id }}" }
      ready: answer.mediaItemsSet
      interval: 1s
      timeout: TIMEOUT
      delete: { method: DELETE, path: "/v1/sessions/{{ session.id }}" }
    request:
      path: /v1/mediaItems
      query: { sessionId: "{{ session.id }}", pageSize: "100" }
    records: $.mediaItems[*]
    id: $.id
    unseen_deleted: false
    map:
      media_type: photo
      file_path: $.mediaFile.filename
    content:
      request: { path: "{{ record.mediaFile.baseUrl }}=d" }
"#;

const SESSION: &str = "3f6d2a9c-8b41-4e7a-9d05-6c1e2b7f4a90";

/// What the provider was asked, in order; `polls_before_ready` polls answer "not yet".
struct Picker {
    asked: Mutex<Vec<String>>,
    polls_before_ready: Mutex<u32>,
}

async fn provider(polls_before_ready: u32) -> (url::Url, Arc<Picker>) {
    let picker = Arc::new(Picker {
        asked: Mutex::default(),
        polls_before_ready: Mutex::new(polls_before_ready),
    });
    let note = |picker: &Picker, what: String| picker.asked.lock().unwrap().push(what);
    let router = Router::new()
        .route(
            "/v1/everyday",
            get(|| async { axum::Json(serde_json::json!({"items": []})) }),
        )
        .route(
            "/v1/sessions",
            post(move |State(picker): State<Arc<Picker>>| async move {
                note(&picker, "create".to_owned());
                axum::Json(serde_json::json!({
                    "id": SESSION,
                    "pickerUri": format!("https://photos.google.com/picker/{SESSION}"),
                    "pollingConfig": {"pollInterval": "5s", "timeoutIn": "1799.987s"},
                    "mediaItemsSet": false
                }))
            }),
        )
        .route(
            "/v1/sessions/{id}",
            get(
                move |State(picker): State<Arc<Picker>>, Path(id): Path<String>| async move {
                    note(&picker, format!("poll {id}"));
                    let mut left = picker.polls_before_ready.lock().unwrap();
                    let ready = *left == 0;
                    *left = left.saturating_sub(1);
                    axum::Json(serde_json::json!({"id": id, "mediaItemsSet": ready}))
                },
            )
            .delete(
                move |State(picker): State<Arc<Picker>>, Path(id): Path<String>| async move {
                    note(&picker, format!("delete {id}"));
                    axum::Json(serde_json::json!({}))
                },
            ),
        )
        .route(
            "/v1/mediaItems",
            get(
                move |State(picker): State<Arc<Picker>>,
                      Query(query): Query<std::collections::HashMap<String, String>>| async move {
                    note(&picker, format!("list {}", query["sessionId"]));
                    axum::Json(serde_json::json!({"mediaItems": [{
                        "id": "AF1QipOq3Wv8Rz1Xb5Nc7Md2Ke9Lf4Jg6Hh0Ts1Ua3Yb",
                        "type": "PHOTO",
                        "mediaFile": {
                            "baseUrl": "https://lh3.googleusercontent.com/pw/AP1GczNq7Rt2",
                            "mimeType": "image/jpeg",
                            "filename": "IMG_20190814_190233.jpg"
                        }
                    }]}))
                },
            ),
        )
        .route(
            "/pw/{file}",
            get(
                move |State(picker): State<Arc<Picker>>, Path(file): Path<String>| async move {
                    note(&picker, format!("download {file}"));
                    ([(header::CONTENT_TYPE, "image/jpeg")], vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3])
                        .into_response()
                },
            ),
        )
        .with_state(Arc::clone(&picker));
    (serve(router).await, picker)
}

#[tokio::test]
async fn a_session_is_opened_announced_polled_listed_and_deleted_after_the_downloads() {
    let spec = spec_from(&SPEC.replace("TIMEOUT", "1m"));
    for test in test_stores("sessions").await {
        let kept = test_blob_stores("sessions").remove(0);
        let (server, picker) = provider(2).await;
        // Not named: the session stream does not run (it would wait for a person).
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert!(picker.asked.lock().unwrap().is_empty(), "{}", test.backend);
        assert!(
            !recorder
                .events()
                .iter()
                .any(|event| event.contains("SessionOpened"))
        );

        let (result, recorder) = run(
            &spec,
            &server,
            &test.store,
            RunOptions {
                blobs: Some(kept.blobs.clone()),
                streams: vec!["picked".to_owned()],
                ..RunOptions::default()
            },
        )
        .await;
        result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
        assert_eq!(recorder.totals().written.new, 1, "{}", test.backend);
        assert_eq!(recorder.totals().contents, 1, "{}", test.backend);
        assert_eq!(
            *picker.asked.lock().unwrap(),
            vec![
                "create".to_owned(),
                format!("poll {SESSION}"),
                format!("poll {SESSION}"),
                format!("poll {SESSION}"),
                format!("list {SESSION}"),
                "download AP1GczNq7Rt2=d".to_owned(),
                format!("delete {SESSION}"),
            ],
            "{}",
            test.backend
        );
        let announced: Vec<String> = recorder
            .events()
            .into_iter()
            .filter(|event| event.contains("SessionOpened"))
            .collect();
        assert_eq!(announced.len(), 1, "{announced:?}");
        assert!(
            announced[0].contains(&format!(
                "https://photos.google.com/picker/{SESSION}/autoclose"
            )),
            "{announced:?}"
        );
    }
}

#[tokio::test]
async fn a_session_never_completed_fails_its_stream_and_is_deleted() {
    let spec = spec_from(&SPEC.replace("TIMEOUT", "2s"));
    for test in test_stores("session_timeout").await {
        let (server, picker) = provider(u32::MAX).await;
        let (result, _) = run(
            &spec,
            &server,
            &test.store,
            RunOptions {
                streams: vec!["picked".to_owned()],
                ..RunOptions::default()
            },
        )
        .await;
        let error = result.expect_err("the session never completed");
        let message = error.to_string();
        assert!(
            message.contains("picker_api / picked")
                && message.contains(&format!(
                    "the session was not completed within 2s at https://photos.google.com/picker/{SESSION}/autoclose"
                )),
            "{}: {message}",
            test.backend
        );
        assert!(
            error
                .hint()
                .contains("sync the stream again for a new session")
        );
        let asked = picker.asked.lock().unwrap().clone();
        assert_eq!(asked.first().map(String::as_str), Some("create"));
        assert_eq!(
            asked.last(),
            Some(&format!("delete {SESSION}")),
            "{asked:?}"
        );
        assert!(
            !asked.iter().any(|what| what.starts_with("list")),
            "{asked:?}"
        );
    }
}
