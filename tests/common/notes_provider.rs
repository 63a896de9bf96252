//! The notes provider the storage tests sync from (Google-style paging, sync tokens or an
//! `updated_min` filter, failures set per test) and the spec that reads it.
// Each test file that includes this module uses only some of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hypernet_tests::{serve, spec_from};
use serde_json::{Value, json};

pub const PLATFORM: &str = "notes_api";

/// A provider of notes with Google-style paging (`pageToken`/`nextPageToken`, two per page) and,
/// depending on the spec, sync tokens (`syncToken`/`nextSyncToken`, 410 when expired) or an
/// `updated_min` filter.
#[derive(Default)]
pub struct Provider {
    pub notes: Vec<Value>,
    /// The changes a sync token returns.
    pub changes: HashMap<String, Vec<Value>>,
    pub expired: HashSet<String>,
    /// Page tokens that fail once with a 400.
    pub fail_once: HashSet<String>,
    pub generation: u32,
    pub requests: Vec<HashMap<String, String>>,
}

pub type Shared = Arc<Mutex<Provider>>;

async fn notes(
    State(provider): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut provider = provider.lock().unwrap();
    provider.requests.push(query.clone());
    if let Some(token) = query.get("pageToken")
        && provider.fail_once.remove(token)
    {
        return (StatusCode::BAD_REQUEST, "try again").into_response();
    }
    if let Some(token) = query.get("syncToken") {
        if provider.expired.contains(token) {
            return (StatusCode::GONE, Json(json!({"error": {"code": 410, "message": "Sync token is no longer valid, a full sync is required."}}))).into_response();
        }
        let items = provider.changes.remove(token).unwrap_or_default();
        if !items.is_empty() {
            provider.generation += 1;
        }
        let next = format!("t{}", provider.generation);
        return Json(json!({"items": items, "nextSyncToken": next})).into_response();
    }
    let listed: Vec<Value> = provider
        .notes
        .iter()
        .filter(|note| {
            query.get("updated_min").is_none_or(|min| {
                let min: jiff::Timestamp = min.parse().unwrap();
                let updated: jiff::Timestamp = note["updated"].as_str().unwrap().parse().unwrap();
                updated >= min
            })
        })
        .cloned()
        .collect();
    let start: usize = query
        .get("pageToken")
        .map_or(0, |token| token.parse().unwrap());
    let end = (start + 2).min(listed.len());
    let mut page = json!({"items": listed[start..end]});
    if end < listed.len() {
        page["nextPageToken"] = json!(end.to_string());
    } else {
        page["nextSyncToken"] = json!(format!("t{}", provider.generation));
    }
    Json(page).into_response()
}

pub async fn provider(notes_list: Vec<Value>) -> (Shared, url::Url) {
    let shared: Shared = Arc::new(Mutex::new(Provider {
        notes: notes_list,
        ..Provider::default()
    }));
    let app = axum::Router::new()
        .route("/notes", get(notes))
        .with_state(Arc::clone(&shared));
    (shared, serve(app).await)
}

pub fn note(index: usize, updated: &str) -> Value {
    json!({"id": format!("n{index}"), "title": format!("Note {index}"), "status": "confirmed", "updated": updated})
}

pub fn spec(extra: &str) -> Arc<engine::spec::ConnectorSpec> {
    spec_from(&format!(
        r#"id: {PLATFORM}
name: Notes API
version: 1.0.0
category: productivity
description: A notes provider for storage tests.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
retry:
  max_attempts: 2
  backoff: {{ initial: 1ms, max: 2ms }}
streams:
  notes:
    model: note
    request: {{ path: /notes }}
    paginate: {{ kind: cursor, token: $.nextPageToken, param: pageToken }}
    records: $.items[*]
    id: $.id
    deleted: record.status == 'cancelled'
    map:
      title: $.title
      updated_at: $.updated
{extra}"#
    ))
}

pub fn sync_token_spec() -> Arc<engine::spec::ConnectorSpec> {
    spec("    incremental: { kind: sync_token, token: $.nextSyncToken, param: syncToken }\n")
}

pub fn requests(provider: &Shared) -> Vec<HashMap<String, String>> {
    std::mem::take(&mut provider.lock().unwrap().requests)
}

pub const T0: &str = "2026-03-01T10:00:00Z";
