//! Local mode's queue: the jobs wait in a channel of this process and a few
//! tasks run [`work_on`] on them, the same step a RabbitMQ worker runs, with
//! the same retries (counted up to the delivery limit, then given up on) and
//! the same store breaker. Events come back on a second channel.

use super::{work_on, DeadLetterError, Delivery, Event, JobQueue, QueueError, WorkerCtx};
use crate::job::{Job, JobResult, UnreadableJob};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use tracing::warn;

struct Envelope {
    body: Vec<u8>,
    redeliveries: u32,
    handbacks: u32,
}

pub struct InProcessQueue {
    ctx: Arc<WorkerCtx>,
    workers: usize,
    delivery_limit: u32,
    jobs_tx: mpsc::UnboundedSender<Envelope>,
    jobs_rx: Arc<Mutex<mpsc::UnboundedReceiver<Envelope>>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    tasks: JoinSet<()>,
}

impl InProcessQueue {
    /// `workers` jobs at once; a job that fails for a reason that may pass
    /// is tried up to `delivery_limit` times.
    pub fn new(ctx: WorkerCtx, workers: usize, delivery_limit: u32) -> Self {
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Self {
            ctx: Arc::new(ctx),
            workers: workers.max(1),
            delivery_limit: delivery_limit.max(1),
            jobs_tx,
            jobs_rx: Arc::new(Mutex::new(jobs_rx)),
            events_tx,
            events_rx,
            tasks: JoinSet::new(),
        }
    }
}

struct InProcessDelivery {
    env: Envelope,
    limit: u32,
    jobs: mpsc::UnboundedSender<Envelope>,
    events: mpsc::UnboundedSender<Event>,
}

#[async_trait]
impl Delivery for InProcessDelivery {
    fn body(&self) -> &[u8] {
        &self.env.body
    }
    fn redeliveries(&self) -> u32 {
        self.env.redeliveries
    }
    fn handbacks(&self) -> u32 {
        self.env.handbacks
    }
    async fn started(&self, job: &Job) {
        let _ = self.events.send(Event::Started {
            job_id: job.job_id.clone(),
        });
    }
    async fn complete(self: Box<Self>, _job: &Job, result: &JobResult) -> Result<(), QueueError> {
        self.events
            .send(Event::Finished(result.clone()))
            .map_err(|_| QueueError::Closed)
    }
    async fn retry(self: Box<Self>) -> Result<(), QueueError> {
        let mut env = self.env;
        env.redeliveries += 1;
        if env.redeliveries >= self.limit {
            let job = serde_json::from_slice::<Job>(&env.body).map_err(DeadLetterError::NotAJob);
            return self
                .events
                .send(Event::DeadLettered(job))
                .map_err(|_| QueueError::Closed);
        }
        self.jobs.send(env).map_err(|_| QueueError::Closed)
    }
    async fn hand_back(self: Box<Self>) -> Result<(), QueueError> {
        let mut env = self.env;
        env.handbacks += 1;
        self.jobs.send(env).map_err(|_| QueueError::Closed)
    }
    async fn discard(self: Box<Self>) -> Result<(), QueueError> {
        Ok(())
    }
    async fn reject(self: Box<Self>, why: UnreadableJob) -> Result<(), QueueError> {
        let job = serde_json::from_slice::<Job>(&self.env.body)
            .map_err(|_| DeadLetterError::Refused(why));
        self.events
            .send(Event::DeadLettered(job))
            .map_err(|_| QueueError::Closed)
    }
}

#[async_trait]
impl JobQueue for InProcessQueue {
    async fn open(&mut self, _catalog: &str) -> Result<(), QueueError> {
        // The output folder's lock (taken by `loopmind master`) keeps a
        // second run away; here the workers start.
        for _ in 0..self.workers {
            let (ctx, rx, jobs, events, limit) = (
                self.ctx.clone(),
                self.jobs_rx.clone(),
                self.jobs_tx.clone(),
                self.events_tx.clone(),
                self.delivery_limit,
            );
            self.tasks.spawn(async move {
                loop {
                    if ctx.breaker.is_open() {
                        ctx.breaker.wait_for_store(ctx.store.as_ref()).await;
                        ctx.metrics.set_store_up(true);
                    }
                    let Some(env) = rx.lock().await.recv().await else {
                        return;
                    };
                    let d = InProcessDelivery {
                        env,
                        limit,
                        jobs: jobs.clone(),
                        events: events.clone(),
                    };
                    if let Err(e) = work_on(Box::new(d), &ctx).await {
                        warn!(error = %e, "could not settle a job");
                    }
                }
            });
        }
        Ok(())
    }

    async fn publish(&mut self, jobs: &[Job]) -> Result<(), QueueError> {
        for job in jobs {
            let body = serde_json::to_vec(job).expect("a job serialises");
            self.jobs_tx
                .send(Envelope {
                    body,
                    redeliveries: 0,
                    handbacks: 0,
                })
                .map_err(|_| QueueError::Closed)?;
        }
        Ok(())
    }

    async fn next_event(&mut self, wait: Duration) -> Result<Option<Event>, QueueError> {
        match tokio::time::timeout(wait, self.events_rx.recv()).await {
            Ok(Some(e)) => Ok(Some(e)),
            Ok(None) => Err(QueueError::Closed),
            Err(_) => Ok(None),
        }
    }

    async fn close(&mut self, _finished: bool) -> Result<(), QueueError> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        Ok(())
    }
}
