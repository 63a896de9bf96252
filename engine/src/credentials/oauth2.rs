//! OAuth 2.0 from the spec alone: authorization URL, code exchange, post-exchange steps,
//! captured values, refresh before expiry and on a 401.
//!
//! The `oauth2` crate provides the PKCE challenge and the CSRF `state`. Token requests and
//! responses are built from the spec's knobs (client authentication, parameter names, envelope,
//! errors inside HTTP 200, expiry as `expires_in` or `expires_at`, exchange chains), which the
//! crate's standard exchange cannot express; they go through the engine's own HTTP client, so
//! the host allowlist, the sandbox and retries apply to them too.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::decode::decode;
use crate::decode::document::Node;
use crate::events::Observer;
use crate::extract::CompiledPath;
use crate::http::{Authorizer, HttpClient, HttpError, HttpRequest, RequestBody, Response};
use crate::spec::{
    Capture, ClientAuth, Decode, Grant, OAuth2Auth, Pkce, Refresh, RevocationMethod,
    RevocationRequest, Template, TokenMethod, TokenRequest, TokenResponse,
};
use crate::template::Templates;

/// The deployment's OAuth client: operators supply it, specs never contain it.
#[derive(Clone)]
pub struct OAuthClient {
    /// The client id.
    pub id: String,
    /// The client secret; public clients (PKCE only) have none.
    pub secret: Option<String>,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// An integration's tokens. Never printed: `Debug` redacts them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// The refresh token, if the provider issued one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires; `None` for tokens that do not.
    #[serde(default)]
    pub expires_at: Option<jiff::Timestamp>,
    /// When the refresh token itself expires, for providers that say.
    #[serde(default)]
    pub refresh_expires_at: Option<jiff::Timestamp>,
    /// The scopes granted.
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Why an OAuth step failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The spec's grant or endpoints do not allow this step.
    #[error("{0}")]
    Unsupported(String),
    /// The callback's `state` is not the one sent: a forged or stale callback.
    #[error(
        "the callback's state does not match the authorization request (a forged or stale callback); start again"
    )]
    StateMismatch,
    /// The user or provider refused the authorization.
    #[error("the provider refused the authorization: {0}")]
    Denied(String),
    /// The callback has no `code`.
    #[error("the callback has no authorization code")]
    MissingCode,
    /// The token endpoint said no (HTTP error or an error inside HTTP 200).
    #[error("the token endpoint refused: {0}")]
    Rejected(String),
    /// The token response lacks the access token.
    #[error("the token response has no access token at `{0}`")]
    NoAccessToken(String),
    /// Sending the token request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A template in a token request failed.
    #[error("a token request template failed: {0}")]
    Template(String),
    /// The tokens cannot be renewed; the user must connect again. Imported data is kept.
    #[error("the connection needs to be authorized again: {0}")]
    NeedsReauth(String),
}

/// A started authorization: send the user to `url`, keep `state` and `pkce_verifier` for the
/// callback.
#[derive(Debug, Clone)]
pub struct AuthorizationStart {
    /// The provider's authorization URL with every parameter.
    pub url: url::Url,
    /// The CSRF state the callback must carry back.
    pub state: String,
    /// The PKCE verifier, when PKCE is used.
    pub pkce_verifier: Option<String>,
}

/// A completed authorization.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The tokens.
    pub tokens: TokenSet,
    /// Values captured for the integration's config.
    pub captured: Map<String, Value>,
}

fn scope_text(oauth: &OAuth2Auth, scopes: &[String]) -> String {
    scopes.join(oauth.scope_separator.as_str())
}

/// The authorization URL for `client`, returning to `redirect_uri`.
pub fn authorization_url(
    oauth: &OAuth2Auth,
    client: &OAuthClient,
    redirect_uri: &str,
) -> Result<AuthorizationStart, OAuthError> {
    if oauth.grant != Grant::AuthorizationCode {
        return Err(OAuthError::Unsupported(
            "this connector uses the client credentials grant; it has no authorization URL"
                .to_owned(),
        ));
    }
    let base = oauth
        .authorization_url
        .as_ref()
        .ok_or_else(|| OAuthError::Unsupported("the spec has no authorization_url".to_owned()))?;
    let mut url = url::Url::parse(base.as_str())
        .map_err(|error| OAuthError::Unsupported(error.to_string()))?;
    let state = oauth2::CsrfToken::new_random().secret().clone();
    let mut pkce_verifier = None;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("response_type", "code");
        query.append_pair(&oauth.param_names.client_id, &client.id);
        query.append_pair("redirect_uri", redirect_uri);
        if !oauth.scopes.is_empty() {
            query.append_pair("scope", &scope_text(oauth, &oauth.scopes));
        }
        for (param, scopes) in &oauth.extra_scopes {
            query.append_pair(param, &scope_text(oauth, scopes));
        }
        query.append_pair("state", &state);
        if oauth.pkce != Pkce::Off {
            let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
            query.append_pair("code_challenge", challenge.as_str());
            query.append_pair("code_challenge_method", "S256");
            pkce_verifier = Some(verifier.secret().clone());
        }
        for (name, value) in &oauth.authorization_params {
            query.append_pair(name, value);
        }
    }
    Ok(AuthorizationStart {
        url,
        state,
        pkce_verifier,
    })
}

/// Adds the client's credentials to token requests as HTTP Basic, when the spec says so.
struct ClientBasic(Option<(String, String)>);

impl Authorizer for ClientBasic {
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.0 {
            Some((id, secret)) => request.basic_auth(id, Some(secret)),
            None => request,
        }
    }
}

/// Sends token requests for one connector.
pub struct TokenEndpoint<'a> {
    oauth: &'a OAuth2Auth,
    client: &'a OAuthClient,
    http: &'a HttpClient,
    observer: &'a dyn Observer,
}

impl<'a> TokenEndpoint<'a> {
    /// Token requests of `oauth` for `client`, sent through `http`.
    pub fn new(
        oauth: &'a OAuth2Auth,
        client: &'a OAuthClient,
        http: &'a HttpClient,
        observer: &'a dyn Observer,
    ) -> Self {
        Self {
            oauth,
            client,
            http,
            observer,
        }
    }

    /// A standard token request: `params` plus the client's credentials as the spec says.
    async fn standard(
        &self,
        url: &str,
        mut params: Vec<(String, String)>,
    ) -> Result<Value, OAuthError> {
        let secret = self.client.secret.clone().unwrap_or_default();
        let basic = match self.oauth.client_auth {
            ClientAuth::Basic | ClientAuth::BasicJson => {
                ClientBasic(Some((self.client.id.clone(), secret)))
            }
            ClientAuth::Post | ClientAuth::Json => {
                params.push((
                    self.oauth.param_names.client_id.clone(),
                    self.client.id.clone(),
                ));
                if let Some(secret) = &self.client.secret {
                    params.push((self.oauth.param_names.client_secret.clone(), secret.clone()));
                }
                ClientBasic(None)
            }
        };
        let body = match self.oauth.client_auth {
            ClientAuth::Json | ClientAuth::BasicJson => RequestBody::Json(Value::Object(
                params
                    .into_iter()
                    .map(|(name, value)| (name, Value::String(value)))
                    .collect(),
            )),
            ClientAuth::Post | ClientAuth::Basic => RequestBody::Form(params),
        };
        let request = HttpRequest {
            method: reqwest::Method::POST,
            url: url::Url::parse(url)
                .map_err(|error| OAuthError::Unsupported(error.to_string()))?,
            headers: vec![("Accept".to_owned(), "application/json".to_owned())],
            body: Some(body),
            max_body: None,
        };
        self.send(&request, &basic).await
    }

    async fn send(
        &self,
        request: &HttpRequest,
        auth: &dyn Authorizer,
    ) -> Result<Value, OAuthError> {
        let json = |response: Response| {
            decode(Decode::Json, &response.body)
                .map(|document| document.to_value())
                .map_err(|error| error.to_string())
        };
        match self.http.fetch(request, auth, self.observer, json).await {
            Ok(value) => Ok(value),
            Err(HttpError::Status { status, excerpt }) => {
                Err(OAuthError::Rejected(format!("{status}: {excerpt}")))
            }
            Err(HttpError::Unauthorized { excerpt }) => {
                Err(OAuthError::Rejected(format!("401: {excerpt}")))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// What the spec's own token and revocation requests see: `token`, `client`, `config`.
    fn template_context(
        &self,
        tokens: Option<&TokenSet>,
        config: &Map<String, Value>,
    ) -> minijinja::Value {
        minijinja::context! {
            token => minijinja::context! {
                access_token => tokens.map(|tokens| tokens.access_token.clone()),
                refresh_token => tokens.and_then(|tokens| tokens.refresh_token.clone()),
            },
            client => minijinja::context! { id => self.client.id.clone(), secret => self.client.secret.clone() },
            config => minijinja::Value::from(minijinja::value::Serde(config)),
        }
    }

    /// A request of the spec's own design (`post_exchange`, exchange refresh).
    async fn custom(
        &self,
        request: &TokenRequest,
        tokens: Option<&TokenSet>,
        config: &Map<String, Value>,
    ) -> Result<Value, OAuthError> {
        let context = self.template_context(tokens, config);
        let mut templates = Templates::default();
        let mut params = Vec::with_capacity(request.params.len());
        for (name, value) in &request.params {
            let id = templates
                .add(value.as_str())
                .map_err(|error| OAuthError::Template(error.to_string()))?;
            params.push((
                name.clone(),
                templates
                    .render(&id, &context)
                    .map_err(|error| OAuthError::Template(error.to_string()))?,
            ));
        }
        let mut url = url::Url::parse(request.url.as_str())
            .map_err(|error| OAuthError::Unsupported(error.to_string()))?;
        let (method, body) = match request.method {
            TokenMethod::Get => {
                url.query_pairs_mut().extend_pairs(&params);
                (reqwest::Method::GET, None)
            }
            TokenMethod::Post => (reqwest::Method::POST, Some(RequestBody::Form(params))),
        };
        let http_request = HttpRequest {
            method,
            url,
            headers: vec![("Accept".to_owned(), "application/json".to_owned())],
            body,
            max_body: None,
        };
        self.send(&http_request, &ClientBasic(None)).await
    }

    /// Completes an authorization from the callback's query parameters.
    pub async fn complete(
        &self,
        redirect_uri: &str,
        callback: &HashMap<String, String>,
        started: &AuthorizationStart,
    ) -> Result<Authorized, OAuthError> {
        if callback.get("state") != Some(&started.state) {
            return Err(OAuthError::StateMismatch);
        }
        if let Some(error) = callback.get("error") {
            let description = callback
                .get("error_description")
                .map(|text| format!(": {text}"))
                .unwrap_or_default();
            return Err(OAuthError::Denied(format!("{error}{description}")));
        }
        let code = callback.get("code").ok_or(OAuthError::MissingCode)?;
        let mut params = vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.clone()),
            ("redirect_uri".to_owned(), redirect_uri.to_owned()),
        ];
        if let Some(verifier) = &started.pkce_verifier {
            params.push(("code_verifier".to_owned(), verifier.clone()));
        }
        let (body, mut tokens) = self.grant(params).await?;

        let mut captured = Map::new();
        for (name, capture) in &self.oauth.capture {
            let value = match capture {
                Capture::Callback(param) => callback
                    .get(param)
                    .map(|value| Value::String(value.clone())),
                Capture::TokenResponse(path) => select(path.as_str(), &body),
            };
            if let Some(value) = value {
                captured.insert(name.clone(), value);
            }
        }
        for step in &self.oauth.post_exchange {
            let body = self.custom(step, Some(&tokens), &captured).await?;
            tokens = parse_token_response(&step.response, &body, Some(&tokens))?;
        }
        Ok(Authorized { tokens, captured })
    }

    /// Tokens for the client credentials grant.
    pub async fn client_credentials(&self) -> Result<TokenSet, OAuthError> {
        let mut params = vec![("grant_type".to_owned(), "client_credentials".to_owned())];
        if !self.oauth.scopes.is_empty() {
            params.push((
                "scope".to_owned(),
                scope_text(self.oauth, &self.oauth.scopes),
            ));
        }
        self.grant(params).await.map(|(_, tokens)| tokens)
    }

    /// Revokes the integration's tokens at the spec's RFC 7009 endpoint (on disconnect): the
    /// refresh token when there is one, since revoking it ends the whole grant, else the access
    /// token. `Ok(false)` when the provider has no revocation endpoint.
    pub async fn revoke(
        &self,
        tokens: &TokenSet,
        config: &Map<String, Value>,
    ) -> Result<bool, OAuthError> {
        if let Some(request) = &self.oauth.revocation {
            self.revocation_request(request, tokens, config).await?;
            return Ok(true);
        }
        let Some(url) = &self.oauth.revocation_url else {
            return Ok(false);
        };
        let (token, hint) = match &tokens.refresh_token {
            Some(refresh_token) => (refresh_token.clone(), "refresh_token"),
            None => (tokens.access_token.clone(), "access_token"),
        };
        let params = vec![
            ("token".to_owned(), token),
            ("token_type_hint".to_owned(), hint.to_owned()),
        ];
        // RFC 7009 answers 200 with an empty body; anything 2xx means revoked.
        self.standard(url.as_str(), params).await?;
        Ok(true)
    }

    /// The spec's own revocation request. Answers are not parsed: any 2xx means revoked.
    async fn revocation_request(
        &self,
        request: &RevocationRequest,
        tokens: &TokenSet,
        config: &Map<String, Value>,
    ) -> Result<(), OAuthError> {
        let context = self.template_context(Some(tokens), config);
        let mut templates = Templates::default();
        let mut render = |value: &Template| {
            let id = templates
                .add(value.as_str())
                .map_err(|error| OAuthError::Template(error.to_string()))?;
            templates
                .render(&id, &context)
                .map_err(|error| OAuthError::Template(error.to_string()))
        };
        let params = request
            .params
            .iter()
            .map(|(name, value)| Ok((name.clone(), render(value)?)))
            .collect::<Result<Vec<_>, OAuthError>>()?;
        let mut headers = request
            .headers
            .iter()
            .map(|(name, value)| Ok((name.clone(), render(value)?)))
            .collect::<Result<Vec<_>, OAuthError>>()?;
        headers.push(("Accept".to_owned(), "application/json".to_owned()));
        let mut url = url::Url::parse(request.url.as_str())
            .map_err(|error| OAuthError::Unsupported(error.to_string()))?;
        let (method, body) = match request.method {
            RevocationMethod::Post => (reqwest::Method::POST, Some(RequestBody::Form(params))),
            RevocationMethod::Get | RevocationMethod::Delete => {
                if !params.is_empty() {
                    url.query_pairs_mut().extend_pairs(&params);
                }
                let method = if request.method == RevocationMethod::Get {
                    reqwest::Method::GET
                } else {
                    reqwest::Method::DELETE
                };
                (method, None)
            }
        };
        let http_request = HttpRequest {
            method,
            url,
            headers,
            body,
            max_body: None,
        };
        self.send(&http_request, &ClientBasic(None)).await.map(drop)
    }

    /// A first-token grant at the token endpoint: `params` plus the spec's `token_params`.
    /// Returns the raw response too, for values the spec captures from it.
    async fn grant(
        &self,
        mut params: Vec<(String, String)>,
    ) -> Result<(Value, TokenSet), OAuthError> {
        params.extend(
            self.oauth
                .token_params
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        let body = self.standard(self.oauth.token_url.as_str(), params).await?;
        let tokens = parse_token_response(&self.oauth.token_response, &body, None)?;
        Ok((body, tokens))
    }

    /// Renews `tokens`. A refusal means the user must connect again: [`OAuthError::NeedsReauth`].
    pub async fn refresh(
        &self,
        tokens: &TokenSet,
        config: &Map<String, Value>,
    ) -> Result<TokenSet, OAuthError> {
        let refusal = |error: OAuthError| match error {
            OAuthError::Rejected(reason) => OAuthError::NeedsReauth(reason),
            other => other,
        };
        match &self.oauth.refresh {
            Refresh::None => Err(OAuthError::NeedsReauth(
                "the provider's tokens cannot be refreshed".to_owned(),
            )),
            Refresh::RefreshToken { .. } => {
                if self.oauth.grant == Grant::ClientCredentials {
                    return self.client_credentials().await.map_err(refusal);
                }
                let refresh_token = tokens.refresh_token.clone().ok_or_else(|| {
                    OAuthError::NeedsReauth("the provider issued no refresh token".to_owned())
                })?;
                if tokens
                    .refresh_expires_at
                    .is_some_and(|expiry| expiry <= jiff::Timestamp::now())
                {
                    return Err(OAuthError::NeedsReauth(
                        "the refresh token has expired".to_owned(),
                    ));
                }
                let params = vec![
                    ("grant_type".to_owned(), "refresh_token".to_owned()),
                    ("refresh_token".to_owned(), refresh_token),
                ];
                let url = self
                    .oauth
                    .refresh_url
                    .as_ref()
                    .unwrap_or(&self.oauth.token_url);
                let body = self.standard(url.as_str(), params).await.map_err(refusal)?;
                parse_token_response(&self.oauth.token_response, &body, Some(tokens))
                    .map_err(refusal)
            }
            Refresh::Exchange { request, .. } => {
                let body = self
                    .custom(request, Some(tokens), config)
                    .await
                    .map_err(refusal)?;
                parse_token_response(&request.response, &body, Some(tokens)).map_err(refusal)
            }
        }
    }
}

/// What `path` selects in `value` (token responses are small: a copy is simplest).
fn select(path: &str, value: &Value) -> Option<Value> {
    let node = Node::from(value);
    CompiledPath::compile(path)
        .ok()?
        .first_in(&node)
        .map(Value::from)
}

fn text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.is_empty() => Some(text),
        Value::Number(number) => Some(number.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

fn seconds(value: Option<Value>) -> Option<i64> {
    match value? {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().map(|seconds| seconds as i64)),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a token response as the spec describes it. Values the response omits are kept from
/// `previous` (a refresh that does not rotate the refresh token keeps the old one).
pub fn parse_token_response(
    spec: &TokenResponse,
    body: &Value,
    previous: Option<&TokenSet>,
) -> Result<TokenSet, OAuthError> {
    if let Some(condition) = &spec.error {
        let mut templates = Templates::default();
        let id = templates
            .add_condition(condition.as_str())
            .map_err(|error| OAuthError::Template(error.to_string()))?;
        let context = minijinja::context! { response => minijinja::Value::from(minijinja::value::Serde(body)) };
        if templates
            .test(&id, &context)
            .map_err(|error| OAuthError::Template(error.to_string()))?
        {
            let message = spec
                .error_message
                .as_ref()
                .and_then(|path| text(select(path.as_str(), body)))
                .unwrap_or_else(|| body.to_string());
            return Err(OAuthError::Rejected(message));
        }
    }
    let enveloped;
    let root = match &spec.envelope {
        Some(envelope) => {
            enveloped = select(envelope.as_str(), body).unwrap_or(Value::Null);
            &enveloped
        }
        None => body,
    };
    let access_token = text(select(spec.access_token.as_str(), root))
        .ok_or_else(|| OAuthError::NoAccessToken(spec.access_token.to_string()))?;
    let now = jiff::Timestamp::now();
    let after = |secs: i64| now.checked_add(jiff::SignedDuration::from_secs(secs)).ok();
    let expires_at = spec
        .expires_at
        .as_ref()
        .and_then(|path| seconds(select(path.as_str(), root)))
        .and_then(|epoch| jiff::Timestamp::from_second(epoch).ok())
        .or_else(|| seconds(select(spec.expires_in.as_str(), root)).and_then(after));
    let refresh_token = text(select(spec.refresh_token.as_str(), root))
        .or_else(|| previous.and_then(|tokens| tokens.refresh_token.clone()));
    let refresh_expires_at = spec
        .refresh_expires_in
        .as_ref()
        .and_then(|path| seconds(select(path.as_str(), root)))
        .and_then(after)
        .or_else(|| previous.and_then(|tokens| tokens.refresh_expires_at));
    let scope = text(select(spec.scope.as_str(), root))
        .or_else(|| previous.and_then(|tokens| tokens.scope.clone()));
    Ok(TokenSet {
        access_token,
        refresh_token,
        expires_at,
        refresh_expires_at,
        scope,
    })
}

/// Called with the new tokens after every refresh, to store them (encrypted). It is awaited
/// before the new tokens are used: a rotated refresh token must be saved before the old one is
/// forgotten, or a crash would force the user to connect again.
pub type OnRefresh =
    Box<dyn Fn(TokenSet) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Bearer credentials that renew themselves: before they expire (with the spec's buffer) and
/// once after a 401.
pub struct OAuthAuthorizer {
    oauth: OAuth2Auth,
    client: OAuthClient,
    http: HttpClient,
    config: Map<String, Value>,
    tokens: RwLock<TokenSet>,
    refreshing: tokio::sync::Mutex<()>,
    on_refresh: Option<OnRefresh>,
    observer: Arc<dyn Observer>,
}

impl OAuthAuthorizer {
    /// Credentials for one integration. `http` must allow the token endpoint's host.
    pub fn new(
        oauth: OAuth2Auth,
        client: OAuthClient,
        http: HttpClient,
        config: Map<String, Value>,
        tokens: TokenSet,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            oauth,
            client,
            http,
            config,
            tokens: RwLock::new(tokens),
            refreshing: tokio::sync::Mutex::new(()),
            on_refresh: None,
            observer,
        }
    }

    /// Calls `on_refresh` with every renewed token set.
    pub fn on_refresh(mut self, on_refresh: OnRefresh) -> Self {
        self.on_refresh = Some(on_refresh);
        self
    }

    /// The current tokens.
    pub fn tokens(&self) -> TokenSet {
        self.tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn buffer(&self) -> jiff::SignedDuration {
        let buffer = match &self.oauth.refresh {
            Refresh::RefreshToken { buffer } | Refresh::Exchange { buffer, .. } => buffer.get(),
            Refresh::None => std::time::Duration::ZERO,
        };
        jiff::SignedDuration::try_from(buffer).unwrap_or(jiff::SignedDuration::ZERO)
    }

    fn expiring(&self) -> bool {
        let tokens = self
            .tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let limit = jiff::Timestamp::now()
            .checked_add(self.buffer())
            .unwrap_or_else(|_| jiff::Timestamp::now());
        tokens.expires_at.is_some_and(|expiry| expiry <= limit)
            && self.oauth.refresh != Refresh::None
    }

    /// Renews the tokens unless another task just did (`seen` is the access token it saw fail).
    async fn renew(&self, seen: &str) -> Result<bool, String> {
        let _guard = self.refreshing.lock().await;
        let current = self.tokens();
        if current.access_token != seen {
            return Ok(true);
        }
        let endpoint = TokenEndpoint::new(
            &self.oauth,
            &self.client,
            &self.http,
            self.observer.as_ref(),
        );
        match endpoint.refresh(&current, &self.config).await {
            Ok(tokens) => {
                if let Some(on_refresh) = &self.on_refresh {
                    on_refresh(tokens.clone()).await;
                }
                *self
                    .tokens
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = tokens;
                Ok(true)
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

impl Authorizer for OAuthAuthorizer {
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let token = self
            .tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .access_token
            .clone();
        request.bearer_auth(token)
    }

    fn prepare(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if self.expiring() {
                let seen = self.tokens().access_token;
                self.renew(&seen).await?;
            }
            Ok(())
        })
    }

    fn refresh(&self) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + '_>> {
        Box::pin(async move {
            if self.oauth.refresh == Refresh::None {
                return Ok(false);
            }
            let seen = self.tokens().access_token;
            self.renew(&seen).await
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn token_responses_with_envelopes_absolute_expiry_and_kept_refresh_tokens() {
        let slack = TokenResponse {
            envelope: Some("$.authed_user".into()),
            ..TokenResponse::default()
        };
        let body = json!({"ok": true, "access_token": "xoxb-bot", "authed_user": {"id": "U1", "scope": "search:read", "access_token": "xoxp-user", "token_type": "user"}});
        let tokens = parse_token_response(&slack, &body, None).unwrap();
        assert_eq!(tokens.access_token, "xoxp-user");
        assert_eq!(
            tokens.expires_at, None,
            "no expiry means the token does not expire"
        );

        let strava = TokenResponse {
            expires_at: Some("$.expires_at".into()),
            ..TokenResponse::default()
        };
        let body = json!({"token_type": "Bearer", "expires_at": 1_900_000_000, "expires_in": 21600, "refresh_token": "r2", "access_token": "a2"});
        assert_eq!(
            parse_token_response(&strava, &body, None)
                .unwrap()
                .expires_at,
            Some(jiff::Timestamp::from_second(1_900_000_000).unwrap())
        );

        let previous = TokenSet {
            access_token: "a1".into(),
            refresh_token: Some("r1".into()),
            expires_at: None,
            refresh_expires_at: None,
            scope: Some("s".into()),
        };
        let rotated = parse_token_response(
            &TokenResponse::default(),
            &json!({"access_token": "a2", "expires_in": "3600"}),
            Some(&previous),
        )
        .unwrap();
        assert_eq!(
            rotated.refresh_token.as_deref(),
            Some("r1"),
            "a response without a refresh token keeps the old one"
        );
        assert!(
            rotated.expires_at.is_some(),
            "expires_in as a string is read"
        );
    }

    #[test]
    fn errors_inside_http_200_are_refusals() {
        let slack = TokenResponse {
            error: Some("response.ok == false".into()),
            error_message: Some("$.error".into()),
            ..TokenResponse::default()
        };
        let error =
            parse_token_response(&slack, &json!({"ok": false, "error": "invalid_code"}), None)
                .unwrap_err();
        assert!(
            matches!(error, OAuthError::Rejected(ref message) if message == "invalid_code"),
            "{error}"
        );
    }

    #[test]
    fn token_sets_never_print_their_tokens() {
        let tokens = TokenSet {
            access_token: "secret-a".into(),
            refresh_token: Some("secret-r".into()),
            expires_at: None,
            refresh_expires_at: None,
            scope: None,
        };
        let printed = format!("{tokens:?}");
        assert!(
            !printed.contains("secret-a") && !printed.contains("secret-r"),
            "{printed}"
        );
    }
}

// Connecting an account, and signing, revoking with it: what `super` dispatches to.

/// A browser authorization under way: what the callback needs.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Where the person authorizes.
    pub url: String,
    /// The CSRF state the callback must carry back.
    pub state: String,
    /// The PKCE verifier, when PKCE is used.
    pub pkce_verifier: Option<String>,
    /// The redirect URI sent, which the code exchange must repeat.
    pub redirect_uri: String,
}

/// How `oauth`'s accounts are connected: by the grant it uses.
pub fn connect_mode(oauth: &OAuth2Auth) -> super::ConnectMode {
    match oauth.grant {
        Grant::AuthorizationCode => super::ConnectMode::Browser,
        Grant::ClientCredentials => super::ConnectMode::Client,
    }
}

/// Starts the authorization code flow.
pub fn start(
    oauth: &OAuth2Auth,
    client: &OAuthClient,
    redirect_uri: &str,
) -> Result<Pending, super::ConnectError> {
    let start = authorization_url(oauth, client, redirect_uri)
        .map_err(|error| super::ConnectError::Provider(error.to_string()))?;
    Ok(Pending {
        url: start.url.into(),
        state: start.state,
        pkce_verifier: start.pkce_verifier,
        redirect_uri: redirect_uri.to_owned(),
    })
}

/// Finishes the authorization code flow with the provider's redirect.
pub async fn finish(
    oauth: &OAuth2Auth,
    client: &OAuthClient,
    http: &HttpClient,
    pending: &Pending,
    callback: &HashMap<String, String>,
) -> Result<super::Granted, super::ConnectError> {
    let url = url::Url::parse(&pending.url)
        .map_err(|error| super::ConnectError::Refused(error.to_string()))?;
    let start = AuthorizationStart {
        url,
        state: pending.state.clone(),
        pkce_verifier: pending.pkce_verifier.clone(),
    };
    let counters = crate::events::Counters::default();
    let authorized = TokenEndpoint::new(oauth, client, http, &counters)
        .complete(&pending.redirect_uri, callback, &start)
        .await
        .map_err(connect_error)?;
    Ok(granted(authorized.tokens, authorized.captured))
}

/// Connects with the client credentials grant.
pub async fn connect_client(
    oauth: &OAuth2Auth,
    client: &OAuthClient,
    http: &HttpClient,
) -> Result<super::Granted, super::ConnectError> {
    let counters = crate::events::Counters::default();
    let tokens = TokenEndpoint::new(oauth, client, http, &counters)
        .client_credentials()
        .await
        .map_err(connect_error)?;
    Ok(granted(tokens, Map::new()))
}

fn connect_error(error: OAuthError) -> super::ConnectError {
    match error {
        OAuthError::StateMismatch | OAuthError::Denied(_) | OAuthError::MissingCode => {
            super::ConnectError::Refused(error.to_string())
        }
        _ => super::ConnectError::Provider(error.to_string()),
    }
}

fn granted(tokens: TokenSet, captured: Map<String, Value>) -> super::Granted {
    super::Granted {
        secret: serde_json::to_vec(&tokens).unwrap_or_default(),
        config: captured,
        scopes: tokens.scope.clone(),
        expires_at: tokens.expires_at,
    }
}

/// Self-renewing credentials from the sealed `tokens`, opened.
pub fn authorizer(
    oauth: &OAuth2Auth,
    tokens: &[u8],
    client: OAuthClient,
    http: &HttpClient,
    config: &Map<String, Value>,
) -> Result<OAuthAuthorizer, String> {
    Ok(OAuthAuthorizer::new(
        oauth.clone(),
        client,
        http.clone(),
        config.clone(),
        super::tokens_from(tokens)?,
        Arc::new(crate::events::Counters::default()),
    ))
}

/// Revokes the grant of the sealed `tokens`, opened.
pub async fn revoke(
    oauth: &OAuth2Auth,
    tokens: &[u8],
    client: &OAuthClient,
    http: &HttpClient,
    config: &Map<String, Value>,
) -> Result<bool, String> {
    let tokens: TokenSet = super::tokens_from(tokens)?;
    TokenEndpoint::new(oauth, client, http, &crate::events::Counters::default())
        .revoke(&tokens, config)
        .await
        .map_err(|error| error.to_string())
}
