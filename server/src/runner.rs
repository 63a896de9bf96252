//! Running one claimed sync: credentials from the store, the engine's run, and the outcome
//! the scheduler books (next time, backoff, `needs_reauth`).

use std::sync::Arc;
use std::time::Duration;

use crate::tables::Claim;
use engine::account::{PrepareError, PreparedRun, SignIn, Values};
use engine::events::{Counters, Event, Observer};
use engine::run::{SyncErrorKind, SyncRun};
use engine::sandbox::sandbox_config;
use rand::Rng;
use serde_json::Map;

use crate::state::Service;

/// How a sync ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every stream finished.
    Succeeded,
    /// Some streams (or substream partitions) failed while the others imported; the message
    /// names which and why. Scheduled as a success: the failed streams are tried at the next
    /// sync, and the user sees the message.
    Partial(String),
    /// It failed and will be tried again after a backoff.
    Failed {
        /// The error, with what to do.
        message: String,
        /// For the metrics: `http`, `store`, `config`, ...
        kind: &'static str,
    },
    /// The provider refused the credentials and they cannot be renewed: the user must connect
    /// again. Nothing is scheduled until they do.
    NeedsReauth(String),
}

impl Outcome {
    /// The metrics' name for it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Partial(_) => "partial",
            Self::Failed { .. } => "failed",
            Self::NeedsReauth(_) => "needs_reauth",
        }
    }
}

/// Passes a sync's events to its live counters and to the service's metrics, and a session's
/// page to the service's list of sessions waiting for their person.
pub(crate) struct Live {
    pub(crate) counters: Arc<Counters>,
    pub(crate) metrics: crate::metrics::SyncMetrics,
    /// Where a session's page is told, by integration (`None`: not told, an import).
    pub(crate) sessions: Option<(String, crate::state::Sessions)>,
}

impl Observer for Live {
    fn event(&self, event: &Event<'_>) {
        self.counters.event(event);
        self.metrics.event(event);
        if let (Event::SessionOpened { stream, url }, Some((integration, sessions))) =
            (event, &self.sessions)
        {
            sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    integration.clone(),
                    crate::state::SessionWaiting {
                        stream: (*stream).to_owned(),
                        url: (*url).to_owned(),
                    },
                );
        }
    }
}

fn failed(kind: &'static str, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        message: message.into(),
        kind,
    }
}

/// What a run of a stored integration needs: its connector, and its integration, HTTP client
/// and credentials.
pub(crate) struct Prepared<'a> {
    /// The connector's catalog entry.
    pub entry: &'a crate::catalog::Entry,
    /// The integration as stored.
    pub stored: engine::store::StoredIntegration,
    /// The run's parts.
    pub run: PreparedRun,
}

/// Why a run of a stored integration could not even begin: a failure to book with its
/// backoff, or credentials the user must give again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotRun {
    /// As [`Outcome::Failed`].
    Failed {
        /// The error, with what to do.
        message: String,
        /// For the metrics.
        kind: &'static str,
    },
    /// As [`Outcome::NeedsReauth`].
    NeedsReauth(String),
}

impl NotRun {
    fn failed(kind: &'static str, message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            kind,
        }
    }

    /// What the user is told.
    pub(crate) fn into_message(self) -> String {
        match self {
            Self::Failed { message, .. } | Self::NeedsReauth(message) => message,
        }
    }
}

impl From<NotRun> for Outcome {
    fn from(not_run: NotRun) -> Self {
        match not_run {
            NotRun::Failed { message, kind } => Self::Failed { message, kind },
            NotRun::NeedsReauth(message) => Self::NeedsReauth(message),
        }
    }
}

/// Prepares a run of the stored integration `integration_id` (a sync or an import).
pub(crate) async fn prepare<'a>(
    service: &'a Service,
    integration_id: &str,
) -> Result<Prepared<'a>, NotRun> {
    let stored = match service.store.integration(integration_id).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return Err(NotRun::failed("config", "the integration was deleted")),
        Err(error) => {
            return Err(NotRun::failed(
                "store",
                format!("{error} — the sync is tried again later"),
            ));
        }
    };
    let Some(entry) = service.catalog.get(&stored.connector) else {
        return Err(NotRun::failed(
            "config",
            format!(
                "the connector `{}` is not offered by this service (its spec is missing or has problems; run `connector validate`)",
                stored.connector
            ),
        ));
    };
    let spec = &entry.spec;
    let values = Values {
        given: Map::new(),
        defaults: if service.sandbox {
            sandbox_config(spec)
        } else {
            Map::new()
        },
    };
    let sign_in = if stored.sealed_tokens.is_none() && service.sandbox {
        SignIn::Sandbox
    } else {
        SignIn::Stored {
            stored: &stored,
            cipher: Arc::clone(&service.cipher),
            client: engine::account::oauth_client(spec, None, None, service.sandbox),
            store: &service.store,
        }
    };
    let prepared = engine::account::prepare_run(
        spec,
        &stored.user_id,
        &stored.id,
        values,
        sign_in,
        entry.transport(),
        service.rate_limits.gate(spec, &stored.id),
    );
    match prepared {
        Ok(run) => Ok(Prepared { entry, stored, run }),
        Err(error @ PrepareError::Config(_)) => Err(NotRun::NeedsReauth(format!(
            "{error}; connect {} again with it",
            spec.name
        ))),
        Err(PrepareError::Credentials(error)) => Err(NotRun::NeedsReauth(error)),
        Err(PrepareError::Setup(error)) => Err(NotRun::failed("config", error)),
    }
}

/// Runs the claimed sync to its end.
pub async fn run(service: &Service, claim: &Claim) -> Outcome {
    let prepared = match prepare(service, &claim.integration_id).await {
        Ok(prepared) => prepared,
        Err(not_run) => return not_run.into(),
    };
    let Prepared {
        entry,
        stored,
        run: PreparedRun {
            integration,
            http,
            auth,
        },
    } = prepared;
    let spec = &entry.spec;

    let counters = Arc::new(Counters::default());
    service
        .progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(stored.id.clone(), Arc::clone(&counters));
    let live = Live {
        counters,
        metrics: service.metrics.observer(&spec.id),
        sessions: Some((stored.id.clone(), Arc::clone(&service.sessions))),
    };
    // The streams a person asked this sync for (a session stream: Google Photos' Picker), or
    // else those they chose, of those the connector still has (a stream removed from the spec
    // since is dropped; if none is left, every stream runs). A session waits for a person, so
    // a scheduled sync never runs one.
    let requested = service
        .requested
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&stored.id);
    let chosen: Vec<String> = match requested {
        Some(requested) => requested,
        None => claim
            .streams
            .iter()
            .filter(|name| spec.root_streams().any(|root| root == name.as_str()))
            .filter(|name| {
                spec.streams
                    .get(name.as_str())
                    .is_some_and(|stream| stream.session.is_none())
            })
            .cloned()
            .collect(),
    };
    let result = SyncRun::new(
        &entry.compiled,
        &integration,
        &http,
        auth.as_ref(),
        &live,
        service.store.clone(),
    )
    .by_worker(&service.config.worker)
    .with_blobs(service.blobs.clone())
    .run(&chosen)
    .await;
    service
        .progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&stored.id);
    service
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&stored.id);
    match result {
        Ok(report) => match report.summary() {
            None => Outcome::Succeeded,
            Some(summary) => Outcome::Partial(summary),
        },
        Err(error) if error.credentials_refused() => Outcome::NeedsReauth(format!(
            "{error} — connect {} again; the records imported so far are kept",
            spec.name
        )),
        Err(error) => failed(
            match &error.kind {
                SyncErrorKind::Http(_) => "http",
                SyncErrorKind::Store(_) => "store",
                SyncErrorKind::Provider(_) => "provider",
                _ => "connector",
            },
            format!("{error} — what to do: {}", error.hint()),
        ),
    }
}

/// When a sync is due again: the interval after a success, an exponential backoff (capped at
/// the interval) after failures, each with ±10% jitter so that integrations connected together
/// drift apart instead of syncing in lockstep.
pub fn next_due(every: Duration, failures: u32) -> Duration {
    const FIRST_RETRY: Duration = Duration::from_secs(60);
    // Intervals stored before they were bounded may be anything.
    let every = every.min(engine::spec::MAX_SYNC_INTERVAL);
    let base = if failures == 0 {
        every
    } else {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        FIRST_RETRY.saturating_mul(factor).min(every)
    };
    let jitter = rand::rng().random_range(0.9..=1.1);
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_up_to_the_interval_with_jitter() {
        let day = Duration::from_secs(86_400);
        let within = |value: Duration, expected: Duration| {
            let (low, high) = (expected.mul_f64(0.9), expected.mul_f64(1.1));
            assert!(
                value >= low && value <= high,
                "{value:?} not within 10% of {expected:?}"
            );
        };
        within(next_due(day, 0), day);
        within(next_due(day, 1), Duration::from_secs(60));
        within(next_due(day, 2), Duration::from_secs(120));
        within(next_due(day, 5), Duration::from_secs(960));
        within(next_due(day, 30), day);
        within(
            next_due(Duration::from_secs(300), 4),
            Duration::from_secs(300),
        );
        // Jitter: not every answer is the same.
        let answers: std::collections::HashSet<Duration> =
            (0..20).map(|_| next_due(day, 0)).collect();
        assert!(answers.len() > 1);
    }
}
