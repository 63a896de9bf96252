//! Two real `connector serve` processes on one PostgreSQL database share the scheduled syncs
//! and never run one integration twice at once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use engine::store::{IntegrationStatus, StoredIntegration};
use hypernet_tests::test_stores;
use serde_json::Value;

/// Connectors whose sandbox runs are quick; each user connects all of them.
const CONNECTORS: [&str; 4] = ["google_photos", "dropbox", "todoist", "notion"];
const USERS: usize = 3;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(database: &str, worker: &str, key_file: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_connector"))
        .args([
            "serve",
            "--sandbox",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--db",
            database,
            "--worker",
            worker,
            "--poll",
            "50ms",
            "--sync-every",
            "1s",
            "--lease",
            "5s",
        ])
        .arg("--key-file")
        .arg(key_file)
        .arg("--connectors-root")
        .arg(hypernet_tests::repo_root().join("connectors"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("connector serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the address line");
    let started: Value = serde_json::from_str(&line).expect("--json prints one JSON line");
    assert!(
        started["url"]
            .as_str()
            .is_some_and(|url| url.starts_with("http://127.0.0.1:"))
    );
    Server(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_share_the_syncs_and_never_run_one_integration_twice_at_once() {
    let Some(postgres) = test_stores("two_servers")
        .await
        .into_iter()
        .find(|store| store.backend == "postgres")
    else {
        return; // test_stores said why (and fails when PostgreSQL is required)
    };
    let store = &postgres.store;
    let mut ids = Vec::new();
    for user in 0..USERS {
        for connector in CONNECTORS {
            let id = format!("{connector}:user{user}");
            // Connected without tokens: in the sandbox, the stand-in credentials sign requests.
            store
                .save_integration(&StoredIntegration {
                    id: id.clone(),
                    user_id: format!("user{user}"),
                    connector: connector.to_owned(),
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
            ids.push(id);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("hypernet.key");
    let one = start(&postgres.location, "one", &key_file);
    let two = start(&postgres.location, "two", &key_file);
    // Every integration is due at once, then every second: several rounds of contention.
    tokio::time::sleep(Duration::from_secs(6)).await;
    drop(one);
    drop(two);

    let mut workers = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let mut runs = store.runs(id).await.unwrap();
        runs.reverse(); // oldest first
        assert!(runs.len() >= 2, "{id} ran {} times", runs.len());
        for pair in runs.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            let finished = before.finished_at.as_deref().unwrap_or_else(|| {
                panic!(
                    "{id}: run {} never finished, yet run {} started",
                    before.id, after.id
                )
            });
            assert!(
                after.started_at.as_str() >= finished,
                "{id}: run {} ({:?}) started at {} before run {} ({:?}) finished at {finished}",
                after.id,
                after.worker,
                after.started_at,
                before.id,
                before.worker
            );
        }
        for run in &runs {
            // The last run may have been cut short when the processes were stopped.
            if run.finished_at.is_some() {
                assert_eq!(run.status, "succeeded", "{id}: {:?}", run.error);
            }
            *workers
                .entry(run.worker.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    assert_eq!(
        workers.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["one", "two"],
        "both processes took syncs: {workers:?}"
    );
}
