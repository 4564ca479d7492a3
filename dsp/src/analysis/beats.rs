//! Tempo and beat grid, so detected section boundaries can land on beats.
//!
//! Onset strength is the spectral flux of log-compressed magnitudes (hop
//! about 10 ms); the tempo is the autocorrelation peak of that envelope
//! between 60 and 180 BPM, weighted towards 120 (a log-Gaussian, as common
//! beat trackers do, so a half- or double-time reading loses to the pulse
//! listeners tap); the phase is where a comb at that period collects the
//! most onset strength. One tempo for the whole track: songs that change
//! tempo get a grid that drifts, and no grid where no clear pulse is found.

use crate::analysis::stft::{MidFrames, MidStft};
use crate::Audio;

const MIN_BPM: f64 = 60.0;
const MAX_BPM: f64 = 180.0;
/// A pulse must explain at least this share of the envelope's variance
/// (normalised autocorrelation at the beat period) to count as a tempo.
const MIN_CLARITY: f64 = 0.1;

/// A constant-tempo beat grid: beats at `first + k * period` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeatGrid {
    pub bpm: f64,
    pub period: f64,
    /// The first beat, within one period of the start.
    pub first: f64,
}

impl BeatGrid {
    /// The beat nearest to `t`.
    pub fn nearest(&self, t: f64) -> f64 {
        let k = ((t - self.first) / self.period).round().max(0.0);
        self.first + k * self.period
    }
}

/// Onset strength per hop of a stream of blocks (about 23 ms windows and
/// 11.6 ms hops at 44.1 kHz, scaled with the rate).
pub struct OnsetStage {
    stft: MidStft,
    frames: MidFrames,
    prev: Vec<f32>,
    env: Vec<f64>,
    rate: u32,
}

impl OnsetStage {
    pub fn new(rate: u32) -> Self {
        let n = ((rate as f64 * 0.023) as usize).next_power_of_two();
        Self {
            stft: MidStft::new(n, n / 2),
            frames: MidFrames::new(n, n / 2),
            prev: vec![0f32; n / 2 + 1],
            env: Vec::new(),
            rate,
        }
    }

    pub fn push(&mut self, block: &[&[f32]]) {
        let Self {
            stft,
            frames,
            prev,
            env,
            ..
        } = self;
        frames.push(block, |frame| {
            stft.load(frame);
            let mut flux = 0f64;
            for (p, c) in prev.iter_mut().zip(stft.spectrum()) {
                // Log compression: quiet and loud onsets both count.
                // sqrt of the square: no overflow to guard against here, and
                // hypot costs several times as much.
                let m = (1.0 + 1000.0 * c.norm_sqr().sqrt()).ln();
                if m > *p {
                    flux += (m - *p) as f64;
                }
                *p = m;
            }
            env.push(flux);
        });
    }

    /// The onset envelope with its slow trend taken out, and the hop in
    /// seconds (a stream shorter than one window has none).
    pub fn finish(self) -> Onsets {
        let (env, hop) = (self.env, self.stft.hop());
        let rate = self.rate as f64;
        // Take out the slow trend (a local mean over about 0.5 s).
        let w = ((0.25 * rate / hop as f64) as usize).max(1);
        let mut prefix = vec![0f64; env.len() + 1];
        for (i, v) in env.iter().enumerate() {
            prefix[i + 1] = prefix[i] + v;
        }
        let detrended = (0..env.len())
            .map(|i| {
                let (a, b) = (i.saturating_sub(w), (i + w + 1).min(env.len()));
                (env[i] - (prefix[b] - prefix[a]) / (b - a) as f64).max(0.0)
            })
            .collect();
        Onsets {
            env: detrended,
            hop_s: hop as f64 / rate,
        }
    }
}

/// Onset strength per hop (detrended), a small record of the whole track.
pub struct Onsets {
    pub env: Vec<f64>,
    pub hop_s: f64,
}

/// A whole track's onsets.
pub fn onsets(audio: &Audio) -> Onsets {
    let mut stage = OnsetStage::new(audio.rate);
    for c in audio.chunks(65_536) {
        stage.push(&c);
    }
    stage.finish()
}

/// The track's beat grid, or None where no clear pulse is found.
pub fn track(audio: &Audio) -> Option<BeatGrid> {
    grid(&onsets(audio))
}

/// The beat grid of a track's onsets, or None where no clear pulse is found.
pub fn grid(onsets: &Onsets) -> Option<BeatGrid> {
    let (env, hop_s) = (&onsets.env, onsets.hop_s);
    let (lag_min, lag_max) = (
        (60.0 / MAX_BPM / hop_s).floor() as usize,
        (60.0 / MIN_BPM / hop_s).ceil() as usize,
    );
    if env.len() < 4 * lag_max {
        return None;
    }
    let mean = env.iter().sum::<f64>() / env.len() as f64;
    let x: Vec<f64> = env.iter().map(|v| v - mean).collect();
    let energy: f64 = x.iter().map(|v| v * v).sum();
    if energy <= 0.0 {
        return None;
    }
    let ac =
        |lag: usize| -> f64 { x.iter().zip(&x[lag..]).map(|(a, b)| a * b).sum::<f64>() / energy };
    let acs: Vec<(usize, f64)> = (lag_min..=lag_max).map(|l| (l, ac(l))).collect();
    let prior = |lag: usize| {
        let bpm = 60.0 / (lag as f64 * hop_s);
        // One octave's standard deviation.
        (-0.5 * (bpm / 120.0).log2().powi(2)).exp()
    };
    let &(best, clarity) = acs
        .iter()
        .max_by(|a, b| (a.1 * prior(a.0)).total_cmp(&(b.1 * prior(b.0))))?;
    if clarity < MIN_CLARITY {
        return None;
    }
    // Period and phase together, to a fiftieth of a hop: the comb that
    // collects the most onset strength over the whole track (a period off
    // by 0.3% drifts by a sixth of a beat over 50 beats).
    let (mut period_hops, mut phase, mut most) = (best as f64, 0.0, f64::MIN);
    for i in -50..=50 {
        let p = best as f64 + i as f64 / 50.0;
        let steps = 64;
        for k in 0..steps {
            let ph = k as f64 * p / steps as f64;
            let c = comb(env, ph, p);
            if c > most {
                (period_hops, phase, most) = (p, ph, c);
            }
        }
    }
    // Frame k's window starts at k hops and is two hops long: an onset at
    // its centre peaks the flux there.
    let first = (phase + 1.0) * hop_s;
    let period = period_hops * hop_s;
    Some(BeatGrid {
        bpm: 60.0 / period,
        period,
        first,
    })
}

fn comb(env: &[f64], phase: f64, period: f64) -> f64 {
    let mut sum = 0.0;
    let mut t = phase;
    while (t as usize) < env.len() {
        // Linear interpolation between the two nearest hops.
        let i = t as usize;
        let f = t - i as f64;
        sum += env[i] * (1.0 - f) + env.get(i + 1).copied().unwrap_or(0.0) * f;
        t += period;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsignals::Noise;

    /// Clicks (short noise bursts) at `bpm`, starting at `first` seconds.
    fn clicks(bpm: f64, first: f64, seconds: f64, rate: u32) -> Audio {
        let n = (seconds * rate as f64) as usize;
        let mut noise = Noise::new(7);
        let mut x = vec![0f32; n];
        let period = 60.0 / bpm;
        let mut t = first;
        while t < seconds {
            let i0 = (t * rate as f64) as usize;
            for (j, v) in x.iter_mut().skip(i0).take(400).enumerate() {
                *v = (0.5 * noise.sample() * (-(j as f64) / 80.0).exp()) as f32;
            }
            t += period;
        }
        Audio::new(rate, vec![x.clone(), x]).unwrap()
    }

    #[test]
    fn finds_tempo_and_phase_of_a_click_track() {
        for (bpm, first) in [(100.0, 0.13), (128.0, 0.4), (87.0, 0.05)] {
            let g = track(&clicks(bpm, first, 30.0, 44_100)).expect("a tempo");
            assert!((g.bpm - bpm).abs() < 0.5, "{bpm}: read {}", g.bpm);
            // Beats land on the clicks, within 15 ms, across the track.
            for k in [0usize, 10, 30] {
                let t = first + k as f64 * 60.0 / bpm;
                assert!(
                    (g.nearest(t) - t).abs() < 0.015,
                    "{bpm} beat {k}: {} vs {t}",
                    g.nearest(t)
                );
            }
        }
    }

    #[test]
    fn no_pulse_no_grid() {
        let mut noise = Noise::new(3);
        let x: Vec<f32> = (0..44_100 * 20)
            .map(|_| (0.1 * noise.sample()) as f32)
            .collect();
        assert_eq!(track(&Audio::new(44_100, vec![x]).unwrap()), None);
    }
}
