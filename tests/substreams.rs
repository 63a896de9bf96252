//! Substreams over real loopback HTTP: one request per parent record, a few at a time up to the
//! spec's `parent.concurrency`, and a stream that recurses into children down to its depth bound.

#[path = "common/test_api.rs"]
mod test_api;

use std::sync::Arc;

use axum::Json;
use axum::routing::get;
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use serde_json::{Value, json};
use test_api::{ids, spec_yaml};

/// The base spec with its `items` stream replaced by `streams` (YAML at the `streams:` level).
fn with_streams(streams: &str) -> String {
    spec_yaml("", "").replace(
        "  items:\n    model: note\n    id: $.id\n    map:\n      title: $.title\n",
        streams,
    )
}

#[tokio::test]
async fn substreams_run_once_per_parent_record() {
    let app = axum::Router::new()
        .route("/calendars", get(|| async { Json(json!({"items": [{"id": "work@x"}, {"id": "home"}]})) }))
        .route(
            "/calendars/{calendar}/events",
            get(|axum::extract::Path(calendar): axum::extract::Path<String>| async move {
                Json(json!({"items": [{"id": format!("{calendar}-e1"), "title": format!("Event in {calendar}")}]}))
            }),
        );
    let server = serve(app).await;
    let yaml = with_streams(
        r#"  calendars:
    request: { path: /calendars }
    records: $.items[*]
    id: $.id
  items:
    model: note
    parent: { stream: calendars, fields: { calendar_id: $.id } }
    request: { path: "/calendars/{{ parent.calendar_id | urlencode }}/events" }
    records: $.items[*]
    id: $.id
    map:
      title: $.title
      tags: "{{ parent.calendar_id }}"
"#,
    );
    let spec = spec_from(&yaml.replace(
        "      tags: \"{{ parent.calendar_id }}\"\n",
        "      content: \"{{ parent.calendar_id }}\"\n",
    ));
    let sink = MemorySink::default();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(ids(&sink), ["work@x-e1", "home-e1"]);
    assert_eq!(
        sink.contents().records["items"][0].data().unwrap()["content"],
        "work@x"
    );
    assert_eq!(recorder.totals().requests, 3);
    assert!(
        !sink.contents().records.contains_key("calendars"),
        "a stream without a model stores nothing"
    );
}

/// Parent records' substream requests run a few at a time: up to `parent.concurrency`, never
/// more.
#[tokio::test]
async fn substreams_run_concurrently_up_to_the_spec_limit() {
    for limit in [1_usize, 3] {
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counter, peak) = (Arc::clone(&in_flight), Arc::clone(&most));
        let app = axum::Router::new()
            .route(
                "/calendars",
                get(|| async {
                    let items: Vec<Value> = (0..8).map(|index| json!({"id": format!("c{index}")})).collect();
                    Json(json!({"items": items}))
                }),
            )
            .route(
                "/calendars/{calendar}/events",
                get(move |axum::extract::Path(calendar): axum::extract::Path<String>| {
                    let (counter, peak) = (Arc::clone(&counter), Arc::clone(&peak));
                    async move {
                        let now = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        // Long enough for the others to start if they are allowed to.
                        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                        counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        Json(json!({"items": [{"id": format!("{calendar}-e1"), "title": "Event"}]}))
                    }
                }),
            );
        let server = serve(app).await;
        let yaml = with_streams(&format!(
            r#"  calendars:
    request: {{ path: /calendars }}
    records: $.items[*]
    id: $.id
  items:
    model: note
    parent: {{ stream: calendars, fields: {{ calendar_id: $.id }}, concurrency: {limit} }}
    request: {{ path: "/calendars/{{{{ parent.calendar_id }}}}/events" }}
    records: $.items[*]
    id: $.id
    map:
      title: $.title
"#
        ));
        let sink = MemorySink::default();
        let (result, _) = run(&spec_from(&yaml), &server, &sink, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(ids(&sink).len(), 8);
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            limit,
            "at most {limit} at once"
        );
    }
}

/// Notion-shaped blocks: a page's blocks, and the children of blocks that have them, down to
/// `recurse.max_depth` levels below the first.
#[tokio::test]
async fn a_recursing_stream_follows_children_down_to_its_depth_bound() {
    // A chain: page → b1 → b1.1 → b1.1.1 → b1.1.1.1, and b2 without children.
    fn children(of: &str) -> Vec<Value> {
        let block = |id: &str, has_children: bool| {
            json!({"object": "block", "id": id, "has_children": has_children, "type": "paragraph",
                   "paragraph": {"rich_text": [{"type": "text", "plain_text": format!("Text of {id}")}]}})
        };
        match of {
            "page" => vec![block("b1", true), block("b2", false)],
            "b1" => vec![block("b1.1", true)],
            "b1.1" => vec![block("b1.1.1", true)],
            "b1.1.1" => vec![block("b1.1.1.1", false)],
            _ => vec![],
        }
    }
    let fetched = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&fetched);
    let app = axum::Router::new()
        .route("/pages", get(|| async { Json(json!({"object": "list", "results": [{"object": "page", "id": "page"}], "next_cursor": null, "has_more": false})) }))
        .route(
            "/blocks/{block}/children",
            get(move |axum::extract::Path(block): axum::extract::Path<String>| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().unwrap().push(block.clone());
                    Json(json!({"object": "list", "results": children(&block), "next_cursor": null, "has_more": false, "type": "block_list"}))
                }
            }),
        );
    let server = serve(app).await;
    let yaml = with_streams(
        r#"  pages:
    request: { path: /pages }
    records: $.results[*]
    id: $.id
  items:
    model: note
    parent: { stream: pages, fields: { block_id: $.id } }
    request: { path: "/blocks/{{ parent.block_id }}/children" }
    records: $.results[*]
    id: $.id
    recurse:
      fields: { block_id: $.id }
      when: record.has_children
      max_depth: 2
    map:
      title: $.paragraph.rich_text[0].plain_text
"#,
    );
    let sink = MemorySink::default();
    let (result, _) = run(&spec_from(&yaml), &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(
        ids(&sink),
        ["b1", "b2", "b1.1", "b1.1.1"],
        "two levels below the first, no deeper"
    );
    assert_eq!(
        *fetched.lock().unwrap(),
        ["page", "b1", "b1.1"],
        "b2 has no children: not fetched; b1.1.1 is past the bound"
    );
}
