//! The HTTP sink: each page is posted with its checkpoint to a records API (a loopback stand-in
//! that applies it to a memory sink), and the next run reads its checkpoint back from the API.

#[path = "common/notes_provider.rs"]
mod notes_provider;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::models::ModelKind;
use engine::record::MappedRecord;
use engine::state::Checkpoint;
use engine::store::{Batch, HttpSink, MemorySink, RunScope, Sink};
use hypernet_tests::{RunOptions, run, serve};
use notes_provider::{T0, note, provider, requests, sync_token_spec};
use serde_json::{Value, json};

/// A records API that applies batches to a memory sink, as Hypernet's would to its database.
#[derive(Clone, Default)]
struct RecordsApi {
    sink: MemorySink,
    bodies: Arc<Mutex<Vec<Value>>>,
}

#[tokio::test]
async fn the_http_sink_posts_each_page_with_its_checkpoint_to_the_records_api() {
    async fn batches(
        State(api): State<RecordsApi>,
        headers: axum::http::HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        if headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            != Some("Bearer internal-token")
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        api.bodies.lock().unwrap().push(body.clone());
        let records: Vec<MappedRecord> = body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| {
                MappedRecord::from_data(
                    record["id"].as_str().unwrap().to_owned(),
                    record["data"].as_object().unwrap(),
                    record["deleted"].as_bool().unwrap(),
                )
            })
            .collect();
        let mut sink = api.sink.clone();
        let mut batch = Batch::records(
            Arc::new(RunScope {
                platform: Arc::from(body["scope"]["platform"].as_str().unwrap()),
                user_id: Arc::from(body["scope"]["user_id"].as_str().unwrap()),
                integration_id: Arc::from(body["scope"]["integration_id"].as_str().unwrap()),
                worker: None,
            }),
            Arc::from(body["stream"].as_str().unwrap()),
            ModelKind::Note,
            records,
            vec![],
        );
        batch.checkpoint = body["checkpoint"].as_object().map(|checkpoint| Checkpoint {
            stream: Arc::from(checkpoint["stream"].as_str().unwrap()),
            partition: checkpoint["partition"].as_str().unwrap().to_owned(),
            state: serde_json::from_value(checkpoint["state"].clone()).unwrap(),
        });
        Json(sink.write(&batch).await.unwrap()).into_response()
    }
    async fn checkpoint(
        State(api): State<RecordsApi>,
        axum::extract::Path((_integration, stream)): axum::extract::Path<(String, String)>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Response {
        match api
            .sink
            .checkpoint("", &stream, &query["partition"])
            .await
            .unwrap()
        {
            Some(state) => Json(state).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let api = RecordsApi::default();
    let records_api = serve(
        axum::Router::new()
            .route("/v1/batches", post(batches))
            .route("/v1/checkpoints/{integration}/{stream}", get(checkpoint))
            .route("/v1/runs", post(|| async { Json(json!({"id": 41})) }))
            .route("/v1/runs/{id}/finish", post(|| async { Json(json!({})) }))
            .with_state(api.clone()),
    )
    .await;
    // The sink is handed a client built here, before any of the engine's: TLS needs its
    // provider installed first (the engine's own clients do it themselves).
    engine::http::install_tls_provider();
    let sink = HttpSink::new(
        reqwest::Client::new(),
        records_api.join("v1").unwrap(),
        Some("internal-token".into()),
    );
    let (provider, server) = provider((0..3).map(|index| note(index, T0)).collect()).await;
    let spec = sync_token_spec();
    let (result, recorder) = run(&spec, &server, &sink, RunOptions::default()).await;
    result.unwrap();
    assert_eq!(recorder.totals().written.new, 3);
    let bodies = api.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one POST a page");
    assert_eq!(bodies[0]["scope"]["user_id"], "user-1");
    assert_eq!(bodies[0]["records"][0]["data"]["title"], "Note 0");
    assert_eq!(
        bodies[0]["checkpoint"]["state"]["resume"]["page"],
        json!({"at": "token", "value": "2"})
    );
    assert_eq!(
        bodies[1]["checkpoint"]["state"],
        json!({"sync_token": "t0"})
    );

    // The next run reads the checkpoint back from the API and sends the token.
    requests(&provider);
    run(&spec, &server, &sink, RunOptions::default())
        .await
        .0
        .unwrap();
    assert_eq!(
        requests(&provider)[0].get("syncToken").map(String::as_str),
        Some("t0")
    );
}
