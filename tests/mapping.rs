//! Mapping and validation over real loopback HTTP into a SQLite store: records that do not fit
//! their model are rejected with a reason and kept, a second sync of unchanged data writes
//! nothing, changes are updates, and tombstones mark records deleted but keep their data.

#[path = "common/test_api.rs"]
mod test_api;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::routing::get;
use engine::store::SqliteStore;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::{Value, json};
use test_api::{notes, simple_spec, spec_yaml};

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
    // The provenance is in the row's columns, and readers give the record with it again.
    assert!(data.get("source_platform").is_none(), "{data}");
    let dumped = store.dump("test_api").await.unwrap();
    let (_, _, record, _) = dumped.iter().find(|(_, id, _, _)| id == "a").unwrap();
    let keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys[..4],
        [
            "user_id",
            "source_integration_id",
            "source_platform",
            "source_object_id"
        ]
    );
    assert_eq!(record["source_platform"], "test_api");
    assert_eq!(record["source_object_id"], "a");
    assert_eq!(record["width"], 4032);
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
    // (A record first seen deleted keeps what its deletion's payload says.)
    let cancelled = Arc::new(AtomicUsize::new(0));
    let flag = Arc::clone(&cancelled);
    let app = axum::Router::new().route(
        "/items",
        get(move || {
            let cancelled = flag.load(Ordering::SeqCst) == 1;
            async move {
                // Cancelled, n1 says another title: the tombstone keeps the last known state.
                let second = if cancelled {
                    json!({"id": "n1", "title": "Renamed while cancelled", "status": "cancelled"})
                } else {
                    json!({"id": "n1", "title": "Note 1", "status": "confirmed"})
                };
                // Never seen before, already deleted: kept with what the deletion says (n3
                // says no title, which the model requires: a deletion is not refused for it).
                Json(json!({"items": [
                    {"id": "n0", "title": "Note 0", "status": "confirmed"},
                    second,
                    {"id": "n2", "title": "Gone before it was imported", "status": "cancelled"},
                    {"id": "n3", "status": "cancelled"}
                ]}))
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
        let written = recorder.totals().written;
        assert_eq!(written.rejected, 0);
        if round == 1 {
            assert_eq!(written.deleted, 1, "{written:?}");
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
    let first_seen_deleted: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT source_object_id, data, deleted_at FROM records WHERE source_object_id IN ('n2', 'n3') ORDER BY source_object_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let data: Vec<Value> = first_seen_deleted
        .iter()
        .map(|(_, data, deleted_at)| {
            assert!(deleted_at.is_some());
            serde_json::from_str(data).unwrap()
        })
        .collect();
    assert_eq!(
        data,
        [json!({"title": "Gone before it was imported"}), json!({})]
    );
}

/// Mail as Graph and Gmail send it: addresses become names and addresses apart (Graph's
/// recipient objects, Gmail's header text with a quoted comma and an encoded name), a draft
/// without a sender has no `from` (not `" <>"`), and the time it was sent is kept apart from
/// the time it arrived.
#[tokio::test]
async fn mail_keeps_names_and_addresses_apart_and_when_it_was_sent_and_received() {
    let spec = spec_from(&spec_yaml("", "").replace(
        "    model: note\n    id: $.id\n    map:\n      title: $.title\n",
        r#"    model: email
    request: { path: /messages }
    records: $.value[*]
    id: $.id
    map:
      sent_at: { from: "{{ record.sentDateTime or record.receivedDateTime or record.date }}", as: timestamp }
      received_at: { from: $.receivedDateTime, as: rfc3339 }
      from: { from: $.from.emailAddress, as: address }
      to: { from: "$.toRecipients[*].emailAddress", as: addresses }
      cc: { from: "$.headers[?match(@.name, '(?i)cc')].value", as: addresses }
"#,
    ));
    let app = axum::Router::new().route(
        "/messages",
        get(|| async {
            Json(json!({"value": [
                {"id": "sent", "sentDateTime": "2024-05-21T09:00:54Z", "receivedDateTime": "2024-05-21T09:01:01Z",
                 "from": {"emailAddress": {"name": "Megan Bowen", "address": "MeganB@contoso.com"}},
                 "toRecipients": [{"emailAddress": {"name": "Ana Lima", "address": "ana@contoso.com"}},
                                  {"emailAddress": {"name": "", "address": "bo@contoso.com"}}],
                 "headers": [{"name": "CC", "value": "\"Silva, João\" <joao@example.pt>, =?UTF-8?Q?Beatriz_Gon=C3=A7alves?= <bea@example.pt>"}]},
                {"id": "draft", "receivedDateTime": "2024-05-22T10:00:00Z", "from": {"emailAddress": {"name": "", "address": ""}}, "toRecipients": []},
                {"id": "header-date", "date": "Tue, 21 May 2024 11:01:01 +0200"}
            ]}))
        }),
    );
    let server = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.sqlite"))
        .await
        .unwrap();
    let (result, recorder) = run(&spec, &server, &store, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(recorder.totals().written.rejected, 0);
    let records = store.dump("test_api").await.unwrap();
    let data = |id: &str| {
        let (_, _, data, _) = records.iter().find(|record| record.1 == id).unwrap();
        data.clone()
    };
    let sent = data("sent");
    assert_eq!(sent["sent_at"], "2024-05-21T09:00:54Z");
    assert_eq!(sent["received_at"], "2024-05-21T09:01:01Z");
    assert_eq!(
        sent["from"],
        json!({"name": "Megan Bowen", "address": "MeganB@contoso.com"})
    );
    assert_eq!(
        sent["to"],
        json!([{"name": "Ana Lima", "address": "ana@contoso.com"}, {"address": "bo@contoso.com"}])
    );
    assert_eq!(
        sent["cc"],
        json!([
            {"name": "Silva, João", "address": "joao@example.pt"},
            {"name": "Beatriz Gonçalves", "address": "bea@example.pt"}
        ])
    );
    let draft = data("draft");
    assert!(draft.get("from").is_none(), "{draft}");
    assert_eq!(draft["sent_at"], "2024-05-22T10:00:00Z");
    assert!(draft.get("to").is_none(), "{draft}");
    assert_eq!(data("header-date")["sent_at"], "2024-05-21T09:01:01Z");
}
