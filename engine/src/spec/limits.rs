//! How often and how hard a connector may call its provider, and when it runs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{ByteSize, Duration, HostPattern};

/// At most `requests` calls in any window of length `per`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// The number of requests allowed in each window.
    #[schemars(range(min = 1))]
    pub requests: u32,
    /// The window, such as `15m` or `1d`.
    pub per: Duration,
    /// Who shares the allowance.
    #[serde(default)]
    pub scope: RateLimitScope,
    /// The hosts whose requests it counts (entries of `allowed_hosts`). Default: every request.
    /// A provider that counts downloads apart from its API (Google Photos: 10,000 API
    /// requests a day, 75,000 for media bytes) has a limit for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostPattern>,
}

impl RateLimit {
    /// Whether it counts a request to `host`.
    pub fn counts(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|pattern| pattern.matches(host))
    }
}

/// Who shares a rate limit's allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// Each connected account (integration) has its own allowance, shared by its streams.
    #[default]
    User,
    /// All accounts using this connector share one allowance (per-app limits): counted in the
    /// database, so every process of the service shares it and a restart keeps it. A user's
    /// limit of an hour or more (a daily quota) is kept in the database too.
    App,
}

/// How failed requests are retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts per request, the first included.
    #[serde(default = "Retry::default_max_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: u32,
    /// The wait between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// HTTP statuses that are retried; other 4xx fail at once.
    #[serde(default = "Retry::default_statuses")]
    pub statuses: Vec<u16>,
    /// Response headers that say how long to wait, checked in order; the first present wins
    /// over the backoff.
    #[serde(default = "Retry::default_wait_headers")]
    pub wait_headers: Vec<WaitHeader>,
}

impl Retry {
    fn default_max_attempts() -> u32 {
        5
    }

    fn default_statuses() -> Vec<u16> {
        vec![429, 500, 502, 503, 504]
    }

    fn default_wait_headers() -> Vec<WaitHeader> {
        vec![WaitHeader {
            name: "Retry-After".to_owned(),
            format: WaitFormat::RetryAfter,
        }]
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: Self::default_max_attempts(),
            backoff: Backoff::default(),
            statuses: Self::default_statuses(),
            wait_headers: Self::default_wait_headers(),
        }
    }
}

/// Exponential backoff with full jitter: attempt `n` waits a random time up to
/// `min(max, initial * 2^(n-1))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// The first wait's upper bound.
    #[serde(default = "Backoff::default_initial")]
    pub initial: Duration,
    /// The largest wait.
    #[serde(default = "Backoff::default_max")]
    pub max: Duration,
}

impl Backoff {
    fn default_initial() -> Duration {
        Duration::from_secs(1)
    }

    fn default_max() -> Duration {
        Duration::from_secs(60)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Self::default_initial(),
            max: Self::default_max(),
        }
    }
}

/// A response header that tells how long to wait before retrying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitHeader {
    /// The header name, such as `Retry-After` or `X-RateLimit-Reset`.
    pub name: String,
    /// How its value is written.
    pub format: WaitFormat,
}

/// How a wait header's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitFormat {
    /// RFC 9110 `Retry-After`: seconds to wait, or an HTTP date.
    RetryAfter,
    /// Seconds to wait.
    Seconds,
    /// The epoch second at which the limit resets.
    EpochSeconds,
    /// The epoch millisecond at which the limit resets.
    EpochMillis,
}

/// The shortest time between syncs a spec or an operator may set: more often would hammer the
/// provider.
pub const MIN_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The longest time between syncs a spec or an operator may set (a year and a day): longer is
/// never meant, and times far enough out overflow the scheduler's clock arithmetic.
pub const MAX_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// When the connector runs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The default time between syncs of one integration; operators may override it.
    pub every: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(86_400),
        }
    }
}

/// How much one run of the connector may do. Each bound stops a spec or a provider that goes
/// wrong (paging that never ends, a body that never ends) before it exhausts the machine; a
/// run stopped by one keeps what it imported, and the next resumes where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The largest response body, counted after decompression (at most 1GiB). A larger one
    /// fails its stream. Streams may set their own (`max_body`).
    #[serde(default = "Limits::default_max_body")]
    pub max_body: ByteSize,
    /// Pages one pass over a stream (or one substream partition) may fetch.
    #[serde(default = "Limits::default_max_pages")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_pages: u32,
    /// Requests one run may send, retries and content downloads included (downloads past it
    /// stay owed for the next run).
    #[serde(default = "Limits::default_max_requests")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_requests: u64,
    /// How long one run may take (at most 7d). A run that reaches it stops, and the next run
    /// resumes where it stopped.
    #[serde(default = "Limits::default_max_run_time")]
    pub max_run_time: Duration,
    /// Requests of one run in flight at once, across all its substreams and recursion levels.
    #[serde(default = "Limits::default_max_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrency: u8,
    /// Content downloads of one run in flight at once (after the listing; each under the
    /// connector's rate limits). A photo library downloads several files at a time, as a
    /// browser does; a provider that counts parallel downloads against a quota takes 1.
    #[serde(default = "Limits::default_max_concurrent_downloads")]
    #[schemars(range(min = 1, max = 16))]
    pub max_concurrent_downloads: u8,
}

/// The largest `max_body` a spec may set.
pub const MAX_BODY_LIMIT: ByteSize = ByteSize::mebibytes(1024);

/// The longest `max_run_time` a spec may set.
pub const MAX_RUN_TIME: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl Limits {
    fn default_max_body() -> ByteSize {
        ByteSize::mebibytes(64)
    }

    fn default_max_pages() -> u32 {
        100_000
    }

    fn default_max_requests() -> u64 {
        1_000_000
    }

    fn default_max_run_time() -> Duration {
        Duration::from_secs(12 * 3600)
    }

    fn default_max_concurrency() -> u8 {
        16
    }

    fn default_max_concurrent_downloads() -> u8 {
        4
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: Self::default_max_body(),
            max_pages: Self::default_max_pages(),
            max_requests: Self::default_max_requests(),
            max_run_time: Self::default_max_run_time(),
            max_concurrency: Self::default_max_concurrency(),
            max_concurrent_downloads: Self::default_max_concurrent_downloads(),
        }
    }
}
