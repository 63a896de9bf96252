//! The JSON API: the catalog, integrations, records, the audit log, health and metrics.

use std::sync::Arc;

use crate::tables::IntegrationSummary;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::response::{IntoResponse, Response};
use engine::events::Totals;
use engine::http::Transport;
use engine::models::ModelKind;
use engine::store::SyncRunRow;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::catalog::Entry;
use crate::error::{ApiError, rejection};
use crate::identity::{COOKIE_NAME, User, user_of_key};
use crate::state::{AppState, Service};

/// `GET /healthz`: the service is up and its database answers. Needs no credentials.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.tables.integration_summary("").await {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": error.to_string()})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>, _user: User) -> Response {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /connectors`: the catalog.
pub async fn connectors(State(state): State<AppState>, _user: User) -> Response {
    let listings: Vec<_> = state.catalog.iter().map(|entry| entry.listing()).collect();
    Json(json!({ "connectors": listings, "sandbox": state.sandbox })).into_response()
}

/// An integration as the API shows it.
#[derive(Debug, Serialize)]
pub struct IntegrationView {
    #[serde(flatten)]
    summary: IntegrationSummary,
    /// The provider's name.
    name: String,
    /// What the user can do when it needs attention.
    what_to_do: Option<String>,
    /// Its latest run.
    last_run: Option<SyncRunRow>,
    /// Counts so far, while a sync runs in the process that answers.
    progress: Option<Totals>,
}

async fn view(state: &Service, summary: IntegrationSummary) -> Result<IntegrationView, ApiError> {
    let last_run = state.store.runs(&summary.id).await?.into_iter().next();
    let name = state.catalog.get(&summary.connector).map_or_else(
        || summary.connector.clone(),
        |entry| entry.spec.name.clone(),
    );
    let what_to_do = if summary.status == "needs_reauth" {
        Some(format!(
            "connect {name} again (GET /integrations/{}/authorize); the records imported so far are kept",
            summary.connector
        ))
    } else if summary.failures > 0 {
        Some(format!(
            "the last {} sync(s) failed; it is retried with backoff (next at {}). See last_error.",
            summary.failures,
            summary.next_sync_at.as_deref().unwrap_or("the next poll")
        ))
    } else {
        None
    };
    let progress = state.progress_of(&summary.id);
    Ok(IntegrationView {
        summary,
        name,
        what_to_do,
        last_run,
        progress,
    })
}

/// The integration `id` if it is the user's; another user's is "not found", as if it did not
/// exist.
async fn owned(state: &Service, user: &str, id: &str) -> Result<IntegrationSummary, ApiError> {
    state
        .tables
        .integration_summary(id)
        .await?
        .filter(|summary| summary.user_id == user)
        .ok_or_else(|| ApiError::not_found(format!("no integration `{id}`")))
}

/// `GET /integrations`: the user's integrations.
pub async fn list(State(state): State<AppState>, User(user): User) -> Result<Response, ApiError> {
    let mut views = Vec::new();
    for summary in state.tables.integrations_of(&user).await? {
        views.push(view(&state, summary).await?);
    }
    Ok(Json(json!({ "integrations": views })).into_response())
}

/// `GET /integrations/{id}`.
pub async fn get(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let summary = owned(&state, &user, &id).await?;
    Ok(Json(view(&state, summary).await?).into_response())
}

/// `POST /integrations/{id}/sync`: due now.
pub async fn sync_now(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let summary = owned(&state, &user, &id).await?;
    if summary.status == "needs_reauth" {
        return Err(ApiError::conflict(format!(
            "{id} needs to be connected again before it can sync (GET /integrations/{}/authorize)",
            summary.connector
        )));
    }
    state.tables.schedule(&id, jiff::Timestamp::now()).await?;
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "integration": id, "scheduled": true, "running": summary.running })),
    )
        .into_response())
}

/// The body of `PATCH /integrations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// The time between its syncs (`30m`, `6h`, `1d`), overriding the connector's schedule;
    /// `null` returns to the connector's.
    sync_every: Option<String>,
}

/// `PATCH /integrations/{id}`: changes its sync interval.
pub async fn update(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    body: Result<Json<Changes>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(changes) = body.map_err(rejection)?;
    owned(&state, &user, &id).await?;
    let every = changes
        .sync_every
        .as_deref()
        .map(|text| {
            let every: engine::spec::Duration =
                text.parse().map_err(|error: engine::spec::DurationError| {
                    ApiError::bad_request(error.to_string())
                })?;
            let secs = every.get().as_secs();
            if secs < 60 {
                return Err(ApiError::bad_request("`sync_every` must be at least 1m"));
            }
            Ok(secs)
        })
        .transpose()?;
    state.tables.set_interval(&id, every).await?;
    let summary = owned(&state, &user, &id).await?;
    Ok(Json(view(&state, summary).await?).into_response())
}

/// The query of `DELETE /integrations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Also delete every record imported through it.
    #[serde(default)]
    delete_data: bool,
}

/// `DELETE /integrations/{id}`: revokes at the provider (where it can), deletes the tokens, and
/// with `?delete_data=true` every record imported through it. Imported records are otherwise
/// kept: they are the user's.
pub async fn delete(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    let summary = owned(&state, &user, &id).await?;
    let stored = state
        .store
        .integration(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no integration `{id}`")))?;
    let entry = state.catalog.get(&stored.connector);
    let client = match entry {
        Some(entry) => engine::account::oauth_client(&entry.spec, None, None, state.sandbox),
        None => Err(format!(
            "the connector `{}` is not installed",
            stored.connector
        )),
    };
    let disconnected = engine::account::disconnect(
        &state.store,
        &stored,
        entry.map(|entry| entry.spec.as_ref()),
        client,
        &state.cipher,
        entry.map_or(Transport::Direct, Entry::transport),
        query.delete_data,
    )
    .await?;
    if summary.running {
        // The sync (in this or another process) stops at its next lease renewal, at most a third
        // of a lease from now; it may still write a page or a checkpoint until then. Clean up
        // after it once a whole lease has passed.
        let (state, id, delete_data) = (Arc::clone(&state), id.clone(), query.delete_data);
        tokio::spawn(async move {
            tokio::time::sleep(state.config.lease + std::time::Duration::from_secs(1)).await;
            match state.store.purge_disconnected(&id, delete_data).await {
                Ok(late) => {
                    tracing::info!(integration = %id, late, "cleaned up after a disconnected sync")
                }
                Err(error) => {
                    tracing::error!(integration = %id, %error, "cannot clean up after a disconnected sync")
                }
            }
        });
    }
    Ok(Json(json!({
        "integration": id,
        "revoked": disconnected.revoked,
        "revocation_error": disconnected.revocation_error,
        "records_deleted": disconnected.records_deleted,
        "records_kept": !query.delete_data,
    }))
    .into_response())
}

/// The query of `GET /records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// Only records of this model (`media`, `email`, ...).
    model: Option<String>,
    /// Only records changed at or after this RFC 3339 time.
    since: Option<String>,
    /// Where the previous page ended (its `next_cursor`).
    cursor: Option<String>,
    /// Records per page, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// `GET /records`: the user's records, paged.
pub async fn records(
    State(state): State<AppState>,
    User(user): User,
    query: Result<Query<RecordsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    if let Some(model) = &query.model
        && !ModelKind::ALL.iter().any(|kind| kind.name() == model)
    {
        return Err(ApiError::bad_request(format!(
            "no model `{model}`; models: {}",
            ModelKind::ALL
                .iter()
                .map(|kind| kind.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let since = query
        .since
        .as_deref()
        .map(|text| {
            text.parse::<jiff::Timestamp>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`since` must be an RFC 3339 time such as 2026-01-31T00:00:00Z, not `{text}`"
                ))
            })
        })
        .transpose()?;
    if let Some(cursor) = &query.cursor
        && cursor.parse::<u64>().is_err()
    {
        return Err(ApiError::bad_request(format!(
            "`{cursor}` is not a cursor this service gave out; pass a page's `next_cursor`"
        )));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 500"));
    }
    let page = state
        .tables
        .records_page(
            &user,
            query.model.as_deref(),
            since,
            query.cursor.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(page).into_response())
}

/// The query of `GET /audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Lines, newest first, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// `GET /audit`: the user's audit log.
pub async fn audit(
    State(state): State<AppState>,
    User(user): User,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(rejection)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
    }
    let entries = state.store.audit_of_user(&user, limit).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

/// The body of `POST /session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// An API key.
    key: String,
}

/// `POST /session`: checks an API key and keeps it in an `HttpOnly` cookie, for the web page
/// (a browser cannot add an `Authorization` header to the OAuth redirects).
pub async fn start_session(
    State(state): State<AppState>,
    body: Result<Json<SessionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(rejection)?;
    let user = user_of_key(&state, &body.key)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the API key is not known"))?;
    let secure = if state.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000{secure}",
        body.key
    );
    Ok(([(SET_COOKIE, cookie)], Json(json!({ "user": user }))).into_response())
}

/// `DELETE /session`: forgets the cookie.
pub async fn end_session() -> Response {
    (
        [(
            SET_COOKIE,
            format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        )],
        StatusCode::NO_CONTENT,
    )
        .into_response()
}

/// `GET /me`: who the credentials belong to.
pub async fn me(User(user): User) -> Response {
    Json(json!({ "user": user })).into_response()
}

/// Anything else: a JSON 404.
pub async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint (see GET /openapi.json)")
}
