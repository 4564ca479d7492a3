//! Local mode: the distributed pipeline on one machine. Tracks become jobs on
//! an in-process queue; a few tasks take them and run the worker's
//! [`process_job`], the function queue workers run, against a folder store
//! rooted at the output directory.

use crate::summary::{Summary, TrackOutcome};
use crate::MasterArgs;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use loopmind_dsp::targets::Target;
use loopmind_worker::isolate::Isolation;
use loopmind_worker::job::{settings_hash, GivenPlan, Job, JobKind, JobResult};
use loopmind_worker::layout::{safe_name, track_prefix, LOCAL_CATALOG};
use loopmind_worker::process::{process_job, Disposition, ERROR};
use loopmind_worker::report::MasterSettings;
use loopmind_worker::store::{FolderStore, ObjectStore};
use loopmind_worker::RenderOptions;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Extensions picked up when walking a directory (files named explicitly are
/// always tried: their format is detected from their bytes).
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "aif", "aiff", "aifc", "mp3", "ogg", "oga", "m4a", "mp4", "aac", "caf",
    "mka", "webm",
];

pub struct LocalJob {
    pub track: String,
    pub input: PathBuf,
    /// Arrangement and emotion documents: given, or found beside the mix
    /// as `<stem>.arrangement.json` / `<stem>.emotion.json`.
    pub arrangement: Option<PathBuf>,
    pub emotion: Option<PathBuf>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| AUDIO_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Files to master, each with a unique track name (its stem; stems shared by
/// two files get the extension appended).
pub fn collect_jobs(inputs: &[PathBuf], out_dir: &Path) -> Result<Vec<LocalJob>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            // Never re-master our own output if it sits under an input folder.
            found.retain(|p| !p.starts_with(out_dir));
            files.extend(found);
        } else if input.exists() {
            files.push(input.clone());
        } else {
            bail!("{}: no such file or directory", input.display());
        }
    }
    // Track names become folder names: made safe (a file called `...wav`
    // has the stem `..`).
    let stem = |p: &Path| safe_name(&p.file_stem().map_or("".into(), |s| s.to_string_lossy()));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for f in &files {
        *counts.entry(stem(f)).or_default() += 1;
    }
    let mut seen = HashMap::new();
    let mut jobs = Vec::new();
    for f in files {
        let mut track = stem(&f);
        if counts[&track] > 1 {
            let ext = f
                .extension()
                .map_or(String::new(), |e| e.to_string_lossy().to_string());
            track = safe_name(&format!("{track}-{ext}"));
            let n = seen.entry(track.clone()).or_insert(0usize);
            *n += 1;
            if *n > 1 {
                track = format!("{track}-{n}");
            }
        }
        let beside = |kind: &str| {
            let raw = f.file_stem().map_or("".into(), |s| s.to_string_lossy());
            let p = f.with_file_name(format!("{raw}.{kind}.json"));
            p.exists().then(|| std::path::absolute(&p).unwrap_or(p))
        };
        jobs.push(LocalJob {
            track,
            arrangement: beside("arrangement"),
            emotion: beside("emotion"),
            input: f,
        });
    }
    if jobs.is_empty() {
        bail!("no audio files found in the inputs");
    }
    Ok(jobs)
}

/// Runs every job through the worker's [`process_job`] against a folder
/// store rooted at `out`, `threads` at a time from an in-process queue;
/// returns results in input order.
fn run_queue(
    jobs: Vec<Job>,
    out: &Path,
    threads: usize,
    what: &str,
    iso: &Isolation,
) -> Result<Vec<JobResult>> {
    let total = jobs.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} tracks  {{elapsed_precise}}  {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    for job in jobs.into_iter().enumerate() {
        tx.send(job).expect("queue open");
    }
    drop(tx);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let store: Arc<dyn ObjectStore> = Arc::new(FolderStore::new(out));
    // Scratch beside the outputs: publishing a master is a rename.
    let scratch = out.join(".loopmind-scratch");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..threads.clamp(1, total.max(1)) {
            let (rx, store, scratch, bar, iso) = (
                rx.clone(),
                store.clone(),
                scratch.clone(),
                bar.clone(),
                iso.clone(),
            );
            tasks.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let Some((idx, job)) = rx.lock().await.recv().await else {
                        break;
                    };
                    bar.set_message(job.track.clone());
                    let o = process_job(&job, store.as_ref(), &scratch, &iso).await;
                    if o.disposition == Disposition::Requeue {
                        // No queue to hand it back to: record the failure.
                        if let Some(e) = &o.result.error {
                            let body = serde_json::to_vec_pretty(e).expect("serialises");
                            let _ = store.put_bytes(&job.output_key(ERROR), body).await;
                        }
                    }
                    done.push((idx, o.result));
                    bar.inc(1);
                }
                done
            });
        }
        let mut all = Vec::with_capacity(total);
        while let Some(r) = tasks.join_next().await {
            all.extend(r.expect("local worker task"));
        }
        all
    });
    bar.finish_and_clear();
    let _ = std::fs::remove_dir(&scratch);
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// Masters every file as one job each; with `album`, all of them form one
/// album sharing a loudness offset (measured first, then rendered).
pub fn run_jobs(
    files: Vec<LocalJob>,
    out: &Path,
    opts: &RenderOptions,
    threads: usize,
    album: Option<&str>,
    iso: &Isolation,
) -> Result<Vec<TrackOutcome>> {
    // The folder store reads absolute paths where they are.
    let reference = opts
        .reference
        .as_ref()
        .map(|(_, p)| std::path::absolute(p).map(|p| p.display().to_string()))
        .transpose()?;
    let hash = settings_hash(
        &opts.targets,
        opts.mode,
        opts.sliders,
        album,
        opts.plan.as_ref(),
        reference.as_deref(),
    );
    let mut jobs = Vec::new();
    for j in &files {
        jobs.push(Job {
            schema_version: Default::default(),
            job_id: format!("{LOCAL_CATALOG}/{}@{hash}", j.track),
            catalog: LOCAL_CATALOG.into(),
            track: j.track.clone(),
            // An absolute path: the folder store reads the mix where it is.
            source: std::path::absolute(&j.input)?.display().to_string(),
            arrangement: j.arrangement.as_ref().map(|p| p.display().to_string()),
            emotion_graph: j.emotion.as_ref().map(|p| p.display().to_string()),
            sliders: opts.sliders,
            targets: opts.targets.clone(),
            mode: opts.mode,
            output_prefix: track_prefix(LOCAL_CATALOG, &j.track),
            settings_hash: hash.clone(),
            kind: JobKind::Render,
            album: None,
            plan: opts.plan.clone(),
            reference: reference.clone(),
        });
    }
    let mut failed_early: HashMap<String, JobResult> = HashMap::new();
    if let Some(name) = album {
        let measure: Vec<Job> = jobs
            .iter()
            .map(|j| Job {
                kind: JobKind::Measure,
                ..j.clone()
            })
            .collect();
        let mut measured = HashMap::new();
        for r in run_queue(measure, out, threads, "measuring", iso)? {
            match r.measurement {
                Some(m) => {
                    measured.insert(r.track.clone(), m);
                }
                None => {
                    failed_early.insert(r.track.clone(), r);
                }
            }
        }
        let members: Vec<(&str, &str)> = jobs.iter().map(|j| (j.track.as_str(), name)).collect();
        let offsets = crate::album::offsets(&members, &measured);
        for j in &mut jobs {
            j.album = offsets.get(&j.track).cloned();
        }
        jobs.retain(|j| j.album.is_some());
    }
    let mut by_track: HashMap<String, JobResult> = failed_early;
    for r in run_queue(jobs, out, threads, "mastering", iso)? {
        by_track.insert(r.track.clone(), r);
    }
    Ok(files
        .iter()
        .map(|f| {
            let r = &by_track[&f.track];
            TrackOutcome::from_result(r, &f.input.display().to_string(), &format!("{}/", f.track))
        })
        .collect())
}

pub fn master(args: &MasterArgs, iso: &Isolation) -> Result<bool> {
    let targets = args.resolve_targets()?;
    let mut opts = RenderOptions {
        targets,
        mode: args.mode,
        sliders: args.sliders()?,
        limits: (&iso.limits).into(),
        ..Default::default()
    };
    if let Some(path) = &args.settings {
        given_settings(path, &mut opts, iso.limits.max_document_kib)?;
    }
    if let Some(path) = &args.reference {
        if !path.is_file() {
            bail!("--reference {}: no such file", path.display());
        }
        opts.reference = Some((path.display().to_string(), path.clone()));
    }
    opts.validate()?;
    std::fs::create_dir_all(&args.out)?;
    let mut jobs = collect_jobs(&args.inputs, &args.out)?;
    if args.settings.is_some() && jobs.len() != 1 {
        bail!("--settings is the plan of one track; give one input");
    }
    if args.arrangement.is_some() || args.emotion.is_some() {
        if jobs.len() != 1 {
            bail!("--arrangement and --emotion are for a single track; for batches put <stem>.arrangement.json / <stem>.emotion.json beside each mix");
        }
        let job = &mut jobs[0];
        for (given, slot) in [
            (&args.arrangement, &mut job.arrangement),
            (&args.emotion, &mut job.emotion),
        ] {
            if let Some(p) = given {
                if !p.is_file() {
                    bail!("{}: no such file", p.display());
                }
                *slot = Some(std::path::absolute(p)?);
            }
        }
    }
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    run_and_summarise(jobs, &args.out, &opts, threads, args.album.as_deref(), iso)
}

/// Takes the plan, mode and sliders of an earlier `master_settings.json`,
/// and its targets unless others were asked for.
fn given_settings(path: &Path, opts: &mut RenderOptions, max_kib: u64) -> Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    if size > max_kib * 1024 {
        bail!(
            "{}: {} KiB is over the limit of {max_kib} KiB (render.max_document_kib)",
            path.display(),
            size / 1024
        );
    }
    let text = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let s: MasterSettings = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a master_settings.json", path.display()))?;
    if opts.targets.is_empty() {
        opts.targets = s
            .targets
            .iter()
            .map(|t| Target {
                name: t.target.clone(),
                lufs: t.target_lufs,
                ceiling_dbtp: t.true_peak_db,
                rate: Some(t.sample_rate_hz),
                bits: t.bit_depth,
            })
            .collect();
    }
    opts.mode = s.mode;
    opts.sliders = s.sliders;
    opts.plan = Some(GivenPlan {
        global: s.global,
        sections: s.sections,
        tempo_bpm: s.tempo_bpm,
    });
    opts.validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(())
}

/// Runs the jobs, prints the summary and saves it beside the outputs; true
/// when every track was mastered.
pub fn run_and_summarise(
    jobs: Vec<LocalJob>,
    out: &Path,
    opts: &RenderOptions,
    threads: usize,
    album: Option<&str>,
    iso: &Isolation,
) -> Result<bool> {
    let outcomes = run_jobs(jobs, out, opts, threads, album, iso)?;
    let summary = Summary::new("local", &outcomes);
    summary.print();
    let store = FolderStore::new(out);
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(summary.save(&store, ""))?;
    Ok(summary.all_ok())
}
