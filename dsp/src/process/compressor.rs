//! Feed-forward, stereo-linked RMS compressor with a soft knee
//! (Giannoulis, Massberg & Reiss 2012), smoothed in the dB domain.
//!
//! The gain is computed at a control rate of one value per [`CONTROL_BLOCK`]
//! samples and interpolated linearly between: logs and exponentials per
//! sample would dominate the chain's cost, and attack times of a millisecond
//! or more are far longer than a block.

use crate::automation::{Automation, Cursor, BLOCK};
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
        let mut stage = CompressorStage::new(self, Automation::constant(self.ratio), audio.rate);
        crate::stage::run_whole(&mut stage, audio);
    }
}

/// The compressor as a stage, its ratio following an automation (read per
/// control block); a constant ratio of 1 without makeup passes audio through.
pub struct CompressorStage {
    s: CompressorSettings,
    /// None: the constant ratio of `s`.
    ratio: Option<Cursor<'static>>,
    bypass: bool,
    rate: u32,
    det: f64,
    att: f64,
    rel: f64,
    ms: f64,
    /// Smoothed gain reduction, dB, >= 0.
    reduction: f64,
    gain: f64,
    pos: usize,
}

impl CompressorStage {
    pub fn new(settings: &CompressorSettings, ratio: Automation, rate: u32) -> Self {
        let fs = rate as f64;
        let blk = CONTROL_BLOCK as f64;
        let s = CompressorSettings {
            ratio: ratio.first(),
            ..settings.clone()
        };
        let constant = ratio.is_constant();
        Self {
            bypass: constant && s.is_bypass(),
            ratio: (!constant).then(|| ratio.into_cursor()),
            rate,
            det: (-1.0 / (RMS_MS * 1e-3 * fs)).exp(),
            att: (-blk / (s.attack_ms.max(0.1) * 1e-3 * fs)).exp(),
            rel: (-blk / (s.release_ms.max(1.0) * 1e-3 * fs)).exp(),
            ms: 0.0,
            reduction: 0.0,
            gain: crate::db_to_lin(s.makeup_db),
            pos: 0,
            s,
        }
    }
}

impl crate::stage::Stage for CompressorStage {
    fn process(&mut self, block: &mut [Vec<f32>]) {
        let frames = crate::stage::frames(block);
        if self.bypass {
            return;
        }
        debug_assert!(self.pos.is_multiple_of(CONTROL_BLOCK));
        let nch = block.len() as f64;
        let mut start = 0;
        while start < frames {
            let end = (start + CONTROL_BLOCK).min(frames);
            // Detector over this control block.
            for i in start..end {
                let p: f64 = block.iter().map(|c| (c[i] as f64).powi(2)).sum::<f64>() / nch;
                self.ms = self.det * self.ms + (1.0 - self.det) * p;
            }
            let level = 10.0 * self.ms.max(1e-20).log10();
            let ratio = match &mut self.ratio {
                Some(c) => c.at_block((self.pos + start) / BLOCK, self.rate),
                None => self.s.ratio,
            };
            let want = level - self.s.curve_at_ratio(level, ratio);
            let coef = if want > self.reduction {
                self.att
            } else {
                self.rel
            };
            self.reduction = coef * self.reduction + (1.0 - coef) * want;
            let next = crate::db_to_lin(self.s.makeup_db - self.reduction);
            // Ramp from the last block's gain to this one's: no steps.
            let n = (end - start) as f64;
            let gain = self.gain;
            for c in block.iter_mut() {
                for (j, s) in c[start..end].iter_mut().enumerate() {
                    let g = gain + (next - gain) * (j + 1) as f64 / n;
                    *s = (*s as f64 * g) as f32;
                }
            }
            self.gain = next;
            start = end;
        }
        self.pos += frames;
    }
}
