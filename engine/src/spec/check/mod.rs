//! Semantic checks: what the JSON Schema cannot say about a spec.
//!
//! Mapped fields exist on the model and required ones are mapped; every JSONPath, template and
//! condition compiles and reads only variables its context has; every URL is https on a declared
//! host; parents exist and form no cycle; durations and limits make sense.
//!
//! This module holds the checker and the connector-level checks; `auth` and `streams` hold the
//! checks of those sections.

mod auth;
mod streams;

use std::collections::BTreeSet;
use std::path::Path;

use minijinja::Environment;

use super::diagnostic::{Problem, did_you_mean, one_of};
use super::yaml::pointer_segment;
use super::*;
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
const ENTRY: (&str, &str) = (
    "entry attribute",
    "the export's file a record was read from",
);
const PAGE: (&str, &str) = ("page value", "the stream's paginator");
const SESSION: (&str, &str) = ("session value", "the stream's `session` (`id`, `url`)");
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

    fn connector(&mut self, file: &Path) {
        let spec = self.spec;
        if let Some(account) = &spec.account {
            let scope = Scope::default().only("config", CONFIG, self.config_names());
            self.template("/account", account.as_str(), &scope);
        }
        if let Some(error) = &spec.response_error {
            self.condition(
                "/response_error/when",
                error.when.as_str(),
                &Scope::default().with("response", Fields::Any),
            );
            if let Some(message) = &error.message {
                self.json_path("/response_error/message", message);
            }
        }
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
            let at = pointer(&["allowed_hosts", &index.to_string()]);
            if !is_host_pattern(host.as_str()) {
                self.push(
                    Problem::at(at, format!("`{host}` is not a host name"))
                        .expected("a host such as `api.example.com` or `*.example.com`, with no scheme, port or path"),
                );
            } else if let Some(problem) = host_refusal(host.as_str()) {
                self.push(Problem::at(at, problem).expected(
                    "the provider's own host names, such as `api.example.com`; addresses and public suffixes are never allowed",
                ));
            }
        }
        self.url(&pointer(&["docs_url"]), spec.docs_url.as_str(), false);
        // A connector that only reads exports sends no request: it needs no URL or hosts.
        if let Some(requests) = spec
            .streams
            .iter()
            .find_map(|(name, stream)| stream.request.as_ref().map(|_| name))
        {
            for (key, missing) in [
                ("base_url", spec.base_url.is_none()),
                ("allowed_hosts", spec.allowed_hosts.is_empty()),
            ] {
                if missing {
                    self.push(
                        Problem::at(String::new(), format!("`{key}` is missing, and stream `{requests}` sends requests"))
                            .expected(if key == "base_url" {
                                "`base_url:` the URL request paths are relative to, such as `https://api.example.com`"
                            } else {
                                "`allowed_hosts:` at least one host the connector may call, such as `api.example.com`"
                            }),
                    );
                }
            }
        }
        if let Some(base_url) = &spec.base_url
            && let Some(url) = self.url(&pointer(&["base_url"]), base_url.as_str(), true)
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
            for (at, host) in limit.hosts.iter().enumerate() {
                if !spec.allowed_hosts.contains(host) {
                    self.push(
                        Problem::at(
                            pointer(&["rate_limits", &index.to_string(), "hosts", &at.to_string()]),
                            format!(
                                "`{host}` is not in `allowed_hosts`: the limit would count nothing"
                            ),
                        )
                        .expected("an entry of `allowed_hosts`, written the same"),
                    );
                }
            }
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
        if spec.schedule.every.get() > super::MAX_SYNC_INTERVAL {
            self.push(
                Problem::at(
                    "/schedule/every",
                    format!(
                        "syncing every {} is longer than a year",
                        spec.schedule.every
                    ),
                )
                .expected("at most `366d`"),
            );
        }
        if spec.schedule.every.get() < super::MIN_SYNC_INTERVAL {
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
        self.body_limit("/limits/max_body", spec.limits.max_body);
        if spec.limits.max_run_time.get() > super::MAX_RUN_TIME {
            self.push(
                Problem::at(
                    "/limits/max_run_time",
                    format!(
                        "a run of {} is longer than a week",
                        spec.limits.max_run_time
                    ),
                )
                .expected("at most `7d`"),
            );
        }
        if spec.limits.max_run_time.get() < std::time::Duration::from_secs(60) {
            self.push(
                Problem::at(
                    "/limits/max_run_time",
                    format!(
                        "a run of {} is too short to import anything",
                        spec.limits.max_run_time
                    ),
                )
                .expected("at least `1m`"),
            );
        }
    }

    /// A body size limit: at least 1KiB, at most [`super::MAX_BODY_LIMIT`].
    pub(super) fn body_limit(&mut self, at: &str, limit: super::ByteSize) {
        if limit > super::MAX_BODY_LIMIT || limit < super::ByteSize::bytes(1024) {
            self.push(
                Problem::at(at, format!("a body limit of {limit} is out of range"))
                    .expected(format!("from `1KiB` to `{}`", super::MAX_BODY_LIMIT)),
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

    fn value_source(&mut self, at: &str, source: &ValueSource, scope: &Scope) {
        match source {
            ValueSource::Path(path) => self.json_path(at, path),
            ValueSource::Template(text) => self.template(at, text.as_str(), scope),
        }
    }

    fn json_path(&mut self, at: &str, path: &JsonPath) {
        if let Err(error) = crate::extract::CompiledPath::compile(path.as_str()) {
            self.push(
                Problem::at(at, error.to_string()).expected(
                    "an RFC 9535 JSONPath such as `$.items[*]` or `$['@odata.nextLink']`",
                ),
            );
        }
    }

    fn template(&mut self, at: &str, source: &str, scope: &Scope) {
        match template::template_variables(&self.env, source) {
            Ok(variables) => {
                self.variables(at, "template", &variables, scope);
                self.callables(at, "template", source, false);
            }
            Err(error) => self.push(
                Problem::at(at, format!("the template does not compile: {error}"))
                    .expected("a minijinja template such as `{{ record.id }}`"),
            ),
        }
    }

    fn condition(&mut self, at: &str, source: &str, scope: &Scope) {
        match template::condition_variables(&self.env, source) {
            Ok(variables) => {
                self.variables(at, "condition", &variables, scope);
                self.callables(at, "condition", source, true);
            }
            Err(error) => self.push(
                Problem::at(at, format!("the condition does not compile: {error}"))
                    .expected("an expression such as `record.status == 'cancelled'`"),
            ),
        }
    }

    /// A filter, test or function the template calls that the engine does not have, or work
    /// past a render's fuel whatever the values.
    fn callables(&mut self, at: &str, what: &str, source: &str, condition: bool) {
        if let Some(error) = template::unknown_callable(&self.env, source, condition) {
            let expected = if error.contains("fuel") {
                "a template that does less work: each render may run about 50,000 instructions"
            } else if error.contains("range has more than") {
                "a `range()` of at most 1,000 elements"
            } else {
                "a filter, test or function minijinja has built in (docs.rs/minijinja: filters, tests, functions)"
            };
            self.push(
                Problem::at(at, format!("the {what} fails whatever the values: {error}"))
                    .expected(expected),
            );
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

/// Why a well-formed host pattern may still not be allowed: an IP address (a spec could reach
/// the operator's network or a cloud's metadata service: `169.254.169.254`), or a public suffix
/// or every site under one (`*.co.uk`, `*.github.io`: anyone can register a host there).
/// Private-section suffixes count: `*.github.io` is every GitHub Pages site, a collector's too.
fn host_refusal(pattern: &str) -> Option<String> {
    let (wildcard, host) = match pattern.strip_prefix("*.") {
        Some(domain) => (true, domain),
        None => (false, pattern),
    };
    // No top-level domain is numeric: a host whose last label is a number is an address.
    if host
        .rsplit('.')
        .next()
        .is_some_and(|label| label.chars().all(|c| c.is_ascii_digit()))
    {
        return Some(format!(
            "`{pattern}` is an IP address; a connector may only name its provider's hosts"
        ));
    }
    let suffix = psl::suffix(host.as_bytes())?;
    (suffix.is_known() && suffix.as_bytes() == host.as_bytes()).then(|| {
        if wildcard {
            format!("`{pattern}` allows every site under the public suffix `{host}`, anyone's")
        } else {
            format!("`{pattern}` is a public suffix, not a host")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_public_suffixes_are_not_allowed_hosts() {
        for allowed in [
            "api.example.com",
            "*.example.com",
            "photoslibrary.googleapis.com",
            "lh3.googleusercontent.com",
            "api.dropboxapi.com",
            "user.github.io",
        ] {
            assert_eq!(host_refusal(allowed), None, "{allowed}");
        }
        for (refused, says) in [
            ("127.0.0.1", "IP address"),
            ("169.254.169.254", "IP address"),
            ("10.0.0.7", "IP address"),
            ("*.0.0.10", "IP address"),
            ("*.co.uk", "every site under the public suffix `co.uk`"),
            ("*.github.io", "every site"),
            ("*.googleapis.com", "every site"),
            ("co.uk", "is a public suffix"),
        ] {
            let problem = host_refusal(refused).unwrap_or_default();
            assert!(problem.contains(says), "{refused}: {problem}");
        }
    }

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
