//! Credentials: what signs a connected account's requests, and how they are obtained, renewed,
//! sealed at rest and revoked.
//!
//! Each kind of authentication lives in one module, with everything about it: how a person
//! connects an account ([`ConnectMode`]), what a connection grants, what signs requests with
//! it, the sandbox's stand-in and revocation.
//!
//! - [`static_auth`]: API keys, basic and bearer credentials from the integration's config;
//! - [`oauth2`]: OAuth 2.0 (authorization code with PKCE, client credentials, refresh,
//!   revocation, every provider quirk the spec declares);
//! - [`oauth1`]: OAuth 1.0a three-legged flows and HMAC-SHA1 signatures;
//! - [`secrets`]: tokens sealed at rest with the deployment's key.
//!
//! The functions here are the one place that dispatches on the kind; the command line and the
//! service call them (through [`crate::account`]) and never match on [`Auth`] themselves. A new
//! kind is its spec section, its module, and one arm in each function below.

pub mod oauth1;
pub mod oauth2;
pub mod secrets;
pub mod static_auth;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::http::{Authorizer, HttpClient};
use crate::spec::{Auth, ConnectorSpec};
use oauth2::{OAuthClient, OnRefresh};

/// The access token the sandbox's stand-ins hand out and accept.
pub const SANDBOX_ACCESS_TOKEN: &str = "sandbox-access-token";

/// The client id and secret the sandbox's stand-in provider accepts.
pub const SANDBOX_CLIENT: (&str, &str) = ("sandbox-client", "sandbox-secret");

/// How a person connects an account of a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectMode {
    /// Through the browser: the provider's consent page, then a redirect back with a code or a
    /// verifier ([`start`], then [`finish`]). OAuth 2.0's authorization code grant, OAuth 1.0a.
    Browser,
    /// With nobody in the loop: the deployment's own client buys the token
    /// ([`connect_client`]). OAuth 2.0's client credentials grant.
    Client,
    /// With config values the person gives (API keys, passwords, nothing at all), sealed where
    /// the other modes keep tokens.
    Config,
}

impl ConnectMode {
    /// How `auth`'s accounts are connected.
    pub fn of(auth: &Auth) -> Self {
        match auth {
            Auth::None | Auth::ApiKey(_) | Auth::Bearer(_) | Auth::Basic(_) => {
                static_auth::CONNECT_MODE
            }
            Auth::OAuth2(oauth) => oauth2::connect_mode(oauth),
            Auth::OAuth1(_) => oauth1::CONNECT_MODE,
        }
    }

    /// Whether a connection holds tokens granted by the provider (and the deployment's OAuth
    /// client is needed to use them), rather than config values.
    pub fn keeps_tokens(self) -> bool {
        self != Self::Config
    }
}

/// Why connecting an account failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connector does not connect this way (a config connector sent to the browser, ...).
    #[error("{connector} uses `{kind}` authentication, which does not connect this way")]
    NotThisWay {
        /// The connector.
        connector: String,
        /// Its kind of authentication.
        kind: &'static str,
    },
    /// The person or the provider refused, or the redirect does not belong to the
    /// authorization: connecting again may succeed.
    #[error("{0}")]
    Refused(String),
    /// The provider failed or answered what the spec does not describe.
    #[error("{0}")]
    Provider(String),
}

impl ConnectError {
    fn not_this_way(spec: &ConnectorSpec) -> Self {
        Self::NotThisWay {
            connector: spec.id.clone(),
            kind: spec.auth.kind_name(),
        }
    }
}

/// A browser authorization under way: send the person to [`Pending::url`], keep the rest until
/// the provider sends them back. The command line holds it in memory; the service seals it in
/// its database. `Debug` shows no secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pending {
    /// OAuth 2.0.
    #[serde(rename = "oauth2")]
    OAuth2(oauth2::Pending),
    /// OAuth 1.0a.
    #[serde(rename = "oauth1")]
    OAuth1(oauth1::Pending),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Where the person authorizes.
    pub fn url(&self) -> &str {
        match self {
            Self::OAuth2(pending) => &pending.url,
            Self::OAuth1(pending) => &pending.url,
        }
    }

    /// What the provider's redirect names this authorization by (OAuth 2.0's `state`, OAuth
    /// 1.0a's temporary token): see [`callback_key`].
    pub fn key(&self) -> &str {
        match self {
            Self::OAuth2(pending) => &pending.state,
            Self::OAuth1(pending) => &pending.request_token.token,
        }
    }
}

/// The key of the pending authorization the provider's redirect (its query `callback`) is for,
/// as [`Pending::key`] names it; `None` when the redirect carries none.
pub fn callback_key<'q>(auth: &Auth, callback: &'q HashMap<String, String>) -> Option<&'q str> {
    match auth {
        Auth::OAuth2(_) => callback.get("state"),
        Auth::OAuth1(_) => callback.get("oauth_token"),
        Auth::None | Auth::ApiKey(_) | Auth::Bearer(_) | Auth::Basic(_) => None,
    }
    .map(String::as_str)
}

/// What a new connection was granted: sealed and saved by [`crate::account::save_connection`].
/// `Debug` shows no secret.
#[derive(Clone)]
pub struct Granted {
    /// What to seal: the tokens, as JSON.
    pub secret: Vec<u8>,
    /// Values captured during the authorization (an account id, a region), kept as config.
    pub config: Map<String, Value>,
    /// The granted scopes, as the provider said them.
    pub scopes: Option<String>,
    /// When the access token expires, if it does.
    pub expires_at: Option<jiff::Timestamp>,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Granted")
            .field("secret", &"[redacted]")
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Starts a browser authorization for `spec`'s deployment `client`, the provider to send the
/// person back to `redirect_uri`. `http` sends the token requests some kinds make first.
pub async fn start(
    spec: &ConnectorSpec,
    client: &OAuthClient,
    http: &HttpClient,
    redirect_uri: &str,
) -> Result<Pending, ConnectError> {
    match &spec.auth {
        Auth::OAuth2(oauth) if ConnectMode::of(&spec.auth) == ConnectMode::Browser => {
            oauth2::start(oauth, client, redirect_uri).map(Pending::OAuth2)
        }
        Auth::OAuth1(auth) => oauth1::start(auth, client, http, redirect_uri)
            .await
            .map(Pending::OAuth1),
        _ => Err(ConnectError::not_this_way(spec)),
    }
}

/// Finishes the browser authorization `pending` with the provider's redirect (its query
/// `callback`).
pub async fn finish(
    spec: &ConnectorSpec,
    client: &OAuthClient,
    http: &HttpClient,
    pending: &Pending,
    callback: &HashMap<String, String>,
) -> Result<Granted, ConnectError> {
    match (&spec.auth, pending) {
        (Auth::OAuth2(oauth), Pending::OAuth2(pending)) => {
            oauth2::finish(oauth, client, http, pending, callback).await
        }
        (Auth::OAuth1(auth), Pending::OAuth1(pending)) => {
            oauth1::finish(auth, client, http, pending, callback).await
        }
        // Started for another kind: the spec changed since.
        (Auth::OAuth2(_) | Auth::OAuth1(_), _) => Err(ConnectError::Refused(
            "the authorization was started before the connector changed; connect again".to_owned(),
        )),
        _ => Err(ConnectError::not_this_way(spec)),
    }
}

/// Connects with the deployment's own client, nobody in the loop ([`ConnectMode::Client`]).
pub async fn connect_client(
    spec: &ConnectorSpec,
    client: &OAuthClient,
    http: &HttpClient,
) -> Result<Granted, ConnectError> {
    match &spec.auth {
        Auth::OAuth2(oauth) if ConnectMode::of(&spec.auth) == ConnectMode::Client => {
            oauth2::connect_client(oauth, client, http).await
        }
        _ => Err(ConnectError::not_this_way(spec)),
    }
}

/// What a connected account's requests are signed with.
pub struct Signing<'a> {
    /// What was sealed when it was connected, opened: the tokens of the kinds that keep tokens.
    pub tokens: Option<&'a [u8]>,
    /// The deployment's OAuth client (or why there is none), for the kinds that keep tokens.
    pub client: Result<OAuthClient, String>,
    /// Sends token renewals.
    pub http: &'a HttpClient,
    /// The integration's config values (token requests may use captured ones).
    pub config: &'a Map<String, Value>,
    /// `config` and `secrets`, for the templates of static credentials.
    pub context: &'a minijinja::Value,
    /// Saves renewed tokens before they are used.
    pub on_refresh: Option<OnRefresh>,
}

/// Signs a connected account's requests: self-renewing OAuth 2.0 tokens, OAuth 1.0a signatures,
/// or the static credentials of the other kinds.
pub fn authorizer(
    spec: &ConnectorSpec,
    signing: Signing<'_>,
) -> Result<Box<dyn Authorizer>, String> {
    let tokens = || {
        signing
            .tokens
            .ok_or("no credentials are stored for it; connect it again")
    };
    match &spec.auth {
        Auth::OAuth2(oauth) => oauth2::authorizer(
            oauth,
            tokens()?,
            signing.client?,
            signing.http,
            signing.config,
        )
        .map(|authorizer| match signing.on_refresh {
            Some(on_refresh) => Box::new(authorizer.on_refresh(on_refresh)),
            None => Box::new(authorizer) as Box<dyn Authorizer>,
        }),
        Auth::OAuth1(_) => oauth1::authorizer(tokens()?, signing.client?)
            .map(|authorizer| Box::new(authorizer) as Box<dyn Authorizer>),
        Auth::None | Auth::ApiKey(_) | Auth::Bearer(_) | Auth::Basic(_) => {
            given_authorizer(spec, signing.context, None)
        }
    }
}

/// Signs a run's requests with a token given for it (`--access-token`), or with the static
/// credentials in `context` (`config` and `secrets`).
pub fn given_authorizer(
    spec: &ConnectorSpec,
    context: &minijinja::Value,
    token: Option<&str>,
) -> Result<Box<dyn Authorizer>, String> {
    static_auth::StaticAuth::prepare(&spec.auth, context, token)
        .map(|auth| Box::new(auth) as Box<dyn Authorizer>)
        .map_err(|error| error.to_string())
}

/// Credentials for a sandbox run without a connected account: the replay checks none, so
/// stand-ins do (an OAuth 1.0a connector still signs every request). `context` holds the
/// integration's `config` and `secrets`.
pub fn sandbox_authorizer(
    spec: &ConnectorSpec,
    context: &minijinja::Value,
) -> Result<Box<dyn Authorizer>, String> {
    match &spec.auth {
        Auth::OAuth1(_) => Ok(Box::new(oauth1::sandbox_authorizer())),
        // OAuth 2.0 sends the stand-in token as a bearer token; the static kinds render their
        // templates from the sandbox's placeholder config.
        Auth::OAuth2(_) | Auth::None | Auth::ApiKey(_) | Auth::Bearer(_) | Auth::Basic(_) => {
            given_authorizer(spec, context, Some(SANDBOX_ACCESS_TOKEN))
        }
    }
}

/// Revokes a connection's grant at the provider, as the spec says how. `tokens` is what was
/// sealed when it was connected, opened. `Ok(false)` when there is no way to: a kind without
/// revocation, or a provider without a revocation endpoint.
pub async fn revoke(
    spec: &ConnectorSpec,
    tokens: &[u8],
    client: Result<OAuthClient, String>,
    http: &HttpClient,
    config: &Map<String, Value>,
) -> Result<bool, String> {
    match &spec.auth {
        Auth::OAuth2(oauth) => oauth2::revoke(oauth, tokens, &client?, http, config).await,
        // OAuth 1.0a has no standard revocation; the static kinds were never granted.
        Auth::OAuth1(_) | Auth::None | Auth::ApiKey(_) | Auth::Bearer(_) | Auth::Basic(_) => {
            Ok(false)
        }
    }
}

/// Opens tokens sealed as JSON.
fn tokens_from<T: serde::de::DeserializeOwned>(tokens: &[u8]) -> Result<T, String> {
    serde_json::from_slice(tokens)
        .map_err(|_| "its stored credentials are unreadable; connect it again".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec's `auth` section, written as JSON with only the fields each kind requires.
    fn auth(json: &str) -> Auth {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn each_kind_says_how_its_accounts_connect() {
        let oauth2 = |grant: &str| {
            auth(&format!(
                r#"{{"kind": "oauth2", "grant": "{grant}", "authorization_url": "https://p.example/auth", "token_url": "https://p.example/token"}}"#
            ))
        };
        assert_eq!(
            ConnectMode::of(&oauth2("authorization_code")),
            ConnectMode::Browser
        );
        assert_eq!(
            ConnectMode::of(&oauth2("client_credentials")),
            ConnectMode::Client
        );
        let oauth1 = auth(
            r#"{"kind": "oauth1", "request_token_url": "https://p.example/r", "authorization_url": "https://p.example/a", "access_token_url": "https://p.example/t"}"#,
        );
        assert_eq!(ConnectMode::of(&oauth1), ConnectMode::Browser);
        assert_eq!(
            ConnectMode::of(&auth(r#"{"kind": "none"}"#)),
            ConnectMode::Config
        );
        assert!(!ConnectMode::Config.keeps_tokens());
        assert!(ConnectMode::Client.keeps_tokens() && ConnectMode::Browser.keeps_tokens());
    }

    #[test]
    fn a_pending_authorization_round_trips_and_shows_no_secret() {
        let pending = Pending::OAuth1(oauth1::Pending {
            url: "https://trello.example/authorize?oauth_token=temporary".to_owned(),
            request_token: oauth1::OAuth1Token {
                token: "temporary".to_owned(),
                secret: "temporary-secret".to_owned(),
            },
        });
        let sealed = serde_json::to_vec(&pending).unwrap();
        let opened: Pending = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(opened.key(), "temporary");
        assert_eq!(opened.url(), pending.url());
        assert!(!format!("{opened:?}").contains("temporary-secret"));
        let callback = HashMap::from([("oauth_token".to_owned(), "temporary".to_owned())]);
        let oauth1 = auth(
            r#"{"kind": "oauth1", "request_token_url": "https://p.example/r", "authorization_url": "https://p.example/a", "access_token_url": "https://p.example/t"}"#,
        );
        assert_eq!(callback_key(&oauth1, &callback), Some("temporary"));
        assert_eq!(callback_key(&auth(r#"{"kind": "none"}"#), &callback), None);
    }
}
