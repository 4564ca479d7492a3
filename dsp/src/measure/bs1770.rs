//! BS.1770-4 / EBU R128 loudness from K-weighted energy per 100 ms sub-block:
//! integrated loudness (400 ms blocks, 75% overlap, -70 LUFS and -10 LU
//! gates) and loudness range (EBU Tech 3342: 3 s blocks every second, -70
//! LUFS and -20 LU gates, 10th to 95th percentile), computed the way
//! libebur128 (and the ebur128 crate's queue mode) does, to within 0.01 LU
//! of it (tests). One K-weighting pass gives everything: the gain search's
//! model uses the power per frame, the reports the sub-block sums.

use crate::biquad::{Coeffs, State};
use crate::Audio;
use std::f64::consts::PI;

/// The two K-weighting stages (high shelf, RLB high-pass) at a sample rate,
/// from the BS.1770 analog prototypes as libebur128 derives them.
pub fn k_weighting(rate: u32) -> [Coeffs; 2] {
    let fs = rate as f64;
    let (f0, g, q) = (1681.974450955533, 3.999843853973347, 0.7071752369554196);
    let k = (PI * f0 / fs).tan();
    let vh = 10f64.powf(g / 20.0);
    let vb = vh.powf(0.4996667741545416);
    let a0 = 1.0 + k / q + k * k;
    let shelf = Coeffs {
        b0: (vh + vb * k / q + k * k) / a0,
        b1: 2.0 * (k * k - vh) / a0,
        b2: (vh - vb * k / q + k * k) / a0,
        a1: 2.0 * (k * k - 1.0) / a0,
        a2: (1.0 - k / q + k * k) / a0,
    };
    let (f0, q) = (38.13547087602444, 0.5003270373238773);
    let k = (PI * f0 / fs).tan();
    let a0 = 1.0 + k / q + k * k;
    let hp = Coeffs {
        b0: 1.0,
        b1: -2.0,
        b2: 1.0,
        a1: 2.0 * (k * k - 1.0) / a0,
        a2: (1.0 - k / q + k * k) / a0,
    };
    [shelf, hp]
}

/// Frames per 100 ms sub-block (a quarter of a gating block).
pub fn hop(rate: u32) -> usize {
    ((rate as f64 * 0.1).round() as usize).max(1)
}

/// K-weights `chunk` (planar, every channel the same length), continuing
/// from `states`, and adds each frame's power (channels summed) to `out`.
fn k_filter(k: &[Coeffs; 2], states: &mut [[State; 2]], chunk: &[&[f32]], out: &mut [f64]) {
    if let ([l, r], [[la, lb], [ra, rb]]) = (chunk, &mut *states) {
        // Stereo in lockstep: two independent recursions per step keep the
        // pipeline full (one alone waits on its own feedback).
        for ((o, &a), &b) in out.iter_mut().zip(*l).zip(*r) {
            let ya = lb.tick(&k[1], la.tick(&k[0], a as f64));
            let yb = rb.tick(&k[1], ra.tick(&k[0], b as f64));
            *o += ya * ya + yb * yb;
        }
        return;
    }
    for (ch, [s0, s1]) in chunk.iter().zip(states.iter_mut()) {
        for (o, &x) in out.iter_mut().zip(*ch) {
            let y = s1.tick(&k[1], s0.tick(&k[0], x as f64));
            *o += y * y;
        }
    }
}

/// K-weighted power per frame, summed over channels (all weight 1: mono and
/// stereo have no surround channels).
pub fn k_power(audio: &Audio) -> Vec<f32> {
    let mut k = KPower::new(audio.num_channels(), audio.rate);
    let mut power = Vec::with_capacity(audio.frames());
    for chunk in audio.chunks(CHUNK) {
        k.add(&chunk, &mut power);
    }
    power
}

/// [`k_power`] over blocks, continuing its filters' state.
pub struct KPower {
    k: [Coeffs; 2],
    states: Vec<[State; 2]>,
    scratch: Vec<f64>,
}

impl KPower {
    pub fn new(channels: usize, rate: u32) -> Self {
        Self {
            k: k_weighting(rate),
            states: vec![[State::default(); 2]; channels],
            scratch: Vec::new(),
        }
    }

    /// Appends each frame's power of `chunk` to `power`.
    pub fn add(&mut self, chunk: &[&[f32]], power: &mut Vec<f32>) {
        let out = self.weigh(chunk);
        power.extend(out.iter().map(|&p| p as f32));
    }

    /// Each frame's power of `chunk` (valid until the next call).
    pub fn weigh(&mut self, chunk: &[&[f32]]) -> &[f64] {
        let n = chunk.first().map_or(0, |c| c.len());
        self.scratch.clear();
        self.scratch.resize(n, 0.0);
        k_filter(&self.k, &mut self.states, chunk, &mut self.scratch);
        &self.scratch
    }
}

const CHUNK: usize = 8192;

/// Energy of a block at the absolute gate, -70 LUFS.
fn absolute_gate() -> f64 {
    10f64.powf((-70.0 + 0.691) / 10.0)
}

/// Loudness range in LU (EBU Tech 3342) from per-sub-block energy sums:
/// short-term (3 s) blocks every second from the start, as libebur128
/// takes them.
pub fn loudness_range(sub_sums: &[f64], hop: usize) -> f64 {
    let gate = absolute_gate();
    let mut st: Vec<f64> = sub_sums
        .windows(30)
        .step_by(10)
        .map(|w| w.iter().sum::<f64>() / (30 * hop) as f64)
        .filter(|&e| e >= gate)
        .collect();
    if st.is_empty() {
        return 0.0;
    }
    st.sort_unstable_by(f64::total_cmp);
    let relative = 0.01 * st.iter().sum::<f64>() / st.len() as f64;
    let gated = &st[st.partition_point(|&e| e < relative)..];
    let Some(last) = gated.len().checked_sub(1) else {
        return 0.0;
    };
    let at = |q: f64| gated[(last as f64 * q + 0.5) as usize];
    let lufs = |z: f64| -0.691 + 10.0 * z.log10();
    lufs(at(0.95)) - lufs(at(0.10))
}

/// Integrated loudness (LUFS) from per-sub-block energy sums, with BS.1770's
/// 400 ms blocks overlapping by 75%, absolute gate -70 LUFS, relative -10 LU.
pub fn gated_loudness(sub_sums: &[f64], hop: usize) -> f64 {
    let blocks: Vec<f64> = sub_sums
        .windows(4)
        .map(|w| w.iter().sum::<f64>() / (4 * hop) as f64)
        .collect();
    let lufs = |z: f64| -0.691 + 10.0 * z.log10();
    let mean = |th: f64| {
        let (s, n) = blocks
            .iter()
            .filter(|&&z| lufs(z) > th)
            .fold((0.0, 0usize), |(s, n), &z| (s + z, n + 1));
        if n == 0 {
            None
        } else {
            Some(s / n as f64)
        }
    };
    let Some(abs) = mean(-70.0) else {
        return f64::NEG_INFINITY;
    };
    match mean(lufs(abs) - 10.0) {
        Some(z) => lufs(z),
        None => f64::NEG_INFINITY,
    }
}

/// Integrated loudness of per-frame powers.
pub fn integrated_from_power(power: &[f32], rate: u32) -> f64 {
    let h = hop(rate);
    let subs: Vec<f64> = power
        .chunks_exact(h)
        .map(|c| c.iter().map(|&v| v as f64).sum())
        .collect();
    gated_loudness(&subs, h)
}

/// K-weighted energy per 100 ms sub-block of audio fed in chunks (all
/// channels summed): what per-section loudness of a written master is
/// measured from.
pub struct BlockMeter {
    k: [Coeffs; 2],
    states: Vec<[State; 2]>,
    hop: usize,
    filled: usize,
    acc: f64,
    blocks: Vec<f64>,
    scratch: Vec<f64>,
}

impl BlockMeter {
    pub fn new(channels: usize, rate: u32) -> Self {
        Self {
            k: k_weighting(rate),
            states: vec![[State::default(), State::default()]; channels],
            hop: hop(rate),
            filled: 0,
            acc: 0.0,
            blocks: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub fn add(&mut self, chunk: &[&[f32]]) {
        let frames = chunk.first().map_or(0, |c| c.len());
        let mut i = 0;
        while i < frames {
            let take = (self.hop - self.filled).min(frames - i);
            let part: Vec<&[f32]> = chunk.iter().map(|c| &c[i..i + take]).collect();
            self.scratch.clear();
            self.scratch.resize(take, 0.0);
            k_filter(&self.k, &mut self.states, &part, &mut self.scratch);
            self.acc += self.scratch.iter().sum::<f64>();
            self.filled += take;
            i += take;
            if self.filled == self.hop {
                self.blocks.push(self.acc);
                self.acc = 0.0;
                self.filled = 0;
            }
        }
    }

    /// Integrated loudness and loudness range of everything added.
    pub fn loudness(&self) -> (f64, f64) {
        (
            gated_loudness(&self.blocks, self.hop),
            loudness_range(&self.blocks, self.hop),
        )
    }

    /// Energy sums per whole sub-block.
    pub fn finish(self) -> Vec<f64> {
        self.blocks
    }
}

/// `lufs` if there is something to master: silence (nothing above the
/// -70 LUFS gate) is never boosted.
pub fn audible(lufs: f64) -> Result<f64, crate::DspError> {
    if lufs.is_finite() && lufs >= -70.0 {
        Ok(lufs)
    } else {
        Err(crate::DspError::Silent)
    }
}

/// A whole buffer's integrated loudness (LUFS) and loudness range (LU).
pub fn measure(audio: &Audio) -> (f64, f64) {
    let mut m = BlockMeter::new(audio.num_channels(), audio.rate);
    audio.chunks(65_536).for_each(|c| m.add(&c));
    m.loudness()
}

/// Gated integrated loudness of the sub-blocks covering `start..end` seconds.
pub fn range_loudness(blocks: &[f64], rate: u32, start: f64, end: f64) -> f64 {
    let h = hop(rate);
    let per_s = rate as f64 / h as f64;
    let a = ((start * per_s) as usize).min(blocks.len());
    let b = ((end * per_s) as usize).min(blocks.len());
    gated_loudness(&blocks[a..b], h)
}
