//! Archive streams end to end: a data export read from a zip, a tar.gz and a folder into real
//! stores (SQLite, and PostgreSQL when the tests have one), re-imports that write nothing,
//! newer exports that write what changed, a key shared with an API stream, and hostile archives
//! refused with a clear error before anything is written.

use std::path::{Path, PathBuf};

use axum::routing::get;
use hypernet_tests::{
    RunOptions, files_of, import, open_export, run, serve, spec_from, test_stores, zip_of,
};
use serde_json::{Value, json};

/// Spotify's extended streaming history, as the connector's fixture export lays it out.
fn spotify_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../connectors/spotify/fixtures/exports/2024_extended_history")
}

fn spotify() -> std::sync::Arc<engine::spec::ConnectorSpec> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors/spotify/connector.yaml");
    std::sync::Arc::new(engine::spec::load(&path).expect("the Spotify spec"))
}

/// A tar.gz of `files` (Takeout's other format), with the folder entries tar writes.
fn tar_gz_of(files: &[(String, Vec<u8>)], path: &Path) {
    let gzip = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gzip);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

type Rows = Vec<(String, String, Value, bool)>;

/// The plays of the fixture export (rows whose play names no track or episode left out).
const FIXTURE_PLAYS: usize = 9;

#[tokio::test]
async fn an_export_imports_the_same_from_a_zip_a_tar_gz_and_a_folder() {
    let spec = spotify();
    let files = files_of(&spotify_fixture());
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("my_spotify_data.zip");
    let tar_gz = dir.path().join("my_spotify_data.tar.gz");
    zip_of(&files, &zip);
    tar_gz_of(&files, &tar_gz);
    for test in test_stores("archive_kinds").await {
        let mut tables: Vec<Rows> = Vec::new();
        for path in [spotify_fixture(), zip.clone(), tar_gz.clone()] {
            let store = test_stores(&format!("archive_kind_{}", tables.len()))
                .await
                .into_iter()
                .find(|other| other.backend == test.backend)
                .unwrap();
            let export = open_export(&[&path]).unwrap();
            let (result, recorder) = import(&spec, &export, &store.store).await;
            result.unwrap_or_else(|error| panic!("{}: {}: {error}", test.backend, path.display()));
            assert_eq!(
                recorder.totals().written.new,
                FIXTURE_PLAYS as u64,
                "{}: {}",
                test.backend,
                path.display()
            );
            tables.push(store.store.dump("spotify").await.unwrap());
        }
        assert_eq!(tables[0].len(), FIXTURE_PLAYS);
        assert!(tables[0] == tables[1], "{}: zip = folder", test.backend);
        assert!(tables[0] == tables[2], "{}: tar.gz = folder", test.backend);
    }
}

/// An export whose plays are `plays` (uri, ts, ms), in one file of the current layout.
fn export_with(plays: &[(&str, &str, i64)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("Spotify Extended Streaming History");
    std::fs::create_dir_all(&folder).unwrap();
    let rows: Vec<Value> = plays
        .iter()
        .map(|(uri, ts, ms)| {
            json!({"ts": ts, "platform": "ios", "ms_played": ms, "conn_country": "DE",
                "ip_addr": "203.0.113.54", "master_metadata_track_name": format!("Track {uri}"),
                "master_metadata_album_artist_name": "Artist", "master_metadata_album_album_name": "Album",
                "spotify_track_uri": uri, "episode_name": null, "episode_show_name": null,
                "spotify_episode_uri": null, "reason_start": "trackdone", "reason_end": "trackdone",
                "shuffle": false, "skipped": false, "offline": false, "offline_timestamp": null,
                "incognito_mode": false})
        })
        .collect();
    std::fs::write(
        folder.join("Streaming_History_Audio_2024-2025_0.json"),
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn a_reimport_writes_nothing_and_a_newer_export_writes_what_changed() {
    let spec = spotify();
    let a = (
        "spotify:track:5nuJ5frI7lmdPYjgyoBrqm",
        "2024-11-18T09:14:52Z",
        341_853,
    );
    let b = (
        "spotify:track:4NoM07yO0Luyv3OpeTwlyW",
        "2024-12-15T17:26:40Z",
        12_480,
    );
    let c = (
        "spotify:track:6I3mqTwhRpn34SLVafSH7G",
        "2025-01-30T14:02:07Z",
        153_190,
    );
    let d = (
        "spotify:track:0wIblt271U2oH60h7w8ECA",
        "2025-02-11T13:08:50Z",
        518_293,
    );
    let first = export_with(&[a, b, c]);
    // A newer export: `b` gone (the person deleted it from their history), `c` with another
    // duration, `d` new.
    let newer = export_with(&[a, (c.0, c.1, 150_000), d]);
    for test in test_stores("archive_reimport").await {
        let export = open_export(&[first.path()]).unwrap();
        let (result, recorder) = import(&spec, &export, &test.store).await;
        result.unwrap();
        assert_eq!(recorder.totals().written.new, 3, "{}", test.backend);

        let (result, again) = import(&spec, &export, &test.store).await;
        result.unwrap();
        let written = again.totals().written;
        assert_eq!(
            (
                written.new,
                written.updated,
                written.deleted,
                written.unchanged
            ),
            (0, 0, 0, 3),
            "{}: a re-import writes nothing",
            test.backend
        );

        let (result, recorder) =
            import(&spec, &open_export(&[newer.path()]).unwrap(), &test.store).await;
        result.unwrap();
        let written = recorder.totals().written;
        assert_eq!(
            (
                written.new,
                written.updated,
                written.deleted,
                written.unchanged
            ),
            (1, 1, 1, 1),
            "{}: only what changed",
            test.backend
        );
        let rows = test.store.dump("spotify").await.unwrap();
        let deleted: Vec<&str> = rows
            .iter()
            .filter(|row| row.3)
            .map(|row| row.1.as_str())
            .collect();
        assert_eq!(deleted, [format!("{}@{}", b.0, b.1)], "{}", test.backend);
        assert_eq!(
            rows.len(),
            4,
            "{}: the deleted play is kept, marked",
            test.backend
        );

        // An export of the same account without the stream's files (the person asked for their
        // account data only) says nothing about the plays: none is marked deleted.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("Userdata.json"), b"{}").unwrap();
        let (result, recorder) =
            import(&spec, &open_export(&[other.path()]).unwrap(), &test.store).await;
        result.unwrap();
        assert_eq!(recorder.totals().written.deleted, 0, "{}", test.backend);
        let rows = test.store.dump("spotify").await.unwrap();
        assert_eq!(
            rows.iter().filter(|row| row.3).count(),
            1,
            "{}",
            test.backend
        );
    }
}

/// A connector with an API stream and an export stream of the same plays, keyed alike.
const SHARED_KEY_SPEC: &str = r#"id: plays
name: Plays
version: 1.0.0
category: music
description: Plays from an API and from an export.
docs_url: https://api.example.com/docs
base_url: https://api.example.com
allowed_hosts: [api.example.com]
streams:
  recent:
    model: listening_event
    request: { path: /recent }
    records: $.items[*]
    unseen_deleted: false
    id: "{{ record.track.uri }}@{{ record.played_at[:19] }}Z"
    map:
      track_title: $.track.name
      played_at: $.played_at
      track_uri: $.track.uri
  history:
    model: listening_event
    archive: { entries: ["history_*.json"], split: array }
    records: $[*]
    id: "{{ record.uri }}@{{ record.ts }}"
    map:
      track_title: $.name
      played_at: $.ts
      track_uri: $.uri
      played_ms: $.ms
"#;

#[tokio::test]
async fn a_play_from_the_api_and_from_the_export_is_one_record() {
    let spec = spec_from(SHARED_KEY_SPEC);
    let app = axum::Router::new().route(
        "/recent",
        get(|| async {
            axum::Json(json!({"items": [
                {"played_at": "2026-11-25T21:14:02.118Z", "track": {"uri": "spotify:track:6rqhFgbbKwnb9MLmUQDhG6", "name": "Speak to Me"}},
                {"played_at": "2026-11-25T21:20:41.730Z", "track": {"uri": "spotify:track:3n3Ppam7vgaVa1iaRUc9Lp", "name": "Mr. Brightside"}}
            ]}))
        }),
    );
    let server = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("history_0.json"),
        serde_json::to_string(&json!([
            {"ts": "2026-11-25T21:14:02Z", "uri": "spotify:track:6rqhFgbbKwnb9MLmUQDhG6", "name": "Speak to Me", "ms": 68_000},
            {"ts": "2019-12-11T13:08:50Z", "uri": "spotify:track:0wIblt271U2oH60h7w8ECA", "name": "Lillo", "ms": 518_293}
        ]))
        .unwrap(),
    )
    .unwrap();
    for test in test_stores("archive_shared_key").await {
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        let (result, recorder) =
            import(&spec, &open_export(&[dir.path()]).unwrap(), &test.store).await;
        result.unwrap();
        let written = recorder.totals().written;
        assert_eq!((written.new, written.updated), (1, 1), "{}", test.backend);
        let rows = test.store.dump("plays").await.unwrap();
        let ids: Vec<&str> = rows.iter().map(|row| row.1.as_str()).collect();
        assert_eq!(ids.len(), 3, "{}: {ids:?}", test.backend);
        let shared = rows
            .iter()
            .find(|row| row.1 == "spotify:track:6rqhFgbbKwnb9MLmUQDhG6@2026-11-25T21:14:02Z")
            .expect("the shared play");
        // The export's fact (how long it played) joined the API's record.
        assert_eq!(shared.2["played_ms"], json!(68_000), "{}", test.backend);
    }
}

/// A spec reading every JSON entry of an export, for the hostile archives.
const ANY_SPEC: &str = r#"id: hostile
name: Hostile
version: 1.0.0
category: productivity
description: Reads whatever an export holds.
docs_url: https://example.com/export
streams:
  notes:
    model: note
    archive: { entries: ["**/*.json"], split: array }
    records: $[*]
    id: $.id
    map:
      title: $.title
  rows:
    model: note
    archive: { entries: ["**/*.csv"], split: rows }
    decode: csv
    records: $[*]
    id: $.id
    map:
      title: $.title
  elements:
    model: note
    archive: { entries: ["**/*.xml"], split: { element: Note } }
    decode: xml
    records: $[*].Note
    id: $['@id']
    map:
      title: $.Title
"#;

/// What importing `paths` into a fresh store gives: the error, if any, and the rows written.
async fn hostile(paths: &[&Path]) -> Vec<(String, Option<String>, usize)> {
    let spec = spec_from(ANY_SPEC);
    let mut outcomes = Vec::new();
    for test in test_stores("archive_hostile").await {
        let error = match open_export(paths) {
            Err(error) => Some(error.to_string()),
            Ok(export) => import(&spec, &export, &test.store)
                .await
                .0
                .and_then(engine::run::RunReport::require_all)
                .err()
                .map(|error| error.to_string()),
        };
        let rows = test.store.dump("hostile").await.unwrap().len();
        outcomes.push((test.backend.to_owned(), error, rows));
    }
    outcomes
}

/// Asserts that every backend refused the export with a message holding `says`, writing nothing.
fn refused(outcomes: &[(String, Option<String>, usize)], says: &str) {
    for (backend, error, rows) in outcomes {
        let error = error
            .as_deref()
            .unwrap_or_else(|| panic!("{backend}: imported, expected `{says}`"));
        assert!(error.contains(says), "{backend}: {error}");
        assert_eq!(*rows, 0, "{backend}: {error}: nothing written");
    }
}

#[tokio::test]
async fn entries_that_leave_the_export_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let note = br#"[{"id": "1", "title": "fine"}]"#.to_vec();
    for (name, says) in [
        ("../escaped.json", "leads out of the export"),
        ("notes/../../escaped.json", "leads out of the export"),
        ("/etc/escaped.json", "absolute path"),
    ] {
        let zip = dir.path().join("hostile.zip");
        zip_of(
            &[
                ("notes/ok.json".to_owned(), note.clone()),
                (name.to_owned(), note.clone()),
            ],
            &zip,
        );
        refused(&hostile(&[&zip]).await, says);
        let tar_gz = dir.path().join("hostile.tar.gz");
        // tar's own builder refuses `..`; the header is written by hand, as an attacker would.
        let gzip = flate2::write::GzEncoder::new(
            std::fs::File::create(&tar_gz).unwrap(),
            flate2::Compression::default(),
        );
        let mut tar = tar::Builder::new(gzip);
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(note.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, note.as_slice()).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        refused(&hostile(&[&tar_gz]).await, says);
    }
    assert!(!dir.path().join("escaped.json").exists());
    assert!(!Path::new("/etc/escaped.json").exists());
}

#[tokio::test]
async fn links_in_a_tar_and_in_a_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("links.tar.gz");
    let gzip = flate2::write::GzEncoder::new(
        std::fs::File::create(&tar_path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gzip);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    tar.append_link(&mut header, "notes/passwd.json", "/etc/passwd")
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    refused(&hostile(&[&tar_path]).await, "is a link");

    let folder = dir.path().join("unpacked");
    std::fs::create_dir_all(&folder).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", folder.join("passwd.json")).unwrap();
    refused(&hostile(&[&folder]).await, "is a link");
}

#[tokio::test]
async fn a_zip_bomb_stops_at_its_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("bomb.zip");
    // 24 MB of one byte deflates about 1000 to 1: far past what real exports pack (2-30×).
    let mut bomb = b"[{\"id\": \"1\", \"title\": \"".to_vec();
    bomb.resize(24 << 20, b'a');
    zip_of(&[("notes/bomb.json".to_owned(), bomb)], &zip);
    assert!(std::fs::metadata(&zip).unwrap().len() < 1 << 20);
    refused(&hostile(&[&zip]).await, "its packed size (a zip bomb?)");
}

#[tokio::test]
async fn a_truncated_zip_and_a_truncated_tar_gz_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let files = files_of(&spotify_fixture());
    let zip = dir.path().join("cut.zip");
    zip_of(&files, &zip);
    let bytes = std::fs::read(&zip).unwrap();
    std::fs::write(&zip, &bytes[..bytes.len() / 2]).unwrap();
    refused(&hostile(&[&zip]).await, "damaged or incomplete");

    let tar_gz = dir.path().join("cut.tar.gz");
    let notes: Vec<(String, Vec<u8>)> = (0..40)
        .map(|n| {
            let rows: Vec<Value> = (0..200)
                .map(|row| json!({"id": format!("{n}-{row}"), "title": format!("note {row} of file {n}, with some text to pack")}))
                .collect();
            (format!("notes/{n:02}.json"), serde_json::to_vec(&rows).unwrap())
        })
        .collect();
    tar_gz_of(&notes, &tar_gz);
    let bytes = std::fs::read(&tar_gz).unwrap();
    std::fs::write(&tar_gz, &bytes[..bytes.len() / 2]).unwrap();
    let spec = spec_from(ANY_SPEC);
    for test in test_stores("archive_cut_tar").await {
        let export = open_export(&[&tar_gz]).unwrap();
        let error = import(&spec, &export, &test.store)
            .await
            .0
            .and_then(engine::run::RunReport::require_all)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cut.tar.gz is damaged or incomplete")
                && error.contains("download the export again"),
            "{}: {error}",
            test.backend
        );
        // The files before the cut are imported: nothing read is lost.
        let rows = test.store.dump("hostile").await.unwrap().len();
        assert!(rows >= 200, "{}: {rows}", test.backend);
    }
}

#[tokio::test]
async fn xml_entities_are_not_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("export");
    std::fs::create_dir_all(&folder).unwrap();
    // The "billion laughs": each entity ten of the one before.
    let mut dtd = String::from("<!DOCTYPE Notes [\n<!ENTITY lol0 \"lol\">\n");
    for level in 1..10 {
        let previous = format!("&lol{};", level - 1).repeat(10);
        dtd.push_str(&format!("<!ENTITY lol{level} \"{previous}\">\n"));
    }
    dtd.push_str("]>\n");
    std::fs::write(
        folder.join("notes.xml"),
        format!("<?xml version=\"1.0\"?>\n{dtd}<Notes><Note id=\"1\"><Title>&lol9;</Title></Note></Notes>"),
    )
    .unwrap();
    refused(&hostile(&[&folder]).await, "lol9");
}

#[tokio::test]
async fn a_two_gigabyte_line_in_a_csv_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("export");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("rows.csv");
    std::fs::write(&path, "id,title\n1,").unwrap();
    // A sparse file: 2 GiB of one row, without the disk space.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    refused(&hostile(&[&folder]).await, "a row is longer than");
}

/// Two streams that read different elements of one XML file (Apple Health's records and
/// workouts), and a third that reads another file.
const SHARED_READ_SPEC: &str = r#"id: health
name: Health
version: 1.0.0
category: health
description: Samples and workouts from one export file.
docs_url: https://example.com/docs
streams:
  samples:
    model: health_record
    archive: { entries: ["export/export.xml"], split: { element: Record }, complete: true }
    decode: xml
    records: $[*].Record
    id: $['@n']
    map:
      record_type: $['@type']
      value: $['@value']
      unit: count
      recorded_at: $['@at']
  workouts:
    model: activity
    archive: { entries: ["export/export.xml"], split: { element: Workout }, complete: true }
    decode: xml
    records: $[*].Workout
    id: $['@n']
    map:
      activity_type: $['@type']
      started_at: $['@at']
  other:
    model: activity
    archive: { entries: ["export/other.xml"], split: { element: Workout } }
    decode: xml
    records: $[*].Workout
    id: $['@n']
    map:
      activity_type: $['@type']
      started_at: $['@at']
"#;

/// Streams that read the same file are imported in one read of it: their pages come in turn
/// (a read each would give all of one stream's pages, then the other's), each stream gets its
/// own records, and a re-import writes nothing.
#[tokio::test]
async fn streams_that_read_one_file_share_one_read() {
    let spec = std::sync::Arc::new(spec_from(SHARED_READ_SPEC));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("export")).unwrap();
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<HealthData>\n");
    for n in 0..2500 {
        xml.push_str(&format!(
            "<Record n=\"r{n}\" type=\"steps\" value=\"{n}\" at=\"2024-03-17T07:45:12Z\"/>\n"
        ));
        if n % 10 == 0 {
            xml.push_str(&format!(
                "<Workout n=\"w{n}\" type=\"Run\" at=\"2024-03-17T08:00:00Z\"><Record n=\"inner\"/></Workout>\n"
            ));
        }
    }
    xml.push_str("</HealthData>\n");
    std::fs::write(dir.path().join("export/export.xml"), &xml).unwrap();
    std::fs::write(
        dir.path().join("export/other.xml"),
        "<x><Workout n=\"o1\" type=\"Swim\" at=\"2024-03-18T08:00:00Z\"/></x>",
    )
    .unwrap();
    for test in test_stores("archive_shared_read").await {
        let export = open_export(&[dir.path()]).unwrap();
        let (result, recorder) = import(&spec, &export, &test.store).await;
        result.unwrap();
        assert_eq!(
            recorder.totals().written.new,
            2500 + 250 + 1,
            "{}",
            test.backend
        );
        let pages: Vec<String> = recorder
            .events()
            .into_iter()
            .filter(|event| event.starts_with("Page"))
            .collect();
        assert!(
            pages[0].contains("\"samples\"") && pages[1].contains("\"workouts\""),
            "{}: {pages:?}",
            test.backend
        );
        let rows = test.store.dump("health").await.unwrap();
        assert_eq!(rows.len(), 2751, "{}", test.backend);
        let (result, again) = import(&spec, &export, &test.store).await;
        result.unwrap();
        let written = again.totals().written;
        assert_eq!(
            (written.new, written.updated, written.deleted),
            (0, 0, 0),
            "{}",
            test.backend
        );
    }
}

/// Apple's iCloud Photos export, as the connector's fixture lays it out.
fn icloud_photos_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../connectors/apple_photos/fixtures/exports/2024_icloud_photos")
}

/// `(id, hash, file name)` of every record's file the store refers to, in id order.
async fn referred(store: &engine::store::AnyStore) -> Vec<(String, String, String)> {
    const QUERY: &str = "SELECT source_object_id, hash, COALESCE(file_name, '') FROM record_blobs WHERE part = '' ORDER BY source_object_id";
    match store {
        engine::store::AnyStore::Sqlite(store) => {
            sqlx::query_as(QUERY).fetch_all(store.pool()).await
        }
        engine::store::AnyStore::Postgres(store) => {
            sqlx::query_as(QUERY).fetch_all(store.pool()).await
        }
    }
    .expect(QUERY)
}

/// The files the blob store holds, by hash, and what its staging folder still holds.
fn blob_files(root: &Path) -> (std::collections::BTreeSet<String>, usize) {
    let mut hashes = std::collections::BTreeSet::new();
    let mut staged = 0;
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let hash = engine::blobs::BlobHash::of(&std::fs::read(&path).unwrap()).to_hex();
            if path.to_string_lossy().contains(&hash) {
                hashes.insert(hash);
            } else {
                staged += 1;
            }
        }
    }
    (hashes, staged)
}

#[tokio::test]
async fn an_exports_photos_are_stored_with_their_records_once_and_within_their_cap() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors/apple_photos/connector.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let spec = std::sync::Arc::new(engine::spec::load(&path).expect("the Apple Photos spec"));
    // The photos and videos the stream reads, by hash (the two copies of IMG_4830.JPG in two
    // parts are one file; `IMG_4821-1.MOV` is a copy of `IMG_4821.MOV`).
    let media: Vec<(String, Vec<u8>)> = files_of(&icloud_photos_fixture())
        .into_iter()
        .filter(|(name, _)| {
            name.contains("/Photos/") && !name.ends_with(".csv") && !name.contains("Deleted")
        })
        .collect();
    let hashes: std::collections::BTreeSet<String> = media
        .iter()
        .map(|(_, bytes)| engine::blobs::BlobHash::of(bytes).to_hex())
        .collect();
    assert!(
        hashes.len() >= 3,
        "the fixture has photos and a video: {media:?}"
    );
    let export = open_export(&[&icloud_photos_fixture()]).unwrap();
    for test in test_stores("archive_media").await {
        let root = tempfile::tempdir().unwrap();
        let blobs = engine::blobs::BlobStore::folder(root.path()).unwrap();
        let (result, recorder) =
            hypernet_tests::import_with_blobs(&spec, &export, &test.store, Some(&blobs)).await;
        result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
        let records = test.store.dump("apple_photos").await.unwrap();
        let stored = referred(&test.store).await;
        // Every record refers to its own file's bytes, under the file's name (two parts may
        // each have an `IMG_4830.JPG`, different photos).
        assert_eq!(stored.len(), records.len(), "{}: {stored:?}", test.backend);
        for (id, hash, name) in &stored {
            let (_, _, data, _) = records.iter().find(|record| &record.1 == id).unwrap();
            let path = data["file_path"].as_str().unwrap();
            let file = media
                .iter()
                .find(|(name, _)| name == path)
                .unwrap_or_else(|| panic!("{}: no file {path}", test.backend));
            assert!(path.ends_with(&format!("/{name}")), "{path}: {name}");
            let want = engine::blobs::BlobHash::of(&file.1).to_hex();
            assert_eq!(hash, &want, "{path}");
            assert_eq!(data["file_size_bytes"], json!(file.1.len()), "{path}");
        }
        let (kept, staged) = blob_files(root.path());
        assert_eq!(kept, hashes, "{}: each file's bytes once", test.backend);
        assert_eq!(staged, 0, "{}: nothing left staged", test.backend);
        assert!(recorder.totals().written.new > 0);

        // The same export again: nothing written, nothing more stored.
        let (result, recorder) =
            hypernet_tests::import_with_blobs(&spec, &export, &test.store, Some(&blobs)).await;
        result.unwrap();
        let written = recorder.totals().written;
        assert_eq!((written.new, written.updated), (0, 0), "{}", test.backend);
        assert_eq!(referred(&test.store).await, stored, "{}", test.backend);
        assert_eq!(
            blob_files(root.path()),
            (hashes.clone(), 0),
            "{}",
            test.backend
        );
    }

    // A cap below the videos' size: the photos are stored, the videos' records are imported
    // without their bytes (and nothing of them is left staged).
    let capped = spec_from(&yaml.replace(
        "content: { entry: true }",
        "content: { entry: true, max_bytes: 1KiB }",
    ));
    for test in test_stores("archive_media_capped").await {
        let root = tempfile::tempdir().unwrap();
        let blobs = engine::blobs::BlobStore::folder(root.path()).unwrap();
        let (result, _) =
            hypernet_tests::import_with_blobs(&capped, &export, &test.store, Some(&blobs)).await;
        result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
        let records = test.store.dump("apple_photos").await.unwrap();
        let stored = referred(&test.store).await;
        let small: std::collections::BTreeSet<String> = media
            .iter()
            .filter(|(_, bytes)| bytes.len() <= 1024)
            .map(|(_, bytes)| engine::blobs::BlobHash::of(bytes).to_hex())
            .collect();
        assert!(!small.is_empty() && small.len() < hashes.len());
        assert_eq!(
            blob_files(root.path()),
            (small.clone(), 0),
            "{}",
            test.backend
        );
        let referred_hashes: std::collections::BTreeSet<String> =
            stored.iter().map(|(_, hash, _)| hash.clone()).collect();
        assert_eq!(referred_hashes, small, "{}", test.backend);
        assert!(
            stored.len() < records.len(),
            "{}: the videos have no file",
            test.backend
        );
    }
}

#[test]
fn an_archive_streams_content_is_its_own_file_and_only_that() {
    let problems = |content: &str, decode: &str| -> Vec<String> {
        let yaml = format!(
            "id: photos_export\nname: Photos export\nversion: 1.0.0\ncategory: media\n\
             description: Photos.\ndocs_url: https://example.com/\nstreams:\n  photos:\n    \
             model: media\n    archive:\n      entries: [\"Photos/*.jpg\"]\n      split: whole\n    \
             decode: {decode}\n    records: $[*]\n    id: \"{{{{ record.blake3 }}}}\"\n    \
             map:\n      media_type: photo\n      file_path: \"{{{{ entry.path }}}}\"\n    \
             content: {content}\n"
        );
        let source = engine::spec::SpecSource {
            path: PathBuf::from("photos.yaml"),
            text: yaml,
        };
        match engine::spec::parse(&source) {
            Ok(_) => vec![],
            Err(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
        }
    };
    assert_eq!(problems("{ entry: true }", "media"), Vec::<String>::new());
    let request = problems("{ request: { path: /x } }", "media");
    assert!(
        request.len() == 1
            && request[0]
                .contains("content.request: `request` content is for streams that send requests"),
        "{request:?}"
    );
    let json = problems("{ entry: true }", "json");
    assert!(
        json.len() == 1
            && json[0]
                .contains("content.entry: a record's file is stored when each file is a record"),
        "{json:?}"
    );
    let named = problems("{ entry: true, file_name: $.name }", "media");
    assert!(
        named.len() == 1
            && named[0]
                .contains("content.file_name: `file_name` is for content the engine requests"),
        "{named:?}"
    );
}
