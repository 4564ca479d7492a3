//! Short-time spectra of a track's mid signal (the channels' mean), Hann
//! windowed: the analysis frames of the beat tracker and reference matching.

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

    /// Loads a frame of the mid signal (zero-padded if shorter), windowed;
    /// returns its energy.
    pub fn load(&mut self, mid: &[f32]) -> f64 {
        let mut energy = 0f64;
        for (i, v) in self.input.iter_mut().enumerate() {
            *v = mid.get(i).map_or(0.0, |m| self.window[i] * m);
            energy += (*v as f64).powi(2);
        }
        energy
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn hop(&self) -> usize {
        self.hop
    }

    /// The loaded frame's spectrum (n / 2 + 1 bins).
    pub fn spectrum(&mut self) -> &[Complex<f32>] {
        self.fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
            .expect("buffers sized by the planner");
        &self.spectrum
    }
}

/// Cuts a stream of audio blocks into overlapping frames of its mid signal:
/// frames `n` long every `hop`, the whole frames only (a stream shorter than
/// one frame gets one, zero-padded).
pub struct MidFrames {
    n: usize,
    hop: usize,
    buf: Vec<f32>,
    emitted: usize,
}

impl MidFrames {
    pub fn new(n: usize, hop: usize) -> Self {
        Self {
            n,
            hop,
            buf: Vec::new(),
            emitted: 0,
        }
    }

    /// Adds a block; calls `frame` with each frame it completes.
    pub fn push(&mut self, block: &[&[f32]], mut frame: impl FnMut(&[f32])) {
        let nch = block.len() as f32;
        let len = block.first().map_or(0, |c| c.len());
        self.buf
            .extend((0..len).map(|i| block.iter().map(|c| c[i]).sum::<f32>() / nch));
        let mut start = 0;
        while self.buf.len() - start >= self.n {
            frame(&self.buf[start..start + self.n]);
            self.emitted += 1;
            start += self.hop;
        }
        self.buf.drain(..start);
    }

    /// The zero-padded frame of a stream shorter than one frame.
    pub fn finish(&mut self, mut frame: impl FnMut(&[f32])) {
        if self.emitted == 0 && !self.buf.is_empty() {
            frame(&self.buf);
            self.emitted += 1;
        }
    }
}
