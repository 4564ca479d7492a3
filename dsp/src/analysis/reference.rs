//! Reference matching: the master takes on a reference track's tonal balance
//! (long-term spectrum in octave bands, each correction limited) and its
//! loudness character (section contrast from its LRA, density from its PLR).

use crate::biquad::Coeffs;
use crate::stft::{MidFrames, MidStft};
use crate::Audio;
use serde::{Deserialize, Serialize};

/// Octave band centres the match works on.
pub const BANDS_HZ: [f64; 10] = [
    31.5, 63.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0,
];
/// Bandwidth of each matching filter (about one octave).
pub const MATCH_Q: f64 = 1.4;
/// The most any band is moved, either way.
pub const MAX_MATCH_DB: f64 = 4.0;
/// Frames quieter than this under the loudest are left out of the average
/// (fades and silence would tilt it towards noise).
const GATE_DB: f64 = 40.0;

/// One band of the matching EQ.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandGain {
    pub freq_hz: f64,
    pub gain_db: f64,
}

/// A track's long-term tonal balance: level per octave band in dB (None
/// where the band is above 0.9 x Nyquist).
#[derive(Clone, Debug, PartialEq)]
pub struct Balance {
    pub bands_db: Vec<Option<f64>>,
}

/// The mid channel's averaged power spectrum (Hann, 50% overlap, about 5 Hz
/// resolution), summed into octave bands.
pub fn balance(audio: &Audio) -> Balance {
    let mut energies = BalanceEnergies::new(audio.rate);
    audio.chunks(65_536).for_each(|c| energies.push(&c));
    let mut spectrum = BalanceSpectrum::new(audio.rate, energies.finish());
    audio.chunks(65_536).for_each(|c| spectrum.push(&c));
    spectrum.finish()
}

fn frame_len(rate: u32) -> usize {
    ((rate as f64 / 5.0) as usize).next_power_of_two().max(1024)
}

/// The first of the balance's two passes: each frame's energy, so the
/// second computes only the spectra that count (frames more than
/// [`GATE_DB`] under the loudest are left out) and keeps none.
pub struct BalanceEnergies {
    stft: MidStft,
    frames: MidFrames,
    energies: Vec<f64>,
}

impl BalanceEnergies {
    pub fn new(rate: u32) -> Self {
        let n = frame_len(rate);
        Self {
            stft: MidStft::new(n, n / 2),
            frames: MidFrames::new(n, n / 2),
            energies: Vec::new(),
        }
    }

    pub fn push(&mut self, block: &[&[f32]]) {
        let Self {
            stft,
            frames,
            energies,
        } = self;
        frames.push(block, |f| energies.push(stft.load(f)));
    }

    pub fn finish(mut self) -> Vec<f64> {
        let Self {
            stft,
            frames,
            energies,
        } = &mut self;
        frames.finish(|f| energies.push(stft.load(f)));
        self.energies
    }
}

/// The balance's second pass over the same stream.
pub struct BalanceSpectrum {
    rate: u32,
    stft: MidStft,
    frames: MidFrames,
    energies: Vec<f64>,
    gate: f64,
    next: usize,
    avg: Vec<f64>,
}

impl BalanceSpectrum {
    pub fn new(rate: u32, energies: Vec<f64>) -> Self {
        let n = frame_len(rate);
        let gate = energies.iter().cloned().fold(0.0, f64::max) * 10f64.powf(-GATE_DB / 10.0);
        Self {
            rate,
            stft: MidStft::new(n, n / 2),
            frames: MidFrames::new(n, n / 2),
            energies,
            gate,
            next: 0,
            avg: vec![0f64; n / 2 + 1],
        }
    }

    pub fn push(&mut self, block: &[&[f32]]) {
        let Self {
            stft,
            frames,
            energies,
            gate,
            next,
            avg,
            ..
        } = self;
        frames.push(block, |f| add_frame(stft, energies, *gate, next, avg, f));
    }

    pub fn finish(mut self) -> Balance {
        let Self {
            stft,
            frames,
            energies,
            gate,
            next,
            avg,
            ..
        } = &mut self;
        frames.finish(|f| add_frame(stft, energies, *gate, next, avg, f));
        bands(&self.avg, self.rate, self.stft.len())
    }
}

fn add_frame(
    stft: &mut MidStft,
    energies: &[f64],
    gate: f64,
    next: &mut usize,
    avg: &mut [f64],
    frame: &[f32],
) {
    let e = energies.get(*next).copied().unwrap_or(0.0);
    *next += 1;
    if e < gate || e <= 0.0 {
        return;
    }
    stft.load(frame);
    for (a, c) in avg.iter_mut().zip(stft.spectrum()) {
        *a += c.norm_sqr() as f64;
    }
}

/// The averaged spectrum summed into octave bands.
fn bands(avg: &[f64], rate: u32, n: usize) -> Balance {
    let rate = rate as f64;
    let bin_hz = rate / n as f64;
    let bands_db = BANDS_HZ
        .iter()
        .map(|&fc| {
            if fc * std::f64::consts::SQRT_2 > 0.9 * rate / 2.0 {
                return None;
            }
            let lo = (fc / std::f64::consts::SQRT_2 / bin_hz).ceil() as usize;
            let hi = ((fc * std::f64::consts::SQRT_2 / bin_hz).floor() as usize).min(avg.len() - 1);
            let p: f64 = avg[lo.min(hi)..=hi].iter().sum();
            Some(10.0 * p.max(1e-30).log10())
        })
        .collect();
    Balance { bands_db }
}

/// The matching EQ that moves `mix` towards `reference`, given the response
/// (dB at a frequency) the chain's own EQ already adds. Only the balance is
/// matched, not the level: the mean difference over 63 Hz .. 8 kHz is
/// taken out first. Each band is held within ±[`MAX_MATCH_DB`].
pub fn match_eq(
    mix: &Balance,
    reference: &Balance,
    already: impl Fn(f64) -> f64,
    rate: u32,
) -> Vec<BandGain> {
    let diffs: Vec<Option<f64>> = mix
        .bands_db
        .iter()
        .zip(&reference.bands_db)
        .zip(BANDS_HZ)
        .map(|((m, r), f)| match (m, r) {
            (Some(m), Some(r)) if f * std::f64::consts::SQRT_2 < 0.9 * rate as f64 / 2.0 => {
                Some(r - m - already(f))
            }
            _ => None,
        })
        .collect();
    let core: Vec<f64> = diffs
        .iter()
        .zip(BANDS_HZ)
        .filter(|(_, f)| (63.0..=8000.0).contains(f))
        .filter_map(|(d, _)| *d)
        .collect();
    if core.is_empty() {
        return Vec::new();
    }
    let offset = core.iter().sum::<f64>() / core.len() as f64;
    let want: Vec<(f64, f64)> = diffs
        .iter()
        .zip(BANDS_HZ)
        .filter_map(|(d, f)| d.map(|d| (f, (d - offset).clamp(-MAX_MATCH_DB, MAX_MATCH_DB))))
        .collect();
    // Neighbouring filters overlap, and a band's level is its whole octave:
    // correct each band for what the cascade does across its octave, a few
    // times over.
    let mut bands: Vec<BandGain> = want
        .iter()
        .map(|&(freq_hz, gain_db)| BandGain { freq_hz, gain_db })
        .collect();
    for _ in 0..6 {
        let cascade = match_cascade(&bands, rate);
        for (b, &(f, w)) in bands.iter_mut().zip(&want) {
            let got = octave_response_db(&cascade, f, rate as f64);
            b.gain_db = (b.gain_db + 0.8 * (w - got)).clamp(-MAX_MATCH_DB, MAX_MATCH_DB);
        }
    }
    bands
}

/// A cascade's power gain over the octave around `fc` (points spaced evenly
/// in frequency, as the FFT bins that make up a band level are).
fn octave_response_db(cascade: &[Coeffs], fc: f64, rate: f64) -> f64 {
    let (lo, hi) = (fc / std::f64::consts::SQRT_2, fc * std::f64::consts::SQRT_2);
    let n = 16;
    let mean = (0..n)
        .map(|i| {
            let f = lo + (hi - lo) * (i as f64 + 0.5) / n as f64;
            let db: f64 = cascade.iter().map(|c| c.magnitude_db(f, rate)).sum();
            10f64.powf(db / 10.0)
        })
        .sum::<f64>()
        / n as f64;
    10.0 * mean.log10()
}

/// The matching EQ as peaking filters.
pub fn match_cascade(bands: &[BandGain], rate: u32) -> Vec<Coeffs> {
    bands
        .iter()
        .filter(|b| b.gain_db != 0.0 && b.freq_hz < 0.45 * rate as f64)
        .map(|b| Coeffs::peaking(b.freq_hz, b.gain_db, MATCH_Q, rate as f64))
        .collect()
}

/// How the reference's loudness character moves the plan: section contrast
/// scaled by its LRA over the mix's, compression by how much denser (lower
/// PLR) it is. Both limited.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Character {
    pub contrast: f64,
    pub compression: f64,
}

pub fn character(mix_lra: f64, mix_plr: f64, ref_lra: f64, ref_plr: f64) -> Character {
    let contrast = if mix_lra > 0.5 && ref_lra.is_finite() {
        (ref_lra / mix_lra).clamp(0.5, 1.5)
    } else {
        1.0
    };
    let compression = if mix_plr.is_finite() && ref_plr.is_finite() {
        (1.0 + (mix_plr - ref_plr) / 12.0).clamp(0.75, 2.0)
    } else {
        1.0
    };
    Character {
        contrast,
        compression,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::biquad::run_cascade_audio;
    use crate::testsignals::Noise;

    fn noise(rate: u32, seconds: f64, seed: u64) -> Audio {
        let mut g = Noise::new(seed);
        let n = (seconds * rate as f64) as usize;
        let l: Vec<f32> = (0..n).map(|_| (0.1 * g.sample()) as f32).collect();
        let r: Vec<f32> = (0..n).map(|_| (0.1 * g.sample()) as f32).collect();
        Audio::new(rate, vec![l, r]).unwrap()
    }

    fn filtered(mut a: Audio, cascade: &[Coeffs]) -> Audio {
        run_cascade_audio(cascade, &mut a);
        a
    }

    #[test]
    fn a_track_matched_to_itself_needs_nothing() {
        let a = noise(44_100, 20.0, 1);
        let b = balance(&a);
        let eq = match_eq(&b, &b, |_| 0.0, 44_100);
        assert!(eq.iter().all(|g| g.gain_db.abs() < 1e-9), "{eq:?}");
    }

    #[test]
    fn a_tilt_is_found_and_undone_within_limits() {
        let rate = 48_000;
        let mix = noise(rate, 20.0, 2);
        // The reference: the same noise, 3 dB more treble and 2 dB less bass.
        let tilt = [
            Coeffs::high_shelf(3000.0, 3.0, rate as f64),
            Coeffs::low_shelf(150.0, -2.0, rate as f64),
        ];
        let reference = filtered(noise(rate, 20.0, 3), &tilt);
        let eq = match_eq(&balance(&mix), &balance(&reference), |_| 0.0, rate);
        let matched = filtered(mix.clone(), &match_cascade(&eq, rate));
        let (m, r) = (balance(&matched), balance(&reference));
        let before = balance(&mix);
        // Band by band, relative to 1 kHz: the matched mix is within 0.6 dB
        // of the reference where it was up to 5 dB away.
        let rel = |b: &Balance, k: usize| b.bands_db[k].unwrap() - b.bands_db[5].unwrap();
        assert_eq!(
            r.bands_db[9], None,
            "16 kHz is too close to Nyquist at 48 kHz"
        );
        for (k, freq) in BANDS_HZ.iter().enumerate().take(9).skip(1) {
            let (err, was) = (
                (rel(&m, k) - rel(&r, k)).abs(),
                (rel(&before, k) - rel(&r, k)).abs(),
            );
            assert!(err < 0.6, "{freq} Hz: off by {err:.2} dB (was {was:.2})");
        }
        assert!(
            (rel(&before, 8) - rel(&r, 8)).abs() > 2.5,
            "the tilt was there"
        );
        // A 12 dB difference is held at the limit.
        let harsh = filtered(
            noise(rate, 20.0, 4),
            &[Coeffs::high_shelf(6000.0, 12.0, rate as f64)],
        );
        let eq = match_eq(&balance(&mix), &balance(&harsh), |_| 0.0, rate);
        assert!(eq.iter().all(|g| g.gain_db.abs() <= MAX_MATCH_DB), "{eq:?}");
        assert!(eq.iter().any(|g| g.gain_db >= MAX_MATCH_DB - 0.5), "{eq:?}");
    }

    #[test]
    fn character_follows_the_reference_within_limits() {
        let c = character(10.0, 14.0, 5.0, 8.0);
        assert_eq!(c.contrast, 0.5);
        assert!((c.compression - 1.5).abs() < 1e-12);
        assert_eq!(
            character(4.0, 10.0, 40.0, 30.0),
            Character {
                contrast: 1.5,
                compression: 0.75
            }
        );
        assert_eq!(
            character(0.0, f64::NAN, 5.0, 8.0),
            Character {
                contrast: 1.0,
                compression: 1.0
            }
        );
    }
}
