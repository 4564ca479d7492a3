//! The chain's tonal stage: DC-blocking high-pass, low shelf, mid bell, high
//! shelf, and an optional low-pass for band-limited modes.

use crate::automation::{Automation, Cursor, BLOCK};
use crate::biquad::{run_cascade_all, run_cascade_audio, Coeffs, State};
use crate::Audio;
use serde::{Deserialize, Serialize};

/// Gains in dB; corner frequencies in Hz.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EqSettings {
    pub low: f64,
    pub mid: f64,
    pub high: f64,
    pub low_freq_hz: f64,
    pub mid_freq_hz: f64,
    pub mid_q: f64,
    pub high_freq_hz: f64,
    /// The DC-blocking / rumble high-pass (2nd-order Butterworth).
    pub highpass_hz: f64,
    /// Band limit for Lo-Fi; None keeps the full band.
    pub lowpass_hz: Option<f64>,
}

impl Default for EqSettings {
    fn default() -> Self {
        Self {
            low: 0.0,
            mid: 0.0,
            high: 0.0,
            low_freq_hz: 110.0,
            mid_freq_hz: 1000.0,
            mid_q: 0.7,
            high_freq_hz: 8000.0,
            highpass_hz: 15.0,
            lowpass_hz: None,
        }
    }
}

impl EqSettings {
    /// The cascade at a sample rate; flat bands are left out.
    pub fn sections(&self, rate: u32) -> Vec<Coeffs> {
        self.cascade(rate, false)
    }

    /// With `keep_flat`, every band is in the cascade even at 0 dB, so its
    /// shape (and filter state) stays the same while gains move.
    fn cascade(&self, rate: u32, keep_flat: bool) -> Vec<Coeffs> {
        let fs = rate as f64;
        let nyq = fs / 2.0;
        let mut v = vec![Coeffs::highpass(
            self.highpass_hz,
            std::f64::consts::FRAC_1_SQRT_2,
            fs,
        )];
        if self.low != 0.0 || keep_flat {
            v.push(Coeffs::low_shelf(self.low_freq_hz, self.low, fs));
        }
        if self.mid != 0.0 || keep_flat {
            v.push(Coeffs::peaking(self.mid_freq_hz, self.mid, self.mid_q, fs));
        }
        // Corners above Nyquist make no sense at low rates: clamp them.
        if self.high != 0.0 || keep_flat {
            v.push(Coeffs::high_shelf(
                self.high_freq_hz.min(nyq * 0.8),
                self.high,
                fs,
            ));
        }
        if let Some(lp) = self.lowpass_hz {
            if lp < nyq * 0.95 {
                v.push(Coeffs::lowpass(lp, std::f64::consts::FRAC_1_SQRT_2, fs));
            }
        }
        v
    }

    pub fn apply(&self, audio: &mut Audio) {
        run_cascade_audio(&self.sections(audio.rate), audio);
    }
}

/// The EQ as a stage: static where no band moves; otherwise with the low,
/// mid and high gains following their automation, coefficients redesigned
/// per control block only while a gain moves.
pub struct EqStage {
    eq: EqSettings,
    rate: u32,
    /// None when static.
    bands: Option<[Cursor<'static>; 3]>,
    current: [f64; 3],
    coeffs: Vec<Coeffs>,
    states: Vec<Vec<State>>,
    pos: usize,
}

impl EqStage {
    pub fn new(eq: &EqSettings, bands: [Automation; 3], rate: u32, channels: usize) -> Self {
        let constant = bands.iter().all(Automation::is_constant);
        let (coeffs, bands) = if constant {
            let fixed = EqSettings {
                low: bands[0].first(),
                mid: bands[1].first(),
                high: bands[2].first(),
                ..eq.clone()
            };
            (fixed.sections(rate), None)
        } else {
            (Vec::new(), Some(bands.map(Automation::into_cursor)))
        };
        Self {
            eq: eq.clone(),
            rate,
            bands,
            current: [f64::NAN; 3],
            states: vec![vec![State::default(); coeffs.len()]; channels],
            coeffs,
            pos: 0,
        }
    }
}

impl crate::stage::Stage for EqStage {
    fn process(&mut self, block: &mut [Vec<f32>]) {
        let frames = crate::stage::frames(block);
        let Some(bands) = &mut self.bands else {
            run_cascade_all(&self.coeffs, &mut self.states, block, 0..frames);
            self.pos += frames;
            return;
        };
        debug_assert!(self.pos.is_multiple_of(BLOCK));
        let (rate, first) = (self.rate, self.pos / BLOCK);
        let blocks = frames.div_ceil(BLOCK);
        let mut b = 0;
        while b < blocks {
            let want = bands.each_mut().map(|a| a.at_block(first + b, rate));
            if want != self.current {
                self.current = want;
                let eq = EqSettings {
                    low: want[0],
                    mid: want[1],
                    high: want[2],
                    ..self.eq.clone()
                };
                self.coeffs = eq.cascade(rate, true);
                for s in &mut self.states {
                    s.resize(self.coeffs.len(), State::default());
                }
            }
            // Every following block with the same gains in one run.
            let mut end = b + 1;
            while end < blocks
                && bands.each_mut().map(|a| a.at_block(first + end, rate)) == self.current
            {
                end += 1;
            }
            let range = b * BLOCK..(end * BLOCK).min(frames);
            run_cascade_all(&self.coeffs, &mut self.states, block, range);
            b = end;
        }
        self.pos += frames;
    }
}
