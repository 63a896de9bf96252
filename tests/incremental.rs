//! Incremental sync over loopback HTTP, against providers that keep their own state and (most
//! tests) both stores: sync tokens and expired ones, cursors with a lookback, kept page tokens
//! and delta links, change logs, and a sync token per substream partition.

#[path = "common/notes_provider.rs"]
mod notes_provider;
#[path = "common/test_api.rs"]
mod test_api;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::events::WriteCounts;
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from, test_stores};
use notes_provider::{PLATFORM, T0, note, provider, requests, spec, sync_token_spec};
use serde_json::{Value, json};
use test_api::{notes, spec_yaml};

/// A provider of `category` without auth on one host, with `streams` (YAML at the `streams:`
/// level).
fn connector(category: &str, streams: &str) -> Arc<engine::spec::ConnectorSpec> {
    spec_from(&format!(
        r#"id: {PLATFORM}
name: Test provider
version: 1.0.0
category: {category}
description: A provider shaped like a real one, for storage tests.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
streams:
{streams}"#
    ))
}

fn cursor_spec() -> Arc<engine::spec::ConnectorSpec> {
    spec("    incremental: { kind: cursor, field: $.updated, param: updated_min, lookback: 1h }\n")
}

fn titles(dump: &[(String, String, Value, bool)]) -> Vec<(String, String, bool)> {
    dump.iter()
        .map(|(_, id, data, deleted)| {
            (
                id.clone(),
                data["title"].as_str().unwrap_or_default().to_owned(),
                *deleted,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_second_sync_of_unchanged_data_makes_one_request_and_writes_nothing() {
    for test in test_stores("unchanged").await {
        let (provider, server) = provider((0..5).map(|index| note(index, T0)).collect()).await;
        let spec = sync_token_spec();

        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            requests(&provider).len(),
            3,
            "{}: 5 notes, 2 a page",
            test.backend
        );
        assert_eq!(recorder.totals().written.new, 5, "{}", test.backend);

        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        let second = requests(&provider);
        assert_eq!(
            second.len(),
            1,
            "{}: one request with the token",
            test.backend
        );
        assert_eq!(second[0].get("syncToken").map(String::as_str), Some("t0"));
        assert_eq!(
            recorder.totals().written,
            WriteCounts::default(),
            "{}: nothing written",
            test.backend
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 5);
    }
}

#[tokio::test]
async fn changes_and_tombstones_arrive_through_the_sync_token() {
    for test in test_stores("changes").await {
        let (provider, server) = provider((0..3).map(|index| note(index, T0)).collect()).await;
        let spec = sync_token_spec();
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        requests(&provider);

        provider.lock().unwrap().changes.insert(
            "t0".into(),
            vec![
                json!({"id": "n1", "title": "Note 1, edited", "status": "confirmed", "updated": "2026-03-02T10:00:00Z"}),
                json!({"id": "n2", "status": "cancelled"}),
                json!({"id": "n9", "title": "Note 9", "status": "confirmed", "updated": "2026-03-02T11:00:00Z"}),
            ],
        );
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        let written = recorder.totals().written;
        assert_eq!(
            (written.new, written.updated, written.deleted),
            (1, 1, 1),
            "{}",
            test.backend
        );
        let dump = test.store.dump(PLATFORM).await.unwrap();
        assert_eq!(
            titles(&dump),
            [
                ("n0".into(), "Note 0".into(), false),
                ("n1".into(), "Note 1, edited".into(), false),
                // Deleted at the provider: kept, marked.
                ("n2".into(), "Note 2".into(), true),
                ("n9".into(), "Note 9".into(), false),
            ],
            "{}",
            test.backend
        );

        // The next run sends the token the changes came with.
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let third = requests(&provider);
        assert_eq!(
            third
                .last()
                .and_then(|query| query.get("syncToken"))
                .map(String::as_str),
            Some("t1")
        );
    }
}

#[tokio::test]
async fn an_expired_sync_token_starts_a_full_pass_without_losing_records() {
    for test in test_stores("expired").await {
        let (provider, server) = provider((0..3).map(|index| note(index, T0)).collect()).await;
        let spec = sync_token_spec();
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        requests(&provider);

        provider.lock().unwrap().expired.insert("t0".into());
        provider.lock().unwrap().generation = 7;
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        let sent: Vec<Option<String>> = requests(&provider)
            .iter()
            .map(|query| query.get("syncToken").cloned())
            .collect();
        assert_eq!(
            sent,
            [Some("t0".into()), None, None],
            "{}: 410, then a full pass",
            test.backend
        );
        let written = recorder.totals().written;
        assert_eq!(
            (
                written.new,
                written.updated,
                written.unchanged,
                written.deleted
            ),
            (0, 0, 3, 0)
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 3);

        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let next = requests(&provider);
        assert_eq!(
            next[0].get("syncToken").map(String::as_str),
            Some("t7"),
            "the new token is kept"
        );
    }
}

#[tokio::test]
async fn the_cursor_is_sent_minus_lookback_and_advances_only_when_a_pass_completes() {
    for test in test_stores("cursor").await {
        let (provider, server) = provider(vec![
            note(0, "2026-03-01T10:00:00Z"),
            note(1, "2026-03-03T10:00:00Z"),
            note(2, "2026-03-02T10:00:00Z"),
        ])
        .await;
        let spec = cursor_spec();
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        assert!(
            requests(&provider)
                .iter()
                .all(|query| !query.contains_key("updated_min"))
        );

        // A newer note, then a pass that fails on its second page: the cursor must not move.
        provider.lock().unwrap().notes.extend([
            note(3, "2026-03-04T10:00:00Z"),
            note(4, "2026-03-05T10:00:00Z"),
            note(5, "2026-03-06T10:00:00Z"),
        ]);
        provider.lock().unwrap().fail_once.insert("2".into());
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        assert!(result.is_err(), "{}: the second page failed", test.backend);
        let failed = requests(&provider);
        assert_eq!(
            failed[0].get("updated_min").map(String::as_str),
            Some("2026-03-03T09:00:00Z"),
            "{}: the newest value, an hour back",
            test.backend
        );

        // The next run resumes at the failed page with the same cursor, then advances it.
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let resumed = requests(&provider);
        assert_eq!(
            resumed[0].get("pageToken").map(String::as_str),
            Some("2"),
            "{}",
            test.backend
        );
        assert_eq!(
            resumed[0].get("updated_min").map(String::as_str),
            Some("2026-03-03T09:00:00Z")
        );
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let after = requests(&provider);
        assert_eq!(
            after[0].get("updated_min").map(String::as_str),
            Some("2026-03-06T09:00:00Z")
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 6);
    }
}

/// The (calendar, sync token sent) of each events request.
type TokenLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Google Calendar's shape: each calendar's events keep their own sync token (a checkpoint per
/// partition), and the next run sends each calendar its own.
#[tokio::test]
async fn each_substream_partition_keeps_its_own_sync_token() {
    async fn events(
        axum::extract::Path(calendar): axum::extract::Path<String>,
        Query(query): Query<HashMap<String, String>>,
        State(log): State<TokenLog>,
    ) -> Response {
        log.lock()
            .unwrap()
            .push((calendar.clone(), query.get("syncToken").cloned()));
        let items = if query.contains_key("syncToken") {
            vec![]
        } else {
            vec![
                json!({"id": format!("{calendar}-e1"), "summary": "Standup", "status": "confirmed"}),
            ]
        };
        Json(json!({"kind": "calendar#events", "items": items, "nextSyncToken": format!("token-of-{calendar}")}))
            .into_response()
    }
    for test in test_stores("partitions").await {
        let log = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route(
                "/users/me/calendarList",
                get(|| async {
                    Json(json!({"kind": "calendar#calendarList", "items": [{"id": "work"}, {"id": "home"}], "nextSyncToken": "list"}))
                }),
            )
            .route("/calendars/{calendar}/events", get(events))
            .with_state(Arc::clone(&log));
        let server = serve(app).await;
        let spec = connector(
            "calendar",
            r#"  calendars:
    request: { path: /users/me/calendarList }
    records: $.items[*]
    id: $.id
  events:
    model: note
    parent: { stream: calendars, fields: { calendar_id: $.id }, concurrency: 1 }
    request: { path: "/calendars/{{ parent.calendar_id }}/events" }
    records: $.items[*]
    id: "{{ parent.calendar_id }}/{{ record.id }}"
    incremental: { kind: sync_token, token: $.nextSyncToken, param: syncToken }
    map:
      title: $.summary
"#,
        );
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            recorder.totals().written,
            WriteCounts::default(),
            "{}",
            test.backend
        );
        let second: Vec<(String, Option<String>)> = log.lock().unwrap()[2..].to_vec();
        assert_eq!(
            second,
            [
                ("work".into(), Some("token-of-work".into())),
                ("home".into(), Some("token-of-home".into())),
            ],
            "{}",
            test.backend
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 2);
    }
}

/// Dropbox's shape: `list_folder` then `list_folder/continue` pages by cursor; the last page's
/// cursor, kept, continues the listing on the next run and returns only changes (deleted entries
/// carry no id, so entries are keyed by `path_lower`); a 409 `reset` starts over.
#[tokio::test]
async fn a_kept_page_token_continues_the_listing_and_a_reset_starts_over() {
    #[derive(Default)]
    struct Dropbox {
        /// The changes the next continue of a kept cursor returns.
        changes: Vec<Value>,
        reset: bool,
        calls: Vec<String>,
    }
    fn entry(name: &str) -> Value {
        json!({".tag": "file", "name": name, "path_lower": format!("/{}", name.to_lowercase()),
               "path_display": format!("/{name}"), "id": format!("id:{name}"),
               "client_modified": "2024-05-12T15:50:38Z", "server_modified": "2024-05-12T15:50:38Z",
               "rev": "a1c10ce0dd78", "size": 7212, "is_downloadable": true,
               "content_hash": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
    }
    type Shared = Arc<Mutex<Dropbox>>;
    async fn list_folder(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
        state
            .lock()
            .unwrap()
            .calls
            .push(format!("list_folder {}", body["path"]));
        Json(json!({"entries": [entry("A.txt"), entry("B.txt")], "cursor": "page-2", "has_more": true})).into_response()
    }
    async fn list_continue(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
        let mut state = state.lock().unwrap();
        let cursor = body["cursor"].as_str().unwrap_or_default().to_owned();
        state.calls.push(format!("continue {cursor}"));
        match cursor.as_str() {
            "page-2" => {
                Json(json!({"entries": [entry("C.txt")], "cursor": "kept-1", "has_more": false}))
                    .into_response()
            }
            _ if state.reset => (
                StatusCode::CONFLICT,
                Json(json!({"error_summary": "reset/..", "error": {".tag": "reset"}})),
            )
                .into_response(),
            _ => {
                let entries = std::mem::take(&mut state.changes);
                Json(json!({"entries": entries, "cursor": "kept-2", "has_more": false}))
                    .into_response()
            }
        }
    }
    for test in test_stores("page_token").await {
        let shared: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/2/files/list_folder", post(list_folder))
            .route("/2/files/list_folder/continue", post(list_continue))
            .with_state(Arc::clone(&shared));
        let server = serve(app).await;
        let spec = connector(
            "storage",
            r#"  files:
    model: document
    request:
      method: POST
      path: /2/files/list_folder
      body: { json: { path: "", recursive: true } }
    paginate:
      kind: cursor
      token: $.cursor
      param: cursor
      location: body
      stop_when: not response.has_more
      next_request:
        method: POST
        path: /2/files/list_folder/continue
        body: { json: { cursor: "{{ page.token }}" } }
    records: $.entries[*]
    id: $.path_lower
    incremental: { kind: page_token, token: $.cursor, reset_on: [409] }
    deleted: record['.tag'] == 'deleted'
    map:
      title: $.name
      path: $.path_display
"#,
        );
        run(&spec, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        assert_eq!(
            std::mem::take(&mut shared.lock().unwrap().calls),
            ["list_folder \"\"", "continue page-2"],
            "{}",
            test.backend
        );
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 3);

        // The next run continues from the kept cursor: one request, only the changes.
        shared.lock().unwrap().changes = vec![
            json!({".tag": "deleted", "name": "B.txt", "path_lower": "/b.txt", "path_display": "/B.txt"}),
            entry("D.txt"),
        ];
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            std::mem::take(&mut shared.lock().unwrap().calls),
            ["continue kept-1"],
            "{}",
            test.backend
        );
        let written = recorder.totals().written;
        assert_eq!((written.new, written.deleted), (1, 1), "{}", test.backend);

        // The cursor is reset at Dropbox: a full listing, nothing lost.
        shared.lock().unwrap().reset = true;
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            std::mem::take(&mut shared.lock().unwrap().calls),
            ["continue kept-2", "list_folder \"\"", "continue page-2"],
            "{}",
            test.backend
        );
        let written = recorder.totals().written;
        assert_eq!(
            (written.new, written.updated, written.deleted),
            (0, 1, 1),
            "{}",
            test.backend
        );
        let live: Vec<String> = test
            .store
            .dump(PLATFORM)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, _, _, deleted)| !deleted)
            .map(|(_, id, _, _)| id)
            .collect();
        // The full listing after the reset is complete: B is back (the fake still lists it), and
        // D, which it no longer lists, is marked deleted.
        assert_eq!(live, ["/a.txt", "/b.txt", "/c.txt"], "{}", test.backend);
    }
}

/// Microsoft Graph's delta queries: next-URL paging whose last page carries a `@odata.deltaLink`;
/// kept (`incremental: page_token`), the next run calls that URL and receives only changes,
/// removals included.
#[tokio::test]
async fn a_kept_delta_link_is_called_on_the_next_run() {
    let calls = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/items",
        get(move |Query(query): Query<HashMap<String, String>>| {
            let log = Arc::clone(&log);
            async move {
                let base = "https://api.example.com/items";
                let call = query.keys().next().cloned().unwrap_or_default();
                log.lock().unwrap().push(call.clone());
                Json(match call.as_str() {
                    "$skiptoken" => json!({"value": notes(2..3), "@odata.deltaLink": format!("{base}?$deltatoken=d1")}),
                    "$deltatoken" => json!({"value": [{"id": "n0", "@removed": {"reason": "deleted"}}, {"id": "n7", "title": "Note 7"}], "@odata.deltaLink": format!("{base}?$deltatoken=d2")}),
                    _ => json!({"value": notes(0..2), "@odata.nextLink": format!("{base}?$skiptoken=s1")}),
                })
            }
        }),
    );
    let server = serve(app).await;
    let spec = spec_from(&spec_yaml(
        "    request: { path: /items }\n    paginate: { kind: next_url, from: { body: \"$['@odata.nextLink']\" } }\n    records: $.value[*]\n    incremental: { kind: page_token, token: \"$['@odata.deltaLink']\" }\n    deleted: \"record['@removed'] is defined\"",
        "",
    ));
    let sink = MemorySink::default();
    run(&spec, &server, &sink, RunOptions::default())
        .await
        .0
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), ["", "$skiptoken"]);
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        ["", "$skiptoken", "$deltatoken"],
        "one call: the delta link"
    );
    let written = recorder.totals().written;
    assert_eq!((written.new, written.deleted), (1, 1));
    let contents = sink.contents();
    let deleted: Vec<&str> = contents.records["items"]
        .iter()
        .filter(|record| record.deleted)
        .map(|record| record.id.as_str())
        .collect();
    assert_eq!(deleted, ["n0"]);
}

/// Gmail's shape: `users.getProfile` names the mailbox's current history position,
/// `messages.list` lists ids (newest first), `messages.get` answers each (404 once the message is
/// deleted), and `history.list` reads the changes after a position (404 once the position is too
/// old). Messages are a substream of their ids, so the change log feeds the ids it names to the
/// same `messages.get`.
mod gmail_shaped {
    use std::collections::BTreeMap;

    use axum::extract::Path;

    use super::*;

    #[derive(Default)]
    pub struct Mailbox {
        /// Live messages: id → labels.
        pub messages: BTreeMap<String, Vec<&'static str>>,
        pub history_id: u64,
        /// The log: (history id, change kind, message id).
        pub history: Vec<(u64, &'static str, String)>,
        /// Positions older than this answer 404.
        pub oldest: u64,
        /// A message that arrives while the second page of ids is being listed.
        pub arrives_during_listing: Option<String>,
        /// The ids a listing began with.
        pub listed: Vec<String>,
        pub calls: Vec<String>,
    }

    pub type Shared = Arc<Mutex<Mailbox>>;

    impl Mailbox {
        pub fn change(&mut self, kind: &'static str, id: &str) {
            self.history_id += 1;
            self.history.push((self.history_id, kind, id.to_owned()));
        }
    }

    fn not_found() -> Response {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}})),
        )
            .into_response()
    }

    async fn profile(State(mailbox): State<Shared>) -> Response {
        let mut mailbox = mailbox.lock().unwrap();
        mailbox.calls.push("profile".to_owned());
        Json(json!({
            "emailAddress": "ana@example.com",
            "messagesTotal": mailbox.messages.len(),
            "threadsTotal": mailbox.messages.len(),
            "historyId": mailbox.history_id.to_string(),
        }))
        .into_response()
    }

    async fn list(
        State(mailbox): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        let mut mailbox = mailbox.lock().unwrap();
        if query.contains_key("pageToken") {
            mailbox.calls.push("list p2".to_owned());
            if let Some(id) = mailbox.arrives_during_listing.take() {
                mailbox.messages.insert(id.clone(), vec!["UNREAD", "INBOX"]);
                mailbox.change("messagesAdded", &id);
            }
            let rest: Vec<Value> = mailbox.listed[2..]
                .iter()
                .map(|id| json!({"id": id, "threadId": id}))
                .collect();
            return Json(json!({"messages": rest, "resultSizeEstimate": mailbox.listed.len()}))
                .into_response();
        }
        mailbox.calls.push("list".to_owned());
        mailbox.listed = mailbox.messages.keys().cloned().collect();
        let first: Vec<Value> = mailbox.listed[..2]
            .iter()
            .map(|id| json!({"id": id, "threadId": id}))
            .collect();
        Json(json!({"messages": first, "nextPageToken": "09876543210987654321", "resultSizeEstimate": mailbox.listed.len()}))
            .into_response()
    }

    async fn get_message(State(mailbox): State<Shared>, Path(id): Path<String>) -> Response {
        let mut mailbox = mailbox.lock().unwrap();
        mailbox.calls.push(format!("get {id}"));
        let Some(labels) = mailbox.messages.get(&id) else {
            return not_found();
        };
        Json(json!({
            "id": id, "threadId": id, "labelIds": labels,
            "snippet": format!("Message {id}"), "sizeEstimate": 2048,
            "historyId": mailbox.history_id.to_string(), "internalDate": "1716282061000",
            "payload": {"partId": "", "mimeType": "text/plain", "filename": "",
                        "headers": [{"name": "Subject", "value": format!("About {id}")}],
                        "body": {"size": 12}},
        }))
        .into_response()
    }

    /// Three history records per page; `pageToken` is the index of the next one.
    async fn history(
        State(mailbox): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        let mut mailbox = mailbox.lock().unwrap();
        let start: u64 = query["startHistoryId"].parse().unwrap();
        let skip: usize = query
            .get("pageToken")
            .map_or(0, |token| token.parse().unwrap());
        mailbox.calls.push(match skip {
            0 => format!("history {start}"),
            _ => format!("history {start} p{}", skip / 3 + 1),
        });
        if start < mailbox.oldest {
            return not_found();
        }
        let after: Vec<Value> = mailbox
            .history
            .iter()
            .filter(|(id, _, _)| *id > start)
            .map(|(id, kind, message)| {
                let stub = json!({"id": message, "threadId": message, "labelIds": ["INBOX"]});
                let change = match *kind {
                    "labelsRemoved" => json!({"message": stub, "labelIds": ["UNREAD"]}),
                    "labelsAdded" => json!({"message": stub, "labelIds": ["STARRED"]}),
                    _ => json!({"message": stub}),
                };
                json!({"id": id.to_string(), "messages": [{"id": message, "threadId": message}], *kind: [change]})
            })
            .collect();
        let page: Vec<Value> = after.iter().skip(skip).take(3).cloned().collect();
        let mut body = json!({"historyId": mailbox.history_id.to_string()});
        // An empty log has no `history` key at all.
        if !page.is_empty() {
            body["history"] = Value::Array(page);
        }
        if skip + 3 < after.len() {
            body["nextPageToken"] = json!((skip + 3).to_string());
        }
        Json(body).into_response()
    }

    pub fn router(mailbox: Shared) -> axum::Router {
        axum::Router::new()
            .route("/gmail/v1/users/me/profile", get(profile))
            .route("/gmail/v1/users/me/messages", get(list))
            .route("/gmail/v1/users/me/messages/{id}", get(get_message))
            .route("/gmail/v1/users/me/history", get(history))
            .with_state(mailbox)
    }

    pub const STREAMS: &str = r#"  message_ids:
    request: { path: /gmail/v1/users/me/messages }
    paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
    records: $.messages[*]
    id: $.id
    incremental:
      kind: change_log
      start: { path: /gmail/v1/users/me/profile }
      start_token: $.historyId
      request:
        path: /gmail/v1/users/me/history
        query: { startHistoryId: "{{ state.sync_token }}" }
      paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
      records: "$.history[*]['messagesAdded','labelsAdded','labelsRemoved','messagesDeleted'][*].message"
      token: $.historyId
      reset_on: [404]
  messages:
    model: email
    parent: { stream: message_ids, fields: { message_id: $.id }, concurrency: 1 }
    request: { path: "/gmail/v1/users/me/messages/{{ parent.message_id }}" }
    records: $
    id: $.id
    gone: { on: [404], id: "{{ parent.message_id }}" }
    map:
      sent_at: { from: $.internalDate, as: epoch_millis }
      subject: "$.payload.headers[?@.name == 'Subject'].value"
      labels: $.labelIds[*]
"#;
}

#[tokio::test]
async fn a_change_log_is_read_from_the_position_asked_before_the_full_pass() {
    use gmail_shaped::{Mailbox, Shared};
    for test in test_stores("change_log").await {
        let backend = test.backend;
        let shared: Shared = Arc::new(Mutex::new(Mailbox {
            messages: [
                ("m1", vec!["UNREAD", "INBOX"]),
                ("m2", vec!["INBOX"]),
                ("m3", vec!["SENT"]),
            ]
            .into_iter()
            .map(|(id, labels)| (id.to_owned(), labels))
            .collect(),
            history_id: 100,
            arrives_during_listing: Some("m4".to_owned()),
            ..Mailbox::default()
        }));
        let server = serve(gmail_shaped::router(Arc::clone(&shared))).await;
        let spec = connector("email", gmail_shaped::STREAMS);
        let calls = || std::mem::take(&mut shared.lock().unwrap().calls);
        let live = |dump: Vec<(String, String, Value, bool)>| -> Vec<String> {
            dump.into_iter()
                .filter(|(_, _, _, deleted)| !deleted)
                .map(|(_, id, _, _)| id)
                .collect()
        };

        // The first run asks for the position, then lists everything. m4 arrives while the
        // listing is under way, after its page was served: the listing misses it.
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            ["profile", "list", "get m1", "get m2", "list p2", "get m3"],
            "{backend}"
        );
        assert_eq!(
            live(test.store.dump(PLATFORM).await.unwrap()),
            ["m1", "m2", "m3"],
            "{backend}"
        );

        // The next run reads the log from the position asked before the listing, so m4 is
        // there; m1 was read and starred (two changes on one page, one fetch) and m2 deleted
        // since.
        {
            let mut mailbox = shared.lock().unwrap();
            mailbox
                .messages
                .insert("m1".to_owned(), vec!["INBOX", "STARRED"]);
            mailbox.change("labelsRemoved", "m1");
            mailbox.change("labelsAdded", "m1");
            mailbox.messages.remove("m2");
            mailbox.change("messagesDeleted", "m2");
        }
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            [
                "history 100",
                "get m4",
                "get m1",
                "history 100 p2",
                "get m2"
            ],
            "{backend}: the log only, and each message it names"
        );
        let written = recorder.totals().written;
        assert_eq!(
            (written.new, written.updated, written.deleted),
            (1, 1, 1),
            "{backend}: m4 new, m1 changed, m2 gone"
        );
        let dump = test.store.dump(PLATFORM).await.unwrap();
        let m1 = dump.iter().find(|(_, id, _, _)| id == "m1").unwrap();
        assert_eq!(m1.2["labels"], json!(["INBOX", "STARRED"]), "{backend}");
        let m2 = dump.iter().find(|(_, id, _, _)| id == "m2").unwrap();
        assert!(m2.3, "{backend}: m2 is marked deleted");
        assert_eq!(m2.2["subject"], "About m2", "{backend}: and keeps its data");
        assert_eq!(live(dump), ["m1", "m3", "m4"], "{backend}");

        // Nothing changed: one request, nothing written (not even the checkpoint).
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(calls(), ["history 104"], "{backend}");
        assert_eq!(
            recorder.totals().written,
            WriteCounts::default(),
            "{backend}"
        );

        // The kept position expired: a full pass from a new position, nothing lost.
        {
            let mut mailbox = shared.lock().unwrap();
            mailbox.history_id = 200;
            mailbox.oldest = 200;
        }
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            [
                "history 104",
                "profile",
                "list",
                "get m1",
                "get m3",
                "list p2",
                "get m4"
            ],
            "{backend}"
        );
        let written = recorder.totals().written;
        assert_eq!(
            (written.new, written.updated, written.unchanged),
            (0, 0, 3),
            "{backend}"
        );
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            ["history 200"],
            "{backend}: reads from the new position"
        );
    }
}

/// Drive's shape: `changes.getStartPageToken` names the change log's position, `files.list`
/// lists files, and `changes.list` reads the log from a page token: changed files inside
/// `file`, removed ones by `fileId` alone, and `newStartPageToken` on the last page.
#[tokio::test]
async fn a_change_log_marks_deleted_ids_and_a_resumed_full_pass_keeps_its_position() {
    #[derive(Default)]
    struct Drive {
        /// id → name.
        files: std::collections::BTreeMap<String, String>,
        /// The log: (position after the change, file id, removed).
        log: Vec<(u64, String, bool)>,
        position: u64,
        /// Fail the second page of the listing once (with a 400), after renaming `f1`.
        fail_page_2: bool,
        calls: Vec<String>,
    }
    type Shared = Arc<Mutex<Drive>>;
    fn file(id: &str, name: &str) -> Value {
        json!({"kind": "drive#file", "id": id, "name": name, "mimeType": "text/plain", "size": "512"})
    }
    async fn start(State(drive): State<Shared>) -> Response {
        let mut drive = drive.lock().unwrap();
        drive.calls.push("start".to_owned());
        Json(json!({"kind": "drive#startPageToken", "startPageToken": drive.position.to_string()}))
            .into_response()
    }
    async fn files(
        State(drive): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        let mut drive = drive.lock().unwrap();
        let ids: Vec<String> = drive.files.keys().cloned().collect();
        let page = |ids: &[String], drive: &Drive| -> Vec<Value> {
            ids.iter().map(|id| file(id, &drive.files[id])).collect()
        };
        if !query.contains_key("pageToken") {
            drive.calls.push("files".to_owned());
            return Json(json!({"kind": "drive#fileList", "incompleteSearch": false, "nextPageToken": "p2", "files": page(&ids[..2], &drive)})).into_response();
        }
        drive.calls.push("files p2".to_owned());
        if std::mem::take(&mut drive.fail_page_2) {
            drive
                .files
                .insert("f1".to_owned(), "renamed.txt".to_owned());
            drive.position += 1;
            let position = drive.position;
            drive.log.push((position, "f1".to_owned(), false));
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"code": 400, "message": "Invalid Value"}})),
            )
                .into_response();
        }
        Json(json!({"kind": "drive#fileList", "incompleteSearch": false, "files": page(&ids[2..], &drive)})).into_response()
    }
    /// One change per page: `pageToken` is the position the page starts after.
    async fn changes(
        State(drive): State<Shared>,
        axum::extract::RawQuery(query): axum::extract::RawQuery,
    ) -> Response {
        let mut drive = drive.lock().unwrap();
        let tokens: Vec<u64> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .filter(|(name, _)| name == "pageToken")
            .map(|(_, value)| value.parse().unwrap())
            .collect();
        let [from] = tokens[..] else {
            return (StatusCode::BAD_REQUEST, format!("pageToken {tokens:?}")).into_response();
        };
        drive.calls.push(format!("changes {from}"));
        let after: Vec<&(u64, String, bool)> = drive
            .log
            .iter()
            .filter(|(position, _, _)| *position > from)
            .collect();
        let changes: Vec<Value> = after
            .iter()
            .take(1)
            .map(|(_, id, removed)| match (removed, drive.files.get(id)) {
                (false, Some(name)) => json!({"kind": "drive#change", "changeType": "file", "time": "2026-11-20T10:00:00.000Z", "removed": false, "fileId": id, "file": file(id, name)}),
                _ => json!({"kind": "drive#change", "changeType": "file", "time": "2026-11-20T10:00:00.000Z", "removed": true, "fileId": id}),
            })
            .collect();
        let mut body = json!({"kind": "drive#changeList", "changes": changes});
        match after.get(1) {
            Some(_) => body["nextPageToken"] = json!(after[0].0.to_string()),
            None => body["newStartPageToken"] = json!(drive.position.to_string()),
        }
        Json(body).into_response()
    }
    for test in test_stores("change_log_deleted_ids").await {
        let backend = test.backend;
        let shared: Shared = Arc::new(Mutex::new(Drive {
            files: [("f1", "a.txt"), ("f2", "b.txt"), ("f3", "c.txt")]
                .into_iter()
                .map(|(id, name)| (id.to_owned(), name.to_owned()))
                .collect(),
            fail_page_2: true,
            ..Drive::default()
        }));
        let app = axum::Router::new()
            .route("/drive/v3/changes/startPageToken", get(start))
            .route("/drive/v3/files", get(files))
            .route("/drive/v3/changes", get(changes))
            .with_state(Arc::clone(&shared));
        let server = serve(app).await;
        let spec = connector(
            "storage",
            r#"  files:
    model: document
    request: { path: /drive/v3/files }
    paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
    records: $.files[*]
    id: $.id
    deleted: record.trashed
    incremental:
      kind: change_log
      start: { path: /drive/v3/changes/startPageToken }
      start_token: $.startPageToken
      request: { path: /drive/v3/changes, query: { pageToken: "{{ state.sync_token }}" } }
      paginate: { kind: cursor, token: $.nextPageToken, param: pageToken }
      records: $.changes[?@.file].file
      deleted_ids: $.changes[?@.removed == true].fileId
      token: $.newStartPageToken
      reset_on: [400, 410]
    map:
      title: $.name
"#,
        );
        let calls = || std::mem::take(&mut shared.lock().unwrap().calls);

        // The first run stops at the second page; f1 was renamed while it listed.
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        assert!(result.is_err(), "{backend}");
        assert_eq!(calls(), ["start", "files", "files p2"], "{backend}");

        // The next run resumes the pass where it stopped, with the position asked when it began:
        // no new `start`, or the rename would be lost.
        let (result, _) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(calls(), ["files p2"], "{backend}");
        assert_eq!(test.store.count(PLATFORM).await.unwrap(), 3, "{backend}");

        // f2 is deleted; the log names it by id alone.
        {
            let mut drive = shared.lock().unwrap();
            drive.files.remove("f2");
            drive.position += 1;
            let position = drive.position;
            drive.log.push((position, "f2".to_owned(), true));
        }
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(
            calls(),
            ["changes 0", "changes 1"],
            "{backend}: the log's second page replaces the kept position with its own token"
        );
        let written = recorder.totals().written;
        assert_eq!((written.updated, written.deleted), (1, 1), "{backend}");
        let dump = test.store.dump(PLATFORM).await.unwrap();
        let titles: Vec<(&str, &str, bool)> = dump
            .iter()
            .map(|(_, id, data, deleted)| {
                (
                    id.as_str(),
                    data["title"].as_str().unwrap_or_default(),
                    *deleted,
                )
            })
            .collect();
        assert_eq!(
            titles,
            [
                ("f1", "renamed.txt", false),
                ("f2", "b.txt", true),
                ("f3", "c.txt", false)
            ],
            "{backend}"
        );

        // Nothing changed since: one request, nothing written.
        let (result, recorder) = run(&spec, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(calls(), ["changes 2"], "{backend}");
        assert_eq!(
            recorder.totals().written,
            WriteCounts::default(),
            "{backend}"
        );
    }
}

/// A cursor on the update time never hears of a deletion. With `reconcile`, a pass lists
/// everything again once `every` has passed, and what it does not see is marked deleted; before
/// then the stream stays incremental, and a reconciling pass that fails marks nothing (its
/// next run goes on with it).
#[tokio::test]
async fn reconcile_lists_everything_again_and_marks_what_is_gone() {
    for test in test_stores("reconcile").await {
        let notes = || {
            vec![
                note(0, "2026-03-01T10:00:00Z"),
                note(1, "2026-03-02T10:00:00Z"),
                note(2, "2026-03-03T10:00:00Z"),
                note(3, "2026-03-04T10:00:00Z"),
                note(4, "2026-03-05T10:00:00Z"),
            ]
        };
        let (provider, server) = provider(notes()).await;
        let incremental =
            "    incremental: { kind: cursor, field: $.updated, param: updated_min }\n";
        let weekly = spec(&format!("{incremental}    reconcile: {{ every: 7d }}\n"));
        let at_once = spec(&format!("{incremental}    reconcile: {{ every: 1ms }}\n"));
        run(&weekly, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        requests(&provider);

        // n1 is deleted at the provider: a cursor pass does not list it, and nothing changes.
        provider.lock().unwrap().notes.remove(1);
        let (result, recorder) = run(&weekly, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert!(
            requests(&provider)[0].contains_key("updated_min"),
            "{}: before a week, incremental",
            test.backend
        );
        assert_eq!(recorder.totals().written.deleted, 0, "{}", test.backend);

        // Due, and failing on its second page: nothing is marked.
        provider.lock().unwrap().fail_once.insert("2".into());
        let (result, recorder) = run(&at_once, &server, &test.store, RunOptions::default()).await;
        assert!(result.is_err(), "{}", test.backend);
        assert!(
            requests(&provider)
                .iter()
                .all(|query| !query.contains_key("updated_min")),
            "{}: a reconciling pass sends no cursor",
            test.backend
        );
        assert_eq!(recorder.totals().written.deleted, 0, "{}", test.backend);
        let dump = test.store.dump(PLATFORM).await.unwrap();
        assert!(
            dump.iter().all(|(_, _, _, deleted)| !deleted),
            "{}",
            test.backend
        );

        // The next run completes that pass: n1 is marked deleted, the rest kept.
        let (result, recorder) = run(&at_once, &server, &test.store, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(recorder.totals().written.deleted, 1, "{}", test.backend);
        let dump = test.store.dump(PLATFORM).await.unwrap();
        let deleted: Vec<&str> = dump
            .iter()
            .filter(|(_, _, _, deleted)| *deleted)
            .map(|(_, id, _, _)| id.as_str())
            .collect();
        assert_eq!(deleted, ["n1"], "{}", test.backend);
        assert!(
            requests(&provider)
                .iter()
                .all(|query| !query.contains_key("updated_min")),
            "{}: the reconciling pass went on without a cursor",
            test.backend
        );

        // Reconciled just now: the weekly stream is incremental again.
        run(&weekly, &server, &test.store, RunOptions::default())
            .await
            .0
            .unwrap();
        assert!(
            requests(&provider)[0].contains_key("updated_min"),
            "{}",
            test.backend
        );
    }
}
