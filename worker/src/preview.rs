//! A/B previews: for each target, the same 30 s of the raw mix and of the
//! master, around the most intense section, brought to the same loudness so
//! a listener compares sound, not volume. Both are turned down to the quieter
//! of the two (nothing is boosted, nothing clips) and written as 32-bit float
//! WAV (no requantisation).

use crate::WorkerError;
use loopmind_dsp::measure::bs1770;
use loopmind_dsp::{db_to_lin, Audio};
use std::path::Path;

pub(crate) const CLIP_S: f64 = 30.0;
pub(crate) const DIR: &str = "preview";

/// A clip's file, relative to the track's folder: `preview/<target>-<which>.wav`.
pub(crate) fn clip_file(target: &str, which: &str) -> String {
    format!("{DIR}/{target}-{which}.wav")
}

/// The clip's span: 30 s centred on the most intense section (the whole
/// track if shorter). `sections` are (start, end, intensity).
pub(crate) fn span(sections: &[(f64, f64, f64)], duration: f64) -> (f64, f64) {
    if duration <= CLIP_S {
        return (0.0, duration);
    }
    let centre = sections
        .iter()
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .map_or(duration / 2.0, |s| 0.5 * (s.0 + s.1));
    let start = (centre - CLIP_S / 2.0).clamp(0.0, duration - CLIP_S);
    (start, start + CLIP_S)
}

/// Reads `start..end` seconds of a written master.
pub(crate) fn read_master(path: &Path, start: f64, end: f64) -> Result<Audio, WorkerError> {
    let enc = |reason: String| WorkerError::Encode {
        path: path.into(),
        reason,
    };
    let mut r = hound::WavReader::open(path).map_err(|e| enc(e.to_string()))?;
    let spec = r.spec();
    let fs = spec.sample_rate as f64;
    let (a, b) = ((start * fs) as u32, ((end * fs) as u32).min(r.duration()));
    r.seek(a).map_err(|e| enc(e.to_string()))?;
    let nch = spec.channels as usize;
    let scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
    let mut channels = vec![Vec::with_capacity((b - a) as usize); nch];
    for (i, s) in r.samples::<i32>().take((b - a) as usize * nch).enumerate() {
        channels[i % nch].push(s.map_err(|e| enc(e.to_string()))? as f32 / scale);
    }
    Ok(Audio {
        rate: spec.sample_rate,
        channels,
    })
}

fn lufs(a: &Audio) -> f64 {
    bs1770::integrated_from_power(&bs1770::k_power(a), a.rate)
}

fn write_float(path: &Path, a: &Audio, gain: f32) -> Result<(), WorkerError> {
    let enc = |reason: String| WorkerError::Encode {
        path: path.into(),
        reason,
    };
    let spec = hound::WavSpec {
        channels: a.num_channels() as u16,
        sample_rate: a.rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let tmp = crate::wav::partial_path(path);
    let mut w = hound::WavWriter::create(&tmp, spec).map_err(|e| enc(e.to_string()))?;
    for i in 0..a.frames() {
        for c in &a.channels {
            w.write_sample(c[i] * gain)
                .map_err(|e| enc(e.to_string()))?;
        }
    }
    w.finalize().map_err(|e| enc(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| WorkerError::io(path, e))
}

/// Writes `<dir>/<target>-mix.wav` and `<dir>/<target>-master.wav`, matched
/// in loudness; returns their shared loudness (LUFS).
pub(crate) fn write_pair(
    dir: &Path,
    target: &str,
    mix: &Audio,
    master: &Audio,
) -> Result<f64, WorkerError> {
    std::fs::create_dir_all(dir).map_err(|e| WorkerError::io(dir, e))?;
    let (lm, lt) = (lufs(mix), lufs(master));
    let level = lm.min(lt);
    let gain = |l: f64| {
        if l.is_finite() {
            db_to_lin(level - l) as f32
        } else {
            1.0
        }
    };
    let file = |which| dir.join(format!("{target}-{which}.wav"));
    write_float(&file("mix"), mix, gain(lm))?;
    write_float(&file("master"), master, gain(lt))?;
    Ok(level)
}
