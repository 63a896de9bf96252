//! `GET /metrics`: what the service did, in the Prometheus (OpenMetrics) text format.

use std::sync::Arc;

use engine::events::{Event, Observer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabel {
    connector: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    connector: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    connector: String,
    kind: String,
}

/// The service's counters.
pub struct Metrics {
    registry: Registry,
    syncs: Family<OutcomeLabels, Counter>,
    running: Gauge,
    records: Family<ConnectorLabel, Counter>,
    requests: Family<ConnectorLabel, Counter>,
    retries: Family<ConnectorLabel, Counter>,
    rate_limit_waits: Family<ConnectorLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hypernet");
        let syncs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "syncs",
            "Syncs finished, by connector and outcome (succeeded, failed, needs_reauth)",
            syncs.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "syncs_running",
            "Syncs running in this process",
            running.clone(),
        );
        let records = Family::<ConnectorLabel, Counter>::default();
        registry.register(
            "records",
            "Records received from providers",
            records.clone(),
        );
        let requests = Family::<ConnectorLabel, Counter>::default();
        registry.register(
            "requests",
            "Requests sent to providers, retries included",
            requests.clone(),
        );
        let retries = Family::<ConnectorLabel, Counter>::default();
        registry.register("retries", "Requests retried", retries.clone());
        let rate_limit_waits = Family::<ConnectorLabel, Counter>::default();
        registry.register(
            "rate_limit_waits",
            "Times a rate limit held a request back",
            rate_limit_waits.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Failed syncs, by connector and kind of error",
            errors.clone(),
        );
        Self {
            registry,
            syncs,
            running,
            records,
            requests,
            retries,
            rate_limit_waits,
            errors,
        }
    }
}

impl Metrics {
    /// A sync started.
    pub fn started(&self) {
        self.running.inc();
    }

    /// A sync ended with `outcome`; a failed one with an error of `kind`.
    pub fn finished(&self, connector: &str, outcome: &str, error_kind: Option<&str>) {
        self.running.dec();
        self.syncs
            .get_or_create(&OutcomeLabels {
                connector: connector.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(kind) = error_kind {
            self.errors
                .get_or_create(&ErrorLabels {
                    connector: connector.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc();
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// An observer of one sync of `connector`: counts into these metrics.
    pub fn observer(self: &Arc<Self>, connector: &str) -> SyncMetrics {
        let label = ConnectorLabel {
            connector: connector.to_owned(),
        };
        SyncMetrics {
            records: self.records.get_or_create(&label).clone(),
            requests: self.requests.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
            rate_limit_waits: self.rate_limit_waits.get_or_create(&label).clone(),
        }
    }
}

/// One sync's handles on the counters (resolved once, so events cost an atomic add).
pub struct SyncMetrics {
    records: Counter,
    requests: Counter,
    retries: Counter,
    rate_limit_waits: Counter,
}

impl Observer for SyncMetrics {
    fn event(&self, event: &Event<'_>) {
        match event {
            Event::Request => {
                self.requests.inc();
            }
            Event::Retry { .. } => {
                self.retries.inc();
            }
            Event::RateLimited { .. } => {
                self.rate_limit_waits.inc();
            }
            Event::Page { records, .. } => {
                self.records.inc_by(*records as u64);
            }
            Event::Stored(_)
            | Event::Read { .. }
            | Event::ContentStored { .. }
            | Event::ContentFailed
            | Event::SessionOpened { .. } => {}
        }
    }
}
