//! Local mode: the distributed pipeline on one machine. The files become a
//! catalog run by the same [`runner`](crate::runner) as `loopmind
//! coordinator`, on an in-process queue whose tasks run the worker's job
//! step, against a folder store rooted at the output directory: the same
//! validation, jobs, album passes, retries, resume and summary.

use crate::runner::{self, Catalog};
use crate::summary::TrackOutcome;
use crate::MasterArgs;
use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use loopmind_worker::config::Settings;
use loopmind_worker::isolate::Isolation;
use loopmind_worker::job::TrackSpec;
use loopmind_worker::layout::{safe_name, LOCAL_CATALOG};
use loopmind_worker::metrics::Metrics;
use loopmind_worker::queue::breaker::StoreBreaker;
use loopmind_worker::queue::inprocess::InProcessQueue;
use loopmind_worker::queue::WorkerCtx;
use loopmind_worker::report::MasterSettings;
use loopmind_worker::store::files::{read_capped, special_kind, ReadCapped};
use loopmind_worker::store::{FolderStore, ObjectStore};
use loopmind_worker::RenderRequest;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Extensions picked up when walking a directory (files named explicitly are
/// always tried: their format is detected from their bytes).
const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "aif", "aiff", "aifc", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "aac",
    "caf", "mka", "webm",
];

pub struct LocalJob {
    pub track: String,
    pub input: PathBuf,
    /// Arrangement and emotion documents: given, or found beside the mix
    /// as `<stem>.arrangement.json` / `<stem>.emotion.json`.
    pub arrangement: Option<PathBuf>,
    pub emotion: Option<PathBuf>,
    /// Why this input is no track to master (a FIFO, a link out of the
    /// input folder): the track's own error, never the batch's.
    pub refused: Option<String>,
}

/// What walking the inputs found: files to master, in order, each with
/// the reason it is refused, if it is.
type Found = Vec<(PathBuf, Option<String>)>;

/// One input folder's walk. The link policy: a link is followed when it
/// leads inside the input folder and refused when it leads outside it; a
/// folder already walked (a link loop, two links to one folder) is known
/// by its device and inode and walked once. A FIFO, device or socket with
/// an audio name is refused by name.
struct Walk {
    root: PathBuf,
    seen: std::collections::HashSet<(u64, u64)>,
    found: Found,
}

impl Walk {
    fn new(input: &Path) -> Result<Self> {
        let root = std::fs::canonicalize(input).with_context(|| format!("{}", input.display()))?;
        let m = std::fs::metadata(&root)?;
        Ok(Self {
            seen: [(m.dev(), m.ino())].into(),
            root,
            found: Vec::new(),
        })
    }

    fn dir(&mut self, dir: &Path) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("{}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if !e.file_name().to_string_lossy().starts_with('.') {
                self.entry(e.path())?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, p: PathBuf) -> Result<()> {
        let audio = is_audio(&p);
        let meta = match self.follow(&p) {
            Ok(m) => m,
            Err(why) => {
                if audio {
                    self.found.push((p, Some(why.to_string())));
                } else {
                    eprintln!("skipped {}: {why}", p.display());
                }
                return Ok(());
            }
        };
        if meta.is_dir() {
            if self.seen.insert((meta.dev(), meta.ino())) {
                self.dir(&p)?;
            }
        } else if audio {
            let why = special_kind(&meta.file_type()).map(|k| format!("{k}, not a regular file"));
            self.found.push((p, why));
        }
        Ok(())
    }

    /// What `p` names, a link followed only inside the root.
    fn follow(&self, p: &Path) -> std::result::Result<std::fs::Metadata, Refused> {
        let m = std::fs::symlink_metadata(p)?;
        if !m.is_symlink() {
            return Ok(m);
        }
        let to = std::fs::canonicalize(p).map_err(|_| Refused::BrokenLink)?;
        if !to.starts_with(&self.root) {
            return Err(Refused::Outside {
                root: self.root.clone(),
                to,
            });
        }
        Ok(std::fs::metadata(&to)?)
    }
}

/// Why the walk takes an entry for no track.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Unreadable(#[from] std::io::Error),
    #[error("a broken link")]
    BrokenLink,
    #[error("a link leading outside the input folder {} (to {})", root.display(), to.display())]
    Outside { root: PathBuf, to: PathBuf },
}

fn is_audio(p: &Path) -> bool {
    p.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| AUDIO_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
}

/// Every input: folders walked, files named explicitly taken as they are
/// (their links followed: the user named them), special files refused.
fn find_inputs(inputs: &[PathBuf], out_dir: &Path) -> Result<Found> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut walk = Walk::new(input)?;
            walk.dir(input)?;
            // Never re-master our own output if it sits under an input folder.
            walk.found.retain(|(p, _)| !p.starts_with(out_dir));
            files.extend(walk.found);
        } else if let Ok(m) = std::fs::metadata(input) {
            let why = special_kind(&m.file_type()).map(|k| format!("{k}, not a regular file"));
            files.push((input.clone(), why));
        } else {
            bail!("{}: no such file or directory", input.display());
        }
    }
    Ok(files)
}

/// Files to master, each with a unique track name (its stem; stems shared by
/// two files get the extension appended).
pub fn collect_jobs(inputs: &[PathBuf], out_dir: &Path) -> Result<Vec<LocalJob>> {
    let files = find_inputs(inputs, out_dir)?;
    // Track names become folder names: made safe (a file called `...wav`
    // has the stem `..`).
    let stem = |p: &Path| safe_name(&p.file_stem().map_or("".into(), |s| s.to_string_lossy()));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (f, _) in &files {
        *counts.entry(stem(f)).or_default() += 1;
    }
    let mut seen = HashMap::new();
    let mut jobs = Vec::new();
    for (f, refused) in files {
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
            refused,
        });
    }
    if jobs.is_empty() {
        bail!("no audio files found in the inputs");
    }
    Ok(jobs)
}

pub fn master(
    args: &MasterArgs,
    given: &ArgMatches,
    settings: &Settings,
    iso: &Isolation,
) -> Result<bool> {
    let request = request(args, given, iso.limits.max_document_kib)?;
    if let Some(path) = request.reference() {
        if !Path::new(path).is_file() {
            bail!("--reference {path}: no such file");
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let mut jobs = collect_jobs(&args.inputs, &args.out)?;
    if args.settings.is_some() && jobs.len() != 1 {
        bail!("--settings is the plan of one track; give one input");
    }
    let (arrangement, emotion) = (request.arrangement(), request.emotion_graph());
    if arrangement.is_some() || emotion.is_some() {
        if jobs.len() != 1 {
            bail!("--arrangement and --emotion are for a single track; for batches put <stem>.arrangement.json / <stem>.emotion.json beside each mix");
        }
        let job = &mut jobs[0];
        for (given, slot) in [
            (arrangement, &mut job.arrangement),
            (emotion, &mut job.emotion),
        ] {
            if let Some(p) = given.map(Path::new) {
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
    let batch = Batch {
        out: &args.out,
        request: &request,
        threads,
        album: args.album.as_deref(),
    };
    run_batch(jobs, &batch, settings, iso)
}

/// The command line's request: its flags, or with `--settings` that file's
/// plan, mode, sliders, codec check and targets under the flags given
/// explicitly (a flag left at its default does not undo the file).
fn request(args: &MasterArgs, given: &ArgMatches, max_kib: u64) -> Result<RenderRequest> {
    let targets = args.targets();
    let Some(path) = &args.settings else {
        if targets.is_empty() {
            bail!("no target: give --targets (e.g. --targets spotify,apple-music) or --lufs and --ceiling");
        }
        return Ok(args.request.clone().with_targets(targets)?);
    };
    let file = settings_layer(path, max_kib)?;
    let flags = args.request.to_layer();
    let explicit: Map<String, Value> = flags
        .iter()
        .filter(|(k, _)| given.value_source(k) == Some(ValueSource::CommandLine))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut request = RenderRequest::from_layers(&[&flags, &file, &explicit])
        .with_context(|| format!("{}", path.display()))?;
    if !targets.is_empty() {
        request = request.with_targets(targets)?;
    }
    Ok(request)
}

/// What an earlier `master_settings.json` fixes, as a request layer: its
/// plan, mode, sliders, codec check, shortfall tolerance and the targets it
/// rendered.
fn settings_layer(path: &Path, max_kib: u64) -> Result<Map<String, Value>> {
    let text = match read_capped(path, max_kib.saturating_mul(1024)) {
        Err(ReadCapped::TooLarge { .. }) => bail!(
            "{}: over the limit of {max_kib} KiB (render.max_document_kib)",
            path.display()
        ),
        read => read.with_context(|| format!("{}", path.display()))?,
    };
    let s: MasterSettings = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a master_settings.json", path.display()))?;
    let asked = s.request.to_layer();
    let mut layer: Map<String, Value> = [
        "mode",
        "dynamics",
        "reactivity",
        "amount",
        "codec_check",
        "shortfall_tolerance_lu",
    ]
    .into_iter()
    .filter_map(|k| Some((k.to_string(), asked.get(k)?.clone())))
    .collect();
    layer.insert(
        "targets".into(),
        serde_json::to_value(s.rendered_targets())?,
    );
    layer.insert("plan".into(), serde_json::to_value(s.given_plan())?);
    Ok(layer)
}

/// How a batch is run: where, with which request, how many at once, as
/// an album or not.
pub struct Batch<'a> {
    pub out: &'a Path,
    pub request: &'a RenderRequest,
    pub threads: usize,
    pub album: Option<&'a str>,
}

/// Masters `files` into `out` as one catalog run: prints the summary and
/// saves it beside the outputs; true when every track was mastered. With
/// `album`, the files are one album sharing a loudness offset.
pub fn run_batch(
    files: Vec<LocalJob>,
    batch: &Batch,
    settings: &Settings,
    iso: &Isolation,
) -> Result<bool> {
    let (out, threads) = (batch.out, batch.threads);
    std::fs::create_dir_all(out)?;
    let _lock = lock_folder(out)?;
    // Absolute paths: the folder store reads them where they are.
    let abs = |p: &Path| std::path::absolute(p).map(|p| p.display().to_string());
    let reference = batch
        .request
        .reference()
        .map(|r| abs(Path::new(r)))
        .transpose()?;
    let mut tracks = Vec::new();
    let mut refused = Vec::new();
    for f in &files {
        if let Some(why) = &f.refused {
            let source = abs(&f.input)?;
            refused.push(TrackOutcome {
                error: Some(format!("{source}: {why}")),
                ..TrackOutcome::empty(&f.track, &source)
            });
            continue;
        }
        let request = batch.request.clone().with_documents(
            f.arrangement.as_deref().map(abs).transpose()?,
            f.emotion.as_deref().map(abs).transpose()?,
            reference.clone(),
        )?;
        tracks.push(TrackSpec {
            track: f.track.clone(),
            source: abs(&f.input)?,
            album: batch.album.map(str::to_string),
            request,
        });
    }
    let cat = Catalog {
        problems: Vec::new(),
        name: LOCAL_CATALOG.into(),
        tracks,
        unplanned: Vec::new(),
        refused,
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
