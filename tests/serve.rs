//! The service over real HTTP: `server::start` on a loopback port, in sandbox mode (every
//! connector on the replay of its fixtures, a stand-in OAuth provider), on a fresh SQLite file
//! and a fresh PostgreSQL database.

use std::time::Duration;

use engine::store::AnyStore;
use hypernet_tests::{TestStore, repo_root, test_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::{Config, Identity};

struct Service {
    base: url::Url,
    client: reqwest::Client,
    running: server::Running,
    _key_dir: tempfile::TempDir,
}

impl Service {
    /// The service in sandbox mode on `store`, every connector of the repository.
    async fn start(store: &TestStore, identity: Identity) -> Self {
        Self::start_with(store, &repo_root().join("connectors"), |config| {
            config.sandbox = true;
            config.identity = identity;
        })
        .await
    }

    /// The service on `store` with the connectors under `connectors`, configured by `configure`.
    async fn start_with(
        store: &TestStore,
        connectors: &std::path::Path,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        engine::http::install_tls_provider();
        let key_dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(store.location.clone(), connectors);
        config.key_file = key_dir.path().join("hypernet.key");
        config.poll = Duration::from_millis(50);
        // Beside the key: a PostgreSQL store has no file to put it beside.
        config.blobs = Some(engine::blobs::BlobLocation::Folder(
            key_dir.path().join("blobs"),
        ));
        configure(&mut config);
        let running = server::start(config).await.expect("the service starts");
        let base = url::Url::parse(&format!("http://{}", running.address)).unwrap();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            client,
            running,
            _key_dir: key_dir,
        }
    }

    async fn key_for(&self, user: &str) -> String {
        let key = server::new_key();
        self.running
            .state
            .tables
            .add_api_key(&server::key_hash(&key), user)
            .await
            .unwrap();
        key
    }

    fn url(&self, path: &str) -> url::Url {
        self.base.join(path).unwrap()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call("GET", path, key, None).await
    }

    /// The browser's OAuth round trip: authorize → the stand-in provider → callback.
    /// `connector` may carry the authorize query (`dropbox?account=work`).
    async fn connect(&self, connector: &str, key: &str) -> String {
        let (id, query) = connector.split_once('?').unwrap_or((connector, ""));
        let mut authorize = self.url(&format!("/integrations/{id}/authorize"));
        if !query.is_empty() {
            authorize.set_query(Some(query));
        }
        let authorize = self
            .client
            .get(authorize)
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(authorize.status(), StatusCode::SEE_OTHER);
        let provider = location(&authorize);
        let url = url::Url::parse(&provider).unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(
            query.get("redirect_uri").map(String::as_str),
            Some(self.url(&format!("/integrations/{id}/callback")).as_str())
        );
        assert!(query.contains_key("state"));
        let back = self.client.get(provider).send().await.unwrap();
        let callback = location(&back);
        assert!(callback.starts_with(self.base.as_str()), "{callback}");
        let done = self
            .client
            .get(callback)
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            done.status(),
            StatusCode::SEE_OTHER,
            "{:?}",
            done.text().await
        );
        location(&done)
    }

    /// Waits (polling the API) until `check` accepts the integration.
    async fn wait_for(&self, id: &str, key: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (status, body) = self.get(&format!("/integrations/{id}"), key).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if check(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{id} never got there: {last}");
    }

    async fn all_records(&self, key: &str, query: &str) -> Vec<Value> {
        let mut records = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/records?{query}&limit=3&cursor={cursor}"),
                None => format!("/records?{query}&limit=3"),
            };
            let (status, page) = self.get(&path, key).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            records.extend(page["records"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return records,
            }
        }
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_else(|| panic!("no redirect: {}", response.status()))
        .to_owned()
}

fn imported(body: &Value) -> bool {
    body["imported"] == true && body["running"] == false
}

#[tokio::test(flavor = "multi_thread")]
async fn connecting_starts_the_import_and_the_records_are_served() {
    for store in test_stores("serve_flow").await {
        let service = Service::start_with(&store, &repo_root().join("connectors"), |config| {
            config.sandbox = true;
            config.operators = vec!["alice".to_owned()];
        })
        .await;
        let key = service.key_for("alice").await;

        let (status, catalog) = service.get("/connectors", &key).await;
        assert_eq!(status, StatusCode::OK);
        let photos = catalog["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|connector| connector["id"] == "google_photos")
            .expect("google_photos in the catalog")
            .clone();
        assert_eq!(photos["models"], json!(["media"]));
        assert_eq!(photos["auth"], "oauth2");
        assert_eq!(photos["connect"], "oauth");

        let landed = service.connect("google_photos", &key).await;
        assert_eq!(landed, "/#integration=google_photos:alice");
        let integration = service
            .wait_for("google_photos:alice", &key, imported)
            .await;
        assert_eq!(integration["status"], "active", "{}", store.backend);
        assert_eq!(integration["last_run"]["status"], "succeeded");
        assert_eq!(
            integration["last_run"]["totals"]["written"]["new"], 5,
            "{integration}"
        );
        assert!(
            integration["next_sync_at"].as_str().unwrap()
                > integration["last_sync_at"].as_str().unwrap()
        );
        assert!(
            integration["scopes"]
                .as_str()
                .unwrap()
                .contains("photoslibrary")
        );

        let records = service.all_records(&key, "model=media").await;
        assert_eq!(records.len(), 5, "{}", store.backend);
        assert!(
            records
                .iter()
                .all(|record| record["data"]["user_id"] == "alice")
        );
        let later = service
            .all_records(&key, "since=2999-01-01T00:00:00Z")
            .await;
        assert!(later.is_empty());

        // The photos themselves: each record with bytes names its blob, which its owner reads
        // whole or by range, and nobody else at all.
        let with_content: Vec<&Value> = records
            .iter()
            .filter(|record| record["content"].is_object())
            .collect();
        assert_eq!(with_content.len(), 4, "{}: {records:?}", store.backend);
        let jpeg = with_content
            .iter()
            .find(|record| record["content"]["content_type"] == "image/jpeg")
            .expect("the JPEG");
        let url = jpeg["content"]["url"].as_str().unwrap();
        let want = std::fs::read(
            repo_root()
                .join("connectors/google_photos/fixtures/content/PXL_20240601_051231482.jpg"),
        )
        .unwrap();
        let response = service
            .client
            .get(service.url(url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        assert_eq!(
            response.headers()["etag"].to_str().unwrap(),
            format!("\"{}\"", jpeg["content"]["hash"].as_str().unwrap())
        );
        assert_eq!(response.bytes().await.unwrap().to_vec(), want);
        let response = service
            .client
            .get(service.url(url))
            .bearer_auth(&key)
            .header("range", "bytes=2-9")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            response.headers()["content-range"].to_str().unwrap(),
            format!("bytes 2-9/{}", want.len())
        );
        assert_eq!(
            response.bytes().await.unwrap().to_vec(),
            want[2..10].to_vec()
        );
        let response = service
            .client
            .get(service.url(url))
            .bearer_auth(&key)
            .header("range", format!("bytes={}-", want.len()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        let bob = service.key_for("bob").await;
        let (status, body) = service.get(url, &bob).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) = service
            .get(&format!("/blobs/{}", "0".repeat(64)), &key)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The same by record: `GET /media/{id}`, the record's id as the listing gives it.
        let media = format!("/media/{}", jpeg["id"].as_str().unwrap());
        let response = service
            .client
            .get(service.url(&media))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        assert_eq!(response.bytes().await.unwrap().to_vec(), want);
        let (status, body) = service.get(&media, &bob).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _) = service.get("/media/999999999", &key).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = service.get(&format!("{media}?part=.thumbnail"), &key).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "the thumbnail is not a part to ask for"
        );
        // A thumbnail of the PNG: made on the first ask, a JPEG, kept as a blob of its own and
        // served again without being made again; none of a photo's owner only.
        let png = with_content
            .iter()
            .find(|record| record["content"]["content_type"] == "image/png")
            .expect("the PNG");
        let thumbnail = png["content"]["thumbnail_url"].as_str().unwrap().to_owned();
        assert_eq!(
            thumbnail,
            format!("/media/{}?thumbnail=true", png["id"].as_str().unwrap())
        );
        let mut made = Vec::new();
        for _ in 0..2 {
            let response = service
                .client
                .get(service.url(&thumbnail))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "image/jpeg");
            made.push(response.bytes().await.unwrap().to_vec());
        }
        assert_eq!(&made[0][..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
        assert_eq!(made[0], made[1]);
        let kept: (String, String) = match &store.store {
            AnyStore::Sqlite(db) => {
                sqlx::query_as("SELECT hash, version FROM record_blobs WHERE part = '.thumbnail'")
                    .fetch_one(db.pool())
                    .await
            }
            AnyStore::Postgres(db) => {
                sqlx::query_as("SELECT hash, version FROM record_blobs WHERE part = '.thumbnail'")
                    .fetch_one(db.pool())
                    .await
            }
        }
        .unwrap();
        assert_eq!(kept.0, engine::blobs::BlobHash::of(&made[0]).to_hex());
        assert_eq!(
            kept.1,
            png["content"]["hash"].as_str().unwrap(),
            "made of the PNG's blob"
        );
        let (status, _) = service.get(&thumbnail, &bob).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let heic = with_content
            .iter()
            .find(|record| record["content"]["content_type"] == "image/heif")
            .expect("the HEIC");
        assert!(heic["content"]["thumbnail_url"].is_null(), "{heic}");
        let (status, _) = service
            .get(
                &format!("/media/{}?thumbnail=true", heic["id"].as_str().unwrap()),
                &key,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "no thumbnail is made of HEIC"
        );

        // The Picker: a stream that waits for the person runs only when a sync names it (the
        // sandbox's session is done at once), and the catalog says which streams those are.
        let picker = photos["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|stream| stream["name"] == "picked_media")
            .expect("picked_media in the catalog")
            .clone();
        assert_eq!(picker["session"], true, "{picker}");
        assert_eq!(
            service.all_records(&key, "model=media").await.len(),
            5,
            "the scheduled sync did not open a session"
        );
        let (status, body) = service
            .call(
                "POST",
                "/integrations/google_photos:alice/sync",
                &key,
                Some(json!({"streams": ["no_such_stream"]})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = service
            .call(
                "POST",
                "/integrations/google_photos:alice/sync",
                &key,
                Some(json!({"streams": "picked_media", "extra": 1})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("not a sync request"),
            "{body}"
        );
        let (status, body) = service
            .call(
                "POST",
                "/integrations/google_photos:alice/sync",
                &key,
                Some(json!({"streams": ["picked_media"]})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let picked = service
            .wait_for("google_photos:alice", &key, |body| {
                body["running"] == false && body["last_run"]["totals"]["written"]["new"] == 2
            })
            .await;
        assert!(
            picked["session"].is_null(),
            "the session is gone with its run: {picked}"
        );
        assert_eq!(service.all_records(&key, "model=media").await.len(), 7);

        // Its own interval, instead of the connector's daily one.
        for bad in [
            json!({"sync_every": "soon"}),
            json!({"sync_every": "30s"}),
            // Accepted once, it overflowed the scheduler's clock and took a sync slot for good.
            json!({"sync_every": "10000000d"}),
            json!({"every": "1h"}),
        ] {
            let (status, body) = service
                .call(
                    "PATCH",
                    "/integrations/google_photos:alice",
                    &key,
                    Some(bad),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        }
        let (status, body) = service
            .call(
                "PATCH",
                "/integrations/google_photos:alice",
                &key,
                Some(json!({"sync_every": "6h"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["sync_every_secs"], 21_600);

        // Sync now: the second run finds nothing new and writes nothing.
        let (status, _) = service
            .call("POST", "/integrations/google_photos:alice/sync", &key, None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let again = service
            .wait_for("google_photos:alice", &key, |body| {
                imported(body) && body["last_run"]["id"] != picked["last_run"]["id"]
            })
            .await;
        // Google Photos has no incremental API: the run reads everything again and writes
        // nothing, since nothing changed.
        let last: jiff::Timestamp = again["last_sync_at"].as_str().unwrap().parse().unwrap();
        let next: jiff::Timestamp = again["next_sync_at"].as_str().unwrap().parse().unwrap();
        let hours = next.duration_since(last).as_secs_f64() / 3600.0;
        assert!((5.4..=6.6).contains(&hours), "next sync in {hours} h");
        let written = &again["last_run"]["totals"]["written"];
        assert_eq!(
            (
                &written["new"],
                &written["updated"],
                &written["deleted"],
                &written["unchanged"]
            ),
            (&json!(0), &json!(0), &json!(0), &json!(5)),
            "{again}"
        );

        let (status, metrics) = service.get("/metrics", &key).await;
        assert_eq!(status, StatusCode::OK);
        let metrics = metrics.as_str().unwrap().to_owned();
        assert!(
            metrics.contains(
                r#"hypernet_syncs_total{connector="google_photos",outcome="succeeded"} 3"#
            ),
            "{metrics}"
        );
        assert!(
            // The first sync's 5, the picker's 2, the last sync's 5 unchanged.
            metrics.contains(r#"hypernet_records_total{connector="google_photos"} 12"#),
            "{metrics}"
        );

        // Disconnect, keeping the records; then connect again and disconnect deleting them.
        let (status, gone) = service
            .call("DELETE", "/integrations/google_photos:alice", &key, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{gone}");
        assert_eq!(gone["records_deleted"], 0);
        assert_eq!(service.all_records(&key, "model=media").await.len(), 7);
        let (status, _) = service.get("/integrations/google_photos:alice", &key).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        service.connect("google_photos", &key).await;
        service
            .wait_for("google_photos:alice", &key, imported)
            .await;
        let (status, gone) = service
            .call(
                "DELETE",
                "/integrations/google_photos:alice?delete_data=true",
                &key,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{gone}");
        assert_eq!(gone["records_deleted"], 7);
        // The photos' and videos' bytes went with them (no other record used them; the two
        // picked items' bytes are two of the library's, stored once), and the PNG's thumbnail.
        assert_eq!(gone["blobs_deleted"], 5, "{gone}");
        assert!(service.all_records(&key, "model=media").await.is_empty());
        let (status, _) = service.get(url, &key).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (_, audit) = service.get("/audit", &key).await;
        let actions: Vec<&str> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["action"].as_str().unwrap())
            .collect();
        for action in [
            "connected",
            "sync_started",
            "sync_finished",
            "disconnected",
            "records_deleted",
        ] {
            assert!(
                actions.contains(&action),
                "{action} missing from {actions:?}"
            );
        }
    }
}

/// A stream whose records are stored by more than the provider's id (Google Calendar: the
/// calendar and the event's id) serves each record's `provider_id`, the event's own id, beside
/// that identity, in the record and at its top.
#[tokio::test(flavor = "multi_thread")]
async fn records_keep_the_providers_own_id_beside_their_key() {
    for store in test_stores("serve_provider_id").await {
        let service = Service::start_with(&store, &repo_root().join("connectors"), |config| {
            config.sandbox = true;
        })
        .await;
        let key = service.key_for("alice").await;
        service.connect("google_calendar", &key).await;
        service
            .wait_for("google_calendar:alice", &key, imported)
            .await;
        let events = service.all_records(&key, "model=event").await;
        assert!(!events.is_empty(), "{}", store.backend);
        for event in &events {
            let identity = event["source_object_id"].as_str().unwrap();
            let own = event["provider_id"].as_str().unwrap();
            assert_ne!(identity, own, "{event}");
            assert_eq!(identity.rsplit_once('/').unwrap().1, own, "{event}");
            assert_eq!(event["data"]["provider_id"], own, "{event}");
        }
    }
}

/// The service connects an OAuth 1.0a connector (Trello) through the browser as it does an
/// OAuth 2.0 one: temporary credentials, the user's authorization, the access token sealed, the
/// import started; then its signed requests import the records.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_connects_an_oauth1_connector() {
    for store in test_stores("serve_oauth1").await {
        let service = Service::start(&store, Identity::ApiKeys).await;
        let key = service.key_for("alice").await;
        let authorize = service
            .client
            .get(service.url("/integrations/trello/authorize"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            authorize.status(),
            StatusCode::SEE_OTHER,
            "{}",
            store.backend
        );
        let provider = location(&authorize);
        let query: std::collections::HashMap<_, _> = url::Url::parse(&provider)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert!(query.contains_key("oauth_token"), "{provider}");
        let back = service.client.get(&provider).send().await.unwrap();
        let callback = location(&back);
        assert!(callback.contains("oauth_verifier="), "{callback}");
        let done = service
            .client
            .get(&callback)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            done.status(),
            StatusCode::SEE_OTHER,
            "{:?}",
            done.text().await
        );
        assert_eq!(location(&done), "/#integration=trello:alice");
        // The callback is good once: replayed, its temporary token is unknown.
        let again = service
            .client
            .get(&callback)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::BAD_REQUEST, "{}", store.backend);

        let integration = service.wait_for("trello:alice", &key, imported).await;
        assert_eq!(
            integration["last_run"]["status"], "succeeded",
            "{integration}"
        );
        let records = service.all_records(&key, "model=task").await;
        assert!(!records.is_empty(), "{}: {integration}", store.backend);
        assert!(
            records
                .iter()
                .all(|record| record["data"]["source_platform"] == "trello")
        );
    }
}

/// Connecting with an account name adds a second integration of the same connector for the
/// same user; connecting that name again renews it rather than adding a third.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_account_of_a_connector_is_a_second_integration() {
    for store in test_stores("serve_accounts").await {
        let service = Service::start(&store, Identity::ApiKeys).await;
        let key = service.key_for("alice").await;
        let first = service.connect("dropbox", &key).await;
        assert_eq!(first, "/#integration=dropbox:alice");
        let second = service
            .connect("dropbox?account=alice%40work.example", &key)
            .await;
        let work_id = second.trim_start_matches("/#integration=").to_owned();
        assert!(work_id.starts_with("dropbox-"), "{second}");
        service.wait_for("dropbox:alice", &key, imported).await;
        let work = service.wait_for(&work_id, &key, imported).await;
        assert_eq!(work["account"], "alice@work.example", "{work}");
        assert_eq!(work["last_run"]["status"], "succeeded", "{work}");
        // Again with the same name: renewed, not added.
        let again = service
            .connect("dropbox?account=alice%40work.example", &key)
            .await;
        assert_eq!(again, second);
        let (status, listed) = service.get("/integrations", &key).await;
        assert_eq!(status, StatusCode::OK);
        let mut accounts: Vec<String> = listed["integrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|integration| integration["account"].as_str().unwrap().to_owned())
            .collect();
        accounts.sort();
        assert_eq!(accounts, ["", "alice@work.example"], "{}", store.backend);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connectors_without_oauth_connect_from_config_values() {
    for store in test_stores("serve_config").await {
        let service = Service::start(&store, Identity::ApiKeys).await;
        let key = service.key_for("bob").await;
        let (status, body) = service
            .call(
                "POST",
                "/integrations",
                &key,
                Some(json!({"connector": "google_photos"})),
            )
            .await;
        // Well formed, but the connector connects another way.
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("authorize")
        );
        let (status, body) = service
            .call(
                "POST",
                "/integrations",
                &key,
                Some(json!({"connector": "plaid", "config": {"colour": "red"}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("colour")
        );
        let (status, body) = service
            .call(
                "POST",
                "/integrations",
                &key,
                Some(json!({"connector": "plaid"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let done = service.wait_for("plaid:bob", &key, imported).await;
        assert_eq!(done["last_run"]["status"], "succeeded", "{done}");
        assert!(
            !service
                .all_records(&key, "model=transaction")
                .await
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_never_sees_or_touches_another_users_integrations() {
    for store in test_stores("serve_isolation").await {
        let service = Service::start(&store, Identity::ApiKeys).await;
        let alice = service.key_for("alice").await;
        let mallory = service.key_for("mallory").await;
        service.connect("google_photos", &alice).await;
        service
            .wait_for("google_photos:alice", &alice, imported)
            .await;

        let (_, list) = service.get("/integrations", &mallory).await;
        assert_eq!(list["integrations"], json!([]));
        for (method, path) in [
            ("GET", "/integrations/google_photos:alice"),
            ("POST", "/integrations/google_photos:alice/sync"),
            (
                "DELETE",
                "/integrations/google_photos:alice?delete_data=true",
            ),
        ] {
            let (status, body) = service.call(method, path, &mallory, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "not_found");
        }
        assert!(
            service
                .all_records(&mallory, "model=media")
                .await
                .is_empty()
        );
        let (_, audit) = service.get("/audit", &mallory).await;
        assert_eq!(audit["entries"], json!([]));
        // Alice's data is all still there.
        assert_eq!(service.all_records(&alice, "model=media").await.len(), 5);
        let (status, _) = service
            .get("/integrations/google_photos:alice", &alice)
            .await;
        assert_eq!(status, StatusCode::OK);

        // A callback carrying a state that Alice's authorization started, replayed by Mallory,
        // is refused, and does not cancel Alice's authorization.
        let authorize = service
            .client
            .get(service.url("/integrations/dropbox/authorize"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        let provider = location(&authorize);
        let back = service.client.get(provider).send().await.unwrap();
        let callback = location(&back);
        let stolen = service
            .client
            .get(&callback)
            .bearer_auth(&mallory)
            .send()
            .await
            .unwrap();
        assert_eq!(stolen.status(), StatusCode::BAD_REQUEST);
        let (_, list) = service.get("/integrations", &mallory).await;
        assert_eq!(list["integrations"], json!([]));
        let completed = service
            .client
            .get(&callback)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert!(
            location(&completed).contains("#integration=dropbox:alice"),
            "{}",
            completed.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_json_4xx() {
    let stores = test_stores("serve_bad_input").await;
    let store = &stores[0];
    let service = Service::start(store, Identity::ApiKeys).await;
    let key = service.key_for("alice").await;
    // (method, path, API key, JSON body, expected status)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<Value>, StatusCode);
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/integrations", None, None, StatusCode::UNAUTHORIZED),
        (
            "GET",
            "/integrations",
            Some("hn_not_a_key"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            "/records?model=hologram",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/records?since=yesterday",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/records?cursor=abc",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            // Every user's counts: for operators only (alice is not one here).
            "GET",
            "/metrics",
            Some(&key),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            // One past the largest row number: answered 500 before.
            "GET",
            "/records?cursor=9223372036854775808",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/records?cursor=-1",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/records?limit=0",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/records?limit=-5",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/records?colour=red",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/audit?limit=100000",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/integrations/nope:alice",
            Some(&key),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "DELETE",
            "/integrations/nope?delete_data=maybe",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/integrations/no_such_connector/authorize",
            Some(&key),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/integrations/plaid/authorize",
            Some(&key),
            None,
            StatusCode::CONFLICT,
        ),
        (
            "GET",
            "/integrations/google_photos/callback",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/integrations/google_photos/callback?state=forged&code=x",
            Some(&key),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/integrations",
            Some(&key),
            Some(json!({"connector": 7})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/integrations",
            Some(&key),
            Some(json!({"connector": "nope"})),
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/session",
            None,
            Some(json!({"key": "hn_wrong"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            "/no/such/endpoint",
            Some(&key),
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, credentials, body, expected) in cases {
        let mut request = service.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            service.url(path),
        );
        if let Some(key) = credentials {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: not JSON: {error}"));
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|text| !text.is_empty()),
            "{method} {path}: {body}"
        );
    }
    // A body larger than the service reads: refused with its own status, as JSON.
    let response = service
        .client
        .post(service.url("/integrations"))
        .bearer_auth(&key)
        .json(&json!({"connector": "todoist", "config": {"api_token": "x".repeat(server::MAX_REQUEST_BODY)}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    // A URL or a header far larger than any client needs: refused, and the service goes on.
    let long_url = service
        .client
        .get(service.url(&format!("/records?model={}", "a".repeat(60_000))))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(long_url.status().is_client_error(), "{}", long_url.status());
    let huge_header = service
        .client
        .get(service.url("/me"))
        .bearer_auth(&key)
        .header("x-padding", "a".repeat(1 << 20))
        .send()
        .await
        .unwrap();
    assert!(
        huge_header.status().is_client_error(),
        "{}",
        huge_header.status()
    );
    let (status, _) = service.get("/me", &key).await;
    assert_eq!(status, StatusCode::OK, "the service still answers");
    // A body that is not JSON at all.
    let response = service
        .client
        .post(service.url("/integrations"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_gateway_header_names_the_user() {
    let stores = test_stores("serve_header").await;
    let service = Service::start(
        &stores[0],
        Identity::TrustedHeader("x-hypernet-user".to_owned()),
    )
    .await;
    let response = service
        .client
        .get(service.url("/me"))
        .header("X-Hypernet-User", "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["user"], "carol");
    // API keys mean nothing in this mode.
    let key = service.key_for("carol").await;
    let (status, body) = service.get("/me", &key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route() {
    let stores = test_stores("serve_openapi").await;
    let service = Service::start(&stores[0], Identity::ApiKeys).await;
    let key = service.key_for("alice").await;
    let (status, document) = service.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().unwrap();

    // Every route the router has is documented...
    let source = std::fs::read_to_string(repo_root().join("server/src/lib.rs")).unwrap();
    let routes: Vec<&str> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.split('"').nth(1))
        .collect();
    assert!(routes.len() >= 10, "{routes:?}");
    for route in &routes {
        assert!(paths.contains_key(*route), "{route} is not in openapi.json");
    }
    // ...and every documented operation exists: none falls through to the 404 fallback or is
    // refused as a wrong method.
    for (path, operations) in paths {
        assert!(
            routes.contains(&path.as_str()),
            "{path} is documented but not routed"
        );
        for method in operations.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "google_photos");
            let response = service
                .client
                .request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    service.url(&concrete),
                )
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let body = response.text().await.unwrap();
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path}: {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_page_signs_in_with_a_cookie() {
    let stores = test_stores("serve_session").await;
    let service = Service::start(&stores[0], Identity::ApiKeys).await;
    let key = service.key_for("dave").await;
    let page = service.client.get(service.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Hypernet Connect"));
    let response = service
        .client
        .post(service.url("/session"))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let me = service
        .client
        .get(service.url("/me"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["user"], "dave");
}

/// Two connectors whose provider misbehaves: `flaky` answers 503 to everything, `revoked`
/// refuses its token with 401 and its refresh token with `invalid_grant`.
const FLAKY: &str = r#"id: flaky
name: Flaky
version: 1.0.0
category: productivity
description: A provider that is down.
docs_url: https://api.flaky.example/docs
auth: { kind: none }
base_url: https://api.flaky.example
allowed_hosts: [api.flaky.example]
retry:
  max_attempts: 1
  backoff: { initial: 1ms, max: 2ms }
schedule: { every: 1h }
streams:
  items:
    model: note
    request: { path: /items }
    records: $.items[*]
    id: $.id
    map:
      title: $.title
"#;

const REVOKED: &str = r#"id: revoked
name: Revoked
version: 1.0.0
category: productivity
description: A provider that has revoked the grant.
docs_url: https://api.revoked.example/docs
auth:
  kind: oauth2
  authorization_url: https://auth.revoked.example/authorize
  token_url: https://auth.revoked.example/token
  scopes: [read]
base_url: https://api.revoked.example
allowed_hosts: [api.revoked.example, auth.revoked.example]
retry:
  max_attempts: 1
  backoff: { initial: 1ms, max: 2ms }
streams:
  items:
    model: note
    request: { path: /items }
    records: $.items[*]
    id: $.id
    map:
      title: $.title
"#;

/// A provider whose second page arrives only when the test says so.
const SLOW: &str = r#"id: slow
name: Slow
version: 1.0.0
category: productivity
description: A provider that takes its time.
docs_url: https://api.slow.example/docs
auth: { kind: none }
base_url: https://api.slow.example
allowed_hosts: [api.slow.example]
streams:
  items:
    model: note
    request: { path: /pages }
    paginate: { kind: cursor, token: $.next, param: page }
    records: $.items[*]
    id: $.id
    map:
      title: $.title
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_running_sync_shows_its_progress() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = std::sync::Arc::clone(&release);
    let provider = hypernet_tests::serve(axum::Router::new().route(
        "/pages",
        axum::routing::get(
            move |axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>| {
                let gate = std::sync::Arc::clone(&gate);
                async move {
                    if query.contains_key("page") {
                        gate.notified().await;
                        axum::Json(json!({"items": [{"id": "3", "title": "c"}]}))
                    } else {
                        axum::Json(json!({"items": [{"id": "1", "title": "a"}, {"id": "2", "title": "b"}], "next": "2"}))
                    }
                }
            },
        ),
    ))
    .await;
    let connectors = hypernet_tests::connectors_folder(&[("slow", SLOW)]);
    let stores = test_stores("serve_progress").await;
    let service = Service::start_with(&stores[0], connectors.path(), |config| {
        config.via = Some(provider);
    })
    .await;
    let key = service.key_for("frank").await;
    let (status, body) = service
        .call(
            "POST",
            "/integrations",
            &key,
            Some(json!({"connector": "slow"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let busy = service
        .wait_for("slow:frank", &key, |body| {
            body["running"] == true && body["progress"]["records"] == 2
        })
        .await;
    assert_eq!(busy["progress"]["pages"], 1, "{busy}");
    assert_eq!(busy["imported"], false);
    release.notify_one();
    let done = service.wait_for("slow:frank", &key, imported).await;
    assert_eq!(done["progress"], Value::Null);
    assert_eq!(done["last_run"]["totals"]["written"]["new"], 3, "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_syncs_back_off_and_refused_credentials_stop_scheduling() {
    use axum::http::StatusCode as Status;
    use axum::response::IntoResponse;
    let provider = hypernet_tests::serve(
        axum::Router::new()
            .route(
                "/items",
                axum::routing::get(|headers: axum::http::HeaderMap| async move {
                    // The sandbox transport sends every host here: who is asking tells them
                    // apart (only `revoked` sends a token).
                    if headers.contains_key("authorization") {
                        (Status::UNAUTHORIZED, "token revoked").into_response()
                    } else {
                        (Status::SERVICE_UNAVAILABLE, "down for maintenance").into_response()
                    }
                }),
            )
            .route(
                "/token",
                axum::routing::post(|| async {
                    (
                        Status::BAD_REQUEST,
                        axum::Json(json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})),
                    )
                }),
            ),
    )
    .await;
    let connectors = hypernet_tests::connectors_folder(&[("flaky", FLAKY), ("revoked", REVOKED)]);
    // The deployment's OAuth client for `revoked`, as operators give it.
    // SAFETY: no other test reads these variables; they are set before the service starts.
    unsafe {
        std::env::set_var("HYPERNET_REVOKED_CLIENT_ID", "client");
        std::env::set_var("HYPERNET_REVOKED_CLIENT_SECRET", "secret");
    }
    for store in test_stores("serve_failures").await {
        let service = Service::start_with(&store, connectors.path(), |config| {
            config.via = Some(provider.clone());
            config.operators = vec!["erin".to_owned()];
        })
        .await;
        let key = service.key_for("erin").await;

        // A provider that is down: the sync fails, says why and what to do, and is tried
        // again after a backoff (about a minute), not at once and not at the hourly interval.
        let (status, body) = service
            .call(
                "POST",
                "/integrations",
                &key,
                Some(json!({"connector": "flaky"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let failed = service
            .wait_for("flaky:erin", &key, |body| {
                body["failures"] == 1 && body["running"] == false
            })
            .await;
        assert_eq!(failed["status"], "active", "{}", store.backend);
        let error = failed["last_error"].as_str().unwrap();
        assert!(
            error.contains("503") && error.contains("what to do"),
            "{error}"
        );
        assert!(failed["what_to_do"].as_str().unwrap().contains("retried"));
        let last: jiff::Timestamp = failed["last_sync_at"].as_str().unwrap().parse().unwrap();
        let next: jiff::Timestamp = failed["next_sync_at"].as_str().unwrap().parse().unwrap();
        let wait = next.duration_since(last).as_secs();
        assert!((50..=70).contains(&wait), "backoff of {wait}s");
        assert_eq!(failed["last_run"]["status"], "failed");

        // Refused credentials that cannot be renewed: needs_reauth, and no more syncs.
        let state = &service.running.state;
        let tokens = engine::credentials::oauth2::TokenSet {
            access_token: "revoked-access".to_owned(),
            refresh_token: Some("revoked-refresh".to_owned()),
            expires_at: None,
            refresh_expires_at: None,
            scope: Some("read".to_owned()),
        };
        state
            .store
            .save_integration(&engine::store::StoredIntegration {
                id: "revoked:erin".to_owned(),
                user_id: "erin".to_owned(),
                connector: "revoked".to_owned(),
                account: String::new(),
                status: engine::store::IntegrationStatus::Active,
                config: serde_json::Map::new(),
                sealed_tokens: Some(state.cipher.encrypt(&serde_json::to_vec(&tokens).unwrap())),
                scopes: Some("read".to_owned()),
                last_error: None,
                streams: None,
            })
            .await
            .unwrap();
        state.wake.notify_one();
        let refused = service
            .wait_for("revoked:erin", &key, |body| {
                body["status"] == "needs_reauth" && body["running"] == false
            })
            .await;
        assert!(
            refused["last_error"]
                .as_str()
                .unwrap()
                .contains("invalid_grant"),
            "{refused}"
        );
        assert!(
            refused["what_to_do"]
                .as_str()
                .unwrap()
                .contains("/integrations/revoked/authorize")
        );
        assert_eq!(refused["next_sync_at"], Value::Null);
        let (status, body) = service
            .call("POST", "/integrations/revoked:erin/sync", &key, None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        // Polls go by; neither integration runs again.
        tokio::time::sleep(Duration::from_millis(400)).await;
        for id in ["flaky:erin", "revoked:erin"] {
            assert_eq!(
                state.store.runs(id).await.unwrap().len(),
                1,
                "{id} ran again"
            );
        }
        let (_, metrics) = service.get("/metrics", &key).await;
        let metrics = metrics.as_str().unwrap().to_owned();
        assert!(
            metrics.contains(r#"hypernet_errors_total{connector="flaky",kind="http"} 1"#),
            "{metrics}"
        );
        assert!(
            metrics
                .contains(r#"hypernet_syncs_total{connector="revoked",outcome="needs_reauth"} 1"#),
            "{metrics}"
        );
    }
}

/// The person chooses what an integration imports: asked at connect time, only the scopes the
/// chosen streams need go to the provider, only those streams are imported, and the choice can
/// be changed later (`PATCH`), on both backends.
#[tokio::test(flavor = "multi_thread")]
async fn a_person_chooses_the_streams_an_integration_imports_and_the_scopes_asked_for() {
    for store in test_stores("serve_streams").await {
        let service = Service::start(&store, Identity::ApiKeys).await;
        let key = service.key_for("alice").await;

        // The catalog lists the choices, with the scopes each needs.
        let (_, catalog) = service.get("/connectors", &key).await;
        let gmail = catalog["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|connector| connector["id"] == "gmail")
            .unwrap();
        let choices: Vec<&str> = gmail["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|choice| choice["name"].as_str().unwrap())
            .collect();
        assert_eq!(choices, ["message_ids", "contacts"]);

        // Only the contacts: the provider is not asked to read mail.
        let authorize = service
            .client
            .get(service.url("/integrations/gmail/authorize?streams=contacts"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let provider = url::Url::parse(&location(&authorize)).unwrap();
        let scope = provider
            .query_pairs()
            .find(|(name, _)| name == "scope")
            .map(|(_, value)| value.into_owned())
            .unwrap();
        assert!(scope.contains("contacts.readonly"), "{scope}");
        assert!(!scope.contains("gmail.readonly"), "{scope}");
        let (status, body) = service
            .get("/integrations/gmail/authorize?streams=contacts,spam", &key)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

        let done = service.connect("gmail?streams=contacts", &key).await;
        assert!(done.ends_with("#integration=gmail:alice"), "{done}");
        let first = service.wait_for("gmail:alice", &key, imported).await;
        assert_eq!(first["streams"], json!(["contacts"]), "{first}");
        assert!(!service.all_records(&key, "model=contact").await.is_empty());
        assert!(
            service.all_records(&key, "model=email").await.is_empty(),
            "mail was not chosen"
        );

        // Changed later: every stream again. The interval is left as it was.
        let (status, body) = service
            .call(
                "PATCH",
                "/integrations/gmail:alice",
                &key,
                Some(json!({"sync_every": "6h"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for (bad, refused) in [
            (json!({"streams": []}), StatusCode::BAD_REQUEST),
            // A substream: chosen with its root stream, not alone.
            (json!({"streams": ["messages"]}), StatusCode::NOT_FOUND),
        ] {
            let (status, body) = service
                .call("PATCH", "/integrations/gmail:alice", &key, Some(bad))
                .await;
            assert_eq!(status, refused, "{body}");
        }
        let (status, body) = service
            .call(
                "PATCH",
                "/integrations/gmail:alice",
                &key,
                Some(json!({"streams": null})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["streams"], Value::Null, "{body}");
        assert_eq!(body["sync_every_secs"], json!(21_600), "{body}");
        let (status, _) = service
            .call("POST", "/integrations/gmail:alice/sync", &key, None)
            .await;
        assert!(status.is_success());
        service
            .wait_for("gmail:alice", &key, |body| {
                imported(body) && body["last_run"]["id"] != first["last_run"]["id"]
            })
            .await;
        assert!(
            !service.all_records(&key, "model=email").await.is_empty(),
            "every stream, mail included, once the choice is lifted"
        );
    }
}

impl Service {
    /// `POST /integrations/{id}/imports` with `body` as the upload.
    async fn upload(&self, id: &str, key: &str, name: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(&format!("/integrations/{id}/imports?name={name}")))
            .bearer_auth(key)
            .header("content-type", "application/zip")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Netflix's fixture export, zipped as Netflix sends it.
fn netflix_zip(folder: &std::path::Path) -> std::path::PathBuf {
    let path = folder.join("netflix-report.zip");
    hypernet_tests::zip_of(
        &hypernet_tests::files_of(
            &repo_root().join("connectors/netflix/fixtures/exports/2024_report"),
        ),
        &path,
    );
    path
}

fn files_in(folder: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn import_ended(body: &Value) -> bool {
    matches!(
        body["imports"][0]["status"].as_str(),
        Some("succeeded" | "partial" | "failed")
    )
}

/// A person uploads a data export: streamed to disk, imported in the background with its status
/// on the integration, the upload deleted after; the same export again writes nothing; too large
/// an upload is refused with nothing left behind; an operator imports from the import folder.
#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_export_is_imported_in_the_background() {
    for store in test_stores("serve_imports").await {
        let folders = tempfile::tempdir().unwrap();
        let uploads = folders.path().join("uploads");
        let root = folders.path().join("exports");
        std::fs::create_dir_all(&root).unwrap();
        let zip = std::fs::read(netflix_zip(&root)).unwrap();
        let service = Service::start_with(&store, &repo_root().join("connectors"), |config| {
            config.sandbox = true;
            config.operators = vec!["alice".to_owned()];
            config.uploads = uploads.clone();
            config.import_root = Some(root.clone());
            config.max_upload = 1 << 20;
        })
        .await;
        let key = service.key_for("alice").await;

        let (_, catalog) = service.get("/connectors", &key).await;
        let netflix = catalog["connectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|connector| connector["id"] == "netflix")
            .unwrap()
            .clone();
        assert_eq!(
            (&netflix["syncs"], &netflix["imports"]),
            (&json!(false), &json!(true))
        );
        let (status, body) = service
            .call(
                "POST",
                "/integrations",
                &key,
                Some(json!({"connector": "netflix"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = "netflix:alice";
        // Nothing to sync: never scheduled, and "sync now" says what to do instead.
        let (_, integration) = service.get(&format!("/integrations/{id}"), &key).await;
        assert_eq!(integration["syncs"], false);
        assert_eq!(integration["next_sync_at"], Value::Null);
        assert_eq!(integration["imports"], json!([]));
        let (status, body) = service
            .call("POST", &format!("/integrations/{id}/sync"), &key, None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("/imports")
        );

        let (status, queued) = service
            .upload(id, &key, "netflix-report.zip", zip.clone())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
        assert_eq!(queued["name"], "netflix-report.zip");
        assert_eq!(queued["source"], "upload");
        assert_eq!(queued["bytes"], zip.len());
        let done = service.wait_for(id, &key, import_ended).await;
        let first = &done["imports"][0];
        assert_eq!(first["status"], "succeeded", "{}: {done}", store.backend);
        assert_eq!(first["id"], queued["id"]);
        assert_eq!(first["attempts"], 1);
        let new = done["last_run"]["totals"]["written"]["new"]
            .as_u64()
            .unwrap();
        assert!(new > 0, "{done}");
        let records = service.all_records(&key, "model=viewing_event").await;
        assert_eq!(records.len() as u64, new, "{}", store.backend);
        assert!(files_in(&uploads).is_empty(), "{:?}", files_in(&uploads));

        // The same export again: imported, nothing written.
        let (status, again) = service
            .upload(id, &key, "netflix-report.zip", zip.clone())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{again}");
        let done = service
            .wait_for(id, &key, |body| {
                body["imports"][0]["id"] == again["id"] && import_ended(body)
            })
            .await;
        assert_eq!(done["imports"][0]["status"], "succeeded", "{done}");
        assert_eq!(done["last_run"]["totals"]["written"]["new"], 0, "{done}");
        assert_eq!(done["imports"].as_array().unwrap().len(), 2);

        // Too large: refused while streaming, and no partial file is left.
        let (status, body) = service
            .upload(id, &key, "big.zip", vec![b'x'; (1 << 20) + 1])
            .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"]["code"], "too_large");
        assert!(files_in(&uploads).is_empty(), "{:?}", files_in(&uploads));
        // Not an export: queued, and fails saying what to do.
        let (status, _) = service
            .upload(id, &key, "notes.txt", b"just some text".to_vec())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let done = service.wait_for(id, &key, import_ended).await;
        assert_eq!(done["imports"][0]["status"], "failed", "{done}");
        assert!(
            done["imports"][0]["error"]
                .as_str()
                .unwrap()
                .contains("upload it again"),
            "{done}"
        );

        // The operator's import folder: by path, the file left where it is.
        let (status, body) = service
            .call(
                "POST",
                &format!("/integrations/{id}/imports"),
                &key,
                Some(json!({"paths": ["netflix-report.zip"]})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["source"], "folder");
        let done = service
            .wait_for(id, &key, |current| {
                current["imports"][0]["id"] == body["id"] && import_ended(current)
            })
            .await;
        assert_eq!(done["imports"][0]["status"], "succeeded", "{done}");
        assert!(root.join("netflix-report.zip").is_file());
        for (paths, expected) in [
            (
                json!(["../exports/netflix-report.zip"]),
                StatusCode::BAD_REQUEST,
            ),
            (json!(["/etc/passwd"]), StatusCode::BAD_REQUEST),
            (json!(["missing.zip"]), StatusCode::BAD_REQUEST),
        ] {
            let (status, body) = service
                .call(
                    "POST",
                    &format!("/integrations/{id}/imports"),
                    &key,
                    Some(json!({ "paths": paths })),
                )
                .await;
            assert_eq!(status, expected, "{paths}: {body}");
        }

        // Another user: not an operator, so no import by path; and not their integration.
        let bob = service.key_for("bob").await;
        let (status, _) = service.upload(id, &bob, "x.zip", zip.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        service
            .call(
                "POST",
                "/integrations",
                &bob,
                Some(json!({"connector": "netflix"})),
            )
            .await;
        let (status, body) = service
            .call(
                "POST",
                "/integrations/netflix:bob/imports",
                &bob,
                Some(json!({"paths": ["netflix-report.zip"]})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

        // A connector that reads only its API has nothing to import.
        service.connect("google_photos", &key).await;
        let (status, body) = service
            .upload("google_photos:alice", &key, "x.zip", zip.clone())
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");

        // Deleting the integration deletes its imports.
        let (status, _) = service
            .call(
                "DELETE",
                &format!("/integrations/{id}?delete_data=true"),
                &key,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            service
                .all_records(&key, "model=viewing_event")
                .await
                .is_empty()
        );
    }
}

/// One import of an integration at a time; an import whose process died (its lease ran out)
/// is claimed again by the next scheduler and resumed to its end.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_abandoned_by_a_dead_process_is_resumed() {
    for store in test_stores("serve_import_resume").await {
        let folders = tempfile::tempdir().unwrap();
        let uploads = folders.path().join("uploads");
        let zip = std::fs::read(netflix_zip(folders.path())).unwrap();
        // A process that takes uploads and runs no scheduler.
        let front = Service::start_with(&store, &repo_root().join("connectors"), |config| {
            config.sandbox = true;
            config.scheduler = false;
            config.uploads = uploads.clone();
        })
        .await;
        let key = front.key_for("carol").await;
        front
            .call(
                "POST",
                "/integrations",
                &key,
                Some(json!({"connector": "netflix"})),
            )
            .await;
        let id = "netflix:carol";
        let (status, queued) = front.upload(id, &key, "netflix.zip", zip.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
        let (status, body) = front.upload(id, &key, "netflix.zip", zip.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(files_in(&uploads).len(), 1, "the refused upload is deleted");

        // A worker claims it and dies at once: its lease has run out.
        let claim = front
            .running
            .state
            .tables
            .claim_import("dead-worker", Duration::ZERO)
            .await
            .unwrap()
            .expect("the queued import");
        assert_eq!(claim.attempts, 1);
        let (_, integration) = front.get(&format!("/integrations/{id}"), &key).await;
        assert_eq!(integration["imports"][0]["status"], "running");

        // The next process with a scheduler takes it over and finishes it.
        let key_file = front._key_dir.path().join("hypernet.key");
        let worker = Service::start_with(&store, &repo_root().join("connectors"), |config| {
            config.sandbox = true;
            config.key_file = key_file;
            config.uploads = uploads.clone();
        })
        .await;
        let done = worker.wait_for(id, &key, import_ended).await;
        assert_eq!(done["imports"][0]["status"], "succeeded", "{done}");
        assert_eq!(done["imports"][0]["attempts"], 2, "{done}");
        assert!(
            done["last_run"]["totals"]["written"]["new"]
                .as_u64()
                .is_some_and(|new| new > 0),
            "{}: {done}",
            store.backend
        );
        assert!(files_in(&uploads).is_empty());
    }
}
