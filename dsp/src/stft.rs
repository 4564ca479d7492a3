//! Short-time spectra of a track's mid signal (the channels' mean), Hann
//! windowed: the analysis frames of the beat tracker and reference matching.

use crate::Audio;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

pub struct MidStft {
    n: usize,
    hop: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl MidStft {
    /// Frames `n` long, one every `hop` frames.
    pub fn new(n: usize, hop: usize) -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let window = (0..n)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32)
            .collect();
        Self {
            n,
            hop,
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            window,
        }
    }

    /// Whole frames in `audio` (a shorter track gets one, zero-padded).
    pub fn frames(&self, audio: &Audio) -> usize {
        if audio.frames() <= self.n {
            usize::from(audio.frames() > 0)
        } else {
            (audio.frames() - self.n) / self.hop + 1
        }
    }

    /// Loads frame `k`, windowed; returns its energy.
    pub fn load(&mut self, audio: &Audio, k: usize) -> f64 {
        let start = k * self.hop;
        let nch = audio.num_channels() as f32;
        let mut energy = 0f64;
        for (i, v) in self.input.iter_mut().enumerate() {
            let t = start + i;
            *v = if t < audio.frames() {
                self.window[i] * audio.channels.iter().map(|c| c[t]).sum::<f32>() / nch
            } else {
                0.0
            };
            energy += (*v as f64).powi(2);
        }
        energy
    }

    /// The loaded frame's spectrum (n / 2 + 1 bins).
    pub fn spectrum(&mut self) -> &[Complex<f32>] {
        self.fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
            .expect("buffers sized by the planner");
        &self.spectrum
    }
}
