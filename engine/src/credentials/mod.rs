//! Credentials: what signs a connected account's requests, and how they are obtained, renewed,
//! sealed at rest and revoked.
//!
//! - [`static_auth`]: API keys, basic and bearer credentials from the integration's config;
//! - [`oauth2`]: OAuth 2.0 (authorization code with PKCE, client credentials, refresh,
//!   revocation, every provider quirk the spec declares);
//! - [`oauth1`]: OAuth 1.0a three-legged flows and HMAC-SHA1 signatures;
//! - [`secrets`]: tokens sealed at rest with the deployment's key.

pub mod oauth1;
pub mod oauth2;
pub mod secrets;
pub mod static_auth;

use crate::http::Authorizer;
use crate::spec::{Auth, ConnectorSpec};

/// The access token the sandbox's stand-ins hand out and accept.
pub const SANDBOX_ACCESS_TOKEN: &str = "sandbox-access-token";

/// The client id and secret the sandbox's stand-in provider accepts.
pub const SANDBOX_CLIENT: (&str, &str) = ("sandbox-client", "sandbox-secret");

/// Credentials for a sandbox run without a connected account: the replay checks none, so
/// stand-ins do (an OAuth 1.0a connector still signs every request). `context` holds the
/// integration's `config` and `secrets`.
pub fn sandbox_authorizer(
    spec: &ConnectorSpec,
    context: &minijinja::Value,
) -> Result<Box<dyn Authorizer>, String> {
    if let Auth::OAuth1(_) = spec.auth {
        let consumer = oauth1::Consumer {
            key: SANDBOX_CLIENT.0.to_owned(),
            secret: SANDBOX_CLIENT.1.to_owned(),
        };
        let token = oauth1::OAuth1Token {
            token: SANDBOX_ACCESS_TOKEN.to_owned(),
            secret: SANDBOX_ACCESS_TOKEN.to_owned(),
        };
        return Ok(Box::new(oauth1::OAuth1Authorizer::new(consumer, token)));
    }
    static_auth::StaticAuth::prepare(&spec.auth, context, Some(SANDBOX_ACCESS_TOKEN))
        .map(|auth| Box::new(auth) as Box<dyn Authorizer>)
        .map_err(|error| error.to_string())
}
