//! One track to every target, rendered into a scratch folder. Local mode and
//! queue workers both reach it through [`crate::process::process_job`].

use crate::decode::decode_file;
use crate::report::{InputLoudness, MasterSettings, TargetReport, TargetSettings, TrackReport};
use crate::wav::{partial_path, WavSink};
use crate::WorkerError;
use loopmind_dsp::chain::{ChainSettings, WORKING_LUFS};
use loopmind_dsp::master::{master_target, Prepared};
use loopmind_dsp::modes::Mode;
use loopmind_dsp::targets::Target;
use loopmind_dsp::{loudness, resample, truepeak, Audio};
use serde::Serialize;
use std::fs;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct RenderOptions {
    pub targets: Vec<Target>,
    pub mode: Mode,
    /// Settings to render instead of the mode's plan.
    pub chain: Option<ChainSettings>,
}

impl RenderOptions {
    pub fn chain(&self) -> ChainSettings {
        self.chain.clone().unwrap_or_else(|| self.mode.chain())
    }

    pub fn validate(&self) -> Result<(), WorkerError> {
        if self.targets.is_empty() {
            return Err(WorkerError::Request("no targets".into()));
        }
        for t in &self.targets {
            t.validate()
                .map_err(|e| WorkerError::Request(e.to_string()))?;
        }
        self.chain()
            .validate()
            .map_err(|e| WorkerError::Request(e.to_string()))
    }
}

/// Writes JSON to `<path>.partial` then renames, so readers see all or nothing.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<(), WorkerError> {
    let tmp = partial_path(path);
    let body = serde_json::to_vec_pretty(value).map_err(|e| WorkerError::Encode {
        path: path.into(),
        reason: e.to_string(),
    })?;
    fs::write(&tmp, body).map_err(|e| WorkerError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| WorkerError::io(path, e))
}

/// A stable dither seed per target, so a re-render writes identical bits.
fn seed_for(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Renders `input` for every target into `out_dir` (created if missing):
/// `<target>.wav` each and `master_settings.json`; returns the report.
/// The caller publishes them ([`crate::process`]), report last.
pub fn render_masters(
    input: &Path,
    track: &str,
    out_dir: &Path,
    opts: &RenderOptions,
) -> Result<TrackReport, WorkerError> {
    fs::create_dir_all(out_dir).map_err(|e| WorkerError::io(out_dir, e))?;
    render_inner(input, track, out_dir, opts)
}

fn render_inner(
    input: &Path,
    track: &str,
    out_dir: &Path,
    opts: &RenderOptions,
) -> Result<TrackReport, WorkerError> {
    opts.validate()?;
    let chain = opts.chain();
    let (mut audio, info) = decode_file(input)?;
    audio.validate()?;
    // The input's true peak comes from our 16x meter below, not ebur128's.
    let what = loudness::Measure {
        lra: true,
        true_peak: false,
        curve: false,
    };
    let inl = loudness::measure_with(&audio, what)?;
    if !inl.integrated_lufs.is_finite() || inl.integrated_lufs < -70.0 {
        return Err(loopmind_dsp::DspError::Silent.into());
    }
    let input_tp = truepeak::true_peak_dbtp(&audio);
    let input_loudness = InputLoudness {
        integrated_lufs: inl.integrated_lufs,
        lra_lu: inl.lra_lu,
        sample_peak_dbfs: inl.sample_peak_dbfs,
        true_peak_dbtp: input_tp,
        plr_db: input_tp - inl.integrated_lufs,
    };
    drop(inl);
    let pre_gain_db = WORKING_LUFS - input_loudness.integrated_lufs;
    chain.run(&mut audio, input_loudness.integrated_lufs);

    // Targets grouped by output rate: each rate is prepared once. Other rates
    // resample from the processed audio first; the source rate goes last and
    // takes the buffer itself, so no copy of the track is made for it.
    let src_rate = audio.rate;
    let mut rates: Vec<u32> = opts
        .targets
        .iter()
        .map(|t| t.rate.unwrap_or(src_rate))
        .collect();
    rates.sort_unstable();
    rates.dedup();
    rates.sort_by_key(|&r| r == src_rate);
    let mut reports: Vec<(usize, TargetReport, TargetSettings)> = Vec::new();
    let mut audio = Some(audio);
    for rate in rates {
        let buf: Audio = if rate == src_rate {
            audio.take().expect("source rate handled last")
        } else {
            resample::resample(audio.as_ref().expect("source audio kept"), rate)?
        };
        let prep = Prepared::new(buf)?;
        for (idx, t) in opts
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.rate.unwrap_or(src_rate) == rate)
        {
            let file = format!("{}.wav", t.name);
            let path = out_dir.join(&file);
            let mut sink = WavSink::new(&path, prep.audio.num_channels(), rate, t.bits);
            let seed = seed_for(&t.name);
            let m = master_target(&prep, t, &chain.limiter, pre_gain_db, seed, &mut sink)?;
            sink.commit(&info.tags)?;
            let l = &m.measured.loudness;
            reports.push((
                idx,
                TargetReport {
                    target: t.name.clone(),
                    target_lufs: t.lufs,
                    ceiling_dbtp: t.ceiling_dbtp,
                    output_file: file,
                    sample_rate_hz: rate,
                    bit_depth: t.bits,
                    integrated_lufs: l.integrated_lufs,
                    lra_lu: l.lra_lu,
                    true_peak_dbtp: m.measured.true_peak_dbtp,
                    true_peak_bs1770_dbtp: m.measured.true_peak_bs1770_dbtp,
                    sample_peak_dbfs: l.sample_peak_dbfs,
                    gain_db: pre_gain_db + m.params.gain_db,
                    limiter_gr_max_db: m.measured.limiter_gr_max_db,
                    limiter_gr_mean_db: m.measured.limiter_gr_mean_db,
                    passes: m.passes,
                },
                TargetSettings {
                    target: t.name.clone(),
                    target_lufs: t.lufs,
                    true_peak_db: t.ceiling_dbtp,
                    sample_rate_hz: rate,
                    bit_depth: t.bits,
                    gain_db: m.params.gain_db,
                    limit_dbtp: m.params.limit_dbtp,
                    dither_seed: seed,
                },
            ));
        }
    }
    reports.sort_by_key(|r| r.0);
    let (targets, target_settings): (Vec<_>, Vec<_>) =
        reports.into_iter().map(|(_, r, s)| (r, s)).unzip();
    let settings = MasterSettings {
        mode: opts.mode,
        working_lufs: WORKING_LUFS,
        global: chain,
        targets: target_settings,
        sections: Vec::new(),
    };
    write_json_atomic(&out_dir.join("master_settings.json"), &settings)?;
    Ok(TrackReport {
        track: track.to_string(),
        source: input.display().to_string(),
        input: info,
        input_loudness,
        mode: opts.mode,
        targets,
        software: format!("LoopMind {}", env!("CARGO_PKG_VERSION")),
        job: None,
        album: None,
    })
}
