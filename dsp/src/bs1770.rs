//! A fast BS.1770-4 model used inside the gain search: K-weighted power per
//! frame, computed once, so a candidate gain curve's integrated loudness is a
//! multiply-add per frame instead of a full meter pass. Every reported number
//! still comes from the ebur128 meter on the written samples.

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

/// K-weighted power per frame, summed over channels (all weight 1: mono and
/// stereo have no surround channels).
pub fn k_power(audio: &Audio) -> Vec<f32> {
    let k = k_weighting(audio.rate);
    let mut power = vec![0f32; audio.frames()];
    for ch in &audio.channels {
        let (mut s0, mut s1) = (State::default(), State::default());
        for (p, &x) in power.iter_mut().zip(ch) {
            let y = s1.tick(&k[1], s0.tick(&k[0], x as f64));
            *p += (y * y) as f32;
        }
    }
    power
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
        }
    }

    pub fn add(&mut self, chunk: &[&[f32]]) {
        let frames = chunk.first().map_or(0, |c| c.len());
        let mut i = 0;
        while i < frames {
            let take = (self.hop - self.filled).min(frames - i);
            for (c, ch) in chunk.iter().enumerate() {
                let [s0, s1] = &mut self.states[c];
                for &x in &ch[i..i + take] {
                    let y = s1.tick(&self.k[1], s0.tick(&self.k[0], x as f64));
                    self.acc += y * y;
                }
            }
            self.filled += take;
            i += take;
            if self.filled == self.hop {
                self.blocks.push(self.acc);
                self.acc = 0.0;
                self.filled = 0;
            }
        }
    }

    /// Energy sums per whole sub-block.
    pub fn finish(self) -> Vec<f64> {
        self.blocks
    }
}

/// Gated integrated loudness of the sub-blocks covering `start..end` seconds.
pub fn range_loudness(blocks: &[f64], rate: u32, start: f64, end: f64) -> f64 {
    let h = hop(rate);
    let per_s = rate as f64 / h as f64;
    let a = ((start * per_s) as usize).min(blocks.len());
    let b = ((end * per_s) as usize).min(blocks.len());
    gated_loudness(&blocks[a..b], h)
}
