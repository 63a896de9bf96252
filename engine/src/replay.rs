//! Recorded HTTP exchanges, and a loopback server that replays them.
//!
//! A fixture is one JSON file in `connectors/<id>/fixtures/`:
//!
//! ```json
//! {
//!   "request": {"method": "GET", "path": "/v1/mediaItems", "query": {"pageSize": "100"}},
//!   "response": {"status": 200, "headers": {"content-type": "application/json"}, "body": {...}}
//! }
//! ```
//!
//! A request matches a fixture when the method and path are equal, the query parameters are
//! exactly the fixture's (order aside), the fixture's `host` (if any) is the intended host, and
//! the fixture's `body` (if any) is contained in the request's JSON body. The response body is
//! `body` (sent as JSON), `body_text` (sent as is: CSV, XML, a truncated document) or
//! `body_file` (a file in the fixtures folder sent as is: a photo, a PDF).
//!
//! The engine reaches the replay through [`crate::http::Transport::Sandbox`], so requests go
//! through the real HTTP client, retries and rate limits included.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use crate::http::SANDBOX_HOST_HEADER;

/// One recorded exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// The file name, set when loaded.
    #[serde(skip)]
    pub name: String,
    /// What the request looks like.
    pub request: FixtureRequest,
    /// What the provider answered.
    pub response: FixtureResponse,
}

/// The request side of a fixture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRequest {
    /// The method.
    #[serde(default = "default_method")]
    pub method: String,
    /// The intended host; any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// The path.
    pub path: String,
    /// The query parameters, exactly.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// A subset of the JSON body.
    #[serde(default)]
    pub body: Option<Value>,
    /// Headers the request carries with exactly these values (names in any case): what tells
    /// requests to one URL apart when the provider puts the argument in a header (Dropbox's
    /// `Dropbox-API-Arg`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// The response side of a fixture.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureResponse {
    /// The status.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body.
    #[serde(default)]
    pub body: Option<Value>,
    /// A body sent as it is.
    #[serde(default)]
    pub body_text: Option<String>,
    /// A file in the fixtures folder (a photo, a PDF), sent as it is.
    #[serde(default)]
    pub body_file: Option<String>,
    /// The bytes of `body_file`, read when the fixture is loaded.
    #[serde(skip)]
    pub body_bytes: Option<Vec<u8>>,
}

fn default_status() -> u16 {
    200
}

/// Why fixtures could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A fixture is malformed.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Loads every `*.json` fixture in `folder`, sorted by name.
pub fn load_fixtures(folder: &Path) -> Result<Vec<Fixture>, ReplayError> {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
        move |source| ReplayError::Io {
            path: path.to_owned(),
            source,
        }
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(io(folder))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let mut fixture: Fixture =
                serde_json::from_str(&text).map_err(|error| ReplayError::Invalid {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            let response = &fixture.response;
            let bodies = [
                response.body.is_some(),
                response.body_text.is_some(),
                response.body_file.is_some(),
            ];
            if bodies.into_iter().filter(|given| *given).count() > 1 {
                return Err(ReplayError::Invalid {
                    path,
                    reason: "a response has one of `body`, `body_text` and `body_file`".to_owned(),
                });
            }
            if let Some(file) = &response.body_file {
                // Only a file inside the fixtures folder: a fixture is part of a contributed
                // connector.
                let inside = Path::new(file)
                    .components()
                    .all(|part| matches!(part, std::path::Component::Normal(_)));
                if !inside {
                    return Err(ReplayError::Invalid {
                        path,
                        reason: format!(
                            "`body_file` `{file}` is not a path inside the fixtures folder"
                        ),
                    });
                }
                let full = folder.join(file);
                fixture.response.body_bytes = Some(std::fs::read(&full).map_err(io(&full))?);
            }
            fixture.name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(fixture)
        })
        .collect()
}

/// Whether `subset` is contained in `value` (objects by key, everything else equal).
fn contains(value: &Value, subset: &Value) -> bool {
    match (value, subset) {
        (Value::Object(value), Value::Object(subset)) => subset
            .iter()
            .all(|(key, wanted)| value.get(key).is_some_and(|found| contains(found, wanted))),
        _ => value == subset,
    }
}

/// A stand-in OAuth provider for the sandbox, built from a connector's `auth` section: its
/// authorization endpoint redirects straight back with a code (and any callback values the spec
/// captures), and its token endpoints answer in the shape the spec's `token_response` reads.
#[derive(Debug, Clone, Default)]
pub struct SandboxOAuth {
    /// For OAuth 1.0a: the request-token and access-token endpoints, and each request token's
    /// callback (given when it was issued, used when the user authorizes).
    oauth1: Option<((String, String), (String, String))>,
    oauth1_callbacks: Arc<Mutex<HashMap<String, String>>>,
    authorize: Option<(String, String)>,
    revocation: Option<(String, String)>,
    captured_params: Vec<String>,
    token_endpoints: Vec<((String, String), crate::spec::TokenResponse)>,
    capture_paths: Vec<String>,
    scopes: String,
}

fn host_and_path(url: &str) -> Option<(String, String)> {
    let url = url::Url::parse(url).ok()?;
    Some((url.host_str()?.to_owned(), url.path().to_owned()))
}

impl SandboxOAuth {
    /// The stand-in for `auth`, or `None` when it is not OAuth 2.0.
    pub fn for_auth(auth: &crate::spec::Auth) -> Option<Self> {
        use crate::spec::{Capture, Refresh};
        let oauth = match auth {
            crate::spec::Auth::OAuth2(oauth) => oauth,
            crate::spec::Auth::OAuth1(oauth) => {
                return Some(Self {
                    oauth1: Some((
                        host_and_path(oauth.request_token_url.as_str())?,
                        host_and_path(oauth.access_token_url.as_str())?,
                    )),
                    authorize: host_and_path(oauth.authorization_url.as_str()),
                    ..Self::default()
                });
            }
            _ => return None,
        };
        let mut endpoints = vec![(
            host_and_path(oauth.token_url.as_str())?,
            oauth.token_response.clone(),
        )];
        if let Some(url) = &oauth.refresh_url {
            endpoints.extend(
                host_and_path(url.as_str())
                    .map(|endpoint| (endpoint, oauth.token_response.clone())),
            );
        }
        for request in oauth.post_exchange.iter().chain(match &oauth.refresh {
            Refresh::Exchange { request, .. } => Some(request.as_ref()),
            _ => None,
        }) {
            endpoints.extend(
                host_and_path(request.url.as_str())
                    .map(|endpoint| (endpoint, request.response.clone())),
            );
        }
        let (mut captured_params, mut capture_paths) = (Vec::new(), Vec::new());
        for capture in oauth.capture.values() {
            match capture {
                Capture::Callback(param) => captured_params.push(param.clone()),
                Capture::TokenResponse(path) => capture_paths.push(path.to_string()),
            }
        }
        Some(Self {
            oauth1: None,
            oauth1_callbacks: Arc::default(),
            authorize: oauth
                .authorization_url
                .as_ref()
                .and_then(|url| host_and_path(url.as_str())),
            revocation: oauth
                .revocation_url
                .as_ref()
                .and_then(|url| host_and_path(url.as_str())),
            captured_params,
            token_endpoints: endpoints,
            capture_paths,
            scopes: oauth.scopes.join(oauth.scope_separator.as_str()),
        })
    }

    fn respond(&self, host: Option<&str>, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        let here = (host?.to_owned(), uri.path().to_owned());
        if let Some((request_token, access_token)) = &self.oauth1 {
            return self.respond_oauth1(&here, uri, headers, request_token, access_token);
        }
        if self.authorize.as_ref() == Some(&here) {
            let query: BTreeMap<String, String> =
                url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                    .into_owned()
                    .collect();
            let mut target = url::Url::parse(query.get("redirect_uri")?).ok()?;
            {
                let mut pairs = target.query_pairs_mut();
                pairs.append_pair(
                    "code",
                    &format!("sandbox-code-{:016x}", rand::random::<u64>()),
                );
                pairs.append_pair("state", query.get("state").map_or("", String::as_str));
                for param in &self.captured_params {
                    pairs.append_pair(param, &format!("sandbox-{param}"));
                }
            }
            return Some(axum::response::Redirect::to(target.as_str()).into_response());
        }
        if self.revocation.as_ref() == Some(&here) {
            return Some(axum::http::StatusCode::OK.into_response());
        }
        let (_, response) = self
            .token_endpoints
            .iter()
            .find(|(endpoint, _)| *endpoint == here)?;
        let mut body = Value::Object(serde_json::Map::new());
        let prefix = response
            .envelope
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "$".to_owned());
        let under = |path: &str| format!("{prefix}{}", path.trim_start_matches('$'));
        set_path(
            &mut body,
            &under(response.access_token.as_str()),
            Value::String(format!("sandbox-access-{:032x}", rand::random::<u128>())),
        );
        set_path(
            &mut body,
            &under(response.refresh_token.as_str()),
            Value::String(format!("sandbox-refresh-{:032x}", rand::random::<u128>())),
        );
        set_path(
            &mut body,
            &under(response.expires_in.as_str()),
            Value::from(3600),
        );
        set_path(
            &mut body,
            &under(response.scope.as_str()),
            Value::String(self.scopes.clone()),
        );
        for path in &self.capture_paths {
            set_path(
                &mut body,
                path,
                Value::String(format!(
                    "sandbox-{}",
                    path.rsplit('.').next().unwrap_or("value")
                )),
            );
        }
        Some(axum::Json(body).into_response())
    }
}

impl SandboxOAuth {
    fn respond_oauth1(
        &self,
        here: &(String, String),
        uri: &Uri,
        headers: &HeaderMap,
        request_token: &(String, String),
        access_token: &(String, String),
    ) -> Option<Response> {
        let form = |body: String| {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )],
                body,
            )
                .into_response()
        };
        let mut callbacks = self
            .oauth1_callbacks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if here == request_token {
            let callback = oauth_header_param(headers, "oauth_callback")?;
            let token = format!("sandbox-request-{:016x}", rand::random::<u64>());
            callbacks.insert(token.clone(), callback);
            let secret = format!("sandbox-request-secret-{:016x}", rand::random::<u64>());
            return Some(form(format!(
                "oauth_token={token}&oauth_token_secret={secret}&oauth_callback_confirmed=true"
            )));
        }
        if self.authorize.as_ref() == Some(here) {
            let query: BTreeMap<String, String> =
                url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                    .into_owned()
                    .collect();
            let token = query.get("oauth_token")?;
            let mut target = url::Url::parse(callbacks.get(token)?).ok()?;
            target
                .query_pairs_mut()
                .append_pair("oauth_token", token)
                .append_pair(
                    "oauth_verifier",
                    &format!("sandbox-verifier-{:08x}", rand::random::<u32>()),
                );
            return Some(axum::response::Redirect::to(target.as_str()).into_response());
        }
        if here == access_token {
            let token = format!("sandbox-access-{:032x}", rand::random::<u128>());
            let secret = format!("sandbox-access-secret-{:032x}", rand::random::<u128>());
            return Some(form(format!(
                "oauth_token={token}&oauth_token_secret={secret}"
            )));
        }
        None
    }
}

/// One parameter of an `Authorization: OAuth ...` header, decoded.
fn oauth_header_param(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("OAuth ")?;
    value.split(", ").find_map(|pair| {
        let (key, quoted) = pair.split_once('=')?;
        (key == name).then(|| {
            percent_encoding::percent_decode_str(quoted.trim_matches('"'))
                .decode_utf8()
                .ok()
                .map(|text| text.into_owned())
        })?
    })
}

/// Writes `value` at a plain `$.a.b` path, creating objects on the way; other paths are skipped.
fn set_path(target: &mut Value, path: &str, value: Value) {
    let Some(rest) = path.strip_prefix("$.") else {
        return;
    };
    let mut node = target;
    let parts: Vec<&str> = rest.split('.').collect();
    for (index, part) in parts.iter().enumerate() {
        let Value::Object(map) = node else {
            return;
        };
        if index + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        node = map
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

#[derive(Debug, Default)]
struct Usage {
    served: Vec<usize>,
    unmatched: Vec<String>,
}

struct State {
    fixtures: Vec<Fixture>,
    oauth: Option<SandboxOAuth>,
    usage: Mutex<Usage>,
}

impl State {
    fn find(
        &self,
        method: &Method,
        uri: &Uri,
        host: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Option<usize> {
        let query: BTreeMap<String, String> =
            url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let json: Option<Value> = serde_json::from_slice(body).ok();
        // When several fixtures match (a first page's body is contained in the next page's,
        // which adds the cursor), the one that asks for most of the body wins; then the first.
        let matching = self.fixtures.iter().enumerate().filter(|(_, fixture)| {
            let request = &fixture.request;
            request.method.eq_ignore_ascii_case(method.as_str())
                && request.path == uri.path()
                && request.query == query
                && request
                    .host
                    .as_deref()
                    .is_none_or(|wanted| Some(wanted) == host)
                && request
                    .body
                    .as_ref()
                    .is_none_or(|wanted| json.as_ref().is_some_and(|found| contains(found, wanted)))
                && request.headers.iter().all(|(name, wanted)| {
                    headers
                        .get(name.as_str())
                        .and_then(|value| value.to_str().ok())
                        == Some(wanted.as_str())
                })
        });
        matching
            .min_by_key(|(index, fixture)| {
                let asked = fixture.request.body.as_ref().map_or(0, leaves);
                (std::cmp::Reverse(asked), *index)
            })
            .map(|(index, _)| index)
    }
}

/// How many values a body pattern pins down.
fn leaves(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.values().map(leaves).sum(),
        Value::Array(items) => items.iter().map(leaves).sum(),
        _ => 1,
    }
}

async fn serve(
    state: Arc<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = headers
        .get(SANDBOX_HOST_HEADER)
        .and_then(|value| value.to_str().ok());
    // A browser reaches the sandbox's authorization page without the engine's host header; the
    // page is recognised by its path then.
    let oauth_host = host.map(str::to_owned).or_else(|| {
        let (host, path) = state.oauth.as_ref()?.authorize.as_ref()?;
        (path == uri.path()).then(|| host.clone())
    });
    if let Some(response) = state
        .oauth
        .as_ref()
        .and_then(|oauth| oauth.respond(oauth_host.as_deref(), &uri, &headers))
    {
        return response;
    }
    let Some(index) = state.find(&method, &uri, host, &headers, &body) else {
        let description = format!("{method} {}{uri}", host.unwrap_or_default());
        state
            .usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unmatched
            .push(description.clone());
        let body = serde_json::json!({ "error": format!("no fixture matches {description}") });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    state
        .usage
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .served
        .push(index);
    let fixture = &state.fixtures[index].response;
    let status = StatusCode::from_u16(fixture.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response_headers = HeaderMap::new();
    for (name, value) in &fixture.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response_headers.insert(name, value);
        }
    }
    let body = match (&fixture.body, &fixture.body_text) {
        (Some(json), _) => {
            response_headers
                .entry(axum::http::header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            serde_json::to_vec(json).unwrap_or_default()
        }
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => fixture.body_bytes.clone().unwrap_or_default(),
    };
    (status, response_headers, body).into_response()
}

/// A running replay server on 127.0.0.1.
pub struct ReplayServer {
    address: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplayServer {
    /// Starts serving `fixtures` (and, for an OAuth connector, a stand-in provider) on a free
    /// loopback port.
    pub async fn start(
        fixtures: Vec<Fixture>,
        oauth: Option<SandboxOAuth>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(State {
            fixtures,
            oauth,
            usage: Mutex::default(),
        });
        let handler_state = Arc::clone(&state);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                serve(Arc::clone(&handler_state), method, uri, headers, body)
            },
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // The server lives until dropped; an accept error ends it, and tests then fail on
            // connection errors that name the request.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            state,
            task,
        })
    }

    /// The base URL to send requests to.
    pub fn base_url(&self) -> url::Url {
        // A socket address always forms a valid URL.
        url::Url::parse(&format!("http://{}", self.address)).unwrap_or_else(|_| unreachable!())
    }

    /// Fixtures never served, by file name.
    pub fn unused(&self) -> Vec<String> {
        let usage = self
            .state
            .usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.state
            .fixtures
            .iter()
            .enumerate()
            .filter(|(index, _)| !usage.served.contains(index))
            .map(|(_, fixture)| fixture.name.clone())
            .collect()
    }

    /// Requests no fixture matched.
    pub fn unmatched(&self) -> Vec<String> {
        self.state
            .usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unmatched
            .clone()
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn body_subsets() {
        let body = json!({"cursor": "abc", "limit": 100, "filter": {"kind": "page", "x": 1}});
        assert!(contains(&body, &json!({"cursor": "abc"})));
        assert!(contains(&body, &json!({"filter": {"kind": "page"}})));
        assert!(!contains(&body, &json!({"cursor": "xyz"})));
        assert!(!contains(&body, &json!({"missing": 1})));
    }
}
