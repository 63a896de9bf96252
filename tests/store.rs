//! The store itself, against SQLite and PostgreSQL: idempotent upserts, the audit log, opening
//! a location, the SQLite file (page size, the log copied in while open and on close), and
//! connecting, which makes an integration due in the same statement.

#[path = "common/notes_provider.rs"]
mod notes_provider;

use std::sync::Arc;

use engine::models::ModelKind;
use engine::record::MappedRecord;
use engine::state::{Checkpoint, StreamState};
use engine::store::{AnyStore, Batch, IntegrationStatus, RunScope, Sink, StoredIntegration, Sweep};
use hypernet_tests::{RunOptions, run, test_stores};
use notes_provider::{PLATFORM, T0, note, provider, spec};
use serde_json::{Value, json};

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

        // The same provider id for another user (their own account) is another record.
        let other = Arc::new(RunScope {
            user_id: Arc::from("user-2"),
            integration_id: Arc::from("integration-2"),
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
        let deleted = ids_and_deletions(&store, PLATFORM).await;
        // (Two records `a`: user-2's is in their own integration, outside this pass.)
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
                account: String::new(),
                status: IntegrationStatus::Active,
                config: serde_json::Map::new(),
                sealed_tokens: Some(vec![1, 2, 3]),
                scopes: Some("notes.read".into()),
                last_error: None,
                streams: None,
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

/// Every row of every table of the store's database, as text (`table: row`).
async fn every_row(store: &AnyStore) -> Vec<String> {
    let mut rows = Vec::new();
    match store {
        AnyStore::Sqlite(store) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            for table in tables {
                let columns: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}')"
                )))
                .fetch_all(store.pool())
                .await
                .unwrap();
                let row = columns
                    .iter()
                    .map(|column| format!("quote(\"{column}\")"))
                    .collect::<Vec<_>>()
                    .join(" || ' ' || ");
                let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT {row} FROM \"{table}\""
                )))
                .fetch_all(store.pool())
                .await
                .unwrap();
                rows.extend(texts.into_iter().map(|text| format!("{table}: {text}")));
            }
        }
        AnyStore::Postgres(store) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            for table in tables {
                let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT row_to_json(t)::text FROM \"{table}\" t"
                )))
                .fetch_all(store.pool())
                .await
                .unwrap();
                rows.extend(texts.into_iter().map(|text| format!("{table}: {text}")));
            }
        }
    }
    rows
}

/// "Delete my data" leaves nothing of the integration's content in any table (issue 22, point
/// 5): not its records, not the raw payload of a rejected record, not a run's error quoting the
/// provider, not its checkpoints. The audit log says that it happened, and nothing more.
#[tokio::test]
async fn deleting_an_integrations_data_leaves_no_trace_of_its_content() {
    const MARKER: &str = "private diary entry";
    for test in test_stores("delete_every_trace").await {
        let (_provider, server) = provider((0..2).map(|index| note(index, T0)).collect()).await;
        test.store
            .save_integration(&StoredIntegration {
                id: "integration-1".into(),
                user_id: "user-1".into(),
                connector: PLATFORM.into(),
                account: String::new(),
                status: IntegrationStatus::Active,
                config: serde_json::Map::new(),
                sealed_tokens: Some(vec![1, 2, 3]),
                scopes: None,
                last_error: None,
                streams: None,
            })
            .await
            .unwrap();
        run(&spec(""), &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        // A rejected record and a failed run that quotes the provider.
        let mut page = notes_page(0);
        page.rejects.push(engine::record::Reject {
            id: Some("n-bad".into()),
            reason: "`title` is not text".into(),
            raw: json!({"id": "n-bad", "title": [MARKER]}),
        });
        let mut store = test.store.clone();
        let run_id = store.start_run(&page.scope).await.unwrap();
        store.write(&page).await.unwrap();
        store
            .finish_run(
                run_id,
                &Default::default(),
                engine::store::RunStatus::Failed,
                Some(&format!("the provider answered 404: {MARKER}")),
            )
            .await
            .unwrap();
        // An authorization of the connector under way (reconnecting, say).
        server::tables::ServiceTables::on(&test.store)
            .save_pending(
                "state-of-user-1",
                &server::tables::PendingAuthorization {
                    user_id: "user-1".into(),
                    connector: PLATFORM.into(),
                    sealed: vec![4, 5, 6],
                    created_at: jiff::Timestamp::now().to_string(),
                },
            )
            .await
            .unwrap();
        let before = every_row(&test.store).await.join("\n");
        for trace in [
            MARKER,
            "Note 0",
            "rejects: ",
            "sync_runs: ",
            "oauth_pending: ",
        ] {
            assert!(before.contains(trace), "{}: {trace} before", test.backend);
        }

        test.store
            .delete_integration("integration-1", true)
            .await
            .unwrap();
        let after = every_row(&test.store).await;
        for row in &after {
            assert!(
                !row.contains(MARKER) && !row.contains("Note 0") && !row.contains("Note 1"),
                "{}: content left: {row}",
                test.backend
            );
            assert!(
                !row.contains("integration-1") || row.starts_with("audit_log: "),
                "{}: a trace of the integration left: {row}",
                test.backend
            );
            assert!(
                !row.starts_with("oauth_pending: "),
                "{}: an authorization under way left: {row}",
                test.backend
            );
        }
        let audit = after
            .iter()
            .filter(|row| row.starts_with("audit_log: "))
            .count();
        assert!(
            audit >= 2,
            "{}: the deletion is in the audit log",
            test.backend
        );
    }
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

/// Connecting (and reconnecting) saves an integration as due in the one statement: were it made
/// due by a second statement, a scheduler could claim it in between, finish the import, and
/// then find it due again (two imports for one connect, seen under load).
#[tokio::test]
async fn connecting_makes_an_integration_due_in_the_same_statement() {
    use server::tables::{Lane, Release, ServiceTables};
    let lease = std::time::Duration::from_secs(60);
    for test in test_stores("connect_due").await {
        let store = test.store.clone();
        let tables = ServiceTables::on(&store);
        let integration = StoredIntegration {
            id: "integration-1".to_owned(),
            user_id: "user-1".to_owned(),
            connector: PLATFORM.to_owned(),
            account: String::new(),
            status: IntegrationStatus::Active,
            config: serde_json::Map::new(),
            sealed_tokens: None,
            scopes: None,
            last_error: None,
            streams: None,
        };
        store.save_integration(&integration).await.unwrap();
        let summary = tables
            .integration_summary("integration-1")
            .await
            .unwrap()
            .unwrap();
        assert!(summary.next_sync_at.is_some(), "{}", test.backend);
        let claim = tables
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
        tables
            .release("integration-1", "w", &tomorrow)
            .await
            .unwrap();
        assert!(
            tables
                .claim_due("w", lease, Lane::Incremental, &[])
                .await
                .unwrap()
                .is_none(),
            "imported: due tomorrow"
        );
        // Reconnected: due again at once.
        store.save_integration(&integration).await.unwrap();
        let claim = tables
            .claim_due("w", lease, Lane::Incremental, &[])
            .await
            .unwrap();
        assert!(claim.is_some(), "{}: due once reconnected", test.backend);
    }
}

/// An integration whose syncs keep killing the process that runs them (each claimed, never
/// released: the lease simply expires) is quarantined after three, on both backends, instead of
/// taking down every process that picks it up; a sync a person asks for lifts it.
#[tokio::test]
async fn an_integration_whose_syncs_never_end_is_quarantined() {
    use server::tables::{Lane, QUARANTINE_AFTER, ServiceTables};
    // Claims that expire at once: the process "died" right after claiming.
    let lease = std::time::Duration::ZERO;
    for test in test_stores("quarantine").await {
        let store = test.store.clone();
        let tables = ServiceTables::on(&store);
        store
            .save_integration(&StoredIntegration {
                id: "integration-1".to_owned(),
                user_id: "user-1".to_owned(),
                connector: PLATFORM.to_owned(),
                account: String::new(),
                status: IntegrationStatus::Active,
                config: serde_json::Map::new(),
                sealed_tokens: None,
                scopes: None,
                last_error: None,
                streams: None,
            })
            .await
            .unwrap();
        for attempt in 1..=QUARANTINE_AFTER {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let claim = tables
                .claim_due("w", lease, Lane::Initial, &[])
                .await
                .unwrap();
            assert!(claim.is_some(), "{}: claim {attempt}", test.backend);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let claim = tables
            .claim_due("w", lease, Lane::Initial, &[])
            .await
            .unwrap();
        assert!(claim.is_none(), "{}: quarantined", test.backend);
        let summary = tables
            .integration_summary("integration-1")
            .await
            .unwrap()
            .unwrap();
        assert!(summary.quarantined, "{}", test.backend);

        tables
            .schedule("integration-1", jiff::Timestamp::now())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let claim = tables
            .claim_due("w", lease, Lane::Initial, &[])
            .await
            .unwrap();
        assert!(claim.is_some(), "{}: a person asked again", test.backend);
    }
}

/// The database holds people's data and sealed tokens: a new SQLite file, and the log SQLite
/// keeps beside it, are readable by their owner only (they were created 0644).
#[cfg(unix)]
#[tokio::test]
async fn a_new_sqlite_database_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hypernet.db");
    let store = AnyStore::open(path.to_str().unwrap()).await.unwrap();
    store.clone().write_pages(&[notes_page(1)]).await.unwrap();
    for file in [path.clone(), dir.path().join("hypernet.db-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    store.close().await;
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

/// Rows written while the store kept each record's provenance in its JSON too lose it to the
/// migration, their other members' text unchanged: the next import of the same record finds it
/// unchanged, and readers give it with its provenance from the columns.
#[tokio::test]
async fn rows_written_with_their_provenance_lose_it_to_the_migration_and_stay_unchanged() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("older.sqlite");
    // The schema as it was before the migration, and a row as it was written then.
    let all = <sqlx::Sqlite as engine::store::Backend>::migrator();
    let mut before = sqlx::migrate::Migrator::DEFAULT;
    before.migrations = std::borrow::Cow::Owned(
        all.migrations
            .iter()
            .filter(|migration| migration.version < 12)
            .cloned()
            .collect(),
    );
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    before.run(&pool).await.unwrap();
    // As mapping wrote it: UTF-8 as it is, quotes escaped, members in the spec's order.
    let old = r#"{"user_id":"u","source_integration_id":"notes:u","source_platform":"notes_api","source_object_id":"n1","title":"Café \"notes\"","body":"1.50","tags":["a","b"],"created_at":"2024-03-17T07:45:12Z"}"#;
    sqlx::query(
        "INSERT INTO records (source_platform, model, source_object_id, user_id, integration_id, stream, data, first_seen_at, updated_at) \
         VALUES ('notes_api', 'note', 'n1', 'u', 'notes:u', 'notes', ?, '2024-03-17T07:45:12.000000Z', '2024-03-17T07:45:12.000000Z')",
    )
    .bind(old)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let mut store = engine::store::SqliteStore::open(&path).await.unwrap();
    let (data,): (String,) = sqlx::query_as("SELECT data FROM records")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        data,
        r#"{"title":"Café \"notes\"","body":"1.50","tags":["a","b"],"created_at":"2024-03-17T07:45:12Z"}"#
    );
    let dumped = store.dump("notes_api").await.unwrap();
    assert_eq!(dumped[0].2["source_integration_id"], "notes:u");
    assert_eq!(dumped[0].2["title"], "Café \"notes\"");

    // The same record mapped again (its text as mapping writes it) is unchanged.
    let record: serde_json::Map<String, Value> = serde_json::from_str(old).unwrap();
    let counts = store.write(&note_n1_of(&record, "notes:u")).await.unwrap();
    assert_eq!((counts.new, counts.updated, counts.unchanged), (0, 0, 1));

    // The same record from the user's second account of the connector, its fields unchanged:
    // it moves to that integration (the integration is no longer in the JSON to differ).
    let counts = store
        .write(&note_n1_of(&record, "notes:u:work"))
        .await
        .unwrap();
    assert_eq!((counts.new, counts.updated, counts.unchanged), (0, 1, 0));
    let dumped = store.dump("notes_api").await.unwrap();
    assert_eq!(dumped[0].2["source_integration_id"], "notes:u:work");
}

/// Rows written before records were keyed by their scope (user, platform, model) get their
/// scope when the store opens: the next listing of a record finds it (unchanged, not a second
/// row); a pass under way keeps the ids it had seen, so its sweep marks only the others deleted;
/// content owed stays owed. On both backends: each migration copies the rows its own way.
#[tokio::test]
async fn rows_written_before_the_scope_key_are_found_by_it() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

    // The rows as the store wrote them before: literal values, so one text serves both.
    const OLDER_ROWS: &str = r#"
        INSERT INTO records (source_platform, model, source_object_id, user_id, integration_id, stream, data, first_seen_at, updated_at) VALUES
            ('notes_api', 'note', 'n1', 'u', 'notes:u', 'notes', '{"title":"Note"}', '2024-03-17T07:45:12.000000Z', '2024-03-17T07:45:12.000000Z'),
            ('notes_api', 'note', 'n2', 'u', 'notes:u', 'notes', '{"title":"Note"}', '2024-03-17T07:45:12.000000Z', '2024-03-17T07:45:12.000000Z'),
            ('notes_api', 'note', 'n3', 'u', 'notes:u', 'notes', '{"title":"Note"}', '2024-03-17T07:45:12.000000Z', '2024-03-17T07:45:12.000000Z');
        INSERT INTO sync_seen (integration_id, stream, pass_id, source_object_id) VALUES
            ('notes:u', 'notes', 7, 'n1'), ('notes:u', 'notes', 7, 'n2');
        INSERT INTO downloads (integration_id, stream, model, source_object_id, part, version, request, queued_at) VALUES
            ('notes:u', 'notes', 'note', 'n3', '', 'v1', '{}', '2024-03-17T07:45:12.000000Z');
    "#;
    /// The migrations before the scope key's.
    fn before(all: &sqlx::migrate::Migrator, version: i64) -> sqlx::migrate::Migrator {
        let mut before = sqlx::migrate::Migrator::DEFAULT;
        before.migrations = std::borrow::Cow::Owned(
            all.migrations
                .iter()
                .filter(|migration| migration.version < version)
                .cloned()
                .collect(),
        );
        before
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("older.sqlite");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    before(<sqlx::Sqlite as engine::store::Backend>::migrator(), 15)
        .run(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(OLDER_ROWS).execute(&pool).await.unwrap();
    pool.close().await;
    let location = path.to_string_lossy().into_owned();
    older_rows_are_found(AnyStore::open(&location).await.unwrap(), "sqlite").await;

    if let Some(location) = hypernet_tests::empty_postgres("older_rows").await {
        let pool = sqlx::PgPool::connect(&location).await.unwrap();
        before(<sqlx::Postgres as engine::store::Backend>::migrator(), 13)
            .run(&pool)
            .await
            .unwrap();
        sqlx::raw_sql(OLDER_ROWS).execute(&pool).await.unwrap();
        pool.close().await;
        older_rows_are_found(AnyStore::open(&location).await.unwrap(), "postgres").await;
    }
}

/// What [`rows_written_before_the_scope_key_are_found_by_it`] expects of the store it opened.
async fn older_rows_are_found(mut store: AnyStore, backend: &str) {
    // n1 listed again: found, unchanged.
    let record: serde_json::Map<String, Value> =
        serde_json::from_str(r#"{"title":"Note"}"#).unwrap();
    let counts = store.write(&note_n1_of(&record, "notes:u")).await.unwrap();
    assert_eq!(
        (counts.new, counts.updated, counts.unchanged),
        (0, 0, 1),
        "{backend}"
    );

    let owed = store.due_downloads("notes:u", 5, None, 10).await.unwrap();
    assert_eq!(
        owed.iter().map(|due| due.id.as_str()).collect::<Vec<_>>(),
        ["n3"],
        "{backend}"
    );

    // Pass 7 completes: what it did not see (n3) is marked deleted, n1 and n2 are kept.
    let mut sweep = note_n1_of(&record, "notes:u");
    sweep.records.clear();
    sweep.seen_in_pass = Some(7);
    sweep.sweeps = vec![Sweep {
        stream: Arc::from("notes"),
        pass: 7,
    }];
    let counts = store.write(&sweep).await.unwrap();
    assert_eq!(counts.deleted, 1, "{backend}");
    let deleted = ids_and_deletions(&store, "notes_api").await;
    assert_eq!(
        deleted,
        [
            ("n1".to_owned(), false),
            ("n2".to_owned(), false),
            ("n3".to_owned(), true)
        ],
        "{backend}"
    );
}

/// Each stored record of `platform` as (provider id, deleted), in the store's order.
async fn ids_and_deletions(store: &AnyStore, platform: &str) -> Vec<(String, bool)> {
    store
        .dump(platform)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, id, _, deleted)| (id, deleted))
        .collect()
}

/// A page holding note `n1` with the fields `record`, of user `u`'s integration `integration`.
fn note_n1_of(record: &serde_json::Map<String, Value>, integration: &str) -> Batch {
    let scope = Arc::new(RunScope {
        platform: Arc::from("notes_api"),
        user_id: Arc::from("u"),
        integration_id: Arc::from(integration),
        worker: None,
    });
    let mapped = MappedRecord::from_data("n1".to_owned(), record, false);
    Batch::records(
        scope,
        Arc::from("notes"),
        ModelKind::Note,
        vec![mapped],
        vec![],
    )
}

/// The stored checkpoint of the notes stream of `integration-1`.
async fn notes_checkpoint(store: &AnyStore) -> Option<StreamState> {
    store
        .checkpoint("integration-1", "notes", "")
        .await
        .unwrap()
}

/// The run's writer keeps a transaction open while pages keep coming and commits many pages at
/// once. Pages written uncommitted are kept together or not at all: a handle dropped before its
/// commit (a killed run) leaves no record and no checkpoint of them. Within a write, records go
/// in the order of their ids; an id listed twice keeps its later listing whatever ids stand
/// between, and a download owed twice is owed once, as the later listing asks.
#[tokio::test]
async fn uncommitted_pages_are_committed_together_or_not_at_all() {
    use engine::store::ContentDue;
    for test in test_stores("uncommitted").await {
        let page = |records: Vec<(&str, &str)>, token: &str| {
            let mut batch = notes_page(0);
            let mut downloads = Vec::new();
            let records = records
                .into_iter()
                .map(|(id, title)| {
                    downloads.push(ContentDue {
                        id: Arc::from(id),
                        part: String::new(),
                        file_name: None,
                        version: String::new(),
                        request: json!({"url": format!("https://example.com/{id}/{title}")})
                            .to_string(),
                    });
                    MappedRecord::from_data(
                        id.to_owned(),
                        json!({"title": title}).as_object().unwrap(),
                        false,
                    )
                })
                .collect::<Vec<_>>();
            batch.records = records.into_iter().map(Into::into).collect();
            batch.downloads = downloads;
            batch.checkpoint = Some(Checkpoint {
                stream: Arc::from("notes"),
                partition: String::new(),
                state: StreamState {
                    sync_token: Some(token.into()),
                    ..StreamState::default()
                },
            });
            batch
        };
        let first = page(vec![("z", "Z"), ("a", "A1"), ("m", "M"), ("a", "A2")], "t1");
        let second = page(vec![("b", "B")], "t2");

        // Written, never committed: gone with the handle.
        let mut killed = test.store.clone();
        let written = killed
            .write_pages_uncommitted(std::slice::from_ref(&first))
            .await
            .unwrap();
        assert_eq!((written.new, written.updated), (3, 1), "{}", test.backend);
        drop(killed);
        assert_eq!(
            test.store.count(PLATFORM).await.unwrap(),
            0,
            "{}",
            test.backend
        );
        assert_eq!(
            notes_checkpoint(&test.store).await,
            None,
            "{}",
            test.backend
        );

        // Two writes, one commit.
        let mut writer = test.store.clone();
        writer.write_pages_uncommitted(&[first]).await.unwrap();
        writer.write_pages_uncommitted(&[second]).await.unwrap();
        writer.commit().await.unwrap();
        assert_eq!(
            test.store.count(PLATFORM).await.unwrap(),
            4,
            "{}",
            test.backend
        );
        assert_eq!(
            stored(&test.store, "a").await,
            Some((json!("A2"), false)),
            "{}",
            test.backend
        );
        assert_eq!(
            notes_checkpoint(&test.store)
                .await
                .and_then(|state| state.sync_token)
                .as_deref(),
            Some("t2"),
            "{}",
            test.backend
        );
        let owed = test
            .store
            .due_downloads("integration-1", 5, None, 100)
            .await
            .unwrap();
        let mut requests: Vec<(String, String)> =
            owed.into_iter().map(|due| (due.id, due.request)).collect();
        requests.sort();
        let expected: Vec<(String, String)> = [("a", "A2"), ("b", "B"), ("m", "M"), ("z", "Z")]
            .iter()
            .map(|(id, title)| {
                let url = format!("https://example.com/{id}/{title}");
                (id.to_string(), json!({"url": url}).to_string())
            })
            .collect();
        assert_eq!(requests, expected, "{}", test.backend);
        // Nothing left open: committing again is nothing.
        writer.commit().await.unwrap();
    }
}

/// Owed downloads are read a few at a time, each read after where the last ended, in the order
/// their records were first stored: 250 owed come in three reads, each once, and one that
/// failed (still owed) is not read again by the reads after it.
#[tokio::test]
async fn owed_downloads_are_read_in_order_a_few_at_a_time() {
    use engine::store::ContentDue;
    for test in test_stores("owed_in_reads").await {
        let mut store = test.store.clone();
        // Ids in no order of their own, as a provider's are.
        let ids: Vec<String> = (0..250)
            .map(|n: u64| format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        let mut batch = notes_page(0);
        batch.records = ids
            .iter()
            .map(|id| {
                MappedRecord::from_data(
                    id.clone(),
                    json!({"title": id}).as_object().unwrap(),
                    false,
                )
                .into()
            })
            .collect();
        batch.downloads = ids
            .iter()
            .map(|id| ContentDue {
                id: Arc::from(id.as_str()),
                part: String::new(),
                file_name: None,
                version: String::new(),
                request: json!({"url": format!("https://example.com/{id}")}).to_string(),
            })
            .collect();
        store.write(&batch).await.unwrap();

        let mut after = None;
        let mut reads = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        loop {
            let due = store
                .due_downloads("integration-1", 5, after.as_ref(), 100)
                .await
                .unwrap();
            let Some(last) = due.last() else { break };
            after = Some(last.at.clone());
            reads.push(due.len());
            // The first of each read fails: it stays owed.
            let scope = batch.scope.clone();
            store
                .download_failed(&scope, &due[0], "refused")
                .await
                .unwrap();
            seen.extend(due.into_iter().map(|due| due.id));
        }
        assert_eq!(reads, [100, 100, 50], "{}", test.backend);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 250, "{}: each once", test.backend);
        // In the order the records were stored (rows), not the ids' order.
        let mut stored_order = ids.clone();
        stored_order.sort();
        assert_eq!(
            seen, stored_order,
            "{}: the page's rows are in id order",
            test.backend
        );
        // The three that failed are still owed, for the next run.
        let again = store
            .due_downloads("integration-1", 5, None, 1000)
            .await
            .unwrap();
        assert_eq!(again.len(), 250, "{}", test.backend);
        assert_eq!(
            again.iter().filter(|due| due.attempts == 1).count(),
            3,
            "{}",
            test.backend
        );
    }
}
