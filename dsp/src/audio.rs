use crate::DspError;

/// Planar audio: one `Vec<f32>` per channel, all of equal length.
/// Planar because every stage runs channel-wise and it vectorises well.
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    pub rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl Audio {
    pub fn new(rate: u32, channels: Vec<Vec<f32>>) -> Result<Self, DspError> {
        if channels.is_empty() {
            return Err(DspError::Empty);
        }
        let n = channels[0].len();
        if channels.iter().any(|c| c.len() != n) {
            return Err(DspError::RaggedChannels);
        }
        Ok(Self { rate, channels })
    }

    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }

    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / self.rate as f64
    }

    /// Checks what mastering needs of its input: samples present, a rate and a
    /// channel layout we master, every sample finite, at least one loudness block.
    pub fn validate(&self) -> Result<(), DspError> {
        check_format(self.rate, self.num_channels())?;
        check_finite(&self.channels, 0, self.rate)?;
        check_length(self.frames() as u64, self.rate)
    }

    /// Planar chunks of up to `len` frames, in order (for streaming meters).
    pub fn chunks(&self, len: usize) -> impl Iterator<Item = Vec<&[f32]>> + '_ {
        (0..self.frames()).step_by(len.max(1)).map(move |start| {
            let end = (start + len).min(self.frames());
            self.channels.iter().map(|c| &c[start..end]).collect()
        })
    }

    /// Largest |sample| of any channel.
    pub fn sample_peak(&self) -> f32 {
        self.channels
            .iter()
            .flatten()
            .fold(0f32, |m, v| m.max(v.abs()))
    }

    /// Multiplies every sample by `gain`.
    pub fn scale(&mut self, gain: f32) {
        for c in &mut self.channels {
            c.iter_mut().for_each(|s| *s *= gain);
        }
    }
}

/// A rate and channel layout LoopMind masters.
pub fn check_format(rate: u32, channels: usize) -> Result<(), DspError> {
    if !(8000..=192_000).contains(&rate) {
        return Err(DspError::SampleRate(rate));
    }
    if !(1..=2).contains(&channels) {
        return Err(DspError::Channels(channels));
    }
    Ok(())
}

/// Every sample of a block starting at frame `from` finite.
pub fn check_finite(block: &[Vec<f32>], from: u64, rate: u32) -> Result<(), DspError> {
    for (channel, samples) in block.iter().enumerate() {
        if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
            return Err(DspError::NonFinite {
                channel,
                seconds: (from + i as u64) as f64 / rate as f64,
            });
        }
    }
    Ok(())
}

/// Samples present, and at least one loudness block of them.
pub fn check_length(frames: u64, rate: u32) -> Result<(), DspError> {
    if frames == 0 {
        return Err(DspError::Empty);
    }
    let seconds = frames as f64 / rate as f64;
    if seconds < 0.4 {
        return Err(DspError::TooShort { seconds });
    }
    Ok(())
}
