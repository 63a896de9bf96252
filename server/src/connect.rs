//! Connecting an account, as its connector's [`ConnectMode`] says: the browser round trip
//! (authorize → provider → callback) of OAuth, the deployment's own client (OAuth 2.0 client
//! credentials), or config values. A new integration is due at once, so its initial
//! import starts by itself.

use std::collections::HashMap;

use crate::tables::PendingAuthorization;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use engine::credentials::oauth2::OAuthClient;
use engine::credentials::{self, ConnectError, ConnectMode, Pending};
use engine::spec::ConnectorSpec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::Entry;
use crate::error::ApiError;
use crate::identity::User;
use crate::state::{AppState, Service};

/// What the callback needs from the authorize step, sealed in the database.
///
/// Authorizations started by an earlier version are sealed in another shape: they do not open,
/// and the person is asked to connect again (they last minutes).
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// The engine's record of the authorization under way.
    pending: Pending,
    /// The account's name, when the person gave one.
    #[serde(default)]
    account: String,
    /// The root streams the person chose (empty: every stream).
    #[serde(default)]
    streams: Vec<String>,
}

/// The streams a person chose, from `a,b,c`: root streams of `spec` (400 otherwise).
fn stream_choice(spec: &ConnectorSpec, given: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(given) = given else {
        return Ok(vec![]);
    };
    let chosen: Vec<String> = given
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    spec.check_choice(&chosen)
        .map_err(|error| stream_choice_error(&chosen, error))?;
    Ok(chosen)
}

/// A choice of streams refused: none chosen is a malformed request (400); a name the connector
/// has no stream by is not found (404), as a connector the catalog does not have is.
pub(crate) fn stream_choice_error(chosen: &[String], error: String) -> ApiError {
    if chosen.is_empty() {
        ApiError::bad_request(error)
    } else {
        ApiError::not_found(error)
    }
}

/// The query of `GET /integrations/{connector}/authorize`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// Which of the user's accounts of the connector this is (`work`, an e-mail address):
    /// connecting a named account again renews it, a new name adds an integration. Default: the
    /// first account.
    #[serde(default)]
    #[param(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    account: Option<String>,
    /// The streams to import, comma-separated (see the connector's `streams`): only the scopes
    /// they need are asked for. Default: every stream.
    #[serde(default)]
    #[param(max_length = 1000, pattern = "^[a-z0-9_]+(,[a-z0-9_]+)*$")]
    streams: Option<String>,
}

/// The account name a user gave, checked: at most 200 characters, no control characters;
/// surrounding blanks dropped. Empty (or none) is the default account.
fn account_name(given: Option<&str>) -> Result<String, ApiError> {
    let name = given.unwrap_or_default().trim();
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "an account name is at most 200 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

fn entry<'a>(state: &'a Service, connector: &str) -> Result<&'a Entry, ApiError> {
    state.catalog.get(connector).ok_or_else(|| {
        ApiError::not_found(format!("no connector `{connector}` (see GET /connectors)"))
    })
}

/// The refusal of a connector that does not connect through the browser: 409, the request is
/// well formed but the connector connects another way.
fn not_through_the_browser(spec: &ConnectorSpec) -> ApiError {
    ApiError::conflict(format!(
        "{} uses `{}` authentication: connect it with POST /integrations{}",
        spec.name,
        spec.auth.kind_name(),
        match ConnectMode::of(&spec.auth) {
            ConnectMode::Config => " and its config values",
            _ => "",
        }
    ))
}

/// A failed connection step, for the person: refusals are theirs to retry (400), the
/// provider's failures are not (502).
fn connect_error(spec: &ConnectorSpec, error: ConnectError) -> ApiError {
    match error {
        ConnectError::NotThisWay { .. } => not_through_the_browser(spec),
        ConnectError::Refused(message) => {
            ApiError::bad_request(format!("{}: {message}", spec.name))
        }
        ConnectError::Provider(message) => ApiError::provider(format!("{}: {message}", spec.name)),
    }
}

/// The deployment's OAuth client for `spec`, and an HTTP client for its token requests.
fn token_side(
    state: &Service,
    entry: &Entry,
) -> Result<(OAuthClient, engine::http::HttpClient), ApiError> {
    let client = engine::account::oauth_client(&entry.spec, None, None, state.sandbox)
        .map_err(ApiError::conflict)?;
    let http =
        engine::account::token_http(&entry.spec, entry.transport()).map_err(ApiError::internal)?;
    Ok((client, http))
}

fn redirect_uri(state: &Service, connector: &str) -> String {
    let mut url = state.public_url.clone();
    url.set_path(&format!("/integrations/{connector}/callback"));
    url.to_string()
}

/// Start connecting an account: redirects the browser to the provider.
///
/// OAuth 2.0: state and PKCE, kept sealed in the database, so that any process can take the
/// callback; OAuth 1.0a: temporary credentials, kept sealed.
#[utoipa::path(
    get,
    path = "/integrations/{id}/authorize",
    tag = "connect",
    params(("id" = String, Path, description = "The connector id"), AuthorizeQuery),
    responses(
        (status = 303, description = "To the provider's authorization page",
            headers(("Location" = String, description = "The provider's authorization URL"))),
        (status = 400, description = "A bad account name, or the provider refused", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown credentials", body = crate::error::ErrorBody),
        (status = 404, description = "No such connector, or a chosen stream it does not have", body = crate::error::ErrorBody),
        (status = 409, description = "The connector connects another way (through the browser, or not), or the deployment has no OAuth client for it", body = crate::error::ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed", body = crate::error::ErrorBody)
    )
)]
pub async fn authorize(
    State(state): State<AppState>,
    User(user): User,
    Path(connector): Path<String>,
    Query(query): Query<AuthorizeQuery>,
) -> Result<Response, ApiError> {
    let entry = entry(&state, &connector)?;
    let spec = &entry.spec;
    let account = account_name(query.account.as_deref())?;
    if ConnectMode::of(&spec.auth) != ConnectMode::Browser {
        return Err(not_through_the_browser(spec));
    }
    let streams = stream_choice(spec, query.streams.as_deref())?;
    let (client, http) = token_side(&state, entry)?;
    // The provider is asked only for what the chosen streams need.
    let asking = spec.narrowed_to(&streams);
    let pending = credentials::start(&asking, &client, &http, &redirect_uri(&state, &connector))
        .await
        .map_err(|error| connect_error(spec, error))?;
    let url =
        url::Url::parse(pending.url()).map_err(|error| ApiError::internal(error.to_string()))?;
    let key = pending.key().to_owned();
    let sealed = serde_json::to_vec(&Sealed {
        pending,
        account,
        streams,
    })
    .map_err(|error| ApiError::internal(error.to_string()))?;
    state
        .tables
        .save_pending(
            &key,
            &PendingAuthorization {
                user_id: user,
                connector,
                sealed: state.cipher.encrypt(&sealed),
                created_at: engine::store::stamp(jiff::Timestamp::now()),
            },
        )
        .await?;
    let url = match &entry.sandbox {
        Some(sandbox) => sandbox.local_url(&url),
        None => url,
    };
    Ok(Redirect::to(url.as_str()).into_response())
}

/// The provider's redirect back: verifies the state, exchanges the code, stores the tokens
/// sealed, starts the initial import, redirects to the page.
///
/// The authorization must have been started by the same user, for the same connector, within
/// the last 15 minutes.
#[utoipa::path(
    get,
    path = "/integrations/{id}/callback",
    tag = "connect",
    params(
        ("id" = String, Path, description = "The connector id"),
        ("state" = Option<String>, Query, description = "OAuth 2.0: the state sent with the authorization request"),
        ("code" = Option<String>, Query, description = "OAuth 2.0: the authorization code"),
        ("error" = Option<String>, Query, description = "OAuth 2.0: the provider's refusal"),
        ("error_description" = Option<String>, Query, description = "OAuth 2.0: the provider's explanation of its refusal"),
        ("oauth_token" = Option<String>, Query, description = "OAuth 1.0a: the temporary credentials' token"),
        ("oauth_verifier" = Option<String>, Query, description = "OAuth 1.0a: the verifier")
    ),
    responses(
        (status = 303, description = "To the web page, showing the new integration",
            headers(("Location" = String, description = "`/#integration=<id>`"))),
        (status = 400, description = "An unknown or expired authorization, or the provider refused", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown credentials", body = crate::error::ErrorBody),
        (status = 404, description = "No such connector, or a chosen stream it does not have", body = crate::error::ErrorBody),
        (status = 409, description = "The connector connects another way (through the browser, or not), or the deployment has no OAuth client for it", body = crate::error::ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed (the token exchange)", body = crate::error::ErrorBody)
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    User(user): User,
    Path(connector): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let entry = entry(&state, &connector)?;
    let spec = &entry.spec;
    let stale = || {
        ApiError::bad_request(
            "unknown or expired authorization (the state parameter does not match one this service started); connect again",
        )
    };
    if ConnectMode::of(&spec.auth) != ConnectMode::Browser {
        return Err(not_through_the_browser(spec));
    }
    let key = credentials::callback_key(&spec.auth, &query).ok_or_else(stale)?;
    let pending = state
        .tables
        .take_pending(key, &user, &connector)
        .await?
        .ok_or_else(stale)?;
    let sealed: Sealed = state
        .cipher
        .decrypt(&pending.sealed)
        .ok()
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or_else(stale)?;
    let (client, http) = token_side(&state, entry)?;
    let granted = credentials::finish(spec, &client, &http, &sealed.pending, &query)
        .await
        .map_err(|error| connect_error(spec, error))?;
    let id = engine::account::connect(
        &state.store,
        &state.cipher,
        spec,
        &user,
        &sealed.account,
        granted,
        Some(sealed.streams).filter(|streams| !streams.is_empty()),
    )
    .await?;
    // Saved as due: the scheduler starts the import.
    state.wake.notify_one();
    Ok(Redirect::to(&format!("/#integration={id}")).into_response())
}

/// The body of `POST /integrations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIntegration {
    /// The connector id.
    #[schema(pattern = "^[a-z][a-z0-9_]*$", max_length = 64)]
    connector: String,
    /// Its config values (secret ones are sealed at rest).
    #[serde(default)]
    config: Map<String, Value>,
    /// Which of the user's accounts of the connector this is (see the authorize query's
    /// `account`). Default: the first account.
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    account: Option<String>,
    /// The streams to import (see the connector's `streams`). Default: every stream.
    #[serde(default)]
    #[schema(max_items = 100, min_items = 1)]
    streams: Option<Vec<String>>,
}

/// Connect a connector that needs no browser: from its config values (API keys, none), or
/// through the deployment's own OAuth 2.0 client (client credentials, no config values).
///
/// Its first import starts at once.
#[utoipa::path(
    post,
    path = "/integrations",
    tag = "integrations",
    operation_id = "create_integration",
    request_body = NewIntegration,
    responses(
        (status = 201, description = "Connected; the integration", body = crate::tables::IntegrationSummary),
        (status = 413, description = "The body is larger than the API reads (64 KiB)", body = crate::error::ErrorBody),
        (status = 400, description = "A malformed body, a bad account name, or config values refused", body = crate::error::ErrorBody),
        (status = 401, description = "No or unknown credentials", body = crate::error::ErrorBody),
        (status = 404, description = "No such connector, or a chosen stream it does not have", body = crate::error::ErrorBody),
        (status = 409, description = "The connector connects another way (through the browser, or not), or the deployment has no OAuth client for it", body = crate::error::ErrorBody),
        (status = 500, description = "The service failed (its database, most often)", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed (the client-credentials token request)", body = crate::error::ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    User(user): User,
    body: Result<Json<NewIntegration>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(crate::error::rejection)?;
    let entry = entry(&state, &body.connector)?;
    let account = account_name(body.account.as_deref())?;
    let spec = &entry.spec;
    let granted = match ConnectMode::of(&spec.auth) {
        ConnectMode::Browser => {
            return Err(ApiError::conflict(format!(
                "{} connects through the browser: send the user to GET /integrations/{}/authorize",
                spec.name, spec.id
            )));
        }
        ConnectMode::Client => {
            if !body.config.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "{} takes no config values: the deployment's client connects it",
                    spec.name
                )));
            }
            let (client, http) = token_side(&state, entry)?;
            credentials::connect_client(spec, &client, &http)
                .await
                .map_err(|error| connect_error(spec, error))?
        }
        ConnectMode::Config => {
            let mut values = body.config;
            if state.sandbox {
                for (name, value) in engine::sandbox::sandbox_config(spec) {
                    values.entry(name).or_insert(value);
                }
            }
            engine::account::granted_from_config(spec, values).map_err(ApiError::bad_request)?
        }
    };
    let streams = body
        .streams
        .map(|streams| {
            spec.check_choice(&streams)
                .map_err(|error| stream_choice_error(&streams, error))
                .map(|()| streams)
        })
        .transpose()?;
    let id = engine::account::connect(
        &state.store,
        &state.cipher,
        spec,
        &user,
        &account,
        granted,
        streams,
    )
    .await?;
    // Saved as due: the scheduler starts the import.
    state.wake.notify_one();
    let summary = state.tables.integration_summary(&id).await?;
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}
