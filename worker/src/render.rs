//! One track to every target, rendered into a scratch folder. Local mode and
//! queue workers both reach it through `process::process_job`.

use crate::decode::DecodeSource;
use crate::report::{
    InputLoudness, MasterSettings, Preview, ReferenceReport, SectionReport, TargetReport,
    TargetSettings, TrackReport,
};
use crate::request::GivenPlan;
use crate::spill::FileScratch;
use crate::wav::partial_path;
use crate::WorkerError;
use loopmind_dsp::analysis::sections::{self, Section};
use loopmind_dsp::analysis::structure;
use loopmind_dsp::pipeline::{self, Source};
use loopmind_dsp::planning::plan::{self, SectionPlan};
use loopmind_dsp::planning::track::{ReferenceMove, TrackPlan};
use loopmind_dsp::process::chain::WORKING_LUFS;
use loopmind_dsp::process::master::TargetMaster;
use loopmind_dsp::targets::Target;
use loopmind_dsp::{Audio, DspError};
use serde::Serialize;
use std::fs;
use std::path::Path;

pub use crate::request::RenderInputs;

/// Writes JSON to `<path>.partial` then renames, so readers see all or nothing.
pub fn write_json_atomic<T: Serialize + serde::de::DeserializeOwned>(
    path: &Path,
    value: &T,
) -> Result<(), WorkerError> {
    let tmp = partial_path(path);
    let body = crate::report::document(value)
        .map_err(|reason| WorkerError::Internal(format!("{}: {reason}", path.display())))?;
    fs::write(&tmp, body).map_err(|e| WorkerError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| WorkerError::io(path, e))
}

/// A stable dither seed per target, so a re-render writes identical bits.
fn seed_for(name: &str) -> u64 {
    loopmind_dsp::hash::fnv1a(name.as_bytes())
}

/// An album's offset moves every target's loudness: each must still be one
/// a target may have.
fn check_album_targets(opts: &RenderInputs) -> Result<(), WorkerError> {
    if opts.album_offset_lu == 0.0 {
        return Ok(());
    }
    for t in opts.targets() {
        t.validate()
            .map_err(|e| WorkerError::Request(format!("album offset: {e}")))?;
    }
    Ok(())
}

/// Renders `input` for every target into `out_dir` (created if missing):
/// `<target>.wav` each and `master_settings.json`; returns the report.
/// The caller publishes them (`process`), report last.
pub fn render_masters(
    input: &Path,
    track: &str,
    out_dir: &Path,
    opts: &RenderInputs,
) -> Result<TrackReport, WorkerError> {
    fs::create_dir_all(out_dir).map_err(|e| WorkerError::io(out_dir, e))?;
    render_inner(input, track, out_dir, opts)
}

/// Refuses, before any work, a track whose stated length needs more disk
/// than the job's budget (a file that states none, or lies, is stopped as
/// its files grow: [`crate::disk::charge`]).
fn check_disk(src: &DecodeSource, input: &Path, opts: &RenderInputs) -> Result<(), WorkerError> {
    let (frames, rate, channels) = src.stated();
    // A length past the duration limit is no claim to plan by (a header
    // that lies says so): the decoder's limits and checks answer it, and
    // the count stops whatever it writes.
    let Some(frames) = frames.filter(|&f| f as f64 <= opts.limits.max_seconds * rate as f64) else {
        return Ok(());
    };
    let masters = opts
        .targets()
        .iter()
        .map(|t| {
            let ratio = t.rate.map_or(1.0, |r| r as f64 / rate.max(1) as f64);
            (u64::from(t.bits / 8), ratio)
        })
        .collect();
    let needs = crate::disk::Needs {
        input_bytes: fs::metadata(input).map_or(0, |m| m.len()),
        frames,
        channels: channels as u64,
        masters,
    };
    crate::disk::needs(&needs, opts.limits.disk_budget)
}

/// The scratch folder of a render's passes (removed when it ends).
pub const WORK_DIR: &str = ".work";

fn render_inner(
    input: &Path,
    track: &str,
    out_dir: &Path,
    opts: &RenderInputs,
) -> Result<TrackReport, WorkerError> {
    check_album_targets(opts)?;
    let work = out_dir.join(WORK_DIR);
    let mut scratch = FileScratch::new(&work).map_err(|e| WorkerError::io(&work, e))?;
    let result = render_passes(input, track, out_dir, opts, &mut scratch);
    let _ = fs::remove_dir_all(&work);
    result
}

/// The render's passes ([`loopmind_dsp::pipeline`]) wired to the file, the
/// scratch folder and the masters; memory holds per-second records only.
fn render_passes(
    input: &Path,
    track: &str,
    out_dir: &Path,
    opts: &RenderInputs,
    scratch: &mut FileScratch,
) -> Result<TrackReport, WorkerError> {
    crate::progress::stage("analysing");
    let mut src = DecodeSource::open(input, &opts.limits)?;
    check_disk(&src, input, opts)?;
    let mut a = analyse_input(&mut src, opts)?;
    let (mut plan, reference) = plan_track(&mut src, &mut a, opts)?;
    crate::progress::at(crate::progress::Point::Analysed);
    crate::progress::stage("processing");
    // What the limiter gets has nothing above 0.46 fs, where true-peak
    // meters disagree (other output rates are band-limited after resampling).
    let mut processed = pipeline::process(
        &mut src,
        &plan.chain,
        a.loudness.integrated_lufs,
        &plan.sections,
        &a.sections.sections,
        a.clip,
        scratch,
        pipeline::BLOCK,
    )
    .map_err(|e| src.error(e))?;
    crate::progress::at(crate::progress::Point::Processed);
    plan.settle(&processed.section_lufs, &a.sections.input_lufs);
    let mix_clip = std::mem::replace(
        &mut processed.clip,
        Audio::new(a.analysis.rate, vec![vec![0.0]])?,
    );
    let rendered = render_targets(processed, &plan, &a, &mix_clip, opts, out_dir, scratch)?;
    let settings = MasterSettings {
        schema_version: Default::default(),
        request: opts.request.clone(),
        working_lufs: WORKING_LUFS,
        global: plan.chain,
        targets: rendered.settings,
        sections: plan.sections,
        reference,
        tempo_bpm: a.sections.tempo_bpm,
    };
    crate::progress::stage("writing");
    write_json_atomic(&out_dir.join("master_settings.json"), &settings)?;
    if let Some(pictured) = &rendered.pictured {
        draw_picture(out_dir, track, opts, &a, &settings.sections, pictured)?;
    }
    crate::progress::at(crate::progress::Point::Written);
    Ok(track_report(
        input,
        track,
        opts,
        a,
        &settings,
        rendered.reports,
    ))
}

/// What the first pass learned of the mix, its loudness, its sections and
/// where its preview clip lies.
struct Analysed {
    analysis: pipeline::Analysis,
    info: crate::decode::SourceInfo,
    loudness: InputLoudness,
    sections: SectionAnalysis,
    clip: (f64, f64),
}

impl Analysed {
    /// The gain that brings the mix to the chain's working level.
    fn pre_gain_db(&self) -> f64 {
        WORKING_LUFS - self.loudness.integrated_lufs
    }
}

/// Pass 1 and what follows from it alone: the input's loudness (silence is
/// refused), every target's master size checked, the sections found.
fn analyse_input(src: &mut DecodeSource, opts: &RenderInputs) -> Result<Analysed, WorkerError> {
    let matching = opts.matching().is_some();
    let analysis = pipeline::analyse(src, matching, pipeline::BLOCK).map_err(|e| src.error(e))?;
    let info = src.info();
    let (integrated_lufs, lra_lu) = analysis.features.loudness();
    let integrated_lufs = loopmind_dsp::measure::bs1770::audible(integrated_lufs)?;
    let input_tp = analysis.true_peak_dbtp;
    let loudness = InputLoudness {
        integrated_lufs,
        lra_lu,
        sample_peak_dbfs: loopmind_dsp::lin_to_db(analysis.sample_peak as f64),
        true_peak_dbtp: input_tp,
        plr_db: input_tp - integrated_lufs,
    };
    let duration = analysis.seconds();
    for t in &opts.targets() {
        let rate = t.rate.unwrap_or(analysis.rate);
        crate::wav::check_size(&t.name, duration, analysis.channels, rate, t.bits)?;
    }
    let sections = analyse_sections(&analysis, opts)?;
    // The raw mix's A/B clip is cut as the chain's pass reads the mix.
    let spans: Vec<(f64, f64, f64)> = sections
        .sections
        .iter()
        .zip(&sections.character)
        .map(|(s, c)| (s.start, s.end, c.0))
        .collect();
    let clip = crate::preview::span(&spans, duration);
    Ok(Analysed {
        analysis,
        info,
        loudness,
        sections,
        clip,
    })
}

/// The track's plan: given whole, or planned from its sections under the
/// request (a reference, where there is one, moves the mode's chain and
/// contrast before anything is planned); and the reference's report.
fn plan_track(
    src: &mut DecodeSource,
    a: &mut Analysed,
    opts: &RenderInputs,
) -> Result<(TrackPlan, Option<ReferenceReport>), WorkerError> {
    if let Some(given) = opts.request.plan() {
        return Ok((
            TrackPlan::given(given.global.clone(), given.sections.clone()),
            None,
        ));
    }
    let matched = match opts.matching() {
        Some((name, path)) => {
            let energies = a.analysis.balance_energies.take().unwrap_or_default();
            let mix_balance =
                pipeline::balance(src, energies, pipeline::BLOCK).map_err(|e| src.error(e))?;
            let (rate, loudness) = (a.analysis.rate, &a.loudness);
            Some(analyse_reference(
                name,
                path,
                mix_balance,
                rate,
                loudness,
                opts,
            )?)
        }
        None => None,
    };
    let (report, reference) = matched.unzip();
    let plan = TrackPlan::planned(
        opts.request.mode(),
        opts.request.sliders(),
        &a.sections.sections,
        &a.sections.character,
        reference,
    );
    Ok((plan, report))
}

/// Every target's report and settings, in the request's order, and the
/// first target's loudness for the picture.
struct RenderedTargets {
    reports: Vec<TargetReport>,
    settings: Vec<TargetSettings>,
    pictured: Option<Pictured>,
}

/// A master's loudness over time, for the picture.
struct Pictured {
    target: String,
    target_lufs: f64,
    blocks: Vec<f64>,
    rate: u32,
}

/// Targets grouped by output rate: each rate is prepared once (the plan's
/// gain, resampling, the detector envelope) and shared by its targets.
fn render_targets(
    processed: pipeline::Processed,
    plan: &TrackPlan,
    a: &Analysed,
    mix_clip: &Audio,
    opts: &RenderInputs,
    out_dir: &Path,
    scratch: &mut FileScratch,
) -> Result<RenderedTargets, WorkerError> {
    let in_rate = a.analysis.rate;
    let targets = opts.targets();
    let mut rates: Vec<u32> = targets.iter().map(|t| t.rate.unwrap_or(in_rate)).collect();
    rates.sort_unstable();
    rates.dedup();
    let mut done: Vec<(usize, TargetReport, TargetSettings)> = Vec::new();
    let mut pictured = None;
    let last = rates.last().copied();
    let mut processed = Some(processed);
    for rate in rates {
        crate::progress::stage(&format!("preparing {rate} Hz"));
        let from = processed.as_mut().expect("kept until the last rate");
        let prep = pipeline::prepare(from, &plan.sections, rate, scratch, pipeline::BLOCK)?;
        if Some(rate) == last {
            // Its scratch files go before the masters are written.
            processed = None;
        }
        for (idx, t) in targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.rate.unwrap_or(in_rate) == rate)
        {
            let (report, settings, blocks) =
                render_target(&prep, t, plan, a, mix_clip, opts, out_dir)?;
            if idx == 0 {
                pictured = Some(Pictured {
                    target: t.name.clone(),
                    target_lufs: t.lufs,
                    blocks,
                    rate,
                });
            }
            done.push((idx, report, settings));
            crate::progress::at(crate::progress::Point::TargetDone {
                done: done.len(),
                of: targets.len(),
            });
        }
    }
    done.sort_by_key(|r| r.0);
    let (reports, settings) = done.into_iter().map(|(_, r, s)| (r, s)).unzip();
    Ok(RenderedTargets {
        reports,
        settings,
        pictured,
    })
}

/// One target's master, checks, deliverables and preview; its report, its
/// settings and its loudness per 100 ms.
fn render_target(
    prep: &loopmind_dsp::process::master::Prepared,
    t: &Target,
    plan: &TrackPlan,
    a: &Analysed,
    mix_clip: &Audio,
    opts: &RenderInputs,
    out_dir: &Path,
) -> Result<(TargetReport, TargetSettings, Vec<f64>), WorkerError> {
    crate::progress::stage(&format!("rendering {}", t.name));
    let file = crate::layout::master_file(&t.name);
    let seed = seed_for(&t.name);
    let pre_gain_db = a.pre_gain_db();
    let crate::target::Rendered {
        master: m,
        codecs,
        codec_ceiling_dbtp,
        files,
        withheld,
        short,
    } = crate::target::render(
        prep,
        t,
        &crate::target::How {
            limiter: &plan.chain.limiter,
            pre_gain_db,
            seed,
            tags: &a.info.tags,
            out_dir,
            work: &out_dir.join(WORK_DIR),
            opts,
        },
    )?;
    let preview = match withheld {
        Some(_) => None,
        None => Some(preview(
            &out_dir.join(&file),
            &t.name,
            a.clip,
            mix_clip,
            out_dir,
        )?),
    };
    let rate = prep.rate;
    let l = &m.measured.loudness;
    let settings = target_settings(t, &m, rate, seed);
    let report = TargetReport {
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
        model_passes: m.model_passes,
        preview,
        codecs,
        codec_ceiling_dbtp,
        files,
        withheld,
        short,
        ..section_report(&plan.sections, &m.measured.block_energy, rate)
    };
    Ok((report, settings, m.measured.block_energy))
}

/// What fixes a target's master, for `master_settings.json`.
fn target_settings(t: &Target, m: &TargetMaster, rate: u32, seed: u64) -> TargetSettings {
    TargetSettings {
        target: t.name.clone(),
        target_lufs: t.lufs,
        true_peak_db: t.ceiling_dbtp,
        sample_rate_hz: rate,
        bit_depth: t.bits,
        gain_db: m.params.gain_db,
        limit_dbtp: m.params.limit_dbtp,
        dither_seed: seed,
        codecs: t.codecs.clone(),
    }
}

/// The loudness-matched A/B clips of the mix and a written master.
fn preview(
    master: &Path,
    target: &str,
    (start, end): (f64, f64),
    mix_clip: &Audio,
    out_dir: &Path,
) -> Result<Preview, WorkerError> {
    let master_clip = crate::preview::read_master(master, start, end)?;
    let preview_dir = out_dir.join(crate::preview::DIR);
    let lufs = crate::preview::write_pair(&preview_dir, target, mix_clip, &master_clip)?;
    Ok(Preview {
        start,
        end,
        lufs,
        mix_file: crate::preview::clip_file(target, "mix"),
        master_file: crate::preview::clip_file(target, "master"),
    })
}

/// `loudness.png`: the input's and the first target's master's short-term
/// loudness, with the sections.
fn draw_picture(
    out_dir: &Path,
    track: &str,
    opts: &RenderInputs,
    a: &Analysed,
    sections: &[SectionPlan],
    p: &Pictured,
) -> Result<(), WorkerError> {
    let hop = loopmind_dsp::measure::bs1770::hop;
    let input = crate::plot::short_term(&a.sections.input_blocks, hop(a.analysis.rate));
    let master = crate::plot::short_term(&p.blocks, hop(p.rate));
    let path = out_dir.join(crate::layout::PICTURE);
    let label = format!("{} master", p.target);
    crate::plot::draw(
        &path,
        &crate::plot::Picture {
            title: &format!("{track}: short-term loudness, {} mode", opts.request.mode()),
            input: &input,
            master: &master,
            master_label: &label,
            target_lufs: p.target_lufs,
            sections,
            duration: a.analysis.seconds(),
        },
    )
    .map_err(|e| WorkerError::Encode {
        path,
        reason: e.reason,
    })
}

/// The track's report.
fn track_report(
    input: &Path,
    track: &str,
    opts: &RenderInputs,
    a: Analysed,
    settings: &MasterSettings,
    targets: Vec<TargetReport>,
) -> TrackReport {
    let source = match (opts.request.plan(), &opts.arrangement) {
        (Some(_), _) => "settings",
        (None, Some(_)) => "arrangement",
        (None, None) => "detected",
    };
    let duration = a.analysis.seconds();
    TrackReport {
        schema_version: Default::default(),
        track: track.to_string(),
        source: input.display().to_string(),
        input: a.info,
        input_loudness: a.loudness,
        mode: opts.request.mode(),
        targets,
        software: format!("LoopMind {}", env!("CARGO_PKG_VERSION")),
        job: None,
        album: None,
        reference: settings.reference.clone(),
        structure: Some(crate::report::StructureReport::of(
            source,
            &settings.sections,
            duration,
        )),
    }
}

struct SectionAnalysis {
    sections: Vec<Section>,
    /// Each section's (intensity, emotion word).
    character: Vec<(f64, String)>,
    /// Each section's loudness in the input.
    input_lufs: Vec<f64>,
    /// The input's K-weighted energy per 100 ms (for the picture).
    input_blocks: Vec<f64>,
    /// The tempo detected boundaries were snapped to.
    tempo_bpm: Option<f64>,
}

/// Sections (given in a plan, or found), their character, and their
/// loudness in the input.
fn analyse_sections(
    analysis: &pipeline::Analysis,
    opts: &RenderInputs,
) -> Result<SectionAnalysis, WorkerError> {
    let features = &analysis.features;
    let (secs, character, tempo_bpm) = match opts.request.plan() {
        Some(given) => given_sections(given, analysis.seconds())?,
        None => found_sections(analysis, opts)?,
    };
    let input_lufs = secs
        .iter()
        .map(|s| features.range_loudness(s.start, s.end))
        .collect();
    Ok(SectionAnalysis {
        sections: secs,
        character,
        input_lufs,
        input_blocks: features.k_blocks.clone(),
        tempo_bpm,
    })
}

/// Sections, each one's (intensity, emotion word), and the tempo.
type Found = (Vec<Section>, Vec<(f64, String)>, Option<f64>);

/// Sections from the arrangement document or detection (on the beat where
/// there is one), their character from the emotion graph or the audio.
fn found_sections(
    analysis: &pipeline::Analysis,
    opts: &RenderInputs,
) -> Result<Found, WorkerError> {
    let (duration, features) = (analysis.seconds(), &analysis.features);
    let named = |doc: &str, e: DspError| match e {
        DspError::Document { field, reason } => {
            WorkerError::Request(format!("{doc}: {field}: {reason}"))
        }
        other => other.into(),
    };
    let (secs, tempo_bpm): (Vec<Section>, Option<f64>) = match &opts.arrangement {
        Some(json) => (
            sections::parse_arrangement(json, duration).map_err(|e| named("arrangement", e))?,
            None,
        ),
        None => {
            let grid = loopmind_dsp::analysis::beats::grid(&analysis.onsets);
            (
                structure::detect_with(duration, features, grid.as_ref(), Some(&analysis.onsets)),
                grid.map(|g| g.bpm),
            )
        }
    };
    let character: Vec<(f64, String)> = match &opts.emotion {
        Some(json) => {
            let curve =
                sections::parse_emotion(json, duration).map_err(|e| named("emotion graph", e))?;
            secs.iter()
                .map(|s| {
                    // Mean intensity over the section; the word of the graph's
                    // point nearest its middle, else one from the intensity.
                    let n = 16;
                    let x = (0..n)
                        .map(|i| {
                            sections::intensity_at(
                                &curve,
                                s.start + (s.end - s.start) * (i as f64 + 0.5) / n as f64,
                            )
                        })
                        .sum::<f64>()
                        / n as f64;
                    let mid = 0.5 * (s.start + s.end);
                    let word = curve
                        .iter()
                        .filter(|p| p.emotion.is_some())
                        .min_by(|a, b| (a.time - mid).abs().total_cmp(&(b.time - mid).abs()))
                        .and_then(|p| p.emotion.clone())
                        .unwrap_or_else(|| sections::emotion_word(x, 0.5).to_string());
                    (x, word)
                })
                .collect()
        }
        None => sections::section_intensity(features, &secs),
    };
    Ok((secs, character, tempo_bpm))
}

/// The reference's loudness character against the mix's, and the EQ that
/// moves the mix's tonal balance towards it (on top of the mode's EQ; the
/// EQ amount scales it like the rest of the EQ).
fn analyse_reference(
    name: &str,
    path: &Path,
    mix_balance: loopmind_dsp::analysis::reference::Balance,
    rate: u32,
    mix_loudness: &InputLoudness,
    opts: &RenderInputs,
) -> Result<(ReferenceReport, ReferenceMove), WorkerError> {
    let named = |e: WorkerError| WorkerError::Request(format!("reference {name}: {e}"));
    crate::progress::stage("analysing the reference");
    let mut src = DecodeSource::open(path, &opts.limits).map_err(named)?;
    let (ref_rate, nch) = (src.rate(), src.channels());
    let block = pipeline::BLOCK;
    let mut meter = loopmind_dsp::measure::bs1770::BlockMeter::new(nch, ref_rate);
    let mut tp = loopmind_dsp::measure::truepeak::TruePeakMeter::new(nch, ref_rate);
    let mut energies = loopmind_dsp::analysis::reference::BalanceEnergies::new(ref_rate);
    let pass = pipeline::for_each_checked_block(&mut src, block, |p| {
        meter.add(p);
        tp.add(p);
        energies.push(p);
    });
    pass.map_err(|e| named(src.error(e)))?;
    let (integrated, lra) = meter.loudness();
    let integrated =
        loopmind_dsp::measure::bs1770::audible(integrated).map_err(|e| named(e.into()))?;
    let plr = loopmind_dsp::lin_to_db(tp.finish() as f64) - integrated;
    let ref_balance =
        pipeline::balance(&mut src, energies.finish(), block).map_err(|e| named(src.error(e)))?;
    let c = loopmind_dsp::analysis::reference::character(
        mix_loudness.lra_lu,
        mix_loudness.plr_db,
        lra,
        plr,
    );
    let eq = plan::global(&opts.request.mode().chain(), opts.request.sliders())
        .eq
        .sections(rate);
    let already = |f: f64| -> f64 { eq.iter().map(|k| k.magnitude_db(f, rate as f64)).sum() };
    let mut match_eq =
        loopmind_dsp::analysis::reference::match_eq(&mix_balance, &ref_balance, already, rate);
    for b in &mut match_eq {
        b.gain_db *= opts.request.sliders().amount.eq;
    }
    // The match's quality: how far the master's tonal balance is from the
    // reference's without the match and with it (the mode's EQ in both).
    let matched = loopmind_dsp::analysis::reference::match_response(&match_eq, rate);
    let distance = |with: &dyn Fn(f64) -> f64| {
        loopmind_dsp::analysis::reference::distance_db(
            &mix_balance,
            &ref_balance,
            |f| already(f) + with(f),
            rate,
        )
    };
    let (distance_before_db, distance_after_db) = (distance(&|_| 0.0), distance(&matched));
    let report = ReferenceReport {
        source: name.to_string(),
        integrated_lufs: integrated,
        lra_lu: lra,
        plr_db: plr,
        contrast_factor: c.contrast,
        compression_factor: c.compression,
        distance_before_db,
        distance_after_db,
        applied_curve: loopmind_dsp::analysis::reference::applied_curve(&match_eq, rate),
    };
    let moved = ReferenceMove {
        compression_factor: c.compression,
        contrast_factor: c.contrast,
        match_eq,
    };
    Ok((report, moved))
}

/// The sections of a given plan, which must lie inside the track.
fn given_sections(given: &GivenPlan, duration: f64) -> Result<Found, WorkerError> {
    if let Some((i, p)) = given
        .sections
        .iter()
        .enumerate()
        .find(|(_, p)| p.start >= duration || p.end > duration + sections::END_SLACK_S)
    {
        return Err(WorkerError::Request(format!(
            "settings: sections[{i}]: {:.2}..{:.2} s is beyond the track's end at {duration:.2} s",
            p.start, p.end
        )));
    }
    let secs: Vec<Section> = given
        .sections
        .iter()
        .map(|p| Section {
            label: p.section.clone(),
            start: p.start,
            end: p.end,
        })
        .collect();
    let character = given
        .sections
        .iter()
        .map(|p| (p.intensity, p.emotion.clone()))
        .collect();
    Ok((secs, character, given.tempo_bpm))
}

/// Each section's loudness in the input and in the written master, and the
/// planned and achieved contrast (loudest minus quietest section).
fn section_report(plan: &[SectionPlan], blocks: &[f64], rate: u32) -> TargetReport {
    let sections: Vec<SectionReport> = plan
        .iter()
        .map(|p| SectionReport {
            section: p.section.clone(),
            emotion: p.emotion.clone(),
            start: p.start,
            end: p.end,
            input_lufs: p.input_lufs,
            output_lufs: loopmind_dsp::measure::bs1770::range_loudness(
                blocks, rate, p.start, p.end,
            ),
        })
        .collect();
    let spread = |v: Vec<f64>| {
        let v: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return 0.0;
        }
        v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
    };
    TargetReport {
        planned_contrast_lu: spread(plan.iter().map(|p| p.planned_lufs).collect()),
        achieved_contrast_lu: spread(sections.iter().map(|s| s.output_lufs).collect()),
        sections,
        ..TargetReport::default()
    }
}
