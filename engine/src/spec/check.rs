//! Semantic checks: what the JSON Schema cannot say about a spec.
//!
//! Mapped fields exist on the model and required ones are mapped; every JSONPath, template and
//! condition compiles and reads only variables its context has; every URL is https on a declared
//! host; parents exist and form no cycle; durations and limits make sense.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use minijinja::Environment;

use super::diagnostic::{Problem, did_you_mean, one_of};
use super::yaml::pointer_segment;
use super::*;
use crate::models::PROVENANCE_FIELDS;
use crate::template;

/// Every semantic problem in `spec`, which was read from `file`.
pub(crate) fn run(spec: &ConnectorSpec, file: &Path) -> Vec<Problem> {
    let mut checker = Checker {
        spec,
        env: template::environment(),
        problems: Vec::new(),
    };
    checker.connector(file);
    checker.auth();
    for (name, stream) in &spec.streams {
        checker.stream(name, stream);
    }
    checker.parent_cycles();
    checker.problems
}

/// What a template may read under one top-level name.
#[derive(Debug, Clone)]
enum Fields {
    /// Anything (`record`, `response`).
    Any,
    /// Only these attributes. `what` names one in messages ("config value"), `source` says
    /// where they are declared.
    Only {
        what: &'static str,
        source: &'static str,
        names: Vec<String>,
    },
}

/// The variables a template or condition may read.
#[derive(Debug, Clone, Default)]
struct Scope {
    roots: Vec<(&'static str, Fields)>,
}

impl Scope {
    fn with(mut self, root: &'static str, fields: Fields) -> Self {
        self.roots.push((root, fields));
        self
    }

    fn only(
        self,
        root: &'static str,
        (what, source): (&'static str, &'static str),
        names: impl IntoIterator<Item = String>,
    ) -> Self {
        self.with(
            root,
            Fields::Only {
                what,
                source,
                names: names.into_iter().collect(),
            },
        )
    }
}

/// Names minijinja provides itself; templates may call them anywhere.
const BUILTIN_GLOBALS: [&str; 4] = ["range", "dict", "namespace", "debug"];

const CONFIG: (&str, &str) = ("config value", "`config` and `auth.capture`");
const SECRETS: (&str, &str) = ("secret", "`config` entries with `secret: true`");
const STATE: (&str, &str) = ("state value", "the stream's `incremental`");
const PARENT: (&str, &str) = ("parent field", "`parent.fields`");
const PAGE: (&str, &str) = ("page value", "the stream's paginator");
const TOKEN: (&str, &str) = ("token value", "the token response");
const CLIENT: (&str, &str) = ("client value", "the deployment's OAuth client");

const NAME_PATTERN: &str = "lower case letters, digits and `_`, starting with a letter";

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|first| first.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn pointer(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| format!("/{}", pointer_segment(part)))
        .collect()
}

struct Checker<'a> {
    spec: &'a ConnectorSpec,
    env: Environment<'static>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    // ----- connector level -------------------------------------------------------------------

    fn connector(&mut self, file: &Path) {
        let spec = self.spec;
        let in_own_folder = file
            .file_name()
            .is_some_and(|name| name == "connector.yaml");
        if let Some(folder) = file
            .parent()
            .and_then(Path::file_name)
            .and_then(|name| name.to_str())
            && in_own_folder
            && folder != spec.id
        {
            self.push(
                Problem::at(
                    "/id",
                    format!("id `{}` differs from its folder `{folder}`", spec.id),
                )
                .expected(format!(
                    "`{folder}`, the name of the folder that holds connector.yaml"
                )),
            );
        }
        for (index, host) in spec.allowed_hosts.iter().enumerate() {
            if !is_host_pattern(host.as_str()) {
                self.push(
                    Problem::at(pointer(&["allowed_hosts", &index.to_string()]), format!("`{host}` is not a host name"))
                        .expected("a host such as `api.example.com` or `*.example.com`, with no scheme, port or path"),
                );
            }
        }
        self.url(&pointer(&["docs_url"]), spec.docs_url.as_str(), false);
        if let Some(url) = self.url(&pointer(&["base_url"]), spec.base_url.as_str(), true)
            && (url.query().is_some() || url.fragment().is_some())
        {
            self.push(
                Problem::at("/base_url", "the base URL has a query or fragment")
                    .expected("a scheme, host and optional path prefix; put parameters in each request's `query`"),
            );
        }
        for name in spec.config.keys() {
            if !is_name(name) {
                self.push(
                    Problem::at(
                        pointer(&["config", name]),
                        format!("`{name}` is not a valid config name"),
                    )
                    .on_key()
                    .expected(NAME_PATTERN),
                );
            }
        }
        let scope = self.credentials_scope();
        for (name, value) in &spec.headers {
            self.template(&pointer(&["headers", name]), value.as_str(), &scope);
        }
        for (index, limit) in spec.rate_limits.iter().enumerate() {
            if limit.per.get().is_zero() {
                self.push(
                    Problem::at(
                        pointer(&["rate_limits", &index.to_string(), "per"]),
                        "a rate limit window of zero",
                    )
                    .expected("a window such as `1s`, `15m` or `1d`"),
                );
            }
        }
        let retry = &spec.retry;
        if retry.backoff.initial > retry.backoff.max {
            self.push(
                Problem::at(
                    "/retry/backoff/initial",
                    format!(
                        "the first wait ({}) is longer than the longest ({})",
                        retry.backoff.initial, retry.backoff.max
                    ),
                )
                .expected(format!("at most `max` ({})", retry.backoff.max)),
            );
        }
        for (index, status) in retry.statuses.iter().enumerate() {
            self.status(
                &pointer(&["retry", "statuses", &index.to_string()]),
                *status,
            );
        }
        if spec.schedule.every.get() < std::time::Duration::from_secs(60) {
            self.push(
                Problem::at(
                    "/schedule/every",
                    format!(
                        "syncing every {} would hammer the provider",
                        spec.schedule.every
                    ),
                )
                .expected("at least `1m`"),
            );
        }
    }

    fn status(&mut self, at: &str, status: u16) {
        if !(400..=599).contains(&status) {
            self.push(
                Problem::at(at, format!("{status} is not an HTTP error status"))
                    .expected("a status from 400 to 599"),
            );
        }
    }

    /// Checks an absolute URL: https, and (when `on_allowed_host`) a host in `allowed_hosts`.
    fn url(&mut self, at: &str, text: &str, on_allowed_host: bool) -> Option<url::Url> {
        let url = match url::Url::parse(text) {
            Ok(url) => url,
            Err(error) => {
                self.push(
                    Problem::at(at, format!("`{text}` is not a URL ({error})"))
                        .expected("an https URL"),
                );
                return None;
            }
        };
        if url.scheme() != "https" {
            self.push(
                Problem::at(at, format!("`{text}` is not https"))
                    .expected("an https URL: tokens and personal data never travel in clear text"),
            );
            return None;
        }
        // With a malformed `allowed_hosts` entry, that entry is the one problem to report.
        let hosts_well_formed = self
            .spec
            .allowed_hosts
            .iter()
            .all(|pattern| is_host_pattern(pattern.as_str()));
        if on_allowed_host && hosts_well_formed {
            let host = url.host_str().unwrap_or_default();
            if !self
                .spec
                .allowed_hosts
                .iter()
                .any(|pattern| pattern.matches(host))
            {
                self.push(
                    Problem::at(at, format!("host `{host}` is not in `allowed_hosts`")).expected(
                        format!("a host in `allowed_hosts`, or `{host}` added to it"),
                    ),
                );
            }
        }
        Some(url)
    }

    // ----- auth ------------------------------------------------------------------------------

    /// Config values a template may read: declared non-secret config, and captured values.
    fn config_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .spec
            .config
            .iter()
            .filter(|(_, field)| !field.secret)
            .map(|(name, _)| name.clone())
            .collect();
        if let Auth::OAuth2(oauth) = &self.spec.auth {
            names.extend(oauth.capture.keys().cloned());
        }
        names
    }

    fn secret_names(&self) -> Vec<String> {
        self.spec
            .config
            .iter()
            .filter(|(_, field)| field.secret)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn credentials_scope(&self) -> Scope {
        Scope::default()
            .only("config", CONFIG, self.config_names())
            .only("secrets", SECRETS, self.secret_names())
    }

    fn auth(&mut self) {
        let scope = self.credentials_scope();
        match &self.spec.auth {
            Auth::None => {}
            Auth::ApiKey(key) => self.template("/auth/value", key.value.as_str(), &scope),
            Auth::Bearer(bearer) => self.template("/auth/token", bearer.token.as_str(), &scope),
            Auth::Basic(basic) => {
                self.template("/auth/username", basic.username.as_str(), &scope);
                if let Some(password) = &basic.password {
                    self.template("/auth/password", password.as_str(), &scope);
                }
            }
            Auth::OAuth2(oauth) => self.oauth2(oauth),
            Auth::OAuth1(oauth) => {
                self.url(
                    "/auth/request_token_url",
                    oauth.request_token_url.as_str(),
                    true,
                );
                self.url(
                    "/auth/authorization_url",
                    oauth.authorization_url.as_str(),
                    true,
                );
                self.url(
                    "/auth/access_token_url",
                    oauth.access_token_url.as_str(),
                    true,
                );
            }
        }
    }

    fn oauth2(&mut self, oauth: &OAuth2Auth) {
        match (&oauth.grant, &oauth.authorization_url) {
            (Grant::AuthorizationCode, None) => self.push(
                Problem::at(
                    "/auth",
                    "the authorization code grant needs `authorization_url`",
                )
                .on_key()
                .expected("`authorization_url`: the provider's authorization endpoint"),
            ),
            (Grant::AuthorizationCode, Some(url)) => {
                self.url("/auth/authorization_url", url.as_str(), true);
            }
            (Grant::ClientCredentials, _) => {
                if oauth.pkce != Pkce::Off {
                    self.push(
                        Problem::at(
                            "/auth/pkce",
                            "PKCE is part of the authorization code grant only",
                        )
                        .expected("`off` with `grant: client_credentials`"),
                    );
                }
            }
        }
        self.url("/auth/token_url", oauth.token_url.as_str(), true);
        for (key, url) in [
            ("refresh_url", &oauth.refresh_url),
            ("revocation_url", &oauth.revocation_url),
        ] {
            if let Some(url) = url {
                self.url(&pointer(&["auth", key]), url.as_str(), true);
            }
        }
        self.token_response("/auth/token_response", &oauth.token_response);
        let token_scope = self
            .credentials_scope()
            .only(
                "token",
                TOKEN,
                ["access_token".to_owned(), "refresh_token".to_owned()],
            )
            .only("client", CLIENT, ["id".to_owned(), "secret".to_owned()]);
        if let Refresh::Exchange { request, .. } = &oauth.refresh {
            self.token_request("/auth/refresh/request", request, &token_scope);
        }
        for (index, request) in oauth.post_exchange.iter().enumerate() {
            self.token_request(
                &pointer(&["auth", "post_exchange", &index.to_string()]),
                request,
                &token_scope,
            );
        }
        for (name, capture) in &oauth.capture {
            let at = pointer(&["auth", "capture", name]);
            if !is_name(name) {
                self.push(
                    Problem::at(at.clone(), format!("`{name}` is not a valid config name"))
                        .on_key()
                        .expected(NAME_PATTERN),
                );
            }
            if self.spec.config.contains_key(name) {
                self.push(
                    Problem::at(
                        at.clone(),
                        format!("`{name}` is captured but also declared in `config`"),
                    )
                    .on_key()
                    .expected("a captured value not declared in `config`: the capture sets it"),
                );
            }
            if let Capture::TokenResponse(path) = capture {
                self.json_path(&format!("{at}/token_response"), path);
            }
        }
    }

    fn token_request(&mut self, at: &str, request: &TokenRequest, scope: &Scope) {
        self.url(&format!("{at}/url"), request.url.as_str(), true);
        for (name, value) in &request.params {
            self.template(
                &format!("{at}/params/{}", pointer_segment(name)),
                value.as_str(),
                scope,
            );
        }
        self.token_response(&format!("{at}/response"), &request.response);
    }

    fn token_response(&mut self, at: &str, response: &TokenResponse) {
        let paths = [
            ("envelope", response.envelope.as_ref()),
            ("access_token", Some(&response.access_token)),
            ("refresh_token", Some(&response.refresh_token)),
            ("expires_in", Some(&response.expires_in)),
            ("expires_at", response.expires_at.as_ref()),
            ("refresh_expires_in", response.refresh_expires_in.as_ref()),
            ("scope", Some(&response.scope)),
            ("error_message", response.error_message.as_ref()),
        ];
        for (key, path) in paths {
            if let Some(path) = path {
                self.json_path(&format!("{at}/{key}"), path);
            }
        }
        if let Some(condition) = &response.error {
            self.condition(
                &format!("{at}/error"),
                condition.as_str(),
                &Scope::default().with("response", Fields::Any),
            );
        }
    }

    // ----- streams ---------------------------------------------------------------------------

    fn stream(&mut self, name: &str, stream: &Stream) {
        let base = pointer(&["streams", name]);
        if !is_name(name) {
            self.push(
                Problem::at(base.clone(), format!("`{name}` is not a valid stream name"))
                    .on_key()
                    .expected(NAME_PATTERN),
            );
        }

        let parent_fields: Vec<String> = stream
            .parent
            .as_ref()
            .map(|parent| parent.fields.keys().cloned().collect())
            .unwrap_or_default();
        let config = self.config_names();
        let page_fields: Vec<String> = match &stream.paginate {
            Paginate::None => vec![],
            Paginate::Cursor { .. } => vec!["token".to_owned()],
            Paginate::NextUrl { .. } => vec!["url".to_owned()],
            Paginate::OffsetLimit { .. } => vec!["offset".to_owned(), "limit".to_owned()],
            Paginate::PageNumber { .. } => vec!["number".to_owned(), "size".to_owned()],
        };
        let state_fields: Vec<String> = match &stream.incremental {
            None => vec![],
            Some(Incremental::Cursor { .. }) => vec!["cursor".to_owned()],
            Some(Incremental::SyncToken { .. }) => vec!["sync_token".to_owned()],
        };
        let request_scope = self
            .credentials_scope()
            .only("state", STATE, state_fields)
            .only("parent", PARENT, parent_fields.clone())
            .only("page", PAGE, page_fields);
        let record_scope = Scope::default()
            .with("record", Fields::Any)
            .only("parent", PARENT, parent_fields)
            .only("config", CONFIG, config.clone());

        if let Some(parent) = &stream.parent {
            self.parent(&base, name, parent, &config);
        }
        self.request(&format!("{base}/request"), &stream.request, &request_scope);
        let json_body = matches!(stream.request.body, Some(Body::Json(_)));
        self.paginate(
            &format!("{base}/paginate"),
            &stream.paginate,
            &request_scope,
            json_body,
        );
        self.json_path(&format!("{base}/records"), &stream.records);
        self.value_source(&format!("{base}/id"), &stream.id, &record_scope);
        self.map(&base, name, stream, &record_scope);
        match &stream.incremental {
            None => {}
            Some(Incremental::Cursor {
                field, location, ..
            }) => {
                self.json_path(&format!("{base}/incremental/field"), field);
                self.body_location(
                    &format!("{base}/incremental/location"),
                    *location,
                    json_body,
                );
            }
            Some(Incremental::SyncToken {
                token,
                location,
                reset_on,
                ..
            }) => {
                self.json_path(&format!("{base}/incremental/token"), token);
                self.body_location(
                    &format!("{base}/incremental/location"),
                    *location,
                    json_body,
                );
                for (index, status) in reset_on.iter().enumerate() {
                    self.status(&format!("{base}/incremental/reset_on/{index}"), *status);
                }
            }
        }
        if let Some(deleted) = &stream.deleted {
            self.condition(
                &format!("{base}/deleted"),
                deleted.as_str(),
                &Scope::default().with("record", Fields::Any),
            );
        }
    }

    fn parent(&mut self, base: &str, name: &str, parent: &Parent, config: &[String]) {
        let at = format!("{base}/parent/stream");
        if parent.stream == name {
            self.push(
                Problem::at(at, "a stream cannot be its own parent")
                    .expected("the name of another stream"),
            );
        } else if !self.spec.streams.contains_key(&parent.stream) {
            let names: Vec<&str> = self
                .spec
                .streams
                .keys()
                .map(String::as_str)
                .filter(|other| *other != name)
                .collect();
            let mut message = format!("no stream is called `{}`", parent.stream);
            if let Some(close) = did_you_mean(&parent.stream, names.iter().copied()) {
                message = format!("{message} (did you mean `{close}`?)");
            }
            self.push(Problem::at(at, message).expected(one_of(&names)));
        }
        if parent.fields.is_empty() {
            self.push(
                Problem::at(
                    format!("{base}/parent/fields"),
                    "a parent hands nothing to its child",
                )
                .expected("at least one field, such as `calendar_id: $.id`"),
            );
        }
        let scope =
            Scope::default()
                .with("record", Fields::Any)
                .only("config", CONFIG, config.to_vec());
        for (field, source) in &parent.fields {
            self.value_source(
                &format!("{base}/parent/fields/{}", pointer_segment(field)),
                source,
                &scope,
            );
        }
    }

    fn parent_cycles(&mut self) {
        let streams = &self.spec.streams;
        let mut reported: HashSet<BTreeSet<&str>> = HashSet::new();
        for start in streams.keys() {
            let mut chain: Vec<&str> = vec![start];
            let mut current = start.as_str();
            while let Some(parent) = streams
                .get(current)
                .and_then(|stream| stream.parent.as_ref())
            {
                let next = parent.stream.as_str();
                if next == current || !streams.contains_key(next) {
                    break; // reported by `parent`
                }
                if let Some(position) = chain.iter().position(|name| *name == next) {
                    let cycle = &chain[position..];
                    if reported.insert(cycle.iter().copied().collect()) {
                        let mut shown: Vec<&str> = cycle.to_vec();
                        shown.push(next);
                        self.push(
                            Problem::at(
                                // The walk started at the cycle's first-declared stream; its
                                // parent link is the likely surprise.
                                pointer(&["streams", cycle[0], "parent", "stream"]),
                                format!("parents form a cycle: {}", shown.join(" → ")),
                            )
                            .expected("parent links that end at a stream without a parent"),
                        );
                    }
                    break;
                }
                chain.push(next);
                current = next;
            }
        }
    }

    fn request(&mut self, at: &str, request: &Request, scope: &Scope) {
        let path = request.path.as_str();
        if path.starts_with("http://") || path.starts_with("https://") {
            self.absolute_template_url(&format!("{at}/path"), path);
        } else if !(path.starts_with('/') || path.starts_with("{{")) {
            self.push(
                Problem::at(
                    format!("{at}/path"),
                    format!("`{path}` is neither a path nor a URL"),
                )
                .expected(format!(
                    "a path starting with `/` (such as `/{path}`), or an https URL"
                )),
            );
        }
        self.template(&format!("{at}/path"), path, scope);
        for (name, value) in &request.query {
            self.template(
                &format!("{at}/query/{}", pointer_segment(name)),
                value.as_str(),
                scope,
            );
        }
        for (name, value) in &request.headers {
            self.template(
                &format!("{at}/headers/{}", pointer_segment(name)),
                value.as_str(),
                scope,
            );
        }
        match &request.body {
            None => {}
            Some(Body::Json(document)) => {
                self.json_templates(&format!("{at}/body/json"), document, scope)
            }
            Some(Body::Form(fields)) => {
                for (name, value) in fields {
                    self.template(
                        &format!("{at}/body/form/{}", pointer_segment(name)),
                        value.as_str(),
                        scope,
                    );
                }
            }
        }
        if request.body.is_some() && request.method == Method::Get {
            self.push(
                Problem::at(format!("{at}/method"), "a GET request with a body")
                    .expected("`POST`, `PUT` or `PATCH` for a request with a body"),
            );
        }
    }

    /// An absolute URL that may be a template: its host must be written out and allowed.
    fn absolute_template_url(&mut self, at: &str, text: &str) {
        let literal_prefix = text.split("{{").next().unwrap_or_default();
        let after_scheme = literal_prefix
            .split_once("://")
            .map_or("", |(_, rest)| rest);
        if !after_scheme.contains('/') && literal_prefix.len() < text.len() {
            self.push(
                Problem::at(at, "the host of this URL is a template").expected(
                    "a URL whose scheme and host are written out, so the host can be checked",
                ),
            );
            return;
        }
        let checkable = if literal_prefix.len() < text.len() {
            literal_prefix
        } else {
            text
        };
        self.url(at, checkable, true);
    }

    fn json_templates(&mut self, at: &str, document: &serde_json::Value, scope: &Scope) {
        match document {
            serde_json::Value::String(text) => self.template(at, text, scope),
            serde_json::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.json_templates(&format!("{at}/{index}"), item, scope);
                }
            }
            serde_json::Value::Object(fields) => {
                for (name, value) in fields {
                    self.json_templates(&format!("{at}/{}", pointer_segment(name)), value, scope);
                }
            }
            _ => {}
        }
    }

    fn paginate(&mut self, at: &str, paginate: &Paginate, scope: &Scope, json_body: bool) {
        let stop_scope = Scope::default()
            .with("response", Fields::Any)
            .with("page", Fields::Any);
        let stop_when = match paginate {
            Paginate::None => None,
            Paginate::Cursor {
                token,
                param,
                location,
                next_request,
                stop_when,
            } => {
                self.json_path(&format!("{at}/token"), token);
                self.param_name(&format!("{at}/param"), param);
                self.body_location(&format!("{at}/location"), *location, json_body);
                if let Some(request) = next_request {
                    self.request(&format!("{at}/next_request"), request, scope);
                }
                stop_when.as_ref()
            }
            Paginate::NextUrl { from, stop_when } => {
                if let NextUrlSource::Body(path) = from {
                    self.json_path(&format!("{at}/from/body"), path);
                }
                stop_when.as_ref()
            }
            Paginate::OffsetLimit {
                offset_param,
                limit_param,
                limit,
                location,
                stop_when,
            } => {
                self.param_name(&format!("{at}/offset_param"), offset_param);
                self.param_name(&format!("{at}/limit_param"), limit_param);
                self.positive(&format!("{at}/limit"), *limit);
                self.body_location(&format!("{at}/location"), *location, json_body);
                stop_when.as_ref()
            }
            Paginate::PageNumber {
                page_param,
                size_param,
                size,
                stop_when,
                ..
            } => {
                self.param_name(&format!("{at}/page_param"), page_param);
                if let Some(size_param) = size_param {
                    self.param_name(&format!("{at}/size_param"), size_param);
                }
                if let Some(size) = size {
                    self.positive(&format!("{at}/size"), *size);
                }
                if size_param.is_some() != size.is_some() {
                    self.push(
                        Problem::at(at, "`size_param` and `size` go together")
                            .on_key()
                            .expected("both `size_param` and `size`, or neither"),
                    );
                }
                stop_when.as_ref()
            }
        };
        if let Some(condition) = stop_when {
            self.condition(&format!("{at}/stop_when"), condition.as_str(), &stop_scope);
        }
    }

    fn param_name(&mut self, at: &str, name: &str) {
        if name.trim().is_empty() {
            self.push(
                Problem::at(at, "the parameter name is empty")
                    .expected("a parameter name such as `pageToken`"),
            );
        }
    }

    fn positive(&mut self, at: &str, number: u32) {
        if number == 0 {
            self.push(Problem::at(at, "a page size of zero").expected("at least 1"));
        }
    }

    fn body_location(&mut self, at: &str, location: ParamLocation, json_body: bool) {
        if location == ParamLocation::Body && !json_body {
            self.push(
                Problem::at(at, "a body parameter, but the request has no JSON body")
                    .expected("`query`, or a request with `body: {json: ...}`"),
            );
        }
    }

    fn map(&mut self, base: &str, name: &str, stream: &Stream, scope: &Scope) {
        let Some(model) = stream.model else {
            if !stream.map.is_empty() {
                self.push(
                    Problem::at(
                        format!("{base}/map"),
                        "the stream maps fields but has no `model`",
                    )
                    .on_key()
                    .expected("`model:` naming the model these fields belong to"),
                );
            }
            let streams = &self.spec.streams;
            let feeds = streams.values().any(|other| {
                other
                    .parent
                    .as_ref()
                    .is_some_and(|parent| parent.stream == name)
            });
            // A misspelt `parent.stream` elsewhere is reported there; this would only echo it.
            let dangling = streams.values().any(|other| {
                other
                    .parent
                    .as_ref()
                    .is_some_and(|parent| !streams.contains_key(&parent.stream))
            });
            if !feeds && !dangling {
                self.push(
                    Problem::at(
                        base,
                        "the stream has no `model` and feeds no substream, so it imports nothing",
                    )
                    .on_key()
                    .expected("`model:` and `map:`, or a substream naming it in `parent.stream`"),
                );
            }
            return;
        };
        for (field_name, mapping) in &stream.map {
            let at = format!("{base}/map/{}", pointer_segment(field_name));
            if PROVENANCE_FIELDS.contains(&field_name.as_str()) {
                let expected = if field_name == "source_object_id" {
                    "the stream's `id` to say where the record's id is"
                } else {
                    "no mapping: the engine sets it"
                };
                self.push(
                    Problem::at(at, format!("`{field_name}` is set by the engine"))
                        .on_key()
                        .expected(expected),
                );
                continue;
            }
            let Some(field) = model.field(field_name) else {
                let names: Vec<&str> = model.fields().iter().map(|field| field.name).collect();
                let mut message = format!("model `{}` has no field `{field_name}`", model.name());
                if let Some(close) = did_you_mean(field_name, names.iter().copied()) {
                    message = format!("{message} (did you mean `{close}`?)");
                }
                self.push(Problem::at(at, message).on_key().expected(format!(
                    "a field of `{}`: {}",
                    model.name(),
                    names.join(", ")
                )));
                continue;
            };
            let source_at = match mapping {
                FieldMapping::Short(_) => at.clone(),
                FieldMapping::Full(_) => format!("{at}/from"),
            };
            self.value_source(&source_at, mapping.source(), scope);
            if let Some(conversion) = mapping.conversion()
                && !conversion.output().fits(field.kind)
            {
                self.push(
                    Problem::at(
                        format!("{at}/as"),
                        format!(
                            "`{}` holds {}, but this conversion makes {}",
                            field.name,
                            field.kind.describe(),
                            conversion.output().describe()
                        ),
                    )
                    .expected(format!("a conversion that makes {}", field.kind.describe())),
                );
            }
            if let ValueSource::Template(text) = mapping.source()
                && !field.choices.is_empty()
                && template::is_literal(text.as_str())
                && !field.choices.contains(&text.as_str())
            {
                self.push(
                    Problem::at(
                        source_at,
                        format!("`{text}` is not a value of `{}`", field.name),
                    )
                    .expected(one_of(field.choices)),
                );
            }
        }
        let missing: Vec<&str> = model
            .fields()
            .iter()
            .filter(|field| field.required && !stream.map.contains_key(field.name))
            .map(|field| field.name)
            .collect();
        for name in missing {
            let description = model
                .field(name)
                .map_or(String::new(), |field| sentence_fragment(field.description));
            self.push(
                Problem::at(
                    format!("{base}/map"),
                    format!(
                        "model `{}` requires `{name}`, which is not mapped",
                        model.name()
                    ),
                )
                .on_key()
                .expected(format!("`{name}`: {description}")),
            );
        }
        if stream.map.is_empty() && model.fields().iter().all(|field| !field.required) {
            self.push(
                Problem::at(format!("{base}/map"), "nothing is mapped")
                    .on_key()
                    .expected("at least one field"),
            );
        }
    }

    // ----- the pieces ------------------------------------------------------------------------

    fn value_source(&mut self, at: &str, source: &ValueSource, scope: &Scope) {
        match source {
            ValueSource::Path(path) => self.json_path(at, path),
            ValueSource::Template(text) => self.template(at, text.as_str(), scope),
        }
    }

    fn json_path(&mut self, at: &str, path: &JsonPath) {
        if let Err(error) = serde_json_path::JsonPath::parse(path.as_str()) {
            self.push(
                Problem::at(at, format!("`{path}` is not a valid JSONPath: {error}")).expected(
                    "an RFC 9535 JSONPath such as `$.items[*]` or `$['@odata.nextLink']`",
                ),
            );
        }
    }

    fn template(&mut self, at: &str, source: &str, scope: &Scope) {
        match template::template_variables(&self.env, source) {
            Ok(variables) => self.variables(at, "template", &variables, scope),
            Err(error) => self.push(
                Problem::at(at, format!("the template does not compile: {error}"))
                    .expected("a minijinja template such as `{{ record.id }}`"),
            ),
        }
    }

    fn condition(&mut self, at: &str, source: &str, scope: &Scope) {
        match template::condition_variables(&self.env, source) {
            Ok(variables) => self.variables(at, "condition", &variables, scope),
            Err(error) => self.push(
                Problem::at(at, format!("the condition does not compile: {error}"))
                    .expected("an expression such as `record.status == 'cancelled'`"),
            ),
        }
    }

    fn variables(&mut self, at: &str, what: &str, variables: &BTreeSet<String>, scope: &Scope) {
        for variable in variables {
            let (root, attribute) = match variable.split_once('.') {
                Some((root, rest)) => (root, Some(rest.split('.').next().unwrap_or(rest))),
                None => (variable.as_str(), None),
            };
            if BUILTIN_GLOBALS.contains(&root) {
                continue;
            }
            let Some((_, fields)) = scope.roots.iter().find(|(name, _)| *name == root) else {
                let roots: Vec<&str> = scope.roots.iter().map(|(name, _)| *name).collect();
                let mut message = format!("the {what} reads `{root}`, which is not available here");
                if let Some(close) = did_you_mean(root, roots.iter().copied()) {
                    message = format!("{message} (did you mean `{close}`?)");
                }
                self.push(
                    Problem::at(at, message).expected(format!("variables from {}", one_of(&roots))),
                );
                continue;
            };
            if let (
                Fields::Only {
                    what: kind,
                    source,
                    names,
                },
                Some(attribute),
            ) = (fields, attribute)
                && !names.iter().any(|name| name == attribute)
            {
                let mut message = format!(
                    "the {what} reads `{root}.{attribute}`, but there is no {kind} `{attribute}`"
                );
                if let Some(close) = did_you_mean(attribute, names.iter().map(String::as_str)) {
                    message = format!("{message} (did you mean `{root}.{close}`?)");
                }
                let expected = if names.is_empty() {
                    format!("no `{root}.` variables here; they come from {source}")
                } else {
                    format!("`{root}.` followed by {}, from {source}", one_of(names))
                };
                self.push(Problem::at(at, message).expected(expected));
            }
        }
    }
}

/// A doc sentence as a fragment inside a message: lower-case start, no final period.
fn sentence_fragment(text: &str) -> String {
    let text = text.trim().trim_end_matches('.');
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

fn is_host_pattern(text: &str) -> bool {
    let host = text.strip_prefix("*.").unwrap_or(text);
    !host.is_empty()
        && host.contains('.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_are_plain_hosts() {
        assert!(is_host_pattern("api.example.com"));
        assert!(is_host_pattern("*.example.com"));
        for bad in [
            "https://api.example.com",
            "api.example.com/v1",
            "localhost",
            "api.example.com:443",
            "*",
            "a..b",
        ] {
            assert!(!is_host_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn names_are_snake_case() {
        assert!(is_name("media_items2"));
        assert!(!is_name("MediaItems"));
        assert!(!is_name("2items"));
        assert!(!is_name(""));
    }
}
