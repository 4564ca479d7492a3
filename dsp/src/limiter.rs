//! Lookahead true-peak limiter with a provable bound.
//!
//! For each frame k the detector gives `p[k]`, the largest reconstructed value
//! around k (see [`crate::truepeak::peak_envelope`]); the gain that frame needs
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
use std::collections::VecDeque;

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

/// Where the release snaps to unity gain.
const RELEASED: f32 = 1.0 - 1e-5;

/// Streaming gain computer: push `r[n]`, get `g[n]` (for frame n-L+1).
pub struct GainComputer {
    len: usize,
    release: f32,
    mins: VecDeque<(usize, f32)>,
    n: usize,
    h: f32,
    ring: Vec<f32>,
    pos: usize,
    sum: f64,
    /// Consecutive pushes that left h at 1: idle once it reaches `len`.
    ones: usize,
}

impl GainComputer {
    pub fn new(settings: &LimiterSettings, rate: u32) -> Self {
        let len = settings.lookahead_frames(rate);
        let tau = settings.release_ms.max(1.0) * 1e-3 * rate as f64;
        Self {
            len,
            release: (1.0 - (-1.0 / tau).exp()) as f32,
            mins: VecDeque::with_capacity(len + 1),
            n: 0,
            h: 1.0,
            ring: vec![1.0; len],
            pos: 0,
            sum: len as f64,
            ones: 0,
        }
    }

    /// Frames between a required gain going in and its gain coming out.
    pub fn delay(&self) -> usize {
        self.len - 1
    }

    /// Released, nothing to limit in the window, and unity gain throughout
    /// the smoothing window: pushing r = 1 now yields exactly 1.
    pub fn is_idle(&self) -> bool {
        self.ones >= self.len && self.mins.len() == 1 && self.mins[0].1 >= 1.0
    }

    /// Pushes `count` times r = 1 while idle (every output exactly 1).
    pub fn skip_idle(&mut self, count: usize) {
        debug_assert!(self.is_idle());
        if count == 0 {
            return;
        }
        self.n += count;
        self.mins[0].0 = self.n - 1;
        self.pos = (self.pos + count) % self.len;
        self.ones += count;
        // Every ring entry is 1: the running sum is exact again.
        self.sum = self.len as f64;
    }

    #[inline]
    pub fn push(&mut self, r: f32) -> f32 {
        // Idle (released, nothing to limit in the window): the common case.
        if r >= 1.0 && self.h >= 1.0 && self.mins.len() == 1 && self.mins[0].1 >= 1.0 {
            self.mins[0].0 = self.n;
            self.n += 1;
            self.ones += 1;
            if self.ring[self.pos] < 1.0 {
                self.sum += 1.0 - self.ring[self.pos] as f64;
                self.ring[self.pos] = 1.0;
            }
            self.pos += 1;
            if self.pos == self.len {
                self.pos = 0;
                self.sum = self.ring.iter().map(|&v| v as f64).sum();
            }
            return ((self.sum / self.len as f64) as f32).min(1.0);
        }
        while matches!(self.mins.back(), Some(&(_, v)) if v >= r) {
            self.mins.pop_back();
        }
        self.mins.push_back((self.n, r));
        while self
            .mins
            .front()
            .is_some_and(|&(i, _)| i + self.len <= self.n)
        {
            self.mins.pop_front();
        }
        let m = self.mins.front().map_or(1.0, |&(_, v)| v);
        let mut released = self.h + (1.0 - self.h) * self.release;
        if released > RELEASED {
            // f32 rounding would hold h just under 1 forever (and the idle
            // path off); the step to 1 is 1e-5 (-100 dB).
            released = 1.0;
        }
        self.h = released.min(m);
        self.ones = if self.h >= 1.0 { self.ones + 1 } else { 0 };
        self.sum += self.h as f64 - self.ring[self.pos] as f64;
        self.ring[self.pos] = self.h;
        self.pos += 1;
        if self.pos == self.len {
            // Re-sum now and then so rounding in the running sum cannot drift.
            self.pos = 0;
            self.sum = self.ring.iter().map(|&v| v as f64).sum();
        }
        self.n += 1;
        // The mean of values each <= r of the frame it serves; guard rounding.
        ((self.sum / self.len as f64) as f32).min(1.0)
    }
}
