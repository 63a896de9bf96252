//! A connected account: its config and secrets, its stored credentials ready to sign requests,
//! and the use cases `connector` and the service share (preparing a run, revoking).
//!
//! Tokens are stored sealed by [`crate::credentials::secrets`]; opening them needs the deployment's key. The
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
use crate::credentials::{SANDBOX_CLIENT, sandbox_authorizer};
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

/// The id of `user`'s `account` of `connector`: connecting the same account again renews the
/// same integration (its records and checkpoints kept), and another account is another
/// integration.
///
/// The default account (`""`) keeps the id every integration had before accounts had names,
/// `connector:user`, so existing databases need no change. A named account's id is
/// `connector-` and 16 hex digits of a BLAKE3 hash of the user and the name: fixed for the pair
/// (a `connector sync --account work` of a connector that stores no integration row still
/// finds its checkpoints), free of whatever characters the name holds (an e-mail address), and
/// never equal to a default id (connector ids have no `-`, default ids always a `:`).
pub fn integration_id(connector: &str, user: &str, account: &str) -> String {
    if account.is_empty() {
        return format!("{connector}:{user}");
    }
    let mut hasher = blake3::Hasher::new();
    // Length-prefixed, so that no two (user, account) pairs hash the same input.
    hasher.update(&(user.len() as u64).to_le_bytes());
    hasher.update(user.as_bytes());
    hasher.update(account.as_bytes());
    let hash = hasher.finalize();
    format!("{connector}-{}", &hash.to_hex()[..16])
}

/// A new connection, before it is sealed and saved.
pub struct Connection<'a> {
    /// Who owns it.
    pub user_id: &'a str,
    /// The connector.
    pub connector: &'a str,
    /// Which of the user's accounts of the connector (`""`: the default one).
    pub account: &'a str,
    /// What to seal: the OAuth tokens (as JSON), or a connector's secret config values.
    pub secret: &'a [u8],
    /// Config values, captured during authorization or given (not secret).
    pub config: Map<String, Value>,
    /// The granted scopes, as the provider said them.
    pub scopes: Option<String>,
}

/// Seals and saves a new connection (or a renewed one: connecting the same account again
/// renews the same integration, its records and checkpoints kept): active, no error, due for its first import
/// at once. Returns the integration's id.
pub async fn save_connection(
    store: &AnyStore,
    cipher: &TokenCipher,
    connection: Connection<'_>,
) -> Result<String, crate::store::StoreError> {
    let id = integration_id(connection.connector, connection.user_id, connection.account);
    store
        .save_integration(&StoredIntegration {
            id: id.clone(),
            user_id: connection.user_id.to_owned(),
            connector: connection.connector.to_owned(),
            account: connection.account.to_owned(),
            status: crate::store::IntegrationStatus::Active,
            config: connection.config,
            sealed_tokens: Some(cipher.encrypt(connection.secret)),
            scopes: connection.scopes,
            last_error: None,
        })
        .await?;
    Ok(id)
}

/// The name `spec` gives the account whose captured values are `config` (the spec's
/// `account` template); `None` when it has none or it renders empty.
pub fn account_name(spec: &ConnectorSpec, config: &Map<String, Value>) -> Option<String> {
    let template = spec.account.as_ref()?;
    let mut templates = crate::template::Templates::default();
    let id = templates.add(template.as_str()).ok()?;
    let context = minijinja::context! {
        config => minijinja::Value::from(minijinja::value::Serde(config)),
    };
    match templates.render(&id, &context) {
        Ok(name) => Some(name.trim().to_owned()).filter(|name| !name.is_empty()),
        Err(error) => {
            tracing::warn!(connector = %spec.id, %error, "the spec's `account` did not render; connecting the default account");
            None
        }
    }
}

/// Which of `user_id`'s accounts of `spec` a new connection is: the name the user `given`;
/// else the name the spec makes of the `captured` values, except that the default account
/// (`""`) is kept for the first connection and for the account it already is (connecting the
/// same account again renews it, not adds it); else the default account.
pub async fn account_of(
    spec: &ConnectorSpec,
    store: &AnyStore,
    user_id: &str,
    given: &str,
    captured: &Map<String, Value>,
) -> Result<String, crate::store::StoreError> {
    if !given.is_empty() {
        return Ok(given.to_owned());
    }
    let Some(name) = account_name(spec, captured) else {
        return Ok(String::new());
    };
    if store
        .integration(&integration_id(&spec.id, user_id, &name))
        .await?
        .is_some()
    {
        return Ok(name);
    }
    Ok(
        match store
            .integration(&integration_id(&spec.id, user_id, ""))
            .await?
        {
            None => String::new(),
            Some(first) if account_name(spec, &first.config).as_deref() == Some(&name) => {
                String::new()
            }
            Some(_) => name,
        },
    )
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

/// What signs a run's requests.
pub enum SignIn<'a> {
    /// The integration's stored credentials: tokens `connector auth` or the service saved
    /// (renewed, and saved again, as they expire), or the sealed secrets of a connector that
    /// takes config values.
    Stored {
        /// The integration.
        stored: &'a StoredIntegration,
        /// Opens what is sealed.
        cipher: Arc<TokenCipher>,
        /// The deployment's OAuth client (or why there is none), for OAuth connectors.
        client: Result<OAuthClient, String>,
        /// Where renewed tokens are saved.
        store: &'a AnyStore,
    },
    /// A token given for this run (`--access-token`), or none (a connector that needs none, or
    /// takes its credentials from config values).
    Given(Option<&'a str>),
    /// The sandbox's stand-ins.
    Sandbox,
}

/// What a run needs besides the connector: the integration with its config and secrets, an
/// HTTP client for its provider, and what signs its requests.
pub struct PreparedRun {
    /// The integration.
    pub integration: Integration,
    /// The client (allowed hosts, retries, the integration's rate limits).
    pub http: HttpClient,
    /// Signs the requests.
    pub auth: Box<dyn Authorizer>,
}

/// Why a run could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A config value without a default is missing: the user must give it.
    #[error("config value {0}")]
    Config(String),
    /// The stored credentials cannot be opened or used: connect again.
    #[error("{0}")]
    Credentials(String),
    /// The deployment lacks something the run needs (its OAuth client), or the HTTP client
    /// could not be built: the operator's to fix, not the user's.
    #[error("{0}")]
    Setup(String),
}

/// The values a run's integration is configured from, in order of precedence.
#[derive(Debug, Default)]
pub struct Values {
    /// Given for this run (flags, environment): they win.
    pub given: Map<String, Value>,
    /// Used where neither the given nor the stored values have one (the sandbox's
    /// placeholders).
    pub defaults: Map<String, Value>,
}

/// Prepares a run of `spec` for `user_id`'s integration `integration_id`: its values (given,
/// then stored, then defaults, then the spec's own defaults), an HTTP client sending to
/// `transport` under `gate`, and what signs its requests.
pub fn prepare_run(
    spec: &ConnectorSpec,
    user_id: &str,
    integration_id: &str,
    values: Values,
    sign_in: SignIn<'_>,
    transport: Transport,
    gate: RateGate,
) -> Result<PreparedRun, PrepareError> {
    let Values {
        mut given,
        defaults,
    } = values;
    if let SignIn::Stored { stored, cipher, .. } = &sign_in {
        let kept = stored_values(spec, stored, cipher).map_err(PrepareError::Credentials)?;
        for (name, value) in kept {
            given.entry(name).or_insert(value);
        }
    }
    for (name, value) in defaults {
        given.entry(name).or_insert(value);
    }
    let integration = Integration::configure(spec, user_id, integration_id, &given)
        .map_err(PrepareError::Config)?;
    let http = HttpClient::new(
        spec.allowed_hosts.clone(),
        spec.retry.clone(),
        gate,
        ClientOptions {
            transport,
            ..ClientOptions::default()
        },
    )
    .map_err(|error| PrepareError::Setup(error.to_string()))?;
    let auth = match sign_in {
        SignIn::Stored {
            stored,
            cipher,
            client,
            store,
        } => {
            let client = match &spec.auth {
                Auth::OAuth2(_) | Auth::OAuth1(_) => Some(client.map_err(PrepareError::Setup)?),
                _ => None,
            };
            stored_authorizer(spec, stored, client, cipher, &http, &integration, store)
                .map_err(PrepareError::Credentials)?
        }
        SignIn::Given(token) => {
            StaticAuth::prepare(&spec.auth, &integration.credentials_context(), token)
                .map(|auth| Box::new(auth) as Box<dyn Authorizer>)
                .map_err(|error| PrepareError::Credentials(error.to_string()))?
        }
        SignIn::Sandbox => sandbox_authorizer(spec, &integration.credentials_context())
            .map_err(PrepareError::Credentials)?,
    };
    Ok(PreparedRun {
        integration,
        http,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_account_has_its_own_id_and_the_default_keeps_the_old_one() {
        assert_eq!(integration_id("gmail", "alice", ""), "gmail:alice");
        let work = integration_id("gmail", "alice", "alice@work.example");
        assert_eq!(work, integration_id("gmail", "alice", "alice@work.example"));
        assert!(
            work.starts_with("gmail-") && work.len() == "gmail-".len() + 16,
            "{work}"
        );
        assert_ne!(work, integration_id("gmail", "alice", "alice@home.example"));
        assert_ne!(work, integration_id("gmail", "bob", "alice@work.example"));
        // The user and the name cannot trade characters.
        assert_ne!(
            integration_id("gmail", "a", "bc"),
            integration_id("gmail", "ab", "c")
        );
    }
}
