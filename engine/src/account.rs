//! A connected account: its config and secrets, its stored credentials ready to sign requests,
//! and the use cases `connector` and the service share (preparing a run, revoking).
//!
//! Tokens are stored sealed by [`crate::credentials::secrets`]; opening them needs the deployment's key. The
//! OAuth client (id and secret) is the deployment's, never the spec's: it comes from the
//! operator's flags or environment, or is the sandbox's stand-in.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::credentials::oauth2::{OAuthClient, OnRefresh};
use crate::credentials::secrets::TokenCipher;
use crate::credentials::{self, ConnectMode, Granted, SANDBOX_CLIENT, Signing};
use crate::http::{Authorizer, HttpClient, Transport};
use crate::ratelimit::RateGate;
use crate::spec::ConnectorSpec;
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
fn client_env_prefix(spec: &ConnectorSpec) -> String {
    let client = spec.auth.client_name(&spec.id).unwrap_or(&spec.id);
    format!("HYPERNET_{}", client.to_uppercase())
}

/// What was sealed for `stored` when it was connected, opened: the tokens, or a config
/// connector's secret values, as JSON.
pub fn open_sealed(stored: &StoredIntegration, cipher: &TokenCipher) -> Result<Vec<u8>, String> {
    let sealed = stored
        .sealed_tokens
        .as_deref()
        .ok_or("no credentials are stored for it; connect it again")?;
    cipher.decrypt(sealed).map_err(|error| error.to_string())
}

/// Signs requests for a stored integration (see [`credentials::authorizer`]); renewed OAuth 2.0
/// tokens are sealed and saved before they are used.
fn stored_authorizer(
    spec: &ConnectorSpec,
    stored: &StoredIntegration,
    client: Result<OAuthClient, String>,
    cipher: Arc<TokenCipher>,
    http: &HttpClient,
    integration: &Integration,
    store: &AnyStore,
) -> Result<Box<dyn Authorizer>, String> {
    let keeps_tokens = ConnectMode::of(&spec.auth).keeps_tokens();
    let tokens = if keeps_tokens {
        Some(open_sealed(stored, &cipher)?)
    } else {
        None
    };
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
    credentials::authorizer(
        spec,
        Signing {
            tokens: tokens.as_deref(),
            client,
            http,
            config: &integration.config,
            context: &integration.credentials_context(),
            on_refresh: Some(save),
        },
    )
}

/// The config values and (sealed) secrets of a stored integration, together, for
/// [`Integration::configure`]. Secrets of non-OAuth connectors are sealed where OAuth
/// connectors keep their tokens.
fn stored_values(
    spec: &ConnectorSpec,
    stored: &StoredIntegration,
    cipher: &TokenCipher,
) -> Result<Map<String, Value>, String> {
    let mut values = stored.config.clone();
    if !ConnectMode::of(&spec.auth).keeps_tokens() && stored.sealed_tokens.is_some() {
        let secrets: Map<String, Value> = serde_json::from_slice(&open_sealed(stored, cipher)?)
            .map_err(|_| "its stored values are unreadable; connect it again".to_owned())?;
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
    /// The root streams the person chose to import; `None`: every stream for a new
    /// integration, the earlier choice for a renewed one.
    pub streams: Option<Vec<String>>,
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
            streams: connection.streams,
        })
        .await?;
    Ok(id)
}

/// Saves what a new connection was `granted` as the account it is (see [`account_of`]: the
/// name the person `given`, else the identity the spec makes of the captured values). Returns
/// the integration's id. The service's connect endpoints end here.
pub async fn connect(
    store: &AnyStore,
    cipher: &TokenCipher,
    spec: &ConnectorSpec,
    user_id: &str,
    given: &str,
    granted: Granted,
    streams: Option<Vec<String>>,
) -> Result<String, crate::store::StoreError> {
    let account = account_of(spec, store, user_id, given, &granted.config).await?;
    save_connection(
        store,
        cipher,
        Connection {
            user_id,
            connector: &spec.id,
            account: &account,
            secret: &granted.secret,
            config: granted.config,
            scopes: granted.scopes,
            streams,
        },
    )
    .await
}

/// A connection of a [`ConnectMode::Config`] connector from the `values` a person gave (with
/// the sandbox's placeholders among them, in a sandbox): every name one the spec declares,
/// every value without a default given; the secret ones are what is sealed.
pub fn granted_from_config(
    spec: &ConnectorSpec,
    values: Map<String, Value>,
) -> Result<Granted, String> {
    if let Some(unknown) = values.keys().find(|name| !spec.config.contains_key(*name)) {
        return Err(format!(
            "{} has no config value `{unknown}`; it has: {}",
            spec.name,
            spec.config.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Integration::configure(spec, "", "", &values)
        .map_err(|error| format!("config value {error}"))?;
    let (secrets, config): (Map<String, Value>, Map<String, Value>) = values
        .into_iter()
        .partition(|(name, _)| spec.config.get(name).is_some_and(|field| field.secret));
    Ok(Granted {
        secret: serde_json::to_vec(&secrets).unwrap_or_default(),
        config,
        scopes: None,
        expires_at: None,
    })
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
    HttpClient::for_connector(spec, RateGate::unlimited(), transport)
        .map_err(|error| error.to_string())
}

/// Revokes a stored integration's grant at the provider, as the spec says how (see
/// [`credentials::revoke`]). `Ok(false)` when there is nothing to revoke or no way to.
pub async fn revoke(
    spec: &ConnectorSpec,
    stored: &StoredIntegration,
    client: Result<OAuthClient, String>,
    cipher: &TokenCipher,
    transport: Transport,
) -> Result<bool, String> {
    if !ConnectMode::of(&spec.auth).keeps_tokens() || stored.sealed_tokens.is_none() {
        return Ok(false);
    }
    let tokens = open_sealed(stored, cipher)?;
    let http = token_http(spec, transport)?;
    credentials::revoke(spec, &tokens, client, &http, &stored.config).await
}

/// What disconnecting did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Disconnected {
    /// The integration.
    pub integration: String,
    /// Whether the provider revoked the grant.
    pub revoked: bool,
    /// Why revoking failed, when it did (the tokens are deleted here all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_error: Option<String>,
    /// Records deleted with it (none unless asked).
    pub records_deleted: u64,
    /// Blobs deleted with them: the content no other record refers to.
    pub blobs_deleted: u64,
}

/// Disconnects a stored integration: revokes its grant at the provider where the spec says how
/// (a failure there is reported, and the tokens here are deleted all the same: the person asked
/// for them to be gone), forgets its credentials and checkpoints, and with `delete_data` deletes
/// every record imported through it, and from `blobs` the content no other record uses.
/// `spec` is `None` when its connector is no longer installed: nothing can be revoked then.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per front end, each names them"
)]
pub async fn disconnect(
    store: &AnyStore,
    blobs: &crate::blobs::BlobStore,
    stored: &StoredIntegration,
    spec: Option<&ConnectorSpec>,
    client: Result<OAuthClient, String>,
    cipher: &TokenCipher,
    transport: Transport,
    delete_data: bool,
) -> Result<Disconnected, crate::store::StoreError> {
    let (revoked, revocation_error) = match spec {
        Some(spec) => match revoke(spec, stored, client, cipher, transport).await {
            Ok(revoked) => (revoked, None),
            Err(error) => (false, Some(error)),
        },
        None => (false, None),
    };
    let held = if delete_data {
        store.blobs_of_integration(&stored.id).await?
    } else {
        Vec::new()
    };
    let records_deleted = store.delete_integration(&stored.id, delete_data).await?;
    let blobs_deleted = delete_unused_blobs(store, blobs, &held).await?;
    Ok(Disconnected {
        integration: stored.id.clone(),
        revoked,
        revocation_error,
        records_deleted,
        blobs_deleted,
    })
}

/// What `collect_garbage` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Collected {
    /// Blobs in the store.
    pub blobs: u64,
    /// Blobs deleted: no record referred to them.
    pub deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they are younger than the grace period (a download may
    /// be about to record its reference).
    pub kept_young: u64,
    /// Staged files a crash left behind, removed.
    pub staged_removed: u64,
}

/// Removes what no record refers to: blobs (older than `grace`: a download commits its blob a
/// moment before it records the reference) and staged files older than `grace` that a crash
/// left behind.
pub async fn collect_garbage(
    store: &AnyStore,
    blobs: &crate::blobs::BlobStore,
    grace: std::time::Duration,
) -> Result<Collected, String> {
    use futures_util::TryStreamExt as _;
    let mut collected = Collected {
        staged_removed: blobs
            .sweep_staging(grace)
            .map_err(|error| error.to_string())?,
        ..Collected::default()
    };
    let listed: Vec<crate::blobs::StoredBlob> = blobs
        .list_stored()
        .try_collect()
        .await
        .map_err(|error| error.to_string())?;
    collected.blobs = listed.len() as u64;
    let hashes: Vec<String> = listed.iter().map(|blob| blob.hash.to_hex()).collect();
    let unreferenced: std::collections::HashSet<String> = store
        .unreferenced_blobs(&hashes)
        .await
        .map_err(|error| error.to_string())?
        .into_iter()
        .collect();
    for blob in listed {
        if !unreferenced.contains(&blob.hash.to_hex()) {
            continue;
        }
        let young = blob
            .written
            .elapsed()
            .map_or(true, |elapsed| elapsed < grace);
        if young {
            collected.kept_young += 1;
            continue;
        }
        blobs
            .delete(&blob.hash)
            .await
            .map_err(|error| error.to_string())?;
        collected.deleted += 1;
        collected.bytes_freed += blob.size;
    }
    Ok(collected)
}

/// Deletes those of `hashes` no record refers to from `blobs`; says how many went. A blob that
/// cannot be deleted now is left for `connector gc` (its reference is gone already).
pub async fn delete_unused_blobs(
    store: &AnyStore,
    blobs: &crate::blobs::BlobStore,
    hashes: &[String],
) -> Result<u64, crate::store::StoreError> {
    let mut deleted = 0;
    for hash in store.unreferenced_blobs(hashes).await? {
        let Ok(parsed) = hash.parse::<crate::blobs::BlobHash>() else {
            continue;
        };
        match blobs.delete(&parsed).await {
            Ok(()) => deleted += 1,
            Err(error) => {
                tracing::warn!(%hash, %error, "an unused blob was not deleted; `connector gc` removes it later");
            }
        }
    }
    Ok(deleted)
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
    let http = HttpClient::for_connector(spec, gate, transport)
        .map_err(|error| PrepareError::Setup(error.to_string()))?;
    let auth = match sign_in {
        SignIn::Stored {
            stored,
            cipher,
            client,
            store,
        } => {
            // The deployment's fault, not the person's: say so before the credentials are tried.
            let client = match client {
                Err(error) if ConnectMode::of(&spec.auth).keeps_tokens() => {
                    return Err(PrepareError::Setup(error));
                }
                client => client,
            };
            stored_authorizer(spec, stored, client, cipher, &http, &integration, store)
                .map_err(PrepareError::Credentials)?
        }
        SignIn::Given(token) => {
            credentials::given_authorizer(spec, &integration.credentials_context(), token)
                .map_err(PrepareError::Credentials)?
        }
        SignIn::Sandbox => {
            credentials::sandbox_authorizer(spec, &integration.credentials_context())
                .map_err(PrepareError::Credentials)?
        }
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
