//! Lookahead true-peak limiter with a provable bound.
//!
//! For each frame k the detector gives `p[k]`, the largest reconstructed value
//! around k (see [`crate::measure::truepeak::peak_envelope`]); the gain that frame needs
//! is `r[k] = min(1, ceiling / p[k])`. The gain curve is
//!
//! ```text
//! m[n] = min(r[n-L+1..=n])            sliding minimum over the lookahead L
//! h[n] = min(m[n], release(h[n-1]))    attack instant, release exponential
//! g[n] = mean(h[n-L+1..=n])            box smoothing, as long as the lookahead
//! ```
//!
//! and `g[n]` is applied to frame n-L+1 (audio delayed by L-1). Every h in that
//! mean is a minimum over a window containing frame n-L+1, so
//! `g[n] <= r[n-L+1]`: no frame leaves louder than its ceiling, and the gain
//! never steps.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimiterSettings {
    pub lookahead_ms: f64,
    pub release_ms: f64,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        Self {
            lookahead_ms: 5.0,
            release_ms: 150.0,
        }
    }
}

impl LimiterSettings {
    pub fn lookahead_frames(&self, rate: u32) -> usize {
        ((self.lookahead_ms * 1e-3 * rate as f64).round() as usize).max(1)
    }
}

/// Where the release snaps to unity gain (a reduction of 1e-5, -100 dB).
const RELEASED: f32 = 1.0 - 1e-5;

/// Streaming gain computer: push `r[n]`, get `g[n]` (for frame n-L+1).
///
/// The sliding minimum is van Herk / Gil-Werman's: the stream is cut into
/// blocks of L; a window ending at position p of a block is the tail of the
/// previous block after p (its suffix minima, computed once when it
/// completes) plus this block up to p (a running minimum). Three `min`s per
/// frame and no branches on the data.
pub struct GainComputer {
    len: usize,
    /// What is left of a reduction after a frame of release.
    keep: f32,
    /// Suffix minima of the previous block; `suf[len]` is 1 (no limit).
    suf: Vec<f32>,
    /// This block's required gains so far.
    block: Vec<f32>,
    /// Position in the block (also in the smoothing ring: both are L long).
    pos: usize,
    /// Minimum of this block so far.
    pre: f32,
    /// How deep the released gain is, 1 - h: the recursion runs on it
    /// (u = max(1 - m, keep * u), a multiply and a max per frame, where
    /// h's own form waits on a subtract, a multiply-add and a min).
    u: f32,
    ring: Vec<f32>,
    sum: f64,
    /// Consecutive pushes that left h at 1: idle once it reaches `len`.
    ones: usize,
    inv_len: f64,
}

impl GainComputer {
    pub fn new(settings: &LimiterSettings, rate: u32) -> Self {
        let len = settings.lookahead_frames(rate);
        let tau = settings.release_ms.max(1.0) * 1e-3 * rate as f64;
        Self {
            len,
            keep: (-1.0 / tau).exp() as f32,
            suf: vec![1.0; len + 1],
            block: vec![1.0; len],
            pos: 0,
            pre: 1.0,
            u: 0.0,
            ring: vec![1.0; len],
            sum: len as f64,
            ones: 0,
            inv_len: 1.0 / len as f64,
        }
    }

    /// Frames between a required gain going in and its gain coming out.
    pub fn delay(&self) -> usize {
        self.len - 1
    }

    /// Released, nothing to limit in the window, and unity gain throughout
    /// the smoothing window: pushing r = 1 now yields exactly 1. (h stayed
    /// at 1 for L pushes, so every r in the window was 1.)
    pub fn is_idle(&self) -> bool {
        self.ones >= self.len
    }

    /// Pushes `count` times r = 1 while idle (every output exactly 1).
    pub fn skip_idle(&mut self, count: usize) {
        debug_assert!(self.is_idle());
        // The last L pushes (every position of the block and the ring) were
        // 1, and so are the suffix minima that are ever read again (suf[1..]:
        // they cover only frames after the last reduction): only the
        // position moves.
        self.pos = (self.pos + count) % self.len;
        self.pre = 1.0;
        self.ones += count;
    }

    #[inline]
    pub fn push(&mut self, r: f32) -> f32 {
        let p = self.pos;
        self.block[p] = r;
        self.pre = if p == 0 { r } else { self.pre.min(r) };
        let m = self.suf[p + 1].min(self.pre);
        let mut u = self.u * self.keep;
        if u < 1.0 - RELEASED {
            // A tail this small would otherwise decay for ever (and never
            // idle); the step to unity is -100 dB.
            u = 0.0;
        }
        self.u = u.max(1.0 - m);
        // Never above m itself, whatever 1 - (1 - m) rounds to.
        let h = (1.0 - self.u).min(m);
        self.ones = if h >= 1.0 { self.ones + 1 } else { 0 };
        self.sum += h as f64 - self.ring[p] as f64;
        self.ring[p] = h;
        self.pos += 1;
        if self.pos == self.len {
            self.pos = 0;
            for i in (0..self.len).rev() {
                self.suf[i] = self.suf[i + 1].min(self.block[i]);
            }
            // Re-sum now and then so rounding in the running sum cannot drift.
            self.sum = self.ring.iter().map(|&v| v as f64).sum();
        }
        // The mean of values each <= r of the frame it serves; guard rounding.
        ((self.sum * self.inv_len) as f32).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, spelt out: sliding minimum, release, box mean.
    fn reference(r: &[f32], len: usize, release: f32) -> Vec<f32> {
        let mut h = 1f32;
        let mut hs = vec![1f32; len - 1];
        let mut out = Vec::new();
        for n in 0..r.len() {
            let m = r[n.saturating_sub(len - 1)..=n]
                .iter()
                .fold(1f32, |a, &b| a.min(b));
            let mut rel = h + (1.0 - h) * release;
            if rel > RELEASED {
                rel = 1.0;
            }
            h = rel.min(m);
            hs.push(h);
            let w = &hs[hs.len() - len..];
            out.push((w.iter().map(|&v| v as f64).sum::<f64>() / len as f64) as f32);
        }
        out
    }

    #[test]
    fn matches_the_definition_and_never_exceeds_the_required_gain() {
        // The shortest release: idle comes as soon as it can after a reduction.
        let settings = LimiterSettings {
            lookahead_ms: 1.0,
            release_ms: 1.0,
        };
        let rate = 8000; // L = 8
        let mut gc = GainComputer::new(&settings, rate);
        let len = settings.lookahead_frames(rate);
        // Bursts of reductions of every shape, idle stretches between them.
        let mut seed = 9u32;
        let r: Vec<f32> = (0..4000)
            .map(|n| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let u = (seed >> 8) as f32 / (1 << 24) as f32;
                if (n / 300) % 2 == 0 && u < 0.3 {
                    0.3 + 0.7 * u
                } else {
                    1.0
                }
            })
            .collect();
        let want = reference(&r, len, 1.0 - gc.keep);
        let (mut n, mut skipped) = (0, 0);
        while n < r.len() {
            // Idle: skip the run of 1s ahead (up to 3 blocks) in one step.
            let run = r[n..]
                .iter()
                .take(3 * len)
                .take_while(|&&x| x >= 1.0)
                .count();
            let gains: Vec<f32> = if gc.is_idle() && run > 0 {
                gc.skip_idle(run);
                skipped += run;
                vec![1.0; run]
            } else {
                vec![gc.push(r[n])]
            };
            for g in gains {
                assert!((g - want[n]).abs() < 1e-6, "frame {n}: {g} vs {}", want[n]);
                if n >= len - 1 {
                    assert!(g <= r[n - (len - 1)] + 1e-7, "frame {n} over its limit");
                }
                n += 1;
            }
        }
        assert!(skipped > 1000, "the idle path ran: {skipped} frames");
    }
}
