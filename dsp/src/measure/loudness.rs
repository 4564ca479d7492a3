//! BS.1770-4 / EBU R128 measurement through the ebur128 crate in queue mode
//! (exact block energies, not the 0.1 dB histogram): the independent
//! reference our own meter ([`crate::measure::bs1770`], one K-weighting pass shared
//! with the gain search and section analysis) is tested against, and the
//! short-term curve.

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

/// What a [`Meter`] keeps beyond integrated loudness. Each costs: LRA sums a
/// 3 s block every second, ebur128's true peak oversamples 4x, and every
/// point of the curve sums a 3 s window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measure {
    /// LRA and sample peak.
    pub lra: bool,
    /// ebur128's 4x true peak.
    pub true_peak: bool,
    /// The short-term curve.
    pub curve: bool,
}

impl Measure {
    pub const INTEGRATED: Measure = Measure {
        lra: false,
        true_peak: false,
        curve: false,
    };
    pub const ALL: Measure = Measure {
        lra: true,
        true_peak: true,
        curve: true,
    };
}

/// A streaming meter: feed planar chunks, read the results at the end.
pub struct Meter {
    inner: EbuR128,
    what: Measure,
    hop: usize,
    pending: usize,
    curve: Vec<f64>,
}

fn meter_err(e: ebur128::Error) -> DspError {
    DspError::Meter(format!("{e:?}"))
}

impl Meter {
    pub fn new(channels: usize, rate: u32, what: Measure) -> Result<Self, DspError> {
        let mut mode = Mode::I;
        if what.lra {
            mode |= Mode::LRA | Mode::SAMPLE_PEAK;
        }
        if what.true_peak {
            mode |= Mode::TRUE_PEAK | Mode::SAMPLE_PEAK;
        }
        if what.curve {
            mode |= Mode::S;
        }
        let inner = EbuR128::new(channels as u32, rate, mode).map_err(meter_err)?;
        Ok(Self {
            inner,
            what,
            hop: ((rate as f64 * CURVE_HOP_SECONDS).round() as usize).max(1),
            pending: 0,
            curve: Vec::new(),
        })
    }

    pub fn add(&mut self, chunk: &[&[f32]]) -> Result<(), DspError> {
        if !self.what.curve {
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
        let what = self.what;
        let (mut sp, mut tp) = (f64::NAN, f64::NAN);
        for c in 0..self.inner.channels() {
            if what.lra || what.true_peak {
                // f64::max ignores NaN, the "not measured" start value.
                sp = sp.max(self.inner.sample_peak(c).map_err(meter_err)?);
            }
            if what.true_peak {
                tp = tp.max(self.inner.true_peak(c).map_err(meter_err)?);
            }
        }
        let lra_lu = if what.lra {
            self.inner.loudness_range().map_err(meter_err)?
        } else {
            f64::NAN
        };
        // Not measured: NaN (null in JSON).
        Ok(Loudness {
            integrated_lufs,
            lra_lu,
            sample_peak_dbfs: crate::lin_to_db(sp),
            true_peak_ebur128_dbtp: crate::lin_to_db(tp),
            short_term_lufs: self.curve,
        })
    }
}

/// Measures everything of a whole buffer.
pub fn measure(audio: &Audio) -> Result<Loudness, DspError> {
    measure_with(audio, Measure::ALL)
}

/// Measures what `what` asks of a whole buffer.
pub fn measure_with(audio: &Audio, what: Measure) -> Result<Loudness, DspError> {
    let mut m = Meter::new(audio.num_channels(), audio.rate, what)?;
    let chunk: Vec<&[f32]> = audio.channels.iter().map(|c| c.as_slice()).collect();
    m.add(&chunk)?;
    m.finish()
}
