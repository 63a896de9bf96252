//! Provider profiles: the endpoints of OAuth clients that several connectors share.
//!
//! An operator registers one Google client and gives its secret once, for Google Photos, Gmail,
//! Calendar and Drive. Were each spec to name its own token endpoint, any spec saying
//! `client: google` could send that secret to a host of its choosing. So a shared client's
//! endpoints come from its profile, in `connectors/providers.yaml`, compiled into the engine; a
//! spec that names a shared client and sets an endpoint, or a request that would carry the
//! client's secret (`refresh.request`, `post_exchange`, `revocation`), is refused where it sets
//! it.
//!
//! Profiles are applied to the spec's document before it is validated, so the rest of the
//! engine reads the endpoints where a spec with its own client writes them.

use std::sync::LazyLock;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

use super::diagnostic::{Problem, one_of};
use super::yaml;

/// The profiles as written.
const PROFILES: &str = include_str!("../../../connectors/providers.yaml");

/// One shared client's provider: where its authorization, tokens and revocation go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderProfile {
    /// The provider's name as people know it.
    pub name: String,
    /// The provider's OAuth documentation.
    pub docs_url: String,
    /// The authorization endpoint.
    pub authorization_url: String,
    /// The token endpoint.
    pub token_url: String,
    /// A separate refresh endpoint, where the provider has one.
    #[serde(default)]
    pub refresh_url: Option<String>,
    /// The RFC 7009 revocation endpoint, where the provider has one.
    #[serde(default)]
    pub revocation_url: Option<String>,
}

static LOADED: LazyLock<Result<IndexMap<String, ProviderProfile>, String>> = LazyLock::new(|| {
    let document = yaml::parse(PROFILES).map_err(|problems| {
        problems
            .iter()
            .map(|problem| format!("{}: {}", problem.position.line, problem.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    serde_json::from_value(document.value).map_err(|error| error.to_string())
});

/// The profiles, by client name; an error when the compiled-in file does not read (a test
/// keeps that from being released).
pub fn provider_profiles() -> Result<&'static IndexMap<String, ProviderProfile>, &'static str> {
    LOADED.as_ref().map_err(String::as_str)
}

/// What a spec naming a shared client may not set itself, in `auth`.
const PROFILE_KEYS: [&str; 4] = [
    "authorization_url",
    "token_url",
    "refresh_url",
    "revocation_url",
];

/// Requests of a spec's own that can read `client.secret`.
const SECRET_REQUESTS: [&str; 2] = ["post_exchange", "revocation"];

/// Applies the profile of the shared client an OAuth 2.0 spec names (`auth.client`) to the spec
/// document: its endpoints are written into `auth`. The problems, when the spec names no known
/// profile or sets what the profile decides.
pub(crate) fn apply(spec: &mut Value) -> Vec<Problem> {
    let Some(auth) = spec.get_mut("auth").and_then(Value::as_object_mut) else {
        return vec![];
    };
    if auth.get("kind").and_then(Value::as_str) != Some("oauth2") {
        return vec![];
    }
    let Some(client) = auth
        .get("client")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return vec![];
    };
    let profiles = match provider_profiles() {
        Ok(profiles) => profiles,
        Err(reason) => {
            return vec![Problem::at(
                "/auth/client",
                format!(
                    "the engine's provider profiles do not read ({reason}); please report this"
                ),
            )];
        }
    };
    let Some(profile) = profiles.get(&client) else {
        let names: Vec<&str> = profiles.keys().map(String::as_str).collect();
        return vec![
            Problem::at(
                "/auth/client",
                format!("no provider profile is named `{client}`"),
            )
            .expected(format!(
                "a shared client from connectors/providers.yaml ({}), or no `client` for the connector's own",
                one_of(&names)
            )),
        ];
    };
    let refused = |key: &str, what: &str| {
        Problem::at(
            format!("/auth/{key}"),
            format!(
                "a connector that shares the `{client}` client cannot set {what}: the shared client's endpoints come from its provider profile, so that its secret goes only where connectors/providers.yaml says"
            ),
        )
        .on_key()
        .expected(format!("no `{key}` (the `{client}` profile provides it)"))
    };
    let mut problems: Vec<Problem> = PROFILE_KEYS
        .iter()
        .chain(&SECRET_REQUESTS)
        .filter(|key| auth.contains_key(**key))
        .map(|key| refused(key, &format!("`{key}`")))
        .collect();
    if auth
        .get("refresh")
        .and_then(|refresh| refresh.get("request"))
        .is_some()
    {
        problems.push(refused("refresh", "a refresh request of its own"));
    }
    if !problems.is_empty() {
        return problems;
    }
    let endpoints = [
        ("authorization_url", Some(&profile.authorization_url)),
        ("token_url", Some(&profile.token_url)),
        ("refresh_url", profile.refresh_url.as_ref()),
        ("revocation_url", profile.revocation_url.as_ref()),
    ];
    for (key, url) in endpoints {
        if let Some(url) = url {
            auth.insert(key.to_owned(), Value::String(url.clone()));
        }
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_profiles_read_and_hold_https_urls() {
        let profiles = provider_profiles().unwrap();
        assert!(profiles.contains_key("google"));
        for profile in profiles.values() {
            for url in [&profile.authorization_url, &profile.token_url]
                .into_iter()
                .chain(profile.refresh_url.as_ref())
                .chain(profile.revocation_url.as_ref())
            {
                assert!(url.starts_with("https://"), "{url}");
            }
        }
    }
}
