//! Following a catalog's jobs on the queue to their ends: the catalog is
//! held (a second runner refused, named from `running.json`), jobs are
//! published, and every event ends or moves one; deadlines end the rest
//! (`coordinator.job_deadline_s`, `coordinator.idle_timeout_s`). Failures the
//! runner records itself (timeouts, unreadable results, dead letters) get an
//! `error.json` saying why.

use anyhow::{bail, Result};
use futures_util::{stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use loopmind_worker::config::{CoordinatorSettings, Settings};
use loopmind_worker::job::{Job, JobResult, Status};
use loopmind_worker::layout;
use loopmind_worker::process::ERROR;
use loopmind_worker::queue::{Event, JobQueue, QueueError};
use loopmind_worker::report::ErrorReport;
use loopmind_worker::store::ObjectStore;
use loopmind_worker::Action;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A job in flight, as the follower sees it.
struct InFlight {
    job: Job,
    /// When a worker last said it took the job.
    started: Option<Instant>,
}

/// The jobs of one publish not ended yet, by id, and what was heard. Each
/// event costs the same whatever the catalog's size: a 100,000-track
/// catalog is never scanned per event.
struct Pending {
    jobs: HashMap<String, InFlight>,
    /// First starts in the order they came: every job has the same
    /// deadline, so the oldest start is the first to expire. Entries of jobs
    /// that ended since are passed over when they reach the front.
    starts: VecDeque<(Instant, String)>,
    /// Jobs pending that a worker took.
    running: usize,
    /// When any worker was last heard from (the idle deadline's start).
    last_word: Instant,
    /// Results and messages that named no pending job.
    strays: usize,
}

impl Pending {
    fn remove(&mut self, job_id: &str) -> Option<InFlight> {
        let f = self.jobs.remove(job_id)?;
        if f.started.is_some() {
            self.running -= 1;
        }
        Some(f)
    }

    /// A worker took the job: its deadline starts, once (a job that keeps
    /// starting again never keeps its catalog waiting).
    fn start(&mut self, job_id: &str) {
        if let Some(f) = self.jobs.get_mut(job_id) {
            if f.started.is_none() {
                let now = Instant::now();
                f.started = Some(now);
                self.running += 1;
                self.starts.push_back((now, job_id.to_string()));
            }
        }
    }
}

/// Store writes in flight when many jobs fail at once (an idle timeout).
const WRITES: usize = 32;

/// Holds the catalog on the queue and follows its jobs to their ends.
pub struct Follower<'q> {
    queue: &'q mut dyn JobQueue,
    store: Arc<dyn ObjectStore>,
    limits: CoordinatorSettings,
    delivery_limit: u32,
    lock_key: String,
}

impl<'q> Follower<'q> {
    pub async fn new(
        queue: &'q mut dyn JobQueue,
        store: Arc<dyn ObjectStore>,
        settings: &Settings,
        catalog: &str,
    ) -> Result<Follower<'q>> {
        let lock_key = layout::running_key(catalog);
        if let Err(e) = queue.open(catalog).await {
            if let QueueError::Busy(m) = &e {
                let who = store
                    .get_bytes(&lock_key, layout::MAX_RECORD_BYTES)
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

    pub async fn close(self, finished: bool) {
        let _ = self.store.delete(&self.lock_key).await;
        if let Err(e) = self.queue.close(finished).await {
            warn!(error = %e, "cannot clean up the catalog's queues (they expire on their own)");
        }
    }

    /// Publishes `jobs` and follows each to its end, handing each result to
    /// `sink` as it ends (a caller keeps what it needs of it, not the whole
    /// report: 100,000 reports do not fit the coordinator's memory).
    pub async fn publish_and_follow(
        &mut self,
        mut jobs: Vec<Job>,
        sink: &mut (dyn FnMut(JobResult) + Send),
    ) -> Result<()> {
        jobs.sort_by(|a, b| a.track.cmp(&b.track));
        self.queue.publish(&jobs).await?;
        let mut pending = Pending {
            jobs: jobs
                .into_iter()
                .map(|job| (job.job_id.clone(), InFlight { job, started: None }))
                .collect(),
            starts: VecDeque::new(),
            running: 0,
            last_word: Instant::now(),
            strays: 0,
        };
        let bar = bar(pending.jobs.len());
        let mut failed = 0usize;
        while !pending.jobs.is_empty() {
            let mut ended: Vec<JobResult> = Vec::new();
            if let Some(event) = self.next_event(pending.jobs.len()).await? {
                ended.extend(self.settle(event, &mut pending).await);
            }
            ended.extend(self.expire(&mut pending).await);
            for r in ended {
                if r.status == Status::Failed {
                    failed += 1;
                    bar.set_message(format!("{failed} failed"));
                }
                bar.inc(1);
                sink(r);
            }
        }
        bar.finish_and_clear();
        if pending.strays > 0 {
            info!(
                strays = pending.strays,
                "results that named no pending job were dropped"
            );
        }
        Ok(())
    }

    /// The queue's next event, or None when nothing came (or the queue had
    /// trouble worth only a warning: it reconnects on its own).
    async fn next_event(&mut self, pending: usize) -> Result<Option<Event>> {
        match self.queue.next_event(Duration::from_millis(500)).await {
            Ok(e) => Ok(e),
            Err(QueueError::Closed) => bail!("the queue closed with {pending} jobs pending"),
            // Another coordinator runs the catalog now: asking again would
            // spin, and going on would race it for the same outputs.
            Err(QueueError::Busy(m)) => {
                bail!("{m}; stopping with {pending} jobs pending, leaving the catalog to it")
            }
            Err(e) => {
                warn!(error = %e, "queue trouble while following");
                Ok(None)
            }
        }
    }

    /// What one event does to the jobs in flight: the job it ends, if any.
    async fn settle(&self, event: Event, pending: &mut Pending) -> Option<JobResult> {
        match event {
            Event::Started { job_id } => {
                pending.last_word = Instant::now();
                pending.start(&job_id);
                None
            }
            Event::Finished(r) => {
                pending.last_word = Instant::now();
                if pending.remove(&r.job_id).is_some() {
                    return Some(r);
                }
                // A duplicate, or a job of an earlier run or one already
                // reported timed out.
                pending.strays += 1;
                info!(job_id = %r.job_id, "result of no pending job dropped");
                None
            }
            Event::Unreadable { job_id, reason } => {
                pending.last_word = Instant::now();
                match job_id.and_then(|id| pending.remove(&id)) {
                    Some(f) => Some(self.fail(&f.job, &reason, "unreadable_result").await),
                    None => {
                        pending.strays += 1;
                        warn!(%reason, "a message on the results queue that names no pending job");
                        None
                    }
                }
            }
            Event::DeadLettered(Ok(job)) => {
                pending.last_word = Instant::now();
                pending.remove(&job.job_id)?;
                Some(self.dead_lettered(&job).await)
            }
            Event::DeadLettered(Err(reason)) => {
                warn!(%reason, "a dead letter that names no job");
                None
            }
        }
    }

    /// Deadlines: a job taken but not answered in time
    /// (`coordinator.job_deadline_s`); with none running and no word from
    /// any worker for `coordinator.idle_timeout_s`, the jobs nobody takes.
    async fn expire(&self, pending: &mut Pending) -> Vec<JobResult> {
        let deadline = Duration::from_secs(self.limits.job_deadline_s);
        let idle = Duration::from_secs(self.limits.idle_timeout_s);
        let now = Instant::now();
        let mut late = Vec::new();
        while let Some((at, _)) = pending.starts.front() {
            if now - *at <= deadline {
                break;
            }
            let (_, id) = pending.starts.pop_front().expect("a front");
            // A job ended since is not there any more.
            if let Some(f) = pending.remove(&id) {
                late.push(f.job);
            }
        }
        let mut ended = Vec::new();
        // Called on every event: the message is made only when a job is late.
        if !late.is_empty() {
            let why = format!(
                "timed out: no result {} s after a worker took it (coordinator.job_deadline_s)",
                deadline.as_secs()
            );
            ended = self.fail_all(late, &why, "timed_out").await;
        }
        if pending.running == 0 && now - pending.last_word > idle {
            let nobody: Vec<Job> = pending.jobs.drain().map(|(_, f)| f.job).collect();
            pending.starts.clear();
            let why = format!(
                "timed out: no worker took it and none was heard from for {} s (coordinator.idle_timeout_s)",
                idle.as_secs()
            );
            ended.extend(self.fail_all(nobody, &why, "timed_out").await);
        }
        ended
    }

    /// [`Self::fail`] for many jobs at once, their `error.json` files
    /// written side by side (100,000 written one by one take many minutes).
    async fn fail_all(&self, jobs: Vec<Job>, why: &str, reason: &str) -> Vec<JobResult> {
        if !jobs.is_empty() {
            warn!(jobs = jobs.len(), %why, "jobs failed");
        }
        stream::iter(jobs.iter().map(|j| self.fail(j, why, reason)))
            .buffer_unordered(WRITES)
            .collect()
            .await
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
            .get_bytes(&job.output_key(ERROR), layout::MAX_RECORD_BYTES)
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
