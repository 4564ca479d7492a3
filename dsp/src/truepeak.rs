//! Band-limited interpolation for true-peak work.
//!
//! ebur128's 4x interpolator (48 taps) under-reads inter-sample peaks near
//! Nyquist. LoopMind uses two of its own: a 4x, 32-tap-per-phase interpolator
//! for the limiter's detector, and a meter that scans at 4x and re-examines
//! every candidate near the maximum at 16x with 64 taps per phase, which is
//! within a few hundredths of a dB of ideal reconstruction for content up to
//! 0.45 fs.

use crate::Audio;

/// Kaiser-windowed sinc interpolator, one short FIR per fractional phase.
pub struct Interpolator {
    factor: usize,
    taps: usize,
    /// phases[p][j]: weight of x[n + j - taps/2 + 1] for output at n + p/factor.
    phases: Vec<Vec<f32>>,
}

fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..50 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

impl Interpolator {
    pub fn new(factor: usize, taps: usize) -> Self {
        assert!(factor >= 1 && taps >= 2 && taps % 2 == 0);
        let beta = 8.0;
        let half = taps as f64 / 2.0;
        let i0b = bessel_i0(beta);
        let phases = (0..factor)
            .map(|p| {
                let f = p as f64 / factor as f64;
                let mut h: Vec<f64> = (0..taps)
                    .map(|j| {
                        // Tap j sits at input offset k = j - taps/2 + 1 from n.
                        let k = j as f64 - half + 1.0;
                        let t = f - k;
                        let sinc = if t.abs() < 1e-12 {
                            1.0
                        } else {
                            (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t)
                        };
                        let r = t / half;
                        let w = if r.abs() >= 1.0 {
                            0.0
                        } else {
                            bessel_i0(beta * (1.0 - r * r).sqrt()) / i0b
                        };
                        sinc * w
                    })
                    .collect();
                // Unity DC gain for every phase.
                let s: f64 = h.iter().sum();
                h.iter_mut().for_each(|v| *v /= s);
                h.into_iter().map(|v| v as f32).collect()
            })
            .collect();
        Self {
            factor,
            taps,
            phases,
        }
    }

    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Left context (samples before n) and right context (after n) one output needs.
    pub fn context(&self) -> (usize, usize) {
        (self.taps / 2 - 1, self.taps / 2)
    }

    /// Interpolated value at `n + phase/factor`, reading `x` around `n`.
    /// `x` must hold the full context around `n`.
    #[inline]
    pub fn at(&self, x: &[f32], n: usize, phase: usize) -> f32 {
        if phase == 0 {
            return x[n];
        }
        let start = n + 1 - self.taps / 2;
        let w = &self.phases[phase];
        let s = &x[start..start + self.taps];
        dot(s, w)
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums so the compiler vectorises.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for k in 0..8 {
            acc[k] += a[i * 8 + k] * b[i * 8 + k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

const BLOCK: usize = 1024;

impl Interpolator {
    /// Interpolated values at phase `p` for frames `from..to` of `x`, which
    /// holds their full context, written to `out[..to - from]`.
    pub fn phase_block(&self, x: &[f32], from: usize, to: usize, p: usize, out: &mut [f32]) {
        let (l, r) = self.context();
        crate::fir::convolve(&x[from - l..to + r], &self.phases[p], &mut out[..to - from]);
    }
}

/// The limiter's detector: for each frame k, the largest |reconstructed value|
/// over (k-1, k+1), across channels, from 4x interpolation.
pub fn peak_envelope(audio: &Audio) -> Vec<f32> {
    let ip = Interpolator::new(4, 32);
    let n = audio.frames();
    let (l, r) = ip.context();
    let mut seg = vec![0f32; n]; // seg[k] = max over [k, k+1)
    let mut x = Vec::with_capacity(BLOCK + l + r);
    let mut out = vec![0f32; BLOCK];
    for ch in &audio.channels {
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            // This block with its context, zeros beyond the ends.
            x.clear();
            x.resize(l.saturating_sub(start), 0.0);
            x.extend_from_slice(&ch[start.saturating_sub(l)..(end + r).min(n)]);
            x.resize(end - start + l + r, 0.0);
            for (k, s) in seg[start..end].iter_mut().enumerate() {
                *s = s.max(x[l + k].abs());
            }
            for p in 1..4 {
                ip.phase_block(&x, l, l + end - start, p, &mut out);
                for (s, v) in seg[start..end].iter_mut().zip(&out) {
                    *s = s.max(v.abs());
                }
            }
            start = end;
        }
    }
    // env[k] covers (k-1, k+1): both intervals touching sample k.
    let mut env = seg.clone();
    for k in 1..n {
        env[k] = env[k].max(seg[k - 1]);
    }
    env
}

/// Near-ideal true-peak meter that accepts audio in chunks.
pub struct TruePeakMeter {
    coarse: Interpolator,
    fine: Interpolator,
    /// Per channel: `keep` frames of examined context, then `pending` frames
    /// not yet examined because they lacked right context.
    history: Vec<Vec<f32>>,
    pending: usize,
    best: f32,
    scratch: Vec<f32>,
    out: Vec<f32>,
}

impl TruePeakMeter {
    pub fn new(channels: usize) -> Self {
        let coarse = Interpolator::new(4, 32);
        let fine = Interpolator::new(16, 64);
        let keep = fine.context().0.max(coarse.context().0);
        Self {
            coarse,
            fine,
            history: vec![vec![0.0; keep]; channels],
            pending: 0,
            best: 0.0,
            scratch: Vec::with_capacity(BLOCK),
            out: vec![0.0; BLOCK],
        }
    }

    fn keep(&self) -> usize {
        self.fine.context().0.max(self.coarse.context().0)
    }

    fn right(&self) -> usize {
        self.fine.context().1.max(self.coarse.context().1)
    }

    /// Examines frames `from..to` of `x`, which holds their full context.
    fn scan(&mut self, x: &[f32], from: usize, to: usize) {
        // The 4x grid can miss a peak by at most ~0.6 dB for content up to
        // 0.45 fs; anything within that of the best so far is checked at 16x.
        let margin = 0.93f32;
        let mut coarse = std::mem::take(&mut self.scratch);
        let mut start = from;
        while start < to {
            let end = (start + BLOCK).min(to);
            let len = end - start;
            coarse.clear();
            coarse.extend(x[start..end].iter().map(|v| v.abs()));
            for p in 1..4 {
                self.coarse.phase_block(x, start, end, p, &mut self.out);
                for (c, v) in coarse.iter_mut().zip(&self.out[..len]) {
                    *c = c.max(v.abs());
                }
            }
            for (k, &m) in coarse.iter().enumerate() {
                if m >= self.best * margin {
                    self.best = self.best.max(m);
                    for p in 1..16 {
                        self.best = self.best.max(self.fine.at(x, start + k, p).abs());
                    }
                }
            }
            start = end;
        }
        self.scratch = coarse;
    }

    pub fn add(&mut self, chunk: &[&[f32]]) {
        let (keep, right) = (self.keep(), self.right());
        let mut new_pending = self.pending;
        for (c, samples) in chunk.iter().enumerate() {
            let mut x = std::mem::take(&mut self.history[c]);
            let start = x.len() - self.pending;
            x.extend_from_slice(samples);
            let to = x.len().saturating_sub(right).max(start);
            self.scan(&x, start, to);
            new_pending = x.len() - to;
            self.history[c] = x[to - keep..].to_vec();
        }
        self.pending = new_pending;
    }

    /// Linear true peak over everything added.
    pub fn finish(mut self) -> f32 {
        let (keep, right) = (self.keep(), self.right());
        for c in 0..self.history.len() {
            let mut x = std::mem::take(&mut self.history[c]);
            x.resize(x.len() + right, 0.0);
            self.scan(&x, keep, keep + self.pending);
        }
        self.best
    }
}

/// True peak of a whole buffer in dBTP by the near-ideal meter.
pub fn true_peak_dbtp(audio: &Audio) -> f64 {
    let mut m = TruePeakMeter::new(audio.num_channels());
    let chunk: Vec<&[f32]> = audio.channels.iter().map(|c| c.as_slice()).collect();
    m.add(&chunk);
    crate::lin_to_db(m.finish() as f64)
}
