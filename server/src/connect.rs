//! Connecting an account: the OAuth round trip (authorize → provider → callback), or config
//! values for connectors that need no browser. A new integration is due at once, so its initial
//! import starts by itself.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use engine::credentials::oauth2::{AuthorizationStart, TokenEndpoint, authorization_url};
use engine::events::Counters;
use engine::spec::{Auth, ConnectorSpec, OAuth2Auth};
use engine::store::{IntegrationStatus, PendingAuthorization, StoredIntegration};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::Entry;
use crate::error::ApiError;
use crate::identity::User;
use crate::state::{AppState, Service};

/// What the callback needs from the authorize step, sealed in the database.
#[derive(Serialize, Deserialize)]
struct Started {
    state: String,
    pkce_verifier: Option<String>,
    redirect_uri: String,
}

fn entry<'a>(state: &'a Service, connector: &str) -> Result<&'a Entry, ApiError> {
    state.catalog.get(connector).ok_or_else(|| {
        ApiError::not_found(format!("no connector `{connector}` (see GET /connectors)"))
    })
}

fn oauth2(spec: &ConnectorSpec) -> Result<&OAuth2Auth, ApiError> {
    match &spec.auth {
        Auth::OAuth2(oauth) => Ok(oauth),
        Auth::OAuth1(_) => Err(ApiError::bad_request(format!(
            "{} uses OAuth 1.0a, which the service cannot connect yet; connect it with `connector auth {}` against the same database",
            spec.name, spec.id
        ))),
        other => Err(ApiError::bad_request(format!(
            "{} uses `{}` authentication: connect it with POST /integrations and its config values",
            spec.name,
            other.kind_name()
        ))),
    }
}

fn redirect_uri(state: &Service, connector: &str) -> String {
    let mut url = state.public_url.clone();
    url.set_path(&format!("/integrations/{connector}/callback"));
    url.to_string()
}

/// `GET /integrations/{connector}/authorize`: sends the browser to the provider.
pub async fn authorize(
    State(state): State<AppState>,
    User(user): User,
    Path(connector): Path<String>,
) -> Result<Response, ApiError> {
    let entry = entry(&state, &connector)?;
    let oauth = oauth2(&entry.spec)?;
    let client = engine::account::oauth_client(&entry.spec, None, None, state.sandbox)
        .map_err(ApiError::conflict)?;
    let redirect = redirect_uri(&state, &connector);
    let start = authorization_url(oauth, &client, &redirect)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let sealed = serde_json::to_vec(&Started {
        state: start.state.clone(),
        pkce_verifier: start.pkce_verifier.clone(),
        redirect_uri: redirect,
    })
    .map_err(|error| ApiError::internal(error.to_string()))?;
    state
        .store
        .save_pending(
            &start.state,
            &PendingAuthorization {
                user_id: user,
                connector,
                sealed: state.cipher.encrypt(&sealed),
                created_at: engine::store::stamp(jiff::Timestamp::now()),
            },
        )
        .await?;
    let url = match &entry.sandbox {
        Some(sandbox) => sandbox.local_url(&start.url),
        None => start.url,
    };
    Ok(Redirect::to(url.as_str()).into_response())
}

/// `GET /integrations/{connector}/callback`: the provider sends the browser back here.
pub async fn callback(
    State(state): State<AppState>,
    User(user): User,
    Path(connector): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let entry = entry(&state, &connector)?;
    let oauth = oauth2(&entry.spec)?;
    let stale = || {
        ApiError::bad_request(
            "unknown or expired authorization (the state parameter does not match one this service started); connect again",
        )
    };
    let key = query.get("state").ok_or_else(stale)?;
    let pending = state.store.take_pending(key).await?.ok_or_else(stale)?;
    if pending.user_id != user || pending.connector != connector {
        return Err(stale());
    }
    let started: Started = state
        .cipher
        .decrypt(&pending.sealed)
        .ok()
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or_else(stale)?;
    let client = engine::account::oauth_client(&entry.spec, None, None, state.sandbox)
        .map_err(ApiError::conflict)?;
    let http =
        engine::account::token_http(&entry.spec, entry.transport()).map_err(ApiError::internal)?;
    let start = AuthorizationStart {
        url: url::Url::parse(&started.redirect_uri).map_err(|_| stale())?,
        state: started.state,
        pkce_verifier: started.pkce_verifier,
    };
    let authorized = TokenEndpoint::new(oauth, &client, &http, &Counters::default())
        .complete(&started.redirect_uri, &query, &start)
        .await
        .map_err(|error| match error {
            engine::credentials::oauth2::OAuthError::Denied(_)
            | engine::credentials::oauth2::OAuthError::MissingCode => {
                ApiError::bad_request(format!("{}: {error}", entry.spec.name))
            }
            _ => ApiError::provider(format!("{}: {error}", entry.spec.name)),
        })?;
    let tokens = serde_json::to_vec(&authorized.tokens)
        .map_err(|error| ApiError::internal(error.to_string()))?;
    let id = engine::account::integration_id(&connector, &user);
    state
        .store
        .save_integration(&StoredIntegration {
            id: id.clone(),
            user_id: user,
            connector,
            status: IntegrationStatus::Active,
            config: authorized.captured,
            sealed_tokens: Some(state.cipher.encrypt(&tokens)),
            scopes: authorized.tokens.scope.clone(),
            last_error: None,
        })
        .await?;
    // Saved as due: the scheduler starts the import.
    state.wake.notify_one();
    Ok(Redirect::to(&format!("/#integration={id}")).into_response())
}

/// The body of `POST /integrations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIntegration {
    /// The connector id.
    connector: String,
    /// Its config values (secret ones are sealed at rest).
    #[serde(default)]
    config: Map<String, Value>,
}

/// `POST /integrations`: connects a connector that needs no browser (API keys, none) from
/// config values.
pub async fn create(
    State(state): State<AppState>,
    User(user): User,
    body: Result<Json<NewIntegration>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(crate::error::rejection)?;
    let entry = entry(&state, &body.connector)?;
    let spec = &entry.spec;
    if matches!(spec.auth, Auth::OAuth2(_) | Auth::OAuth1(_)) {
        return Err(ApiError::bad_request(format!(
            "{} connects through OAuth: send the user to GET /integrations/{}/authorize",
            spec.name, spec.id
        )));
    }
    let mut values = body.config;
    if state.sandbox {
        for (name, value) in engine::sandbox::sandbox_config(spec) {
            values.entry(name).or_insert(value);
        }
    }
    if let Some(unknown) = values.keys().find(|name| !spec.config.contains_key(*name)) {
        return Err(ApiError::bad_request(format!(
            "{} has no config value `{unknown}`; it has: {}",
            spec.name,
            spec.config.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    engine::account::Integration::configure(spec, &user, "", &values)
        .map_err(|error| ApiError::bad_request(format!("config value {error}")))?;
    let (secrets, config): (Map<String, Value>, Map<String, Value>) = values
        .into_iter()
        .partition(|(name, _)| spec.config.get(name).is_some_and(|field| field.secret));
    let sealed =
        serde_json::to_vec(&secrets).map_err(|error| ApiError::internal(error.to_string()))?;
    let id = engine::account::integration_id(&spec.id, &user);
    state
        .store
        .save_integration(&StoredIntegration {
            id: id.clone(),
            user_id: user,
            connector: spec.id.clone(),
            status: IntegrationStatus::Active,
            config,
            sealed_tokens: Some(state.cipher.encrypt(&sealed)),
            scopes: None,
            last_error: None,
        })
        .await?;
    // Saved as due: the scheduler starts the import.
    state.wake.notify_one();
    let summary = state.store.integration_summary(&id).await?;
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}
