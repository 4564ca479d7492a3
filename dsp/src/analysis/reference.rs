//! Reference matching: the master takes on a reference track's tonal balance
//! and its loudness character (section contrast from its LRA, density from
//! its PLR).
//!
//! The tonal balance is matched as a mastering engineer would, in broad
//! strokes: the difference of the two long-term spectra (third octaves) is
//! smoothed over half an octave, read as a limited tilt plus broad moves,
//! held to at most [`MAX_STEP_DB`] between neighbouring octaves, ±[`MAX_MATCH_DB`]
//! per octave and [`MAX_RMS_DB`] overall, and then refined band by band
//! only where that brings the track closer to the reference (a bend in the
//! curve has a price). A difference in which notes are played (octaves
//! alternating up and down) is left alone.

use crate::analysis::stft::{MidFrames, MidStft};
use crate::biquad::Coeffs;
use crate::Audio;
use serde::{Deserialize, Serialize};

/// Octave band centres of the matching filters.
pub const BANDS_HZ: [f64; 10] = [
    31.5, 63.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0,
];
/// Bandwidth of each matching filter (about one octave).
pub const MATCH_Q: f64 = 1.4;
/// The most any band is moved, either way.
pub const MAX_MATCH_DB: f64 = 4.0;
/// The most neighbouring octave bands of the applied curve differ: a
/// mastering EQ moves regions, it does not follow which notes are played.
pub const MAX_STEP_DB: f64 = 2.0;
/// The steepest tilt the match applies, dB per octave.
pub const MAX_TILT_DB_PER_OCT: f64 = 1.0;
/// The most correction overall: the RMS of the octave gains.
pub const MAX_RMS_DB: f64 = 2.5;
/// Width (standard deviation, octaves) of the smoothing of the measured
/// difference, and of the broad moves left after the tilt.
const SMOOTH_OCT: f64 = 0.5;
const BROAD_OCT: f64 = 0.75;
/// The region whose mean is taken out (level is not matched) and where the
/// tilt and the distance are measured.
const CORE_HZ: (f64, f64) = (63.0, 8000.0);
/// Frames quieter than this under the loudest are left out of the average
/// (fades and silence would tilt it towards noise).
const GATE_DB: f64 = 40.0;

/// Third-octave centres (1 kHz x 2^(k/3)) the balance is measured at, 25 Hz .. 20 kHz.
pub fn thirds_hz() -> Vec<f64> {
    (-16..=13)
        .map(|k| 1000.0 * 2f64.powf(k as f64 / 3.0))
        .collect()
}

/// One band of the matching EQ.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandGain {
    pub freq_hz: f64,
    pub gain_db: f64,
}

/// A track's long-term tonal balance: mean power density per third-octave
/// band of [`thirds_hz`] in dB (None where the band reaches above 0.9 x
/// Nyquist). Densities, not sums: two rates' FFT bins then agree.
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

/// The averaged spectrum as third-octave densities.
fn bands(avg: &[f64], rate: u32, n: usize) -> Balance {
    let rate = rate as f64;
    let bin_hz = rate / n as f64;
    let edge = 2f64.powf(1.0 / 6.0);
    let bands_db = thirds_hz()
        .into_iter()
        .map(|fc| {
            if fc * edge > 0.9 * rate / 2.0 {
                return None;
            }
            let lo = (fc / edge / bin_hz).ceil() as usize;
            let hi = ((fc * edge / bin_hz).floor() as usize).min(avg.len() - 1);
            // A low band narrower than a bin takes the bin at its centre.
            let (lo, hi) = if lo > hi {
                let c = ((fc / bin_hz).round() as usize).min(avg.len() - 1);
                (c, c)
            } else {
                (lo, hi)
            };
            let p = avg[lo..=hi].iter().sum::<f64>() / (hi - lo + 1) as f64;
            Some(10.0 * p.max(1e-30).log10())
        })
        .collect();
    Balance { bands_db }
}

/// Gaussian smoothing over log frequency (`sigma` octaves) of the points
/// that have a value.
fn smooth(pts: &[(f64, f64)], sigma: f64) -> Vec<(f64, f64)> {
    pts.iter()
        .map(|&(f, _)| {
            let (mut sw, mut s) = (0.0, 0.0);
            for &(g, v) in pts {
                let w = (-0.5 * ((f / g).log2() / sigma).powi(2)).exp();
                sw += w;
                s += w * v;
            }
            (f, s / sw)
        })
        .collect()
}

/// A curve given at points, read at `f` (linear in log frequency, held
/// beyond the ends).
fn interp(pts: &[(f64, f64)], f: f64) -> f64 {
    match pts.iter().position(|&(g, _)| g >= f) {
        None => pts.last().map_or(0.0, |p| p.1),
        Some(0) => pts[0].1,
        Some(i) => {
            let ((f0, a), (f1, b)) = (pts[i - 1], pts[i]);
            a + (b - a) * (f / f0).log2() / (f1 / f0).log2()
        }
    }
}

fn in_core(f: f64) -> bool {
    (CORE_HZ.0 * 0.99..=CORE_HZ.1 * 1.01).contains(&f)
}

/// What the mix lacks against the reference per third-octave band, after
/// `response` (dB at a frequency) is applied to it, with the mean over the
/// core region taken out (the level is matched elsewhere).
fn difference(
    mix: &Balance,
    reference: &Balance,
    response: impl Fn(f64) -> f64,
    rate: u32,
) -> Vec<(f64, f64)> {
    let d: Vec<(f64, f64)> = mix
        .bands_db
        .iter()
        .zip(&reference.bands_db)
        .zip(thirds_hz())
        .filter_map(|((m, r), f)| match (m, r) {
            (Some(m), Some(r)) if f * 2f64.powf(1.0 / 6.0) < 0.9 * rate as f64 / 2.0 => {
                Some((f, r - m - response(f)))
            }
            _ => None,
        })
        .collect();
    let core: Vec<f64> = d.iter().filter(|p| in_core(p.0)).map(|p| p.1).collect();
    if core.is_empty() {
        return Vec::new();
    }
    let offset = core.iter().sum::<f64>() / core.len() as f64;
    d.into_iter().map(|(f, v)| (f, v - offset)).collect()
}

/// How far the mix's tonal balance is from the reference's once `response`
/// is applied: the RMS over the core region's third-octave bands of the
/// difference, level taken out (dB). None when the bands cannot be compared.
pub fn distance_db(
    mix: &Balance,
    reference: &Balance,
    response: impl Fn(f64) -> f64,
    rate: u32,
) -> Option<f64> {
    core_rms(&difference(mix, reference, response, rate), |_| 0.0)
}

/// The RMS over the core region of a [`difference`] once `response` is
/// taken from it (its mean there taken out again): [`distance_db`] for
/// another response without measuring the difference again.
fn core_rms(diff: &[(f64, f64)], response: impl Fn(f64) -> f64) -> Option<f64> {
    let core: Vec<f64> = diff
        .iter()
        .filter(|p| in_core(p.0))
        .map(|&(f, v)| v - response(f))
        .collect();
    if core.is_empty() {
        return None;
    }
    let n = core.len() as f64;
    let mean = core.iter().sum::<f64>() / n;
    Some((core.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt())
}

/// The tonal balance to aim for, at the octave centres: the measured
/// difference smoothed over fractional octaves, as a limited tilt plus broad
/// moves, neighbouring octaves at most [`MAX_STEP_DB`] apart, each within
/// ±[`MAX_MATCH_DB`] and the whole within [`MAX_RMS_DB`] RMS.
fn target_curve(diff: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let s = smooth(diff, SMOOTH_OCT);
    // The tilt: a least-squares line over log frequency in the core region.
    let core: Vec<(f64, f64)> = s
        .iter()
        .filter(|p| in_core(p.0))
        .map(|&(f, v)| ((f / 1000.0).log2(), v))
        .collect();
    let n = core.len() as f64;
    let (mx, my) = (
        core.iter().map(|p| p.0).sum::<f64>() / n,
        core.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = core.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = core.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope =
        if sxx > 0.0 { sxy / sxx } else { 0.0 }.clamp(-MAX_TILT_DB_PER_OCT, MAX_TILT_DB_PER_OCT);
    let line = |f: f64| my + slope * ((f / 1000.0).log2() - mx);
    let resid: Vec<(f64, f64)> = s.iter().map(|&(f, v)| (f, v - line(f))).collect();
    let broad = smooth(&resid, BROAD_OCT);
    let lo = diff.first().map_or(0.0, |p| p.0);
    let hi = diff.last().map_or(0.0, |p| p.0);
    let mut want: Vec<(f64, f64)> = BANDS_HZ
        .iter()
        .filter(|&&f| f >= lo / 1.2 && f <= hi * 1.2)
        .map(|&f| (f, line(f) + interp(&broad, f)))
        .collect();
    limit_curve(&mut want);
    want
}

/// Holds a curve of octave gains to the step, per-band and total limits.
fn limit_curve(c: &mut [(f64, f64)]) {
    for _ in 0..100 {
        let mut moved = false;
        for i in 1..c.len() {
            let step = c[i].1 - c[i - 1].1;
            if step.abs() > MAX_STEP_DB + 1e-9 {
                // Both ends meet half way over the excess.
                let fix = 0.5 * (step - MAX_STEP_DB * step.signum());
                c[i].1 -= fix;
                c[i - 1].1 += fix;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    for p in c.iter_mut() {
        p.1 = p.1.clamp(-MAX_MATCH_DB, MAX_MATCH_DB);
    }
    let rms = (c.iter().map(|p| p.1 * p.1).sum::<f64>() / c.len().max(1) as f64).sqrt();
    if rms > MAX_RMS_DB {
        let k = MAX_RMS_DB / rms;
        c.iter_mut().for_each(|p| p.1 *= k);
    }
}

/// The matching EQ that moves `mix` towards `reference`'s tonal balance,
/// given the response (dB at a frequency) the chain's own EQ already adds:
/// octave peaking filters whose response follows [`target_curve`] (the
/// level is not matched, and what is matched is smoothed and limited).
pub fn match_eq(
    mix: &Balance,
    reference: &Balance,
    already: impl Fn(f64) -> f64,
    rate: u32,
) -> Vec<BandGain> {
    let diff = difference(mix, reference, already, rate);
    if diff.is_empty() {
        return Vec::new();
    }
    let want = target_curve(&diff);
    // Neighbouring filters overlap, and a band's level is its whole octave:
    // correct each band for what the cascade does across its octave, a few
    // times over.
    let mut bands: Vec<BandGain> = want
        .iter()
        .filter(|p| p.0 < 0.45 * rate as f64)
        .map(|&(freq_hz, gain_db)| BandGain { freq_hz, gain_db })
        .collect();
    for _ in 0..6 {
        let cascade = match_cascade(&bands, rate);
        for (b, &(f, w)) in bands.iter_mut().zip(&want) {
            let got = octave_response_db(&cascade, f, rate as f64);
            b.gain_db = (b.gain_db + 0.8 * (w - got)).clamp(-MAX_MATCH_DB, MAX_MATCH_DB);
        }
    }
    // The fit must not undo the smoothness it was given.
    let mut gains: Vec<(f64, f64)> = bands.iter().map(|b| (b.freq_hz, b.gain_db)).collect();
    limit_curve(&mut gains);
    bands
        .iter_mut()
        .zip(gains)
        .for_each(|(b, (_, g))| b.gain_db = g);
    // A smooth curve can miss a balance that is not smooth: take as much of
    // it as brings the track closest to the reference (none, if nothing does),
    // so the match never moves it further away.
    // Distances from the difference already measured (the chain's EQ in it).
    let distance =
        |b: &[BandGain]| core_rms(&diff, match_response(b, rate)).unwrap_or(f64::INFINITY);
    let start = (0..=20)
        .map(|i| {
            let k = i as f64 / 20.0;
            let scaled: Vec<BandGain> = bands
                .iter()
                .map(|b| BandGain {
                    freq_hz: b.freq_hz,
                    gain_db: b.gain_db * k,
                })
                .collect();
            let d = distance(&scaled);
            (scaled, d)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(b, _)| b)
        .unwrap_or_default();
    refine(start, distance)
}

/// How much a bend in the curve costs against the distance it gains (dB²
/// of distance per dB² of second difference): a tilt is free, a zigzag
/// that fits which notes are played is not.
const BEND_COST: f64 = 0.2;

/// Moves one band at a time, by shrinking steps, wherever that brings the
/// track closer to the reference (less [`BEND_COST`] for bending the curve)
/// and the curve stays within the limits of [`limit_curve`].
fn refine(mut bands: Vec<BandGain>, distance: impl Fn(&[BandGain]) -> f64) -> Vec<BandGain> {
    let cost = |b: &[BandGain]| {
        let bend: f64 = b
            .windows(3)
            .map(|w| (w[0].gain_db - 2.0 * w[1].gain_db + w[2].gain_db).powi(2))
            .sum();
        distance(b).powi(2) + BEND_COST * bend
    };
    let allowed = |b: &[BandGain]| {
        let rms = (b.iter().map(|x| x.gain_db.powi(2)).sum::<f64>() / b.len().max(1) as f64).sqrt();
        b.iter().all(|x| x.gain_db.abs() <= MAX_MATCH_DB)
            && b.windows(2)
                .all(|w| (w[1].gain_db - w[0].gain_db).abs() <= MAX_STEP_DB + 1e-9)
            && rms <= MAX_RMS_DB + 1e-9
    };
    let mut best = cost(&bands);
    for step in [1.0, 0.5, 0.25, 0.1] {
        for _ in 0..8 {
            let mut moved = false;
            for i in 0..bands.len() {
                for dir in [1.0, -1.0] {
                    let mut trial = bands.clone();
                    trial[i].gain_db += dir * step;
                    if !allowed(&trial) {
                        continue;
                    }
                    let c = cost(&trial);
                    if c < best - 1e-6 {
                        (bands, best, moved) = (trial, c, true);
                        break;
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
    bands
}

/// The matching EQ's response (dB at a frequency, averaged over the third
/// octave around it): what [`distance_db`] sees of it. The filters are
/// designed once.
pub fn match_response(bands: &[BandGain], rate: u32) -> impl Fn(f64) -> f64 {
    let cascade = match_cascade(bands, rate);
    let edge = 2f64.powf(1.0 / 6.0);
    move |f| band_response_db(&cascade, f / edge, f * edge, 8, rate as f64)
}

/// The matching EQ's response at the octave centres (octave-averaged, as
/// band levels are): the applied curve.
pub fn applied_curve(bands: &[BandGain], rate: u32) -> Vec<BandGain> {
    let cascade = match_cascade(bands, rate);
    bands
        .iter()
        .map(|b| BandGain {
            freq_hz: b.freq_hz,
            gain_db: octave_response_db(&cascade, b.freq_hz, rate as f64),
        })
        .collect()
}

/// A cascade's power gain over the octave around `fc` (points spaced evenly
/// in frequency, as the FFT bins that make up a band level are).
fn octave_response_db(cascade: &[Coeffs], fc: f64, rate: f64) -> f64 {
    let (lo, hi) = (fc / std::f64::consts::SQRT_2, fc * std::f64::consts::SQRT_2);
    band_response_db(cascade, lo, hi, 16, rate)
}

/// A cascade's mean power gain (dB) over `lo..hi`, from `n` points spaced
/// evenly in frequency.
fn band_response_db(cascade: &[Coeffs], lo: f64, hi: f64, n: usize, rate: f64) -> f64 {
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

    fn steps(curve: &[BandGain]) -> f64 {
        curve
            .windows(2)
            .map(|w| (w[1].gain_db - w[0].gain_db).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn a_track_matched_to_itself_needs_nothing() {
        let a = noise(44_100, 20.0, 1);
        let b = balance(&a);
        let eq = match_eq(&b, &b, |_| 0.0, 44_100);
        assert!(eq.iter().all(|g| g.gain_db.abs() < 1e-9), "{eq:?}");
        assert!(distance_db(&b, &b, |_| 0.0, 44_100).unwrap() < 1e-9);
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
        let (m, r) = (balance(&mix), balance(&reference));
        assert_eq!(
            r.bands_db.last().copied().flatten(),
            None,
            "20 kHz is too close to Nyquist at 48 kHz"
        );
        let eq = match_eq(&m, &r, |_| 0.0, rate);
        let matched = balance(&filtered(mix.clone(), &match_cascade(&eq, rate)));
        let before = distance_db(&m, &r, |_| 0.0, rate).unwrap();
        let measured = distance_db(&matched, &r, |_| 0.0, rate).unwrap();
        let predicted = distance_db(&m, &r, match_response(&eq, rate), rate).unwrap();
        assert!(before > 1.2, "the tilt was there: {before:.2} dB");
        assert!(
            measured < 0.35 * before,
            "{before:.2} dB from the reference before, {measured:.2} after"
        );
        assert!(
            (measured - predicted).abs() < 0.3,
            "the report's figure ({predicted:.2}) is what the filters do ({measured:.2})"
        );
        assert!(steps(&applied_curve(&eq, rate)) <= 2.5, "{eq:?}");
        // A 12 dB shelf is followed as far as the limits let it.
        let harsh = filtered(
            noise(rate, 20.0, 4),
            &[Coeffs::high_shelf(6000.0, 12.0, rate as f64)],
        );
        let eq = match_eq(&m, &balance(&harsh), |_| 0.0, rate);
        assert!(eq.iter().all(|g| g.gain_db.abs() <= MAX_MATCH_DB), "{eq:?}");
        assert!(eq.last().unwrap().gain_db >= 2.5, "{eq:?}");
        let rms = (eq.iter().map(|g| g.gain_db.powi(2)).sum::<f64>() / eq.len() as f64).sqrt();
        assert!(rms <= MAX_RMS_DB + 1e-9, "{rms}");
        assert!(steps(&applied_curve(&eq, rate)) <= 2.5, "{eq:?}");
    }

    #[test]
    fn a_reference_that_zigzags_by_octave_gets_a_smooth_curve() {
        // Octaves alternately 6 dB up and down: the notes an arrangement
        // plays, not a tonal balance. The match stays smooth and small, and
        // still brings the balance no further away.
        let rate = 44_100;
        let mix = noise(rate, 20.0, 5);
        let zig: Vec<Coeffs> = BANDS_HZ[1..9]
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let g = if i % 2 == 0 { 6.0 } else { -6.0 };
                Coeffs::peaking(f, g, 2.0, rate as f64)
            })
            .collect();
        let reference = filtered(noise(rate, 20.0, 6), &zig);
        let (m, r) = (balance(&mix), balance(&reference));
        let eq = match_eq(&m, &r, |_| 0.0, rate);
        let applied = applied_curve(&eq, rate);
        assert!(steps(&applied) <= 2.5, "{applied:?}");
        assert!(steps(&eq) <= MAX_STEP_DB + 1e-9, "{eq:?}");
        // Between the zigzag's ends (where its last octave is a real dip),
        // nothing is moved by as much as a dB, and the curve does not bend
        // with the octaves.
        let core: Vec<f64> = eq
            .iter()
            .filter(|g| (125.0..=4000.0).contains(&g.freq_hz))
            .map(|g| g.gain_db)
            .collect();
        assert!(core.iter().all(|g| g.abs() < 1.0), "{eq:?}");
        assert!(
            core.windows(3)
                .all(|w| (w[0] - 2.0 * w[1] + w[2]).abs() < 1.0),
            "{eq:?}"
        );
        let before = distance_db(&m, &r, |_| 0.0, rate).unwrap();
        let after = distance_db(&m, &r, match_response(&eq, rate), rate).unwrap();
        assert!(before > 3.0 && after <= before, "{before:.2} -> {after:.2}");
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
