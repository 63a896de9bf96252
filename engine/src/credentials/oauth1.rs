//! OAuth 1.0a (RFC 5849) with HMAC-SHA1, for the providers that still require it (Trello,
//! Evernote): the three-legged flow and signed requests.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use super::oauth2::OAuthClient;
use crate::decode::decode;
use crate::decode::document::{Node, get};
use crate::http::{Authorizer, HttpClient, HttpError, HttpRequest, RequestBody, Response};
use crate::spec::{Decode, OAuth1Auth};

/// RFC 3986 unreserved characters stay; everything else is percent-encoded (RFC 5849 §3.6).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(text: &str) -> String {
    utf8_percent_encode(text, ENCODE).to_string()
}

/// The deployment's consumer key and secret.
#[derive(Clone)]
pub struct Consumer {
    /// The consumer key (Trello: the API key).
    pub key: String,
    /// The consumer secret.
    pub secret: String,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A token and its secret (temporary or access). `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth1Token {
    /// The token.
    pub token: String,
    /// The token secret.
    pub secret: String,
}

impl std::fmt::Debug for OAuth1Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth1Token")
            .field("token", &"[redacted]")
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The `oauth_*` values of one signed request, apart from the signature.
#[derive(Debug, Clone)]
pub struct SigningInput<'a> {
    /// The consumer.
    pub consumer: &'a Consumer,
    /// The token, once there is one.
    pub token: Option<&'a OAuth1Token>,
    /// A unique value per request.
    pub nonce: String,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// Further `oauth_*` parameters (`oauth_callback`, `oauth_verifier`).
    pub extra: Vec<(String, String)>,
}

/// The `Authorization: OAuth ...` header for a request to `url` with form fields `form`.
pub fn authorization_header(
    method: &str,
    url: &url::Url,
    form: &[(String, String)],
    input: &SigningInput<'_>,
) -> String {
    let mut oauth: Vec<(String, String)> = vec![
        ("oauth_consumer_key".to_owned(), input.consumer.key.clone()),
        ("oauth_nonce".to_owned(), input.nonce.clone()),
        ("oauth_signature_method".to_owned(), "HMAC-SHA1".to_owned()),
        ("oauth_timestamp".to_owned(), input.timestamp.to_string()),
        ("oauth_version".to_owned(), "1.0".to_owned()),
    ];
    if let Some(token) = input.token {
        oauth.push(("oauth_token".to_owned(), token.token.clone()));
    }
    oauth.extend(input.extra.iter().cloned());

    // §3.4.1.3: every query, form and oauth parameter, encoded, sorted by name then value.
    let mut parameters: Vec<(String, String)> = url
        .query_pairs()
        .map(|(name, value)| (encode(&name), encode(&value)))
        .chain(
            form.iter()
                .map(|(name, value)| (encode(name), encode(value))),
        )
        .chain(
            oauth
                .iter()
                .map(|(name, value)| (encode(name), encode(value))),
        )
        .collect();
    parameters.sort();
    let normalized = parameters
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut base_url = url.clone();
    base_url.set_query(None);
    base_url.set_fragment(None);
    let base = format!(
        "{}&{}&{}",
        method.to_uppercase(),
        encode(base_url.as_str()),
        encode(&normalized)
    );
    let key = format!(
        "{}&{}",
        encode(&input.consumer.secret),
        encode(input.token.map_or("", |token| token.secret.as_str()))
    );
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(base.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    oauth.push(("oauth_signature".to_owned(), signature));
    let fields: Vec<String> = oauth
        .iter()
        .map(|(name, value)| format!("{}=\"{}\"", encode(name), encode(value)))
        .collect();
    format!("OAuth {}", fields.join(", "))
}

fn fresh_input<'a>(
    consumer: &'a Consumer,
    token: Option<&'a OAuth1Token>,
    extra: Vec<(String, String)>,
) -> SigningInput<'a> {
    SigningInput {
        consumer,
        token,
        nonce: format!("{:032x}", rand::random::<u128>()),
        timestamp: u64::try_from(jiff::Timestamp::now().as_second()).unwrap_or_default(),
        extra,
    }
}

/// Why an OAuth 1.0a step failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuth1Error {
    /// The provider refused.
    #[error("the provider refused: {0}")]
    Rejected(String),
    /// The response lacks `oauth_token` or `oauth_token_secret`.
    #[error("the provider's answer has no oauth_token and oauth_token_secret")]
    Malformed,
    /// The callback does not belong to the started authorization.
    #[error("the callback's oauth_token is not the one issued for this authorization; start again")]
    TokenMismatch,
    /// The callback has no verifier.
    #[error("the callback has no oauth_verifier")]
    MissingVerifier,
    /// Sending failed.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// A started authorization: send the user to `url`; keep `request_token` for the callback.
#[derive(Debug, Clone)]
pub struct Started {
    /// Where the user authorizes.
    pub url: url::Url,
    /// The temporary credentials.
    pub request_token: OAuth1Token,
}

/// The three-legged flow for one connector.
pub struct OAuth1Flow<'a> {
    /// The spec's OAuth 1.0a section.
    pub auth: &'a OAuth1Auth,
    /// The consumer.
    pub consumer: &'a Consumer,
    /// The HTTP client (allowed hosts, sandbox, retries).
    pub http: &'a HttpClient,
}

struct Signed(String);

impl Authorizer for Signed {
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header(reqwest::header::AUTHORIZATION, &self.0)
    }
}

impl OAuth1Flow<'_> {
    async fn token_request(
        &self,
        url: &str,
        input: SigningInput<'_>,
    ) -> Result<OAuth1Token, OAuth1Error> {
        let url = url::Url::parse(url).map_err(|error| OAuth1Error::Rejected(error.to_string()))?;
        let header = authorization_header("POST", &url, &[], &input);
        let request = HttpRequest {
            method: reqwest::Method::POST,
            url,
            headers: vec![],
            body: Some(RequestBody::Form(vec![])),
            max_body: None,
        };
        // Token endpoints answer `application/x-www-form-urlencoded`.
        let form = |response: Response| {
            decode(Decode::Form, &response.body).map_err(|error| error.to_string())
        };
        let counters = crate::events::Counters::default();
        let document = match self
            .http
            .fetch(&request, &Signed(header), &counters, form)
            .await
        {
            Ok(document) => document,
            Err(HttpError::Status { status, excerpt }) => {
                return Err(OAuth1Error::Rejected(format!("{status}: {excerpt}")));
            }
            Err(HttpError::Unauthorized { excerpt }) => {
                return Err(OAuth1Error::Rejected(format!("401: {excerpt}")));
            }
            Err(error) => return Err(error.into()),
        };
        let body = document.root();
        match (
            get(body, "oauth_token").and_then(Node::as_str),
            get(body, "oauth_token_secret").and_then(Node::as_str),
        ) {
            (Some(token), Some(secret)) => Ok(OAuth1Token {
                token: token.to_owned(),
                secret: secret.to_owned(),
            }),
            _ => Err(OAuth1Error::Malformed),
        }
    }

    /// Gets temporary credentials and the URL where the user authorizes them.
    pub async fn start(&self, callback: &str) -> Result<Started, OAuth1Error> {
        let input = fresh_input(
            self.consumer,
            None,
            vec![("oauth_callback".to_owned(), callback.to_owned())],
        );
        let request_token = self
            .token_request(self.auth.request_token_url.as_str(), input)
            .await?;
        let mut url = url::Url::parse(self.auth.authorization_url.as_str())
            .map_err(|error| OAuth1Error::Rejected(error.to_string()))?;
        url.query_pairs_mut()
            .append_pair("oauth_token", &request_token.token)
            .extend_pairs(&self.auth.authorization_params);
        Ok(Started { url, request_token })
    }

    /// Trades the authorized temporary credentials for access credentials.
    pub async fn complete(
        &self,
        started: &Started,
        callback: &HashMap<String, String>,
    ) -> Result<OAuth1Token, OAuth1Error> {
        if callback.get("oauth_token") != Some(&started.request_token.token) {
            return Err(OAuth1Error::TokenMismatch);
        }
        let verifier = callback
            .get("oauth_verifier")
            .ok_or(OAuth1Error::MissingVerifier)?;
        let input = fresh_input(
            self.consumer,
            Some(&started.request_token),
            vec![("oauth_verifier".to_owned(), verifier.clone())],
        );
        self.token_request(self.auth.access_token_url.as_str(), input)
            .await
    }
}

/// Signs every API request with the consumer and access credentials.
pub struct OAuth1Authorizer {
    consumer: Consumer,
    token: OAuth1Token,
}

impl OAuth1Authorizer {
    /// Credentials for one integration.
    pub fn new(consumer: Consumer, token: OAuth1Token) -> Self {
        Self { consumer, token }
    }
}

impl Authorizer for OAuth1Authorizer {
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let (client, request) = request.build_split();
        let Ok(mut request) = request else {
            // An unbuildable request fails when sent, with reqwest's own error.
            return reqwest::RequestBuilder::from_parts(
                client,
                reqwest::Request::new(
                    reqwest::Method::GET,
                    "http://invalid.invalid/"
                        .parse()
                        .unwrap_or_else(|_| unreachable!()),
                ),
            );
        };
        let is_form = request
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|value| {
                value
                    .as_bytes()
                    .starts_with(b"application/x-www-form-urlencoded")
            });
        let form: Vec<(String, String)> =
            match (is_form, request.body().and_then(reqwest::Body::as_bytes)) {
                (true, Some(bytes)) => url::form_urlencoded::parse(bytes).into_owned().collect(),
                _ => vec![],
            };
        let input = fresh_input(&self.consumer, Some(&self.token), vec![]);
        let header = authorization_header(request.method().as_str(), request.url(), &form, &input);
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&header) {
            let mut value = value;
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::RequestBuilder::from_parts(client, request)
    }

    fn refresh(&self) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + '_>> {
        // OAuth 1.0a access tokens do not expire and cannot be renewed.
        Box::pin(async { Ok(false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(header: &str) -> String {
        let start = header.find("oauth_signature=\"").unwrap() + "oauth_signature=\"".len();
        let end = start + header[start..].find('"').unwrap();
        percent_encoding::percent_decode_str(&header[start..end])
            .decode_utf8()
            .unwrap()
            .into_owned()
    }

    /// OAuth Core 1.0, Appendix A.5: the photos.example.net request.
    #[test]
    fn oauth_core_appendix_a_vector() {
        let consumer = Consumer {
            key: "dpf43f3p2l4k3l03".into(),
            secret: "kd94hf93k423kf44".into(),
        };
        let token = OAuth1Token {
            token: "nnch734d00sl2jdk".into(),
            secret: "pfkkdhi9sl3r4s00".into(),
        };
        let input = SigningInput {
            consumer: &consumer,
            token: Some(&token),
            nonce: "kllo9940pd9333jh".into(),
            timestamp: 1191242096,
            extra: vec![],
        };
        let url =
            url::Url::parse("http://photos.example.net/photos?file=vacation.jpg&size=original")
                .unwrap();
        assert_eq!(
            signature(&authorization_header("GET", &url, &[], &input)),
            "tR3+Ty81lMeYAr/Fid0kMTYa/WM="
        );
    }

    /// Twitter's documented example: a POST with form fields, spaces, `+` and `!`.
    #[test]
    fn twitter_documentation_vector() {
        let consumer = Consumer {
            key: "xvz1evFS4wEEPTGEFPHBog".into(),
            secret: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw".into(),
        };
        let token = OAuth1Token {
            token: "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb".into(),
            secret: "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE".into(),
        };
        let input = SigningInput {
            consumer: &consumer,
            token: Some(&token),
            nonce: "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg".into(),
            timestamp: 1318622958,
            extra: vec![],
        };
        let url = url::Url::parse(
            "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
        )
        .unwrap();
        let form = vec![(
            "status".to_owned(),
            "Hello Ladies + Gentlemen, a signed OAuth request!".to_owned(),
        )];
        assert_eq!(
            signature(&authorization_header("POST", &url, &form, &input)),
            "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
        );
    }
}

// Connecting an account, and signing with it: what `super` dispatches to.

/// OAuth 1.0a connects through the browser.
pub const CONNECT_MODE: super::ConnectMode = super::ConnectMode::Browser;

/// A browser authorization under way: what the callback needs.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Where the person authorizes.
    pub url: String,
    /// The temporary credentials.
    pub request_token: OAuth1Token,
}

fn consumer(client: OAuthClient) -> Consumer {
    Consumer {
        key: client.id,
        secret: client.secret.unwrap_or_default(),
    }
}

fn provider_error(error: OAuth1Error) -> super::ConnectError {
    match error {
        OAuth1Error::TokenMismatch | OAuth1Error::MissingVerifier => {
            super::ConnectError::Refused(error.to_string())
        }
        _ => super::ConnectError::Provider(error.to_string()),
    }
}

/// Gets temporary credentials and the URL where the person authorizes them.
pub async fn start(
    auth: &OAuth1Auth,
    client: &OAuthClient,
    http: &HttpClient,
    callback: &str,
) -> Result<Pending, super::ConnectError> {
    let consumer = consumer(client.clone());
    let flow = OAuth1Flow {
        auth,
        consumer: &consumer,
        http,
    };
    let started = flow.start(callback).await.map_err(provider_error)?;
    Ok(Pending {
        url: started.url.into(),
        request_token: started.request_token,
    })
}

/// Trades the authorized temporary credentials for access credentials.
pub async fn finish(
    auth: &OAuth1Auth,
    client: &OAuthClient,
    http: &HttpClient,
    pending: &Pending,
    callback: &HashMap<String, String>,
) -> Result<super::Granted, super::ConnectError> {
    let consumer = consumer(client.clone());
    let flow = OAuth1Flow {
        auth,
        consumer: &consumer,
        http,
    };
    let started = Started {
        url: url::Url::parse(&pending.url)
            .map_err(|error| super::ConnectError::Refused(error.to_string()))?,
        request_token: pending.request_token.clone(),
    };
    let token = flow
        .complete(&started, callback)
        .await
        .map_err(provider_error)?;
    Ok(super::Granted {
        secret: serde_json::to_vec(&token).unwrap_or_default(),
        config: serde_json::Map::new(),
        // The provider grants what the authorization asked for.
        scopes: auth.authorization_params.get("scope").cloned(),
        expires_at: None,
    })
}

/// Signs with the sealed access credentials, opened.
pub fn authorizer(token: &[u8], client: OAuthClient) -> Result<OAuth1Authorizer, String> {
    Ok(OAuth1Authorizer::new(
        consumer(client),
        super::tokens_from(token)?,
    ))
}

/// The sandbox's stand-in: its client and token, so that requests are still signed.
pub fn sandbox_authorizer() -> OAuth1Authorizer {
    let token = OAuth1Token {
        token: super::SANDBOX_ACCESS_TOKEN.to_owned(),
        secret: super::SANDBOX_ACCESS_TOKEN.to_owned(),
    };
    OAuth1Authorizer::new(
        Consumer {
            key: super::SANDBOX_CLIENT.0.to_owned(),
            secret: super::SANDBOX_CLIENT.1.to_owned(),
        },
        token,
    )
}
