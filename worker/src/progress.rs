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
