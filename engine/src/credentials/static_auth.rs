//! Credentials on requests.
//!
//! Static schemes (API key, bearer, basic) render their templates once, from the integration's
//! config and secrets. OAuth connectors run here with an access token obtained elsewhere (the
//! OAuth flows, refresh included, are the `oauth` module's job); without one they cannot run.

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};

use crate::http::Authorizer;
use crate::spec::{Auth, KeyLocation};
use crate::template::Templates;

/// Static credentials are config values the person gives.
pub const CONNECT_MODE: super::ConnectMode = super::ConnectMode::Config;

/// Why credentials could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A credential template failed to render.
    #[error("the credential template failed: {0}")]
    Template(String),
    /// The rendered credential cannot be sent in a header.
    #[error("the credential contains characters that cannot be sent in an HTTP header")]
    InvalidHeader,
    /// The connector needs an access token and none was given.
    #[error(
        "this connector uses {kind}; it needs an access token (connect the account, or pass one with --access-token)"
    )]
    NeedsToken {
        /// `oauth2` or `oauth1`.
        kind: &'static str,
    },
}

/// Credentials that do not change during a run.
#[derive(Debug, Clone, Default)]
pub enum StaticAuth {
    /// Nothing added.
    #[default]
    None,
    /// A header (`Authorization: Bearer ...`, `X-Api-Key: ...`), marked sensitive.
    Header(HeaderName, HeaderValue),
    /// A query parameter.
    Query(String, String),
    /// HTTP Basic.
    Basic(String, String),
}

impl StaticAuth {
    /// Prepares the credentials `auth` describes. `context` holds `config` and `secrets`.
    pub fn prepare(
        auth: &Auth,
        context: &minijinja::Value,
        access_token: Option<&str>,
    ) -> Result<Self, AuthError> {
        let mut templates = Templates::default();
        let mut render = |source: &str| {
            let id = templates
                .add(source)
                .map_err(|error| AuthError::Template(error.to_string()))?;
            templates
                .render(&id, context)
                .map_err(|error| AuthError::Template(error.to_string()))
        };
        let header = |name: HeaderName, value: String| {
            let mut value = HeaderValue::from_str(&value).map_err(|_| AuthError::InvalidHeader)?;
            value.set_sensitive(true);
            Ok::<_, AuthError>(Self::Header(name, value))
        };
        match auth {
            Auth::None => Ok(Self::None),
            Auth::ApiKey(key) => {
                let value = render(key.value.as_str())?;
                match key.location {
                    KeyLocation::Header => header(
                        HeaderName::from_bytes(key.name.as_bytes())
                            .map_err(|_| AuthError::InvalidHeader)?,
                        value,
                    ),
                    KeyLocation::Query => Ok(Self::Query(key.name.clone(), value)),
                }
            }
            Auth::Bearer(bearer) => header(
                AUTHORIZATION,
                format!("Bearer {}", render(bearer.token.as_str())?),
            ),
            Auth::Basic(basic) => {
                let username = render(basic.username.as_str())?;
                let password = basic
                    .password
                    .as_ref()
                    .map(|password| render(password.as_str()))
                    .transpose()?
                    .unwrap_or_default();
                Ok(Self::Basic(username, password))
            }
            Auth::OAuth2(_) => match access_token {
                Some(token) => header(AUTHORIZATION, format!("Bearer {token}")),
                None => Err(AuthError::NeedsToken { kind: "OAuth 2.0" }),
            },
            Auth::OAuth1(_) => Err(AuthError::NeedsToken { kind: "OAuth 1.0a" }),
        }
    }
}

impl Authorizer for StaticAuth {
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => request,
            Self::Header(name, value) => request.header(name.clone(), value.clone()),
            Self::Query(name, value) => request.query(&[(name, value)]),
            Self::Basic(username, password) => request.basic_auth(username, Some(password)),
        }
    }
}
