//! The provider's rate limits, obeyed before every request.
//!
//! Each `rate_limits` entry becomes a GCRA limiter (governor): `requests` per `per`, with a
//! burst of `requests`. `scope: user` limiters are shared by all streams of one integration;
//! `scope: app` limiters by all integrations of one connector in this process. A request waits
//! until every limiter that applies has room; waiting is reported, never an error.
//!
//! A process's memory is not enough for two kinds of limit: an app's quota is spent by every
//! process of the service (N workers would spend it N times), and a daily quota outlives a
//! restart. With [`SharedWindows`] (the database, given by the service and `connector sync`),
//! app-scope limits and limits of an hour or more are also counted there, in fixed windows
//! aligned to the epoch (a `1d` window is a UTC day), which every process sees.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use governor::clock::FakeRelativeClock;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::spec::{ConnectorSpec, HostPattern, RateLimit, RateLimitScope};

/// One limiter, whatever its clock.
trait Limit: Send + Sync {
    /// `Ok` and a permit taken, or how long until one is free.
    fn check(&self) -> Result<(), Duration>;
}

struct GovernorLimit<C: Clock> {
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl<C: Clock + Send + Sync> Limit for GovernorLimit<C>
where
    C::Instant: Send + Sync,
{
    fn check(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

fn quota(limit: &RateLimit) -> Option<Quota> {
    let requests = NonZeroU32::new(limit.requests)?;
    let period = limit.per.get().checked_div(limit.requests)?;
    Some(Quota::with_period(period)?.allow_burst(requests))
}

/// A limit counted outside the process: at most `requests` in each window of `per`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedWindow {
    /// What the count is kept under: the connector, the limit, and for a user-scope limit the
    /// integration.
    pub key: String,
    /// The integration, for a user-scope limit (its counts go when it is deleted).
    pub integration_id: Option<String>,
    /// Requests allowed in each window.
    pub requests: u32,
    /// The window.
    pub per: Duration,
}

/// Taking a request from a shared window: `Ok(Ok(()))` when taken, `Ok(Err(wait))` until the
/// next window when full, `Err` when the count cannot be kept.
pub type Taking<'a> =
    Pin<Box<dyn Future<Output = Result<Result<(), Duration>, String>> + Send + 'a>>;

/// Where shared windows are counted: the database. Implemented by the store.
pub trait SharedWindows: Send + Sync {
    /// Takes one request from the window of `limit` that holds now: `Ok(Ok(()))`, or
    /// `Ok(Err(wait))` until the next window when this one is full; `Err` when the count cannot
    /// be kept (the database is unreachable).
    fn take<'a>(&'a self, limit: &'a SharedWindow) -> Taking<'a>;
}

/// The limits kept in shared windows (each with the hosts it counts), and where.
#[derive(Clone)]
struct Shared {
    windows: Arc<dyn SharedWindows>,
    limits: Vec<(SharedWindow, Hosts)>,
}

/// The hosts a limit counts the requests of; empty for every request.
type Hosts = Arc<[HostPattern]>;

fn counts(hosts: &Hosts, host: &str) -> bool {
    hosts.is_empty() || hosts.iter().any(|pattern| pattern.matches(host))
}

/// Limits of at least this window are counted in shared windows even when per user: a daily
/// quota must outlive a restart.
const LONG_WINDOW: Duration = Duration::from_secs(3600);

/// The limiters one integration's requests pass through.
#[derive(Clone, Default)]
pub struct RateGate {
    limits: Vec<(Arc<dyn Limit>, Hosts)>,
    shared: Option<Shared>,
}

impl std::fmt::Debug for RateGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateGate")
            .field("limits", &self.limits.len())
            .finish()
    }
}

impl RateGate {
    /// A gate with no limits.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Takes a permit from every limiter that counts requests to `host`, or says how long to
    /// wait for the slowest.
    ///
    /// Limiters are checked in turn, so a permit taken from an earlier one is not given back
    /// when a later one refuses: with several limits the gate errs on the slow side.
    pub fn check(&self, host: &str) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;
        for (limit, hosts) in &self.limits {
            if !counts(hosts, host) {
                continue;
            }
            if let Err(needed) = limit.check() {
                wait = wait.max(needed);
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Waits until a request may go out; `waiting` is told of every wait before it starts.
    ///
    /// The shared windows are asked only once this process's limiters have room. When they
    /// cannot be asked (the database is down), the request goes: the process's own limiters
    /// still hold, and the run itself will fail on the same database soon enough.
    pub async fn acquire(&self, host: &str, mut waiting: impl FnMut(Duration)) {
        loop {
            let mut wait = self.check(host).err().unwrap_or_default();
            if wait.is_zero()
                && let Some(shared) = &self.shared
            {
                for (limit, hosts) in &shared.limits {
                    if !counts(hosts, host) {
                        continue;
                    }
                    match shared.windows.take(limit).await {
                        Ok(Ok(())) => {}
                        Ok(Err(until_next)) => wait = wait.max(until_next),
                        Err(error) => {
                            tracing::warn!(limit = %limit.key, %error, "cannot count a shared rate limit; the request goes");
                        }
                    }
                }
            }
            if wait.is_zero() {
                return;
            }
            waiting(wait);
            tokio::time::sleep(wait).await;
        }
    }
}

/// Where `now` falls among windows of `per` aligned to the epoch: the window's start (seconds
/// since the epoch) and the time left in it.
pub fn window_at(now: std::time::SystemTime, per: Duration) -> (u64, Duration) {
    let length = per.as_secs().max(1);
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let start = seconds - seconds % length;
    let end = Duration::from_secs(start + length);
    (start, end.saturating_sub(since_epoch))
}

type Limits = Vec<(Arc<dyn Limit>, Hosts)>;

/// Hands out [`RateGate`]s, sharing limiters by scope. One registry per process (or per test).
pub struct RateLimitRegistry<C: Clock = DefaultClock> {
    clock: C,
    app: Mutex<HashMap<String, Limits>>,
    user: Mutex<HashMap<(String, String), Limits>>,
    shared: Option<Arc<dyn SharedWindows>>,
}

impl Default for RateLimitRegistry<DefaultClock> {
    fn default() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl RateLimitRegistry<FakeRelativeClock> {
    /// A registry whose time only moves when the test says so.
    pub fn with_fake_clock(clock: FakeRelativeClock) -> Self {
        Self::with_clock(clock)
    }
}

impl<C> RateLimitRegistry<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    fn with_clock(clock: C) -> Self {
        Self {
            clock,
            app: Mutex::default(),
            user: Mutex::default(),
            shared: None,
        }
    }

    /// Counts app-scope limits, and limits of an hour or more, in `windows` as well: shared by
    /// every process that counts there, and kept across restarts.
    pub fn with_shared_windows(mut self, windows: Arc<dyn SharedWindows>) -> Self {
        self.shared = Some(windows);
        self
    }

    /// The limits of `spec` counted in shared windows, for one integration.
    fn shared_limits(spec: &ConnectorSpec, integration_id: &str) -> Vec<(SharedWindow, Hosts)> {
        spec.rate_limits
            .iter()
            .enumerate()
            .filter(|(_, limit)| {
                limit.scope == RateLimitScope::App || limit.per.get() >= LONG_WINDOW
            })
            .map(|(index, limit)| {
                let per_user = limit.scope == RateLimitScope::User;
                let mut key = format!("{}#{index}:{}/{}", spec.id, limit.requests, limit.per);
                if per_user {
                    key = format!("{key}@{integration_id}");
                }
                let window = SharedWindow {
                    key,
                    integration_id: per_user.then(|| integration_id.to_owned()),
                    requests: limit.requests,
                    per: limit.per.get(),
                };
                (window, Hosts::from(limit.hosts.as_slice()))
            })
            .collect()
    }

    fn build(&self, spec: &ConnectorSpec, scope: RateLimitScope) -> Limits {
        spec.rate_limits
            .iter()
            .filter(|limit| limit.scope == scope)
            .filter_map(|limit| Some((quota(limit)?, Hosts::from(limit.hosts.as_slice()))))
            .map(|(quota, hosts)| {
                let limiter = RateLimiter::direct_with_clock(quota, self.clock.clone());
                let limit = Arc::new(GovernorLimit {
                    limiter,
                    clock: self.clock.clone(),
                }) as Arc<dyn Limit>;
                (limit, hosts)
            })
            .collect()
    }

    /// The gate for one integration of `spec`'s connector.
    pub fn gate(&self, spec: &ConnectorSpec, integration_id: &str) -> RateGate {
        let mut limits = Vec::new();
        // A poisoned lock only means another thread panicked mid-insert; the map is still sound.
        let mut app = self
            .app
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        limits.extend(
            app.entry(spec.id.clone())
                .or_insert_with(|| self.build(spec, RateLimitScope::App))
                .iter()
                .cloned(),
        );
        drop(app);
        let mut user = self
            .user
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (spec.id.clone(), integration_id.to_owned());
        limits.extend(
            user.entry(key)
                .or_insert_with(|| self.build(spec, RateLimitScope::User))
                .iter()
                .cloned(),
        );
        let shared = self.shared.as_ref().and_then(|windows| {
            let limits = Self::shared_limits(spec, integration_id);
            (!limits.is_empty()).then(|| Shared {
                windows: Arc::clone(windows),
                limits,
            })
        });
        RateGate { limits, shared }
    }
}
