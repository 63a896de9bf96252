//! The connector spec language: the Rust types a `connector.yaml` is read into.
//!
//! These types are the single source of truth: the JSON Schema in `schemas/`, the reference in
//! `docs/spec.md` and the validator are all derived from them. A [`ConnectorSpec`] is only ever
//! obtained through [`load`] or [`parse`], which run every check, so code holding one may rely
//! on its paths and templates compiling and its references resolving.

mod auth;
mod content;
mod limits;
mod session;
mod stream;
mod values;

mod check;
mod diagnostic;
mod load;
mod profiles;
mod schema_errors;
mod yaml;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use auth::{
    ApiKeyAuth, Auth, BasicAuth, BearerAuth, Capture, ClientAuth, Grant, KeyLocation, OAuth1Auth,
    OAuth2Auth, ParamNames, Pkce, Refresh, RevocationMethod, RevocationRequest, ScopeSeparator,
    SignatureMethod, TokenMethod, TokenRequest, TokenResponse,
};
pub use content::{
    ChecksumKind, Collect, CollectPaging, Content, ContentChecksum, ContentRefresh, Contents,
    Encoded, Encoding, Inline, MAX_CONTENT_BYTES, Render,
};
pub use diagnostic::{Diagnostic, Position, did_you_mean};
pub use session::Session;

/// How to recognise an error inside a successful HTTP answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseError {
    /// True when the decoded page is an error (`response.ok == false`). `response` is the page.
    pub when: Condition,
    /// The provider's message in such a page (`$.error`).
    #[serde(default)]
    pub message: Option<JsonPath>,
}
pub use limits::{
    Backoff, Limits, MAX_BODY_LIMIT, MAX_RUN_TIME, MAX_SYNC_INTERVAL, MIN_SYNC_INTERVAL, RateLimit,
    RateLimitScope, Retry, Schedule, WaitFormat, WaitHeader,
};
pub use load::{LoadError, SpecSource, load, parse};
pub use profiles::{ProviderProfile, provider_profiles};
pub use stream::{
    ArchiveEntries, Body, Conversion, CursorFormat, Decode, FieldMapping, FieldRule, GlobError,
    Gone, Incremental, Join, LinkHeaderMarker, MAX_GLOB_LENGTH, Method, NextUrlSource, Paginate,
    ParamLocation, Parent, Recurse, Request, Selection, Split, Stream, ValueKind,
};
pub use values::{
    ByteSize, ByteSizeError, Condition, Duration, DurationError, HostPattern, JsonPath, Template,
    Url, ValueSource,
};

/// A connector: how to authenticate with one provider and which streams to import from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Hypernet connector spec", extend("x-expected" = "a connector spec"))]
pub struct ConnectorSpec {
    /// The connector's id: lower case letters, digits and `_`; equal to its folder's name.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"), length(max = 64))]
    pub id: String,
    /// The provider's name as people know it.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The spec's own version, in semantic versioning.
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+$"))]
    pub version: String,
    /// The catalog section the connector is listed in.
    pub category: Category,
    /// What the connector imports, in a sentence or two.
    #[schemars(length(min = 1))]
    pub description: String,
    /// The provider's API documentation.
    pub docs_url: Url,
    /// How requests are authenticated. Default: none (a connector that only reads exports).
    #[serde(default)]
    pub auth: Auth,
    /// The URL that request paths are relative to. Required when a stream sends requests.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// Every host the connector may call: the API, the OAuth endpoints, next-page URLs. Requests
    /// to any other host are refused, and so are redirects: each hop must be https on one of
    /// these hosts; one to another host is followed as a bare GET (no credentials, headers or
    /// body). IP addresses and public suffixes (`co.uk`, `*.co.uk`, `*.github.io`) are not
    /// allowed, and outside the sandbox a host whose name resolves to a private, loopback or
    /// link-local address is refused when connecting.
    /// Required (at least one) when a stream sends requests.
    #[serde(default)]
    pub allowed_hosts: Vec<HostPattern>,
    /// Headers sent with every request (`Notion-Version`). Templates over `config`, `secrets`.
    #[serde(default)]
    pub headers: IndexMap<String, Template>,
    /// How a connected account is named, from the values captured when it was connected
    /// (`config`: Slack's `team_id`, Strava's `athlete_id`). The service names an account so:
    /// connecting again as the same account renews its integration, another account of the
    /// provider adds one. Without it, the service connects the first account unless the user
    /// names another.
    #[serde(default)]
    pub account: Option<Template>,
    /// Errors that arrive inside HTTP 200 answers (Slack's `{"ok": false, "error": ...}`): a
    /// page for which `when` is true fails the stream with the provider's message.
    #[serde(default)]
    pub response_error: Option<ResponseError>,
    /// Values the integration is configured with, seen by templates as `config.<name>`, or as
    /// `secrets.<name>` when secret.
    #[serde(default)]
    pub config: IndexMap<String, ConfigField>,
    /// The provider's documented rate limits; all of them are obeyed.
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    /// How failed requests are retried.
    #[serde(default)]
    pub retry: Retry,
    /// When the connector syncs by itself.
    #[serde(default)]
    pub schedule: Schedule,
    /// How much one run may do: body sizes, pages, requests, time, concurrency. The defaults
    /// suit almost every connector.
    #[serde(default)]
    pub limits: Limits,
    /// The streams, by name (lower case letters, digits and `_`).
    #[schemars(extend("minProperties" = 1, "x-expected" = "at least one stream"))]
    pub streams: IndexMap<String, Stream>,
}

impl ConnectorSpec {
    /// The streams a person chooses among: those without a parent (substreams come with them).
    pub fn root_streams(&self) -> impl Iterator<Item = &str> {
        self.streams
            .iter()
            .filter(|(_, stream)| stream.parent.is_none())
            .map(|(name, _)| name.as_str())
    }

    /// The root stream `name` belongs to (itself for a root stream). A parent chain that does
    /// not end (refused by validation) ends at the last stream found.
    fn root_of<'a>(&'a self, mut name: &'a str) -> &'a str {
        for _ in 0..self.streams.len() {
            match self
                .streams
                .get(name)
                .and_then(|stream| stream.parent.as_ref())
            {
                Some(parent) => name = parent.stream.as_str(),
                None => break,
            }
        }
        name
    }

    /// The OAuth 2.0 scopes to ask for when a person imports only the `chosen` root streams (all
    /// of them when `chosen` is empty): `auth.scopes` without those that only left-out streams
    /// name.
    pub fn scopes_for(&self, chosen: &[String]) -> Vec<String> {
        let Auth::OAuth2(oauth) = &self.auth else {
            return vec![];
        };
        if chosen.is_empty() {
            return oauth.scopes.clone();
        }
        let picked = |name: &str| chosen.iter().any(|root| root == self.root_of(name));
        oauth
            .scopes
            .iter()
            .filter(|scope| {
                let mut named = self
                    .streams
                    .iter()
                    .filter(|(_, stream)| stream.scopes.contains(scope))
                    .peekable();
                named.peek().is_none() || named.any(|(name, _)| picked(name))
            })
            .cloned()
            .collect()
    }

    /// The scopes that root stream `root` and its substreams name.
    pub fn scopes_of(&self, root: &str) -> Vec<String> {
        let mut scopes: Vec<String> = Vec::new();
        for (name, stream) in &self.streams {
            if self.root_of(name) == root {
                for scope in &stream.scopes {
                    if !scopes.contains(scope) {
                        scopes.push(scope.clone());
                    }
                }
            }
        }
        scopes
    }

    /// This spec asking, when connecting, only for the scopes the `chosen` root streams need.
    pub fn narrowed_to(&self, chosen: &[String]) -> Self {
        let mut narrowed = self.clone();
        let scopes = self.scopes_for(chosen);
        if let Auth::OAuth2(oauth) = &mut narrowed.auth {
            oauth.scopes = scopes;
        }
        narrowed
    }

    /// Whether `chosen` names root streams of this connector only, and at least one; the first
    /// name that is not one, else.
    pub fn check_choice(&self, chosen: &[String]) -> Result<(), String> {
        if chosen.is_empty() {
            return Err("choose at least one stream".to_owned());
        }
        let roots: Vec<&str> = self.root_streams().collect();
        match chosen.iter().find(|name| !roots.contains(&name.as_str())) {
            Some(name) => Err(format!(
                "`{name}` is not one of {}'s streams to choose ({})",
                self.name,
                roots.join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// A value an integration is configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigField {
    /// What the value is and where the user finds it.
    pub description: String,
    /// Secret values are seen as `secrets.<name>`, encrypted at rest and never logged.
    #[serde(default)]
    pub secret: bool,
    /// The value used when none is given; a field without one must be given.
    #[serde(default)]
    pub default: Option<String>,
}

/// The catalog section a connector is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Photos and videos.
    Media,
    /// Email and contacts.
    Email,
    /// Calendars and events.
    Calendar,
    /// Files and documents.
    Storage,
    /// Social networks.
    Social,
    /// Notes, tasks and work tools.
    Productivity,
    /// Chat and messaging.
    Messaging,
    /// Music and podcasts.
    Music,
    /// Films and series.
    Video,
    /// Banking and payments.
    Finance,
    /// Purchases.
    Shopping,
    /// Health records.
    Health,
    /// Workouts and activity.
    Fitness,
    /// Developer tools.
    Developer,
}
