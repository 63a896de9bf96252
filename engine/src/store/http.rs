//! A sink that posts pages to Hypernet's internal records API instead of writing a database
//! (the design's "save via internal APIs"). The protocol is in `docs/records-api.md`; the API
//! applies each batch (records, checkpoint, sweeps) in one transaction, as the store does.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Batch, RunScope, RunStatus, RunTotals, Sink, StoreError, StreamState};
use crate::events::WriteCounts;

/// Posts batches to a records API at `base` (for example `https://records.internal/v1`).
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    base: url::Url,
    token: Option<String>,
}

impl HttpSink {
    /// A sink for the API at `base`, authenticating with `token` (sent as a bearer token).
    pub fn new(client: reqwest::Client, base: url::Url, token: Option<String>) -> Self {
        Self {
            client,
            base,
            token,
        }
    }

    fn url(&self, segments: &[&str]) -> Result<url::Url, StoreError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| StoreError::Unsupported(self.base.to_string()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<reqwest::Response>, StoreError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|error| StoreError::Api {
            status: 0,
            body: error.to_string(),
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(StoreError::Api {
                status: status.as_u16(),
                body,
            });
        }
        Ok(Some(response))
    }

    async fn post<T: for<'de> serde::Deserialize<'de>>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T, StoreError> {
        let response = self
            .send(
                self.client
                    .post(self.url(segments)?)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(body).unwrap_or_default()),
            )
            .await?
            .ok_or_else(|| StoreError::Api {
                status: 404,
                body: format!("no such endpoint: {}", segments.join("/")),
            })?;
        let body = response.bytes().await.map_err(|error| StoreError::Api {
            status: 200,
            body: format!("the answer broke off: {error}"),
        })?;
        serde_json::from_slice(&body).map_err(|error| StoreError::Api {
            status: 200,
            body: format!("unreadable answer: {error}"),
        })
    }
}

fn scope_json(scope: &RunScope) -> Value {
    json!({
        "platform": &*scope.platform,
        "user_id": &*scope.user_id,
        "integration_id": &*scope.integration_id,
    })
}

impl HttpSink {
    async fn write_page(&self, batch: &Batch) -> Result<WriteCounts, StoreError> {
        let body = json!({
            "scope": scope_json(&batch.scope),
            "stream": &*batch.stream,
            "model": batch.model.map(|model| model.name()),
            "records": batch.records.iter().map(|record| json!({
                "id": record.id,
                "data": serde_json::from_str::<Value>(&record.json).unwrap_or_default(),
                "deleted": record.deleted,
            })).collect::<Vec<_>>(),
            "rejects": batch.rejects.iter().map(|reject| json!({
                "id": reject.id,
                "reason": reject.reason,
                "raw": reject.raw,
            })).collect::<Vec<_>>(),
            "seen_in_pass": batch.seen_in_pass,
            "checkpoint": batch.checkpoint.as_ref().map(|checkpoint| json!({
                "stream": &*checkpoint.stream,
                "partition": checkpoint.partition,
                "state": checkpoint.state,
            })),
            "sweeps": batch.sweeps.iter().map(|sweep| json!({
                "stream": &*sweep.stream,
                "pass": sweep.pass,
            })).collect::<Vec<_>>(),
        });
        self.post(&["batches"], &body).await
    }
}

impl Sink for HttpSink {
    async fn write_pages(&mut self, batches: &[Batch]) -> Result<WriteCounts, StoreError> {
        // One request per page: the API writes each page with its checkpoint atomically, and
        // pages go in order, so a failure never leaves a checkpoint ahead of its records.
        let mut counts = WriteCounts::default();
        for batch in batches {
            counts += self.write_page(batch).await?;
        }
        Ok(counts)
    }

    async fn checkpoint(
        &self,
        integration_id: &str,
        stream: &str,
        partition: &str,
    ) -> Result<Option<StreamState>, StoreError> {
        let mut url = self.url(&["checkpoints", integration_id, stream])?;
        url.query_pairs_mut().append_pair("partition", partition);
        let Some(response) = self.send(self.client.get(url)).await? else {
            return Ok(None);
        };
        let body = response.bytes().await.map_err(|error| StoreError::Api {
            status: 200,
            body: format!("the answer broke off: {error}"),
        })?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|error| StoreError::Corrupt {
                what: "checkpoint",
                reason: error.to_string(),
            })
    }

    async fn start_run(&self, scope: &RunScope) -> Result<i64, StoreError> {
        #[derive(serde::Deserialize)]
        struct Started {
            id: i64,
        }
        let started: Started = self.post(&["runs"], &scope_json(scope)).await?;
        Ok(started.id)
    }

    async fn finish_run(
        &self,
        run_id: i64,
        totals: &RunTotals,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let _: Value = self
            .post(
                &["runs", &run_id.to_string(), "finish"],
                &json!({ "totals": totals, "status": status, "error": error }),
            )
            .await?;
        Ok(())
    }
}
