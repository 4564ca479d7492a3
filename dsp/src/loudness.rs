//! BS.1770-4 / EBU R128 measurement through the ebur128 crate in queue mode
//! (exact block energies, not the 0.1 dB histogram), so integrated loudness and
//! LRA are as precise as the standard allows.

use crate::{Audio, DspError};
use ebur128::{EbuR128, Mode};
use serde::{Deserialize, Serialize};

/// Hop between points of the short-term loudness curve.
pub const CURVE_HOP_SECONDS: f64 = 0.1;

/// What a full measurement reports. dB values are -inf for digital silence;
/// serialised as null where JSON cannot hold them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Loudness {
    pub integrated_lufs: f64,
    pub lra_lu: f64,
    pub sample_peak_dbfs: f64,
    /// ebur128's 4x true peak (the BS.1770 reference interpolator).
    pub true_peak_ebur128_dbtp: f64,
    /// Short-term (3 s) loudness every [`CURVE_HOP_SECONDS`].
    pub short_term_lufs: Vec<f64>,
}

/// A streaming meter: feed planar chunks, read the results at the end.
pub struct Meter {
    inner: EbuR128,
    full: bool,
    hop: usize,
    pending: usize,
    curve: Vec<f64>,
}

fn meter_err(e: ebur128::Error) -> DspError {
    DspError::Meter(format!("{e:?}"))
}

impl Meter {
    /// `full` adds LRA, the short-term curve and peaks; without it only
    /// integrated loudness is kept (cheaper, for gain searches).
    pub fn new(channels: usize, rate: u32, full: bool) -> Result<Self, DspError> {
        let mode = if full {
            Mode::I | Mode::S | Mode::LRA | Mode::SAMPLE_PEAK | Mode::TRUE_PEAK
        } else {
            Mode::I
        };
        let inner = EbuR128::new(channels as u32, rate, mode).map_err(meter_err)?;
        Ok(Self {
            inner,
            full,
            hop: ((rate as f64 * CURVE_HOP_SECONDS).round() as usize).max(1),
            pending: 0,
            curve: Vec::new(),
        })
    }

    pub fn add(&mut self, chunk: &[&[f32]]) -> Result<(), DspError> {
        if !self.full {
            return self.inner.add_frames_planar_f32(chunk).map_err(meter_err);
        }
        // Split at curve hops so the short-term curve has a point every hop.
        let len = chunk.first().map_or(0, |c| c.len());
        let mut start = 0;
        while start < len {
            let take = (self.hop - self.pending).min(len - start);
            let part: Vec<&[f32]> = chunk.iter().map(|c| &c[start..start + take]).collect();
            self.inner.add_frames_planar_f32(&part).map_err(meter_err)?;
            self.pending += take;
            start += take;
            if self.pending == self.hop {
                self.pending = 0;
                let st = self.inner.loudness_shortterm().map_err(meter_err)?;
                self.curve.push(st);
            }
        }
        Ok(())
    }

    pub fn integrated(&self) -> Result<f64, DspError> {
        self.inner.loudness_global().map_err(meter_err)
    }

    pub fn finish(self) -> Result<Loudness, DspError> {
        let integrated_lufs = self.integrated()?;
        if !self.full {
            return Ok(Loudness {
                integrated_lufs,
                ..Default::default()
            });
        }
        let channels = self.inner.channels();
        let mut sp = 0f64;
        let mut tp = 0f64;
        for c in 0..channels {
            sp = sp.max(self.inner.sample_peak(c).map_err(meter_err)?);
            tp = tp.max(self.inner.true_peak(c).map_err(meter_err)?);
        }
        Ok(Loudness {
            integrated_lufs,
            lra_lu: self.inner.loudness_range().map_err(meter_err)?,
            sample_peak_dbfs: crate::lin_to_db(sp),
            true_peak_ebur128_dbtp: crate::lin_to_db(tp),
            short_term_lufs: self.curve,
        })
    }
}

/// Measures a whole buffer.
pub fn measure(audio: &Audio) -> Result<Loudness, DspError> {
    let mut m = Meter::new(audio.num_channels(), audio.rate, true)?;
    let chunk: Vec<&[f32]> = audio.channels.iter().map(|c| c.as_slice()).collect();
    m.add(&chunk)?;
    m.finish()
}

/// Integrated loudness only.
pub fn integrated(audio: &Audio) -> Result<f64, DspError> {
    let mut m = Meter::new(audio.num_channels(), audio.rate, false)?;
    let chunk: Vec<&[f32]> = audio.channels.iter().map(|c| c.as_slice()).collect();
    m.add(&chunk)?;
    m.integrated()
}
