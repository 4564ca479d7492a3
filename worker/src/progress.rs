//! What a render is doing, for the process watching it: the stage names
//! that end up in a failure's reason ("while decoding") and ticks that tell
//! a long stage from a stuck one. Silent unless [`report_to_stdout`] was
//! called (in a render child); then each report is a JSON line on stdout.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ON: AtomicBool = AtomicBool::new(false);
/// The current stage and when the last line went out.
static STATE: Mutex<(String, Option<Instant>)> = Mutex::new((String::new(), None));

/// Ticks closer together than this are dropped.
const TICK_EVERY: Duration = Duration::from_secs(1);

pub(crate) fn report_to_stdout() {
    ON.store(true, Ordering::SeqCst);
}

/// What a render says as it goes (a line of the child's protocol; the
/// child's answer is the isolation's own).
#[derive(Debug, Serialize, Deserialize)]
pub enum Note {
    /// A new stage began ("decoding", "rendering spotify", ...).
    Stage(String),
    /// Still working.
    Tick,
    /// How far the job is, 0..1 ([`Point`]).
    Progress(f64),
}

/// The points a job reports its progress at, and the share of the job done
/// at each (one table, so the stages' shares are seen together): fetching
/// the mix, analysis and planning, processing, each target rendered (with
/// its codec checks), the settings and picture written, outputs published.
#[derive(Clone, Copy, Debug)]
pub enum Point {
    Taken,
    Fetched,
    Analysed,
    Processed,
    TargetDone { done: usize, of: usize },
    Written,
    Published,
}

impl Point {
    pub fn fraction(self) -> f64 {
        match self {
            Point::Taken => 0.05,
            Point::Fetched => 0.1,
            Point::Analysed => 0.3,
            Point::Processed => 0.45,
            Point::TargetDone { done, of } => 0.45 + 0.4 * done.min(of) as f64 / of.max(1) as f64,
            Point::Written => 0.88,
            Point::Published => 0.95,
        }
    }
}

/// Where a job's progress goes in the worker: the furthest fraction
/// reached, read by whoever settles the job (a watch: a reader sees the
/// newest value, never a queue of old ones; a render tried again does not
/// move it back).
#[derive(Clone)]
pub struct Progress(Option<tokio::sync::watch::Sender<f64>>);

impl Progress {
    /// Progress nobody follows.
    pub fn none() -> Self {
        Self(None)
    }

    pub fn channel() -> (Self, tokio::sync::watch::Receiver<f64>) {
        let (tx, rx) = tokio::sync::watch::channel(0.0);
        (Self(Some(tx)), rx)
    }

    pub fn at(&self, p: Point) {
        self.set(p.fraction());
    }

    pub(crate) fn set(&self, f: f64) {
        if let Some(tx) = &self.0 {
            tx.send_if_modified(|v| {
                let further = f.is_finite() && f > *v && f <= 1.0;
                if further {
                    *v = f;
                }
                further
            });
        }
    }
}

/// The render child reached `p` (no-op outside a render child).
pub(crate) fn at(p: Point) {
    send(&Note::Progress(p.fraction()));
}

/// Writes one message line (no-op outside a render child).
pub(crate) fn send(m: &impl Serialize) {
    if !ON.load(Ordering::SeqCst) {
        return;
    }
    let line = serde_json::to_string(m).expect("messages serialise");
    let mut out = std::io::stdout().lock();
    // The parent gone means nobody is listening: nothing to do about it.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A new stage begins.
pub(crate) fn stage(name: &str) {
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    s.0 = name.to_string();
    s.1 = Some(Instant::now());
    drop(s);
    send(&Note::Stage(name.to_string()));
}

/// Still working (cheap: at most one line a second).
pub(crate) fn tick() {
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if s.1.is_some_and(|t| t.elapsed() < TICK_EVERY) {
        return;
    }
    s.1 = Some(Instant::now());
    drop(s);
    send(&Note::Tick);
}

/// The stage in progress ("starting" before the first).
pub(crate) fn current() -> String {
    let s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if s.0.is_empty() {
        "starting".into()
    } else {
        s.0.clone()
    }
}
