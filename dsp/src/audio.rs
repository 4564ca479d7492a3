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
        if !(8000..=192_000).contains(&self.rate) {
            return Err(DspError::SampleRate(self.rate));
        }
        if !(1..=2).contains(&self.num_channels()) {
            return Err(DspError::Channels(self.num_channels()));
        }
        if self.frames() == 0 {
            return Err(DspError::Empty);
        }
        for (channel, samples) in self.channels.iter().enumerate() {
            if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
                return Err(DspError::NonFinite {
                    channel,
                    seconds: i as f64 / self.rate as f64,
                });
            }
        }
        if self.seconds() < 0.4 {
            return Err(DspError::TooShort {
                seconds: self.seconds(),
            });
        }
        Ok(())
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
