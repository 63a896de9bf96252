//! How a connector authenticates: one variant per kind, each with only the knobs it needs.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{Condition, Duration, JsonPath, Template, Url};

/// How requests to the provider are authenticated. `kind` picks the scheme.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// No authentication: public APIs, credentials sent in the request body by the streams
    /// themselves (Plaid's `client_id` and `secret`), or a connector that only reads exports.
    #[default]
    None,
    /// A static key sent in a header or a query parameter.
    ApiKey(ApiKeyAuth),
    /// A static token sent as `Authorization: Bearer <token>`.
    Bearer(BearerAuth),
    /// HTTP Basic authentication.
    Basic(BasicAuth),
    /// OAuth 2.0: authorization code or client credentials, with refresh.
    #[serde(rename = "oauth2")]
    OAuth2(Box<OAuth2Auth>),
    /// OAuth 1.0a with HMAC-SHA1 signatures (Trello, Evernote).
    #[serde(rename = "oauth1")]
    OAuth1(OAuth1Auth),
}

impl Auth {
    /// The name the deployment's OAuth client credentials go by: the spec's shared `client`,
    /// else the connector's id. `None` for kinds without a client.
    pub fn client_name<'a>(&'a self, connector_id: &'a str) -> Option<&'a str> {
        match self {
            Self::OAuth2(auth) => Some(auth.client.as_deref().unwrap_or(connector_id)),
            Self::OAuth1(_) => Some(connector_id),
            _ => None,
        }
    }

    /// The `kind` name as written in specs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey(_) => "api_key",
            Self::Bearer(_) => "bearer",
            Self::Basic(_) => "basic",
            Self::OAuth2(_) => "oauth2",
            Self::OAuth1(_) => "oauth1",
        }
    }
}

/// A static key sent with every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Where the key goes: a request header or a query parameter.
    pub location: KeyLocation,
    /// The header or query parameter name, such as `X-Api-Key` or `key`.
    pub name: String,
    /// The value sent; usually `{{ secrets.api_key }}`, with a prefix where the API wants one.
    pub value: Template,
}

/// Where an API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    /// A request header.
    Header,
    /// A query parameter.
    Query,
}

/// A static bearer token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token; usually `{{ secrets.token }}`.
    pub token: Template,
}

/// HTTP Basic credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user name; usually `{{ secrets.username }}`.
    pub username: Template,
    /// The password; usually `{{ secrets.password }}`. Empty for APIs that send a key as the
    /// user name.
    #[serde(default)]
    pub password: Option<Template>,
}

/// OAuth 2.0 (RFC 6749) with the variations real providers need.
///
/// The client id and secret are not part of the spec: operators supply them per deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = endpoints_from_profile)]
pub struct OAuth2Auth {
    /// The OAuth client (app registration) this connector shares with others of the same
    /// provider, such as `google` for Google Photos, Gmail, Calendar and Drive: operators then
    /// register one client and give it once, as `HYPERNET_<CLIENT>_CLIENT_ID` and
    /// `_CLIENT_SECRET`. It names a provider profile (`connectors/providers.yaml`, compiled into
    /// the engine), which supplies the endpoints: a spec with `client` sets none of
    /// `authorization_url`, `token_url`, `refresh_url`, `revocation_url`, `revocation`,
    /// `post_exchange` or a refresh `request`. Default: the connector's own client
    /// (`HYPERNET_<ID>_CLIENT_ID`), with the endpoints the spec gives.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub client: Option<String>,
    /// Which grant obtains the first token.
    #[serde(default)]
    pub grant: Grant,
    /// The provider's authorization endpoint; required for the authorization code grant.
    #[serde(default)]
    pub authorization_url: Option<Url>,
    /// The token endpoint, for the code exchange and (unless `refresh_url` is set) refreshes.
    /// Required, unless `client` names a provider profile, which supplies it.
    pub token_url: Url,
    /// A separate refresh endpoint, where the provider has one.
    #[serde(default)]
    pub refresh_url: Option<Url>,
    /// The RFC 7009 revocation endpoint called on disconnect, where the provider has one.
    #[serde(default)]
    pub revocation_url: Option<Url>,
    /// The provider's own revocation request, for providers without an RFC 7009 endpoint
    /// (Strava's `deauthorize`, Dropbox's `token/revoke`, Todoist's `DELETE access_tokens`).
    /// Instead of `revocation_url`.
    #[serde(default)]
    pub revocation: Option<RevocationRequest>,
    /// Scopes requested in the `scope` parameter.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How scopes are joined in the `scope` parameter.
    #[serde(default)]
    pub scope_separator: ScopeSeparator,
    /// Further scope lists sent in parameters of their own, such as Slack's `user_scope`.
    #[serde(default)]
    pub extra_scopes: IndexMap<String, Vec<String>>,
    /// Whether to use PKCE (RFC 7636, S256).
    #[serde(default)]
    pub pkce: Pkce,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Extra parameters on the authorization URL (`access_type: offline`, `prompt: consent`).
    #[serde(default)]
    pub authorization_params: IndexMap<String, String>,
    /// Extra parameters sent to the token endpoint with the code exchange.
    #[serde(default)]
    pub token_params: IndexMap<String, String>,
    /// Names the provider uses in place of the standard parameter names.
    #[serde(default)]
    pub param_names: ParamNames,
    /// Where the token endpoint's response keeps each value.
    #[serde(default)]
    pub token_response: TokenResponse,
    /// How an expiring access token is renewed.
    #[serde(default)]
    pub refresh: Refresh,
    /// Requests made after the code exchange, each replacing the token with the one it returns
    /// (a short-lived token exchanged for a long-lived one).
    #[serde(default)]
    pub post_exchange: Vec<TokenRequest>,
    /// Values kept in the integration's `config` for later templates, by config key.
    #[serde(default)]
    pub capture: IndexMap<String, Capture>,
}

/// `token_url` is required only of a spec with its own client: a shared client's profile
/// supplies it (see [`super::profiles`]).
fn endpoints_from_profile(schema: &mut schemars::Schema) {
    if let Some(required) = schema
        .get_mut("required")
        .and_then(serde_json::Value::as_array_mut)
    {
        required.retain(|field| field != "token_url");
    }
    schema.insert(
        "if".to_owned(),
        serde_json::json!({"not": {"required": ["client"]}}),
    );
    schema.insert(
        "then".to_owned(),
        serde_json::json!({"required": ["token_url"]}),
    );
}

/// The OAuth 2.0 grant that obtains the first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// The user authorizes in the browser and the engine exchanges the returned code.
    #[default]
    AuthorizationCode,
    /// The client's own credentials buy a token; no user interaction.
    ClientCredentials,
}

/// How scopes are joined into one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeSeparator {
    /// `a b` (RFC 6749).
    #[default]
    Space,
    /// `a,b` (Strava, Slack).
    Comma,
    /// `a+b`.
    Plus,
}

impl ScopeSeparator {
    /// The separator as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Space => " ",
            Self::Comma => ",",
            Self::Plus => "+",
        }
    }
}

/// PKCE use. The method is always S256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pkce {
    /// No code challenge is sent.
    #[default]
    Off,
    /// The provider accepts PKCE; the engine sends an S256 challenge.
    Supported,
    /// The provider refuses an exchange without PKCE (X); the engine always sends one.
    Required,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    #[default]
    Post,
    /// HTTP Basic with the client id and secret (Spotify, X).
    Basic,
    /// HTTP Basic, and the request body as JSON instead of a form (Notion).
    BasicJson,
    /// `client_id` and `client_secret` inside a JSON body.
    Json,
}

/// Names that replace the standard OAuth parameter names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamNames {
    /// The name of the client id parameter (TikTok: `client_key`).
    #[serde(default = "ParamNames::default_client_id")]
    pub client_id: String,
    /// The name of the client secret parameter.
    #[serde(default = "ParamNames::default_client_secret")]
    pub client_secret: String,
}

impl ParamNames {
    fn default_client_id() -> String {
        "client_id".to_owned()
    }

    fn default_client_secret() -> String {
        "client_secret".to_owned()
    }
}

impl Default for ParamNames {
    fn default() -> Self {
        Self {
            client_id: Self::default_client_id(),
            client_secret: Self::default_client_secret(),
        }
    }
}

/// Where a token response keeps its values. Paths are relative to `envelope` when one is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenResponse {
    /// The object that holds the token fields (Slack's user token: `$.authed_user`; Withings:
    /// `$.body`). Unset means the top level.
    #[serde(default)]
    pub envelope: Option<JsonPath>,
    /// The access token.
    #[serde(default = "TokenResponse::default_access_token")]
    pub access_token: JsonPath,
    /// The refresh token. A response without one keeps the previous refresh token.
    #[serde(default = "TokenResponse::default_refresh_token")]
    pub refresh_token: JsonPath,
    /// Seconds until the access token expires. Without this and `expires_at` the token does not
    /// expire.
    #[serde(default = "TokenResponse::default_expires_in")]
    pub expires_in: JsonPath,
    /// An absolute expiry in epoch seconds (Strava), used when present.
    #[serde(default)]
    pub expires_at: Option<JsonPath>,
    /// Seconds until the refresh token itself expires, for providers whose refresh tokens have
    /// an absolute lifetime.
    #[serde(default)]
    pub refresh_expires_in: Option<JsonPath>,
    /// The granted scopes.
    #[serde(default = "TokenResponse::default_scope")]
    pub scope: JsonPath,
    /// True when a response with HTTP 200 is an error all the same (Slack: `response.ok ==
    /// false`; Withings: `response.status != 0`). `response` is the whole body.
    #[serde(default)]
    pub error: Option<Condition>,
    /// The error message in such a response.
    #[serde(default)]
    pub error_message: Option<JsonPath>,
}

impl TokenResponse {
    fn default_access_token() -> JsonPath {
        JsonPath::from("$.access_token")
    }

    fn default_refresh_token() -> JsonPath {
        JsonPath::from("$.refresh_token")
    }

    fn default_expires_in() -> JsonPath {
        JsonPath::from("$.expires_in")
    }

    fn default_scope() -> JsonPath {
        JsonPath::from("$.scope")
    }
}

impl Default for TokenResponse {
    fn default() -> Self {
        Self {
            envelope: None,
            access_token: Self::default_access_token(),
            refresh_token: Self::default_refresh_token(),
            expires_in: Self::default_expires_in(),
            expires_at: None,
            refresh_expires_in: None,
            scope: Self::default_scope(),
            error: None,
            error_message: None,
        }
    }
}

/// How an access token is renewed. `mode` picks the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Refresh {
    /// The standard `grant_type=refresh_token` request to the refresh (or token) endpoint.
    RefreshToken {
        /// Refresh this long before the access token expires.
        #[serde(default = "default_refresh_buffer")]
        buffer: Duration,
    },
    /// A request of the provider's own that trades the current access token for a new one
    /// (Instagram's `ig_refresh_token`, Facebook's `fb_exchange_token`).
    Exchange {
        /// Refresh this long before the access token expires.
        #[serde(default = "default_refresh_buffer")]
        buffer: Duration,
        /// The request that returns the new token.
        request: Box<TokenRequest>,
    },
    /// Tokens do not expire (Todoist); a 401 means the user must connect again.
    None,
}

fn default_refresh_buffer() -> Duration {
    Duration::from_secs(300)
}

impl Default for Refresh {
    fn default() -> Self {
        Self::RefreshToken {
            buffer: default_refresh_buffer(),
        }
    }
}

/// A request to a token endpoint of the provider's own design. Templates see `token`
/// (`access_token`, `refresh_token`), `client` (`id`, `secret`) and `config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// GET sends the parameters in the query; POST sends them as a form.
    #[serde(default)]
    pub method: TokenMethod,
    /// The endpoint.
    pub url: Url,
    /// The parameters.
    #[serde(default)]
    pub params: IndexMap<String, Template>,
    /// Where the response keeps its values.
    #[serde(default)]
    pub response: TokenResponse,
}

/// A revocation request of the provider's own making. Templates see `token` (`access_token`,
/// `refresh_token`), `client` (`id`, `secret`) and `config`. Any 2xx answer means revoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// The method.
    #[serde(default)]
    pub method: RevocationMethod,
    /// The endpoint.
    pub url: Url,
    /// Parameters: in the query for GET and DELETE, as a form for POST.
    #[serde(default)]
    pub params: IndexMap<String, Template>,
    /// Headers, such as `Authorization: Bearer {{ token.access_token }}`.
    #[serde(default)]
    pub headers: IndexMap<String, Template>,
}

/// The HTTP method of a revocation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RevocationMethod {
    /// Parameters in the query string.
    Get,
    /// Parameters in a form body.
    #[default]
    Post,
    /// Parameters in the query string.
    Delete,
}

/// The HTTP method of a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TokenMethod {
    /// Parameters in the query string.
    Get,
    /// Parameters in a form body.
    #[default]
    Post,
}

/// Where a captured config value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Capture {
    /// A query parameter of the authorization callback (QuickBooks `realmId`).
    Callback(String),
    /// A value in the token response (Notion `$.workspace_id`, Strava `$.athlete.id`).
    TokenResponse(JsonPath),
}

/// OAuth 1.0a (RFC 5849) with HMAC-SHA1 signatures. Each connector has its own consumer
/// (`HYPERNET_<ID>_CLIENT_ID`): provider profiles, which shared clients need, hold OAuth 2.0
/// endpoints only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth1Auth {
    /// The temporary credential (request token) endpoint.
    pub request_token_url: Url,
    /// Where the user authorizes the request token.
    pub authorization_url: Url,
    /// The token credential (access token) endpoint.
    pub access_token_url: Url,
    /// The signature method; only HMAC-SHA1 is in use by the providers that still need 1.0a.
    #[serde(default)]
    pub signature_method: SignatureMethod,
    /// Extra parameters on the authorization URL (Trello: `scope`, `expiration`, `name`).
    #[serde(default)]
    pub authorization_params: IndexMap<String, String>,
}

/// An OAuth 1.0a signature method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum SignatureMethod {
    /// HMAC-SHA1.
    #[default]
    #[serde(rename = "HMAC-SHA1")]
    HmacSha1,
}
