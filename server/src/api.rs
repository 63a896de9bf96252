//! The JSON API: the catalog, integrations, records, the audit log, health and metrics.

use std::sync::Arc;

use crate::tables::{IntegrationSummary, RecordPage};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::response::{IntoResponse, Response};
use engine::events::Totals;
use engine::http::Transport;
use engine::models::ModelKind;
use engine::store::{AuditEntry, SyncRunRow};
use serde::{Deserialize, Serialize};

use crate::catalog::{Entry, Listing};
use crate::error::{ApiError, ErrorBody, rejection};
use crate::identity::{COOKIE_NAME, Operator, User, user_of_key};
use crate::state::{AppState, Service};

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the database does not answer.
    status: &'static str,
    /// Why the database does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Liveness and database reachability.
///
/// Needs no credentials.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    security(),
    responses(
        (status = 200, description = "Up, and the database answers", body = Health),
        (status = 503, description = "The database does not answer", body = Health)
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.tables.integration_summary("").await {
        Ok(_) => Json(Health {
            status: "ok",
            error: None,
        })
        .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                error: Some(error.to_string()),
            }),
        )
            .into_response(),
    }
}

/// Prometheus (OpenMetrics) text.
///
/// Syncs by outcome, running syncs, records, requests, retries, rate-limit waits, errors by
/// kind.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses(
        (status = 200, description = "The metrics, in the OpenMetrics text format", body = String, content_type = "application/openmetrics-text"),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "The user is not one of the service's operators", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
pub async fn metrics(State(state): State<AppState>, _operator: Operator) -> Response {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The answer of `GET /connectors`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorList {
    /// The connectors offered.
    connectors: Vec<Listing>,
    /// Whether the service runs in sandbox mode: every connector talks to a replay of its
    /// fixtures and a stand-in for its provider's OAuth.
    sandbox: bool,
}

/// The catalog: the connectors offered.
#[utoipa::path(
    get,
    path = "/connectors",
    tag = "connectors",
    responses(
        (status = 200, description = "The catalog", body = ConnectorList),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
pub async fn connectors(State(state): State<AppState>, _user: User) -> Response {
    let connectors = state.catalog.iter().map(|entry| entry.listing()).collect();
    Json(ConnectorList {
        connectors,
        sandbox: state.sandbox,
    })
    .into_response()
}

/// An integration as the API shows it (`Integration` in the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Integration)]
pub struct IntegrationView {
    /// Its stored summary.
    #[serde(flatten)]
    summary: IntegrationSummary,
    /// The provider's name.
    name: String,
    /// What the user can do when it needs attention.
    what_to_do: Option<String>,
    /// Its latest run.
    last_run: Option<SyncRunRow>,
    /// Counts so far, while a sync runs in the process that answers: records, pages, requests,
    /// retries, rate-limit waits, and what was written.
    #[schema(value_type = Option<Object>)]
    progress: Option<Totals>,
    /// A session of its running sync waiting for the person (Google Photos' Picker): the page
    /// they open to finish it.
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<crate::state::SessionWaiting>,
    /// Whether it syncs from the provider's API on a schedule (`false`: its connector only
    /// imports data exports, and `next_sync_at` is `null`).
    syncs: bool,
    /// Its latest data-export imports, newest first (`POST /integrations/{id}/imports`).
    imports: Vec<crate::imports::ImportView>,
}

async fn view(
    state: &Service,
    mut summary: IntegrationSummary,
) -> Result<IntegrationView, ApiError> {
    // The imports are read before the runs: an import books its end after its run's, so a
    // view that shows an import ended also shows that import's run (read the other way round,
    // an import that starts and ends between the two reads showed as ended with no run).
    let imports = crate::imports::views(state, &summary.id).await?;
    let last_run = state.store.runs(&summary.id).await?.into_iter().next();
    let entry = state.catalog.get(&summary.connector);
    let name = entry.map_or_else(
        || summary.connector.clone(),
        |entry| entry.spec.name.clone(),
    );
    let syncs = entry.is_none_or(Entry::syncs);
    if !syncs {
        // Never claimed by the scheduler: nothing is due.
        summary.next_sync_at = None;
    }
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
    let session = state
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&summary.id)
        .cloned();
    Ok(IntegrationView {
        summary,
        name,
        what_to_do,
        last_run,
        progress,
        session,
        syncs,
        imports,
    })
}

/// The integration `id` if it is the user's; another user's is "not found", as if it did not
/// exist.
pub(crate) async fn owned(
    state: &Service,
    user: &str,
    id: &str,
) -> Result<IntegrationSummary, ApiError> {
    state
        .tables
        .integration_summary(id)
        .await?
        .filter(|summary| summary.user_id == user)
        .ok_or_else(|| ApiError::not_found(format!("no integration `{id}`")))
}

/// The answer of `GET /integrations`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntegrationList {
    /// The user's integrations.
    integrations: Vec<IntegrationView>,
}

/// The user's integrations.
#[utoipa::path(
    get,
    path = "/integrations",
    tag = "integrations",
    operation_id = "list_integrations",
    responses(
        (status = 200, description = "The user's integrations", body = IntegrationList),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
pub async fn list(State(state): State<AppState>, User(user): User) -> Result<Response, ApiError> {
    let mut integrations = Vec::new();
    for summary in state.tables.integrations_of(&user).await? {
        integrations.push(view(&state, summary).await?);
    }
    Ok(Json(IntegrationList { integrations }).into_response())
}

/// One integration: status, last run and its counts, next run, last error and what to do, live
/// progress.
#[utoipa::path(
    get,
    path = "/integrations/{id}",
    tag = "integrations",
    operation_id = "get_integration",
    params(("id" = String, Path, description = "The integration id")),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 404, description = "No such integration of the user's", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let summary = owned(&state, &user, &id).await?;
    Ok(Json(view(&state, summary).await?).into_response())
}

/// The answer of `POST /integrations/{id}/sync`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncScheduled {
    /// The integration.
    integration: String,
    /// Always `true`: it is due now, and the scheduler has been woken.
    scheduled: bool,
    /// Whether a sync of it was already running (in any process).
    running: bool,
}

/// Sync now.
///
/// Makes the integration due at once and wakes the scheduler.
#[utoipa::path(
    post,
    path = "/integrations/{id}/sync",
    tag = "integrations",
    params(("id" = String, Path, description = "The integration id")),
    request_body(content = Option<SyncRequest>, description = "Optional: the streams to run instead of the chosen ones", content_type = "application/json"),
    responses(
        (status = 202, description = "Scheduled", body = SyncScheduled),
        (status = 400, description = "A body that is not a sync request, or a stream the connector does not sync", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 404, description = "No such integration of the user's", body = ErrorBody),
        (status = 409, description = "It needs to be connected again before it can sync, or its connector only imports data exports", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
pub async fn sync_now(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // No body, or `null`, is a plain "sync now".
    let request: Option<SyncRequest> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request(format!(
                "the body is not a sync request (`{{\"streams\": [...]}}`): {error}"
            ))
        })?
    };
    let summary = owned(&state, &user, &id).await?;
    let streams = request.map(|request| request.streams).unwrap_or_default();
    if let Some(entry) = state.catalog.get(&summary.connector) {
        for name in &streams {
            let known = entry.spec.root_streams().any(|root| root == name)
                && entry
                    .spec
                    .streams
                    .get(name)
                    .is_some_and(|stream| stream.archive.is_none());
            if !known {
                return Err(ApiError::bad_request(format!(
                    "{} has no stream `{name}` that syncs (GET /connectors lists its streams)",
                    entry.spec.name
                )));
            }
        }
    }
    if let Some(entry) = state.catalog.get(&summary.connector)
        && !entry.syncs()
    {
        return Err(ApiError::conflict(format!(
            "{} has nothing to sync: it imports the data exports it is sent (POST /integrations/{id}/imports)",
            entry.spec.name
        )));
    }
    if summary.status == "needs_reauth" {
        return Err(ApiError::conflict(format!(
            "{id} needs to be connected again before it can sync (GET /integrations/{}/authorize)",
            summary.connector
        )));
    }
    if !streams.is_empty() {
        state
            .requested
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone(), streams);
    }
    state.tables.schedule(&id, jiff::Timestamp::now()).await?;
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(SyncScheduled {
            integration: id,
            scheduled: true,
            running: summary.running,
        }),
    )
        .into_response())
}

/// The body of `POST /integrations/{id}/sync`, which may be left out.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The root streams this sync runs instead of the chosen ones: how a stream that waits
    /// for the person (a session, such as Google Photos' `picked_media`) is run. While it
    /// waits, the integration's `session.url` is the page to open.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub streams: Vec<String>,
}

/// The body of `PATCH /integrations/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// The time between its syncs (`30m`, `6h`, `1d`; from `1m` to `366d`), overriding the
    /// connector's schedule; `null` returns to the connector's. Left out: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,12}(ms|s|m|h|d)$", max_length = 16)]
    sync_every: Option<Option<String>>,
    /// The streams to import (the connector's `streams` without a parent); `null` imports every
    /// stream. Left out: unchanged. Applies from the next sync; streams left out keep what they
    /// imported.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 100)]
    streams: Option<Option<Vec<String>>>,
}

/// A field that is present, `null` or not: `Some(None)` for `null`, and (with `default`) `None`
/// when it is left out.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Change its sync interval, or the streams it imports.
///
/// `{"sync_every": "6h"}` (at least `1m`) gives it its own interval, or `null` returns it to
/// the connector's schedule. `{"streams": ["messages"]}` imports only those streams (the
/// person's choice of what to bring home), `null` every stream. Fields left out are unchanged;
/// changes apply from its next sync.
#[utoipa::path(
    patch,
    path = "/integrations/{id}",
    tag = "integrations",
    operation_id = "update_integration",
    params(("id" = String, Path, description = "The integration id")),
    request_body = Changes,
    responses(
        (status = 200, description = "The integration, changed", body = IntegrationView),
        (status = 413, description = "The body is larger than the API reads (64 KiB)", body = ErrorBody),
        (status = 400, description = "A malformed body, or an interval that is not a duration from 1m to 366d", body = ErrorBody),
        (status = 409, description = "Its connector is no longer offered", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 404, description = "No such integration of the user's, or a chosen stream its connector does not have", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
pub async fn update(
    State(state): State<AppState>,
    User(user): User,
    Path(id): Path<String>,
    body: Result<Json<Changes>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(changes) = body.map_err(rejection)?;
    let summary = owned(&state, &user, &id).await?;
    // Everything is checked before anything changes.
    if let Some(Some(chosen)) = &changes.streams {
        let entry = state
            .catalog
            .get(&summary.connector)
            .ok_or_else(|| ApiError::conflict("the connector is no longer offered"))?;
        entry
            .spec
            .check_choice(chosen)
            .map_err(|error| crate::connect::stream_choice_error(chosen, error))?;
    }
    let every = match &changes.sync_every {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) => {
            let every: engine::spec::Duration =
                text.parse().map_err(|error: engine::spec::DurationError| {
                    ApiError::bad_request(error.to_string())
                })?;
            if !(engine::spec::MIN_SYNC_INTERVAL..=engine::spec::MAX_SYNC_INTERVAL)
                .contains(&every.get())
            {
                return Err(ApiError::bad_request(
                    "`sync_every` must be at least 1m and at most 366d",
                ));
            }
            Some(Some(every.get().as_secs()))
        }
    };
    if let Some(streams) = &changes.streams {
        state.tables.set_streams(&id, streams.as_deref()).await?;
    }
    if let Some(every) = every {
        state.tables.set_interval(&id, every).await?;
    }
    let summary = owned(&state, &user, &id).await?;
    Ok(Json(view(&state, summary).await?).into_response())
}

/// The query of `DELETE /integrations/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Also delete every record imported through it.
    #[serde(default)]
    #[param(default = false)]
    delete_data: bool,
}

/// The answer of `DELETE /integrations/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Disconnection {
    /// The integration.
    integration: String,
    /// Whether the provider revoked the grant.
    revoked: bool,
    /// Why revoking failed, when it did (the tokens are deleted here all the same).
    revocation_error: Option<String>,
    /// Records deleted with it (none unless `delete_data=true`).
    records_deleted: u64,
    /// Blobs of their content deleted with them: those no other record of anyone refers to.
    blobs_deleted: u64,
    /// Whether its records were kept.
    records_kept: bool,
}

/// Disconnect: revoke at the provider where it can, delete the tokens.
///
/// With `delete_data=true`, also every record imported through it; imported records are
/// otherwise kept: they are the user's.
#[utoipa::path(
    delete,
    path = "/integrations/{id}",
    tag = "integrations",
    operation_id = "delete_integration",
    params(("id" = String, Path, description = "The integration id"), DeleteQuery),
    responses(
        (status = 200, description = "Disconnected", body = Disconnection),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 404, description = "No such integration of the user's", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
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
    // The uploads waiting for its imports go with it (the imports' rows go with its state).
    crate::imports::discard_uploads(&state, &id).await?;
    let disconnected = engine::account::disconnect(
        &state.store,
        &state.blobs,
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
    Ok(Json(Disconnection {
        integration: id,
        revoked: disconnected.revoked,
        revocation_error: disconnected.revocation_error,
        records_deleted: disconnected.records_deleted,
        blobs_deleted: disconnected.blobs_deleted,
        records_kept: !query.delete_data,
    })
    .into_response())
}

/// The query of `GET /records`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// Only records of this model (`media`, `email`, ...).
    #[param(schema_with = model_names)]
    model: Option<String>,
    /// Only records changed at or after this RFC 3339 time.
    #[param(format = DateTime)]
    since: Option<String>,
    /// Where the previous page ended (its `next_cursor`).
    #[param(pattern = "^[0-9]{1,19}$")]
    cursor: Option<String>,
    /// Records per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500, default = 100)]
    limit: Option<u32>,
}

/// The models' names, as the `model` parameter takes them.
fn model_names() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ModelKind::ALL.iter().map(|kind| kind.name())))
        .build()
}

/// The user's records, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/records",
    tag = "records",
    params(RecordsQuery),
    responses(
        (status = 200, description = "A page of records", body = RecordPage),
        (status = 400, description = "An unknown model, a malformed time or cursor, or a limit out of range", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
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
    // A cursor is the last row's number: one parse, here, so that any other text (or a number
    // past what a row number can be) is the caller's mistake, not a server error.
    let after = match &query.cursor {
        None => 0,
        Some(cursor) => cursor
            .parse::<i64>()
            .ok()
            .filter(|after| *after >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{cursor}` is not a cursor this service gave out; pass a page's `next_cursor`"
                ))
            })?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 500"));
    }
    let page = state
        .tables
        .records_page(&user, query.model.as_deref(), since, after, limit)
        .await?;
    Ok(Json(page).into_response())
}

/// The query of `GET /audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Lines, newest first, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
}

/// The answer of `GET /audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditLog {
    /// The lines, newest first.
    entries: Vec<AuditEntry>,
}

/// The user's audit log, newest first.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "records",
    params(AuditQuery),
    responses(
        (status = 200, description = "The latest lines", body = AuditLog),
        (status = 400, description = "A malformed query, or a limit out of range", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
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
    Ok(Json(AuditLog { entries }).into_response())
}

/// The body of `POST /session`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// An API key.
    #[schema(max_length = 200)]
    key: String,
}

/// Who the credentials belong to: the answer of `GET /me` and `POST /session`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The user's id.
    user: String,
}

/// Exchange an API key for an `HttpOnly` session cookie, for the web page.
///
/// A browser cannot add an `Authorization` header to the OAuth redirects; the cookie
/// (`SameSite=Lax`) goes with them.
#[utoipa::path(
    post,
    path = "/session",
    tag = "web",
    security(),
    request_body = SessionBody,
    responses(
        (status = 200, description = "The user; the cookie is set", body = Me,
            headers(("Set-Cookie" = String, description = "The session cookie, `HttpOnly`, `SameSite=Lax`, for 30 days"))),
        (status = 413, description = "The body is larger than the API reads (64 KiB)", body = ErrorBody),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 401, description = "The API key is not known", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
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
    Ok(([(SET_COOKIE, cookie)], Json(Me { user })).into_response())
}

/// Forget the session cookie.
#[utoipa::path(
    delete,
    path = "/session",
    tag = "web",
    security(),
    responses(
        (status = 204, description = "Done; the cookie is cleared",
            headers(("Set-Cookie" = String, description = "The session cookie, expired")))
    )
)]
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

/// Who the credentials belong to.
#[utoipa::path(
    get,
    path = "/me",
    tag = "service",
    responses(
        (status = 200, description = "The user", body = Me),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = ErrorBody)
    )
)]
pub async fn me(User(user): User) -> Response {
    Json(Me { user }).into_response()
}

/// Anything else: a JSON 404.
pub async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint (see GET /openapi.json)")
}
