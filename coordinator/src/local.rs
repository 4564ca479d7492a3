//! Local mode: the distributed pipeline on one machine. The files become a
//! catalog run by the same [`runner`](crate::runner) as `loopmind
//! coordinator`, on an in-process queue whose tasks run the worker's job
//! step, against a folder store rooted at the output directory: the same
//! validation, jobs, album passes, retries, resume and summary.

use crate::runner::{self, Catalog};
use crate::MasterArgs;
use anyhow::{bail, Context, Result};
use loopmind_dsp::targets::Target;
use loopmind_worker::config::Settings;
use loopmind_worker::isolate::Isolation;
use loopmind_worker::job::{GivenPlan, TrackSpec};
use loopmind_worker::layout::{safe_name, LOCAL_CATALOG};
use loopmind_worker::metrics::Metrics;
use loopmind_worker::queue::breaker::StoreBreaker;
use loopmind_worker::queue::inprocess::InProcessQueue;
use loopmind_worker::queue::WorkerCtx;
use loopmind_worker::report::MasterSettings;
use loopmind_worker::store::{FolderStore, ObjectStore};
use loopmind_worker::RenderOptions;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

pub fn master(args: &MasterArgs, settings: &Settings, iso: &Isolation) -> Result<bool> {
    let targets = args.resolve_targets()?;
    let mut opts = RenderOptions {
        targets,
        mode: args.mode,
        sliders: args.sliders()?,
        limits: (&iso.limits).into(),
        codec_check: args.codec_check.unwrap_or_default(),
        formats: args.resolve_formats()?,
        ..Default::default()
    };
    if let Some(path) = &args.settings {
        given_settings(path, &mut opts, iso.limits.max_document_kib)?;
        if let Some(c) = args.codec_check {
            opts.codec_check = c;
        }
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
    run_batch(
        jobs,
        &args.out,
        &opts,
        threads,
        args.album.as_deref(),
        settings,
        iso,
    )
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
                codecs: t.codecs.clone(),
            })
            .collect();
    }
    opts.mode = s.mode;
    opts.sliders = s.sliders;
    opts.codec_check = s.codec_check;
    opts.plan = Some(GivenPlan {
        global: s.global,
        sections: s.sections,
        tempo_bpm: s.tempo_bpm,
    });
    opts.validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(())
}

/// Masters `files` into `out` as one catalog run: prints the summary and
/// saves it beside the outputs; true when every track was mastered. With
/// `album`, the files are one album sharing a loudness offset.
pub fn run_batch(
    files: Vec<LocalJob>,
    out: &Path,
    opts: &RenderOptions,
    threads: usize,
    album: Option<&str>,
    settings: &Settings,
    iso: &Isolation,
) -> Result<bool> {
    std::fs::create_dir_all(out)?;
    let _lock = lock_folder(out)?;
    let abs = |p: &Path| std::path::absolute(p).map(|p| p.display().to_string());
    let mut tracks = Vec::new();
    for f in &files {
        tracks.push(TrackSpec {
            track: f.track.clone(),
            // Absolute paths: the folder store reads them where they are.
            source: abs(&f.input)?,
            arrangement: f.arrangement.as_deref().map(abs).transpose()?,
            emotion_graph: f.emotion.as_deref().map(abs).transpose()?,
            targets: opts.targets.clone(),
            mode: opts.mode,
            sliders: opts.sliders,
            album: album.map(str::to_string),
            reference: opts.reference.as_ref().map(|(_, p)| abs(p)).transpose()?,
            plan: opts.plan.clone(),
            codec_check: opts.codec_check,
            formats: opts.formats.clone(),
        });
    }
    let cat = Catalog {
        problems: Vec::new(),
        name: LOCAL_CATALOG.into(),
        tracks,
    };
    let store: Arc<dyn ObjectStore> = Arc::new(FolderStore::new(out));
    // Scratch beside the outputs: publishing a master is a rename.
    let scratch = out.join(".loopmind-scratch");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let finished = rt.block_on(async {
        let ctx = WorkerCtx {
            store: store.clone(),
            scratch: scratch.clone(),
            iso: iso.clone(),
            metrics: Arc::new(Metrics::new()),
            breaker: Arc::new(StoreBreaker::new(Duration::from_secs(
                settings.worker.store_probe_s,
            ))),
            max_backoff: Duration::from_secs(8),
        };
        let mut queue = InProcessQueue::new(ctx, threads, settings.queue.delivery_limit);
        runner::run(&cat, store, &mut queue, settings).await
    });
    let _ = std::fs::remove_dir(&scratch);
    Ok(finished?.all_ok)
}

/// One run per output folder at a time: a second is refused, naming the
/// first (its `running.json`).
fn lock_folder(out: &Path) -> Result<std::fs::File> {
    let path = out.join(".loopmind.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("{}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            let who = std::fs::read_to_string(
                out.join(loopmind_worker::layout::running_key(LOCAL_CATALOG)),
            )
            .unwrap_or_else(|_| "unknown".into());
            bail!(
                "another `loopmind master` is writing to {} ({}); wait for it to finish, then run again (finished tracks are skipped)",
                out.display(),
                who.trim()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("{}", path.display()))
        }
    }
}
