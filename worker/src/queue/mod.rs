//! The queue, seen from both ends, and the one worker step every queue runs.
//!
//! - [`JobQueue`]: what a catalog runner needs of a queue: take a catalog
//!   (refused while another runner holds it), publish jobs, hear [`Event`]s
//!   back (a job started, finished, could not be read, was given up on),
//!   let go. Two implementations: [`inprocess::InProcessQueue`] (local mode:
//!   tasks in this process) and the RabbitMQ one in the coordinator.
//! - [`Delivery`]: one job handed to a worker, and the ways to settle it.
//!   [`work_on`] is the worker's whole job step, for every queue: read and
//!   check the message, announce the start, run [`process_job`], then
//!   complete, retry (counted), or hand back uncounted when the store is
//!   down (the [`breaker::StoreBreaker`]).

pub mod breaker;
pub mod inprocess;

use crate::isolate::Isolation;
use crate::job::{Job, JobResult, Status, UnreadableJob};
use crate::metrics::Metrics;
use crate::process::{process_job, Disposition};
use crate::progress::{Point, Progress};
use crate::store::ObjectStore;
use crate::Action;
use async_trait::async_trait;
use breaker::StoreBreaker;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, info_span, warn, Instrument};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    /// Another runner holds the catalog.
    #[error("{0}")]
    Busy(String),
    #[error("the queue is closed")]
    Closed,
}

/// What a runner hears back about its jobs.
#[derive(Debug)]
pub enum Event {
    /// A worker took the job (again, on a redelivery).
    Started {
        job_id: String,
    },
    Finished(JobResult),
    /// A result that does not parse: the message's id, if it had one, and
    /// why it could not be read.
    Unreadable {
        job_id: Option<String>,
        reason: String,
    },
    /// The queue gave up on the job (its delivery limit): the job as it was
    /// published, or why it could not be read.
    DeadLettered(Result<Job, DeadLetterError>),
}

/// Why a dead letter names no job: there is nothing to fail or retry, the
/// runner only logs it (abort).
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// Read back from a dead-letter queue, its body is not a job.
    #[error("a dead letter that is not a job: {0}")]
    NotAJob(serde_json::Error),
    /// A worker refused the message as it read it.
    #[error("{0}")]
    Refused(UnreadableJob),
}

impl DeadLetterError {
    pub fn action(&self) -> Action {
        Action::Abort
    }
}

#[async_trait]
pub trait JobQueue: Send {
    /// Takes `catalog` for this runner: its results come here only. Fails
    /// with [`QueueError::Busy`] while another runner holds it.
    async fn open(&mut self, catalog: &str) -> Result<(), QueueError>;
    /// Publishes jobs of the open catalog (each confirmed by the queue).
    async fn publish(&mut self, jobs: &[Job]) -> Result<(), QueueError>;
    /// The next event, or None when nothing came within `wait`.
    async fn next_event(&mut self, wait: Duration) -> Result<Option<Event>, QueueError>;
    /// Lets go of the catalog; `finished`: nothing is left to collect, so
    /// its queues go away.
    async fn close(&mut self, finished: bool) -> Result<(), QueueError>;
}

/// One job handed to a worker.
#[async_trait]
pub trait Delivery: Send + Sync {
    fn body(&self) -> &[u8];
    /// Deliveries before this one that counted against the limit.
    fn redeliveries(&self) -> u32;
    /// Times the job was handed back uncounted (store outages, stops).
    fn handbacks(&self) -> u32;
    /// Tells the runner the job started (best effort).
    async fn started(&self, job: &Job);
    /// A job of the job service: it may be cancelled by a marker in the
    /// store ([`crate::layout::CANCELLED`]).
    fn from_service(&self) -> bool {
        false
    }
    /// Tells whoever follows the job how far it is, 0..1 (best effort;
    /// most queues have nobody to tell).
    async fn progress(&self, _job: &Job, _fraction: f64) {}
    /// Publishes the result, then acknowledges the job.
    async fn complete(self: Box<Self>, job: &Job, result: &JobResult) -> Result<(), QueueError>;
    /// Back to the queue for another try, counted; past the delivery limit,
    /// given up (dead-lettered).
    async fn retry(self: Box<Self>) -> Result<(), QueueError>;
    /// Tried as often as the delivery limit allows already (each try ended
    /// its worker before it could count it): given up unrendered.
    fn exhausted(&self) -> bool {
        false
    }
    /// Back to the queue without counting a try.
    async fn hand_back(self: Box<Self>) -> Result<(), QueueError>;
    /// Not a job anyone may act on: to the dead letters at once.
    async fn reject(self: Box<Self>, why: UnreadableJob) -> Result<(), QueueError>;
    /// Whether nobody follows the job's catalog any more (its runner
    /// finished or gave up on it): then the job is dropped unrendered.
    async fn abandoned(&self, _job: &Job) -> bool {
        false
    }
    /// Acknowledges without a result (an abandoned catalog's job).
    async fn discard(self: Box<Self>) -> Result<(), QueueError>;
}

/// Most uncounted hand-backs of one job: past it, a store failure counts
/// like any other (a store that fails only for this job is not an outage).
pub const MAX_HANDBACKS: u32 = 100;

/// What a worker needs to run jobs.
pub struct WorkerCtx {
    pub store: Arc<dyn ObjectStore>,
    pub scratch: PathBuf,
    pub iso: Isolation,
    pub metrics: Arc<Metrics>,
    pub breaker: Arc<StoreBreaker>,
    /// Longest wait before a counted retry.
    pub max_backoff: Duration,
}

/// The worker's step for one delivery, whatever the queue: read, check,
/// announce, render, settle.
pub async fn work_on(d: Box<dyn Delivery>, ctx: &WorkerCtx) -> Result<(), QueueError> {
    let job = match Job::from_message(d.body()) {
        Ok(j) => j,
        Err(e) => {
            warn!(error = %e, "malformed or unsafe job message rejected");
            return d.reject(e).await;
        }
    };
    let span = info_span!("job", catalog = %job.catalog, track = %job.track, job_id = %job.job_id);
    async move {
        if d.abandoned(&job).await {
            info!("nobody follows this catalog any more: job dropped unrendered");
            return d.discard().await;
        }
        if d.from_service() && cancelled(&job, ctx).await {
            info!("the job was cancelled: dropped unrendered");
            return d.discard().await;
        }
        let deliveries = d.redeliveries() + 1;
        if d.exhausted() {
            warn!(delivery = deliveries, "tried as often as the delivery limit allows: given up unrendered");
            return d.retry().await;
        }
        info!(delivery = deliveries, "job started");
        d.started(&job).await;
        let token = ctx.metrics.job_started();
        let outcome = render_following(&job, d.as_ref(), ctx).await;
        // A store failure while the store is down is not the job's fault:
        // hand it back uncounted and stop taking jobs until the store answers.
        let outage = outcome.store_trouble
            && d.handbacks() < MAX_HANDBACKS
            && !ctx.breaker.probe(ctx.store.as_ref()).await;
        let label = match (outcome.disposition, outcome.result.status) {
            _ if outage => "handed_back",
            (Disposition::Requeue, _) => "requeued",
            (Disposition::Discard, _) => "taken_over",
            (_, Status::Failed) => "failed",
            _ => "succeeded",
        };
        ctx.metrics.job_finished(
            token,
            label,
            outcome.reason,
            outcome.result.render_seconds,
            outcome.audio_seconds,
        );
        ctx.metrics
            .bytes(outcome.traffic.downloaded, outcome.traffic.uploaded);
        if outage {
            warn!("the store is not answering: job handed back uncounted, taking no jobs until it answers");
            ctx.breaker.trip();
            ctx.metrics.set_store_up(false);
            return d.hand_back().await;
        }
        match outcome.disposition {
            Disposition::Ack => {
                d.complete(&job, &outcome.result).await?;
                info!(status = ?outcome.result.status, seconds = outcome.result.render_seconds, "job done");
                Ok(())
            }
            Disposition::Discard => {
                info!("another try of this job holds its track now: acknowledged without a result");
                d.discard().await
            }
            Disposition::Requeue => {
                // Back off before handing it back (what failed may need
                // time); the delivery limit bounds the tries.
                let wait = Duration::from_secs(1 << deliveries.min(5)).min(ctx.max_backoff);
                warn!(retry_in_s = wait.as_secs_f64(), "job requeued");
                tokio::time::sleep(wait).await;
                d.retry().await
            }
        }
    }
    .instrument(span)
    .await
}

/// Runs the job, passing its progress to the delivery as it moves (the
/// newest fraction each time the last one has been told).
async fn render_following(job: &Job, d: &dyn Delivery, ctx: &WorkerCtx) -> crate::process::Outcome {
    let (progress, mut moved) = Progress::channel();
    progress.at(Point::Taken);
    let render = async move {
        let outcome = process_job(job, ctx.store.as_ref(), &ctx.scratch, &ctx.iso, &progress).await;
        // The last sender gone ends the loop below once it has told the last value.
        drop(progress);
        outcome
    };
    let tell = async {
        while moved.changed().await.is_ok() {
            let f = *moved.borrow_and_update();
            d.progress(job, f).await;
        }
    };
    tokio::join!(render, tell).0
}

/// Whether the job's owner cancelled it (its marker is in the store); any
/// doubt renders.
async fn cancelled(job: &Job, ctx: &WorkerCtx) -> bool {
    let marker = job.output_key(crate::layout::CANCELLED);
    matches!(ctx.store.head(&marker).await, Ok(Some(_)))
}
