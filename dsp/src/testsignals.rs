//! Signals with known properties: EBU Tech 3341 / 3342 test cases and a
//! synthetic multi-section song. Used by tests, the demo and benchmarks.

use crate::{db_to_lin, Audio};
use std::f64::consts::PI;

/// A stereo sine at `freq`, peak level `dbfs`, on both channels.
pub fn sine(rate: u32, seconds: f64, freq: f64, dbfs: f64, phase: f64) -> Audio {
    let n = (seconds * rate as f64).round() as usize;
    let a = db_to_lin(dbfs);
    let ch: Vec<f32> = (0..n)
        .map(|i| (a * (2.0 * PI * freq * i as f64 / rate as f64 + phase).sin()) as f32)
        .collect();
    Audio::new(rate, vec![ch.clone(), ch]).expect("equal channels")
}

/// Concatenates steps of (seconds, dBFS) of a 1 kHz stereo sine.
pub fn stepped_sine(rate: u32, freq: f64, steps: &[(f64, f64)]) -> Audio {
    let mut ch = Vec::new();
    let mut t0 = 0usize;
    for &(secs, dbfs) in steps {
        let n = (secs * rate as f64).round() as usize;
        let a = db_to_lin(dbfs);
        ch.extend(
            (t0..t0 + n).map(|i| (a * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as f32),
        );
        t0 += n;
    }
    Audio::new(rate, vec![ch.clone(), ch]).expect("equal channels")
}

/// Small deterministic PRNG (xorshift) for noise.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    /// Uniform in [-1, 1).
    pub fn sample(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// One section of a synthetic song.
#[derive(Clone, Debug)]
pub struct SongSection {
    pub label: &'static str,
    pub bars: usize,
    /// Overall level of the section in dB (0 = loudest).
    pub level_db: f64,
    pub drums: bool,
    pub bass: bool,
    pub hats: bool,
}

impl SongSection {
    pub fn new(
        label: &'static str,
        bars: usize,
        level_db: f64,
        drums: bool,
        bass: bool,
        hats: bool,
    ) -> Self {
        Self {
            label,
            bars,
            level_db,
            drums,
            bass,
            hats,
        }
    }
}

/// The demo arrangement: quiet intro, verse, loud chorus, breakdown, chorus, outro.
pub fn demo_arrangement() -> Vec<SongSection> {
    let s = SongSection::new;
    vec![
        s("Intro", 4, -14.0, false, false, false),
        s("Verse", 8, -7.0, true, true, false),
        s("Chorus", 8, 0.0, true, true, true),
        s("Bridge", 4, -10.0, false, true, false),
        s("Chorus", 8, 0.0, true, true, true),
        s("Outro", 4, -14.0, false, false, false),
    ]
}

/// A pop arrangement: intro, verse, chorus twice, bridge, a last chorus, outro.
pub fn pop_arrangement() -> Vec<SongSection> {
    let s = SongSection::new;
    vec![
        s("Intro", 4, -14.0, false, false, false),
        s("Verse", 8, -7.0, true, true, false),
        s("Chorus", 8, 0.0, true, true, true),
        s("Verse", 8, -7.0, true, true, false),
        s("Chorus", 8, 0.0, true, true, true),
        s("Bridge", 4, -10.0, false, true, false),
        s("Chorus", 8, 0.0, true, true, true),
        s("Outro", 4, -14.0, false, false, false),
    ]
}

/// A crescendo over `start..end` seconds: the audio there rises from
/// `rise_db` under its level to its level (a ramp in dB).
pub fn crescendo(audio: &mut Audio, start: f64, end: f64, rise_db: f64) {
    let rate = audio.rate as f64;
    for c in &mut audio.channels {
        for (i, x) in c.iter_mut().enumerate() {
            let t = i as f64 / rate;
            if (start..end).contains(&t) {
                *x *= db_to_lin(-rise_db * (end - t) / (end - start)) as f32;
            }
        }
    }
}

/// Renders a stereo song at 120 BPM: pad chords, bass, kick, snare, hats.
/// Returns the audio and each section's (label, start s, end s).
pub fn song(rate: u32, sections: &[SongSection], seed: u64) -> (Audio, Vec<(String, f64, f64)>) {
    song_at(rate, sections, seed, 120.0, 0.0)
}

/// The same at `bpm`, after `lead_in` seconds of silence (counted in the
/// first section): boundaries off any round-number grid.
pub fn song_at(
    rate: u32,
    sections: &[SongSection],
    seed: u64,
    bpm: f64,
    lead_in: f64,
) -> (Audio, Vec<(String, f64, f64)>) {
    let fs = rate as f64;
    let beat = 60.0 / bpm;
    let bar = 4.0 * beat;
    let total_bars: usize = sections.iter().map(|s| s.bars).sum();
    let n = ((total_bars as f64 * bar + lead_in) * fs) as usize;
    let (mut l, mut r) = (vec![0f32; n], vec![0f32; n]);
    let mut noise = Noise::new(seed);
    // A minor-key progression (roots in Hz): Am, F, C, G.
    let chords: [[f64; 3]; 4] = [
        [220.0, 261.63, 329.63],
        [174.61, 220.0, 261.63],
        [261.63, 329.63, 392.0],
        [196.0, 246.94, 293.66],
    ];
    let mut bounds = Vec::new();
    let mut bar0 = 0usize;
    let mut lp = 0f64; // one-pole state for hats
    for sec in sections {
        let start = bar0 as f64 * bar + lead_in;
        let end = (bar0 + sec.bars) as f64 * bar + lead_in;
        bounds.push((
            sec.label.to_string(),
            if bar0 == 0 { 0.0 } else { start },
            end,
        ));
        let gain = db_to_lin(sec.level_db);
        let (i0, i1) = ((start * fs) as usize, ((end * fs) as usize).min(n));
        for i in i0..i1 {
            let t = i as f64 / fs - lead_in;
            let bar_idx = (t / bar) as usize;
            let chord = chords[bar_idx % 4];
            let tb = t % beat; // time within the beat
            let beat_idx = ((t / beat) as usize) % 4;
            // Pad: detuned per side for width.
            let (mut pl, mut pr) = (0.0, 0.0);
            for (k, &f) in chord.iter().enumerate() {
                pl += (2.0 * PI * f * 1.002 * t + k as f64).sin();
                pr += (2.0 * PI * f * 0.998 * t + 2.0 * k as f64).sin();
            }
            let (mut sl, mut sr) = (0.08 * pl, 0.08 * pr);
            if sec.bass {
                let f = chord[0] / 4.0;
                let env = (-tb * 3.0).exp();
                let b = 0.25 * env * ((2.0 * PI * f * t).sin() + 0.3 * (4.0 * PI * f * t).sin());
                sl += b;
                sr += b;
            }
            if sec.drums {
                if beat_idx.is_multiple_of(2) {
                    // Kick: falling pitch, fast decay.
                    let ph = 2.0 * PI * (50.0 * tb + 60.0 * (1.0 - (-tb * 30.0).exp()) / 30.0);
                    let k = 0.6 * (-tb * 12.0).exp() * ph.sin();
                    sl += k;
                    sr += k;
                } else {
                    let s = 0.25 * (-tb * 20.0).exp() * noise.sample();
                    sl += s;
                    sr += s;
                }
            }
            if sec.hats {
                let th = t % (beat / 2.0);
                let x = noise.sample();
                lp = 0.5 * lp + 0.5 * x;
                let h = 0.12 * (-th * 60.0).exp() * (x - lp);
                sl += 0.7 * h;
                sr += h;
            }
            l[i] = (gain * sl * 0.5) as f32;
            r[i] = (gain * sr * 0.5) as f32;
        }
        bar0 += sec.bars;
    }
    (
        Audio::new(rate, vec![l, r]).expect("equal channels"),
        bounds,
    )
}
