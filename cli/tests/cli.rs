//! The `connector` binary as users and scripts see it: output, `--json` and exit statuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn connector(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connector"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn valid_connectors_exit_zero() {
    let output = connector(&["validate", "connectors"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("valid"));
}

/// Output nobody reads (`connector validate | head -1`, a closed pipe) is dropped: the command
/// exits with its own status instead of panicking.
#[test]
fn a_closed_output_pipe_is_no_panic() {
    for (args, status) in [
        (&["validate", "connectors"][..], 0),
        (
            &["validate", "tests/specs/broken/09_auth_kind_typo.yaml"][..],
            1,
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_connector"))
            .args(args)
            .current_dir(root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reading end closes before the command writes anything.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn validate_defaults_to_the_connectors_folder() {
    let output = connector(&["validate"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}

#[test]
fn invalid_specs_exit_one_with_file_line_column() {
    let output = connector(&["validate", "tests/specs/broken/09_auth_kind_typo.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.starts_with("tests/specs/broken/09_auth_kind_typo.yaml:10:9: auth.kind:"),
        "{text}"
    );
    assert!(text.contains("did you mean `oauth2`?"), "{text}");
}

#[test]
fn a_folder_with_several_broken_specs_reports_every_problem() {
    let broken =
        |name: &str| std::fs::read_to_string(root().join("tests/specs/broken").join(name)).unwrap();
    let dir = hypernet_tests::connectors_folder(&[
        ("09_auth_kind_typo", &broken("09_auth_kind_typo.yaml")),
        ("30_stream_field_typo", &broken("30_stream_field_typo.yaml")),
    ]);
    let output = connector(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("unknown field `recods`"), "{text}");
    assert!(text.contains("`oauth` is not allowed here"), "{text}");
    assert!(text.contains("2 of 2 specs invalid, 2 problems"), "{text}");
}

#[test]
fn a_connector_id_must_match_its_folder() {
    let text =
        std::fs::read_to_string(root().join("tests/specs/valid/example_calendar.yaml")).unwrap();
    let dir = hypernet_tests::connectors_folder(&[("calendar", &text)]);
    let output = connector(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("id: id `example_calendar` differs from its folder `calendar`"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn json_output_is_machine_readable() {
    let output = connector(&[
        "validate",
        "--json",
        "tests/specs/broken/20_rate_limit_duration_words.yaml",
        "connectors",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["invalid"], 1);
    assert!(report["valid"].as_u64().unwrap() >= 1);
    let diagnostic = &report["specs"][0]["diagnostics"][0];
    assert_eq!(diagnostic["line"], 30);
    assert_eq!(diagnostic["column"], 10);
    assert_eq!(diagnostic["field"], "rate_limits[0].per");
    assert_eq!(
        diagnostic["expected"],
        "a duration such as `30s`, `15m` or `1d`"
    );
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(
        connector(&["validate", "no/such/path"]).status.code(),
        Some(2)
    );
    assert_eq!(
        connector(&["validate", "--no-such-flag"]).status.code(),
        Some(2)
    );
    assert_eq!(connector(&["no-such-command"]).status.code(), Some(2));
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        connector(&["validate", empty.path().to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["schema", "--help"],
        vec!["test", "--help"],
        vec!["sync", "--help"],
        vec!["auth", "--help"],
        vec!["disconnect", "--help"],
    ] {
        let output = connector(&args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(stdout(&output).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn schema_check_passes_on_the_repository_and_fails_on_drift() {
    assert_eq!(connector(&["schema", "--check"]).status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let root_arg = dir.path().to_str().unwrap();
    assert_eq!(
        connector(&["schema", "--write", "--root", root_arg])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        connector(&["schema", "--check", "--root", root_arg])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(dir.path().join("docs/spec.md"), "stale").unwrap();
    let output = connector(&["schema", "--check", "--root", root_arg]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("docs/spec.md differs"));
}

#[test]
fn schema_prints_the_connector_schema() {
    let output = connector(&["schema"]);
    assert_eq!(output.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["title"], "Hypernet connector spec");
}

/// A copy of the google_photos connector in a scratch folder, to break on purpose.
fn scratch_connector() -> tempfile::TempDir {
    scratch_copy("google_photos")
}

fn scratch_copy(id: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&root().join("connectors").join(id), &dir.path().join(id));
    dir
}

/// Copies the folder `source` with everything under it to `target`.
fn copy_tree(source: &std::path::Path, target: &std::path::Path) {
    std::fs::create_dir_all(target).unwrap();
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn connector_test_passes_on_the_catalog() {
    let output = connector(&["test", "google_photos"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("stream media_items: matches"));
    assert!(
        stdout(&output).ends_with("1 connector tested: all passed\n"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn connector_test_fails_when_a_snapshot_changes() {
    let dir = scratch_connector();
    let snapshot = dir.path().join("google_photos/snapshots/media_items.snap");
    let text = std::fs::read_to_string(&snapshot)
        .unwrap()
        .replace("\"width\": 4032", "\"width\": 4000");
    std::fs::write(&snapshot, text).unwrap();
    let output = connector(&["test", dir.path().join("google_photos").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("-      \"width\": 4000,") && text.contains("+      \"width\": 4032,"),
        "{text}"
    );
    assert!(
        text.ends_with("1 connector tested: 0 passed, 1 failed (google_photos)\n"),
        "{text}"
    );
}

#[test]
fn connector_test_fails_when_a_second_run_would_write() {
    // The calendar's "no changes" answer to its kept sync token now reports a changed event.
    let dir = scratch_copy("google_calendar");
    let folder = dir.path().join("google_calendar");
    let fixture = folder.join("fixtures/06_next_run_holidays_no_changes.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let page_one: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("fixtures/04_holiday_events.json")).unwrap(),
    )
    .unwrap();
    let mut event = page_one["response"]["body"]["items"][0].clone();
    event["summary"] = "Portugal Day (moved)".into();
    value["response"]["body"]["items"] = serde_json::json!([event]);
    std::fs::write(&fixture, value.to_string()).unwrap();
    let output = connector(&["test", folder.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains(
            "a second run over the same fixtures wrote records (0 new, 1 updated, 0 deleted)"
        ),
        "{}",
        stdout(&output)
    );
}

#[test]
fn connector_test_fails_when_a_fixture_changes_or_goes_unused() {
    let dir = scratch_connector();
    let folder = dir.path().join("google_photos");
    let fixture = folder.join("fixtures/01_media_items_page_1.json");
    let text = std::fs::read_to_string(&fixture)
        .unwrap()
        .replace("PXL_20240601_051231482.jpg", "renamed.jpg");
    std::fs::write(&fixture, text).unwrap();
    let output = connector(&["test", folder.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("+      \"title\": \"renamed.jpg\""),
        "{}",
        stdout(&output)
    );

    let dir = scratch_connector();
    let folder = dir.path().join("google_photos");
    std::fs::copy(
        folder.join("fixtures/01_media_items_page_1.json"),
        folder.join("fixtures/99_never_asked.json"),
    )
    .unwrap();
    let output = connector(&["test", folder.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("fixture never requested: 99_never_asked.json"),
        "{}",
        stdout(&output)
    );

    let dir = scratch_connector();
    let folder = dir.path().join("google_photos");
    std::fs::remove_file(folder.join("fixtures/03_media_items_page_3_last.json")).unwrap();
    let output = connector(&["test", folder.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("request without a fixture: GET photoslibrary.googleapis.com/v1/mediaItems?pageSize=100&pageToken="), "{text}");
    assert!(text.contains("sync failed: google_photos / media_items / GET https://photoslibrary.googleapis.com/v1/mediaItems"), "{text}");
}

#[test]
fn sync_in_the_sandbox_fills_an_sqlite_file_and_a_second_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hypernet.sqlite");
    let db_arg = db.to_str().unwrap();
    let output = connector(&["sync", "google_photos", "--sandbox", "--db", db_arg]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout(&output).contains("new 5 · updated 0 · unchanged 0"),
        "{}",
        stdout(&output)
    );
    // The four items that have bytes (a video still processing has none yet), beside the file.
    assert!(
        stdout(&output).contains("content: 4 stored (0.0 MB) · 0 not downloaded"),
        "{}",
        stdout(&output)
    );
    let mut blobs: Vec<u64> =
        hypernet_tests::files_of(&dir.path().join("hypernet.blobs").join("b3"))
            .iter()
            .map(|(_, bytes)| bytes.len() as u64)
            .collect();
    blobs.sort_unstable();
    assert_eq!(blobs, vec![126, 160, 556, 2388]);

    let output = connector(&[
        "sync",
        "google_photos",
        "--sandbox",
        "--db",
        db_arg,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (
            summary["new"].as_u64(),
            summary["unchanged"].as_u64(),
            summary["requests"].as_u64()
        ),
        (Some(0), Some(5), Some(3))
    );

    let rows: Vec<(String, String, String)> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::sqlite::SqliteConnectOptions;
        let pool = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(&db)).await.unwrap();
        sqlx::query_as("SELECT source_object_id, model, data FROM records ORDER BY json_extract(data, '$.taken_at')").fetch_all(&pool).await.unwrap()
    });
    assert_eq!(rows.len(), 5);
    let oldest: serde_json::Value = serde_json::from_str(&rows[0].2).unwrap();
    assert_eq!(rows[0].0, "AKfRoYt2mHq7wZb1cRx5LyP8sU3vD6nK9oF4eG1aJ0iTwQc");
    assert_eq!(rows[0].1, "media");
    assert_eq!(oldest["title"], "IMG_0042.HEIC");
    assert_eq!(oldest["media_type"], "photo");
    assert_eq!(oldest["width"], 3024);
    assert_eq!(oldest["taken_at"], "2019-11-22T10:00:00Z");
    // The provenance is in the row's columns, not in its JSON again.
    assert!(oldest.get("source_platform").is_none(), "{oldest}");
}

#[test]
fn google_connectors_share_one_oauth_client() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hypernet.sqlite");
    for connector_id in ["gmail", "google_drive"] {
        let output = Command::new(env!("CARGO_BIN_EXE_connector"))
            .args(["auth", connector_id, "--no-open", "--timeout", "1", "--db"])
            .arg(&db)
            .arg("--key-file")
            .arg(dir.path().join("key"))
            .env_remove("HYPERNET_GOOGLE_CLIENT_ID")
            .env_remove("HYPERNET_GMAIL_CLIENT_ID")
            .current_dir(root())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("no OAuth client for {connector_id}"))
                && stderr.contains("HYPERNET_GOOGLE_CLIENT_ID"),
            "{stderr}"
        );
    }
}

#[test]
fn history_lists_the_runs_and_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hypernet.sqlite");
    let db_arg = db.to_str().unwrap();
    for _ in 0..2 {
        let output = connector(&["sync", "google_photos", "--sandbox", "--db", db_arg]);
        assert_eq!(output.status.code(), Some(0));
    }
    let output = connector(&["history", "google_photos", "--db", db_arg, "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let history: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(history["integration"], "google_photos:local");
    let runs = history["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["totals"]["written"]["unchanged"], 5, "newest first");
    assert_eq!(runs[1]["totals"]["written"]["new"], 5);
    let actions: Vec<&str> = history["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "sync_started",
            "sync_finished",
            "sync_started",
            "sync_finished"
        ]
    );

    let output = connector(&["history", "google_photos", "--db", db_arg, "--runs", "1"]);
    assert!(
        stdout(&output).contains("the last 1 run, newest first"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn sync_of_an_unknown_connector_is_a_usage_error() {
    let output = connector(&["sync", "no_such_connector", "--sandbox"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no connector `no_such_connector`"));
}

#[test]
fn sync_of_an_oauth_connector_without_a_token_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hypernet.sqlite");
    let output = connector(&["sync", "google_photos", "--db", db.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("google_photos is not connected for user local: run `connector auth google_photos` first"), "{stderr}");
}

/// `connector auth --sandbox`, with a stand-in browser following the printed URL.
fn authorize_in_sandbox(db: &std::path::Path, key: &std::path::Path) -> (String, String) {
    authorize_connector_in_sandbox("google_photos", db, key)
}

/// `connector auth CONNECTOR --sandbox`, with a stand-in browser following the printed URL.
fn authorize_connector_in_sandbox(
    connector_id: &str,
    db: &std::path::Path,
    key: &std::path::Path,
) -> (String, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_connector"))
        .args([
            "auth",
            connector_id,
            "--sandbox",
            "--no-open",
            "--db",
            db.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ])
        .env("RUST_LOG", "debug")
        .env_remove("HYPERNET_TOKEN_KEY")
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut logged = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "auth ended before printing a URL: {logged}"
        );
        logged.push_str(&line);
        if line.starts_with("http://") {
            break line.trim().to_owned();
        }
    };
    engine::http::install_tls_provider();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let provider = browser.get(&url).send().await.unwrap();
        let callback = provider.headers()["location"].to_str().unwrap().to_owned();
        assert!(callback.contains("/callback?"), "{callback}");
        let page = browser
            .get(&callback)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Authorization received"));
    });
    let output = child.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    logged.push_str(&rest);
    assert_eq!(output.status.code(), Some(0), "{logged}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), logged)
}

#[test]
fn oauth_tokens_are_stored_encrypted_and_never_appear_in_the_database_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (
        dir.path().join("hypernet.sqlite"),
        dir.path().join("hypernet.key"),
    );
    let (auth_out, auth_err) = authorize_in_sandbox(&db, &key);
    assert!(
        auth_out.contains("run `connector sync google_photos --sandbox"),
        "the next command is the sandbox's: {auth_out}"
    );
    assert!(
        auth_out
            .contains("Connected Google Photos for user local (integration google_photos:local)"),
        "{auth_out}"
    );
    assert!(
        auth_out.contains(
            "Granted scopes: https://www.googleapis.com/auth/photoslibrary.readonly.appcreateddata"
        ),
        "{auth_out}"
    );

    let sync = Command::new(env!("CARGO_BIN_EXE_connector"))
        .args([
            "sync",
            "google_photos",
            "--sandbox",
            "--db",
            db.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            "--json",
        ])
        .env("RUST_LOG", "debug")
        .env_remove("HYPERNET_TOKEN_KEY")
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(
        sync.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&sync.stdout).unwrap();
    assert_eq!(summary["new"], 5);

    // Learn the plaintext tokens the way only a holder of the key can.
    let sealed: Vec<u8> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = engine::store::SqliteStore::open(&db).await.unwrap();
        let sealed = store
            .integration("google_photos:local")
            .await
            .unwrap()
            .unwrap()
            .sealed_tokens
            .unwrap();
        // Closed, so that no connection removes the log while the files are searched.
        store.close().await;
        sealed
    });
    let key_text = std::fs::read_to_string(&key).unwrap();
    let cipher = engine::credentials::secrets::TokenCipher::new(&key_text, &[]).unwrap();
    let tokens: engine::credentials::oauth2::TokenSet =
        serde_json::from_slice(&cipher.decrypt(&sealed).unwrap()).unwrap();
    let secrets = [
        tokens.access_token.clone(),
        tokens.refresh_token.clone().unwrap(),
    ];
    assert!(secrets[0].starts_with("sandbox-access-") && secrets[0].len() > 30);

    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("auth stdout".into(), auth_out.into_bytes()),
        ("auth stderr".into(), auth_err.into_bytes()),
        ("sync stdout".into(), sync.stdout.clone()),
        ("sync stderr".into(), sync.stderr.clone()),
    ];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("hypernet.sqlite")
        {
            haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(haystacks.len() >= 5, "the database files were searched too");
    for (name, bytes) in &haystacks {
        for secret in &secrets {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "a token appears in {name}"
            );
        }
    }
}

#[test]
fn disconnect_revokes_deletes_tokens_and_keeps_data_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (
        dir.path().join("hypernet.sqlite"),
        dir.path().join("hypernet.key"),
    );
    let (db_arg, key_arg) = (db.to_str().unwrap(), key.to_str().unwrap());
    let records = || -> i64 {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = engine::store::SqliteStore::open(&db).await.unwrap();
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM records")
                .fetch_one(store.pool())
                .await
                .unwrap();
            count
        })
    };
    for delete_data in [false, true] {
        authorize_in_sandbox(&db, &key);
        let sync = connector(&[
            "sync",
            "google_photos",
            "--sandbox",
            "--db",
            db_arg,
            "--key-file",
            key_arg,
        ]);
        assert_eq!(sync.status.code(), Some(0));
        let mut args = vec![
            "disconnect",
            "google_photos",
            "--sandbox",
            "--db",
            db_arg,
            "--key-file",
            key_arg,
            "--json",
        ];
        if delete_data {
            args.push("--delete-data");
        }
        let output = connector(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["revoked"], true);
        assert_eq!(report["records_deleted"], if delete_data { 5 } else { 0 });
        assert_eq!(records(), if delete_data { 0 } else { 5 });
        let again = connector(&["disconnect", "google_photos", "--db", db_arg]);
        assert_eq!(again.status.code(), Some(1), "the integration is gone");
    }
}

#[test]
fn oauth1_connectors_connect_and_sync_through_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (
        dir.path().join("hypernet.sqlite"),
        dir.path().join("hypernet.key"),
    );
    let (out, _) = authorize_connector_in_sandbox("trello", &db, &key);
    assert!(
        out.contains("Connected Trello for user local (integration trello:local)"),
        "{out}"
    );
    let sync = connector(&[
        "sync",
        "trello",
        "--sandbox",
        "--db",
        db.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        sync.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&sync.stdout).unwrap();
    assert_eq!(
        (summary["new"].as_u64(), summary["requests"].as_u64()),
        (Some(3), Some(3))
    );
}

/// A sync in which one stream fails and another imports exits 3 (partial), names the failed
/// stream with what to do, and keeps what the healthy stream imported.
#[tokio::test]
async fn a_partial_sync_exits_three_and_names_the_failed_stream() {
    use axum::routing::get;

    let app = axum::Router::new()
        .route(
            "/notes",
            get(|| async {
                axum::Json(serde_json::json!({"items": [{"id": "n1", "title": "One"}]}))
            }),
        )
        .route(
            "/missing",
            get(|| async { (axum::http::StatusCode::NOT_FOUND, "no such endpoint") }),
        );
    let server = hypernet_tests::serve(app).await;
    let spec = r#"id: partial_api
name: Partial API
version: 1.0.0
category: productivity
description: A provider one of whose endpoints fails.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
retry:
  max_attempts: 1
streams:
  broken:
    model: note
    request: { path: /missing }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
  notes:
    model: note
    request: { path: /notes }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
"#;
    let root = hypernet_tests::connectors_folder(&[("partial_api", spec)]);
    let db = root.path().join("hypernet.sqlite");
    let sync = |json: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_connector"));
        command
            .args(["sync", "partial_api", "--connectors-root"])
            .arg(root.path())
            .args(["--via", server.as_str(), "--db"])
            .arg(&db)
            .arg("--key-file")
            .arg(root.path().join("hypernet.key"))
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG");
        if json {
            command.arg("--json");
        }
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let output = sync(true).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["status"], "partial");
    assert_eq!(summary["new"], 1, "the healthy stream imported");
    assert_eq!(summary["failed_streams"][0]["stream"], "broken");
    assert!(
        summary["failed_streams"][0]["error"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{summary}"
    );

    let output = sync(false).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.starts_with("error: partial_api / broken / GET https://api.example.com/missing: the provider answered 404"),
        "{stderr}"
    );
    assert!(stderr.contains("  what to do: "), "{stderr}");
    assert!(
        stderr.contains("1 stream failed; the others imported"),
        "{stderr}"
    );
}

/// `RUST_LOG=info` shows each retry as a log line on standard error, as the README says.
#[tokio::test]
async fn rust_log_info_shows_each_retry() {
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/notes",
        get(move || {
            let counted = std::sync::Arc::clone(&counted);
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    return axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                    ));
                }
                axum::response::IntoResponse::into_response(axum::Json(
                    serde_json::json!({"items": [{"id": "n1", "title": "One"}]}),
                ))
            }
        }),
    );
    let server = hypernet_tests::serve(app).await;
    let spec = r#"id: retry_api
name: Retry API
version: 1.0.0
category: productivity
description: A provider that is busy once.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
retry:
  max_attempts: 3
  backoff: { initial: 1ms, max: 5ms }
streams:
  notes:
    model: note
    request: { path: /notes }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
"#;
    let root = hypernet_tests::connectors_folder(&[("retry_api", spec)]);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_connector"));
    command
        .args(["sync", "retry_api", "--connectors-root"])
        .arg(root.path())
        .args(["--via", server.as_str(), "--db"])
        .arg(root.path().join("hypernet.sqlite"))
        .arg("--key-file")
        .arg(root.path().join("hypernet.key"))
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let retries: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("retrying"))
        .collect();
    assert_eq!(retries.len(), 1, "{stderr}");
    assert!(
        retries[0].contains("GET https://api.example.com/notes")
            && retries[0].contains("status 503"),
        "{}",
        retries[0]
    );
}

/// `--account NAME` is another integration of the same connector: its own runs and records,
/// beside the default account's, in one database.
#[test]
fn a_named_account_is_its_own_integration() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hypernet.sqlite");
    let db_arg = db.to_str().unwrap();
    for account in [None, Some("work")] {
        let mut args = vec!["sync", "google_photos", "--sandbox", "--db", db_arg];
        if let Some(account) = account {
            args.extend(["--account", account]);
        }
        let output = connector(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let history = |account: Option<&str>| {
        let mut args = vec!["history", "google_photos", "--db", db_arg, "--json"];
        if let Some(account) = account {
            args.extend(["--account", account]);
        }
        let output = connector(&args);
        assert_eq!(output.status.code(), Some(0));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let default = history(None);
    let work = history(Some("work"));
    assert_eq!(default["runs"].as_array().unwrap().len(), 1, "{default}");
    assert_eq!(work["runs"].as_array().unwrap().len(), 1, "{work}");
    assert_ne!(default["integration"], work["integration"]);
    assert!(history(Some("home"))["runs"].as_array().unwrap().is_empty());
    // Each account imported the sandbox's five photos under its own integration.
    let rows: Vec<(String, i64)> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(&db),
        )
        .await
        .unwrap();
        sqlx::query_as(
            "SELECT json_extract(data, '$.source_integration_id'), COUNT(*) FROM records GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    });
    assert_eq!(rows.len(), 1, "{rows:?}: one user, so one record per photo");
}

#[test]
fn gc_removes_the_content_no_record_refers_to_and_what_a_crash_staged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hypernet.sqlite");
    let db_arg = db.to_str().unwrap();
    let output = connector(&["sync", "google_photos", "--sandbox", "--db", db_arg]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let blobs = dir.path().join("hypernet.blobs");
    // A record's content reference lost (as when data is deleted and the blob's deletion
    // fails), and a download a crash left staged.
    let orphan: String = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::sqlite::SqliteConnectOptions;
        let pool = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(&db))
            .await
            .unwrap();
        let hash: String =
            sqlx::query_scalar("SELECT hash FROM record_blobs WHERE content_type = 'image/png'")
                .fetch_one(&pool)
                .await
                .unwrap();
        sqlx::query("DELETE FROM record_blobs WHERE hash = ?")
            .bind(&hash)
            .execute(&pool)
            .await
            .unwrap();
        hash
    });
    std::fs::write(blobs.join(".staging").join("blob-crashed"), b"half a photo").unwrap();

    // Within the grace period nothing goes: a download may be about to record its reference.
    let output = connector(&["gc", "--db", db_arg, "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let kept: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (
            &kept["blobs"],
            &kept["deleted"],
            &kept["kept_young"],
            &kept["staged_removed"]
        ),
        (
            &serde_json::json!(4),
            &serde_json::json!(0),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{kept}"
    );

    let output = connector(&["gc", "--db", db_arg, "--grace", "0s", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let collected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (
            &collected["deleted"],
            &collected["bytes_freed"],
            &collected["staged_removed"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(126),
            &serde_json::json!(1)
        ),
        "{collected}"
    );
    let left: Vec<String> = hypernet_tests::files_of(&blobs.join("b3"))
        .into_iter()
        .map(|(inside, _)| inside.rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(left.len(), 3);
    assert!(!left.contains(&orphan));
    assert!(hypernet_tests::files_of(&blobs.join(".staging")).is_empty());
}

#[test]
fn connector_test_fails_when_a_mapped_field_never_has_a_value() {
    // A misspelt path maps nothing in any record, which the snapshot alone would not show.
    let dir = scratch_connector();
    let folder = dir.path().join("google_photos");
    let spec = folder.join("connector.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(
        text.contains("$.mediaMetadata.width"),
        "the spec maps the width"
    );
    std::fs::write(
        &spec,
        text.replace("$.mediaMetadata.width", "$.mediaMetadata.widht"),
    )
    .unwrap();
    let output = connector(&["test", folder.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let printed = stdout(&output);
    assert!(
        printed.contains("stream media_items: `map.width` has a value in none of its"),
        "{printed}"
    );

    // Marked `rare`, the same field passes the check (the snapshot still differs: no width).
    let marked = text.replace(
        "width: { from: $.mediaMetadata.width, as: integer }",
        "width: { from: $.mediaMetadata.widht, as: integer, rare: true }",
    );
    assert_ne!(marked, text, "the spec maps the width as an integer");
    std::fs::write(&spec, marked).unwrap();
    let output = connector(&["test", folder.to_str().unwrap()]);
    assert!(
        !stdout(&output).contains("has a value in none"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn a_mistyped_connector_or_stream_is_a_usage_error_that_names_the_nearest() {
    let output = connector(&["sync", "google_photoss", "--sandbox"]);
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        said.contains("no connector `google_photoss` (did you mean `google_photos`?)"),
        "{said}"
    );

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hypernet.sqlite");
    let output = connector(&[
        "sync",
        "google_photos",
        "--sandbox",
        "--db",
        db.to_str().unwrap(),
        "--stream",
        "media_itemz",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        said.contains("google_photos has no stream `media_itemz` (did you mean `media_items`?); the streams that read its API: media_items, picked_media"),
        "{said}"
    );
    assert!(!db.exists(), "nothing was run, no database made");
}

#[test]
fn history_of_a_database_that_does_not_exist_makes_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nowhere.sqlite");
    let output = connector(&["history", "google_photos", "--db", db.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(said.contains("no database at"), "{said}");
    assert!(!db.exists());
}

#[test]
fn an_unknown_config_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hypernet.sqlite");
    let db = db.to_str().unwrap();
    let output = connector(&[
        "sync",
        "google_photos",
        "--sandbox",
        "--db",
        db,
        "--config",
        "page_sise=10",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        said.contains("`--config page_sise`: google_photos takes no config values"),
        "{said}"
    );
    assert!(!std::path::Path::new(db).exists());
}
