//! Creation order of rows (jobs, batches, events, outbox messages):
//! what pages and event streams are ordered by.

use super::db::now_ms;
use std::sync::atomic::{AtomicI64, Ordering};

/// Creation order: milliseconds * 1000, strictly increasing in a process.
pub(crate) fn next_seq() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms() * 1000;
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}
