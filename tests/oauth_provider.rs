//! A loopback OAuth 2.0 provider whose quirks are set per test, with a protected API.
//!
//! It checks what real providers check (client authentication in the configured style, the
//! redirect URI, the PKCE verifier against the challenge, the state echoed back by the engine)
//! and answers in the configured shape, so every quirk runs the engine's real code path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};

/// How the client must authenticate at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthStyle {
    /// Form body fields.
    Post,
    /// HTTP Basic, form body.
    Basic,
    /// HTTP Basic, JSON body (Notion).
    BasicJson,
}

/// The token response's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{access_token, refresh_token, expires_in, scope}`.
    Standard,
    /// Strava: `expires_at` (epoch seconds) and `athlete: {id}`.
    ExpiresAtWithAthlete,
    /// Slack: `{ok, authed_user: {access_token, scope}}`, no expiry.
    SlackEnvelope,
    /// Notion: `{access_token, workspace_id, ...}`, no expiry, no refresh token.
    NonExpiring,
}

/// The provider's behaviour.
#[derive(Debug, Clone)]
pub struct Quirks {
    pub client_auth: ClientAuthStyle,
    pub client_id_param: &'static str,
    pub require_pkce: bool,
    pub shape: Shape,
    /// Each refresh issues a new refresh token (and revokes the old one).
    pub rotate_refresh_tokens: bool,
    /// Extra query parameters on the callback (QuickBooks `realmId`).
    pub callback_extra: Vec<(&'static str, &'static str)>,
    /// Slack: answer the code exchange with `ok: false`.
    pub fail_exchange_in_200: bool,
    /// QuickBooks: the refresh token's own lifetime in seconds, as `x_refresh_token_expires_in`.
    pub refresh_token_lifetime: Option<i64>,
}

impl Default for Quirks {
    fn default() -> Self {
        Self {
            client_auth: ClientAuthStyle::Post,
            client_id_param: "client_id",
            require_pkce: false,
            shape: Shape::Standard,
            rotate_refresh_tokens: false,
            callback_extra: vec![],
            fail_exchange_in_200: false,
            refresh_token_lifetime: None,
        }
    }
}

pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "test-secret";

/// What the provider has seen and issued.
#[derive(Debug, Default)]
pub struct Ledger {
    /// code → (redirect_uri, code_challenge)
    codes: HashMap<String, (String, Option<String>)>,
    /// Access tokens the API accepts.
    pub valid_access: Vec<String>,
    /// Refresh tokens the token endpoint accepts.
    pub valid_refresh: Vec<String>,
    /// Every authorization request's query, for assertions.
    pub authorize_queries: Vec<HashMap<String, String>>,
    /// Every token request's fields (form or JSON), for assertions.
    pub token_requests: Vec<HashMap<String, String>>,
    pub refreshes: usize,
    counter: usize,
}

impl Ledger {
    fn issue(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    /// Expires every access token, as time passing would.
    pub fn expire_access_tokens(&mut self) {
        self.valid_access.clear();
    }

    /// Revokes every refresh token, as a user removing the app would.
    pub fn revoke_refresh_tokens(&mut self) {
        self.valid_refresh.clear();
    }
}

#[derive(Clone)]
struct Provider {
    quirks: Arc<Quirks>,
    ledger: Arc<Mutex<Ledger>>,
}

/// Starts the provider; returns its URL and its ledger.
pub async fn start(quirks: Quirks) -> (url::Url, Arc<Mutex<Ledger>>) {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let provider = Provider {
        quirks: Arc::new(quirks),
        ledger: Arc::clone(&ledger),
    };
    let app = axum::Router::new()
        .route("/authorize", get(authorize))
        .route("/token", axum::routing::post(token))
        .route("/revoke", axum::routing::post(revoke))
        .route("/2/auth/token/revoke", axum::routing::post(revoke_bearer))
        .route(
            "/api/v1/access_tokens",
            axum::routing::delete(revoke_by_query),
        )
        .route("/exchange", get(exchange))
        .route("/api/items", get(items))
        .with_state(provider);
    (hypernet_tests::serve(app).await, ledger)
}

async fn authorize(
    State(provider): State<Provider>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let quirks = &provider.quirks;
    if query.get(quirks.client_id_param).map(String::as_str) != Some(CLIENT_ID) {
        return (
            StatusCode::BAD_REQUEST,
            format!("missing {}", quirks.client_id_param),
        )
            .into_response();
    }
    let challenge = query.get("code_challenge").cloned();
    if quirks.require_pkce
        && (challenge.is_none()
            || query.get("code_challenge_method").map(String::as_str) != Some("S256"))
    {
        return (StatusCode::BAD_REQUEST, "PKCE required").into_response();
    }
    let (Some(redirect), Some(state)) = (query.get("redirect_uri"), query.get("state")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri and state required").into_response();
    };
    let mut ledger = provider.ledger.lock().unwrap();
    ledger.authorize_queries.push(query.clone());
    let code = ledger.issue("code");
    ledger
        .codes
        .insert(code.clone(), (redirect.clone(), challenge));
    let mut target = url::Url::parse(redirect).unwrap();
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state);
    for (name, value) in &quirks.callback_extra {
        target.query_pairs_mut().append_pair(name, value);
    }
    Redirect::to(target.as_str()).into_response()
}

fn fields(headers: &HeaderMap, body: &Bytes, json: bool) -> HashMap<String, String> {
    let mut fields: HashMap<String, String> = if json {
        serde_json::from_slice::<HashMap<String, Value>>(body)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| {
                (
                    key,
                    value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned),
                )
            })
            .collect()
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    };
    if let Some(basic) = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded).into_owned();
        if let Some((id, secret)) = text.split_once(':') {
            fields.insert("basic_id".to_owned(), id.to_owned());
            fields.insert("basic_secret".to_owned(), secret.to_owned());
        }
    }
    fields
}

fn token_body(quirks: &Quirks, access: &str, refresh: Option<&str>) -> Value {
    match quirks.shape {
        Shape::Standard => {
            json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh, "scope": "read"})
        }
        Shape::ExpiresAtWithAthlete => json!({
            "token_type": "Bearer", "expires_at": jiff::Timestamp::now().as_second() + 21600, "expires_in": 21600,
            "refresh_token": refresh, "access_token": access, "athlete": {"id": 134815, "username": "marianne_t"}
        }),
        Shape::SlackEnvelope => json!({
            "ok": true, "app_id": "A0KRD7HC3", "authed_user": {"id": "U1234", "scope": "search:read,channels:history", "access_token": access, "token_type": "user"},
            "team": {"id": "T9TK3CUKW", "name": "Slack Softball Team"}
        }),
        Shape::NonExpiring => {
            json!({"access_token": access, "token_type": "bearer", "bot_id": "b-1", "workspace_id": "ws-42", "workspace_name": "Home", "owner": {"type": "user"}})
        }
    }
}

async fn token(State(provider): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    let quirks = &provider.quirks;
    let json = quirks.client_auth == ClientAuthStyle::BasicJson;
    if json
        != headers.get("content-type").is_some_and(|value| {
            value
                .to_str()
                .unwrap_or_default()
                .starts_with("application/json")
        })
    {
        return (StatusCode::BAD_REQUEST, "wrong body format").into_response();
    }
    let fields = fields(&headers, &body, json);
    let mut ledger = provider.ledger.lock().unwrap();
    ledger.token_requests.push(fields.clone());
    let (id, secret) = match quirks.client_auth {
        ClientAuthStyle::Post => (
            fields.get(quirks.client_id_param),
            fields.get("client_secret"),
        ),
        ClientAuthStyle::Basic | ClientAuthStyle::BasicJson => {
            (fields.get("basic_id"), fields.get("basic_secret"))
        }
    };
    if id.map(String::as_str) != Some(CLIENT_ID)
        || secret.map(String::as_str) != Some(CLIENT_SECRET)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let invalid_grant = || {
        (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}))).into_response()
    };
    match fields.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            if quirks.fail_exchange_in_200 {
                return Json(json!({"ok": false, "error": "invalid_code"})).into_response();
            }
            let Some((redirect, challenge)) = fields
                .get("code")
                .and_then(|code| ledger.codes.remove(code))
            else {
                return invalid_grant();
            };
            if fields.get("redirect_uri") != Some(&redirect) {
                return invalid_grant();
            }
            if let Some(challenge) = challenge {
                use sha2_check::s256;
                if fields.get("code_verifier").map(|verifier| s256(verifier)) != Some(challenge) {
                    return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant", "error_description": "PKCE verification failed"}))).into_response();
                }
            }
            let access = ledger.issue("access");
            let refresh = (quirks.shape != Shape::NonExpiring
                && quirks.shape != Shape::SlackEnvelope)
                .then(|| ledger.issue("refresh"));
            ledger.valid_access.push(access.clone());
            ledger.valid_refresh.extend(refresh.clone());
            let mut body = token_body(quirks, &access, refresh.as_deref());
            if let Some(lifetime) = quirks.refresh_token_lifetime {
                body["x_refresh_token_expires_in"] = json!(lifetime);
            }
            Json(body).into_response()
        }
        Some("refresh_token") => {
            let Some(presented) = fields
                .get("refresh_token")
                .filter(|token| ledger.valid_refresh.contains(token))
                .cloned()
            else {
                return invalid_grant();
            };
            ledger.refreshes += 1;
            let access = ledger.issue("access");
            ledger.valid_access.push(access.clone());
            let refresh = if quirks.rotate_refresh_tokens {
                let fresh = ledger.issue("refresh");
                ledger.valid_refresh.retain(|token| *token != presented);
                ledger.valid_refresh.push(fresh.clone());
                Some(fresh)
            } else {
                None // Google: the old refresh token stays valid and is not repeated.
            };
            Json(token_body(quirks, &access, refresh.as_deref())).into_response()
        }
        Some("client_credentials") => {
            let access = ledger.issue("access");
            ledger.valid_access.push(access.clone());
            Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600}))
                .into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response(),
    }
}

/// RFC 7009: revoking a refresh token ends the grant, its access tokens included.
async fn revoke(State(provider): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = fields(&headers, &body, false);
    let mut ledger = provider.ledger.lock().unwrap();
    ledger.token_requests.push(fields.clone());
    if fields.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let token = fields.get("token").cloned().unwrap_or_default();
    if ledger.valid_refresh.contains(&token) {
        ledger.valid_refresh.clear();
        ledger.valid_access.clear();
    }
    ledger.valid_access.retain(|valid| *valid != token);
    StatusCode::OK.into_response()
}

/// Dropbox's `token/revoke`: the access token itself, as a bearer token, ends the grant.
async fn revoke_bearer(State(provider): State<Provider>, headers: HeaderMap) -> Response {
    let mut ledger = provider.ledger.lock().unwrap();
    let presented = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    ledger
        .token_requests
        .push(HashMap::from([("bearer".to_owned(), presented.clone())]));
    if !ledger.valid_access.contains(&presented) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error_summary": "invalid_access_token/"})),
        )
            .into_response();
    }
    ledger.valid_refresh.clear();
    ledger.valid_access.clear();
    Json(Value::Null).into_response()
}

/// Todoist's `DELETE /api/v1/access_tokens?client_id=&client_secret=&access_token=`.
async fn revoke_by_query(
    State(provider): State<Provider>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut ledger = provider.ledger.lock().unwrap();
    ledger.token_requests.push(query.clone());
    let presented = query.get("access_token").cloned().unwrap_or_default();
    if query.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        || !ledger.valid_access.contains(&presented)
    {
        return StatusCode::FORBIDDEN.into_response();
    }
    ledger.valid_refresh.clear();
    ledger.valid_access.clear();
    StatusCode::NO_CONTENT.into_response()
}

/// Instagram's GET exchanges: short-lived → long-lived token, and refresh of a long-lived one.
async fn exchange(
    State(provider): State<Provider>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut ledger = provider.ledger.lock().unwrap();
    let presented = query.get("access_token").cloned().unwrap_or_default();
    if !ledger.valid_access.contains(&presented)
        && query.get("grant_type").map(String::as_str) == Some("ig_exchange_token")
    {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"message": "Invalid OAuth access token", "type": "OAuthException", "code": 190}}))).into_response();
    }
    let secret_ok = query.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    let access = match query.get("grant_type").map(String::as_str) {
        Some("ig_exchange_token") if secret_ok => ledger.issue("long-lived"),
        Some("ig_refresh_token") if ledger.valid_refresh.contains(&presented) => {
            ledger.refreshes += 1;
            ledger.issue("long-lived")
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": "Invalid request", "code": 100}})),
            )
                .into_response();
        }
    };
    ledger.valid_access.push(access.clone());
    // A long-lived token refreshes itself: it is both the access and the refresh credential.
    ledger.valid_refresh.push(access.clone());
    Json(json!({"access_token": access, "token_type": "bearer", "expires_in": 5_183_944}))
        .into_response()
}

async fn items(State(provider): State<Provider>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !provider
        .ledger
        .lock()
        .unwrap()
        .valid_access
        .iter()
        .any(|valid| valid == token)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    }
    Json(json!({"items": [{"id": "n1", "title": "First"}, {"id": "n2", "title": "Second"}]}))
        .into_response()
}

/// PKCE S256, computed independently of the engine's `oauth2` crate.
mod sha2_check {
    use base64::Engine as _;
    use sha2::Digest as _;

    pub fn s256(verifier: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    }
}
