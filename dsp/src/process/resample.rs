//! Sample-rate conversion with rubato's synchronous FFT resampler: fixed
//! ratios (48k -> 44.1k for CD, say) with a Blackman-Harris anti-alias filter.
//! [`ResampleStage`] streams; the output is trimmed of the resampler's delay
//! and ends where the input's duration does.

use crate::{Audio, DspError};
use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Input frames the resampler takes at a time.
const CHUNK: usize = 4096;

pub fn resample(audio: &Audio, rate: u32) -> Result<Audio, DspError> {
    if rate == audio.rate {
        return Ok(audio.clone());
    }
    let mut stage = ResampleStage::new(audio.rate, rate, audio.num_channels())?;
    let mut out = vec![Vec::new(); audio.num_channels()];
    stage.push(&audio.channels, &mut out)?;
    stage.finish(&mut out)?;
    Audio::new(rate, out)
}

fn err(e: &dyn std::fmt::Display) -> DspError {
    DspError::Resample(e.to_string())
}

/// Resampling in blocks: what each block makes is appended to `out`.
pub struct ResampleStage {
    r: Fft<f32>,
    from: u32,
    to: u32,
    /// Input not yet resampled (less than a chunk between calls).
    pending: Vec<Vec<f32>>,
    buf: Vec<Vec<f32>>,
    /// Output frames still to drop (the resampler's delay).
    trim: usize,
    frames_in: u64,
    frames_out: u64,
}

impl ResampleStage {
    pub fn new(from: u32, to: u32, channels: usize) -> Result<Self, DspError> {
        let r = Fft::<f32>::new(
            from as usize,
            to as usize,
            CHUNK,
            channels,
            FixedSync::Input,
        )
        .map_err(|e| err(&e))?;
        Ok(Self {
            trim: r.output_delay(),
            buf: vec![vec![0f32; r.output_frames_max()]; channels],
            pending: vec![Vec::new(); channels],
            r,
            from,
            to,
            frames_in: 0,
            frames_out: 0,
        })
    }

    pub fn push(&mut self, block: &[Vec<f32>], out: &mut [Vec<f32>]) -> Result<(), DspError> {
        for (p, c) in self.pending.iter_mut().zip(block) {
            p.extend_from_slice(c);
        }
        self.frames_in += crate::stage::frames(block) as u64;
        let need = self.r.input_frames_next();
        let mut used = 0;
        while self.pending[0].len() - used >= need {
            self.run(used, None, out, u64::MAX)?;
            used += need;
        }
        self.pending.iter_mut().for_each(|p| {
            p.drain(..used);
        });
        Ok(())
    }

    /// Resamples what is left and pads with silence until the output is as
    /// long as the input's duration at the new rate.
    pub fn finish(&mut self, out: &mut [Vec<f32>]) -> Result<(), DspError> {
        let want = (self.frames_in * self.to as u64).div_ceil(self.from as u64);
        let left = self.pending[0].len();
        if left > 0 {
            self.run(0, Some(left), out, want)?;
        }
        while self.frames_out < want {
            self.run(0, Some(0), out, want)?;
        }
        Ok(())
    }

    fn run(
        &mut self,
        offset: usize,
        partial: Option<usize>,
        out: &mut [Vec<f32>],
        cap: u64,
    ) -> Result<(), DspError> {
        let nch = self.pending.len();
        let in_len = self.pending[0].len().max(offset + partial.unwrap_or(0));
        if partial.is_some() {
            // A partial chunk is read as a whole one, zero-padded.
            let need = self.r.input_frames_next();
            self.pending
                .iter_mut()
                .for_each(|p| p.resize(in_len.max(need), 0.0));
        }
        let in_len = self.pending[0].len();
        let input = SequentialSliceOfVecs::new(&self.pending, nch, in_len).map_err(|e| err(&e))?;
        let out_len = self.buf[0].len();
        let mut output =
            SequentialSliceOfVecs::new_mut(&mut self.buf, nch, out_len).map_err(|e| err(&e))?;
        let idx = Indexing {
            input_offset: offset,
            output_offset: 0,
            active_channels_mask: None,
            partial_len: partial,
        };
        let (_, made) = self
            .r
            .process_into_buffer(&input, &mut output, Some(&idx))
            .map_err(|e| err(&e))?;
        let skip = self.trim.min(made);
        self.trim -= skip;
        let keep = ((made - skip) as u64).min(cap - self.frames_out) as usize;
        for (o, b) in out.iter_mut().zip(&self.buf) {
            o.extend_from_slice(&b[skip..skip + keep]);
        }
        self.frames_out += keep as u64;
        Ok(())
    }
}
