//! Resuming and deleting, against SQLite and PostgreSQL: a failed run resumes from its
//! checkpoint, a completed full pass marks unseen records deleted (a failed one marks nothing),
//! and what a sync writes after its integration was disconnected is purged.

#[path = "common/notes_provider.rs"]
mod notes_provider;

use std::sync::Arc;

use engine::models::ModelKind;
use engine::record::MappedRecord;
use engine::state::{Checkpoint, StreamState};
use engine::store::{AnyStore, Batch, RunScope, Sink};
use hypernet_tests::{RunOptions, run, test_stores};
use notes_provider::{PLATFORM, T0, note, provider, requests, spec};
use serde_json::json;

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

#[tokio::test]
async fn what_a_sync_writes_after_its_integration_was_disconnected_is_purged() {
    for test in test_stores("purge").await {
        let mut store = test.store.clone();
        let integration = engine::store::StoredIntegration {
            id: "integration-1".to_owned(),
            user_id: "user-1".to_owned(),
            connector: PLATFORM.to_owned(),
            account: String::new(),
            status: engine::store::IntegrationStatus::Active,
            config: serde_json::Map::new(),
            sealed_tokens: None,
            scopes: None,
            last_error: None,
            streams: None,
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
