//! A job's disk budget (`render.disk_budget_mib`): the downloaded mix, the
//! render's scratch files and its masters, together. It is checked before
//! the work starts, from what the file says of its length ([`needs`]), and
//! counted as files grow and go ([`charge`], [`refund`]), so a file that
//! lies about its length is stopped at the budget with an error naming it,
//! not by a full disk or an evicted pod. RLIMIT_FSIZE on the render process
//! is the last word for any one file.
//!
//! The count is the render process's: one job per process, so a process-wide
//! count is the job's.

use crate::error::WorkerError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static BUDGET: AtomicU64 = AtomicU64::new(u64::MAX);
static USED: AtomicU64 = AtomicU64::new(0);
static OVER: AtomicBool = AtomicBool::new(false);

/// Scratch bytes per sample of the mix while a rate is prepared (measured:
/// about 24 bytes per stereo frame at the peak).
pub const SCRATCH_PER_SAMPLE: u64 = 12;

/// Sets this process's budget, with `used` bytes on disk already (the
/// downloaded mix).
pub fn start(budget: u64, used: u64) {
    BUDGET.store(budget, Ordering::SeqCst);
    USED.store(used, Ordering::SeqCst);
    OVER.store(false, Ordering::SeqCst);
}

/// Counts `bytes` about to be written; past the budget, an error (and the
/// job's failure names the budget: see [`exceeded`]).
pub fn charge(bytes: u64) -> std::io::Result<()> {
    let used = USED.fetch_add(bytes, Ordering::SeqCst) + bytes;
    if used > BUDGET.load(Ordering::SeqCst) {
        OVER.store(true, Ordering::SeqCst);
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "over the job's disk budget of {} MiB (render.disk_budget_mib)",
                BUDGET.load(Ordering::SeqCst) >> 20
            ),
        ));
    }
    Ok(())
}

/// Bytes removed from disk again.
pub fn refund(bytes: u64) {
    let _ = USED.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
        Some(u.saturating_sub(bytes))
    });
}

/// The budget's error if the job went over it: the failure is the budget's
/// (final), whatever error the writer that hit it returned (retryable).
pub fn exceeded() -> Option<WorkerError> {
    OVER.load(Ordering::SeqCst).then(|| WorkerError::Limit {
        what: "the disk space of the render's files (mix, scratch and masters)".into(),
        limit: format!("{} MiB", BUDGET.load(Ordering::SeqCst) >> 20),
        setting: "render.disk_budget_mib",
    })
}

/// What a track needs of the budget, by its stated length: the mix as
/// downloaded, the scratch of preparing it, and each master.
pub struct Needs {
    pub input_bytes: u64,
    pub frames: u64,
    pub channels: u64,
    /// Bytes per sample of each master (its bit depth / 8), at its rate
    /// relative to the mix's.
    pub masters: Vec<(u64, f64)>,
}

/// Refuses, before any work, a track whose stated length needs more disk
/// than the budget.
pub fn needs(n: &Needs, budget: u64) -> Result<(), WorkerError> {
    let samples = n.frames.saturating_mul(n.channels);
    let masters: f64 = n
        .masters
        .iter()
        .map(|&(width, ratio)| samples as f64 * width as f64 * ratio)
        .sum();
    let need = n.input_bytes as f64 + samples as f64 * SCRATCH_PER_SAMPLE as f64 + masters;
    if need > budget as f64 {
        return Err(WorkerError::Limit {
            what: format!(
                "the track's disk space (about {} MiB for its mix, scratch and masters)",
                (need as u64) >> 20
            ),
            limit: format!("{} MiB", budget >> 20),
            setting: "render.disk_budget_mib",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_track_is_refused_by_its_stated_length() {
        // 3 hours at 48 kHz stereo, two 24-bit masters: about 16 GB.
        let long = Needs {
            input_bytes: 7 << 20,
            frames: 3 * 3600 * 48_000,
            channels: 2,
            masters: vec![(3, 1.0), (3, 1.0)],
        };
        let e = needs(&long, 7680 << 20).unwrap_err().to_string();
        assert!(
            e.contains("render.disk_budget_mib") && e.contains("7680 MiB"),
            "{e}"
        );
        let short = Needs {
            frames: 5 * 60 * 48_000,
            ..long
        };
        needs(&short, 7680 << 20).unwrap();
    }
}
