//! Second-order IIR sections with the Audio EQ Cookbook (RBJ) designs.
//! Coefficients and state are f64: low-frequency shelves in f32 drift audibly.

use std::f64::consts::PI;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coeffs {
    pub b0: f64,
    pub b1: f64,
    pub b2: f64,
    pub a1: f64,
    pub a2: f64,
}

impl Coeffs {
    fn norm(b0: f64, b1: f64, b2: f64, a0: f64, a1: f64, a2: f64) -> Self {
        Self {
            b0: b0 / a0,
            b1: b1 / a0,
            b2: b2 / a0,
            a1: a1 / a0,
            a2: a2 / a0,
        }
    }

    fn w0(freq: f64, rate: f64) -> (f64, f64) {
        let w0 = 2.0 * PI * freq / rate;
        (w0.cos(), w0.sin())
    }

    pub fn highpass(freq: f64, q: f64, rate: f64) -> Self {
        let (c, s) = Self::w0(freq, rate);
        let alpha = s / (2.0 * q);
        Self::norm(
            (1.0 + c) / 2.0,
            -(1.0 + c),
            (1.0 + c) / 2.0,
            1.0 + alpha,
            -2.0 * c,
            1.0 - alpha,
        )
    }

    pub fn lowpass(freq: f64, q: f64, rate: f64) -> Self {
        let (c, s) = Self::w0(freq, rate);
        let alpha = s / (2.0 * q);
        Self::norm(
            (1.0 - c) / 2.0,
            1.0 - c,
            (1.0 - c) / 2.0,
            1.0 + alpha,
            -2.0 * c,
            1.0 - alpha,
        )
    }

    pub fn peaking(freq: f64, gain_db: f64, q: f64, rate: f64) -> Self {
        let a = 10f64.powf(gain_db / 40.0);
        let (c, s) = Self::w0(freq, rate);
        let alpha = s / (2.0 * q);
        Self::norm(
            1.0 + alpha * a,
            -2.0 * c,
            1.0 - alpha * a,
            1.0 + alpha / a,
            -2.0 * c,
            1.0 - alpha / a,
        )
    }

    /// Shelf slope S = 1 (the steepest without overshoot).
    pub fn low_shelf(freq: f64, gain_db: f64, rate: f64) -> Self {
        let a = 10f64.powf(gain_db / 40.0);
        let (c, s) = Self::w0(freq, rate);
        let alpha = s / 2.0 * 2f64.sqrt();
        let sq = 2.0 * a.sqrt() * alpha;
        Self::norm(
            a * ((a + 1.0) - (a - 1.0) * c + sq),
            2.0 * a * ((a - 1.0) - (a + 1.0) * c),
            a * ((a + 1.0) - (a - 1.0) * c - sq),
            (a + 1.0) + (a - 1.0) * c + sq,
            -2.0 * ((a - 1.0) + (a + 1.0) * c),
            (a + 1.0) + (a - 1.0) * c - sq,
        )
    }

    pub fn high_shelf(freq: f64, gain_db: f64, rate: f64) -> Self {
        let a = 10f64.powf(gain_db / 40.0);
        let (c, s) = Self::w0(freq, rate);
        let alpha = s / 2.0 * 2f64.sqrt();
        let sq = 2.0 * a.sqrt() * alpha;
        Self::norm(
            a * ((a + 1.0) + (a - 1.0) * c + sq),
            -2.0 * a * ((a - 1.0) + (a + 1.0) * c),
            a * ((a + 1.0) + (a - 1.0) * c - sq),
            (a + 1.0) - (a - 1.0) * c + sq,
            2.0 * ((a - 1.0) - (a + 1.0) * c),
            (a + 1.0) - (a - 1.0) * c - sq,
        )
    }

    /// Magnitude response in dB at `freq`, evaluated from the coefficients.
    pub fn magnitude_db(&self, freq: f64, rate: f64) -> f64 {
        let w = 2.0 * PI * freq / rate;
        let (c1, s1, c2, s2) = (w.cos(), w.sin(), (2.0 * w).cos(), (2.0 * w).sin());
        let nr = self.b0 + self.b1 * c1 + self.b2 * c2;
        let ni = -(self.b1 * s1 + self.b2 * s2);
        let dr = 1.0 + self.a1 * c1 + self.a2 * c2;
        let di = -(self.a1 * s1 + self.a2 * s2);
        10.0 * ((nr * nr + ni * ni) / (dr * dr + di * di)).log10()
    }
}

/// One biquad's state (transposed direct form II).
#[derive(Clone, Copy, Debug, Default)]
pub struct State {
    z1: f64,
    z2: f64,
}

impl State {
    #[inline]
    pub fn tick(&mut self, k: &Coeffs, x: f64) -> f64 {
        let y = k.b0 * x + self.z1;
        self.z1 = k.b1 * x - k.a1 * y + self.z2;
        self.z2 = k.b2 * x - k.a2 * y;
        y
    }
}

/// Runs a cascade over frames `range` of every channel, each continuing
/// from its own states. Stereo in lockstep: a biquad waits on its own
/// feedback every sample, and two independent channels fill that wait.
pub fn run_cascade_all(
    sections: &[Coeffs],
    states: &mut [Vec<State>],
    channels: &mut [Vec<f32>],
    range: std::ops::Range<usize>,
) {
    if let ([l, r], [sl, sr]) = (&mut *channels, &mut *states) {
        for (a, b) in l[range.clone()].iter_mut().zip(&mut r[range]) {
            let (mut x, mut y) = (*a as f64, *b as f64);
            for ((k, s1), s2) in sections.iter().zip(sl.iter_mut()).zip(sr.iter_mut()) {
                x = s1.tick(k, x);
                y = s2.tick(k, y);
            }
            *a = x as f32;
            *b = y as f32;
        }
        return;
    }
    for (c, st) in channels.iter_mut().zip(states.iter_mut()) {
        run_cascade_with(sections, st, &mut c[range.clone()]);
    }
}

/// Runs a cascade over every channel of `audio` from rest, in place.
pub fn run_cascade_audio(sections: &[Coeffs], audio: &mut crate::Audio) {
    let mut states = vec![vec![State::default(); sections.len()]; audio.num_channels()];
    let frames = audio.frames();
    run_cascade_all(sections, &mut states, &mut audio.channels, 0..frames);
}

/// Runs a cascade of sections over one channel, in place.
pub fn run_cascade(sections: &[Coeffs], samples: &mut [f32]) {
    let mut states = vec![State::default(); sections.len()];
    run_cascade_with(sections, &mut states, samples);
}

/// The same, continuing from (and updating) `states`: a signal processed in
/// pieces, whose coefficients may change between pieces.
pub fn run_cascade_with(sections: &[Coeffs], states: &mut [State], samples: &mut [f32]) {
    for s in samples.iter_mut() {
        let mut v = *s as f64;
        for (k, st) in sections.iter().zip(states.iter_mut()) {
            v = st.tick(k, v);
        }
        *s = v as f32;
    }
}

/// A fixed cascade as a stage: every channel through the same sections,
/// each with its own state.
pub struct CascadeStage {
    coeffs: Vec<Coeffs>,
    states: Vec<Vec<State>>,
}

impl CascadeStage {
    pub fn new(coeffs: Vec<Coeffs>, channels: usize) -> Self {
        Self {
            states: vec![vec![State::default(); coeffs.len()]; channels],
            coeffs,
        }
    }
}

impl crate::stage::Stage for CascadeStage {
    fn process(&mut self, block: &mut [Vec<f32>]) {
        let frames = crate::stage::frames(block);
        run_cascade_all(&self.coeffs, &mut self.states, block, 0..frames);
    }
}
