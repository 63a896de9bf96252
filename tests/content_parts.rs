//! A record whose content has several parts (a mail's HTML body, kept from the record itself,
//! and each attachment, downloaded), on SQLite and PostgreSQL with a folder blob store: over
//! loopback HTTP from a provider shaped like Gmail (`format=full` MIME trees whose text parts
//! carry their bytes as base64url, attachments fetched one by one as JSON around base64url,
//! with an `attachmentId` that changes on every listing).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use base64::Engine as _;
use engine::blobs::BlobHash;
use engine::store::AnyStore;
use hypernet_tests::{
    RunOptions, run, run_with_blobs, serve, spec_from, test_blob_stores, test_stores,
};

const SPEC: &str = r#"
id: mail_api
name: Mail API
version: 1.0.0
category: email
description: Messages with their bodies and attachments.
docs_url: https://developers.google.com/workspace/gmail/api/reference/rest/v1/users.messages
auth: { kind: none }
base_url: https://gmail.googleapis.com
allowed_hosts: [gmail.googleapis.com]
retry: { max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
streams:
  messages:
    model: email
    request: { path: /gmail/v1/users/me/messages }
    records: $.messages[*]
    id: $.id
    map:
      sent_at: { from: $.internalDate, as: epoch_millis }
      body_text: { from: "$..[?@.mimeType == 'text/plain'].body.data", as: base64_text }
    content:
      - part: html
        inline:
          from: "$..[?@.mimeType == 'text/html'].body.data"
          encoding: base64url
        content_type: text/html
      - part: attachments
        for_each: "$..parts[?@.body.attachmentId]"
        key: $.partId
        request:
          path: "/gmail/v1/users/me/messages/{{ record.id }}/attachments/{{ item.body.attachmentId }}"
        answer: { json: $.data, encoding: base64url }
        size: $.body.size
        content_type: $.mimeType
        file_name: $.filename
        max_bytes: 100KiB
"#;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// An attachment's bytes, distinct per seed.
fn file(seed: u8, size: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend((0..size).map(|i| (i as u8).wrapping_mul(29) ^ seed));
    bytes
}

const HTML: &str = "<div dir=\"ltr\">Tickets <b>attached</b> — été</div>";
const WITH_PARTS: &str = "18f3c2a9d4e5b601";
const PLAIN: &str = "18f3b7710c2d9e44";

struct Provider {
    /// How many listings were answered: each gives attachments new ids, as Gmail does.
    listings: AtomicUsize,
    /// Attachment requests answered, by message id and attachment id.
    fetched: std::sync::Mutex<Vec<String>>,
}

/// Two messages as `format=full` shapes them: one `multipart/mixed` with a plain and an HTML
/// body and two attachments of the same bytes under two names, and a single-part plain one with
/// an attachment Gmail answers without its `data`.
fn listing(round: usize) -> serde_json::Value {
    let part = |id: &str, mime: &str, name: &str, attachment: &str, size: usize| {
        serde_json::json!({
            "partId": id, "mimeType": mime, "filename": name,
            "headers": [{"name": "Content-Disposition", "value": format!("attachment; filename=\"{name}\"")}],
            "body": {"attachmentId": format!("ANGjdJ8{attachment}r{round}"), "size": size}
        })
    };
    serde_json::json!({"messages": [
        {
            "id": WITH_PARTS, "threadId": WITH_PARTS, "internalDate": "1716282061000",
            "payload": {"partId": "", "mimeType": "multipart/mixed", "filename": "", "body": {"size": 0}, "parts": [
                {"partId": "0", "mimeType": "multipart/alternative", "filename": "", "body": {"size": 0}, "parts": [
                    {"partId": "0.0", "mimeType": "text/plain", "filename": "", "body": {"size": 17, "data": b64url("Tickets attached\n".as_bytes())}},
                    {"partId": "0.1", "mimeType": "text/html", "filename": "", "body": {"size": HTML.len(), "data": b64url(HTML.as_bytes())}}
                ]},
                part("1", "application/pdf", "tickets.pdf", "tickets", file(1, 4000).len()),
                part("2", "application/pdf", "tickets (copy).pdf", "copy", file(1, 4000).len())
            ]}
        },
        {
            "id": PLAIN, "threadId": PLAIN, "internalDate": "1716221520000",
            "payload": {"partId": "", "mimeType": "multipart/mixed", "filename": "", "body": {"size": 0}, "parts": [
                {"partId": "0", "mimeType": "text/plain", "filename": "", "body": {"size": 3, "data": "T2sh"}},
                part("1", "image/png", "lost.png", "lost", 100)
            ]}
        }
    ]})
}

async fn attachment(
    State(provider): State<Arc<Provider>>,
    Path((message, attachment)): Path<(String, String)>,
) -> axum::Json<serde_json::Value> {
    provider
        .fetched
        .lock()
        .unwrap()
        .push(format!("{message}/{attachment}"));
    let bytes = file(1, 4000);
    axum::Json(if attachment.starts_with("ANGjdJ8lost") {
        serde_json::json!({"size": 100})
    } else {
        serde_json::json!({"size": bytes.len(), "data": b64url(&bytes)})
    })
}

async fn provider() -> (url::Url, Arc<Provider>) {
    let provider = Arc::new(Provider {
        listings: AtomicUsize::new(0),
        fetched: std::sync::Mutex::default(),
    });
    let router = Router::new()
        .route(
            "/gmail/v1/users/me/messages",
            get(|State(provider): State<Arc<Provider>>| async move {
                let round = provider.listings.fetch_add(1, Ordering::SeqCst);
                axum::Json(listing(round))
            }),
        )
        .route(
            "/gmail/v1/users/me/messages/{message}/attachments/{attachment}",
            get(attachment),
        )
        .with_state(Arc::clone(&provider));
    (serve(router).await, provider)
}

/// Rows of a query of text columns, in order.
async fn rows(store: &AnyStore, query: &'static str) -> Vec<(String, String, String, String)> {
    match store {
        AnyStore::Sqlite(store) => sqlx::query_as(query).fetch_all(store.pool()).await,
        AnyStore::Postgres(store) => sqlx::query_as(query).fetch_all(store.pool()).await,
    }
    .expect(query)
}

#[tokio::test]
async fn a_records_parts_are_kept_apart_each_from_its_source_and_stored_once_by_hash() {
    let spec = spec_from(SPEC);
    for test in test_stores("content_parts").await {
        let store = &test.store;
        let kept = test_blob_stores("content_parts").remove(0);
        let blobs = kept.blobs.clone();
        let (server, provider) = provider().await;
        let options = || RunOptions {
            blobs: Some(blobs.clone()),
            ..RunOptions::default()
        };
        let (result, recorder) = run(&spec, &server, store, options()).await;
        result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
        let totals = recorder.totals();
        assert_eq!(totals.written.new, 2, "{}", test.backend);
        // The HTML body and two attachments; the third attachment's answer has no bytes.
        assert_eq!(totals.contents, 3, "{}", test.backend);
        assert_eq!(totals.contents_failed, 1, "{}", test.backend);

        let html = BlobHash::of(HTML.as_bytes()).to_hex();
        let pdf = BlobHash::of(&file(1, 4000)).to_hex();
        let stored = rows(
            store,
            "SELECT source_object_id, part, hash, COALESCE(file_name, '') FROM record_blobs ORDER BY source_object_id, part",
        )
        .await;
        let row = |part: &str, hash: &str, name: &str| {
            (
                WITH_PARTS.to_owned(),
                part.to_owned(),
                hash.to_owned(),
                name.to_owned(),
            )
        };
        assert_eq!(
            stored,
            vec![
                row("attachments/1", &pdf, "tickets.pdf"),
                row("attachments/2", &pdf, "tickets (copy).pdf"),
                row("html", &html, ""),
            ],
            "{}",
            test.backend
        );
        // The bytes as they were before base64url: two parts, one blob.
        let hash: BlobHash = pdf.parse().unwrap();
        assert_eq!(
            &blobs.read_all(&hash).await.unwrap()[..],
            &file(1, 4000)[..]
        );
        let hash: BlobHash = html.parse().unwrap();
        assert_eq!(&blobs.read_all(&hash).await.unwrap()[..], HTML.as_bytes());
        let mut listed: Vec<String> =
            futures_util::TryStreamExt::try_collect::<Vec<_>>(blobs.list())
                .await
                .unwrap()
                .iter()
                .map(BlobHash::to_hex)
                .collect();
        listed.sort();
        let mut want = vec![pdf.clone(), html.clone()];
        want.sort();
        assert_eq!(listed, want, "{}", test.backend);

        // The answer without its bytes stays owed, saying what is wrong with it.
        let owed = rows(
            store,
            "SELECT source_object_id, part, COALESCE(last_error, ''), CAST(attempts AS TEXT) FROM downloads",
        )
        .await;
        assert_eq!(owed.len(), 1, "{}: {owed:?}", test.backend);
        assert_eq!(
            (owed[0].0.as_str(), owed[0].1.as_str()),
            (PLAIN, "attachments/1")
        );
        assert!(
            owed[0]
                .2
                .contains("the answer has no string at `$.data` (the content's `answer.json`)"),
            "{}",
            owed[0].2
        );

        // Listed again, every attachment has a new id (Gmail's do): the parts are told apart by
        // their `partId`, so what is stored is not downloaded again; the owed one is retried.
        provider.fetched.lock().unwrap().clear();
        let (result, recorder) = run(&spec, &server, store, options()).await;
        result.unwrap();
        assert_eq!(recorder.totals().contents, 0, "{}", test.backend);
        assert_eq!(
            *provider.fetched.lock().unwrap(),
            vec![format!("{PLAIN}/ANGjdJ8lostr1")],
            "{}",
            test.backend
        );
    }
}

const NOTES_SPEC: &str = r##"
id: notes_api
name: Notes API
version: 1.0.0
category: productivity
description: Pages, with their content put together from their blocks.
docs_url: https://developers.notion.com/reference/get-block-children
auth: { kind: none }
base_url: https://api.notion.com
allowed_hosts: [api.notion.com]
retry: { max_attempts: 2, backoff: { initial: 10ms, max: 20ms } }
streams:
  pages:
    model: note
    request: { path: /v1/pages }
    records: $.results[*]
    id: $.id
    map:
      title: $.title
    content:
      part: markdown
      collect:
        request:
          path: "/v1/blocks/{{ node.id }}/children"
        paginate: { token: $.next_cursor, param: start_cursor }
        records: $.results[*]
        children: node.has_children
        max_depth: 1
        max_nodes: MAX_NODES
        render:
          text: "{% for t in node[node.type].rich_text %}{{ t.plain_text }}{% endfor %}"
          kind: "{{ node.type }}"
          kinds:
            heading_1: "# {{ text }}"
            bulleted_list_item: "- {{ text }}"
          default: "{{ text }}"
          spaced: [heading_1]
          indent: "  "
      content_type: text/markdown
"##;

/// A block as Notion's `blocks.children.list` gives it.
fn block(id: &str, kind: &str, text: &str, children: bool) -> serde_json::Value {
    serde_json::json!({
        "object": "block", "id": id, "type": kind, "has_children": children,
        kind: {"rich_text": [{"type": "text", "plain_text": text, "href": null}]}
    })
}

async fn notes_provider() -> (url::Url, Arc<std::sync::Mutex<Vec<String>>>) {
    let asked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let children = {
        let asked = Arc::clone(&asked);
        move |Path(id): Path<String>,
              axum::extract::Query(query): axum::extract::Query<
            std::collections::HashMap<String, String>,
        >| async move {
            let cursor = query.get("start_cursor").cloned();
            asked.lock().unwrap().push(format!(
                "{id}{}",
                cursor
                    .as_deref()
                    .map(|c| format!("@{c}"))
                    .unwrap_or_default()
            ));
            let (results, next) = match (id.as_str(), cursor.as_deref()) {
                ("page-1", None) => (
                    vec![
                        block("b1", "heading_1", "Lisbon", false),
                        block("b2", "bulleted_list_item", "Day 1", true),
                    ],
                    Some("c2"),
                ),
                ("page-1", Some("c2")) => (vec![block("b3", "paragraph", "The end.", false)], None),
                ("b2", None) => (
                    vec![block("b4", "bulleted_list_item", "Tram 28", true)],
                    None,
                ),
                // Deeper than `max_depth`: never asked for.
                ("b4", None) => (vec![block("b5", "paragraph", "too deep", false)], None),
                _ => (vec![], None),
            };
            axum::Json(serde_json::json!({
                "object": "list", "results": results, "next_cursor": next, "has_more": next.is_some()
            }))
        }
    };
    let router = Router::new()
        .route(
            "/v1/pages",
            get(|| async {
                axum::Json(serde_json::json!({"results": [{"id": "page-1", "title": "Trip"}]}))
            }),
        )
        .route("/v1/blocks/{id}/children", get(children));
    (serve(router).await, asked)
}

#[tokio::test]
async fn a_document_is_collected_from_a_tree_of_blocks_depth_first_and_bounded() {
    for test in test_stores("collect").await {
        let store = &test.store;
        let kept = test_blob_stores("collect").remove(0);
        let (server, asked) = notes_provider().await;
        let spec = spec_from(&NOTES_SPEC.replace("MAX_NODES", "100"));
        let (result, recorder) = run_with_blobs(&spec, &server, store, &kept.blobs).await;
        result.unwrap();
        assert_eq!(recorder.totals().contents, 1, "{}", test.backend);
        let markdown = "# Lisbon\n\n- Day 1\n  - Tram 28\nThe end.\n";
        let stored = rows(
            store,
            "SELECT source_object_id, part, hash, COALESCE(content_type, '') FROM record_blobs",
        )
        .await;
        assert_eq!(stored.len(), 1, "{}", test.backend);
        let hash: BlobHash = stored[0].2.parse().unwrap();
        assert_eq!(
            String::from_utf8(kept.blobs.read_all(&hash).await.unwrap().to_vec()).unwrap(),
            markdown,
            "{}",
            test.backend
        );
        assert_eq!(
            (
                stored[0].0.as_str(),
                stored[0].1.as_str(),
                stored[0].3.as_str()
            ),
            ("page-1", "markdown", "text/markdown")
        );
        // Every page of a node's children, then theirs in order (the document is depth first
        // all the same); nothing below `max_depth` (b4's children).
        assert_eq!(
            *asked.lock().unwrap(),
            vec!["page-1", "page-1@c2", "b2"],
            "{}",
            test.backend
        );

        // Bounded: a document of more nodes than `max_nodes` is refused and stays owed.
        let small = spec_from(
            &NOTES_SPEC
                .replace("MAX_NODES", "3")
                .replace("id: notes_api", "id: notes_small"),
        );
        let (result, recorder) = run(
            &small,
            &server,
            store,
            RunOptions {
                blobs: Some(kept.blobs.clone()),
                ..RunOptions::default()
            },
        )
        .await;
        result.unwrap();
        assert_eq!(recorder.totals().contents_failed, 1, "{}", test.backend);
        let owed = rows(
            store,
            "SELECT source_object_id, part, COALESCE(last_error, ''), stream FROM downloads",
        )
        .await;
        assert_eq!(owed.len(), 1, "{}", test.backend);
        assert!(
            owed[0]
                .2
                .contains("the document has more than 3 nodes, the part's `collect.max_nodes`"),
            "{}",
            owed[0].2
        );
    }
}
