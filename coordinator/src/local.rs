//! Local mode: tracks go on an in-process queue and a few threads take them,
//! each calling the worker's render function, the same one queue workers call.

use crate::summary::{self, TrackOutcome};
use crate::MasterArgs;
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use loopmind_worker::{render_track, RenderOptions};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Extensions picked up when walking a directory (files named explicitly are
/// always tried: their format is detected from their bytes).
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "aif", "aiff", "aifc", "mp3", "ogg", "oga", "m4a", "mp4", "aac", "caf",
    "mka", "webm",
];

pub struct Job {
    pub track: String,
    pub input: PathBuf,
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
pub fn collect_jobs(inputs: &[PathBuf], out_dir: &Path) -> Result<Vec<Job>> {
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
    let stem = |p: &Path| {
        p.file_stem()
            .map_or("track".into(), |s| s.to_string_lossy().to_string())
    };
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
            track = format!("{track}-{ext}");
            let n = seen.entry(track.clone()).or_insert(0usize);
            *n += 1;
            if *n > 1 {
                track = format!("{track}-{n}");
            }
        }
        jobs.push(Job { track, input: f });
    }
    if jobs.is_empty() {
        bail!("no audio files found in the inputs");
    }
    Ok(jobs)
}

/// Runs every job on `threads` workers; returns outcomes in input order.
pub fn run_jobs(
    jobs: Vec<Job>,
    out: &Path,
    opts: &RenderOptions,
    threads: usize,
) -> Vec<TrackOutcome> {
    let total = jobs.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tracks  {elapsed_precise}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, total) {
            s.spawn(|| loop {
                let Some((idx, job)) = queue.lock().expect("queue lock").pop_front() else {
                    break;
                };
                bar.set_message(job.track.clone());
                let dir = out.join(&job.track);
                // A panic in one track must not take the others down.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    render_track(&job.input, &job.track, &dir, opts)
                }));
                let outcome = match result {
                    Ok(Ok(report)) => TrackOutcome::ok(&job, report),
                    Ok(Err(e)) => TrackOutcome::failed(&job, e.to_string()),
                    Err(_) => {
                        TrackOutcome::failed(&job, "internal error (panic) while rendering".into())
                    }
                };
                results.lock().expect("results lock").push((idx, outcome));
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let mut r = results.into_inner().expect("results lock");
    r.sort_by_key(|(i, _)| *i);
    r.into_iter().map(|(_, o)| o).collect()
}

pub fn master(args: &MasterArgs) -> Result<bool> {
    let targets = args.resolve_targets()?;
    let opts = RenderOptions {
        targets,
        mode: args.mode,
        chain: None,
    };
    opts.validate()?;
    std::fs::create_dir_all(&args.out)?;
    let jobs = collect_jobs(&args.inputs, &args.out)?;
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let outcomes = run_jobs(jobs, &args.out, &opts, threads);
    summary::print(&outcomes);
    summary::save(&args.out.join("summary.json"), &outcomes)?;
    Ok(outcomes.iter().all(|o| o.error.is_none()))
}
