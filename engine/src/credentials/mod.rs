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
