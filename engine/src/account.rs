//! A connected account's credentials, ready to sign requests: what `connector sync` and the
//! service share.
//!
//! Tokens are stored sealed by [`crate::secrets`]; opening them needs the deployment's key. The
//! OAuth client (id and secret) is the deployment's, never the spec's: it comes from the
//! operator's flags or environment, or is the sandbox's stand-in.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::credentials::oauth1::{Consumer, OAuth1Authorizer, OAuth1Token};
use crate::credentials::oauth2::{
    OAuthAuthorizer, OAuthClient, OnRefresh, TokenEndpoint, TokenSet,
};
use crate::credentials::secrets::TokenCipher;
use crate::credentials::static_auth::StaticAuth;
use crate::events::Counters;
use crate::http::{Authorizer, ClientOptions, HttpClient, Transport};
use crate::ratelimit::RateGate;
use crate::spec::{Auth, ConnectorSpec};
use crate::store::{AnyStore, StoredIntegration};

/// The connected account a run imports for, and its configuration.
#[derive(Debug, Clone)]
pub struct Integration {
    /// Who owns the records.
    pub user_id: String,
    /// The connected account's id.
    pub integration_id: String,
    /// Config values (`config.*` in templates).
    pub config: Map<String, Value>,
    /// Secret values (`secrets.*` in templates).
    pub secrets: Map<String, Value>,
}

impl Integration {
    /// An integration with `given` config and secret values, completed by the spec's defaults.
    /// Fails when a value without a default is missing.
    pub fn configure(
        spec: &ConnectorSpec,
        user_id: &str,
        integration_id: &str,
        given: &Map<String, Value>,
    ) -> Result<Self, String> {
        let mut config = Map::new();
        let mut secrets = Map::new();
        for (name, field) in &spec.config {
            let value = match (given.get(name), &field.default) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) => Value::String(default.clone()),
                (None, None) => {
                    return Err(format!("`{name}` is required: {}", field.description));
                }
            };
            if field.secret {
                secrets.insert(name.clone(), value);
            } else {
                config.insert(name.clone(), value);
            }
        }
        // Values captured during authorization are config too, though not declared.
        for (name, value) in given {
            if !spec.config.contains_key(name) {
                config.insert(name.clone(), value.clone());
            }
        }
        Ok(Self {
            user_id: user_id.to_owned(),
            integration_id: integration_id.to_owned(),
            config,
            secrets,
        })
    }

    /// `config` and `secrets` as one template context.
    pub fn credentials_context(&self) -> minijinja::Value {
        minijinja::context! {
            config => minijinja::Value::from(minijinja::value::Serde(&self.config)),
            secrets => minijinja::Value::from(minijinja::value::Serde(&self.secrets)),
        }
    }
}

/// The client id and secret the sandbox's stand-in provider accepts.
pub const SANDBOX_CLIENT: (&str, &str) = ("sandbox-client", "sandbox-secret");

/// The deployment's OAuth client for `spec`: `id` and `secret` when given, else
/// `HYPERNET_<CLIENT>_CLIENT_ID` and `HYPERNET_<CLIENT>_CLIENT_SECRET`, where CLIENT is the
/// spec's shared `auth.client` (Google's connectors share `google`) or else the connector id; in
/// the sandbox, the stand-in's.
pub fn oauth_client(
    spec: &ConnectorSpec,
    id: Option<&str>,
    secret: Option<&str>,
    sandbox: bool,
) -> Result<OAuthClient, String> {
    if sandbox {
        return Ok(OAuthClient {
            id: SANDBOX_CLIENT.0.to_owned(),
            secret: Some(SANDBOX_CLIENT.1.to_owned()),
        });
    }
    let prefix = client_env_prefix(spec);
    let id = id
        .map(str::to_owned)
        .or_else(|| std::env::var(format!("{prefix}_CLIENT_ID")).ok())
        .ok_or_else(|| {
            format!(
                "no OAuth client for {}: set {prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET (or pass --client-id and --client-secret)",
                spec.id
            )
        })?;
    let secret = secret
        .map(str::to_owned)
        .or_else(|| std::env::var(format!("{prefix}_CLIENT_SECRET")).ok());
    Ok(OAuthClient { id, secret })
}

/// `HYPERNET_<CLIENT>`: the prefix of the environment variables holding `spec`'s OAuth client.
pub fn client_env_prefix(spec: &ConnectorSpec) -> String {
    let client = spec.auth.client_name(&spec.id).unwrap_or(&spec.id);
    format!("HYPERNET_{}", client.to_uppercase())
}

/// What was sealed for `stored` when it was connected, opened.
pub fn open_sealed<T: serde::de::DeserializeOwned>(
    stored: &StoredIntegration,
    cipher: &TokenCipher,
) -> Result<T, String> {
    let sealed = stored
        .sealed_tokens
        .as_deref()
        .ok_or("no credentials are stored for it; connect it again")?;
    let plain = cipher.decrypt(sealed).map_err(|error| error.to_string())?;
    serde_json::from_slice(&plain)
        .map_err(|_| "its stored credentials are unreadable; connect it again".to_owned())
}

/// Signs requests for a stored integration: self-renewing OAuth 2.0 tokens (renewed tokens are
/// sealed and saved before they are used), OAuth 1.0a signatures, or the static credentials of
/// the other kinds (built from the integration's config and secrets).
pub fn stored_authorizer(
    spec: &ConnectorSpec,
    stored: &StoredIntegration,
    client: Option<OAuthClient>,
    cipher: Arc<TokenCipher>,
    http: &HttpClient,
    integration: &Integration,
    store: &AnyStore,
) -> Result<Box<dyn Authorizer>, String> {
    let client = || {
        client
            .clone()
            .ok_or_else(|| format!("no OAuth client for {}", spec.id))
    };
    match &spec.auth {
        Auth::OAuth2(oauth) => {
            let tokens: TokenSet = open_sealed(stored, &cipher)?;
            let (store, id) = (store.clone(), stored.id.clone());
            let save: OnRefresh = Box::new(move |tokens| {
                let sealed = cipher.encrypt(&serde_json::to_vec(&tokens).unwrap_or_default());
                let (store, id) = (store.clone(), id.clone());
                Box::pin(async move {
                    if let Err(error) = store.save_tokens(&id, &sealed).await {
                        tracing::error!(integration = %id, %error, "could not save renewed tokens");
                    }
                })
            });
            Ok(Box::new(
                OAuthAuthorizer::new(
                    oauth.as_ref().clone(),
                    client()?,
                    http.clone(),
                    integration.config.clone(),
                    tokens,
                    Arc::new(Counters::default()),
                )
                .on_refresh(save),
            ))
        }
        Auth::OAuth1(_) => {
            let client = client()?;
            let token: OAuth1Token = open_sealed(stored, &cipher)?;
            Ok(Box::new(OAuth1Authorizer::new(
                Consumer {
                    key: client.id,
                    secret: client.secret.unwrap_or_default(),
                },
                token,
            )))
        }
        _ => StaticAuth::prepare(&spec.auth, &integration.credentials_context(), None)
            .map(|auth| Box::new(auth) as Box<dyn Authorizer>)
            .map_err(|error| error.to_string()),
    }
}

/// The config values and (sealed) secrets of a stored integration, together, for
/// [`Integration::configure`]. Secrets of non-OAuth connectors are sealed where OAuth
/// connectors keep their tokens.
pub fn stored_values(
    spec: &ConnectorSpec,
    stored: &StoredIntegration,
    cipher: &TokenCipher,
) -> Result<Map<String, Value>, String> {
    let mut values = stored.config.clone();
    if !matches!(spec.auth, Auth::OAuth2(_) | Auth::OAuth1(_)) && stored.sealed_tokens.is_some() {
        let secrets: Map<String, Value> = open_sealed(stored, cipher)?;
        values.extend(secrets);
    }
    Ok(values)
}

/// The id of `user`'s integration of `connector`: one per user and connector, so connecting
/// again renews the same integration (and keeps its records and checkpoints).
pub fn integration_id(connector: &str, user: &str) -> String {
    format!("{connector}:{user}")
}

/// An HTTP client for token work (exchange, refresh, revocation) with `spec`'s provider,
/// sending to `transport`. Token requests are not rate limited: they are few.
pub fn token_http(spec: &ConnectorSpec, transport: Transport) -> Result<HttpClient, String> {
    HttpClient::new(
        spec.allowed_hosts.clone(),
        spec.retry.clone(),
        RateGate::unlimited(),
        ClientOptions {
            transport,
            ..ClientOptions::default()
        },
    )
    .map_err(|error| error.to_string())
}

/// Revokes a stored OAuth 2.0 integration's grant at the provider, as the spec says how
/// (RFC 7009 `revocation_url`, or the provider's own `revocation` request). `Ok(false)` when
/// there is nothing to revoke or no way to: not OAuth 2.0, no tokens, no revocation endpoint.
pub async fn revoke(
    spec: &ConnectorSpec,
    stored: &StoredIntegration,
    client: Result<OAuthClient, String>,
    cipher: &TokenCipher,
    transport: Transport,
) -> Result<bool, String> {
    let Auth::OAuth2(oauth) = &spec.auth else {
        return Ok(false);
    };
    if stored.sealed_tokens.is_none() {
        return Ok(false);
    }
    let client = client?;
    let tokens: TokenSet = open_sealed(stored, cipher)?;
    let http = token_http(spec, transport)?;
    TokenEndpoint::new(oauth, &client, &http, &Counters::default())
        .revoke(&tokens, &stored.config)
        .await
        .map_err(|error| error.to_string())
}
