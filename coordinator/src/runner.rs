//! The one catalog flow, for `loopmind master` (in-process queue, folder
//! store) and `loopmind coordinator` (RabbitMQ, S3) alike:
//!
//! 1. every source and reference must exist (their ETags are read);
//! 2. jobs are built by one rule ([`Job::new`]) and checked by the rule
//!    workers check them with ([`Job::validate`]);
//! 3. resume: a track whose report in the store carries the same source
//!    ETag and settings hash is complete, and not rendered again;
//! 4. the catalog is taken on the queue (a second runner is refused, naming
//!    the first), jobs are published: tracks outside albums render at once,
//!    album tracks are measured first and rendered with their album's shared
//!    offset;
//! 5. every published job ends as done, failed, given up on by the queue, or
//!    timed out ([`CoordinatorSettings`]): nothing is waited for forever;
//! 6. the summary is written (retried while the store does not answer),
//!    then the catalog's queues go away.

use crate::album;
use crate::summary::{Summary, TrackOutcome};
use anyhow::{bail, Result};
use futures_util::{stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use loopmind_worker::config::{CoordinatorSettings, Settings};
use loopmind_worker::job::{Job, JobResult, Measurement, Status, TrackSpec};
use loopmind_worker::layout;
use loopmind_worker::process::{ERROR, REPORT};
use loopmind_worker::queue::{Event, JobQueue, QueueError};
use loopmind_worker::report::{ErrorReport, TrackReport};
use loopmind_worker::store::ObjectStore;
use loopmind_worker::Action;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Store lookups in flight while validating and resuming.
const LOOKUPS: usize = 32;

pub struct Catalog {
    pub name: String,
    pub tracks: Vec<TrackSpec>,
    /// Problems its reader found already: listed with the store's, all at once.
    pub problems: Vec<String>,
}

/// What a run did, for the caller's exit code and tests.
pub struct Finished {
    pub all_ok: bool,
}

pub async fn run(
    cat: &Catalog,
    store: Arc<dyn ObjectStore>,
    queue: &mut dyn JobQueue,
    settings: &Settings,
) -> Result<Finished> {
    let name = cat.name.as_str();
    let etags = check_sources(cat, store.as_ref()).await?;
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    // An album track's settings include its album's members and their
    // sources: a changed album re-renders all of it.
    let album_keys = album::keys(cat.tracks.iter().map(|t| {
        (
            t.album.as_deref(),
            t.track.as_str(),
            etags[&t.track].as_str(),
        )
    }));
    let jobs: Vec<Job> = cat
        .tracks
        .iter()
        .map(|t| {
            let key = t.album.as_ref().map(|a| album_keys[a].as_str());
            Job::new(name, &run_id, t, key)
        })
        .collect();
    let problems: Vec<String> = jobs
        .iter()
        .filter_map(|j| {
            j.validate()
                .err()
                .map(|e| format!("track '{}': {e}", j.track))
        })
        .collect();
    if !problems.is_empty() {
        bail!("invalid catalog:\n  - {}", problems.join("\n  - "));
    }

    // Resume: tracks whose complete report matches this job are done.
    let done: Vec<Result<Option<TrackReport>, String>> = stream::iter(jobs.iter().map(|j| {
        let store = store.clone();
        let etag = etags[&j.track].clone();
        async move { complete_report(store.as_ref(), j, &etag).await }
    }))
    .buffered(LOOKUPS)
    .collect()
    .await;
    let mut outcomes: HashMap<String, TrackOutcome> = HashMap::new();
    let mut measured: HashMap<String, Measurement> = HashMap::new();
    let mut to_render: Vec<Job> = Vec::new();
    let mut newer = Vec::new();
    for (job, rep) in jobs.into_iter().zip(done) {
        match rep {
            Ok(Some(report)) => {
                measured.insert(job.track.clone(), album::measurement_of(&report));
                let r = JobResult::mastered(&job, report, 0.0, (0, 0));
                let mut o = outcome(&r, store.as_ref(), &job.source);
                o.skipped = true;
                outcomes.insert(job.track.clone(), o);
            }
            Ok(None) => to_render.push(job),
            Err(e) => newer.push(format!("track '{}': {e}", job.track)),
        }
    }
    if !newer.is_empty() {
        bail!("{}", newer.join("\n"));
    }
    println!(
        "{}: {} tracks, {} already complete and unchanged (same source and settings: skipped), {} to render",
        if name == layout::LOCAL_CATALOG { "batch".to_string() } else { format!("catalog {name}") },
        cat.tracks.len(),
        outcomes.len(),
        to_render.len()
    );

    let mut all_results: Vec<JobResult> = Vec::new();
    if !to_render.is_empty() {
        let mut follower = Follower::new(queue, store.clone(), settings, name).await?;
        let albums: HashMap<&str, &str> = cat
            .tracks
            .iter()
            .filter_map(|t| t.album.as_deref().map(|a| (t.track.as_str(), a)))
            .collect();
        // First pass: tracks outside albums render; album tracks to render
        // are measured, since their gain depends on the whole album.
        let (album_jobs, mut first): (Vec<Job>, Vec<Job>) = to_render
            .into_iter()
            .partition(|j| albums.contains_key(j.track.as_str()));
        first.extend(album_jobs.iter().map(Job::measure));
        let mut by_track: HashMap<String, JobResult> = HashMap::new();
        for r in follower.publish_and_follow(first).await? {
            all_results.push(r.clone());
            match (r.status, r.measurement) {
                (Status::Measured, Some(m)) => {
                    measured.insert(r.track.clone(), m);
                }
                _ => {
                    by_track.insert(r.track.clone(), r);
                }
            }
        }
        // Second pass: album tracks with their album's shared offset.
        let members: Vec<(&str, &str)> = albums.iter().map(|(t, a)| (*t, *a)).collect();
        let offsets = album::offsets(&members, &measured);
        let second: Vec<Job> = album_jobs
            .into_iter()
            .filter_map(|mut j| {
                j.album = Some(offsets.get(j.track.as_str())?.clone());
                Some(j)
            })
            .collect();
        if !second.is_empty() {
            for r in follower.publish_and_follow(second).await? {
                all_results.push(r.clone());
                by_track.insert(r.track.clone(), r);
            }
        }
        for t in &cat.tracks {
            if let Some(r) = by_track.remove(&t.track) {
                outcomes.insert(t.track.clone(), outcome(&r, store.as_ref(), &t.source));
            }
        }
        let ordered = ordered(cat, &mut outcomes);
        let finished = finish(name, &ordered, &all_results, store.as_ref(), settings).await;
        follower.close(finished.is_ok()).await;
        return finished;
    }
    let ordered = ordered(cat, &mut outcomes);
    finish(name, &ordered, &all_results, store.as_ref(), settings).await
}

fn ordered(cat: &Catalog, outcomes: &mut HashMap<String, TrackOutcome>) -> Vec<TrackOutcome> {
    cat.tracks
        .iter()
        .map(|t| {
            outcomes.remove(&t.track).unwrap_or_else(|| TrackOutcome {
                error: Some(
                    "no outcome (an album member whose album could not be measured)".into(),
                ),
                ..TrackOutcome::empty(&t.track, &t.source)
            })
        })
        .collect()
}

fn outcome(r: &JobResult, store: &dyn ObjectStore, source: &str) -> TrackOutcome {
    TrackOutcome::from_result(r, &store.describe(source), &format!("{}/", r.track))
}

/// Prints and saves the summary (retrying while the store does not answer).
async fn finish(
    name: &str,
    ordered: &[TrackOutcome],
    results: &[JobResult],
    store: &dyn ObjectStore,
    settings: &Settings,
) -> Result<Finished> {
    let summary = Summary::new(name, ordered);
    summary.print();
    totals(results);
    let prefix = layout::catalog_prefix(name);
    let deadline = Instant::now() + Duration::from_secs(settings.coordinator.summary_retry_s);
    let mut wait = Duration::from_secs(1);
    loop {
        match summary.save(store, &prefix).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, retry_in_s = wait.as_secs(), "cannot write the summary yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => bail!(
                "cannot write the summary for {} s (coordinator.summary_retry_s): {e}",
                settings.coordinator.summary_retry_s
            ),
        }
    }
    println!(
        "summary: {}",
        store.describe(&format!("{prefix}summary.html"))
    );
    Ok(Finished {
        all_ok: summary.all_ok(),
    })
}

/// Every source and reference exists: their ETags by track, or every problem.
async fn check_sources(cat: &Catalog, store: &dyn ObjectStore) -> Result<HashMap<String, String>> {
    let started = Instant::now();
    let heads: Vec<_> = stream::iter(cat.tracks.iter().map(|t| async move {
        (
            t.track.clone(),
            t.source.clone(),
            store.head(&t.source).await,
        )
    }))
    .buffered(LOOKUPS)
    .collect()
    .await;
    let mut problems = cat.problems.clone();
    let mut etags = HashMap::new();
    for (track, source, h) in heads {
        match h {
            Ok(Some(meta)) => {
                etags.insert(track, meta.etag);
            }
            Ok(None) => problems.push(format!(
                "track '{track}': source {} does not exist",
                store.describe(&source)
            )),
            Err(e) => problems.push(format!("track '{track}': {e}")),
        }
    }
    let references: std::collections::BTreeSet<&str> = cat
        .tracks
        .iter()
        .filter_map(|t| t.reference.as_deref())
        .collect();
    for key in references {
        match store.head(key).await {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!("reference {} does not exist", store.describe(key))),
            Err(e) => problems.push(format!("reference {key}: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("invalid catalog:\n  - {}", problems.join("\n  - "));
    }
    info!(
        tracks = cat.tracks.len(),
        seconds = started.elapsed().as_secs_f64(),
        "sources checked"
    );
    Ok(etags)
}

/// The track's report if it is complete and made from the same source and
/// settings; an error if a newer LoopMind wrote it.
async fn complete_report(
    store: &dyn ObjectStore,
    job: &Job,
    etag: &str,
) -> Result<Option<TrackReport>, String> {
    let Ok(Some(bytes)) = store.get_bytes(&job.output_key(REPORT)).await else {
        return Ok(None);
    };
    let report: TrackReport = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) if e.to_string().contains("schema_version") => {
            return Err(format!("{}: {e}", store.describe(&job.output_key(REPORT))))
        }
        Err(_) => return Ok(None),
    };
    let Some(stamp) = report.job.as_ref() else {
        return Ok(None);
    };
    Ok((stamp.settings_hash == job.settings_hash && stamp.source_etag == etag).then_some(report))
}

/// A job in flight, as the follower sees it.
struct InFlight {
    job: Job,
    /// When a worker last said it took the job.
    started: Option<Instant>,
}

/// Holds the catalog on the queue and follows its jobs to their ends.
struct Follower<'q> {
    queue: &'q mut dyn JobQueue,
    store: Arc<dyn ObjectStore>,
    limits: CoordinatorSettings,
    delivery_limit: u32,
    lock_key: String,
}

impl<'q> Follower<'q> {
    async fn new(
        queue: &'q mut dyn JobQueue,
        store: Arc<dyn ObjectStore>,
        settings: &Settings,
        catalog: &str,
    ) -> Result<Follower<'q>> {
        let lock_key = format!("{}running.json", layout::catalog_prefix(catalog));
        if let Err(e) = queue.open(catalog).await {
            if let QueueError::Busy(m) = &e {
                let who = store
                    .get_bytes(&lock_key)
                    .await
                    .ok()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                    .unwrap_or_else(|| "unknown".into());
                bail!("{m}; it says: {who}. Wait for it to finish, or stop it, then run again (finished tracks are skipped)");
            }
            return Err(e.into());
        }
        let me = serde_json::json!({
            "host": hostname(),
            "pid": std::process::id(),
            "started_unix_s": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        if let Err(e) = store
            .put_bytes(&lock_key, me.to_string().into_bytes())
            .await
        {
            warn!(error = %e, "cannot write {lock_key}");
        }
        Ok(Follower {
            queue,
            store,
            limits: settings.coordinator.clone(),
            delivery_limit: settings.queue.delivery_limit,
            lock_key,
        })
    }

    async fn close(self, finished: bool) {
        let _ = self.store.delete(&self.lock_key).await;
        if let Err(e) = self.queue.close(finished).await {
            warn!(error = %e, "cannot clean up the catalog's queues (they expire on their own)");
        }
    }

    /// Publishes `jobs` and follows each to its end.
    async fn publish_and_follow(&mut self, mut jobs: Vec<Job>) -> Result<Vec<JobResult>> {
        jobs.sort_by(|a, b| a.track.cmp(&b.track));
        self.queue.publish(&jobs).await?;
        let mut pending: HashMap<String, InFlight> = jobs
            .into_iter()
            .map(|job| (job.job_id.clone(), InFlight { job, started: None }))
            .collect();
        let bar = bar(pending.len());
        let mut results = Vec::new();
        let mut last_word = Instant::now();
        let (mut failed, mut strays) = (0usize, 0usize);
        let deadline = Duration::from_secs(self.limits.job_deadline_s);
        let idle = Duration::from_secs(self.limits.idle_timeout_s);
        while !pending.is_empty() {
            let event = match self.queue.next_event(Duration::from_millis(500)).await {
                Ok(e) => e,
                Err(QueueError::Closed) => {
                    bail!("the queue closed with {} jobs pending", pending.len())
                }
                Err(e) => {
                    warn!(error = %e, "queue trouble while following");
                    None
                }
            };
            let mut ended: Vec<JobResult> = Vec::new();
            match event {
                None => {}
                Some(Event::Started { job_id }) => {
                    last_word = Instant::now();
                    if let Some(f) = pending.get_mut(&job_id) {
                        f.started = Some(Instant::now());
                    }
                }
                Some(Event::Finished(r)) => {
                    last_word = Instant::now();
                    if pending.remove(&r.job_id).is_some() {
                        ended.push(r);
                    } else {
                        // A duplicate, or a job of an earlier run or one
                        // already reported timed out.
                        strays += 1;
                        info!(job_id = %r.job_id, "result of no pending job dropped");
                    }
                }
                Some(Event::Unreadable { job_id, reason }) => {
                    last_word = Instant::now();
                    match job_id.and_then(|id| pending.remove(&id)) {
                        Some(f) => {
                            ended.push(self.fail(&f.job, &reason, "unreadable_result").await)
                        }
                        None => {
                            strays += 1;
                            warn!(%reason, "a message on the results queue that names no pending job");
                        }
                    }
                }
                Some(Event::DeadLettered(Ok(job))) => {
                    last_word = Instant::now();
                    if pending.remove(&job.job_id).is_some() {
                        ended.push(self.dead_lettered(&job).await);
                    }
                }
                Some(Event::DeadLettered(Err(reason))) => {
                    warn!(%reason, "a dead letter that names no job");
                }
            }
            // Deadlines: a job taken but not answered; jobs nobody takes.
            let now = Instant::now();
            let late: Vec<String> = pending
                .iter()
                .filter(|(_, f)| f.started.is_some_and(|s| now - s > deadline))
                .map(|(id, _)| id.clone())
                .collect();
            for id in late {
                let f = pending.remove(&id).expect("pending");
                let why = format!(
                    "timed out: no result {} s after a worker took it (coordinator.job_deadline_s)",
                    deadline.as_secs()
                );
                ended.push(self.fail(&f.job, &why, "timed_out").await);
            }
            let running = pending.values().any(|f| f.started.is_some());
            if !running && now - last_word > idle {
                let ids: Vec<String> = pending.keys().cloned().collect();
                for id in ids {
                    let f = pending.remove(&id).expect("pending");
                    let why = format!(
                        "timed out: no worker took it and none was heard from for {} s (coordinator.idle_timeout_s)",
                        idle.as_secs()
                    );
                    ended.push(self.fail(&f.job, &why, "timed_out").await);
                }
            }
            for r in ended {
                if r.status == Status::Failed {
                    failed += 1;
                    bar.set_message(format!("{failed} failed"));
                }
                bar.inc(1);
                results.push(r);
            }
        }
        bar.finish_and_clear();
        if strays > 0 {
            info!(strays, "results that named no pending job were dropped");
        }
        Ok(results)
    }

    /// A failure the runner itself records: error.json says why.
    async fn fail(&self, job: &Job, why: &str, reason: &str) -> JobResult {
        warn!(track = %job.track, %why, "job failed");
        let err = ErrorReport {
            schema_version: Default::default(),
            track: job.track.clone(),
            source: self.store.describe(&job.source),
            error: why.to_string(),
            action: Action::Abort,
        };
        let body = serde_json::to_vec_pretty(&err).expect("serialises");
        if let Err(e) = self.store.put_bytes(&job.output_key(ERROR), body).await {
            warn!(error = %e, track = %job.track, "cannot write error.json");
        }
        JobResult::failed(job, err, reason, 0.0, (0, 0))
    }

    /// A job the queue gave up on: error.json says so, with the last
    /// attempt's error if it could write one.
    async fn dead_lettered(&self, job: &Job) -> JobResult {
        let last = self
            .store
            .get_bytes(&job.output_key(ERROR))
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<ErrorReport>(&b).ok())
            .map_or(
                "every attempt failed or stopped its worker".to_string(),
                |e| format!("last error: {}", e.error),
            );
        let why = format!(
            "gave up after the delivery limit ({}, queue.delivery_limit); {last}",
            self.delivery_limit
        );
        self.fail(job, &why, "dead_lettered").await
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn bar(len: usize) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template(
            "rendering {bar:40} {pos}/{len} tracks  {elapsed_precise}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// The workers' totals for this run, from their results: printed and logged.
fn totals(results: &[JobResult]) {
    if results.is_empty() {
        return;
    }
    let failed: Vec<&JobResult> = results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .collect();
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &failed {
        *reasons
            .entry(if r.reason.is_empty() {
                "other"
            } else {
                &r.reason
            })
            .or_default() += 1;
    }
    let work: f64 = results.iter().map(|r| r.render_seconds).sum();
    let audio: f64 = results
        .iter()
        .filter_map(|r| {
            r.report
                .as_ref()
                .map(|rep| rep.input.duration_seconds)
                .or(r.measurement.map(|m| m.duration_seconds))
        })
        .sum();
    let down: u64 = results.iter().map(|r| r.downloaded_bytes).sum();
    let up: u64 = results.iter().map(|r| r.uploaded_bytes).sum();
    let reasons_text: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let realtime = if work > 0.0 { audio / work } else { 0.0 };
    println!(
        "jobs: {} ({} succeeded, {} failed{}); work {:.1} s ({:.2} s/job), realtime factor {:.1}x; downloaded {:.1} MB, uploaded {:.1} MB",
        results.len(),
        results.len() - failed.len(),
        failed.len(),
        if reasons_text.is_empty() { String::new() } else { format!(": {}", reasons_text.join(", ")) },
        work,
        work / results.len() as f64,
        realtime,
        down as f64 / 1e6,
        up as f64 / 1e6,
    );
    info!(
        jobs = results.len(),
        failed = failed.len(),
        work_seconds = work,
        realtime_factor = realtime,
        downloaded_bytes = down,
        uploaded_bytes = up,
        "catalog totals"
    );
}
