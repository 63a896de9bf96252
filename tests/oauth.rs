//! OAuth 2.0 quirks of real providers, each run end to end through the engine against the
//! loopback provider: authorize → callback → exchange → API call → expiry → refresh.

mod oauth_provider;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use engine::account::Integration;
use engine::credentials::oauth2::{
    AuthorizationStart, Authorized, OAuthAuthorizer, OAuthClient, OAuthError, TokenEndpoint,
    TokenSet, authorization_url,
};
use engine::events::Counters;
use engine::run::{CompiledConnector, RunReport, SyncError, SyncRun};
use engine::spec::{Auth, ConnectorSpec, OAuth2Auth};
use engine::store::SqliteStore;
use hypernet_tests::spec_from;
use oauth_provider::{CLIENT_ID, CLIENT_SECRET, ClientAuthStyle, Ledger, Quirks, Shape};

const REDIRECT: &str = "http://127.0.0.1:9/integrations/oauth_test/callback";

fn spec(auth: &str) -> Arc<ConnectorSpec> {
    spec_from(&spec_text(auth))
}

fn spec_text(auth: &str) -> String {
    format!(
        r#"id: oauth_test
name: OAuth Test
version: 1.0.0
category: productivity
description: A provider with OAuth quirks.
docs_url: https://auth.example.com/docs
auth:
  kind: oauth2
  authorization_url: https://auth.example.com/authorize
  token_url: https://auth.example.com/token
{auth}
base_url: https://api.example.com
allowed_hosts: [api.example.com, auth.example.com]
retry:
  max_attempts: 2
  backoff: {{ initial: 1ms, max: 2ms }}
streams:
  items:
    model: note
    request: {{ path: /api/items }}
    records: $.items[*]
    id: $.id
    map:
      title: $.title
"#
    )
}

fn oauth(spec: &ConnectorSpec) -> &OAuth2Auth {
    match &spec.auth {
        Auth::OAuth2(oauth) => oauth,
        other => panic!("not OAuth 2.0: {other:?}"),
    }
}

fn client() -> OAuthClient {
    OAuthClient {
        id: CLIENT_ID.to_owned(),
        secret: Some(CLIENT_SECRET.to_owned()),
    }
}

/// The user's browser: follows the authorization URL to the provider and stops at the redirect
/// back to Hypernet, returning the callback's query.
async fn browser(start: &AuthorizationStart, server: &url::Url) -> HashMap<String, String> {
    engine::http::install_tls_provider();
    let mut url = start.url.clone();
    url.set_scheme("http").unwrap();
    url.set_host(server.host_str()).unwrap();
    url.set_port(server.port()).unwrap();
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        303,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(REDIRECT), "{location}");
    location.query_pairs().into_owned().collect()
}

/// Authorize → callback → exchange.
async fn connect(
    spec: &ConnectorSpec,
    server: &url::Url,
) -> Result<(AuthorizationStart, Authorized), OAuthError> {
    let start = authorization_url(oauth(spec), &client(), REDIRECT)?;
    let callback = browser(&start, server).await;
    let http = hypernet_tests::sandbox_client(spec, server);
    let authorized = TokenEndpoint::new(oauth(spec), &client(), &http, &Counters::default())
        .complete(REDIRECT, &callback, &start)
        .await?;
    Ok((start, authorized))
}

/// A sync with self-renewing credentials; returns the result and the tokens after it.
async fn sync(
    spec: &Arc<ConnectorSpec>,
    server: &url::Url,
    store: &mut SqliteStore,
    tokens: TokenSet,
    refreshed: Arc<Mutex<Vec<TokenSet>>>,
) -> (Result<RunReport, SyncError>, TokenSet) {
    let connector = CompiledConnector::compile(Arc::clone(spec)).unwrap();
    let integration =
        Integration::configure(spec, "user-1", "integration-1", &serde_json::Map::new()).unwrap();
    let http = hypernet_tests::sandbox_client(spec, server);
    let authorizer = OAuthAuthorizer::new(
        oauth(spec).clone(),
        client(),
        http.clone(),
        serde_json::Map::new(),
        tokens,
        Arc::new(Counters::default()),
    )
    .on_refresh(Box::new(move |tokens| {
        refreshed.lock().unwrap().push(tokens);
        Box::pin(async {})
    }));
    let counters = Counters::default();
    let result = SyncRun::new(
        &connector,
        &integration,
        &http,
        &authorizer,
        &counters,
        store.clone(),
    )
    .run(&[])
    .await;
    (result, authorizer.tokens())
}

struct Scenario {
    spec: Arc<ConnectorSpec>,
    server: url::Url,
    ledger: Arc<Mutex<Ledger>>,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

async fn scenario(auth: &str, quirks: Quirks) -> Scenario {
    let (server, ledger) = oauth_provider::start(quirks).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("oauth.sqlite"))
        .await
        .unwrap();
    Scenario {
        spec: spec(auth),
        server,
        ledger,
        store,
        _dir: dir,
    }
}

/// The whole path: connect, import, expire, import again through a refresh.
async fn full_path(s: &mut Scenario) -> (Authorized, TokenSet, Vec<TokenSet>) {
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    let refreshed = Arc::new(Mutex::new(Vec::new()));
    let (result, tokens) = sync(
        &s.spec,
        &s.server,
        &mut s.store,
        authorized.tokens.clone(),
        Arc::clone(&refreshed),
    )
    .await;
    result.unwrap();
    assert_eq!(s.store.count("oauth_test").await.unwrap(), 2);
    s.ledger.lock().unwrap().expire_access_tokens();
    let (result, after) = sync(
        &s.spec,
        &s.server,
        &mut s.store,
        tokens,
        Arc::clone(&refreshed),
    )
    .await;
    result.unwrap();
    assert_eq!(
        s.ledger.lock().unwrap().refreshes,
        1,
        "one refresh after the 401"
    );
    let refreshed = refreshed.lock().unwrap().clone();
    assert_eq!(
        refreshed.len(),
        1,
        "the new tokens were handed over for storage"
    );
    (authorized, after, refreshed)
}

#[tokio::test]
async fn google_offline_access_pkce_and_a_refresh_token_that_is_kept() {
    let auth = "  scopes: [https://www.googleapis.com/auth/photoslibrary.readonly.appcreateddata, openid]\n  pkce: supported\n  authorization_params: { access_type: offline, prompt: consent }";
    let mut s = scenario(auth, Quirks::default()).await;
    let (authorized, after, _) = full_path(&mut s).await;
    let ledger = s.ledger.lock().unwrap();
    let query = &ledger.authorize_queries[0];
    assert_eq!(query["access_type"], "offline");
    assert_eq!(query["prompt"], "consent");
    assert_eq!(
        query["scope"],
        "https://www.googleapis.com/auth/photoslibrary.readonly.appcreateddata openid"
    );
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["response_type"], "code");
    assert_eq!(
        ledger.token_requests[0]["client_secret"], CLIENT_SECRET,
        "client secret in the form body"
    );
    assert_ne!(after.access_token, authorized.tokens.access_token);
    assert_eq!(
        after.refresh_token, authorized.tokens.refresh_token,
        "Google does not resend the refresh token; the old one is kept"
    );
}

#[tokio::test]
async fn basic_client_auth_required_pkce_and_rotating_refresh_tokens() {
    let auth = "  scopes: [tweet.read, users.read, offline.access]\n  pkce: required\n  client_auth: basic";
    let quirks = Quirks {
        client_auth: ClientAuthStyle::Basic,
        require_pkce: true,
        rotate_refresh_tokens: true,
        ..Quirks::default()
    };
    let mut s = scenario(auth, quirks).await;
    let (authorized, after, refreshed) = full_path(&mut s).await;
    assert_ne!(
        after.refresh_token, authorized.tokens.refresh_token,
        "the rotated refresh token replaces the old one"
    );
    assert_eq!(refreshed[0].refresh_token, after.refresh_token);
    let ledger = s.ledger.lock().unwrap();
    assert!(
        !ledger.token_requests[0].contains_key("client_secret"),
        "Basic auth keeps the secret out of the body"
    );
    assert!(
        ledger
            .valid_refresh
            .contains(after.refresh_token.as_ref().unwrap())
    );
}

#[tokio::test]
async fn notion_json_body_workspace_capture_and_non_expiring_tokens() {
    let auth = "  client_auth: basic_json\n  authorization_params: { owner: user }\n  refresh: { mode: none }\n  capture: { workspace_id: { token_response: $.workspace_id } }";
    let quirks = Quirks {
        client_auth: ClientAuthStyle::BasicJson,
        shape: Shape::NonExpiring,
        ..Quirks::default()
    };
    let mut s = scenario(auth, quirks).await;
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    assert_eq!(authorized.captured["workspace_id"], "ws-42");
    assert_eq!(authorized.tokens.expires_at, None);
    assert_eq!(
        s.ledger.lock().unwrap().authorize_queries[0]["owner"],
        "user"
    );
    let refreshed = Arc::new(Mutex::new(Vec::new()));
    let (result, tokens) = sync(
        &s.spec,
        &s.server,
        &mut s.store,
        authorized.tokens,
        Arc::clone(&refreshed),
    )
    .await;
    result.unwrap();
    // A revoked non-expiring token cannot be renewed: the user must connect again.
    s.ledger.lock().unwrap().expire_access_tokens();
    let (result, _) = sync(&s.spec, &s.server, &mut s.store, tokens, refreshed).await;
    let error = result.unwrap_err();
    assert!(
        error.hint().contains("connect the account again"),
        "{error}"
    );
    assert_eq!(
        s.store.count("oauth_test").await.unwrap(),
        2,
        "imported records are kept"
    );
}

#[tokio::test]
async fn strava_comma_scopes_absolute_expiry_and_athlete_capture() {
    let auth = "  scopes: [read, activity:read_all]\n  scope_separator: comma\n  authorization_params: { approval_prompt: auto }\n  token_response: { expires_at: $.expires_at }\n  capture: { athlete_id: { token_response: $.athlete.id } }";
    let quirks = Quirks {
        shape: Shape::ExpiresAtWithAthlete,
        rotate_refresh_tokens: true,
        ..Quirks::default()
    };
    let mut s = scenario(auth, quirks).await;
    let (authorized, _, _) = full_path(&mut s).await;
    assert_eq!(
        s.ledger.lock().unwrap().authorize_queries[0]["scope"],
        "read,activity:read_all"
    );
    assert_eq!(authorized.captured["athlete_id"], 134815);
    let expires = authorized.tokens.expires_at.unwrap();
    let in_six_hours = jiff::Timestamp::now().as_second() + 21600;
    assert!(
        (expires.as_second() - in_six_hours).abs() < 60,
        "expires_at is absolute epoch seconds"
    );
}

#[tokio::test]
async fn slack_user_scope_nested_user_token_and_errors_inside_http_200() {
    let auth = "  scopes: [channels:read]\n  scope_separator: comma\n  extra_scopes: { user_scope: [search:read, channels:history] }\n  refresh: { mode: none }\n  token_response: { envelope: $.authed_user, error: \"response.ok == false\", error_message: $.error }";
    let mut s = scenario(
        auth,
        Quirks {
            shape: Shape::SlackEnvelope,
            ..Quirks::default()
        },
    )
    .await;
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    assert!(
        authorized.tokens.access_token.starts_with("access-"),
        "the user token from authed_user"
    );
    assert_eq!(
        authorized.tokens.scope.as_deref(),
        Some("search:read,channels:history")
    );
    assert_eq!(
        s.ledger.lock().unwrap().authorize_queries[0]["user_scope"],
        "search:read,channels:history"
    );
    let refreshed = Arc::new(Mutex::new(Vec::new()));
    sync(
        &s.spec,
        &s.server,
        &mut s.store,
        authorized.tokens,
        refreshed,
    )
    .await
    .0
    .unwrap();

    let s = scenario(
        auth,
        Quirks {
            shape: Shape::SlackEnvelope,
            fail_exchange_in_200: true,
            ..Quirks::default()
        },
    )
    .await;
    let error = connect(&s.spec, &s.server).await.unwrap_err();
    assert!(
        matches!(error, OAuthError::Rejected(ref message) if message == "invalid_code"),
        "{error}"
    );
}

#[tokio::test]
async fn renamed_client_id_parameter() {
    let auth = "  scopes: [user.info.basic, video.list]\n  scope_separator: comma\n  param_names: { client_id: client_key }";
    let mut s = scenario(
        auth,
        Quirks {
            client_id_param: "client_key",
            ..Quirks::default()
        },
    )
    .await;
    full_path(&mut s).await;
    let ledger = s.ledger.lock().unwrap();
    assert_eq!(ledger.authorize_queries[0]["client_key"], CLIENT_ID);
    assert!(!ledger.authorize_queries[0].contains_key("client_id"));
    assert_eq!(ledger.token_requests[0]["client_key"], CLIENT_ID);
}

#[tokio::test]
async fn callback_values_are_captured() {
    let auth = "  scopes: [com.intuit.quickbooks.accounting]\n  client_auth: basic\n  capture: { realm_id: { callback: realmId } }";
    let quirks = Quirks {
        client_auth: ClientAuthStyle::Basic,
        callback_extra: vec![("realmId", "9130349984")],
        ..Quirks::default()
    };
    let s = scenario(auth, quirks).await;
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    assert_eq!(authorized.captured["realm_id"], "9130349984");
}

#[tokio::test]
async fn instagram_long_lived_exchange_and_get_refresh() {
    let auth = r#"  scopes: [instagram_business_basic]
  scope_separator: comma
  post_exchange:
    - method: GET
      url: https://auth.example.com/exchange
      params: { grant_type: ig_exchange_token, client_secret: "{{ client.secret }}", access_token: "{{ token.access_token }}" }
  refresh:
    mode: exchange
    request:
      method: GET
      url: https://auth.example.com/exchange
      params: { grant_type: ig_refresh_token, access_token: "{{ token.access_token }}" }"#;
    let mut s = scenario(auth, Quirks::default()).await;
    let (authorized, after, _) = full_path(&mut s).await;
    assert!(
        authorized.tokens.access_token.starts_with("long-lived-"),
        "the short-lived token was exchanged"
    );
    assert!(
        after.access_token.starts_with("long-lived-")
            && after.access_token != authorized.tokens.access_token
    );
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    // A buffer longer than the token's hour: every request finds it about to expire.
    let auth = "  scopes: [read]\n  refresh: { mode: refresh_token, buffer: 2h }";
    let mut s = scenario(auth, Quirks::default()).await;
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    let refreshed = Arc::new(Mutex::new(Vec::new()));
    let (result, _) = sync(
        &s.spec,
        &s.server,
        &mut s.store,
        authorized.tokens,
        refreshed,
    )
    .await;
    result.unwrap();
    assert!(
        s.ledger.lock().unwrap().refreshes >= 1,
        "renewed without waiting for a 401"
    );
}

#[tokio::test]
async fn a_revoked_refresh_token_needs_reauthorization_and_keeps_the_data() {
    let mut s = scenario("  scopes: [read]", Quirks::default()).await;
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    let refreshed = Arc::new(Mutex::new(Vec::new()));
    let (result, tokens) = sync(
        &s.spec,
        &s.server,
        &mut s.store,
        authorized.tokens,
        Arc::clone(&refreshed),
    )
    .await;
    result.unwrap();
    {
        let mut ledger = s.ledger.lock().unwrap();
        ledger.expire_access_tokens();
        ledger.revoke_refresh_tokens();
    }
    let (result, _) = sync(&s.spec, &s.server, &mut s.store, tokens, refreshed).await;
    let error = result.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("needs to be authorized again") && message.contains("invalid_grant"),
        "{message}"
    );
    assert!(error.hint().contains("connect the account again"));
    assert_eq!(
        s.store.count("oauth_test").await.unwrap(),
        2,
        "imported records are kept"
    );
}

#[tokio::test]
async fn a_forged_callback_state_is_refused() {
    let s = scenario("  scopes: [read]\n  pkce: supported", Quirks::default()).await;
    let start = authorization_url(oauth(&s.spec), &client(), REDIRECT).unwrap();
    let mut callback = browser(&start, &s.server).await;
    callback.insert("state".to_owned(), "forged".to_owned());
    let http = hypernet_tests::sandbox_client(&s.spec, &s.server);
    let error = TokenEndpoint::new(oauth(&s.spec), &client(), &http, &Counters::default())
        .complete(REDIRECT, &callback, &start)
        .await
        .unwrap_err();
    assert!(matches!(error, OAuthError::StateMismatch));
    assert!(
        s.ledger.lock().unwrap().token_requests.is_empty(),
        "no code is exchanged for a forged callback"
    );
}

#[tokio::test]
async fn a_refused_authorization_says_why() {
    let s = scenario("  scopes: [read]", Quirks::default()).await;
    let start = authorization_url(oauth(&s.spec), &client(), REDIRECT).unwrap();
    let callback: HashMap<String, String> = [
        ("state", start.state.as_str()),
        ("error", "access_denied"),
        ("error_description", "The user denied access"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let http = hypernet_tests::sandbox_client(&s.spec, &s.server);
    let error = TokenEndpoint::new(oauth(&s.spec), &client(), &http, &Counters::default())
        .complete(REDIRECT, &callback, &start)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the provider refused the authorization: access_denied: The user denied access"
    );
}

#[tokio::test]
async fn client_credentials_grant_and_renewal_by_a_new_grant() {
    let (server, ledger) = oauth_provider::start(Quirks::default()).await;
    let spec = spec_from(&spec_text("  scopes: [read]").replace(
        "  authorization_url: https://auth.example.com/authorize\n",
        "  grant: client_credentials\n",
    ));
    let http = hypernet_tests::sandbox_client(&spec, &server);
    let tokens = TokenEndpoint::new(oauth(&spec), &client(), &http, &Counters::default())
        .client_credentials()
        .await
        .unwrap();
    assert_eq!(
        ledger.lock().unwrap().token_requests[0]["grant_type"],
        "client_credentials"
    );
    assert_eq!(ledger.lock().unwrap().token_requests[0]["scope"], "read");
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("cc.sqlite"))
        .await
        .unwrap();
    ledger.lock().unwrap().expire_access_tokens();
    let (result, after) = sync(
        &spec,
        &server,
        &mut store,
        tokens.clone(),
        Arc::new(Mutex::new(Vec::new())),
    )
    .await;
    result.unwrap();
    assert_ne!(
        after.access_token, tokens.access_token,
        "a new grant replaced the expired token"
    );
    assert_eq!(store.count("oauth_test").await.unwrap(), 2);
}

/// Revokes `tokens` through the engine's token endpoint for the scenario's spec.
async fn revoke(
    s: &Scenario,
    tokens: &TokenSet,
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<bool, engine::credentials::oauth2::OAuthError> {
    let http = hypernet_tests::sandbox_client(&s.spec, &s.server);
    let (app, counters) = (client(), Counters::default());
    TokenEndpoint::new(oauth(&s.spec), &app, &http, &counters)
        .revoke(tokens, config)
        .await
}

#[tokio::test]
async fn disconnecting_revokes_the_grant() {
    let mut s = scenario(
        "  scopes: [read]\n  revocation_url: https://auth.example.com/revoke",
        Quirks::default(),
    )
    .await;
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    assert!(
        revoke(&s, &authorized.tokens, &authorized.captured)
            .await
            .unwrap()
    );
    {
        let ledger = s.ledger.lock().unwrap();
        let request = ledger.token_requests.last().unwrap();
        assert_eq!(request["token_type_hint"], "refresh_token");
        assert!(
            ledger.valid_access.is_empty() && ledger.valid_refresh.is_empty(),
            "the grant is gone"
        );
    }
    let (result, _) = sync(
        &s.spec,
        &s.server,
        &mut s.store,
        authorized.tokens,
        Arc::new(Mutex::new(Vec::new())),
    )
    .await;
    assert!(
        result
            .unwrap_err()
            .hint()
            .contains("connect the account again")
    );
    let no_endpoint = scenario("  scopes: [read]", Quirks::default()).await;
    let tokens = TokenSet {
        access_token: "a".into(),
        refresh_token: None,
        expires_at: None,
        refresh_expires_at: None,
        scope: None,
    };
    assert!(
        !revoke(&no_endpoint, &tokens, &serde_json::Map::new())
            .await
            .unwrap()
    );
}

/// Providers without an RFC 7009 endpoint revoke through a request of their own, declared in the
/// spec: Dropbox posts the access token as a bearer token, Todoist sends a DELETE with the client
/// and the token in the query.
#[tokio::test]
async fn disconnecting_revokes_through_the_providers_own_request() {
    let dropbox = "  scopes: [read]\n  revocation:\n    url: https://auth.example.com/2/auth/token/revoke\n    headers: { Authorization: \"Bearer {{ token.access_token }}\" }";
    let todoist = "  scopes: [read]\n  revocation:\n    method: DELETE\n    url: https://auth.example.com/api/v1/access_tokens\n    params:\n      client_id: \"{{ client.id }}\"\n      client_secret: \"{{ client.secret }}\"\n      access_token: \"{{ token.access_token }}\"";
    for auth in [dropbox, todoist] {
        let s = scenario(auth, Quirks::default()).await;
        let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
        assert!(
            revoke(&s, &authorized.tokens, &authorized.captured)
                .await
                .unwrap()
        );
        {
            let ledger = s.ledger.lock().unwrap();
            assert!(
                ledger.valid_access.is_empty() && ledger.valid_refresh.is_empty(),
                "{auth}: the grant is gone"
            );
            let request = ledger.token_requests.last().unwrap();
            assert!(
                request.get("bearer") == Some(&authorized.tokens.access_token)
                    || request.get("access_token") == Some(&authorized.tokens.access_token),
                "{auth}: {request:?}"
            );
        }
        // Revoking again is refused: the provider's error comes back, not a silent success.
        assert!(
            revoke(&s, &authorized.tokens, &authorized.captured)
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn a_refresh_token_past_its_own_lifetime_is_not_sent() {
    let auth = "  scopes: [com.intuit.quickbooks.accounting]\n  token_response: { refresh_expires_in: $.x_refresh_token_expires_in }";
    // A lifetime of 100 days is read as an absolute expiry...
    let s = scenario(
        auth,
        Quirks {
            refresh_token_lifetime: Some(8_640_000),
            ..Quirks::default()
        },
    )
    .await;
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    let expiry = authorized.tokens.refresh_expires_at.unwrap();
    assert!((expiry.as_second() - (jiff::Timestamp::now().as_second() + 8_640_000)).abs() < 60);

    // ...and a refresh token already past it ends in re-authorization without asking the provider.
    let mut s = scenario(
        auth,
        Quirks {
            refresh_token_lifetime: Some(0),
            ..Quirks::default()
        },
    )
    .await;
    let (_, authorized) = connect(&s.spec, &s.server).await.unwrap();
    s.ledger.lock().unwrap().expire_access_tokens();
    let (result, _) = sync(
        &s.spec,
        &s.server,
        &mut s.store,
        authorized.tokens,
        Arc::new(Mutex::new(Vec::new())),
    )
    .await;
    let error = result.unwrap_err();
    assert!(
        error.to_string().contains("the refresh token has expired"),
        "{error}"
    );
    assert_eq!(
        s.ledger.lock().unwrap().refreshes,
        0,
        "an expired refresh token is not sent"
    );
}
