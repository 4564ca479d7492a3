//! One job, start to finish, against any object store: fetch the mix, render
//! every target in a scratch folder (off the async runtime), publish the
//! masters and `master_settings.json`, and `report.json` last, which marks
//! the track complete. Queue workers and local mode both run exactly this.

use crate::fence::{Fence, Fenced};
use crate::isolate::{Answer, Failure, Isolation, Work};
use crate::job::{InvalidJob, Job, JobKind, JobResult, JobStamp, Measurement};
use crate::progress::{Point, Progress};
use crate::render::RenderInputs;
use crate::report::{ErrorReport, TrackReport};
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use crate::{Action, WorkerError};
use std::path::Path;
use std::time::Instant;
use tracing::{info, warn};

/// What the queue should do with the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Done, mastered or failed for good (error.json written): acknowledge.
    Ack,
    /// Failed for a reason that may pass: deliver again later.
    Requeue,
    /// Another try of the same job holds the track now and will answer:
    /// acknowledge without a result.
    Discard,
}

pub struct Outcome {
    pub result: JobResult,
    pub disposition: Disposition,
    /// Why it did not succeed, as a metrics label ("" on success).
    pub reason: &'static str,
    pub traffic: Traffic,
    /// Length of the mix, when it was decoded.
    pub audio_seconds: f64,
    /// It failed because the store did not answer (a transient store error,
    /// or error.json could not be written): maybe an outage.
    pub store_trouble: bool,
}

/// Bytes a job moved to and from the store.
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    pub downloaded: u64,
    pub uploaded: u64,
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("{0}")]
    Worker(#[from] WorkerError),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The render child's answer, or why it gave none.
    #[error("{0}")]
    Render(#[from] Failure),
    /// Another try holds the track's outputs ([`crate::fence`]).
    #[error("{0}")]
    Fenced(#[from] Fenced),
}

impl JobError {
    fn reason(&self) -> &'static str {
        match self {
            JobError::Worker(WorkerError::Decode(_)) => "decode",
            JobError::Worker(WorkerError::Input(_)) => "input",
            JobError::Worker(WorkerError::Request(_)) => "request",
            JobError::Worker(WorkerError::Io { .. }) => "io",
            JobError::Worker(WorkerError::Encode { .. }) => "encode",
            JobError::Worker(WorkerError::Limit { .. }) => "limit",
            JobError::Worker(WorkerError::Internal(_)) => "internal",
            JobError::Store(StoreError::NotFound(_)) => "store_not_found",
            JobError::Store(StoreError::Transient { .. }) => "store_transient",
            JobError::Store(StoreError::Permanent { .. }) => "store",
            JobError::Store(StoreError::TooLarge { .. }) => "limit",
            JobError::Render(f) => f.kind.label(),
            JobError::Fenced(_) => "fenced",
        }
    }

    fn action(&self) -> Action {
        match self {
            JobError::Worker(e) => e.action(),
            JobError::Store(StoreError::Transient { .. }) => Action::Retry,
            JobError::Store(_) => Action::Abort,
            JobError::Render(f) => f.action,
            JobError::Fenced(_) => Action::Abort,
        }
    }
}

pub use crate::layout::{ERROR, PICTURE, REPORT, SETTINGS};

/// Runs `job`, its decoding and rendering in a child process as `iso`
/// says; `scratch` is a folder for temporary files (on the store's file
/// system in local mode, so publishing is a rename).
pub async fn process_job(
    job: &Job,
    store: &dyn ObjectStore,
    scratch: &Path,
    iso: &Isolation,
    progress: &Progress,
) -> Outcome {
    let started = Instant::now();
    if let Err(e) = job.validate() {
        // Its names cannot be trusted to make keys: nothing is written.
        warn!(error = %e, "job refused");
        return refused(job, &e);
    }
    let mut traffic = Traffic::default();
    // Before any output is touched: this try's claim on the track.
    let fence = match Fence::claim(store, job, &crate::fence::attempt_id()).await {
        Ok(Ok(f)) => f,
        Ok(Err(fenced)) => return failed(job, store, None, fenced.into(), 0.0, traffic).await,
        Err(e) => return failed(job, store, None, e.into(), 0.0, traffic).await,
    };
    let done = match job.kind {
        JobKind::Render => run(job, store, &fence, scratch, (iso, progress), &mut traffic)
            .await
            .map(|r| Done::Rendered(Box::new(r))),
        JobKind::Measure => measure(job, store, scratch, (iso, progress), &mut traffic)
            .await
            .map(Done::Measured),
    };
    let render_seconds = started.elapsed().as_secs_f64();
    match done {
        Ok(done) => succeeded(job, done, render_seconds, traffic),
        Err(e) => failed(job, store, Some(&fence), e, render_seconds, traffic).await,
    }
}

/// A job's answer: its masters' report, or an album's first-pass measurement.
enum Done {
    Rendered(Box<TrackReport>),
    Measured(Measurement),
}

/// A job whose own fields fail their checks: failed for good, nothing
/// written under names it chose.
fn refused(job: &Job, e: &InvalidJob) -> Outcome {
    let error = ErrorReport {
        schema_version: Default::default(),
        track: job.track.clone(),
        source: job.source.clone(),
        error: format!("invalid job: {e}"),
        action: e.action(),
    };
    Outcome {
        store_trouble: false,
        reason: "request",
        traffic: Traffic::default(),
        audio_seconds: 0.0,
        result: JobResult::failed(job, error, "request", 0.0, (0, 0)),
        disposition: Disposition::Ack,
    }
}

fn succeeded(job: &Job, done: Done, render_seconds: f64, traffic: Traffic) -> Outcome {
    let bytes = (traffic.downloaded, traffic.uploaded);
    let (audio_seconds, result) = match done {
        Done::Rendered(r) => (
            r.input.duration_seconds,
            JobResult::mastered(job, *r, render_seconds, bytes),
        ),
        Done::Measured(m) => (
            m.duration_seconds,
            JobResult::measured(job, m, render_seconds, bytes),
        ),
    };
    Outcome {
        store_trouble: false,
        reason: "",
        traffic,
        audio_seconds,
        result,
        disposition: Disposition::Ack,
    }
}

/// A failed job's outcome, once its error.json says why: acknowledged when
/// the failure is final and recorded, delivered again otherwise. Only a
/// try that still holds its claim (`fence`) writes or removes anything.
async fn failed(
    job: &Job,
    store: &dyn ObjectStore,
    fence: Option<&Fence>,
    e: JobError,
    render_seconds: f64,
    traffic: Traffic,
) -> Outcome {
    let (e, holds) = match fence {
        Some(f) if !matches!(e, JobError::Fenced(_)) => match f.holds(store).await {
            Ok(Ok(())) => (e, true),
            Ok(Err(fenced)) => (fenced.into(), false),
            // Unsure whose the outputs are: touch nothing, try again later.
            Err(se) => (JobError::Store(se), false),
        },
        _ => (e, false),
    };
    let action = e.action();
    let error = ErrorReport {
        schema_version: Default::default(),
        track: job.track.clone(),
        source: store.describe(&job.source),
        error: e.to_string(),
        action,
    };
    let transient = matches!(e, JobError::Store(StoreError::Transient { .. }));
    if !holds {
        // No claim on the track (a newer run's or another try's outputs
        // are there): nothing is written or removed.
        warn!(error = %e, "job ended without writing");
        let disposition = match (&e, action) {
            (JobError::Fenced(Fenced::TakenOver), _) => Disposition::Discard,
            (_, Action::Retry) => Disposition::Requeue,
            _ => Disposition::Ack,
        };
        return failure(
            job,
            &e,
            error,
            (render_seconds, traffic),
            disposition,
            transient,
        );
    }
    let written = record_failure(job, store, &e, &error).await;
    let disposition = match &written {
        Ok(()) if action == Action::Abort => Disposition::Ack,
        Ok(()) => Disposition::Requeue,
        Err(se) => {
            // Without its error.json the failure would be invisible: retry.
            warn!(error = %se, "cannot write error.json");
            Disposition::Requeue
        }
    };
    let store_trouble = transient || written.is_err();
    failure(
        job,
        &e,
        error,
        (render_seconds, traffic),
        disposition,
        store_trouble,
    )
}

/// The outcome of a failed job, settled as `disposition` says.
fn failure(
    job: &Job,
    e: &JobError,
    error: ErrorReport,
    (render_seconds, traffic): (f64, Traffic),
    disposition: Disposition,
    store_trouble: bool,
) -> Outcome {
    Outcome {
        store_trouble,
        reason: e.reason(),
        traffic,
        audio_seconds: 0.0,
        result: JobResult::failed(
            job,
            error,
            e.reason(),
            render_seconds,
            (traffic.downloaded, traffic.uploaded),
        ),
        disposition,
    }
}

/// Writes the job's error.json: best effort before a retry; before a final
/// failure, after removing its masters, and the write must succeed.
async fn record_failure(
    job: &Job,
    store: &dyn ObjectStore,
    e: &JobError,
    error: &ErrorReport,
) -> Result<(), StoreError> {
    let body = serde_json::to_vec_pretty(error).expect("error report serialises");
    if error.action == Action::Retry {
        warn!(error = %e, "job failed, will be retried");
        // Best effort: if retries run out, this says why. Bounded: a
        // store that just failed may hold the request for minutes.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            store.put_bytes(&job.output_key(ERROR), body),
        )
        .await;
        return Ok(());
    }
    warn!(error = %e, "job failed for good");
    // No master without a report: a failed run leaves only error.json.
    for file in outputs(job) {
        let _ = store.delete(&job.output_key(&file)).await;
    }
    store.put_bytes(&job.output_key(ERROR), body).await
}

async fn run(
    job: &Job,
    store: &dyn ObjectStore,
    fence: &Fence,
    scratch: &Path,
    (iso, progress): (&Isolation, &Progress),
    traffic: &mut Traffic,
) -> Result<TrackReport, JobError> {
    // A reader must never take an old report for new masters.
    let (report_key, error_key) = (job.output_key(REPORT), job.output_key(ERROR));
    futures_util::future::try_join(store.delete(&report_key), store.delete(&error_key)).await?;
    let (dir, input, meta) = fetch_mix(job, store, scratch, iso, traffic).await?;
    progress.at(Point::Fetched);
    let out = dir.path().join("out");
    let opts = render_inputs(job, store, dir.path(), iso, traffic).await?;
    let work = Work::Render {
        input,
        track: job.track.clone(),
        out_dir: out.clone(),
        opts: Box::new(opts),
    };
    let mut report = match iso.run(&work, progress).await? {
        Answer::Rendered(r) => *r,
        Answer::Measured(_) => return Err(mismatched_answer()),
    };
    // The masters replace what is there only while the track is this try's.
    fence.holds(store).await??;
    publish_outputs(job, store, &report, &out, traffic).await?;
    progress.at(Point::Published);
    report.source = store.describe(&job.source);
    report.album = job.album.clone();
    report.job = Some(JobStamp {
        job_id: job.job_id.clone(),
        source_etag: meta.etag,
        settings_hash: job.settings_hash.clone(),
    });
    let body = crate::report::document(&report)
        .map_err(|reason| WorkerError::Internal(format!("{REPORT}: {reason}")))?;
    traffic.uploaded += body.len() as u64;
    fence.holds(store).await??;
    store.put_bytes(&job.output_key(REPORT), body).await?;
    Ok(report)
}

/// Everything the render needs besides the mix: the documents and the
/// reference track the request names, read from the store into `dir`.
async fn render_inputs(
    job: &Job,
    store: &dyn ObjectStore,
    dir: &Path,
    iso: &Isolation,
    traffic: &mut Traffic,
) -> Result<RenderInputs, JobError> {
    let max_doc = iso.limits.max_document_kib.saturating_mul(1024);
    let request = &job.request;
    let arrangement = fetch_document(store, request.arrangement(), max_doc).await?;
    let emotion = fetch_document(store, request.emotion_graph(), max_doc).await?;
    let reference = match request.reference() {
        Some(key) => {
            let path = dir.join("reference");
            let budget = iso.limits.disk_budget_mib.saturating_mul(1 << 20);
            let meta = store
                .get_file(key, &path, budget)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound(_) => JobError::Worker(WorkerError::Request(format!(
                        "reference {}: no such object",
                        store.describe(key)
                    ))),
                    other => over_budget(other, iso),
                })?;
            traffic.downloaded += meta.size;
            Some(path)
        }
        None => None,
    };
    Ok(RenderInputs {
        request: request.clone(),
        reference,
        arrangement,
        emotion,
        // The album's shared gain: this track keeps its level relative to the others.
        album_offset_lu: job.album.as_ref().map_or(0.0, |a| a.lufs_offset),
        limits: (&iso.limits).into(),
        threads: iso.limits.render_threads(),
    })
}

/// A text document the request names (arrangement, emotion graph), whole,
/// of at most `max_bytes` (`render.max_document_kib`).
async fn fetch_document(
    store: &dyn ObjectStore,
    key: Option<&str>,
    max_bytes: u64,
) -> Result<Option<String>, JobError> {
    let Some(k) = key else {
        return Ok(None);
    };
    let read = store.get_bytes(k, max_bytes).await.map_err(|e| match e {
        // Read no further than the limit: a 50 MB document costs 1 MiB.
        StoreError::TooLarge { .. } => JobError::Worker(WorkerError::Limit {
            what: format!("document {}", store.describe(k)),
            limit: format!("{} KiB", max_bytes / 1024),
            setting: "render.max_document_kib",
        }),
        other => other.into(),
    })?;
    match read {
        Some(b) => String::from_utf8(b).map(Some).map_err(|_| {
            JobError::Worker(WorkerError::Request(format!(
                "{}: not UTF-8 text",
                store.describe(k)
            )))
        }),
        None => Err(JobError::Worker(WorkerError::Request(format!(
            "{}: no such object",
            store.describe(k)
        )))),
    }
}

/// Uploads the render's files (masters, deliverables, previews, settings,
/// picture) side by side, and removes a withheld master's files of an
/// earlier run; the report, uploaded last, waits for all of it.
async fn publish_outputs(
    job: &Job,
    store: &dyn ObjectStore,
    report: &TrackReport,
    out: &Path,
    traffic: &mut Traffic,
) -> Result<(), JobError> {
    let files: Vec<(String, std::path::PathBuf)> = report
        .targets
        .iter()
        .map(|t| t.output_file.clone())
        .chain(
            report
                .targets
                .iter()
                .flat_map(|t| t.files.iter().map(|f| f.file.clone())),
        )
        .chain(
            report
                .targets
                .iter()
                .filter_map(|t| t.preview.as_ref())
                .flat_map(|p| [p.mix_file.clone(), p.master_file.clone()]),
        )
        .chain([SETTINGS.to_string(), PICTURE.to_string()])
        .filter(|f| out.join(f).exists())
        .map(|f| (job.output_key(&f), out.join(&f)))
        .collect();
    trust_files(job, &files)?;
    traffic.uploaded += files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum::<u64>();
    futures_util::future::try_join_all(files.iter().map(|(key, path)| store.put_file(key, path)))
        .await?;
    // A withheld master leaves no file of an earlier run under its name.
    for t in report.targets.iter().filter(|t| t.withheld.is_some()) {
        for file in target_outputs(job, &t.target) {
            store.delete(&job.output_key(&file)).await?;
        }
    }
    Ok(())
}

/// The render child's report names the files to publish; a child is
/// trusted no further than the names the job allows (made by `layout`),
/// each a regular file of the scratch folder, not a link out of it.
fn trust_files(job: &Job, files: &[(String, std::path::PathBuf)]) -> Result<(), JobError> {
    let allowed: std::collections::HashSet<String> =
        outputs(job).iter().map(|f| job.output_key(f)).collect();
    for (key, path) in files {
        let regular = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
        if !allowed.contains(key) || !regular {
            return Err(JobError::Worker(WorkerError::Internal(format!(
                "the render reported {}, which is not one of its outputs",
                path.display()
            ))));
        }
    }
    Ok(())
}

/// Every file a render publishes besides the report.
fn outputs(job: &Job) -> Vec<String> {
    job.request
        .targets()
        .iter()
        .flat_map(|t| target_outputs(job, &t.name))
        .chain([SETTINGS.to_string(), PICTURE.to_string()])
        .collect()
}

/// The files one target's master may publish.
fn target_outputs(job: &Job, target: &str) -> Vec<String> {
    [
        crate::layout::master_file(target),
        crate::preview::clip_file(target, "mix"),
        crate::preview::clip_file(target, "master"),
    ]
    .into_iter()
    .chain(
        job.request
            .formats()
            .iter()
            .map(|&f| crate::layout::encoded_file(target, f)),
    )
    .collect()
}

/// A scratch folder of the job's own (removed when dropped) holding the
/// downloaded mix: (folder, mix path, the object's ETag and size).
async fn fetch_mix(
    job: &Job,
    store: &dyn ObjectStore,
    scratch: &Path,
    iso: &Isolation,
    traffic: &mut Traffic,
) -> Result<(tempfile::TempDir, std::path::PathBuf, ObjectMeta), JobError> {
    std::fs::create_dir_all(scratch).map_err(|e| WorkerError::io(scratch, e))?;
    let dir = tempfile::Builder::new()
        .prefix(".loopmind-job-")
        .tempdir_in(scratch)
        .map_err(|e| WorkerError::io(scratch, e))?;
    let input = dir.path().join("input");
    let budget = iso.limits.disk_budget_mib.saturating_mul(1 << 20);
    let meta = store
        .get_file(&job.source, &input, budget)
        .await
        .map_err(|e| over_budget(e, iso))?;
    traffic.downloaded += meta.size;
    info!(bytes = meta.size, "mix downloaded");
    Ok((dir, input, meta))
}

/// A download larger than the job's whole disk budget: the budget's
/// error, final.
fn over_budget(e: StoreError, iso: &Isolation) -> JobError {
    match e {
        StoreError::TooLarge { what, .. } => JobError::Worker(WorkerError::Limit {
            what: format!("the download of {what}"),
            limit: format!("{} MiB", iso.limits.disk_budget_mib),
            setting: "render.disk_budget_mib",
        }),
        other => other.into(),
    }
}

/// An album's first pass: the mix's integrated loudness and length.
async fn measure(
    job: &Job,
    store: &dyn ObjectStore,
    scratch: &Path,
    (iso, progress): (&Isolation, &Progress),
    traffic: &mut Traffic,
) -> Result<Measurement, JobError> {
    // The folder lives until the end: `input` is inside it.
    let (_dir, input, _) = fetch_mix(job, store, scratch, iso, traffic).await?;
    let work = Work::Measure {
        input,
        limits: (&iso.limits).into(),
    };
    match iso.run(&work, progress).await? {
        Answer::Measured(m) => Ok(m),
        Answer::Rendered(_) => Err(mismatched_answer()),
    }
}

/// A child that answered another question (a mismatched binary).
fn mismatched_answer() -> JobError {
    JobError::Render(Failure {
        kind: crate::isolate::FailureKind::Crash,
        message: "the render process answered a different request".into(),
        action: Action::Abort,
    })
}
