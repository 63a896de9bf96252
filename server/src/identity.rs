//! Who is asking. Every request is authenticated, in one of two ways chosen by configuration:
//!
//! - API keys (the default): `Authorization: Bearer <key>`, or the `hypernet_key` cookie that
//!   `POST /session` sets for the web page. Keys are stored as BLAKE3 hashes.
//! - A trusted header: Hypernet's gateway authenticates the user and names them in a header
//!   (`X-Hypernet-User`). Only for a service that the gateway alone can reach.
//!
//! The cookie is `HttpOnly` and `SameSite=Lax`: scripts cannot read it, and other sites' pages
//! cannot make the browser send it with their `POST` or `DELETE` requests. The OAuth callback
//! (a top-level `GET` navigation back from the provider) does carry it.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use rand::RngCore;

use crate::error::ApiError;
use crate::state::{AppState, Identity};

/// The cookie the web page's session is kept in.
pub const COOKIE_NAME: &str = "hypernet_key";

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub String);

/// The stored form of an API key.
pub fn key_hash(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

/// A new random API key (256 bits, URL-safe).
pub fn new_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "hn_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

/// The user an API key belongs to.
pub async fn user_of_key(state: &AppState, key: &str) -> Result<Option<String>, ApiError> {
    Ok(state.tables.api_key_user(&key_hash(key)).await?)
}

/// A user who is one of the service's operators (`--operator`): what spans every user
/// (`/metrics`: every connector's counts) is theirs alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator(pub String);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let User(user) = User::from_request_parts(parts, state).await?;
        if state.config.operators.contains(&user) {
            Ok(Self(user))
        } else {
            Err(ApiError::forbidden(
                "only the service's operators may read this (`connector serve --operator USER`)",
            ))
        }
    }
}

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match &state.identity {
            Identity::TrustedHeader(name) => parts
                .headers
                .get(name.as_str())
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|user| !user.is_empty())
                .map(|user| Self(user.to_owned()))
                .ok_or_else(|| ApiError::unauthorized(format!("the `{name}` header is missing"))),
            Identity::ApiKeys => {
                let key = bearer(parts).or_else(|| cookie(parts)).ok_or_else(|| {
                    ApiError::unauthorized(
                        "no API key: send `Authorization: Bearer <key>` (create one with `connector serve --create-key USER`)",
                    )
                })?;
                user_of_key(state, key)
                    .await?
                    .map(Self)
                    .ok_or_else(|| ApiError::unauthorized("the API key is not known"))
            }
        }
    }
}
