//! Importing data exports, the way a person does: the release `connector import` on a zip in
//! the provider's documented layout, timed with `/usr/bin/time -v` (wall time and peak RSS), next
//! to the established tool for the same export where there is one.
//!
//! - Apple Health: an `export.zip` of N records (default 2 million, about 1 GB of XML) in the
//!   layout the Health app writes (the v14 DTD, records grouped by type, watch and phone
//!   sources, metadata entries), imported by `connector import apple_health` and by
//!   `healthkit-to-sqlite` (`pip install healthkit-to-sqlite`; found on `PATH` or as
//!   `HEALTHKIT_TO_SQLITE`), each into a fresh SQLite file.
//! - Spotify: an extended streaming history of N plays (default 1 million) in files of about
//!   12 MB, as Spotify splits them, with Spotify-shaped random track ids.
//!
//! ```sh
//! cargo build --release -p hypernet-cli
//! cargo bench -p hypernet-tests --bench exports                        # both, default sizes
//! cargo bench -p hypernet-tests --bench exports -- --apple-health 200000
//! cargo bench -p hypernet-tests --bench exports -- --spotify 100000
//! ```
//!
//! The generated zips are kept in `target/bench-exports/` and reused by later runs of the same
//! size.

use std::io::Write;
use std::path::{Path, PathBuf};

use hypernet_tests::{Timed, connector_binary, timed};
use rand::{Rng, SeedableRng};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn data_folder() -> PathBuf {
    let folder = workspace().join("target/bench-exports");
    std::fs::create_dir_all(&folder).expect("target/bench-exports");
    folder
}

/// A zip writer for one export, deflating as the providers' tools do.
fn zip_writer(path: &Path) -> zip::ZipWriter<std::io::BufWriter<std::fs::File>> {
    zip::ZipWriter::new(std::io::BufWriter::new(
        std::fs::File::create(path).expect("create the zip"),
    ))
}

fn deflated() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true)
}

/// The quantity types of the generated export, each with its unit, source and value range;
/// real exports write each type's records together.
const HEALTH_TYPES: [(&str, &str, bool, f64, f64); 6] = [
    (
        "HKQuantityTypeIdentifierHeartRate",
        "count/min",
        true,
        48.0,
        170.0,
    ),
    (
        "HKQuantityTypeIdentifierStepCount",
        "count",
        false,
        5.0,
        1400.0,
    ),
    (
        "HKQuantityTypeIdentifierActiveEnergyBurned",
        "kcal",
        true,
        0.01,
        2.5,
    ),
    (
        "HKQuantityTypeIdentifierBasalEnergyBurned",
        "kcal",
        true,
        0.2,
        1.8,
    ),
    (
        "HKQuantityTypeIdentifierDistanceWalkingRunning",
        "km",
        false,
        0.001,
        0.9,
    ),
    ("HKQuantityTypeIdentifierBodyMass", "kg", false, 60.0, 75.0),
];

const WATCH: &str = "Anna’s Apple Watch";
const WATCH_DEVICE: &str = "&lt;&lt;HKDevice: 0x283f5a0d0&gt;, name:Apple Watch, manufacturer:Apple Inc., model:Watch, hardware:Watch6,1, software:10.1&gt;";
const PHONE: &str = "Anna’s iPhone";
const PHONE_DEVICE: &str = "&lt;&lt;HKDevice: 0x281038280&gt;, name:iPhone, manufacturer:Apple Inc., model:iPhone, hardware:iPhone14,3, software:17.3.1&gt;";

/// Writes an Apple Health export of `records` quantity samples; returns its path.
fn apple_health_export(records: usize) -> PathBuf {
    let path = data_folder().join(format!("apple_health_{records}.zip"));
    if path.exists() {
        return path;
    }
    eprintln!("writing {} ...", path.display());
    let fixture = workspace()
        .join("connectors/apple_health/fixtures/exports/2024_ios18/apple_health_export/export.xml");
    let fixture = std::fs::read_to_string(fixture).expect("the Apple Health fixture");
    let head = &fixture[..fixture.find("<HealthData").expect("HealthData")];
    let mut zip = zip_writer(&path);
    zip.start_file("apple_health_export/export.xml", deflated())
        .expect("export.xml");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, zip);
    write!(
        out,
        "{head}<HealthData locale=\"en_US\">\n <ExportDate value=\"2024-03-20 09:15:30 +0100\"/>\n <Me HKCharacteristicTypeIdentifierDateOfBirth=\"1990-04-12\" HKCharacteristicTypeIdentifierBiologicalSex=\"HKBiologicalSexFemale\" HKCharacteristicTypeIdentifierBloodType=\"HKBloodTypeNotSet\" HKCharacteristicTypeIdentifierFitzpatrickSkinType=\"HKFitzpatrickSkinTypeNotSet\" HKCharacteristicTypeIdentifierCardioFitnessMedicationsUse=\"None\"/>\n"
    )
    .expect("write");
    let mut random = rand::rngs::StdRng::seed_from_u64(2024);
    let start = jiff::Timestamp::from_second(1_451_606_400).expect("2016"); // 2016-01-01
    let offset = jiff::tz::TimeZone::fixed(jiff::tz::offset(1));
    let date = |at: jiff::Timestamp| {
        at.to_zoned(offset.clone())
            .strftime("%Y-%m-%d %H:%M:%S %z")
            .to_string()
    };
    // Weight is measured about once a day; the other types share the rest.
    let weights = (records / 1000).max(1).min(records);
    let per_type = (records - weights).div_ceil(HEALTH_TYPES.len() - 1);
    let mut written = 0;
    for (kind, unit, watch, low, high) in HEALTH_TYPES {
        let count = if kind.ends_with("BodyMass") {
            records - written
        } else {
            per_type.min(records - weights - written)
        };
        // Samples spread over eight years, a few minutes apart.
        let step = (8 * 365 * 86_400 / count.max(1)) as i64;
        for n in 0..count {
            let begin = start
                + jiff::SignedDuration::from_secs(n as i64 * step + random.random_range(0..60));
            let end = begin + jiff::SignedDuration::from_secs(random.random_range(0..600));
            let created = end + jiff::SignedDuration::from_secs(random.random_range(1..300));
            let (source, device) = if watch {
                (WATCH, WATCH_DEVICE)
            } else {
                (PHONE, PHONE_DEVICE)
            };
            let value = random.random_range(low..high);
            let value = if unit == "count" || unit == "count/min" {
                format!("{}", value.round())
            } else {
                format!("{value:.4}")
            };
            let attributes = format!(
                "type=\"{kind}\" sourceName=\"{source}\" sourceVersion=\"10.1\" device=\"{device}\" unit=\"{unit}\" creationDate=\"{}\" startDate=\"{}\" endDate=\"{}\" value=\"{value}\"",
                date(created),
                date(begin),
                date(end)
            );
            if kind.ends_with("HeartRate") && n % 3 == 0 {
                write!(
                    out,
                    " <Record {attributes}>\n  <MetadataEntry key=\"HKMetadataKeyHeartRateMotionContext\" value=\"{}\"/>\n </Record>\n",
                    n % 2
                )
            } else {
                writeln!(out, " <Record {attributes}/>")
            }
            .expect("write");
        }
        written += count;
    }
    out.write_all(b"</HealthData>\n").expect("write");
    let mut zip = out
        .into_inner()
        .map_err(|error| error.to_string())
        .expect("flush");
    zip.start_file("apple_health_export/export_cda.xml", deflated())
        .expect("export_cda.xml");
    zip.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>\n")
        .expect("write");
    zip.finish().expect("finish the zip");
    path
}

/// Writes a Spotify extended streaming history of `plays` plays; returns its path.
fn spotify_export(plays: usize) -> PathBuf {
    let path = data_folder().join(format!("spotify_{plays}.zip"));
    if path.exists() {
        return path;
    }
    eprintln!("writing {} ...", path.display());
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut random = rand::rngs::StdRng::seed_from_u64(23);
    // People play the same tracks again: a library of 20,000.
    let tracks: Vec<String> = (0..20_000)
        .map(|_| {
            (0..22)
                .map(|_| BASE62[random.random_range(0..62)] as char)
                .collect()
        })
        .collect();
    let mut zip = zip_writer(&path);
    // Spotify cuts its files at about 12 MB: some 16,000 pretty-printed plays.
    const PER_FILE: usize = 16_000;
    let start = 1_420_070_400_i64; // 2015-01-01
    let step = (10 * 365 * 86_400 / plays.max(1)) as i64;
    for (file, first) in (0..plays).step_by(PER_FILE).enumerate() {
        let last = (first + PER_FILE).min(plays);
        let year = |n: usize| {
            jiff::Timestamp::from_second(start + n as i64 * step)
                .expect("a time")
                .to_zoned(jiff::tz::TimeZone::UTC)
                .year()
        };
        let (from, to) = (year(first), year(last - 1));
        let years = if from == to {
            format!("{from}")
        } else {
            format!("{from}-{to}")
        };
        zip.start_file(
            format!(
                "Spotify Extended Streaming History/Streaming_History_Audio_{years}_{file}.json"
            ),
            deflated(),
        )
        .expect("a history file");
        let rows: Vec<serde_json::Value> = (first..last)
            .map(|n| {
                let ts = jiff::Timestamp::from_second(start + n as i64 * step + random.random_range(0..60))
                    .expect("a time")
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let track = &tracks[random.random_range(0..tracks.len())];
                serde_json::json!({
                    "ts": ts, "platform": "android", "ms_played": random.random_range(1_000..400_000),
                    "conn_country": "DE", "ip_addr": "203.0.113.54",
                    "master_metadata_track_name": format!("Track {}", &track[..6]),
                    "master_metadata_album_artist_name": format!("Artist {}", &track[6..9]),
                    "master_metadata_album_album_name": format!("Album {}", &track[9..13]),
                    "spotify_track_uri": format!("spotify:track:{track}"),
                    "episode_name": null, "episode_show_name": null, "spotify_episode_uri": null,
                    "audiobook_title": null, "audiobook_uri": null, "audiobook_chapter_uri": null,
                    "audiobook_chapter_title": null, "reason_start": "trackdone", "reason_end": "trackdone",
                    "shuffle": false, "skipped": false, "offline": false, "offline_timestamp": null,
                    "incognito_mode": false
                })
            })
            .collect();
        // Spotify's files are indented by four spaces.
        let mut text = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut serializer = serde_json::Serializer::with_formatter(&mut text, formatter);
        serde::Serialize::serialize(&rows, &mut serializer).expect("JSON");
        zip.write_all(&text).expect("write");
    }
    zip.finish().expect("finish the zip");
    path
}

/// Imports `export` with `connector import CONNECTOR` into a fresh SQLite file.
fn import_with_connector(connector: &str, export: &Path, records: usize) -> Timed {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.sqlite");
    let timed = timed(
        connector_binary(),
        &[
            "import",
            connector,
            export.to_str().expect("a UTF-8 path"),
            "--db",
            db.to_str().expect("a UTF-8 path"),
            "--key-file",
            dir.path().join("key").to_str().expect("a UTF-8 path"),
            "--connectors-root",
            workspace()
                .join("connectors")
                .to_str()
                .expect("a UTF-8 path"),
            "--json",
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(&timed.output).expect("a JSON summary");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    let imported = summary["new"].as_u64().unwrap_or(0) as usize;
    assert!(
        imported + 1000 >= records && imported <= records,
        "{connector}: {imported} of {records} imported: {summary}"
    );
    timed
}

fn healthkit_to_sqlite() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("HEALTHKIT_TO_SQLITE") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|folder| folder.join("healthkit-to-sqlite"))
            .find(|candidate| candidate.exists())
    })
}

fn row(what: &str, records: usize, timed: &Timed) {
    println!(
        "| {what} | {records} | {:.1} | {:.0} | {:.1} |",
        timed.seconds,
        records as f64 / timed.seconds.max(0.001),
        timed.peak_rss_mib
    );
}

fn bench_apple_health(records: usize) {
    let export = apple_health_export(records);
    let size = std::fs::metadata(&export)
        .map(|meta| meta.len())
        .unwrap_or(0);
    println!(
        "\nApple Health export, {records} records ({:.0} MB zipped)\n\n| tool | records | seconds | records/s | peak RSS MiB |\n|---|---|---|---|---|",
        size as f64 / 1e6
    );
    let ours = import_with_connector("apple_health", &export, records);
    row("connector import apple_health", records, &ours);
    match healthkit_to_sqlite() {
        Some(peer) => {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = dir.path().join("healthkit.db");
            let theirs = timed(
                &peer,
                &[
                    export.to_str().expect("a UTF-8 path"),
                    db.to_str().expect("a UTF-8 path"),
                    "--silent",
                ],
            );
            row("healthkit-to-sqlite", records, &theirs);
            println!(
                "\nconnector import: {:.1}× the records/s of healthkit-to-sqlite",
                theirs.seconds / ours.seconds.max(0.001)
            );
        }
        None => println!(
            "| healthkit-to-sqlite | not installed (pip install healthkit-to-sqlite) | | | |"
        ),
    }
}

fn bench_spotify(plays: usize) {
    let export = spotify_export(plays);
    let size = std::fs::metadata(&export)
        .map(|meta| meta.len())
        .unwrap_or(0);
    println!(
        "\nSpotify extended streaming history, {plays} plays ({:.0} MB zipped)\n\n| tool | records | seconds | records/s | peak RSS MiB |\n|---|---|---|---|---|",
        size as f64 / 1e6
    );
    let ours = import_with_connector("spotify", &export, plays);
    row("connector import spotify", plays, &ours);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_after = |flag: &str| {
        args.iter()
            .position(|arg| arg == flag)
            .and_then(|at| args.get(at + 1))
            .and_then(|value| value.parse::<usize>().ok())
    };
    let apple = size_after("--apple-health");
    let spotify = size_after("--spotify");
    match (apple, spotify) {
        (None, None) => {
            bench_apple_health(2_000_000);
            bench_spotify(1_000_000);
        }
        _ => {
            if let Some(records) = apple {
                bench_apple_health(records);
            }
            if let Some(plays) = spotify {
                bench_spotify(plays);
            }
        }
    }
}
