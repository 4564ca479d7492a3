//! One target's master: rendered, checked after its platform's codecs (and
//! under `enforce` rendered again under a lower ceiling until every decode
//! is under the target's ceiling), and encoded as the deliverables asked for.

use crate::codec::check::{self, CodecReport, MasterLevels};
use crate::codec::regions;
use crate::codec::tags::FileTags;
use crate::codec::CodecCheck;
use crate::request::RenderInputs;
use crate::wav::WavSink;
use crate::WorkerError;
use loopmind_dsp::process::limiter::LimiterSettings;
use loopmind_dsp::process::master::{master_target, Prepared, TargetMaster};
use loopmind_dsp::targets::{Codec, Format, Lossy, Target};
use loopmind_dsp::DspError;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Renders a target may take to come under its ceiling after its codecs.
const MAX_CODEC_RENDERS: u32 = 5;
/// Headroom beyond what a codec added, when a ceiling is lowered for it.
const CODEC_MARGIN_DB: f64 = 0.1;
/// How far under the loudness the model found reachable a short master is
/// first aimed (the real pass must land within ±0.1 LU of the aim), and how
/// many aims, each twice as far under, are taken under one ceiling.
const SHORT_AIM_MARGIN_LU: f64 = 0.05;
const MAX_SHORT_AIMS: u32 = 6;
/// A long master's first check under `enforce` is a probe: in each of
/// `PROBE_REGIONS` equal stretches, `PROBE_SPAN_S` around the hottest block
/// (with the regions' rolls), where that covers at most `PROBE_ABOVE` of
/// the master. Most first renders come over and are rendered again, and a
/// probe costs about a sixth of a full check (bench/RESULTS.md, "Probes").
const PROBE_REGIONS: u64 = 8;
const PROBE_SPAN_S: f64 = 4.0;
const PROBE_ABOVE: f64 = 0.35;
/// A probe reads a sample, so it can read less than the whole file: on the
/// development tracks up to 0.35 dB less (CODEC_MARGIN_DB covers 0.1 of it).
const PROBE_MARGIN_DB: f64 = 0.25;

/// A master shipped under its target's loudness.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Shortfall {
    /// The loudness the master was made at (what was reachable).
    pub aimed_lufs: f64,
    /// The target's loudness minus `aimed_lufs`.
    pub short_lu: f64,
}

/// What every target of a track shares.
pub(crate) struct How<'a> {
    pub limiter: &'a LimiterSettings,
    pub pre_gain_db: f64,
    pub seed: u64,
    pub tags: &'a crate::decode::Tags,
    pub out_dir: &'a Path,
    /// Where encodes are made before they are kept or dropped.
    pub work: &'a Path,
    pub opts: &'a RenderInputs,
}

/// An encoded deliverable beside the WAV.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EncodedFile {
    pub format: Format,
    /// The bitrate of a lossy one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbps: Option<u32>,
    pub file: String,
}

impl EncodedFile {
    /// The codec of a lossy deliverable.
    pub fn codec(&self) -> Option<Codec> {
        Some(Codec {
            format: self.format.lossy()?,
            kbps: self.kbps?,
        })
    }
}

pub(crate) struct Rendered {
    pub master: TargetMaster,
    /// Every codec the master was encoded with, decoded and measured.
    pub codecs: Vec<CodecReport>,
    /// The ceiling the master was made under, where the check lowered it.
    pub codec_ceiling_dbtp: Option<f64>,
    pub files: Vec<EncodedFile>,
    /// Why this target's master was not shipped: under `enforce`, no
    /// ceiling brought every codec's decode under the target's while
    /// reaching its loudness. `master` and `codecs` are the last render's.
    pub withheld: Option<String>,
    /// Where the target's loudness was out of reach by no more than the
    /// request's tolerance: what the master was made at instead.
    pub short: Option<Shortfall>,
}

/// The codec a deliverable `format` of `t` is encoded with: the platform's
/// own bitrate where it streams that format, else a high one.
pub(crate) fn deliverable_codec(t: &Target, format: Lossy) -> Codec {
    t.codecs
        .iter()
        .copied()
        .filter(|c| c.format == format)
        .max_by_key(|c| c.kbps)
        .unwrap_or(Codec {
            format,
            kbps: match format {
                Lossy::Aac => 256,
                Lossy::Mp3 => 320,
                Lossy::Opus => 160,
                Lossy::Vorbis => 320,
            },
        })
}

/// Renders `t`'s master to `<out_dir>/<target>.wav`, checks it and writes
/// its deliverables.
pub(crate) fn render(prep: &Prepared, t: &Target, how: &How) -> Result<Rendered, WorkerError> {
    let opts = how.opts;
    let path = how.out_dir.join(crate::layout::master_file(&t.name));
    let (deliver, all) = codecs_of(t, opts);
    let mut run = all.clone();
    // Readings of codecs not checked again since an earlier render.
    let mut carried: Vec<CodecReport> = Vec::new();
    let mut under = t.clone();
    let mut search = Search::default();
    loop {
        let mut sink = WavSink::new(&path, prep.channels, prep.rate, t.bits);
        let m = match master_target(
            prep,
            &under,
            how.limiter,
            how.pre_gain_db,
            how.seed,
            &mut sink,
        ) {
            Err(DspError::Unreachable { reached_lufs, .. }) => {
                match search.unreachable(t, &mut under, &path, reached_lufs, opts) {
                    Some(ended) => return ended,
                    None => continue,
                }
            }
            other => other?,
        };
        search.renders += 1;
        sink.commit(how.tags)?;
        let lowered = (under.ceiling_dbtp < t.ceiling_dbtp).then_some(under.ceiling_dbtp);
        let tags = file_tags(how.tags, &m);
        let levels = MasterLevels {
            true_peak_dbtp: m.measured.true_peak_dbtp,
            integrated_lufs: m.measured.loudness.integrated_lufs,
        };
        let enforce = opts.request.codec_check() == CodecCheck::Enforce;
        let probing = enforce && search.renders == 1;
        let checked = match run.is_empty() {
            true => Vec::new(),
            false => {
                crate::progress::stage(&format!("encoding {} for its codecs", t.name));
                let codecs = (run.as_slice(), deliver.as_slice());
                let mut fresh = check_master(&path, levels, codecs, t, how, &tags, probing)?;
                fresh
                    .iter_mut()
                    .for_each(|(r, _)| r.render = search.renders);
                fresh.extend(carried.iter().cloned().map(|r| (r, None)));
                fresh.sort_by_key(|(r, _)| all.iter().position(|c| *c == r.codec));
                fresh
            }
        };
        let over = checked.iter().any(|(r, _)| r.over(t.ceiling_dbtp));
        if !over || !enforce {
            let mut files: Vec<EncodedFile> = flac(t, &path, &tags, how)?.into_iter().collect();
            files.extend(keep(t, &deliver, &checked, how.out_dir)?);
            return Ok(Rendered {
                master: m,
                files,
                codecs: checked.into_iter().map(|(r, _)| r).collect(),
                codec_ceiling_dbtp: lowered,
                withheld: None,
                short: search.short,
            });
        }
        if search.renders >= MAX_CODEC_RENDERS {
            return search.still_over(t, &path, m, checked, under.ceiling_dbtp);
        }
        (run, carried) = recheck(&checked, &deliver, t.ceiling_dbtp);
        search.lower(t, &mut under, m, checked);
    }
}

/// How near its ceiling (dB) a codec's decode may come and not be checked
/// again when the ceiling is lowered for another codec.
const RECHECK_NEAR_DB: f64 = 0.5;

/// After a check with a codec over: the codecs to check on the next render
/// (those over or within [`RECHECK_NEAR_DB`], those a probe read, and the
/// deliverables, whose files are of the final master), and the readings
/// carried as they are.
fn recheck(
    checked: &[Checked],
    deliver: &[Codec],
    ceiling_dbtp: f64,
) -> (Vec<Codec>, Vec<CodecReport>) {
    let (again, keep): (Vec<&Checked>, Vec<&Checked>) = checked.iter().partition(|(r, _)| {
        r.probe || deliver.contains(&r.codec) || r.over(ceiling_dbtp - RECHECK_NEAR_DB)
    });
    (
        again.into_iter().map(|(r, _)| r.codec).collect(),
        keep.into_iter().map(|(r, _)| r.clone()).collect(),
    )
}

/// The codecs a target's deliverables are encoded with, and every codec its
/// master is encoded with: its platform's (unless the check is off) and
/// the deliverables'.
fn codecs_of(t: &Target, opts: &RenderInputs) -> (Vec<Codec>, Vec<Codec>) {
    let deliver: Vec<Codec> = opts
        .request
        .formats()
        .iter()
        .filter_map(|f| f.lossy())
        .map(|f| deliverable_codec(t, f))
        .collect();
    let mut run: Vec<Codec> = match opts.request.codec_check() {
        CodecCheck::Off => Vec::new(),
        _ => t.codecs.clone(),
    };
    for d in &deliver {
        if !run.contains(d) {
            run.push(*d);
        }
    }
    (deliver, run)
}

/// The tags of an encode of master `m`: the track's and its loudness.
fn file_tags(track: &crate::decode::Tags, m: &TargetMaster) -> FileTags {
    FileTags {
        track: track.clone(),
        lufs: Some(m.measured.loudness.integrated_lufs),
        peak: Some(loopmind_dsp::db_to_lin(
            m.measured.loudness.sample_peak_dbfs,
        )),
    }
}

/// Where enforce's search for a ceiling the codecs keep under stands.
#[derive(Default)]
struct Search {
    renders: u32,
    /// (limiter ceiling, worst decoded peak) of the last render, for the step.
    last: Option<(f64, f64)>,
    /// The last render and its readings, for a target withheld after it.
    prev: Option<(TargetMaster, Vec<CodecReport>)>,
    /// The loudness aimed at instead of the target's, where it was short.
    short: Option<Shortfall>,
    /// Loudness aims taken below the target's under the ceiling `aimed_under`.
    aims: u32,
    aimed_under: Option<f64>,
}

impl Search {
    /// Lowers `under`'s ceiling for the next render: what the worst codec
    /// put over the target's ceiling comes off the master's, with a margin.
    /// Deeper limiting at the same loudness makes the encode add more, so
    /// from the second try on the step is scaled by how much the decoded
    /// peak moved per dB of ceiling.
    fn lower(&mut self, t: &Target, under: &mut Target, m: TargetMaster, checked: Vec<Checked>) {
        // A probe's reading stands for the whole file's plus a margin, and
        // is no point of the ceiling-to-peak slope.
        let worst = checked
            .iter()
            .map(|(r, _)| {
                let probe = if r.probe { PROBE_MARGIN_DB } else { 0.0 };
                r.true_peak_dbtp.max(r.true_peak_bs1770_dbtp) + probe
            })
            .fold(f64::NEG_INFINITY, f64::max);
        let probed = checked.iter().any(|(r, _)| r.probe);
        let over_db = worst - t.ceiling_dbtp + CODEC_MARGIN_DB;
        let per_db = self
            .last
            .filter(|(c, _)| (c - under.ceiling_dbtp).abs() > 1e-6)
            .map_or(1.0, |(c, w)| {
                ((w - worst) / (c - under.ceiling_dbtp)).clamp(0.3, 1.0)
            });
        self.last = (!probed).then_some((under.ceiling_dbtp, worst));
        self.prev = Some((m, drop_encodes(checked)));
        under.ceiling_dbtp -= over_db / per_db;
        tracing::info!(
            target = %t.name,
            worst_dbtp = worst,
            ceiling_dbtp = under.ceiling_dbtp,
            "over its ceiling after encoding: rendering again under a lower ceiling"
        );
    }

    /// `under`'s loudness is out of reach: aimed lower (None: render again)
    /// where the shortfall is within the tolerance, else withheld (after a
    /// render under a ceiling its codecs asked for) or the track's error.
    fn unreachable(
        &mut self,
        t: &Target,
        under: &mut Target,
        path: &Path,
        reached_lufs: f64,
        opts: &RenderInputs,
    ) -> Option<Result<Rendered, WorkerError>> {
        if let Some(aim) = self.short_aim(t, under, reached_lufs, opts) {
            under.lufs = aim;
            self.short = Some(Shortfall {
                aimed_lufs: aim,
                short_lu: t.lufs - aim,
            });
            return None;
        }
        if self.prev.is_some() {
            let ceiling = under.ceiling_dbtp;
            return Some(std::mem::take(self).out_of_reach(t, path, ceiling, reached_lufs, opts));
        }
        // Out of reach under the target's own ceiling: the track's error.
        Some(Err(DspError::Unreachable {
            target_lufs: t.lufs,
            ceiling_dbtp: under.ceiling_dbtp,
            reached_lufs,
        }
        .into()))
    }

    /// The loudness to aim at instead of `t`'s, out of reach under `under`'s
    /// ceiling (the model got `reached_lufs` at most), where the shortfall
    /// is within the request's tolerance. Near the limiter's honest maximum
    /// loudness grows by little per dB of gain: each further miss aims twice
    /// as far under what was reachable.
    fn short_aim(
        &mut self,
        t: &Target,
        under: &Target,
        reached_lufs: f64,
        opts: &RenderInputs,
    ) -> Option<f64> {
        // Each ceiling the codecs ask for starts its own aims.
        if self.aimed_under != Some(under.ceiling_dbtp) {
            self.aimed_under = Some(under.ceiling_dbtp);
            self.aims = 0;
        }
        if !reached_lufs.is_finite() || self.aims >= MAX_SHORT_AIMS {
            return None;
        }
        self.aims += 1;
        let margin = SHORT_AIM_MARGIN_LU * f64::from(1u32 << (self.aims - 1));
        let aim = reached_lufs.min(under.lufs) - margin;
        (t.lufs - aim <= opts.request.shortfall_tolerance_lu() + 1e-9).then_some(aim)
    }

    /// The loudness cannot be reached under the ceiling the codecs need,
    /// not even within the tolerance: the previous render's readings go in
    /// the report.
    fn out_of_reach(
        self,
        t: &Target,
        path: &Path,
        ceiling_dbtp: f64,
        reached_lufs: f64,
        opts: &RenderInputs,
    ) -> Result<Rendered, WorkerError> {
        let (m, codecs) = self.prev.expect("a render before this one");
        let tolerance = opts.request.shortfall_tolerance_lu();
        let short = t.lufs - reached_lufs;
        let why = if short > tolerance {
            format!("{short:.2} LU short, more than the {tolerance} LU the request tolerates")
        } else {
            format!("no loudness within the {tolerance} LU the request tolerates came under it")
        };
        let reason = format!(
            "{} LUFS is out of reach under the {ceiling_dbtp:.2} dBTP ceiling its codecs need \
             (reached {reached_lufs:.2} LUFS: {why}); not shipping a master that clips once \
             encoded (--codec-check report keeps it and says so)",
            t.lufs
        );
        withhold(t, path, m, codecs, ceiling_dbtp, reason)
    }

    /// The last render allowed is still over after its codecs.
    fn still_over(
        self,
        t: &Target,
        path: &Path,
        m: TargetMaster,
        checked: Vec<Checked>,
        ceiling_dbtp: f64,
    ) -> Result<Rendered, WorkerError> {
        let (r, _) = checked
            .iter()
            .find(|(r, _)| r.over(t.ceiling_dbtp))
            .expect("one is over");
        let reason = format!(
            "after {} renders {} still peaks at {:.2} dBTP ({} samples over full \
             scale) against a ceiling of {} dBTP",
            self.renders, r.codec, r.true_peak_dbtp, r.samples_over, t.ceiling_dbtp
        );
        let codecs = drop_encodes(checked);
        withhold(t, path, m, codecs, ceiling_dbtp, reason)
    }
}

/// A codec's readings of a master, and its encode where the whole file was
/// encoded (a deliverable's is kept).
type Checked = (CodecReport, Option<PathBuf>);

/// Every codec of `run` on the master at `path`: the deliverables' (and a
/// codec whose regions would cover most of the master) encoded whole, the
/// others only where the master comes near its ceiling ([`regions`]). In
/// the order of `run`.
fn verify(
    path: &Path,
    levels: MasterLevels,
    (run, deliver): (&[Codec], &[Codec]),
    t: &Target,
    how: &How,
    tags: &FileTags,
    (probing, hot): (bool, &mut Option<regions::Hot>),
) -> Result<Vec<Checked>, WorkerError> {
    let limits = &how.opts.limits;
    // A probe encodes a deliverable's whole file only on the final master.
    let (mut whole, maybe): (Vec<Codec>, Vec<Codec>) = run
        .iter()
        .partition(|c| (!probing && deliver.contains(c)) || !regions::settles(**c));
    let mut parts: Vec<(Codec, Vec<regions::Region>, bool)> = Vec::new();
    // The master is read for its hot stretches only where a region check
    // could use them.
    if !maybe.is_empty() {
        let hot = match hot {
            Some(h) => h,
            None => hot.insert(regions::hot_spans(path, limits, t.ceiling_dbtp)?),
        };
        for c in maybe {
            let span = (PROBE_SPAN_S * hot.rate as f64) as u64;
            let probe = regions::probe(hot, c, PROBE_REGIONS, span);
            if probing && regions::coverage(&probe, hot.frames) <= PROBE_ABOVE {
                parts.push((c, probe, true));
                continue;
            }
            let rs = regions::regions(hot, c);
            match deliver.contains(&c) || regions::coverage(&rs, hot.frames) > regions::WHOLE_ABOVE
            {
                true => whole.push(c),
                false => parts.push((c, rs, false)),
            }
        }
    }
    let threads = how.opts.threads.max(1);
    // On one thread the whole-file codecs share one read of the master.
    let whole: Vec<Vec<Codec>> = match threads {
        1 => vec![whole],
        _ => whole.into_iter().map(|c| vec![c]).collect(),
    };
    let tasks: Vec<Task> = whole
        .into_iter()
        .filter(|w| !w.is_empty())
        .map(Task::Whole)
        .chain(parts.into_iter().map(|(c, rs, p)| Task::Regions(c, rs, p)))
        .collect();
    let done = parallel(&tasks, threads, |task| match task {
        Task::Whole(codecs) => check::check(path, levels, codecs, how.work, &t.name, tags, limits)
            .map(|v| v.into_iter().map(|(r, p)| (r, Some(p))).collect::<Vec<_>>()),
        Task::Regions(c, rs, probe) => {
            let r = regions::check(path, *c, rs, levels, how.work, &t.name, limits);
            r.map(|r| vec![(CodecReport { probe: *probe, ..r }, None)])
        }
    });
    let mut out: Vec<Checked> = Vec::new();
    for d in done {
        out.extend(d?);
    }
    out.sort_by_key(|(r, _)| run.iter().position(|c| *c == r.codec));
    Ok(out)
}

/// A master's codec check: where `probing`, a probe first ([`PROBE_REGIONS`]),
/// which is the answer where it reads a codec over (the master is rendered
/// again); else, and where not probing, every codec's verdict, the whole-file
/// readings the probe took kept.
fn check_master(
    path: &Path,
    levels: MasterLevels,
    (run, deliver): (&[Codec], &[Codec]),
    t: &Target,
    how: &How,
    tags: &FileTags,
    probing: bool,
) -> Result<Vec<Checked>, WorkerError> {
    let mut hot = None;
    let codecs = (run, deliver);
    if !probing {
        return verify(path, levels, codecs, t, how, tags, (false, &mut hot));
    }
    let probe = verify(path, levels, codecs, t, how, tags, (true, &mut hot))?;
    if probe.iter().any(|(r, _)| r.over(t.ceiling_dbtp)) {
        return Ok(probe);
    }
    let (sampled, mut done): (Vec<Checked>, Vec<Checked>) =
        probe.into_iter().partition(|(r, _)| r.probe);
    let rest: Vec<Codec> = sampled.iter().map(|(r, _)| r.codec).collect();
    done.extend(verify(
        path,
        levels,
        (&rest, deliver),
        t,
        how,
        tags,
        (false, &mut hot),
    )?);
    done.sort_by_key(|(r, _)| run.iter().position(|c| *c == r.codec));
    Ok(done)
}

/// One thread's share of a target's codec check.
enum Task {
    /// These codecs over the whole master, in one read of it.
    Whole(Vec<Codec>),
    /// One codec over these regions (a probe's, or a verdict's).
    Regions(Codec, Vec<regions::Region>, bool),
}

/// `f` over `items` on up to `threads` threads (on the calling one alone
/// for one), the results in the items' order.
fn parallel<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    if threads <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            let r = m.into_inner().unwrap_or_else(|p| p.into_inner());
            r.expect("every item ran")
        })
        .collect()
}

/// The readings of a check whose encodes are not kept.
fn drop_encodes(checked: Vec<Checked>) -> Vec<CodecReport> {
    checked
        .into_iter()
        .map(|(r, p)| {
            if let Some(p) = p {
                let _ = fs::remove_file(p);
            }
            r
        })
        .collect()
}

/// A target whose codecs would clip its master: the WAV goes (no reader may
/// take it for a finished master), the readings stay for the report.
fn withhold(
    t: &Target,
    path: &Path,
    master: TargetMaster,
    codecs: Vec<CodecReport>,
    ceiling_dbtp: f64,
    reason: String,
) -> Result<Rendered, WorkerError> {
    tracing::warn!(target = %t.name, %reason, "master withheld");
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(WorkerError::io(path, e)),
        _ => {}
    }
    Ok(Rendered {
        master,
        codecs,
        codec_ceiling_dbtp: Some(ceiling_dbtp),
        files: Vec::new(),
        withheld: Some(reason),
        short: None,
    })
}

/// Moves the deliverables' encodes beside the WAV (the work folder is on
/// the same filesystem: a rename, so no reader sees half a file) and drops
/// the check's other encodes.
fn keep(
    t: &Target,
    deliver: &[Codec],
    checked: &[Checked],
    out_dir: &Path,
) -> Result<Vec<EncodedFile>, WorkerError> {
    let mut files = Vec::new();
    for (r, p) in checked {
        let Some(p) = p else { continue };
        if deliver.contains(&r.codec) {
            let file = crate::layout::encoded_file(&t.name, r.codec.format.into());
            let to = out_dir.join(&file);
            fs::rename(p, &to).map_err(|e| WorkerError::io(&to, e))?;
            files.push(EncodedFile {
                format: r.codec.format.into(),
                kbps: Some(r.codec.kbps),
                file,
            });
        } else {
            let _ = fs::remove_file(p);
        }
    }
    Ok(files)
}

/// The FLAC deliverable of the accepted master, where asked for: written
/// in the work folder and renamed beside the WAV, so no reader sees half a file.
fn flac(
    t: &Target,
    master: &Path,
    tags: &FileTags,
    how: &How,
) -> Result<Option<EncodedFile>, WorkerError> {
    if !how.opts.request.formats().contains(&Format::Flac) {
        return Ok(None);
    }
    crate::progress::stage(&format!("writing {} as FLAC", t.name));
    let file = crate::layout::encoded_file(&t.name, Format::Flac);
    let to = how.out_dir.join(&file);
    let part = how.work.join(&file);
    crate::codec::flac::write(master, &part, tags).map_err(|e| {
        let _ = fs::remove_file(&part);
        WorkerError::Encode {
            path: to.clone(),
            reason: e.to_string(),
        }
    })?;
    fs::rename(&part, &to).map_err(|e| WorkerError::io(&to, e))?;
    Ok(Some(EncodedFile {
        format: Format::Flac,
        kbps: None,
        file,
    }))
}

#[cfg(test)]
mod tests {
    use super::parallel;

    /// Every item runs once, on several threads, and the results keep the
    /// items' order whatever order the threads finish in.
    #[test]
    fn parallel_keeps_order_and_runs_everything_once() {
        let items: Vec<u64> = (0..40).collect();
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        let out = parallel(&items, 4, |&i| {
            threads.lock().unwrap().insert(std::thread::current().id());
            // Later items finish first.
            std::thread::sleep(std::time::Duration::from_millis(40 - i));
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(threads.lock().unwrap().len() > 1, "ran on one thread");
        let one = parallel(&items, 1, |&i| (i, std::thread::current().id()));
        assert!(one.iter().all(|(_, t)| *t == std::thread::current().id()));
    }
}
