//! Sending requests: allowed hosts only, rate limits, retries with backoff.
//!
//! The client knows no body format: a caller hands it what to make of a successful answer (the
//! HTTP source decodes a page, a token request its token), and an answer the caller refuses is
//! retried like a failed exchange. What is retried: statuses in the spec's `retry.statuses`
//! (429 and 5xx by default), timeouts, connection failures and resets (also mid-body), and 2xx
//! bodies their caller refuses (truncated JSON). The wait is the first wait header present (`Retry-After` as seconds or an HTTP date,
//! reset timestamps), else exponential backoff with full jitter. A 401 asks the authorizer to
//! refresh once. Any other 4xx fails at once.
//!
//! Where a request may go is checked on every hop: the first URL and each redirect must be https
//! on an allowed host; credentials, the spec's headers and bodies stay with the origin they were
//! meant for; outside the sandbox, names must resolve to public addresses ([`PublicResolver`]).

mod public;

pub use public::{NotPublic, PublicResolver, is_public};

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::events::{Event, Observer};
use crate::ratelimit::RateGate;
use crate::spec::{ConnectorSpec, HostPattern, Retry, WaitFormat};

/// The longest wait a header may impose before a retry.
const MAX_HEADER_WAIT: Duration = Duration::from_secs(3600);

/// How many redirects one request follows.
const MAX_REDIRECTS: usize = 5;

/// The header that tells the sandbox replay which host a request was meant for.
pub const SANDBOX_HOST_HEADER: &str = "x-hypernet-host";

/// A request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    /// The method.
    pub method: reqwest::Method,
    /// The full URL.
    pub url: url::Url,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body and its content type.
    pub body: Option<RequestBody>,
    /// The largest answer accepted, in bytes after decompression; `None`: the client's.
    pub max_body: Option<u64>,
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// `application/json`.
    Json(Value),
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
}

impl HttpRequest {
    /// `GET https://host/path?query`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, redacted(&self.url))
    }
}

/// `url` with the values of credential-like query parameters (`access_token`, `api_key`,
/// `client_secret`, `signature`, ...) replaced: providers put tokens in next-page URLs
/// (Instagram's `paging.next`), and descriptions end up in errors and logs.
pub fn redacted(url: &url::Url) -> String {
    const SECRET_WORDS: [&str; 6] = ["token", "key", "secret", "signature", "password", "code"];
    if url.query().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    let mut hidden = false;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(name, value)| {
            let lower = name.to_lowercase();
            // Paging and sync tokens are not credentials, and they help to debug paging.
            let paging = ["page", "pagin", "sync", "skiptoken", "deltatoken", "next"]
                .iter()
                .any(|word| lower.contains(word));
            let secret = !paging && SECRET_WORDS.iter().any(|word| lower.contains(word));
            hidden |= secret;
            let value = if secret {
                "***".to_owned()
            } else {
                value.into_owned()
            };
            (name.into_owned(), value)
        })
        .collect();
    if !hidden {
        return url.to_string();
    }
    shown.query_pairs_mut().clear().extend_pairs(pairs);
    shown.to_string()
}

/// [`redacted`] for a URL kept as text; text that is not a URL is shown as it is.
pub fn redacted_text(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_owned(), |parsed| redacted(&parsed))
}

/// A successful (2xx) answer, as it came.
#[derive(Debug)]
pub struct Response {
    /// The status (2xx).
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: bytes::Bytes,
}

/// Where requests really go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// To the URL's own host.
    Direct,
    /// Every request to the sandbox replay at this base URL, its intended host in a header.
    Sandbox(url::Url),
}

/// Adds credentials to requests, and renews them when the provider refuses them.
pub trait Authorizer: Send + Sync {
    /// Adds the credentials to an outgoing request.
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder;

    /// Runs before each request: credentials that are about to expire renew themselves here.
    fn prepare(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }

    /// Tries to renew the credentials after a 401; `Ok(true)` when there are new ones to retry
    /// with. Static credentials cannot be renewed.
    fn refresh(&self) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + '_>> {
        Box::pin(async { Ok(false) })
    }
}

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL's host is not in the connector's `allowed_hosts`.
    #[error("{url} is not on one of the connector's allowed hosts")]
    HostNotAllowed {
        /// The refused URL.
        url: String,
    },
    /// The provider answered with an error that retrying will not fix.
    #[error("the provider answered {status}: {excerpt}")]
    Status {
        /// The status.
        status: u16,
        /// The start of the body.
        excerpt: String,
    },
    /// The provider refused the credentials, and they could not be renewed.
    #[error("the provider refused the credentials (401): {excerpt}")]
    Unauthorized {
        /// The start of the body.
        excerpt: String,
    },
    /// Renewing the credentials failed.
    #[error("renewing the credentials failed: {0}")]
    Refresh(String),
    /// Every attempt failed with a retryable error.
    #[error("gave up after {attempts} attempts; the last failure: {last}")]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The request could not be built (a header value with a newline, say).
    #[error("the request could not be built: {0}")]
    Build(String),
    /// The host's name resolved to an address that is not public (outside the sandbox).
    #[error("{url} was not requested: {reason}")]
    NotPublic {
        /// The refused URL (credentials hidden).
        url: String,
        /// What the name resolved to.
        reason: String,
    },
    /// The answer's body is larger than the limit.
    #[error("the answer to {url} is larger than {limit} bytes; it was not read further")]
    TooLarge {
        /// The request's URL (credentials hidden).
        url: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The answer is not what the connector expects of it (a content part's `answer` is
    /// not in it).
    #[error("the answer to {url} is not what the connector expects: {reason}")]
    Unexpected {
        /// The request's URL (credentials hidden).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The provider redirected the request where it may not go.
    #[error("{from} redirected to {to}, which was not followed: {reason}")]
    Redirect {
        /// The redirected request's URL (credentials hidden).
        from: String,
        /// Where it was sent (credentials hidden).
        to: String,
        /// Why it was not followed.
        reason: &'static str,
    },
}

impl HttpError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::HostNotAllowed { .. } => {
                "the connector spec must list this host in `allowed_hosts`; report it to the connector's authors"
            }
            Self::Status { status: 403, .. } => {
                "check that the account granted the scopes this connector asks for, then connect again"
            }
            Self::Status { status: 404, .. } => {
                "the resource is gone or the connector's request is wrong; report it to the connector's authors"
            }
            Self::Status { .. } => {
                "the request was refused; if it persists, report it to the connector's authors"
            }
            Self::Unauthorized { .. } | Self::Refresh(_) => {
                "connect the account again (the credentials were refused or revoked)"
            }
            Self::RetriesExhausted { .. } => {
                "the provider is failing or rate limiting; try again later, the sync resumes where it stopped"
            }
            Self::Build(_) => "check the configured values for line breaks or invalid characters",
            Self::Unexpected { .. } => {
                "the provider's answer changed shape or the connector is wrong; report it to the connector's authors"
            }
            Self::NotPublic { .. } => {
                "the provider's host name points into a private network; if the connector is right, the host's DNS is wrong or hostile"
            }
            Self::TooLarge { .. } => {
                "if such answers are expected, raise the connector's `limits.max_body` (or the stream's `max_body`); otherwise report it to the connector's authors"
            }
            Self::Redirect { .. } => {
                "the provider sent the request elsewhere than the connector declares; report it to the connector's authors"
            }
        }
    }
}

/// Options of the HTTP client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The limit on one attempt, from connecting to the last body byte.
    pub timeout: Duration,
    /// Where requests go.
    pub transport: Transport,
    /// The largest answer accepted, in bytes after decompression, when a request sets none.
    pub max_body: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            transport: Transport::Direct,
            max_body: crate::spec::Limits::default().max_body.get(),
        }
    }
}

/// Why one exchange failed.
enum Failed {
    /// For a reason that may pass (a timeout, a reset connection): retried. Its description.
    Transient(String),
    /// For good: retrying would get the same.
    Permanent(HttpError),
}

/// No credentials: what a redirect to another origin is sent with, and what an import (which
/// sends no request) runs with.
pub struct NoCredentials;

impl Authorizer for NoCredentials {
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
    }
}

/// Sends a connector's requests.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    transport: Transport,
    allowed_hosts: Vec<HostPattern>,
    retry: Retry,
    gate: RateGate,
    max_body: u64,
}

/// Installs ring as the process's TLS provider; call once at start. Idempotent.
pub fn install_tls_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl HttpClient {
    /// A client for one integration of `spec`'s connector: its hosts, retries and limits,
    /// rate limited by `gate`, sending to `transport`.
    pub fn for_connector(
        spec: &ConnectorSpec,
        gate: RateGate,
        transport: Transport,
    ) -> Result<Self, HttpError> {
        Self::new(
            spec.allowed_hosts.clone(),
            spec.retry.clone(),
            gate,
            ClientOptions {
                transport,
                max_body: spec.limits.max_body.get(),
                ..ClientOptions::default()
            },
        )
    }

    /// A client for one integration of a connector.
    pub fn new(
        allowed_hosts: Vec<HostPattern>,
        retry: Retry,
        gate: RateGate,
        options: ClientOptions,
    ) -> Result<Self, HttpError> {
        install_tls_provider();
        let mut builder = reqwest::Client::builder();
        if options.transport == Transport::Direct {
            builder = builder.dns_resolver(PublicResolver);
        }
        let client = builder
            // Redirects are followed by `exchange_following`, each hop checked like the first
            // request; reqwest would follow them to any host, with the request's own headers
            // (a custom API-key header among them) and, for 307 and 308, its body.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(15)))
            .user_agent(concat!("hypernet-connect/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| HttpError::Build(error.to_string()))?;
        Ok(Self {
            client,
            transport: options.transport,
            allowed_hosts,
            retry,
            gate,
            max_body: options.max_body,
        })
    }

    /// Sends `request` until it succeeds or fails for good, and hands the successful answer to
    /// `accept`: what it makes of it is returned, and an answer it refuses (a body that does not
    /// decode: a truncated page) is retried like a failed exchange, `accept`'s reason reported.
    ///
    /// `accept` runs on the caller's task: a decoded page is built where it is mapped and
    /// dropped (building it on the exchange's worker thread and freeing it on the run's cost
    /// more CPU than decoding in parallel saved; BENCHMARKS.md).
    pub async fn fetch<T>(
        &self,
        request: &HttpRequest,
        auth: &dyn Authorizer,
        observer: &dyn Observer,
        mut accept: impl FnMut(Response) -> Result<T, String>,
    ) -> Result<T, HttpError> {
        self.send(
            request,
            &Vec::new,
            auth,
            observer,
            Read::Whole,
            |exchange: Exchange| {
                let body = match exchange.body {
                    Body::Whole(body) => body,
                    // A whole read never leaves the body open.
                    Body::Open(_) => bytes::Bytes::new(),
                };
                std::future::ready(
                    accept(Response {
                        status: exchange.status,
                        headers: exchange.headers,
                        body,
                    })
                    .map_err(Refusal::Retry),
                )
            },
        )
        .await
    }

    /// Sends `request` like [`HttpClient::fetch`], but hands a successful answer over with its
    /// body still coming, for content that is streamed to disk rather than held (a photo, a
    /// file). `accept` reads the body; a body cut off by the network is retried (the whole
    /// request again), and `accept` may refuse what it read for good ([`Refusal::Stop`]).
    ///
    /// `accept` makes the future that reads one attempt's answer, so each attempt starts over.
    pub async fn download<T, F>(
        &self,
        request: &HttpRequest,
        auth: &dyn Authorizer,
        observer: &dyn Observer,
        accept: impl FnMut(Streaming) -> F,
    ) -> Result<T, HttpError>
    where
        F: Future<Output = Result<T, Refusal>>,
    {
        self.download_with(request, &Vec::new, auth, observer, accept)
            .await
    }

    /// The same, with `headers` added to each attempt as it is sent: an answer cut off is
    /// asked again from where it stopped (`Range`), which only the reader of the answers knows.
    pub async fn download_with<T, F>(
        &self,
        request: &HttpRequest,
        headers: &(dyn Fn() -> Vec<(String, String)> + Sync),
        auth: &dyn Authorizer,
        observer: &dyn Observer,
        mut accept: impl FnMut(Streaming) -> F,
    ) -> Result<T, HttpError>
    where
        F: Future<Output = Result<T, Refusal>>,
    {
        let limit = request.max_body.unwrap_or(self.max_body);
        let url = redacted(&request.url);
        self.send(
            request,
            headers,
            auth,
            observer,
            Read::Open,
            |exchange: Exchange| {
                let streaming = match exchange.body {
                    Body::Open(body) => Ok(Streaming {
                        status: exchange.status,
                        headers: exchange.headers,
                        body,
                        read: 0,
                        limit,
                        url: url.clone(),
                    }),
                    Body::Whole(_) => Err(Refusal::Retry("the answer was read whole".to_owned())),
                };
                let reading = streaming.map(&mut accept);
                async move {
                    match reading {
                        Ok(reading) => reading.await,
                        Err(refusal) => Err(refusal),
                    }
                }
            },
        )
        .await
    }

    /// The retry loop both kinds of request share: rate limit, credentials, the exchange (and its
    /// redirects), then the status decides: 2xx to `accept`, 401 to a refresh, the spec's
    /// retryable statuses and transport failures to a wait, anything else fails for good.
    async fn send<T, F>(
        &self,
        request: &HttpRequest,
        headers: &(dyn Fn() -> Vec<(String, String)> + Sync),
        auth: &dyn Authorizer,
        observer: &dyn Observer,
        read: Read,
        mut accept: impl FnMut(Exchange) -> F,
    ) -> Result<T, HttpError>
    where
        F: Future<Output = Result<T, Refusal>>,
    {
        if !self.may_reach(&request.url) {
            return Err(HttpError::HostNotAllowed {
                url: request.url.to_string(),
            });
        }
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            self.gate
                .acquire(request.url.host_str().unwrap_or_default(), |wait| {
                    tracing::info!(
                        request = %request.describe(),
                        wait_ms = wait.as_millis(),
                        "rate limit: waiting before the request"
                    );
                    observer.event(&Event::RateLimited { wait });
                })
                .await;
            auth.prepare().await.map_err(HttpError::Refresh)?;
            observer.event(&Event::Request);
            let added = headers();
            let request = if added.is_empty() {
                std::borrow::Cow::Borrowed(request)
            } else {
                let mut with = request.clone();
                with.headers.extend(added);
                std::borrow::Cow::Owned(with)
            };
            let (reason, header_wait) = match self.exchange_following(&request, auth, read).await {
                Ok(exchange) if (200..300).contains(&exchange.status) => {
                    match accept(exchange).await {
                        Ok(accepted) => return Ok(accepted),
                        Err(Refusal::Retry(reason)) => (reason, None),
                        Err(Refusal::Stop(error)) => return Err(error),
                    }
                }
                Ok(Exchange {
                    status: 401, body, ..
                }) if !refreshed => {
                    refreshed = true;
                    match auth.refresh().await {
                        Ok(true) => {
                            attempt -= 1;
                            continue;
                        }
                        Ok(false) => {
                            return Err(HttpError::Unauthorized {
                                excerpt: body.excerpt(),
                            });
                        }
                        Err(error) => return Err(HttpError::Refresh(error)),
                    }
                }
                Ok(Exchange {
                    status: 401, body, ..
                }) => {
                    return Err(HttpError::Unauthorized {
                        excerpt: body.excerpt(),
                    });
                }
                Ok(Exchange {
                    status, headers, ..
                }) if self.retry.statuses.contains(&status) => {
                    (format!("status {status}"), self.header_wait(&headers))
                }
                Ok(Exchange { status, body, .. }) => {
                    return Err(HttpError::Status {
                        status,
                        excerpt: body.excerpt(),
                    });
                }
                Err(Failed::Transient(reason)) => (reason, None),
                Err(Failed::Permanent(error)) => return Err(error),
            };
            if attempt >= self.retry.max_attempts {
                return Err(HttpError::RetriesExhausted {
                    attempts: attempt,
                    last: reason,
                });
            }
            let wait = header_wait.unwrap_or_else(|| self.backoff(attempt));
            tracing::info!(
                request = %request.describe(),
                attempt,
                wait_ms = wait.as_millis(),
                %reason,
                "retrying"
            );
            observer.event(&Event::Retry {
                attempt,
                wait,
                reason: &reason,
            });
            tokio::time::sleep(wait).await;
        }
    }

    /// Whether requests may go to `url`: https, on one of the connector's allowed hosts.
    fn may_reach(&self, url: &url::Url) -> bool {
        let host = url.host_str().unwrap_or_default();
        url.scheme() == "https"
            && self
                .allowed_hosts
                .iter()
                .any(|pattern| pattern.matches(host))
    }

    /// One exchange and the redirects it leads to, each hop checked as the first request is
    /// (https, an allowed host). Within the origin a redirect is the same request at a new URL,
    /// signed again; to another origin only a bare `GET` follows (no credentials, none of the
    /// spec's headers, no body: they were meant for the first host), and a 307 or 308 that
    /// would re-send a body there is refused. A refused redirect fails the request for good; a
    /// transport failure comes back described, to be retried.
    async fn exchange_following(
        &self,
        request: &HttpRequest,
        auth: &dyn Authorizer,
        read: Read,
    ) -> Result<Exchange, Failed> {
        let mut current = std::borrow::Cow::Borrowed(request);
        let mut signed = true;
        let mut hops = 0;
        loop {
            let exchange = if signed {
                self.exchange(&current, auth, read).await
            } else {
                self.exchange(&current, &NoCredentials, read).await
            };
            let exchange = exchange?;
            let location = exchange
                .headers
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok());
            let (status, Some(location)) = (exchange.status, location) else {
                return Ok(exchange);
            };
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(exchange);
            }
            let refuse = |to: String, reason| {
                Failed::Permanent(HttpError::Redirect {
                    from: redacted(&current.url),
                    to,
                    reason,
                })
            };
            let Ok(next) = current.url.join(location) else {
                return Err(refuse(location.to_owned(), "the address is not a URL"));
            };
            if hops == MAX_REDIRECTS {
                return Err(refuse(redacted(&next), "too many redirects"));
            }
            hops += 1;
            if !self.may_reach(&next) {
                return Err(refuse(
                    redacted(&next),
                    "it is not https on one of the connector's allowed hosts",
                ));
            }
            let same_origin = next.origin() == current.url.origin();
            // 307 and 308 repeat the request; the others turn it into a GET without a body.
            let repeats = matches!(status, 307 | 308);
            if repeats && !same_origin && current.body.is_some() {
                return Err(refuse(
                    redacted(&next),
                    "it would re-send the request's body to another host",
                ));
            }
            let method = if repeats || current.method == reqwest::Method::HEAD {
                current.method.clone()
            } else {
                reqwest::Method::GET
            };
            tracing::debug!(from = %redacted(&current.url), to = %redacted(&next), status, "following a redirect");
            signed &= same_origin;
            current = std::borrow::Cow::Owned(HttpRequest {
                method,
                headers: if same_origin {
                    current.headers.clone()
                } else {
                    Vec::new()
                },
                body: if repeats { current.body.clone() } else { None },
                max_body: current.max_body,
                url: next,
            });
        }
    }

    /// One exchange; a transport failure comes back described.
    async fn exchange(
        &self,
        request: &HttpRequest,
        auth: &dyn Authorizer,
        read: Read,
    ) -> Result<Exchange, Failed> {
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone())
            .headers(headers);
        builder = match &request.body {
            None => builder,
            Some(RequestBody::Json(value)) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(value).unwrap_or_default()),
            Some(RequestBody::Form(fields)) => builder
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(fields)
                        .finish(),
                ),
        };
        // Credentials are added to the request as the provider will see it (OAuth 1.0a signs
        // the URL); only then does the sandbox redirect it.
        let (client, built) = auth.authorize(builder).build_split();
        let mut built =
            built.map_err(|error| Failed::Transient(describe_transport_error(&error)))?;
        if let Transport::Sandbox(base) = &self.transport {
            if let Ok(value) = HeaderValue::from_str(built.url().host_str().unwrap_or_default()) {
                built
                    .headers_mut()
                    .insert(HeaderName::from_static(SANDBOX_HOST_HEADER), value);
            }
            // Scheme, host and port come from the replay; path and query stay.
            let url = built.url_mut();
            let _ = url.set_scheme(base.scheme());
            let _ = url.set_host(base.host_str());
            let _ = url.set_port(base.port_or_known_default());
        }
        // The exchange is its own task: the request goes out and the body streams in even while
        // the run that asked for it is busy mapping the page before (a run requests its next
        // page before it maps the current one). Dropping the fetch aborts it.
        let limit = request.max_body.unwrap_or(self.max_body);
        let url = redacted(&request.url);
        let exchange = Abortable(tokio::spawn(async move {
            let transport_failure = |error: reqwest::Error| match not_public(&error) {
                Some(reason) => Failed::Permanent(HttpError::NotPublic {
                    url: url.clone(),
                    reason,
                }),
                None => Failed::Transient(describe_transport_error(&error)),
            };
            let too_large = || {
                Failed::Permanent(HttpError::TooLarge {
                    url: url.clone(),
                    limit,
                })
            };
            let mut response = client.execute(built).await.map_err(transport_failure)?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            // Read up to the limit, whatever the headers say: a compressed body's length is
            // known only once decompressed, and a provider may send more than it announced.
            let announced = response.content_length().unwrap_or(0);
            if announced > limit {
                return Err(too_large());
            }
            // Content is streamed by its reader (which counts it against the limit); error
            // answers and redirects are read here, as for any request.
            if read == Read::Open && (200..300).contains(&status) {
                return Ok(Exchange {
                    status,
                    headers,
                    body: Body::Open(response),
                });
            }
            let mut body = bytes::BytesMut::with_capacity(usize::try_from(announced).unwrap_or(0));
            while let Some(chunk) = response.chunk().await.map_err(transport_failure)? {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Exchange {
                status,
                headers,
                body: Body::Whole(body.freeze()),
            })
        }));
        exchange.await
    }

    /// Full jitter: a random wait up to `min(max, initial * 2^(attempt - 1))`.
    fn backoff(&self, attempt: u32) -> Duration {
        let initial = self.retry.backoff.initial.get();
        let cap = initial
            .saturating_mul(1 << (attempt - 1).min(20))
            .min(self.retry.backoff.max.get());
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=millis))
    }

    fn header_wait(&self, headers: &HeaderMap) -> Option<Duration> {
        self.retry.wait_headers.iter().find_map(|header| {
            let value = headers.get(header.name.as_str())?.to_str().ok()?.trim();
            wait_from_header(header.format, value, SystemTime::now())
        })
    }
}

/// What one request got back.
struct Exchange {
    status: u16,
    headers: HeaderMap,
    body: Body,
}

/// Whether a successful answer's body is read by the exchange or left open for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Whole,
    Open,
}

/// An exchange's body: read, or (a successful download) still coming.
enum Body {
    Whole(bytes::Bytes),
    Open(reqwest::Response),
}

impl Body {
    fn excerpt(&self) -> String {
        match self {
            Self::Whole(body) => excerpt(body),
            Self::Open(_) => String::new(),
        }
    }
}

/// Why the caller of a request refused a successful answer.
#[derive(Debug)]
pub enum Refusal {
    /// For a reason that may pass (a body cut off, a truncated page): the request is retried.
    Retry(String),
    /// For good (content past its cap): the request fails with this error.
    Stop(HttpError),
}

/// A successful answer whose body is still coming: read it a chunk at a time.
pub struct Streaming {
    /// The status (2xx).
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    body: reqwest::Response,
    read: u64,
    limit: u64,
    url: String,
}

impl Streaming {
    /// The next chunk of the body; `None` at its end. A body cut off is [`Refusal::Retry`]; one
    /// past the request's size limit is [`Refusal::Stop`] with [`HttpError::TooLarge`].
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, Refusal> {
        let chunk = self
            .body
            .chunk()
            .await
            .map_err(|error| Refusal::Retry(describe_transport_error(&error)))?;
        if let Some(chunk) = &chunk {
            self.read += chunk.len() as u64;
            if self.read > self.limit {
                return Err(Refusal::Stop(HttpError::TooLarge {
                    url: self.url.clone(),
                    limit: self.limit,
                }));
            }
        }
        Ok(chunk)
    }

    /// The URL the content was asked at (credentials hidden), for messages.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A spawned exchange, aborted when the fetch waiting for it is dropped.
struct Abortable(tokio::task::JoinHandle<Result<Exchange, Failed>>);

impl Future for Abortable {
    type Output = Result<Exchange, Failed>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|error| {
                Err(Failed::Transient(format!(
                    "the request task stopped ({error})"
                )))
            })
        })
    }
}

impl Drop for Abortable {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The wait a header value asks for, read as `format`, relative to `now`.
pub fn wait_from_header(format: WaitFormat, value: &str, now: SystemTime) -> Option<Duration> {
    let until = |epoch: Duration| {
        (SystemTime::UNIX_EPOCH + epoch)
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    };
    let wait = match format {
        WaitFormat::RetryAfter => match value.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => httpdate::parse_http_date(value)
                .ok()?
                .duration_since(now)
                .unwrap_or(Duration::ZERO),
        },
        WaitFormat::Seconds => Duration::try_from_secs_f64(value.parse::<f64>().ok()?).ok()?,
        WaitFormat::EpochSeconds => until(Duration::from_secs(value.parse().ok()?)),
        WaitFormat::EpochMillis => until(Duration::from_millis(value.parse().ok()?)),
    };
    Some(wait.min(MAX_HEADER_WAIT))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > 300 {
        format!("{}…", text.chars().take(300).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// The resolver's reason when `error` is its refusal of a name that resolves to a private
/// address ([`PublicResolver`]).
fn not_public(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<NotPublic>() {
            return Some(refusal.to_string());
        }
        source = cause.source();
    }
    None
}

fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the connection broke while reading the body"
    } else {
        "the request failed"
    };
    let mut source: Option<&dyn std::error::Error> = Some(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    format!("{kind} ({detail})")
}

#[cfg(test)]
mod tests {

    #[test]
    fn descriptions_hide_credentials_in_query_strings_but_keep_paging_tokens() {
        let url = url::Url::parse(
            "https://graph.instagram.com/v22.0/1/media?access_token=IGQWRPc0&fields=id&after=QVF&pagination_token=7140&pageToken=CkQ&client_secret=s3&api_key=k",
        )
        .unwrap();
        let shown = redacted(&url);
        assert_eq!(
            shown,
            "https://graph.instagram.com/v22.0/1/media?access_token=***&fields=id&after=QVF&pagination_token=7140&pageToken=CkQ&client_secret=***&api_key=***"
        );
        assert!(!shown.contains("IGQWRPc0") && !shown.contains("s3&"));
    }

    use super::*;

    #[test]
    fn wait_headers_in_every_format() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            wait_from_header(WaitFormat::RetryAfter, "7", now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            wait_from_header(WaitFormat::RetryAfter, &date, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait_from_header(WaitFormat::Seconds, "1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait_from_header(WaitFormat::EpochSeconds, "1700000042", now),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            wait_from_header(WaitFormat::EpochMillis, "1700000000500", now),
            Some(Duration::from_millis(500))
        );
        // A reset in the past means no wait; an absurd one is capped.
        assert_eq!(
            wait_from_header(WaitFormat::EpochSeconds, "1600000000", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            wait_from_header(WaitFormat::RetryAfter, "999999", now),
            Some(MAX_HEADER_WAIT)
        );
        assert_eq!(wait_from_header(WaitFormat::RetryAfter, "soon", now), None);
    }
}
