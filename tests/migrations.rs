//! A database made by an earlier version migrates when the store opens it: its rows stay, and
//! what the new schema allows can be written. The earlier schema is made by running the
//! migrations that version had (the same files, so the same checksums), then the store opens it.

use std::path::{Path, PathBuf};

use engine::store::{AnyStore, RunScope, RunStatus, RunTotals, Sink};
use hypernet_tests::{empty_postgres, repo_root};
use sqlx::migrate::Migrator;

/// A folder holding the first `count` migrations of `backend`, as an earlier version shipped.
fn earlier_migrations(backend: &str, count: usize) -> (tempfile::TempDir, PathBuf) {
    let source = repo_root().join("engine/migrations").join(backend);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&source)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() > count,
        "{backend} has a migration after the first {count}"
    );
    let dir = tempfile::tempdir().unwrap();
    for file in &files[..count] {
        std::fs::copy(file, dir.path().join(file.file_name().unwrap())).unwrap();
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

async fn earlier_schema<DB>(migrations: &Path, pool: &sqlx::Pool<DB>)
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
{
    Migrator::new(migrations)
        .await
        .unwrap()
        .run(pool)
        .await
        .unwrap();
}

/// A fresh SQLite file with the first `count` migrations applied, as an earlier version left
/// it, and a connection to it.
async fn earlier_sqlite(count: usize) -> (tempfile::TempDir, PathBuf, sqlx::SqlitePool) {
    let (_migrations_dir, migrations) = earlier_migrations("sqlite", count);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("earlier.sqlite");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    earlier_schema(&migrations, &pool).await;
    (dir, file, pool)
}

/// A fresh PostgreSQL database with the first `count` migrations applied, and a connection to
/// it; `None` when no server is configured.
async fn earlier_postgres(name: &str, count: usize) -> Option<(String, sqlx::PgPool)> {
    let url = empty_postgres(name).await?;
    let (_migrations_dir, migrations) = earlier_migrations("postgres", count);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    earlier_schema(&migrations, &pool).await;
    Some((url, pool))
}

const OLD_RUN: &str = "INSERT INTO sync_runs (integration_id, user_id, connector, status, started_at, finished_at, pages) \
     VALUES ('notes:u1', 'u1', 'notes', 'succeeded', '2026-11-01T10:00:00Z', '2026-11-01T10:01:00Z', 7)";

/// What every backend must show after the migration: the earlier run as it was, and a new run
/// that ends `partial` (a status the earlier schema refused).
async fn check_migrated(store: &AnyStore, backend: &str) {
    let runs = store.runs("notes:u1").await.unwrap();
    assert_eq!(runs.len(), 1, "{backend}");
    assert_eq!(
        (runs[0].status.as_str(), runs[0].totals.pages),
        ("succeeded", 7),
        "{backend}"
    );
    let scope = RunScope {
        platform: "notes".into(),
        user_id: "u1".into(),
        integration_id: "notes:u1".into(),
        worker: None,
    };
    let id = store.start_run(&scope).await.unwrap();
    store
        .finish_run(
            id,
            &RunTotals::default(),
            RunStatus::Partial,
            Some("1 stream failed: notes / tags: the provider answered 404"),
        )
        .await
        .unwrap();
    let runs = store.runs("notes:u1").await.unwrap();
    assert_eq!(runs[0].status, "partial", "{backend}");
    assert!(runs[0].id > runs[1].id, "{backend}: ids keep growing");
}

#[tokio::test]
async fn an_sqlite_file_from_before_partial_runs_migrates() {
    let (_dir, file, pool) = earlier_sqlite(5).await;
    {
        sqlx::raw_sql(OLD_RUN).execute(&pool).await.unwrap();
        // The earlier schema refuses the new status: this test is about a real change.
        let refused = sqlx::raw_sql("UPDATE sync_runs SET status = 'partial'")
            .execute(&pool)
            .await;
        assert!(refused.is_err());
        pool.close().await;
    }
    let store = AnyStore::open(file.to_str().unwrap()).await.unwrap();
    check_migrated(&store, "sqlite").await;
    store.close().await;
}

#[tokio::test]
async fn a_postgres_database_from_before_partial_runs_migrates() {
    let Some((url, pool)) = earlier_postgres("migrate_partial", 3).await else {
        return;
    };
    {
        sqlx::raw_sql(OLD_RUN).execute(&pool).await.unwrap();
        let refused = sqlx::raw_sql("UPDATE sync_runs SET status = 'partial'")
            .execute(&pool)
            .await;
        assert!(refused.is_err());
        pool.close().await;
    }
    let store = AnyStore::open(&url).await.unwrap();
    check_migrated(&store, "postgres").await;
    store.close().await;
}

const OLD_INTEGRATION: &str = "INSERT INTO integrations (id, user_id, connector, status, config, created_at, updated_at) \
     VALUES ('notes:u1', 'u1', 'notes', 'active', '{\"mailbox\": \"home\"}', '2026-11-01T10:00:00Z', '2026-11-01T10:00:00Z')";

/// After the migration the earlier integration is the user's default account, with its id, and
/// a second account of the same connector sits beside it.
async fn check_accounts(store: &AnyStore, backend: &str) {
    let old = store.integration("notes:u1").await.unwrap().expect("kept");
    assert_eq!(
        (old.account.as_str(), old.config["mailbox"].as_str()),
        ("", Some("home")),
        "{backend}"
    );
    assert_eq!(
        engine::account::integration_id("notes", "u1", ""),
        "notes:u1",
        "the default account keeps the id it had"
    );
    let cipher = engine::credentials::secrets::TokenCipher::new(
        &engine::credentials::secrets::TokenCipher::generate_key(),
        &[],
    )
    .unwrap();
    let work = engine::account::save_connection(
        store,
        &cipher,
        engine::account::Connection {
            user_id: "u1",
            connector: "notes",
            account: "work",
            secret: b"{}",
            config: serde_json::Map::new(),
            scopes: None,
            streams: None,
        },
    )
    .await
    .unwrap();
    let mut accounts: Vec<(String, String)> = server::tables::ServiceTables::on(store)
        .integrations_of("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|summary| (summary.id, summary.account))
        .collect();
    accounts.sort();
    let mut expected = vec![
        ("notes:u1".to_owned(), String::new()),
        (work, "work".to_owned()),
    ];
    expected.sort();
    assert_eq!(accounts, expected, "{backend}");
}

#[tokio::test]
async fn an_sqlite_file_from_before_accounts_migrates() {
    let (_dir, file, pool) = earlier_sqlite(6).await;
    {
        sqlx::raw_sql(OLD_INTEGRATION).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let store = AnyStore::open(file.to_str().unwrap()).await.unwrap();
    check_accounts(&store, "sqlite").await;
    store.close().await;
}

#[tokio::test]
async fn a_postgres_database_from_before_accounts_migrates() {
    let Some((url, pool)) = earlier_postgres("migrate_accounts", 4).await else {
        return;
    };
    {
        sqlx::raw_sql(OLD_INTEGRATION).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let store = AnyStore::open(&url).await.unwrap();
    check_accounts(&store, "postgres").await;
    store.close().await;
}
