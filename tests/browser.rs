//! The web page end to end in headless Chromium (through ChromeDriver): sign in with the link
//! `connector serve --sandbox` prints, connect Google Photos (the OAuth round trip through the
//! stand-in provider), watch the import finish and the records appear, sync again, and
//! disconnect deleting the data; and upload a data export with the file picker.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! `.ci/run` installs them). Without them the test says so and passes, unless
//! `HYPERNET_REQUIRE_BROWSER=1` (as in CI) makes it fail.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hypernet_tests::{repo_root, test_stores};
use server::{Config, Identity};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(program: &str, variable: &str) -> Option<String> {
    std::env::var(variable).ok().or_else(|| {
        Command::new("which")
            .arg(program)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|path| path.trim().to_owned())
    })
}

async fn browser() -> Option<(Driver, Client)> {
    let required = std::env::var("HYPERNET_REQUIRE_BROWSER").is_ok_and(|value| value == "1");
    let (Some(driver), Some(chromium)) = (
        find("chromedriver", "HYPERNET_CHROMEDRIVER"),
        find("chromium", "HYPERNET_CHROMIUM"),
    ) else {
        assert!(
            !required,
            "HYPERNET_REQUIRE_BROWSER=1 but chromedriver or chromium is missing"
        );
        eprintln!("note: chromium or chromedriver not found; browser test skipped (see README)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let process = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let process = Driver(process);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1600"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Some((process, client)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver did not answer at {url}");
}

/// Waits until the element `css` exists and its text satisfies `check`; returns the text.
async fn wait_text(client: &Client, css: &str, check: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..300 {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if check(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = client.source().await.unwrap_or_default();
    panic!("`{css}` never got there (last text: {last:?})\n{page}");
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no `{css}` to click: {error}"))
        .click()
        .await
        .unwrap_or_else(|error| panic!("cannot click `{css}`: {error}"));
}

async fn gone(client: &Client, css: &str) {
    for _ in 0..300 {
        if client.find(Locator::Css(css)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("`{css}` is still on the page");
}

/// A sandbox service on a fresh store (configured by `configure`), and the browser signed in
/// to it with the link `connector serve --sandbox` prints. The key folder lives as long as the
/// service.
async fn signed_in(
    client: &Client,
    name: &str,
    configure: impl FnOnce(&mut Config),
) -> (server::Running, tempfile::TempDir) {
    let stores = test_stores(name).await;
    engine::http::install_tls_provider();
    let key_dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(stores[0].location.clone(), repo_root().join("connectors"));
    config.sandbox = true;
    config.identity = Identity::ApiKeys;
    config.key_file = key_dir.path().join("hypernet.key");
    // Beside the key, which lives as long as the service (the store's folder does not).
    config.blobs = Some(engine::blobs::BlobLocation::Folder(
        key_dir.path().join("blobs"),
    ));
    config.poll = Duration::from_millis(100);
    configure(&mut config);
    let running = server::start(config).await.expect("the service starts");
    let key = server::new_key();
    running
        .state
        .tables
        .add_api_key(&server::key_hash(&key), "local")
        .await
        .unwrap();
    let base = format!("http://{}", running.address);
    client.goto(&format!("{base}/#key={key}")).await.unwrap();
    wait_text(client, "#who", |text| text.contains("local")).await;
    let url = client.current_url().await.unwrap();
    assert!(
        url.fragment().is_none(),
        "the key stays out of the address bar: {url}"
    );
    (running, key_dir)
}

/// Waits until the photo grid has `want` photos (it is drawn after each refresh).
async fn wait_figures(client: &Client, want: usize) {
    let mut figures = 0;
    for _ in 0..100 {
        figures = client
            .find_all(Locator::Css("#photos figure.photo"))
            .await
            .unwrap()
            .len();
        if figures == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        figures,
        want,
        "{}",
        client.source().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_connects_syncs_and_disconnects_google_photos_in_the_browser() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let (_running, _keys) = signed_in(&client, "browser", |_| {}).await;

    // Connect: the catalog's button starts the OAuth round trip.
    let connect = "[data-connector=google_photos].connector a.connect";
    wait_text(&client, connect, |text| text == "Connect").await;
    click(&client, connect).await;
    wait_text(&client, "#banner", |text| text.contains("Connected")).await;
    let card = "[data-integration='google_photos:local']";
    wait_text(
        &client,
        &format!("{card}[data-status=ok] .progress"),
        |text| text.contains("Last run succeeded: 5 new"),
    )
    .await;
    wait_text(&client, "#record-count", |text| text == "5").await;
    let rows = client
        .find_all(Locator::Css("#records tr.record"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows[0].text().await.unwrap().contains("google_photos"));
    // The photos themselves, drawn from their stored bytes: four have content (a video still
    // processing has none), and the JPEG is decoded by the browser at its EXIF-declared size.
    wait_figures(&client, 4).await;
    let mut decoded = serde_json::Value::Null;
    for _ in 0..100 {
        decoded = client
            .execute(
                "return [...document.querySelectorAll('#photos img')].map(i => [i.alt, i.complete, i.naturalWidth, i.currentSrc]);",
                vec![],
            )
            .await
            .unwrap();
        if decoded.as_array().is_some_and(|images| {
            images
                .iter()
                .all(|image| image[1] == serde_json::json!(true))
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let png = decoded
        .as_array()
        .unwrap()
        .iter()
        .find(|image| image[0] == "Screenshot_20231224-200117.png")
        .unwrap_or_else(|| panic!("no screenshot among {decoded}"));
    // The PNG fixture is 4 pixels wide: the browser drew the thumbnail the service made of it
    // (a JPEG as wide, since a thumbnail is never larger than its photo).
    assert_eq!(png[2], serde_json::json!(4), "{decoded}");
    assert!(
        png[3]
            .as_str()
            .is_some_and(|src| src.contains("/media/") && src.ends_with("?thumbnail=true")),
        "{decoded}"
    );

    // Choose photos in Google Photos' picker: its own button starts a sync of the stream
    // that waits for the person (the sandbox's session is done at once), and the two picked
    // items join the grid.
    click(
        &client,
        &format!("{card} button.session-start[data-stream=picked_media]"),
    )
    .await;
    wait_text(&client, "#banner", |text| {
        text.contains("a link to choose will appear")
    })
    .await;
    wait_text(
        &client,
        &format!("{card}[data-status=ok] .progress"),
        |text| text.contains("Last run succeeded: 2 new"),
    )
    .await;
    wait_figures(&client, 6).await;

    // Sync now: a second run, which finds nothing new.
    click(&client, &format!("{card} button.sync-now")).await;
    wait_text(&client, "#banner", |text| text.contains("Sync started")).await;
    wait_text(
        &client,
        &format!("{card}[data-status=ok] .progress"),
        |text| text.contains("Last run succeeded: 0 new"),
    )
    .await;

    // Disconnect, choosing to delete the imported records.
    click(&client, &format!("{card} button.disconnect")).await;
    click(&client, "#delete-data").await;
    click(&client, "#disconnect-confirm").await;
    // The library's five and the two picked.
    wait_text(&client, "#banner", |text| {
        text.contains("7 records deleted")
    })
    .await;
    gone(&client, card).await;
    wait_text(&client, "#record-count", |text| text == "0").await;
    wait_text(&client, connect, |text| text == "Connect").await;
    client.close().await.unwrap();
}

/// A connector that only imports data exports: connected from its card, then an export chosen
/// with the file picker, uploaded with its progress shown, imported, and its records listed.
#[tokio::test(flavor = "multi_thread")]
async fn a_person_uploads_a_data_export_in_the_browser() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let uploads = tempfile::tempdir().unwrap();
    let folder = uploads.path().to_path_buf();
    let (_running, _keys) = signed_in(&client, "browser_upload", |config| {
        config.uploads = folder.join("uploads");
    })
    .await;
    let zip = uploads.path().join("netflix-report.zip");
    hypernet_tests::zip_of(
        &hypernet_tests::files_of(
            &repo_root().join("connectors/netflix/fixtures/exports/2024_report"),
        ),
        &zip,
    );

    let connect = "[data-connector=netflix].connector button.connect";
    wait_text(&client, connect, |text| text == "Connect").await;
    click(&client, connect).await;
    let card = "[data-integration='netflix:local']";
    wait_text(&client, &format!("{card} .status"), |text| {
        text == "Waiting for a data export"
    })
    .await;
    // Nothing to sync: no "Sync now".
    assert!(
        client
            .find(Locator::Css(&format!("{card} button.sync-now")))
            .await
            .is_err()
    );

    client
        .find(Locator::Css(&format!("{card} input.export-file")))
        .await
        .unwrap()
        .send_keys(&zip.display().to_string())
        .await
        .unwrap();
    wait_text(&client, "#banner", |text| {
        text.contains("netflix-report.zip received")
    })
    .await;
    wait_text(&client, &format!("{card} .import-status"), |text| {
        text.starts_with("Imported netflix-report.zip")
    })
    .await;
    wait_text(
        &client,
        &format!("{card}[data-status=ok] .progress"),
        |text| text.starts_with("Last run succeeded:") && !text.contains(" 0 new"),
    )
    .await;
    let count = wait_text(&client, "#record-count", |text| text != "0").await;
    let rows = client
        .find_all(Locator::Css("#records tr.record"))
        .await
        .unwrap();
    assert_eq!(rows.len(), count.parse::<usize>().unwrap().min(10));
    assert!(rows[0].text().await.unwrap().contains("netflix"));
    assert!(
        std::fs::read_dir(uploads.path().join("uploads"))
            .unwrap()
            .next()
            .is_none(),
        "the upload is deleted once imported"
    );
    client.close().await.unwrap();
}

/// Mail shows as sender, subject and date, its body a click away with its attachment as the
/// stored file; a drive's files as a list with their bytes to download.
#[tokio::test(flavor = "multi_thread")]
async fn a_person_reads_their_mail_and_downloads_their_files_in_the_browser() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let (_running, _keys) = signed_in(&client, "browser_mail", |_| {}).await;
    for connector in ["gmail", "google_drive"] {
        let connect = format!("[data-connector={connector}].connector a.connect");
        wait_text(&client, &connect, |text| text == "Connect").await;
        click(&client, &connect).await;
        wait_text(
            &client,
            &format!("[data-integration='{connector}:local'][data-status=ok] .progress"),
            |text| text.contains("Last run succeeded"),
        )
        .await;
    }

    // The messages, newest first; the trip's itinerary opened: its body, and the PDF it carries
    // (listed once its bytes are stored: the list is redrawn as the page refreshes).
    let mut subjects: Vec<String> = Vec::new();
    for _ in 0..300 {
        subjects = serde_json::from_value(
            client
                .execute(
                    "return [...document.querySelectorAll('#mail details.message')].map(d => d.querySelector('.subject').textContent + '|' + d.querySelector('.parts').textContent);",
                    vec![],
                )
                .await
                .unwrap(),
        )
        .unwrap();
        if subjects.iter().any(|subject| {
            subject.starts_with("Your trip: Lisbon & Porto|") && subject.contains("itinerary.pdf")
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        subjects
            .iter()
            .any(|subject| subject.starts_with("Your trip: Lisbon & Porto|")
                && subject.contains("itinerary.pdf")),
        "{subjects:?}"
    );
    client
        .execute(
            "const open = [...document.querySelectorAll('#mail details.message')].find(d => d.querySelector('.subject').textContent === 'Your trip: Lisbon & Porto'); open.querySelector('summary').click(); open.id = 'opened';",
            vec![],
        )
        .await
        .unwrap();
    let body = wait_text(&client, "#opened .body", |text| !text.is_empty()).await;
    assert!(body.contains("Flights land at 10:40."), "{body}");
    let attachment = wait_text(&client, "#opened .parts", |text| {
        text.contains("itinerary.pdf")
    })
    .await;
    assert!(attachment.contains("itinerary.pdf"), "{attachment}");
    // The link serves the stored attachment itself, to its owner.
    let href: String = serde_json::from_value(
        client
            .execute(
                "return [...document.querySelectorAll('#opened .parts a')].find(a => a.textContent.startsWith('itinerary.pdf')).getAttribute('href');",
                vec![],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        href.starts_with("/media/") && href.contains("part=attachments"),
        "{href}"
    );
    let fetched: serde_json::Value = client
        .execute_async(
            "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.arrayBuffer().then(b => done([r.status, r.headers.get('content-type'), b.byteLength]))).catch(e => done(String(e)));",
            vec![serde_json::Value::String(href.clone())],
        )
        .await
        .unwrap();
    assert_eq!(fetched[0], 200, "{fetched}");
    assert_eq!(fetched[1], "application/pdf", "{fetched}");
    assert!(
        fetched[2].as_u64().is_some_and(|size| size > 0),
        "{fetched}"
    );

    // The drive's files, with their bytes: a receipt to download, a Doc exported. The list is
    // redrawn as the page refreshes, so it may first show them before their bytes are stored.
    let mut rows: Vec<String> = Vec::new();
    for _ in 0..300 {
        rows = serde_json::from_value(
            client
                .execute(
                    "return [...document.querySelectorAll('#documents tr.document')].map(r => r.textContent);",
                    vec![],
                )
                .await
                .unwrap(),
        )
        .unwrap();
        let receipt = rows
            .iter()
            .any(|row| row.contains("receipt-march.pdf") && row.contains("download"));
        let doc = rows
            .iter()
            .any(|row| row.contains("Trip budget") && row.contains("export"));
        if receipt && doc {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        rows.iter()
            .any(|row| row.contains("receipt-march.pdf") && row.contains("download")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|row| row.contains("Trip budget") && row.contains("export")),
        "{rows:?}"
    );
    client.close().await.unwrap();
}
