//! What a worker has done, for Prometheus (`/metrics`), and whether it is fit
//! to work (`/healthz`). Served by [`crate::http`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Finished {
    /// succeeded, failed (for good) or requeued (will be retried).
    pub outcome: String,
    /// Why it did not succeed: decode, input, request, store, io, panic...;
    /// empty on success.
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    started: Counter,
    finished: Family<Finished, Counter>,
    render_seconds: Histogram,
    realtime: Gauge<f64, AtomicU64>,
    downloaded: Counter,
    uploaded: Counter,
    job_age: Gauge<f64, AtomicU64>,
    connected: Gauge,
    queue_up: AtomicBool,
    store_ok: AtomicBool,
    store_up: Gauge,
    in_hand: Mutex<HashMap<u64, Instant>>,
    next: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("loopmind");
        let started = Counter::default();
        let finished = Family::<Finished, Counter>::default();
        // 0.25 s to about 17 min.
        let render_seconds = Histogram::new(exponential_buckets(0.25, 2.0, 13));
        let realtime = Gauge::<f64, AtomicU64>::default();
        let downloaded = Counter::default();
        let uploaded = Counter::default();
        let job_age = Gauge::<f64, AtomicU64>::default();
        let connected = Gauge::default();
        registry.register("jobs_started", "Jobs taken from the queue", started.clone());
        registry.register(
            "jobs_finished",
            "Jobs ended, by outcome and failure reason",
            finished.clone(),
        );
        registry.register(
            "render_seconds",
            "Seconds per job: download, render every target, upload",
            render_seconds.clone(),
        );
        registry.register(
            "realtime_factor",
            "Audio seconds mastered per second of work, last job",
            realtime.clone(),
        );
        registry.register(
            "downloaded_bytes",
            "Bytes of mixes downloaded",
            downloaded.clone(),
        );
        registry.register(
            "uploaded_bytes",
            "Bytes of masters and reports uploaded",
            uploaded.clone(),
        );
        registry.register(
            "current_job_age_seconds",
            "Age of the oldest job in hand (0 when idle)",
            job_age.clone(),
        );
        registry.register(
            "queue_connected",
            "1 while connected to RabbitMQ",
            connected.clone(),
        );
        let store_up = Gauge::default();
        store_up.set(1);
        registry.register(
            "store_up",
            "0 while the object store does not answer (the worker takes no jobs)",
            store_up.clone(),
        );
        Self {
            store_ok: AtomicBool::new(true),
            store_up,
            registry,
            started,
            finished,
            render_seconds,
            realtime,
            downloaded,
            uploaded,
            job_age,
            connected,
            queue_up: AtomicBool::new(false),
            in_hand: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// A job begins; pass the token to [`Metrics::job_finished`].
    pub fn job_started(&self) -> u64 {
        self.started.inc();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.in_hand
            .lock()
            .expect("metrics lock")
            .insert(id, Instant::now());
        id
    }

    pub fn job_finished(
        &self,
        token: u64,
        outcome: &str,
        reason: &str,
        seconds: f64,
        audio_seconds: f64,
    ) {
        self.in_hand.lock().expect("metrics lock").remove(&token);
        self.finished
            .get_or_create(&Finished {
                outcome: outcome.into(),
                reason: reason.into(),
            })
            .inc();
        self.render_seconds.observe(seconds);
        if audio_seconds > 0.0 && seconds > 0.0 {
            self.realtime.set(audio_seconds / seconds);
        }
    }

    pub fn bytes(&self, downloaded: u64, uploaded: u64) {
        self.downloaded.inc_by(downloaded);
        self.uploaded.inc_by(uploaded);
    }

    pub fn set_connected(&self, up: bool) {
        self.queue_up.store(up, Ordering::Relaxed);
        self.connected.set(up as i64);
    }

    /// The store breaker's state: false while the store does not answer.
    pub fn set_store_up(&self, up: bool) {
        self.store_ok.store(up, Ordering::Relaxed);
        self.store_up.set(up as i64);
    }

    pub fn store_up(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.queue_up.load(Ordering::Relaxed)
    }

    /// The Prometheus / OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let oldest = self
            .in_hand
            .lock()
            .expect("metrics lock")
            .values()
            .map(|t| t.elapsed().as_secs_f64())
            .fold(0.0, f64::max);
        self.job_age.set(oldest);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_move_and_render_as_openmetrics() {
        let m = Metrics::new();
        let t = m.job_started();
        m.bytes(1000, 5000);
        m.job_finished(t, "failed", "decode", 1.5, 0.0);
        let t = m.job_started();
        m.job_finished(t, "succeeded", "", 2.0, 60.0);
        let text = m.render();
        for line in [
            "loopmind_jobs_started_total 2",
            "loopmind_jobs_finished_total{outcome=\"failed\",reason=\"decode\"} 1",
            "loopmind_downloaded_bytes_total 1000",
            "loopmind_uploaded_bytes_total 5000",
            "loopmind_realtime_factor 30.0",
            "loopmind_render_seconds_count 2",
            "loopmind_current_job_age_seconds 0.0",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
