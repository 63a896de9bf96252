//! Response bodies other than JSON, over real loopback HTTP: CSV, XML and JSON Lines each
//! decode into records.

#[path = "common/test_api.rs"]
mod test_api;

use axum::routing::get;
use engine::store::MemorySink;
use hypernet_tests::{RunOptions, run, serve, spec_from};
use test_api::{expected_ids, ids, spec_yaml};

#[tokio::test]
async fn csv_xml_and_json_lines_bodies() {
    let app = axum::Router::new()
        .route("/export.csv", get(|| async { "id,title\nn0,Note 0\nn1,\"Note 1, with comma\"\n" }))
        .route("/feed.xml", get(|| async { r#"<?xml version="1.0"?><feed><entry id="n0"><title>Note 0</title></entry><entry id="n1"><title>A &amp; B</title></entry></feed>"# }))
        .route("/items.jsonl", get(|| async { "{\"id\": \"n0\", \"title\": \"Note 0\"}\n{\"id\": \"n1\", \"title\": \"Note 1\"}\n" }));
    let server = serve(app).await;
    for (path, decode, records, id, second_title) in [
        ("/export.csv", "csv", "$[*]", "$.id", "Note 1, with comma"),
        ("/feed.xml", "xml", "$.feed.entry[*]", "$['@id']", "A & B"),
        ("/items.jsonl", "jsonl", "$[*]", "$.id", "Note 1"),
    ] {
        let stream = format!(
            "    request: {{ path: {path} }}\n    decode: {decode}\n    records: \"{records}\""
        );
        let spec = spec_from(
            &spec_yaml(&stream, "").replace("    id: $.id\n", &format!("    id: \"{id}\"\n")),
        );
        let sink = MemorySink::default();
        let (result, _) = run(&spec, &server, &sink, RunOptions::default()).await;
        result.unwrap();
        assert_eq!(ids(&sink), expected_ids(0..2), "{decode}");
        assert_eq!(
            sink.contents().records["items"][1].data().unwrap()["title"],
            second_title,
            "{decode}"
        );
    }
}
