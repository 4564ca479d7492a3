//! A circuit breaker on the object store. A job that fails because the store
//! does not answer trips it: the worker stops taking jobs (so an outage does
//! not burn every job's deliveries), reports it on `/healthz` and in the
//! `loopmind_store_up` metric, and probes the store until it answers again.

use crate::store::ObjectStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// A key nobody writes: a store that answers "no such object" is up.
pub const PROBE_KEY: &str = "loopmind-store-probe";
/// Longest wait for a probe's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct StoreBreaker {
    open: AtomicBool,
    tx: watch::Sender<bool>,
    /// First wait between probes while open (doubling to 8x).
    probe_every: Duration,
}

impl StoreBreaker {
    pub fn new(probe_every: Duration) -> Self {
        Self {
            open: AtomicBool::new(false),
            tx: watch::channel(false).0,
            probe_every,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Whether the store answers now, within [`PROBE_TIMEOUT`] (a store
    /// that holds requests without answering is down, however long the
    /// store's own retries would wait).
    pub async fn probe(&self, store: &dyn ObjectStore) -> bool {
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, store.head(PROBE_KEY)).await,
            Ok(Ok(_))
        )
    }

    /// Stop taking jobs.
    pub fn trip(&self) {
        if !self.open.swap(true, Ordering::Relaxed) {
            self.tx.send_replace(true);
        }
    }

    fn close(&self) {
        if self.open.swap(false, Ordering::Relaxed) {
            self.tx.send_replace(false);
        }
    }

    /// Resolves when the breaker trips.
    pub async fn tripped(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    /// While open: probes the store until it answers, then closes.
    pub async fn wait_for_store(&self, store: &dyn ObjectStore) {
        let mut wait = self.probe_every;
        let since = std::time::Instant::now();
        while self.is_open() {
            if self.probe(store).await {
                info!(
                    down_for_s = since.elapsed().as_secs_f64(),
                    "the store answers again: taking jobs"
                );
                self.close();
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.probe_every * 8);
        }
    }
}
