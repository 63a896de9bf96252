//! The "Test API" spec the runtime tests splice their streams into, the notes it serves, and the
//! ids a run stored.
// Each test file that includes this module uses only some of it.
#![allow(dead_code)]

use std::sync::Arc;

use engine::store::MemorySink;
use hypernet_tests::spec_from;
use serde_json::{Value, json};

/// A spec with one `items` stream of notes; `stream` is spliced into the stream, `top` into the
/// connector.
pub fn spec_yaml(stream: &str, top: &str) -> String {
    format!(
        r#"id: test_api
name: Test API
version: 1.0.0
category: productivity
description: A test provider.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
retry:
  max_attempts: 3
  backoff: {{ initial: 1ms, max: 5ms }}
{top}
streams:
  items:
    model: note
    id: $.id
    map:
      title: $.title
{stream}
"#
    )
}

pub fn notes(range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|index| json!({"id": format!("n{index}"), "title": format!("Note {index}")}))
        .collect()
}

pub fn ids(sink: &MemorySink) -> Vec<String> {
    sink.contents()
        .records
        .get("items")
        .map(|records| records.iter().map(|record| record.id.clone()).collect())
        .unwrap_or_default()
}

pub fn expected_ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|index| format!("n{index}")).collect()
}

pub fn simple_spec() -> Arc<engine::spec::ConnectorSpec> {
    spec_from(&spec_yaml(
        "    request: { path: /items }\n    records: $.items[*]",
        "",
    ))
}
