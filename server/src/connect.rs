//! Connecting an account: the OAuth 2.0 or OAuth 1.0a round trip (authorize → provider →
//! callback), or config values for connectors that need no browser. A new integration is due at once, so its initial
//! import starts by itself.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use engine::account::Connection;
use engine::credentials::oauth1::{Consumer, OAuth1Error, OAuth1Flow, OAuth1Token};
use engine::credentials::oauth2::{
    AuthorizationStart, OAuthError, TokenEndpoint, authorization_url,
};
use engine::events::Counters;
use engine::spec::{Auth, ConnectorSpec};
use engine::store::PendingAuthorization;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::Entry;
use crate::error::ApiError;
use crate::identity::User;
use crate::state::{AppState, Service};

/// What the callback needs from the authorize step, sealed in the database.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Started {
    /// OAuth 2.0: the state, the PKCE verifier and the redirect URI sent.
    OAuth2 {
        state: String,
        pkce_verifier: Option<String>,
        redirect_uri: String,
        /// The account's name, when the user gave one (absent in what earlier versions sealed).
        #[serde(default)]
        account: String,
    },
    /// OAuth 1.0a: the temporary credentials and where the user authorizes them.
    OAuth1 {
        request_token: OAuth1Token,
        authorize_url: String,
        #[serde(default)]
        account: String,
    },
}

/// The query of `GET /integrations/{connector}/authorize`.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeQuery {
    /// Which of the user's accounts of the connector this is (`work`, an e-mail address):
    /// connecting a named account again renews it, a new name adds an integration. Default: the
    /// first account.
    #[serde(default)]
    account: Option<String>,
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

/// The refusal of a connector that does not connect through the browser.
fn not_through_the_browser(spec: &ConnectorSpec) -> ApiError {
    ApiError::bad_request(format!(
        "{} uses `{}` authentication: connect it with POST /integrations and its config values",
        spec.name,
        spec.auth.kind_name()
    ))
}

/// The OAuth 1.0a consumer: the deployment's client for `spec`.
fn consumer(state: &Service, spec: &ConnectorSpec) -> Result<Consumer, ApiError> {
    let client = engine::account::oauth_client(spec, None, None, state.sandbox)
        .map_err(ApiError::conflict)?;
    Ok(Consumer {
        key: client.id,
        secret: client.secret.unwrap_or_default(),
    })
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
    Query(query): Query<AuthorizeQuery>,
) -> Result<Response, ApiError> {
    let entry = entry(&state, &connector)?;
    let account = account_name(query.account.as_deref())?;
    let redirect = redirect_uri(&state, &connector);
    let (key, started, url) = match &entry.spec.auth {
        Auth::OAuth1(auth) => {
            let consumer = consumer(&state, &entry.spec)?;
            let http = engine::account::token_http(&entry.spec, entry.transport())
                .map_err(ApiError::internal)?;
            let flow = OAuth1Flow {
                auth,
                consumer: &consumer,
                http: &http,
            };
            let started = flow
                .start(&redirect)
                .await
                .map_err(|error| ApiError::provider(format!("{}: {error}", entry.spec.name)))?;
            (
                started.request_token.token.clone(),
                Started::OAuth1 {
                    authorize_url: started.url.to_string(),
                    request_token: started.request_token,
                    account,
                },
                started.url,
            )
        }
        Auth::OAuth2(oauth) => {
            let client = engine::account::oauth_client(&entry.spec, None, None, state.sandbox)
                .map_err(ApiError::conflict)?;
            let start = authorization_url(oauth, &client, &redirect)
                .map_err(|error| ApiError::bad_request(error.to_string()))?;
            (
                start.state.clone(),
                Started::OAuth2 {
                    state: start.state,
                    pkce_verifier: start.pkce_verifier,
                    redirect_uri: redirect,
                    account,
                },
                start.url,
            )
        }
        _ => return Err(not_through_the_browser(&entry.spec)),
    };
    let sealed =
        serde_json::to_vec(&started).map_err(|error| ApiError::internal(error.to_string()))?;
    state
        .store
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

/// `GET /integrations/{connector}/callback`: the provider sends the browser back here.
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
    // OAuth 2.0 names the authorization by its state, OAuth 1.0a by its temporary token.
    let key = match &spec.auth {
        Auth::OAuth2(_) => query.get("state"),
        Auth::OAuth1(_) => query.get("oauth_token"),
        _ => return Err(not_through_the_browser(spec)),
    }
    .ok_or_else(stale)?;
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
    let http = engine::account::token_http(spec, entry.transport()).map_err(ApiError::internal)?;
    let refused = |error: &dyn std::fmt::Display, denied: bool| {
        let message = format!("{}: {error}", spec.name);
        if denied {
            ApiError::bad_request(message)
        } else {
            ApiError::provider(message)
        }
    };
    let (secret, config, scopes, account) = match (&spec.auth, started) {
        (
            Auth::OAuth2(oauth),
            Started::OAuth2 {
                state: started_state,
                pkce_verifier,
                redirect_uri,
                account,
            },
        ) => {
            let client = engine::account::oauth_client(spec, None, None, state.sandbox)
                .map_err(ApiError::conflict)?;
            let start = AuthorizationStart {
                url: url::Url::parse(&redirect_uri).map_err(|_| stale())?,
                state: started_state,
                pkce_verifier,
            };
            let authorized = TokenEndpoint::new(oauth, &client, &http, &Counters::default())
                .complete(&redirect_uri, &query, &start)
                .await
                .map_err(|error| {
                    let denied = matches!(error, OAuthError::Denied(_) | OAuthError::MissingCode);
                    refused(&error, denied)
                })?;
            let tokens = serde_json::to_vec(&authorized.tokens)
                .map_err(|error| ApiError::internal(error.to_string()))?;
            (
                tokens,
                authorized.captured,
                authorized.tokens.scope,
                account,
            )
        }
        (
            Auth::OAuth1(auth),
            Started::OAuth1 {
                request_token,
                authorize_url,
                account,
            },
        ) => {
            let consumer = consumer(&state, spec)?;
            let flow = OAuth1Flow {
                auth,
                consumer: &consumer,
                http: &http,
            };
            let started = engine::credentials::oauth1::Started {
                url: url::Url::parse(&authorize_url).map_err(|_| stale())?,
                request_token,
            };
            let token = flow.complete(&started, &query).await.map_err(|error| {
                let denied = matches!(
                    error,
                    OAuth1Error::TokenMismatch | OAuth1Error::MissingVerifier
                );
                refused(&error, denied)
            })?;
            let token = serde_json::to_vec(&token)
                .map_err(|error| ApiError::internal(error.to_string()))?;
            (
                token,
                Map::new(),
                auth.authorization_params.get("scope").cloned(),
                account,
            )
        }
        // An authorization started for another kind of auth: the spec changed since.
        _ => return Err(stale()),
    };
    let account = engine::account::account_of(spec, &state.store, &user, &account, &config).await?;
    let id = engine::account::save_connection(
        &state.store,
        &state.cipher,
        Connection {
            user_id: &user,
            connector: &connector,
            account: &account,
            secret: &secret,
            config,
            scopes,
        },
    )
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
    /// Which of the user's accounts of the connector this is (see the authorize query's
    /// `account`). Default: the first account.
    #[serde(default)]
    account: Option<String>,
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
    let account = account_name(body.account.as_deref())?;
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
    let account = engine::account::account_of(spec, &state.store, &user, &account, &config).await?;
    let id = engine::account::save_connection(
        &state.store,
        &state.cipher,
        Connection {
            user_id: &user,
            connector: &spec.id,
            account: &account,
            secret: &sealed,
            config,
            scopes: None,
        },
    )
    .await?;
    // Saved as due: the scheduler starts the import.
    state.wake.notify_one();
    let summary = state.store.integration_summary(&id).await?;
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}
