//! The store and incremental sync, against SQLite and PostgreSQL: idempotent upserts, sync
//! tokens and cursors, resuming from checkpoints, deletion sweeps, runs and the audit log, and
//! the HTTP sink. Every sync goes over loopback HTTP to a provider that keeps its own state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::events::WriteCounts;
use engine::models::ModelKind;
use engine::record::MappedRecord;
use engine::state::{Checkpoint, StreamState};
use engine::store::{
    AnyStore, Batch, HttpSink, IntegrationStatus, MemorySink, RunScope, Sink, StoredIntegration,
    Sweep,
};
use hypernet_tests::{RunOptions, run, serve, spec_from, test_stores};
use serde_json::{Value, json};

const PLATFORM: &str = "notes_api";

/// A provider of notes with Google-style paging (`pageToken`/`nextPageToken`, two per page) and,
/// depending on the spec, sync tokens (`syncToken`/`nextSyncToken`, 410 when expired) or an
/// `updated_min` filter.
#[derive(Default)]
struct Provider {
    notes: Vec<Value>,
    /// The changes a sync token returns.
    changes: HashMap<String, Vec<Value>>,
    expired: HashSet<String>,
    /// Page tokens that fail once with a 400.
    fail_once: HashSet<String>,
    generation: u32,
    requests: Vec<HashMap<String, String>>,
}

type Shared = Arc<Mutex<Provider>>;

async fn notes(
    State(provider): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut provider = provider.lock().unwrap();
    provider.requests.push(query.clone());
    if let Some(token) = query.get("pageToken")
        && provider.fail_once.remove(token)
    {
        return (StatusCode::BAD_REQUEST, "try again").into_response();
    }
    if let Some(token) = query.get("syncToken") {
        if provider.expired.contains(token) {
            return (StatusCode::GONE, Json(json!({"error": {"code": 410, "message": "Sync token is no longer valid, a full sync is required."}}))).into_response();
        }
        let items = provider.changes.remove(token).unwrap_or_default();
        if !items.is_empty() {
            provider.generation += 1;
        }
        let next = format!("t{}", provider.generation);
        return Json(json!({"items": items, "nextSyncToken": next})).into_response();
    }
    let listed: Vec<Value> = provider
        .notes
        .iter()
        .filter(|note| {
            query.get("updated_min").is_none_or(|min| {
                let min: jiff::Timestamp = min.parse().unwrap();
                let updated: jiff::Timestamp = note["updated"].as_str().unwrap().parse().unwrap();
                updated >= min
            })
        })
        .cloned()
        .collect();
    let start: usize = query
        .get("pageToken")
        .map_or(0, |token| token.parse().unwrap());
    let end = (start + 2).min(listed.len());
    let mut page = json!({"items": listed[start..end]});
    if end < listed.len() {
        page["nextPageToken"] = json!(end.to_string());
    } else {
        page["nextSyncToken"] = json!(format!("t{}", provider.generation));
    }
    Json(page).into_response()
}

async fn provider(notes_list: Vec<Value>) -> (Shared, url::Url) {
    let shared: Shared = Arc::new(Mutex::new(Provider {
        notes: notes_list,
        ..Provider::default()
    }));
    let app = axum::Router::new()
        .route("/notes", get(notes))
        .with_state(Arc::clone(&shared));
    (shared, serve(app).await)
}

fn note(index: usize, updated: &str) -> Value {
    json!({"id": format!("n{index}"), "title": format!("Note {index}"), "status": "confirmed", "updated": updated})
}

fn spec(extra: &str) -> Arc<engine::spec::ConnectorSpec> {
    spec_from(&format!(
        r#"id: {PLATFORM}
name: Notes API
version: 1.0.0
category: productivity
description: A notes provider for storage tests.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
retry:
  max_attempts: 2
  backoff: {{ initial: 1ms, max: 2ms }}
streams:
  notes:
    model: note
    request: {{ path: /notes }}
    paginate: {{ kind: cursor, token: $.nextPageToken, param: pageToken }}
    records: $.items[*]
    id: $.id
    deleted: record.status == 'cancelled'
    map:
      title: $.title
      updated_at: $.updated
{extra}"#
    ))
}

/// A provider of `category` without auth on one host, with `streams` (YAML at the `streams:`
/// level).
fn connector(category: &str, streams: &str) -> Arc<engine::spec::ConnectorSpec> {
    spec_from(&format!(
        r#"id: {PLATFORM}
name: Test provider
version: 1.0.0
category: {category}
description: A provider shaped like a real one, for storage tests.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
streams:
{streams}"#
    ))
}

fn sync_token_spec() -> Arc<engine::spec::ConnectorSpec> {
    spec("    incremental: { kind: sync_token, token: $.nextSyncToken, param: syncToken }\n")
}

fn cursor_spec() -> Arc<engine::spec::ConnectorSpec> {
    spec("    incremental: { kind: cursor, field: $.updated, param: updated_min, lookback: 1h }\n")
}

fn requests(provider: &Shared) -> Vec<HashMap<String, String>> {
    std::mem::take(&mut provider.lock().unwrap().requests)
}

fn titles(dump: &[(String, String, Value, bool)]) -> Vec<(String, String, bool)> {
    dump.iter()
        .map(|(_, id, data, deleted)| {
            (
                id.clone(),
                data["title"].as_str().unwrap_or_default().to_owned(),
                *deleted,
            )
        })
        .collect()
}

const T0: &str = "2026-03-01T10:00:00Z";

#[tokio::test]
async fn a_second_sync_of_unchanged_data_makes_one_request_and_writes_nothing() {
    for test in test_stores("unchanged").await {
        let (provider, server) = provider((0..5).map(|index| note(index, T0)).collect()).await;
        let spec = sync_token_spec();

        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            requests(&provider).len(),
            3,
            "{}: 5 notes, 2 a page",
            test.backend
        );
        assert_eq!(recorder.totals().written.new, 5, "{}", test.backend);

        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        let second = requests(&provider);
        assert_eq!(
            second.len(),
            1,
            "{}: one request with the token",
            test.backend
        );
        assert_eq!(second[0].get("syncToken").map(String::as_str), Some("t0"));
        assert_eq!(
            recorder.totals().written,
            WriteCounts::default(),
            "{}: nothing written",
            test.backend
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 5);
    }
}

#[tokio::test]
async fn changes_and_tombstones_arrive_through_the_sync_token() {
    for test in test_stores("changes").await {
        let (provider, server) = provider((0..3).map(|index| note(index, T0)).collect()).await;
        let spec = sync_token_spec();
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        requests(&provider);

        provider.lock().unwrap().changes.insert(
            "t0".into(),
            vec![
                json!({"id": "n1", "title": "Note 1, edited", "status": "confirmed", "updated": "2026-03-02T10:00:00Z"}),
                json!({"id": "n2", "status": "cancelled"}),
                json!({"id": "n9", "title": "Note 9", "status": "confirmed", "updated": "2026-03-02T11:00:00Z"}),
            ],
        );
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        let written = recorder.totals().written;
        assert_eq!(
            (written.new, written.updated, written.deleted),
            (1, 1, 1),
            "{}",
            test.backend
        );
        let dump = test.store.dump(PLATFORM).await.unwrap();
        assert_eq!(
            titles(&dump),
            [
                ("n0".into(), "Note 0".into(), false),
                ("n1".into(), "Note 1, edited".into(), false),
                // Deleted at the provider: kept, marked.
                ("n2".into(), "Note 2".into(), true),
                ("n9".into(), "Note 9".into(), false),
            ],
            "{}",
            test.backend
        );

        // The next run sends the token the changes came with.
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let third = requests(&provider);
        assert_eq!(
            third
                .last()
                .and_then(|query| query.get("syncToken"))
                .map(String::as_str),
            Some("t1")
        );
    }
}

#[tokio::test]
async fn an_expired_sync_token_starts_a_full_pass_without_losing_records() {
    for test in test_stores("expired").await {
        let (provider, server) = provider((0..3).map(|index| note(index, T0)).collect()).await;
        let spec = sync_token_spec();
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        requests(&provider);

        provider.lock().unwrap().expired.insert("t0".into());
        provider.lock().unwrap().generation = 7;
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        let sent: Vec<Option<String>> = requests(&provider)
            .iter()
            .map(|query| query.get("syncToken").cloned())
            .collect();
        assert_eq!(
            sent,
            [Some("t0".into()), None, None],
            "{}: 410, then a full pass",
            test.backend
        );
        let written = recorder.totals().written;
        assert_eq!(
            (
                written.new,
                written.updated,
                written.unchanged,
                written.deleted
            ),
            (0, 0, 3, 0)
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 3);

        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let next = requests(&provider);
        assert_eq!(
            next[0].get("syncToken").map(String::as_str),
            Some("t7"),
            "the new token is kept"
        );
    }
}

#[tokio::test]
async fn the_cursor_is_sent_minus_lookback_and_advances_only_when_a_pass_completes() {
    for test in test_stores("cursor").await {
        let (provider, server) = provider(vec![
            note(0, "2026-03-01T10:00:00Z"),
            note(1, "2026-03-03T10:00:00Z"),
            note(2, "2026-03-02T10:00:00Z"),
        ])
        .await;
        let spec = cursor_spec();
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        assert!(
            requests(&provider)
                .iter()
                .all(|query| !query.contains_key("updated_min"))
        );

        // A newer note, then a pass that fails on its second page: the cursor must not move.
        provider.lock().unwrap().notes.extend([
            note(3, "2026-03-04T10:00:00Z"),
            note(4, "2026-03-05T10:00:00Z"),
            note(5, "2026-03-06T10:00:00Z"),
        ]);
        provider.lock().unwrap().fail_once.insert("2".into());
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        assert!(result.is_err(), "{}: the second page failed", test.backend);
        let failed = requests(&provider);
        assert_eq!(
            failed[0].get("updated_min").map(String::as_str),
            Some("2026-03-03T09:00:00Z"),
            "{}: the newest value, an hour back",
            test.backend
        );

        // The next run resumes at the failed page with the same cursor, then advances it.
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let resumed = requests(&provider);
        assert_eq!(
            resumed[0].get("pageToken").map(String::as_str),
            Some("2"),
            "{}",
            test.backend
        );
        assert_eq!(
            resumed[0].get("updated_min").map(String::as_str),
            Some("2026-03-03T09:00:00Z")
        );
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let after = requests(&provider);
        assert_eq!(
            after[0].get("updated_min").map(String::as_str),
            Some("2026-03-06T09:00:00Z")
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 6);
    }
}

#[tokio::test]
async fn a_failed_run_resumes_from_its_checkpoint() {
    for test in test_stores("resume").await {
        let (provider, server) = provider((0..7).map(|index| note(index, T0)).collect()).await;
        provider.lock().unwrap().fail_once.insert("4".into());
        let spec = spec("");
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        let error = result.unwrap_err();
        assert!(error.to_string().contains("notes_api / notes"), "{error}");
        assert_eq!(
            recorder.totals().written.new,
            4,
            "{}: two pages stored",
            test.backend
        );
        assert_eq!(requests(&provider).len(), 3);

        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        let pages: Vec<Option<String>> = requests(&provider)
            .iter()
            .map(|query| query.get("pageToken").cloned())
            .collect();
        assert_eq!(
            pages,
            [Some("4".into()), Some("6".into())],
            "{}: resumed, not restarted",
            test.backend
        );
        assert_eq!(recorder.totals().written.new, 3);
        let dump = test.store.dump(PLATFORM).await.unwrap();
        assert_eq!(dump.len(), 7);
        assert!(
            dump.iter().all(|(_, _, _, deleted)| !deleted),
            "{}: the resumed pass saw everything",
            test.backend
        );

        let runs = test.store.runs("integration-1").await.unwrap();
        let statuses: Vec<&str> = runs.iter().map(|run| run.status.as_str()).collect();
        assert_eq!(
            statuses,
            ["succeeded", "failed"],
            "{}: newest first",
            test.backend
        );
        assert_eq!(runs[0].totals.written.new, 3);
        assert_eq!(runs[1].totals.written.new, 4);
        assert!(runs[1].error.as_deref().unwrap_or_default().contains("400"));
    }
}

#[tokio::test]
async fn a_completed_full_pass_marks_unseen_records_deleted_and_a_failed_one_marks_nothing() {
    for test in test_stores("sweep").await {
        let (provider, server) = provider((0..5).map(|index| note(index, T0)).collect()).await;
        let spec = spec("");
        // The first import has nothing to sweep, so it keeps no ids, even across a failure.
        provider.lock().unwrap().fail_once.insert("2".into());
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        assert!(result.is_err(), "{result:?}");
        assert_eq!(seen_ids(&test.store).await, 0, "{}", test.backend);
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();

        // n1 is gone at the provider; a pass that fails before its end marks nothing.
        provider.lock().unwrap().notes.remove(1);
        provider.lock().unwrap().fail_once.insert("2".into());
        requests(&provider);
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        assert!(result.is_err(), "{:?} {:?}", result, requests(&provider));
        assert!(seen_ids(&test.store).await > 0, "{}", test.backend);
        let dump = test.store.dump(PLATFORM).await.unwrap();
        assert!(
            dump.iter().all(|(_, _, _, deleted)| !deleted),
            "{}: a partial pass marks nothing",
            test.backend
        );

        // The resumed pass completes: it has seen everything but n1.
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(recorder.totals().written.deleted, 1, "{}", test.backend);
        let deleted: Vec<String> = test
            .store
            .dump(PLATFORM)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, _, _, deleted)| *deleted)
            .map(|(_, id, _, _)| id)
            .collect();
        assert_eq!(deleted, ["n1"], "{}", test.backend);

        // It comes back: live again.
        provider.lock().unwrap().notes.push(note(1, T0));
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let dump = test.store.dump(PLATFORM).await.unwrap();
        assert!(
            dump.iter().all(|(_, _, _, deleted)| !deleted),
            "{}",
            test.backend
        );
    }
}

/// How many ids unfinished full passes have kept for their deletion sweep.
async fn seen_ids(store: &AnyStore) -> i64 {
    let query = "SELECT COUNT(*) FROM sync_seen";
    match store {
        AnyStore::Sqlite(store) => sqlx::query_scalar(query).fetch_one(store.pool()).await,
        AnyStore::Postgres(store) => sqlx::query_scalar(query).fetch_one(store.pool()).await,
    }
    .unwrap()
}

/// The stored title of record `id` and whether it is marked deleted.
async fn stored(store: &AnyStore, id: &str) -> Option<(Value, bool)> {
    store
        .dump(PLATFORM)
        .await
        .unwrap()
        .into_iter()
        .find(|(_, stored, _, _)| stored == id)
        .map(|(_, _, data, deleted)| (data["title"].clone(), deleted))
}

#[tokio::test]
async fn upserts_are_idempotent_and_rewrite_only_changed_records() {
    for test in test_stores("upserts").await {
        let mut store = test.store.clone();
        let scope = Arc::new(RunScope {
            platform: Arc::from(PLATFORM),
            user_id: Arc::from("user-1"),
            integration_id: Arc::from("integration-1"),
            worker: None,
        });
        let record = |id: &str, title: &str| {
            MappedRecord::from_data(
                id.to_owned(),
                json!({"title": title, "user_id": "user-1"})
                    .as_object()
                    .unwrap(),
                false,
            )
        };
        let tombstone = |id: &str| {
            MappedRecord::from_data(
                id.to_owned(),
                json!({"user_id": "user-1"}).as_object().unwrap(),
                true,
            )
        };
        let batch = |records| {
            let mut batch = Batch::records(
                Arc::clone(&scope),
                Arc::from("notes"),
                ModelKind::Note,
                records,
                vec![],
            );
            batch.checkpoint = Some(Checkpoint {
                stream: Arc::from("notes"),
                partition: String::new(),
                state: StreamState {
                    sync_token: Some("abc".into()),
                    ..StreamState::default()
                },
            });
            batch
        };
        // Two new records; the same again (nothing rewritten); one of them changed.
        for (records, expected) in [
            (vec![record("a", "A"), record("b", "B")], (2, 0, 0)),
            (vec![record("a", "A"), record("b", "B")], (0, 0, 2)),
            (vec![record("a", "A2"), record("b", "B")], (0, 1, 1)),
        ] {
            let written = store.write(&batch(records)).await.unwrap();
            assert_eq!(
                (written.new, written.updated, written.unchanged),
                expected,
                "{}",
                test.backend
            );
        }
        assert_eq!(store.count(PLATFORM).await.unwrap(), 2);

        // Pages that queued up are written together: a new, a changed and an unchanged record,
        // then another new one; the later page's checkpoint is the one kept.
        let mut later = batch(vec![record("d", "D")]);
        if let Some(checkpoint) = later.checkpoint.as_mut() {
            checkpoint.state.sync_token = Some("def".into());
        }
        let written = store
            .write_pages(&[
                batch(vec![record("c", "C"), record("a", "A3"), record("b", "B")]),
                later,
            ])
            .await
            .unwrap();
        assert_eq!(
            (written.new, written.updated, written.unchanged),
            (2, 1, 1),
            "{}",
            test.backend
        );
        assert_eq!(store.count(PLATFORM).await.unwrap(), 4);

        // The same provider id for another user is another record.
        let other = Arc::new(RunScope {
            user_id: Arc::from("user-2"),
            ..(*scope).clone()
        });
        let written = store
            .write(&Batch::records(
                other,
                Arc::from("notes"),
                ModelKind::Note,
                vec![record("a", "A")],
                vec![],
            ))
            .await
            .unwrap();
        assert_eq!(written.new, 1, "{}", test.backend);
        assert_eq!(store.count(PLATFORM).await.unwrap(), 5);

        let checkpoint = store
            .checkpoint("integration-1", "notes", "")
            .await
            .unwrap();
        assert_eq!(
            checkpoint.and_then(|state| state.sync_token).as_deref(),
            Some("def")
        );

        // A stored record listed twice with new content in one write (a change log lists a
        // message once per change; pages written together overlap) is stored once, as its last
        // listing; the same for a tombstone listed twice. PostgreSQL refuses an upsert that
        // names one row twice, so this is what it has to survive.
        let written = store
            .write_pages(&[
                batch(vec![record("c", "C2")]),
                batch(vec![record("c", "C3"), tombstone("d"), tombstone("d")]),
            ])
            .await
            .unwrap();
        assert_eq!(
            (
                written.new,
                written.updated,
                written.deleted,
                written.unchanged
            ),
            (0, 1, 1, 2),
            "{}",
            test.backend
        );
        assert_eq!(
            stored(&store, "c").await,
            Some((json!("C3"), false)),
            "{}",
            test.backend
        );
        assert_eq!(
            stored(&store, "d").await,
            Some((json!("D"), true)),
            "{}",
            test.backend
        );

        // Listings keep their order across the pages of one write: `c` deleted and then listed
        // again is stored; `d` listed (undeleted, new content) and then deleted is deleted, its
        // new content kept.
        let written = store
            .write_pages(&[
                batch(vec![tombstone("c"), record("c", "C4")]),
                batch(vec![record("d", "D6"), tombstone("d")]),
            ])
            .await
            .unwrap();
        assert_eq!(
            (written.updated, written.deleted, written.unchanged),
            (2, 2, 0),
            "{}",
            test.backend
        );
        assert_eq!(
            stored(&store, "c").await,
            Some((json!("C4"), false)),
            "{}",
            test.backend
        );
        assert_eq!(
            stored(&store, "d").await,
            Some((json!("D6"), true)),
            "{}",
            test.backend
        );

        // A full pass's two pages written together, the second completing the pass: what the
        // pass saw on either page stays, what it did not see is marked deleted.
        let page = |records, sweep: bool| {
            let mut page = batch(records);
            page.seen_in_pass = Some(7);
            if sweep {
                page.sweeps = vec![Sweep {
                    stream: Arc::from("notes"),
                    pass: 7,
                }];
            }
            page
        };
        let written = store
            .write_pages(&[
                page(vec![record("a", "A3")], false),
                page(vec![record("c", "C4")], true),
            ])
            .await
            .unwrap();
        assert_eq!(
            (written.deleted, written.unchanged),
            (1, 2),
            "{}",
            test.backend
        );
        let deleted: Vec<(String, bool)> = store
            .dump(PLATFORM)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, id, _, deleted)| (id, deleted))
            .collect();
        // (Two records `a`: user-2's too, which the pass saw by its id.)
        assert_eq!(
            deleted,
            [
                ("a".to_owned(), false),
                ("a".to_owned(), false),
                ("b".to_owned(), true),
                ("c".to_owned(), false),
                ("d".to_owned(), true)
            ],
            "{}",
            test.backend
        );
    }
}

#[tokio::test]
async fn connecting_syncing_and_disconnecting_are_in_the_audit_log() {
    for test in test_stores("audit").await {
        let (_provider, server) = provider((0..2).map(|index| note(index, T0)).collect()).await;
        test.store
            .save_integration(&StoredIntegration {
                id: "integration-1".into(),
                user_id: "user-1".into(),
                connector: PLATFORM.into(),
                status: IntegrationStatus::Active,
                config: serde_json::Map::new(),
                sealed_tokens: Some(vec![1, 2, 3]),
                scopes: Some("notes.read".into()),
                last_error: None,
            })
            .await
            .unwrap();
        run(&spec(""), &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let deleted = test
            .store
            .delete_integration("integration-1", true)
            .await
            .unwrap();
        assert_eq!(deleted, 2, "{}", test.backend);
        assert!(
            test.store
                .integration("integration-1")
                .await
                .unwrap()
                .is_none()
        );

        let actions: Vec<String> = test
            .store
            .audit_log("integration-1")
            .await
            .unwrap()
            .into_iter()
            .map(|entry| format!("{} {}", entry.action, entry.detail))
            .collect();
        assert_eq!(actions.len(), 5, "{}: {actions:#?}", test.backend);
        assert!(actions[0].starts_with("connected notes_api connected; scopes: notes.read"));
        assert!(actions[1].starts_with("sync_started run "));
        assert!(
            actions[2].contains("2 new, 0 updated, 0 unchanged, 0 deleted, 0 rejected"),
            "{}",
            actions[2]
        );
        assert_eq!(actions[3], "disconnected tokens and checkpoints removed");
        assert_eq!(
            actions[4],
            "records_deleted 2 records deleted at the user's request"
        );
    }
}

/// A records API that applies batches to a memory sink, as Hypernet's would to its database.
#[derive(Clone, Default)]
struct RecordsApi {
    sink: MemorySink,
    bodies: Arc<Mutex<Vec<Value>>>,
}

#[tokio::test]
async fn the_http_sink_posts_each_page_with_its_checkpoint_to_the_records_api() {
    async fn batches(
        State(api): State<RecordsApi>,
        headers: axum::http::HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        if headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            != Some("Bearer internal-token")
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        api.bodies.lock().unwrap().push(body.clone());
        let records: Vec<MappedRecord> = body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| {
                MappedRecord::from_data(
                    record["id"].as_str().unwrap().to_owned(),
                    record["data"].as_object().unwrap(),
                    record["deleted"].as_bool().unwrap(),
                )
            })
            .collect();
        let mut sink = api.sink.clone();
        let mut batch = Batch::records(
            Arc::new(RunScope {
                platform: Arc::from(body["scope"]["platform"].as_str().unwrap()),
                user_id: Arc::from(body["scope"]["user_id"].as_str().unwrap()),
                integration_id: Arc::from(body["scope"]["integration_id"].as_str().unwrap()),
                worker: None,
            }),
            Arc::from(body["stream"].as_str().unwrap()),
            ModelKind::Note,
            records,
            vec![],
        );
        batch.checkpoint = body["checkpoint"].as_object().map(|checkpoint| Checkpoint {
            stream: Arc::from(checkpoint["stream"].as_str().unwrap()),
            partition: checkpoint["partition"].as_str().unwrap().to_owned(),
            state: serde_json::from_value(checkpoint["state"].clone()).unwrap(),
        });
        Json(sink.write(&batch).await.unwrap()).into_response()
    }
    async fn checkpoint(
        State(api): State<RecordsApi>,
        axum::extract::Path((_integration, stream)): axum::extract::Path<(String, String)>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        match api
            .sink
            .checkpoint("", &stream, &query["partition"])
            .await
            .unwrap()
        {
            Some(state) => Json(state).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let api = RecordsApi::default();
    let records_api = serve(
        axum::Router::new()
            .route("/v1/batches", post(batches))
            .route("/v1/checkpoints/{integration}/{stream}", get(checkpoint))
            .route("/v1/runs", post(|| async { Json(json!({"id": 41})) }))
            .route("/v1/runs/{id}/finish", post(|| async { Json(json!({})) }))
            .with_state(api.clone()),
    )
    .await;
    let sink = HttpSink::new(
        reqwest::Client::new(),
        records_api.join("v1").unwrap(),
        Some("internal-token".into()),
    );
    let (provider, server) = provider((0..3).map(|index| note(index, T0)).collect()).await;
    let spec = sync_token_spec();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(recorder.totals().written.new, 3);
    let bodies = api.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one POST a page");
    assert_eq!(bodies[0]["scope"]["user_id"], "user-1");
    assert_eq!(bodies[0]["records"][0]["data"]["title"], "Note 0");
    assert_eq!(
        bodies[0]["checkpoint"]["state"]["resume"]["page"],
        json!({"at": "token", "value": "2"})
    );
    assert_eq!(
        bodies[1]["checkpoint"]["state"],
        json!({"sync_token": "t0"})
    );

    // The next run reads the checkpoint back from the API and sends the token.
    requests(&provider);
    run(&spec, &server, &sink, RunOptions::default())
        .await
        .0
        .unwrap();
    assert_eq!(
        requests(&provider)[0].get("syncToken").map(String::as_str),
        Some("t0")
    );
}

#[tokio::test]
async fn the_store_opens_from_a_location_and_refuses_unknown_ones() {
    let error = AnyStore::open("mysql://localhost/x").await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("unsupported database `mysql://localhost/x`"),
        "{error}"
    );
}

/// One page of `count` notes (`note-0`, ...) of one account, with nothing else.
fn notes_page(count: usize) -> Batch {
    let scope = Arc::new(RunScope {
        platform: Arc::from(PLATFORM),
        user_id: Arc::from("user-1"),
        integration_id: Arc::from("integration-1"),
        worker: None,
    });
    let records = (0..count)
        .map(|index| {
            MappedRecord::from_data(
                format!("note-{index}"),
                json!({"title": format!("Note {index}")})
                    .as_object()
                    .unwrap(),
                false,
            )
        })
        .collect();
    Batch::records(scope, Arc::from("notes"), ModelKind::Note, records, vec![])
}

/// The page size of the SQLite file at `path`, read over a connection of its own.
async fn page_size(path: &std::path::Path) -> i64 {
    use sqlx::ConnectOptions;
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut connection)
        .await
        .unwrap()
}

/// New files get the store's larger pages (BENCHMARKS.md); a file made with SQLite's default
/// keeps it (a WAL file cannot change its page size) and works as before.
#[tokio::test]
async fn a_new_sqlite_file_has_16_kib_pages_and_an_older_file_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new.db");
    drop(engine::store::SqliteStore::open(&new).await.unwrap());
    assert_eq!(page_size(&new).await, 16_384);

    let older = dir.path().join("older.db");
    {
        use sqlx::ConnectOptions;
        let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&older)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE made_before (x)")
            .execute(&mut connection)
            .await
            .unwrap();
    }
    assert_eq!(page_size(&older).await, 4_096);
    let store = engine::store::SqliteStore::open(&older).await.unwrap();
    let counts = store.clone().write_pages(&[notes_page(1)]).await.unwrap();
    assert_eq!(counts.new, 1);
    store.close().await;
    assert_eq!(page_size(&older).await, 4_096);
}

/// The (calendar, sync token sent) of each events request.
type TokenLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Google Calendar's shape: each calendar's events keep their own sync token (a checkpoint per
/// partition), and the next run sends each calendar its own.
#[tokio::test]
async fn each_substream_partition_keeps_its_own_sync_token() {
    async fn events(
        axum::extract::Path(calendar): axum::extract::Path<String>,
        Query(query): Query<HashMap<String, String>>,
        State(log): State<TokenLog>,
    ) -> Response {
        log.lock()
            .unwrap()
            .push((calendar.clone(), query.get("syncToken").cloned()));
        let items = if query.contains_key("syncToken") {
            vec![]
        } else {
            vec![
                json!({"id": format!("{calendar}-e1"), "summary": "Standup", "status": "confirmed"}),
            ]
        };
        Json(json!({"kind": "calendar#events", "items": items, "nextSyncToken": format!("token-of-{calendar}")}))
            .into_response()
    }
    for test in test_stores("partitions").await {
        let log = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/users/me/calendarList",
                get(|| async {
                    Json(json!({"kind": "calendar#calendarList", "items": [{"id": "work"}, {"id": "home"}], "nextSyncToken": "list"}))
                }),
            )
            .route("/calendars/{calendar}/events", get(events))
            .with_state(Arc::clone(&log));
        let server = serve(app).await;
        let spec = connector(
            "calendar",
            r#"  calendars:
    request: { path: /users/me/calendarList }
    records: $.items[*]
    id: $.id
  events:
    model: note
    parent: { stream: calendars, fields: { calendar_id: $.id }, concurrency: 1 }
    request: { path: "/calendars/{{ parent.calendar_id }}/events" }
    records: $.items[*]
    id: "{{ parent.calendar_id }}/{{ record.id }}"
    incremental: { kind: sync_token, token: $.nextSyncToken, param: syncToken }
    map:
      title: $.summary
"#,
        );
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            recorder.totals().written,
            WriteCounts::default(),
            "{}",
            test.backend
        );
        let second: Vec<(String, Option<String>)> = log.lock().unwrap()[2..].to_vec();
        assert_eq!(
            second,
            [
                ("work".into(), Some("token-of-work".into())),
                ("home".into(), Some("token-of-home".into())),
            ],
            "{}",
            test.backend
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 2);
    }
}

/// Dropbox's shape: `list_folder` then `list_folder/continue` pages by cursor; the last page's
/// cursor, kept, continues the listing on the next run and returns only changes (deleted entries
/// carry no id, so entries are keyed by `path_lower`); a 409 `reset` starts over.
#[tokio::test]
async fn a_kept_page_token_continues_the_listing_and_a_reset_starts_over() {
    #[derive(Default)]
    struct Dropbox {
        /// The changes the next continue of a kept cursor returns.
        changes: Vec<Value>,
        reset: bool,
        calls: Vec<String>,
    }
    fn entry(name: &str) -> Value {
        json!({".tag": "file", "name": name, "path_lower": format!("/{}", name.to_lowercase()),
               "path_display": format!("/{name}"), "id": format!("id:{name}"),
               "client_modified": "2024-05-12T15:50:38Z", "server_modified": "2024-05-12T15:50:38Z",
               "rev": "a1c10ce0dd78", "size": 7212, "is_downloadable": true,
               "content_hash": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
    }
    type Shared = Arc<Mutex<Dropbox>>;
    async fn list_folder(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
        state
            .lock()
            .unwrap()
            .calls
            .push(format!("list_folder {}", body["path"]));
        Json(json!({"entries": [entry("A.txt"), entry("B.txt")], "cursor": "page-2", "has_more": true})).into_response()
    }
    async fn list_continue(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
        let mut state = state.lock().unwrap();
        let cursor = body["cursor"].as_str().unwrap_or_default().to_owned();
        state.calls.push(format!("continue {cursor}"));
        match cursor.as_str() {
            "page-2" => {
                Json(json!({"entries": [entry("C.txt")], "cursor": "kept-1", "has_more": false}))
                    .into_response()
            }
            _ if state.reset => (
                StatusCode::CONFLICT,
                Json(json!({"error_summary": "reset/..", "error": {".tag": "reset"}})),
            )
                .into_response(),
            _ => {
                let entries = std::mem::take(&mut state.changes);
                Json(json!({"entries": entries, "cursor": "kept-2", "has_more": false}))
                    .into_response()
            }
        }
    }
    for test in test_stores("page_token").await {
        let shared: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/2/files/list_folder", post(list_folder))
            .route("/2/files/list_folder/continue", post(list_continue))
            .with_state(Arc::clone(&shared));
        let server = serve(app).await;
        let spec = connector(
            "storage",
            r#"  files:
    model: document
    request:
      method: POST
      path: /2/files/list_folder
      body: { json: { path: "", recursive: true } }
    paginate:
      kind: cursor
      token: $.cursor
      param: cursor
      location: body
      stop_when: not response.has_more
      next_request:
        method: POST
        path: /2/files/list_folder/continue
        body: { json: { cursor: "{{ page.token }}" } }
    records: $.entries[*]
    id: $.path_lower
    incremental: { kind: page_token, token: $.cursor, reset_on: [409] }
    deleted: record['.tag'] == 'deleted'
    map:
      title: $.name
      path: $.path_display
"#,
        );
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        assert_eq!(
            std::mem::take(&mut shared.lock().unwrap().calls),
            ["list_folder \"\"", "continue page-2"],
            "{}",
            test.backend
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 3);

        // The next run continues from the kept cursor: one request, only the changes.
        shared.lock().unwrap().changes = vec![
            json!({".tag": "deleted", "name": "B.txt", "path_lower": "/b.txt", "path_display": "/B.txt"}),
            entry("D.txt"),
        ];
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            std::mem::take(&mut shared.lock().unwrap().calls),
            ["continue kept-1"],
            "{}",
            test.backend
        );
        let written = recorder.totals().written;
        assert_eq!((written.new, written.deleted), (1, 1), "{}", test.backend);

        // The cursor is reset at Dropbox: a full listing, nothing lost.
        shared.lock().unwrap().reset = true;
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            std::mem::take(&mut shared.lock().unwrap().calls),
            ["continue kept-2", "list_folder \"\"", "continue page-2"],
            "{}",
            test.backend
        );
        let written = recorder.totals().written;
        assert_eq!(
            (written.new, written.updated, written.deleted),
            (0, 1, 1),
            "{}",
            test.backend
        );
        let live: Vec<String> = test
            .store
            .dump(PLATFORM)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, _, _, deleted)| !deleted)
            .map(|(_, id, _, _)| id)
            .collect();
        // The full listing after the reset is complete: B is back (the fake still lists it), and
        // D, which it no longer lists, is marked deleted.
        assert_eq!(live, ["/a.txt", "/b.txt", "/c.txt"], "{}", test.backend);
    }
}

#[tokio::test]
async fn what_a_sync_writes_after_its_integration_was_disconnected_is_purged() {
    for test in test_stores("purge").await {
        let mut store = test.store.clone();
        let integration = engine::store::StoredIntegration {
            id: "integration-1".to_owned(),
            user_id: "user-1".to_owned(),
            connector: PLATFORM.to_owned(),
            status: engine::store::IntegrationStatus::Active,
            config: serde_json::Map::new(),
            sealed_tokens: None,
            scopes: None,
            last_error: None,
        };
        store.save_integration(&integration).await.unwrap();
        let scope = Arc::new(RunScope {
            platform: Arc::from(PLATFORM),
            user_id: Arc::from("user-1"),
            integration_id: Arc::from("integration-1"),
            worker: None,
        });
        let page = |id: &str| {
            let mut batch = Batch::records(
                Arc::clone(&scope),
                Arc::from("notes"),
                ModelKind::Note,
                vec![MappedRecord::from_data(
                    id.to_owned(),
                    json!({"title": id}).as_object().unwrap(),
                    false,
                )],
                vec![],
            );
            batch.checkpoint = Some(Checkpoint {
                stream: Arc::from("notes"),
                partition: String::new(),
                state: StreamState::default(),
            });
            batch
        };
        store.write(&page("a")).await.unwrap();
        assert_eq!(
            store
                .delete_integration("integration-1", true)
                .await
                .unwrap(),
            1
        );
        // A sync that had not noticed yet writes one more page and its checkpoint.
        store.write(&page("b")).await.unwrap();
        assert_eq!(store.count(PLATFORM).await.unwrap(), 1);
        assert_eq!(
            store
                .purge_disconnected("integration-1", true)
                .await
                .unwrap(),
            1,
            "{}",
            test.backend
        );
        assert_eq!(store.count(PLATFORM).await.unwrap(), 0);
        assert!(
            store
                .checkpoint("integration-1", "notes", "")
                .await
                .unwrap()
                .is_none()
        );
        // Reconnected in the meantime: nothing of the new connection is touched.
        store.save_integration(&integration).await.unwrap();
        store.write(&page("c")).await.unwrap();
        assert_eq!(
            store
                .purge_disconnected("integration-1", true)
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.count(PLATFORM).await.unwrap(), 1);
    }
}

/// Connecting (and reconnecting) saves an integration as due in the one statement: were it made
/// due by a second statement, a scheduler could claim it in between, finish the import, and
/// then find it due again (two imports for one connect, seen under load).
#[tokio::test]
async fn connecting_makes_an_integration_due_in_the_same_statement() {
    use engine::store::{Lane, Release};
    let lease = std::time::Duration::from_secs(60);
    for test in test_stores("connect_due").await {
        let store = test.store.clone();
        let integration = StoredIntegration {
            id: "integration-1".to_owned(),
            user_id: "user-1".to_owned(),
            connector: PLATFORM.to_owned(),
            status: IntegrationStatus::Active,
            config: serde_json::Map::new(),
            sealed_tokens: None,
            scopes: None,
            last_error: None,
        };
        store.save_integration(&integration).await.unwrap();
        let summary = store
            .integration_summary("integration-1")
            .await
            .unwrap()
            .unwrap();
        assert!(summary.next_sync_at.is_some(), "{}", test.backend);
        let claim = store
            .claim_due("w", lease, Lane::Initial, &[])
            .await
            .unwrap()
            .expect("due once connected");
        assert_eq!(claim.integration_id, "integration-1");
        let tomorrow = Release {
            next_sync_at: jiff::Timestamp::now() + std::time::Duration::from_secs(86_400),
            succeeded: true,
            failures: 0,
            error: None,
        };
        store
            .release("integration-1", "w", &tomorrow)
            .await
            .unwrap();
        assert!(
            store
                .claim_due("w", lease, Lane::Incremental, &[])
                .await
                .unwrap()
                .is_none(),
            "imported: due tomorrow"
        );
        // Reconnected: due again at once.
        store.save_integration(&integration).await.unwrap();
        let claim = store
            .claim_due("w", lease, Lane::Incremental, &[])
            .await
            .unwrap();
        assert!(claim.is_some(), "{}: due once reconnected", test.backend);
    }
}

/// Gmail's shape: `users.getProfile` names the mailbox's current history position,
/// `messages.list` lists ids (newest first), `messages.get` answers each (404 once the message is
/// deleted), and `history.list` reads the changes after a position (404 once the position is too
/// old). Messages are a substream of their ids, so the change log feeds the ids it names to the
/// same `messages.get`.
mod gmail_shaped {
    use std::collections::BTreeMap;

    use axum::extract::Path;

    use super::*;

    #[derive(Default)]
    pub struct Mailbox {
        /// Live messages: id → labels.
        pub messages: BTreeMap<String, Vec<&'static str>>,
        pub history_id: u64,
        /// The log: (history id, change kind, message id).
        pub history: Vec<(u64, &'static str, String)>,
        /// Positions older than this answer 404.
        pub oldest: u64,
        /// A message that arrives while the second page of ids is being listed.
        pub arrives_during_listing: Option<String>,
        /// The ids a listing began with.
        pub listed: Vec<String>,
        pub calls: Vec<String>,
    }

    pub type Shared = Arc<Mutex<Mailbox>>;

    impl Mailbox {
        pub fn change(&mut self, kind: &'static str, id: &str) {
            self.history_id += 1;
            self.history.push((self.history_id, kind, id.to_owned()));
        }
    }

    fn not_found() -> Response {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}})),
        )
            .into_response()
    }

    async fn profile(State(mailbox): State<Shared>) -> Response {
        let mut mailbox = mailbox.lock().unwrap();
        mailbox.calls.push("profile".to_owned());
        Json(json!({
            "emailAddress": "ana@example.com",
            "messagesTotal": mailbox.messages.len(),
            "threadsTotal": mailbox.messages.len(),
            "historyId": mailbox.history_id.to_string(),
        }))
        .into_response()
    }

    async fn list(
        State(mailbox): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        let mut mailbox = mailbox.lock().unwrap();
        if query.contains_key("pageToken") {
            mailbox.calls.push("list p2".to_owned());
            if let Some(id) = mailbox.arrives_during_listing.take() {
                mailbox.messages.insert(id.clone(), vec!["UNREAD", "INBOX"]);
                mailbox.change("messagesAdded", &id);
            }
            let rest: Vec<Value> = mailbox.listed[2..]
                .iter()
                .map(|id| json!({"id": id, "threadId": id}))
                .collect();
            return Json(json!({"messages": rest, "resultSizeEstimate": mailbox.listed.len()}))
                .into_response();
        }
        mailbox.calls.push("list".to_owned());
        mailbox.listed = mailbox.messages.keys().cloned().collect();
        let first: Vec<Value> = mailbox.listed[..2]
            .iter()
            .map(|id| json!({"id": id, "threadId": id}))
            .collect();
        Json(json!({"messages": first, "nextPageToken": "09876543210987654321", "resultSizeEstimate": mailbox.listed.len()}))
            .into_response()
    }

    async fn get_message(State(mailbox): State<Shared>, Path(id): Path<String>) -> Response {
        let mut mailbox = mailbox.lock().unwrap();
        mailbox.calls.push(format!("get {id}"));
        let Some(labels) = mailbox.messages.get(&id) else {
            return not_found();
        };
        Json(json!({
            "id": id, "threadId": id, "labelIds": labels,
            "snippet": format!("Message {id}"), "sizeEstimate": 2048,
            "historyId": mailbox.history_id.to_string(), "internalDate": "1716282061000",
            "payload": {"partId": "", "mimeType": "text/plain", "filename": "",
                        "headers": [{"name": "Subject", "value": format!("About {id}")}],
                        "body": {"size": 12}},
        }))
        .into_response()
    }

    /// Three history records per page; `pageToken` is the index of the next one.
    async fn history(
        State(mailbox): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        let mut mailbox = mailbox.lock().unwrap();
        let start: u64 = query["startHistoryId"].parse().unwrap();
        let skip: usize = query
            .get("pageToken")
            .map_or(0, |token| token.parse().unwrap());
        mailbox.calls.push(match skip {
            0 => format!("history {start}"),
            _ => format!("history {start} p{}", skip / 3 + 1),
        });
        if start < mailbox.oldest {
            return not_found();
        }
        let after: Vec<Value> = mailbox
            .history
            .iter()
            .filter(|(id, _, _)| *id > start)
            .map(|(id, kind, message)| {
                let stub = json!({"id": message, "threadId": message, "labelIds": ["INBOX"]});
                let change = match *kind {
                    "labelsRemoved" => json!({"message": stub, "labelIds": ["UNREAD"]}),
                    "labelsAdded" => json!({"message": stub, "labelIds": ["STARRED"]}),
                    _ => json!({"message": stub}),
                };
                json!({"id": id.to_string(), "messages": [{"id": message, "threadId": message}], *kind: [change]})
            })
            .collect();
        let page: Vec<Value> = after.iter().skip(skip).take(3).cloned().collect();
        let mut body = json!({"historyId": mailbox.history_id.to_string()});
        // An empty log has no `history` key at all.
        if !page.is_empty() {
            body["history"] = Value::Array(page);
        }
        if skip + 3 < after.len() {
            body["nextPageToken"] = json!((skip + 3).to_string());
        }
        Json(body).into_response()
    }

    pub fn router(mailbox: Shared) -> axum::Router {
        axum::Router::new()
            .route("/gmail/v1/users/me/profile", get(profile))
            .route("/gmail/v1/users/me/messages", get(list))
            .route("/gmail/v1/users/me/messages/{id}", get(get_message))
            .route("/gmail/v1/users/me/history", get(history))
            .with_state(mailbox)
    }

    pub const STREAMS: &str = r#"  message_ids:
    request: { path: /gmail/v1/users/me/messages }
    paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
    records: $.messages[*]
    id: $.id
    incremental:
      kind: change_log
      start: { path: /gmail/v1/users/me/profile }
      start_token: $.historyId
      request:
        path: /gmail/v1/users/me/history
        query: { startHistoryId: "{{ state.sync_token }}" }
      paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
      records: "$.history[*]['messagesAdded','labelsAdded','labelsRemoved','messagesDeleted'][*].message"
      token: $.historyId
      reset_on: [404]
  messages:
    model: email
    parent: { stream: message_ids, fields: { message_id: $.id }, concurrency: 1 }
    request: { path: "/gmail/v1/users/me/messages/{{ parent.message_id }}" }
    records: $
    id: $.id
    gone: { on: [404], id: "{{ parent.message_id }}" }
    map:
      sent_at: { from: $.internalDate, as: epoch_millis }
      subject: "$.payload.headers[?@.name == 'Subject'].value"
      labels: $.labelIds[*]
"#;
}

#[tokio::test]
async fn a_change_log_is_read_from_the_position_asked_before_the_full_pass() {
    use gmail_shaped::{Mailbox, Shared};
    for test in test_stores("change_log").await {
        let backend = test.backend;
        let shared: Shared = Arc::new(Mutex::new(Mailbox {
            messages: [
                ("m1", vec!["UNREAD", "INBOX"]),
                ("m2", vec!["INBOX"]),
                ("m3", vec!["SENT"]),
            ]
            .into_iter()
            .map(|(id, labels)| (id.to_owned(), labels))
            .collect(),
            history_id: 100,
            arrives_during_listing: Some("m4".to_owned()),
            ..Mailbox::default()
        }));
        let server = serve(gmail_shaped::router(Arc::clone(&shared))).await;
        let spec = connector("email", gmail_shaped::STREAMS);
        let calls = || std::mem::take(&mut shared.lock().unwrap().calls);
        let live = |dump: Vec<(String, String, Value, bool)>| -> Vec<String> {
            dump.into_iter()
                .filter(|(_, _, _, deleted)| !deleted)
                .map(|(_, id, _, _)| id)
                .collect()
        };

        // The first run asks for the position, then lists everything. m4 arrives while the
        // listing is under way, after its page was served: the listing misses it.
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            ["profile", "list", "get m1", "get m2", "list p2", "get m3"],
            "{backend}"
        );
        assert_eq!(
            live(test.store.dump(PLATFORM).await.unwrap()),
            ["m1", "m2", "m3"],
            "{backend}"
        );

        // The next run reads the log from the position asked before the listing, so m4 is
        // there; m1 was read and starred (two changes on one page, one fetch) and m2 deleted
        // since.
        {
            let mut mailbox = shared.lock().unwrap();
            mailbox
                .messages
                .insert("m1".to_owned(), vec!["INBOX", "STARRED"]);
            mailbox.change("labelsRemoved", "m1");
            mailbox.change("labelsAdded", "m1");
            mailbox.messages.remove("m2");
            mailbox.change("messagesDeleted", "m2");
        }
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            [
                "history 100",
                "get m4",
                "get m1",
                "history 100 p2",
                "get m2"
            ],
            "{backend}: the log only, and each message it names"
        );
        let written = recorder.totals().written;
        assert_eq!(
            (written.new, written.updated, written.deleted),
            (1, 1, 1),
            "{backend}: m4 new, m1 changed, m2 gone"
        );
        let dump = test.store.dump(PLATFORM).await.unwrap();
        let m1 = dump.iter().find(|(_, id, _, _)| id == "m1").unwrap();
        assert_eq!(m1.2["labels"], json!(["INBOX", "STARRED"]), "{backend}");
        let m2 = dump.iter().find(|(_, id, _, _)| id == "m2").unwrap();
        assert!(m2.3, "{backend}: m2 is marked deleted");
        assert_eq!(m2.2["subject"], "About m2", "{backend}: and keeps its data");
        assert_eq!(live(dump), ["m1", "m3", "m4"], "{backend}");

        // Nothing changed: one request, nothing written (not even the checkpoint).
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(calls(), ["history 104"], "{backend}");
        assert_eq!(
            recorder.totals().written,
            WriteCounts::default(),
            "{backend}"
        );

        // The kept position expired: a full pass from a new position, nothing lost.
        {
            let mut mailbox = shared.lock().unwrap();
            mailbox.history_id = 200;
            mailbox.oldest = 200;
        }
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            [
                "history 104",
                "profile",
                "list",
                "get m1",
                "get m3",
                "list p2",
                "get m4"
            ],
            "{backend}"
        );
        let written = recorder.totals().written;
        assert_eq!(
            (written.new, written.updated, written.unchanged),
            (0, 0, 3),
            "{backend}"
        );
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            ["history 200"],
            "{backend}: reads from the new position"
        );
    }
}

/// Drive's shape: `changes.getStartPageToken` names the change log's position, `files.list`
/// lists files, and `changes.list` reads the log from a page token: changed files inside
/// `file`, removed ones by `fileId` alone, and `newStartPageToken` on the last page.
#[tokio::test]
async fn a_change_log_marks_deleted_ids_and_a_resumed_full_pass_keeps_its_position() {
    #[derive(Default)]
    struct Drive {
        /// id → name.
        files: std::collections::BTreeMap<String, String>,
        /// The log: (position after the change, file id, removed).
        log: Vec<(u64, String, bool)>,
        position: u64,
        /// Fail the second page of the listing once (with a 400), after renaming `f1`.
        fail_page_2: bool,
        calls: Vec<String>,
    }
    type Shared = Arc<Mutex<Drive>>;
    fn file(id: &str, name: &str) -> Value {
        json!({"kind": "drive#file", "id": id, "name": name, "mimeType": "text/plain", "size": "512"})
    }
    async fn start(State(drive): State<Shared>) -> Response {
        let mut drive = drive.lock().unwrap();
        drive.calls.push("start".to_owned());
        Json(json!({"kind": "drive#startPageToken", "startPageToken": drive.position.to_string()}))
            .into_response()
    }
    async fn files(
        State(drive): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        let mut drive = drive.lock().unwrap();
        let ids: Vec<String> = drive.files.keys().cloned().collect();
        let page = |ids: &[String], drive: &Drive| -> Vec<Value> {
            ids.iter().map(|id| file(id, &drive.files[id])).collect()
        };
        if !query.contains_key("pageToken") {
            drive.calls.push("files".to_owned());
            return Json(json!({"kind": "drive#fileList", "incompleteSearch": false, "nextPageToken": "p2", "files": page(&ids[..2], &drive)})).into_response();
        }
        drive.calls.push("files p2".to_owned());
        if std::mem::take(&mut drive.fail_page_2) {
            drive
                .files
                .insert("f1".to_owned(), "renamed.txt".to_owned());
            drive.position += 1;
            let position = drive.position;
            drive.log.push((position, "f1".to_owned(), false));
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"code": 400, "message": "Invalid Value"}})),
            )
                .into_response();
        }
        Json(json!({"kind": "drive#fileList", "incompleteSearch": false, "files": page(&ids[2..], &drive)})).into_response()
    }
    /// One change per page: `pageToken` is the position the page starts after.
    async fn changes(
        State(drive): State<Shared>,
        axum::extract::RawQuery(query): axum::extract::RawQuery,
    ) -> Response {
        let mut drive = drive.lock().unwrap();
        let tokens: Vec<u64> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .filter(|(name, _)| name == "pageToken")
            .map(|(_, value)| value.parse().unwrap())
            .collect();
        let [from] = tokens[..] else {
            return (StatusCode::BAD_REQUEST, format!("pageToken {tokens:?}")).into_response();
        };
        drive.calls.push(format!("changes {from}"));
        let after: Vec<&(u64, String, bool)> = drive
            .log
            .iter()
            .filter(|(position, _, _)| *position > from)
            .collect();
        let changes: Vec<Value> = after
            .iter()
            .take(1)
            .map(|(_, id, removed)| match (removed, drive.files.get(id)) {
                (false, Some(name)) => json!({"kind": "drive#change", "changeType": "file", "time": "2026-11-20T10:00:00.000Z", "removed": false, "fileId": id, "file": file(id, name)}),
                _ => json!({"kind": "drive#change", "changeType": "file", "time": "2026-11-20T10:00:00.000Z", "removed": true, "fileId": id}),
            })
            .collect();
        let mut body = json!({"kind": "drive#changeList", "changes": changes});
        match after.get(1) {
            Some(_) => body["nextPageToken"] = json!(after[0].0.to_string()),
            None => body["newStartPageToken"] = json!(drive.position.to_string()),
        }
        Json(body).into_response()
    }
    for test in test_stores("change_log_deleted_ids").await {
        let backend = test.backend;
        let shared: Shared = Arc::new(Mutex::new(Drive {
            files: [("f1", "a.txt"), ("f2", "b.txt"), ("f3", "c.txt")]
                .into_iter()
                .map(|(id, name)| (id.to_owned(), name.to_owned()))
                .collect(),
            fail_page_2: true,
            ..Drive::default()
        }));
        let app = axum::Router::new()
            .route("/drive/v3/changes/startPageToken", get(start))
            .route("/drive/v3/files", get(files))
            .route("/drive/v3/changes", get(changes))
            .with_state(Arc::clone(&shared));
        let server = serve(app).await;
        let spec = connector(
            "storage",
            r#"  files:
    model: document
    request: { path: /drive/v3/files }
    paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
    records: $.files[*]
    id: $.id
    deleted: record.trashed
    incremental:
      kind: change_log
      start: { path: /drive/v3/changes/startPageToken }
      start_token: $.startPageToken
      request: { path: /drive/v3/changes, query: { pageToken: "{{ state.sync_token }}" } }
      paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
      records: $.changes[?@.file].file
      deleted_ids: $.changes[?@.removed == true].fileId
      token: $.newStartPageToken
      reset_on: [400, 410]
    map:
      title: $.name
"#,
        );
        let calls = || std::mem::take(&mut shared.lock().unwrap().calls);

        // The first run stops at the second page; f1 was renamed while it listed.
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        assert!(result.is_err(), "{backend}");
        assert_eq!(calls(), ["start", "files", "files p2"], "{backend}");

        // The next run resumes the pass where it stopped, with the position asked when it began:
        // no new `start`, or the rename would be lost.
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(calls(), ["files p2"], "{backend}");
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 3, "{backend}");

        // f2 is deleted; the log names it by id alone.
        {
            let mut drive = shared.lock().unwrap();
            drive.files.remove("f2");
            drive.position += 1;
            let position = drive.position;
            drive.log.push((position, "f2".to_owned(), true));
        }
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            ["changes 0", "changes 1"],
            "{backend}: the log's second page replaces the kept position with its own token"
        );
        let written = recorder.totals().written;
        assert_eq!((written.updated, written.deleted), (1, 1), "{backend}");
        let dump = test.store.dump(PLATFORM).await.unwrap();
        let titles: Vec<(&str, &str, bool)> = dump
            .iter()
            .map(|(_, id, data, deleted)| {
                (
                    id.as_str(),
                    data["title"].as_str().unwrap_or_default(),
                    *deleted,
                )
            })
            .collect();
        assert_eq!(
            titles,
            [
                ("f1", "renamed.txt", false),
                ("f2", "b.txt", true),
                ("f3", "c.txt", false)
            ],
            "{backend}"
        );

        // Nothing changed since: one request, nothing written.
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(calls(), ["changes 2"], "{backend}");
        assert_eq!(
            recorder.totals().written,
            WriteCounts::default(),
            "{backend}"
        );
    }
}

/// Rows in the SQLite file itself, ignoring its write-ahead log (`immutable` reads skip it).
/// Such a read does not lock, so it fails while a checkpoint is writing the file: that is
/// "not yet".
async fn rows_in_the_file(path: &std::path::Path) -> Option<i64> {
    use sqlx::ConnectOptions;
    let url = format!("sqlite://{}?immutable=1", path.display());
    let mut connection = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .ok()?
        .connect()
        .await
        .ok()?;
    sqlx::query_scalar("SELECT count(*) FROM records")
        .fetch_one(&mut connection)
        .await
        .ok()
}

#[tokio::test]
async fn committed_records_reach_the_sqlite_file_while_the_store_stays_open() {
    // The store's own connection never checkpoints (that would hold the writer); its
    // checkpointer copies the log into the file after each commit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.sqlite");
    let mut store = engine::store::SqliteStore::open(&path).await.unwrap();
    store.write(&notes_page(50)).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rows_in_the_file(&path).await != Some(50) {
        assert!(
            std::time::Instant::now() < deadline,
            "the committed records never reached the database file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The store is still open and still serves them.
    assert_eq!(store.count(PLATFORM).await.unwrap(), 50);
}

/// After `close`, the file alone holds what was written: the log is copied in and removed, so
/// the file can be copied or searched while nothing else has it open.
#[tokio::test]
async fn a_closed_sqlite_store_leaves_everything_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("closed.sqlite");
    let mut store = engine::store::SqliteStore::open(&path).await.unwrap();
    store.write(&notes_page(3)).await.unwrap();
    let log = dir.path().join("closed.sqlite-wal");
    assert!(log.exists(), "the write went to the log first");
    store.close().await;
    assert!(!log.exists(), "the log is copied into the file and removed");
    assert!(store.holds_records("integration-1", "notes").await.is_err());
    assert_eq!(rows_in_the_file(&path).await, Some(3));
}
