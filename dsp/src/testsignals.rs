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
    let mut band = Band::new(seed, beat, bar);
    let mut bounds = Vec::new();
    let mut bar0 = 0usize;
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
            let (sl, sr) = band.frame(sec, t);
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

/// A minor-key progression (roots in Hz), one chord a bar: Am, F, C, G.
const CHORDS: [[f64; 3]; 4] = [
    [220.0, 261.63, 329.63],
    [174.61, 220.0, 261.63],
    [261.63, 329.63, 392.0],
    [196.0, 246.94, 293.66],
];

/// The players of [`song_at`]. The snare and the hats draw on one noise
/// generator in frame order (and the hats keep a filter's state), so frames
/// are played in order, by one of these, for a song to be repeatable.
struct Band {
    noise: Noise,
    /// One-pole low-pass state; the hats are the noise minus it.
    hat_lp: f64,
    beat: f64,
    bar: f64,
}

impl Band {
    fn new(seed: u64, beat: f64, bar: f64) -> Self {
        Self {
            noise: Noise::new(seed),
            hat_lp: 0.0,
            beat,
            bar,
        }
    }

    /// The frame at `t` seconds into the music (pre-gain, left and right).
    /// The parts are summed in one fixed order, so a song's samples stay the
    /// same to the bit.
    fn frame(&mut self, sec: &SongSection, t: f64) -> (f64, f64) {
        let chord = CHORDS[(t / self.bar) as usize % 4];
        let tb = t % self.beat; // time within the beat
        let beat_idx = ((t / self.beat) as usize) % 4;
        let (pl, pr) = pad(&chord, t);
        let (mut sl, mut sr) = (0.08 * pl, 0.08 * pr);
        if sec.bass {
            let b = bass(&chord, t, tb);
            sl += b;
            sr += b;
        }
        if sec.drums {
            let d = self.drum(tb, beat_idx);
            sl += d;
            sr += d;
        }
        if sec.hats {
            let h = self.hat(t);
            sl += 0.7 * h;
            sr += h;
        }
        (sl, sr)
    }

    /// Kick on beats 1 and 3, a noise snare on 2 and 4.
    fn drum(&mut self, tb: f64, beat_idx: usize) -> f64 {
        if beat_idx.is_multiple_of(2) {
            // Kick: falling pitch, fast decay.
            let ph = 2.0 * PI * (50.0 * tb + 60.0 * (1.0 - (-tb * 30.0).exp()) / 30.0);
            0.6 * (-tb * 12.0).exp() * ph.sin()
        } else {
            0.25 * (-tb * 20.0).exp() * self.noise.sample()
        }
    }

    /// High-passed noise on every half beat (left is played 0.7 of it).
    fn hat(&mut self, t: f64) -> f64 {
        let th = t % (self.beat / 2.0);
        let x = self.noise.sample();
        self.hat_lp = 0.5 * self.hat_lp + 0.5 * x;
        0.12 * (-th * 60.0).exp() * (x - self.hat_lp)
    }
}

/// The chord as a pad, detuned per side for width (unscaled sums).
fn pad(chord: &[f64; 3], t: f64) -> (f64, f64) {
    let (mut pl, mut pr) = (0.0, 0.0);
    for (k, &f) in chord.iter().enumerate() {
        pl += (2.0 * PI * f * 1.002 * t + k as f64).sin();
        pr += (2.0 * PI * f * 0.998 * t + 2.0 * k as f64).sin();
    }
    (pl, pr)
}

/// The chord's root two octaves down, plucked on every beat.
fn bass(chord: &[f64; 3], t: f64, tb: f64) -> f64 {
    let f = chord[0] / 4.0;
    let env = (-tb * 3.0).exp();
    0.25 * env * ((2.0 * PI * f * t).sin() + 0.3 * (4.0 * PI * f * t).sin())
}
