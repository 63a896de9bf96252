//! The provider's rate limits, obeyed before every request.
//!
//! Each `rate_limits` entry becomes a GCRA limiter (governor): `requests` per `per`, with a
//! burst of `requests`. `scope: user` limiters are shared by all streams of one integration;
//! `scope: app` limiters by all integrations of one connector in this process. A request waits
//! until every limiter that applies has room; waiting is reported, never an error.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use governor::clock::FakeRelativeClock;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::spec::{ConnectorSpec, RateLimit, RateLimitScope};

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

/// The limiters one integration's requests pass through.
#[derive(Clone, Default)]
pub struct RateGate {
    limits: Vec<Arc<dyn Limit>>,
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

    /// Takes a permit from every limiter, or says how long to wait for the slowest.
    ///
    /// Limiters are checked in turn, so a permit taken from an earlier one is not given back
    /// when a later one refuses: with several limits the gate errs on the slow side.
    pub fn check(&self) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;
        for limit in &self.limits {
            if let Err(needed) = limit.check() {
                wait = wait.max(needed);
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Waits until a request may go out; `waiting` is told of every wait before it starts.
    pub async fn acquire(&self, mut waiting: impl FnMut(Duration)) {
        while let Err(wait) = self.check() {
            waiting(wait);
            tokio::time::sleep(wait).await;
        }
    }
}

type Limits = Vec<Arc<dyn Limit>>;

/// Hands out [`RateGate`]s, sharing limiters by scope. One registry per process (or per test).
pub struct RateLimitRegistry<C: Clock = DefaultClock> {
    clock: C,
    app: Mutex<HashMap<String, Limits>>,
    user: Mutex<HashMap<(String, String), Limits>>,
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
        }
    }

    fn build(&self, spec: &ConnectorSpec, scope: RateLimitScope) -> Limits {
        spec.rate_limits
            .iter()
            .filter(|limit| limit.scope == scope)
            .filter_map(quota)
            .map(|quota| {
                let limiter = RateLimiter::direct_with_clock(quota, self.clock.clone());
                Arc::new(GovernorLimit {
                    limiter,
                    clock: self.clock.clone(),
                }) as Arc<dyn Limit>
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
        RateGate { limits }
    }
}
