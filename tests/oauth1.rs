//! OAuth 1.0a end to end against a Trello-shaped loopback provider that checks every
//! signature: request token → user authorization → access token → signed API calls.
//! (The signing itself is checked against published vectors in engine::oauth1.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use engine::account::Integration;
use engine::credentials::oauth1::{
    Consumer, OAuth1Authorizer, OAuth1Error, OAuth1Flow, OAuth1Token, SigningInput,
    authorization_header,
};
use engine::events::Counters;
use engine::run::{CompiledConnector, SyncRun};
use engine::spec::Auth;
use engine::store::MemorySink;
use hypernet_tests::{serve, spec_from};

const KEY: &str = "trello-api-key";
const SECRET: &str = "trello-oauth-secret";
const CALLBACK: &str = "http://127.0.0.1:9/integrations/trello/callback";

#[derive(Default)]
struct Provider {
    /// token → secret, for temporary and access tokens alike.
    secrets: HashMap<String, String>,
    verifiers: HashMap<String, String>,
    access: Vec<String>,
    authorize_queries: Vec<HashMap<String, String>>,
}

type Shared = Arc<Mutex<Provider>>;

fn header_params(headers: &HeaderMap) -> Option<HashMap<String, String>> {
    let value = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("OAuth ")?;
    Some(
        value
            .split(", ")
            .filter_map(|pair| {
                let (name, quoted) = pair.split_once('=')?;
                let raw = quoted.trim_matches('"');
                Some((
                    name.to_owned(),
                    percent_encoding::percent_decode_str(raw)
                        .decode_utf8()
                        .ok()?
                        .into_owned(),
                ))
            })
            .collect(),
    )
}

/// Recomputes the signature from what arrived; `Some(params)` when it matches.
fn verify(
    provider: &Provider,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    extra: &[&str],
) -> Option<HashMap<String, String>> {
    let params = header_params(headers)?;
    let consumer = Consumer {
        key: params.get("oauth_consumer_key")?.clone(),
        secret: SECRET.to_owned(),
    };
    if consumer.key != KEY {
        return None;
    }
    let token = match params.get("oauth_token") {
        Some(token) => Some(OAuth1Token {
            token: token.clone(),
            secret: provider.secrets.get(token)?.clone(),
        }),
        None => None,
    };
    // What the engine signed: the provider's own URL (the sandbox says which host it meant).
    let host = headers
        .get(engine::http::SANDBOX_HOST_HEADER)?
        .to_str()
        .ok()?;
    let url = url::Url::parse(&format!("https://{host}{uri}")).ok()?;
    let input = SigningInput {
        consumer: &consumer,
        token: token.as_ref(),
        nonce: params.get("oauth_nonce")?.clone(),
        timestamp: params.get("oauth_timestamp")?.parse().ok()?,
        extra: extra
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), params.get(*name)?.clone())))
            .collect(),
    };
    let expected = header_params(&HeaderMap::from_iter([(
        axum::http::header::AUTHORIZATION,
        authorization_header(method.as_str(), &url, &[], &input)
            .parse()
            .ok()?,
    )]))?;
    (expected.get("oauth_signature") == params.get("oauth_signature")).then_some(params)
}

async fn request_token(
    State(shared): State<Shared>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let mut provider = shared.lock().unwrap();
    let Some(params) = verify(&provider, &method, &headers, &uri, &["oauth_callback"]) else {
        return (StatusCode::UNAUTHORIZED, "invalid signature").into_response();
    };
    if params.get("oauth_callback").map(String::as_str) != Some(CALLBACK) {
        return (StatusCode::BAD_REQUEST, "oauth_callback required").into_response();
    }
    provider
        .secrets
        .insert("request-1".into(), "request-secret-1".into());
    (
        [("content-type", "application/x-www-form-urlencoded")],
        "oauth_token=request-1&oauth_token_secret=request-secret-1&oauth_callback_confirmed=true",
    )
        .into_response()
}

async fn authorize(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut provider = shared.lock().unwrap();
    provider.authorize_queries.push(query.clone());
    let token = query.get("oauth_token").cloned().unwrap_or_default();
    provider
        .verifiers
        .insert(token.clone(), "verifier-1".into());
    Redirect::to(&format!(
        "{CALLBACK}?oauth_token={token}&oauth_verifier=verifier-1"
    ))
    .into_response()
}

async fn access_token(
    State(shared): State<Shared>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let mut provider = shared.lock().unwrap();
    let Some(params) = verify(&provider, &method, &headers, &uri, &["oauth_verifier"]) else {
        return (StatusCode::UNAUTHORIZED, "invalid signature").into_response();
    };
    let token = params.get("oauth_token").cloned().unwrap_or_default();
    if provider.verifiers.get(&token) != params.get("oauth_verifier") {
        return (StatusCode::UNAUTHORIZED, "invalid verifier").into_response();
    }
    provider
        .secrets
        .insert("access-1".into(), "access-secret-1".into());
    provider.access.push("access-1".into());
    (
        [("content-type", "application/x-www-form-urlencoded")],
        "oauth_token=access-1&oauth_token_secret=access-secret-1",
    )
        .into_response()
}

async fn boards(
    State(shared): State<Shared>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let provider = shared.lock().unwrap();
    match verify(&provider, &method, &headers, &uri, &[]) {
        Some(params) if provider.access.contains(&params["oauth_token"]) => {
            axum::Json(serde_json::json!([
                {"id": "5f1a", "name": "Groceries", "closed": false},
                {"id": "5f1b", "name": "Holiday plans", "closed": false}
            ]))
            .into_response()
        }
        _ => (StatusCode::UNAUTHORIZED, "invalid token").into_response(),
    }
}

fn trello_spec() -> Arc<engine::spec::ConnectorSpec> {
    spec_from(
        r#"id: trello_test
name: Trello
version: 1.0.0
category: productivity
description: Boards.
docs_url: https://developer.atlassian.com/cloud/trello/rest/
auth:
  kind: oauth1
  request_token_url: https://trello.com/1/OAuthGetRequestToken
  authorization_url: https://trello.com/1/OAuthAuthorizeToken
  access_token_url: https://trello.com/1/OAuthGetAccessToken
  authorization_params: { name: Hypernet, scope: read, expiration: never }
base_url: https://api.trello.com
allowed_hosts: [trello.com, api.trello.com]
streams:
  boards:
    model: note
    request: { path: /1/members/me/boards, query: { fields: "name,closed" } }
    records: $[*]
    id: $.id
    map:
      title: $.name
"#,
    )
}

#[tokio::test]
async fn three_legged_flow_and_signed_api_calls() {
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .route(
            "/1/OAuthGetRequestToken",
            axum::routing::post(request_token),
        )
        .route("/1/OAuthAuthorizeToken", axum::routing::get(authorize))
        .route("/1/OAuthGetAccessToken", axum::routing::post(access_token))
        .route("/1/members/me/boards", axum::routing::get(boards))
        .with_state(Arc::clone(&shared));
    let server = serve(app).await;
    let spec = trello_spec();
    let Auth::OAuth1(auth) = &spec.auth else {
        unreachable!()
    };
    let http = hypernet_tests::sandbox_client(&spec, &server);
    let consumer = Consumer {
        key: KEY.into(),
        secret: SECRET.into(),
    };
    let flow = OAuth1Flow {
        auth,
        consumer: &consumer,
        http: &http,
    };

    let started = flow.start(CALLBACK).await.unwrap();
    assert_eq!(started.url.host_str(), Some("trello.com"));
    // The user's browser.
    engine::http::install_tls_provider();
    let mut local = started.url.clone();
    local.set_scheme("http").unwrap();
    local.set_host(server.host_str()).unwrap();
    local.set_port(server.port()).unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = browser.get(local).send().await.unwrap();
    let callback: HashMap<String, String> =
        url::Url::parse(redirect.headers()["location"].to_str().unwrap())
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
    {
        let provider = shared.lock().unwrap();
        let query = &provider.authorize_queries[0];
        assert_eq!(
            (
                query["name"].as_str(),
                query["scope"].as_str(),
                query["expiration"].as_str()
            ),
            ("Hypernet", "read", "never")
        );
    }

    let mut forged = callback.clone();
    forged.insert("oauth_token".into(), "someone-elses".into());
    assert!(matches!(
        flow.complete(&started, &forged).await,
        Err(OAuth1Error::TokenMismatch)
    ));
    let token = flow.complete(&started, &callback).await.unwrap();
    assert_eq!(token.token, "access-1");

    let connector = CompiledConnector::compile(Arc::clone(&spec)).unwrap();
    let integration =
        Integration::configure(&spec, "user-1", "trello-1", &serde_json::Map::new()).unwrap();
    let authorizer = OAuth1Authorizer::new(consumer.clone(), token);
    let sink = MemorySink::default();
    SyncRun::new(
        &connector,
        &integration,
        &http,
        &authorizer,
        &Counters::default(),
        sink.clone(),
    )
    .run(&[])
    .await
    .unwrap();
    let contents = sink.contents();
    let titles: Vec<String> = contents.records["boards"]
        .iter()
        .map(|record| record.data().unwrap()["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, ["Groceries", "Holiday plans"]);

    // A wrong secret makes every signature wrong: the provider refuses.
    let wrong = Consumer {
        key: KEY.into(),
        secret: "not-the-secret".into(),
    };
    let flow = OAuth1Flow {
        auth,
        consumer: &wrong,
        http: &http,
    };
    assert!(matches!(
        flow.start(CALLBACK).await,
        Err(OAuth1Error::Rejected(_))
    ));
}
