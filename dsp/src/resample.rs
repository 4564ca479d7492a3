//! Sample-rate conversion with rubato's synchronous FFT resampler: fixed
//! ratios (48k -> 44.1k for CD, say) with a Blackman-Harris anti-alias filter.

use crate::{Audio, DspError};
use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler};

pub fn resample(audio: &Audio, rate: u32) -> Result<Audio, DspError> {
    if rate == audio.rate {
        return Ok(audio.clone());
    }
    let err = |e: &dyn std::fmt::Display| DspError::Resample(e.to_string());
    let nch = audio.num_channels();
    let frames = audio.frames();
    let mut r = Fft::<f32>::new(
        audio.rate as usize,
        rate as usize,
        4096,
        nch,
        FixedSync::Input,
    )
    .map_err(|e| err(&e))?;
    let out_len = r.process_all_needed_output_len(frames);
    let mut out = vec![vec![0f32; out_len]; nch];
    let input = SequentialSliceOfVecs::new(&audio.channels, nch, frames).map_err(|e| err(&e))?;
    let mut output = SequentialSliceOfVecs::new_mut(&mut out, nch, out_len).map_err(|e| err(&e))?;
    let (_, produced) = r
        .process_all_into_buffer(&input, &mut output, frames, None)
        .map_err(|e| err(&e))?;
    let expected = (frames as u64 * rate as u64).div_ceil(audio.rate as u64) as usize;
    let keep = produced.min(expected);
    for c in &mut out {
        c.truncate(keep);
        c.shrink_to_fit();
    }
    Audio::new(rate, out)
}
