//! The codec check: a master encoded with each of its target's codecs, as
//! the platform will, decoded without clamping and measured: 16x true peak,
//! overs (as Apple's afclip counts them), loudness shift.

use super::{decode, encoder, extension, CodecError, Encode, BLOCK};
use crate::decode::{DecodeLimits, DecodeSource};
use crate::error::Action;
use crate::WorkerError;
use loopmind_dsp::measure::bs1770::BlockMeter;
use loopmind_dsp::measure::truepeak::TruePeakMeter;
use loopmind_dsp::pipeline::{self, Source};
use loopmind_dsp::targets::Codec;
use loopmind_dsp::{lin_to_db, DspError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What one codec made of a master.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CodecReport {
    pub codec: Codec,
    /// Near-ideal (16x) true peak of the decoded file.
    #[serde(with = "loopmind_dsp::level")]
    pub true_peak_dbtp: f64,
    /// The same by BS.1770's reference interpolator.
    #[serde(with = "loopmind_dsp::level")]
    pub true_peak_bs1770_dbtp: f64,
    #[serde(with = "loopmind_dsp::level")]
    pub sample_peak_dbfs: f64,
    /// Decoded samples over full scale (a decoder writing integers clips them).
    pub samples_over: u64,
    /// Intervals between samples within full scale where the waveform goes over.
    pub intersample_overs: u64,
    #[serde(with = "loopmind_dsp::level")]
    pub integrated_lufs: f64,
    /// Decoded minus master loudness (0 where either is below the gate).
    pub loudness_shift_lu: f64,
    /// Decoded minus master true peak: what the encode added.
    pub true_peak_added_db: f64,
    /// CPU seconds to encode and decode.
    pub cpu_seconds: f64,
    /// The share of the master encoded: 1 for a whole file, less where
    /// only the stretches near the ceiling were ([`super::regions`]; the
    /// loudness is then the master's plus the shift over those stretches).
    #[serde(default = "whole")]
    pub encoded_fraction: f64,
    /// Which render of the target's master this reads (1 for the first):
    /// a codec well under the ceiling is not checked again after the
    /// ceiling is lowered for another (a lower ceiling lowers its peak too).
    #[serde(default = "first")]
    pub render: u32,
    /// A probe's reading: a sample of the master's hottest stretches, read
    /// to step the ceiling of a master rendered again, never a verdict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
}

fn first() -> u32 {
    1
}

fn whole() -> f64 {
    1.0
}

impl CodecReport {
    /// Over `ceiling_dbtp` by either meter, or clipping a decoder.
    pub fn over(&self, ceiling_dbtp: f64) -> bool {
        self.true_peak_dbtp.max(self.true_peak_bs1770_dbtp) > ceiling_dbtp
            || self.samples_over > 0
            || self.intersample_overs > 0
    }
}

/// The master's own readings, against which shifts are taken.
#[derive(Clone, Copy, Debug)]
pub struct MasterLevels {
    pub true_peak_dbtp: f64,
    pub integrated_lufs: f64,
}

/// `a - b` of two levels, or 0 where either is below the gate (-inf).
pub(super) fn level_difference(a: f64, b: f64) -> f64 {
    if a.is_finite() && b.is_finite() {
        a - b
    } else {
        0.0
    }
}

/// CPU time of this thread (encoders run on it).
pub(super) fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// The file `codec` encodes to in `dir`: made of the codec's own parts.
pub fn encoded_path(dir: &Path, stem: &str, codec: Codec) -> PathBuf {
    dir.join(format!(
        "{stem}.{}{}.{}",
        codec.format.name(),
        codec.kbps,
        extension(codec.format.into())
    ))
}

/// Encodes `master` with every codec (one read of it) into `dir`, then
/// decodes and measures each. The encoded files stay for the caller.
pub fn check(
    master: &Path,
    levels: MasterLevels,
    codecs: &[Codec],
    dir: &Path,
    stem: &str,
    tags: &super::tags::FileTags,
    limits: &DecodeLimits,
) -> Result<Vec<(CodecReport, PathBuf)>, WorkerError> {
    if codecs.is_empty() {
        return Ok(Vec::new());
    }
    let mut src = DecodeSource::open(master, limits)?;
    let (rate, nch) = (src.rate(), src.channels());
    let mut encoders: Vec<(Box<dyn Encode>, PathBuf, f64)> = Vec::new();
    for &c in codecs {
        let path = encoded_path(dir, stem, c);
        let t = thread_cpu();
        let e = encoder(c, rate, nch, &path, tags).map_err(|e| codec_failure(&path, e))?;
        encoders.push((e, path, thread_cpu() - t));
    }
    // An encoder's error, kept typed across the pass's DspError.
    let mut failed: Option<WorkerError> = None;
    let pass = pipeline::for_each_block(&mut src, BLOCK, |block| {
        let part: Vec<&[f32]> = block.iter().map(Vec::as_slice).collect();
        for (e, path, cpu) in &mut encoders {
            let t = thread_cpu();
            e.write(&part).map_err(|r| {
                let sink = loopmind_dsp::error::IoFault::other(path.display(), &r);
                failed = Some(codec_failure(path, r));
                DspError::Sink(sink)
            })?;
            *cpu += thread_cpu() - t;
        }
        Ok(())
    });
    if let Err(e) = pass {
        return Err(failed.unwrap_or_else(|| src.error(e)));
    }
    let mut reports = Vec::new();
    for ((e, path, mut cpu), &codec) in encoders.into_iter().zip(codecs) {
        let t = thread_cpu();
        e.finish().map_err(|r| codec_failure(&path, r))?;
        let m = measure(codec, &path, limits)?;
        cpu += thread_cpu() - t;
        let shift = level_difference(m.integrated_lufs, levels.integrated_lufs);
        let added = level_difference(m.true_peak_dbtp, levels.true_peak_dbtp);
        reports.push((
            CodecReport {
                loudness_shift_lu: shift,
                true_peak_added_db: added,
                cpu_seconds: cpu,
                ..m
            },
            path,
        ));
    }
    Ok(reports)
}

/// A failed encode as the job's error: a file that could not be written may
/// be written later (retried); a codec that refuses our master (one that
/// will not start, say) refuses it again (never retried).
pub(super) fn codec_failure(path: &Path, e: CodecError) -> WorkerError {
    match e.action() {
        Action::Retry => WorkerError::Encode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        Action::Abort => WorkerError::Internal(format!("{}: {e}", path.display())),
    }
}

/// Decodes an encoded file and measures it.
pub fn measure(
    codec: Codec,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<CodecReport, WorkerError> {
    let mut meters: Option<(TruePeakMeter, BlockMeter)> = None;
    decode(codec.format, path, limits, |rate, p| {
        let (tp, meter) = meters.get_or_insert_with(|| {
            (
                TruePeakMeter::new(p.len(), rate),
                BlockMeter::new(p.len(), rate),
            )
        });
        tp.add(p);
        meter.add(p);
    })
    // Our own encode not decoding is no passing trouble: never retried.
    .map_err(|reason| {
        WorkerError::Internal(format!("{}: decoding it back: {reason}", path.display()))
    })?;
    let (tp, meter) = meters.ok_or_else(|| WorkerError::Encode {
        path: path.to_path_buf(),
        reason: "decodes to nothing".into(),
    })?;
    let peaks = tp.finish_both();
    let (integrated, _) = meter.loudness();
    Ok(CodecReport {
        codec,
        true_peak_dbtp: lin_to_db(peaks.ideal as f64),
        true_peak_bs1770_dbtp: lin_to_db(peaks.reference as f64),
        sample_peak_dbfs: lin_to_db(peaks.sample as f64),
        samples_over: peaks.samples_over,
        intersample_overs: peaks.intersample_overs,
        integrated_lufs: integrated,
        loudness_shift_lu: 0.0,
        true_peak_added_db: 0.0,
        cpu_seconds: 0.0,
        encoded_fraction: 1.0,
        render: 1,
        probe: false,
    })
}
