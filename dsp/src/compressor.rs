//! Feed-forward, stereo-linked RMS compressor with a soft knee
//! (Giannoulis, Massberg & Reiss 2012), smoothed in the dB domain.
//!
//! The gain is computed at a control rate of one value per [`CONTROL_BLOCK`]
//! samples and interpolated linearly between: logs and exponentials per
//! sample would dominate the chain's cost, and attack times of a millisecond
//! or more are far longer than a block.

use crate::automation::{Automation, BLOCK};
use crate::Audio;
use serde::{Deserialize, Serialize};

pub const CONTROL_BLOCK: usize = 8;
/// Time constant of the RMS detector.
const RMS_MS: f64 = 5.0;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressorSettings {
    /// Threshold as RMS level in dBFS at the chain's working level.
    pub threshold_db: f64,
    /// 1.0 disables the compressor.
    pub ratio: f64,
    pub knee_db: f64,
    pub attack_ms: f64,
    pub release_ms: f64,
    pub makeup_db: f64,
}

impl Default for CompressorSettings {
    fn default() -> Self {
        Self {
            threshold_db: -20.0,
            ratio: 1.0,
            knee_db: 6.0,
            attack_ms: 20.0,
            release_ms: 200.0,
            makeup_db: 0.0,
        }
    }
}

impl CompressorSettings {
    pub fn is_bypass(&self) -> bool {
        self.ratio <= 1.0 && self.makeup_db == 0.0
    }

    /// Output level for a steady input level (both dB): the static curve.
    pub fn static_curve(&self, x: f64) -> f64 {
        self.curve_at_ratio(x, self.ratio)
    }

    fn curve_at_ratio(&self, x: f64, ratio: f64) -> f64 {
        let (t, r, w) = (self.threshold_db, ratio.max(1.0), self.knee_db.max(0.0));
        let over = x - t;
        if 2.0 * over < -w {
            x
        } else if w > 0.0 && 2.0 * over.abs() <= w {
            x + (1.0 / r - 1.0) * (over + w / 2.0).powi(2) / (2.0 * w)
        } else {
            t + over / r
        }
    }

    pub fn apply(&self, audio: &mut Audio) {
        if self.is_bypass() {
            return;
        }
        self.run(audio, |_| self.ratio);
    }

    /// With the ratio following `ratio` (read per control block).
    pub fn apply_automated(&self, audio: &mut Audio, ratio: &Automation) {
        let rate = audio.rate;
        let mut ratio = ratio.cursor();
        self.run(audio, |frame| ratio.at_block(frame / BLOCK, rate));
    }

    /// `ratio_at(frame)`: the ratio for the control block starting there.
    fn run(&self, audio: &mut Audio, mut ratio_at: impl FnMut(usize) -> f64) {
        let fs = audio.rate as f64;
        let det = (-1.0 / (RMS_MS * 1e-3 * fs)).exp();
        let blk = CONTROL_BLOCK as f64;
        let att = (-blk / (self.attack_ms.max(0.1) * 1e-3 * fs)).exp();
        let rel = (-blk / (self.release_ms.max(1.0) * 1e-3 * fs)).exp();
        let nch = audio.num_channels() as f64;
        let frames = audio.frames();
        let mut ms = 0f64;
        let mut reduction = 0f64; // smoothed gain reduction, dB, >= 0
        let mut gain = crate::db_to_lin(self.makeup_db);
        let mut start = 0;
        while start < frames {
            let end = (start + CONTROL_BLOCK).min(frames);
            // Detector over this block.
            for i in start..end {
                let p: f64 = audio
                    .channels
                    .iter()
                    .map(|c| (c[i] as f64).powi(2))
                    .sum::<f64>()
                    / nch;
                ms = det * ms + (1.0 - det) * p;
            }
            let level = 10.0 * ms.max(1e-20).log10();
            let want = level - self.curve_at_ratio(level, ratio_at(start));
            let coef = if want > reduction { att } else { rel };
            reduction = coef * reduction + (1.0 - coef) * want;
            let next = crate::db_to_lin(self.makeup_db - reduction);
            // Ramp from the last block's gain to this one's: no steps.
            let n = (end - start) as f64;
            for c in &mut audio.channels {
                for (j, s) in c[start..end].iter_mut().enumerate() {
                    let g = gain + (next - gain) * (j + 1) as f64 / n;
                    *s = (*s as f64 * g) as f32;
                }
            }
            gain = next;
            start = end;
        }
    }
}
