//! The chain's tonal stage: DC-blocking high-pass, low shelf, mid bell, high
//! shelf, and an optional low-pass for band-limited modes.

use crate::automation::{Automation, BLOCK};
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

    /// With the low, mid and high gains following `bands`: coefficients are
    /// redesigned per control block only while a gain moves.
    pub fn apply_automated(&self, audio: &mut Audio, bands: &[Automation; 3]) {
        let (rate, frames) = (audio.rate, audio.frames());
        let mut current = [f64::NAN; 3];
        let mut coeffs = Vec::new();
        let mut states: Vec<Vec<State>> = Vec::new();
        let mut bands = bands.each_ref().map(Automation::cursor);
        let blocks = frames.div_ceil(BLOCK);
        let mut b = 0;
        while b < blocks {
            let want = bands.each_mut().map(|a| a.at_block(b, rate));
            if want != current {
                current = want;
                let eq = EqSettings {
                    low: want[0],
                    mid: want[1],
                    high: want[2],
                    ..self.clone()
                };
                coeffs = eq.cascade(rate, true);
                states.resize(audio.num_channels(), vec![State::default(); coeffs.len()]);
            }
            // Every following block with the same gains in one run.
            let mut end = b + 1;
            while end < blocks && bands.each_mut().map(|a| a.at_block(end, rate)) == current {
                end += 1;
            }
            let range = b * BLOCK..(end * BLOCK).min(frames);
            run_cascade_all(&coeffs, &mut states, &mut audio.channels, range);
            b = end;
        }
    }
}
