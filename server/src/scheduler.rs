//! The scheduler: claims due syncs from the database and runs them within the limits.
//!
//! Every process runs one. It wakes every `poll` (with jitter, so processes do not poll in
//! step) or when told (a new integration, "sync now"), and claims due integrations while it has
//! free slots. Claims are leases in the database (see `engine::store`'s service module), so
//! several processes on one PostgreSQL share the work and never run one integration twice at
//! once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::tables::{Claim, Lane, Release};
use futures_util::FutureExt;
use rand::Rng;

use crate::runner::{self, Outcome};
use crate::state::{AppState, Limits};

/// The syncs running in this process, counted against the limits.
#[derive(Debug, Default)]
pub struct Slots {
    initial: usize,
    incremental: usize,
    by_connector: HashMap<String, usize>,
}

impl Slots {
    /// Which lane a claim may come from now, trying incremental syncs first: `None` when every
    /// slot is taken. Initial imports get at most `limits.initial` slots.
    pub fn lanes(&self, limits: &Limits) -> Vec<Lane> {
        if self.initial + self.incremental >= usize::from(limits.global) {
            return vec![];
        }
        let mut lanes = vec![Lane::Incremental];
        let initial = limits.initial.min(limits.global.saturating_sub(1)).max(1);
        if self.initial < usize::from(initial) {
            lanes.push(Lane::Initial);
        }
        lanes
    }

    /// Connectors at their limit: claims skip them.
    pub fn busy(&self, limits: &Limits) -> Vec<String> {
        self.by_connector
            .iter()
            .filter(|(_, running)| **running >= usize::from(limits.per_connector))
            .map(|(connector, _)| connector.clone())
            .collect()
    }

    /// A claimed sync starts.
    pub fn take(&mut self, lane: Lane, connector: &str) {
        match lane {
            Lane::Initial => self.initial += 1,
            Lane::Incremental => self.incremental += 1,
        }
        *self.by_connector.entry(connector.to_owned()).or_default() += 1;
    }

    /// A sync ended.
    pub fn give_back(&mut self, lane: Lane, connector: &str) {
        match lane {
            Lane::Initial => self.initial = self.initial.saturating_sub(1),
            Lane::Incremental => self.incremental = self.incremental.saturating_sub(1),
        }
        if let Some(running) = self.by_connector.get_mut(connector) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                self.by_connector.remove(connector);
            }
        }
    }
}

/// Runs the scheduler until the process ends.
pub async fn run(state: AppState) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    let importing = Arc::new(crate::imports::Importing::default());
    loop {
        claim_all(&state, &slots).await;
        crate::imports::claim(&state, &importing).await;
        let poll = state.config.poll;
        let wait = poll.mul_f64(rand::rng().random_range(0.75..=1.25));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.wake.notified() => {}
        }
    }
}

/// A slot taken by a running sync, given back when dropped: when the sync ends, and also when
/// its task unwinds from a panic, so that no failure can keep a slot forever (eight stuck slots
/// stopped every sync of the service).
struct SlotTaken {
    slots: Arc<Mutex<Slots>>,
    lane: Lane,
    connector: String,
}

impl SlotTaken {
    fn take(slots: &Arc<Mutex<Slots>>, lane: Lane, connector: &str) -> Self {
        lock(slots).take(lane, connector);
        Self {
            slots: Arc::clone(slots),
            lane,
            connector: connector.to_owned(),
        }
    }
}

impl Drop for SlotTaken {
    fn drop(&mut self) {
        lock(&self.slots).give_back(self.lane, &self.connector);
    }
}

fn lock(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Claims and starts due syncs while slots are free.
async fn claim_all(state: &AppState, slots: &Arc<Mutex<Slots>>) {
    let limits = state.config.limits;
    'claiming: loop {
        let (lanes, busy) = {
            let slots = lock(slots);
            (slots.lanes(&limits), slots.busy(&limits))
        };
        // Connectors that only import exports have nothing to sync: never claimed.
        let busy: Vec<&str> = busy
            .iter()
            .map(String::as_str)
            .chain(
                state
                    .catalog
                    .iter()
                    .filter(|entry| !entry.syncs())
                    .map(|entry| entry.spec.id.as_str()),
            )
            .collect();
        for lane in lanes {
            match state
                .tables
                .claim_due(&state.config.worker, state.config.lease, lane, &busy)
                .await
            {
                Ok(Some(claim)) => {
                    let taken = SlotTaken::take(slots, lane, &claim.connector);
                    let state = Arc::clone(state);
                    tokio::spawn(async move {
                        run_claimed(&state, &claim).await;
                        drop(taken);
                        // A freed slot may admit a waiting sync at once.
                        state.wake.notify_one();
                    });
                    continue 'claiming;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "cannot claim due syncs; trying again at the next poll");
                    return;
                }
            }
        }
        return;
    }
}

/// Runs one claimed sync while renewing its lease, then books its outcome.
async fn run_claimed(state: &AppState, claim: &Claim) {
    let worker = &state.config.worker;
    let lease = state.config.lease;
    state.metrics.started();
    tracing::info!(integration = %claim.integration_id, %worker, "sync started");
    let renew = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            match state
                .tables
                .renew_lease(&claim.integration_id, worker, lease)
                .await
            {
                Ok(true) => {}
                // Deleted, or taken over after this process stalled past its lease: stop, so
                // that one integration never syncs twice at once.
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, integration = %claim.integration_id, "cannot renew the lease");
                }
            }
        }
    };
    // A panic in the sync is a bug, but it must not leave the integration leased and unbooked:
    // it is caught here and booked as a failed run, with its backoff.
    let sync = std::panic::AssertUnwindSafe(runner::run(state, claim)).catch_unwind();
    let outcome = tokio::select! {
        outcome = sync => outcome.unwrap_or_else(|_| {
            tracing::error!(integration = %claim.integration_id, "the sync panicked; booked as failed");
            Outcome::Failed {
                message: "the sync stopped on an internal error (a bug, logged by the service); it is tried again after a backoff and resumes from its checkpoint".to_owned(),
                kind: "panic",
            }
        }),
        () = renew => Outcome::Failed {
            message: "the sync lost its lease (the integration was deleted, or this process stalled) and stopped; it resumes from its checkpoint".to_owned(),
            kind: "lease",
        },
    };
    let every = claim
        .every_secs
        .map(Duration::from_secs)
        .or(state.config.sync_every)
        .or_else(|| {
            state
                .catalog
                .get(&claim.connector)
                .map(|entry| entry.spec.schedule.every.get())
        })
        .unwrap_or(Duration::from_secs(86_400));
    let (failures, error) = match &outcome {
        Outcome::Succeeded => (0, None),
        Outcome::Partial(message) => (0, Some(message.clone())),
        Outcome::Failed { message, .. } | Outcome::NeedsReauth(message) => {
            (claim.failures.saturating_add(1), Some(message.clone()))
        }
    };
    if let Outcome::NeedsReauth(reason) = &outcome
        && let Err(error) = state
            .store
            .mark_needs_reauth(&claim.integration_id, reason)
            .await
    {
        tracing::error!(%error, integration = %claim.integration_id, "cannot flag needs_reauth");
    }
    let release = Release {
        // `next_due` is at most a year and a tenth: the sum fits a timestamp, checked all the same.
        next_sync_at: jiff::SignedDuration::try_from(runner::next_due(every, failures))
            .ok()
            .and_then(|wait| jiff::Timestamp::now().checked_add(wait).ok())
            .unwrap_or_else(jiff::Timestamp::now),
        succeeded: matches!(outcome, Outcome::Succeeded | Outcome::Partial(_)),
        failures,
        error,
    };
    if let Err(error) = state
        .tables
        .release(&claim.integration_id, worker, &release)
        .await
    {
        tracing::error!(%error, integration = %claim.integration_id, "cannot record the sync's outcome; its lease expires by itself");
    }
    let kind = match &outcome {
        Outcome::Failed { kind, .. } => Some(*kind),
        Outcome::NeedsReauth(_) => Some("auth"),
        Outcome::Succeeded | Outcome::Partial(_) => None,
    };
    state
        .metrics
        .finished(&claim.connector, outcome.name(), kind);
    tracing::info!(integration = %claim.integration_id, outcome = outcome.name(), "sync finished");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        global: 3,
        per_connector: 2,
        initial: 2,
    };

    #[tokio::test]
    async fn a_task_that_panics_gives_its_slot_back() {
        let slots = Arc::new(Mutex::new(Slots::default()));
        let taken = SlotTaken::take(&slots, Lane::Incremental, "gmail");
        assert_eq!(lock(&slots).incremental, 1);
        let task = tokio::spawn(async move {
            let _taken = taken;
            panic!("a bug in a sync");
        });
        assert!(task.await.unwrap_err().is_panic());
        let slots = lock(&slots);
        assert_eq!(slots.incremental, 0);
        assert!(slots.by_connector.is_empty());
    }

    #[test]
    fn initial_imports_never_take_every_slot() {
        let mut slots = Slots::default();
        assert_eq!(slots.lanes(&LIMITS), vec![Lane::Incremental, Lane::Initial]);
        slots.take(Lane::Initial, "google_photos");
        slots.take(Lane::Initial, "dropbox");
        // Two large imports run: the last slot is kept for incremental syncs.
        assert_eq!(slots.lanes(&LIMITS), vec![Lane::Incremental]);
        slots.take(Lane::Incremental, "gmail");
        assert!(slots.lanes(&LIMITS).is_empty());
        slots.give_back(Lane::Initial, "dropbox");
        assert_eq!(slots.lanes(&LIMITS), vec![Lane::Incremental, Lane::Initial]);
    }

    #[test]
    fn a_single_slot_still_admits_initial_imports() {
        let one = Limits {
            global: 1,
            per_connector: 1,
            initial: 1,
        };
        assert_eq!(
            Slots::default().lanes(&one),
            vec![Lane::Incremental, Lane::Initial]
        );
    }

    #[test]
    fn a_connector_at_its_limit_is_skipped() {
        let mut slots = Slots::default();
        slots.take(Lane::Incremental, "gmail");
        assert!(slots.busy(&LIMITS).is_empty());
        slots.take(Lane::Initial, "gmail");
        assert_eq!(slots.busy(&LIMITS), vec!["gmail".to_owned()]);
        slots.give_back(Lane::Incremental, "gmail");
        assert!(slots.busy(&LIMITS).is_empty());
    }
}
