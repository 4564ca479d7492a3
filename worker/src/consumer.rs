//! `loopmind worker`: consume jobs from RabbitMQ and run the one worker step
//! ([`work_on`]) on each: its result is published, then the job acked, so a
//! crash before that redelivers it. Up to `queue.prefetch` jobs run at once.
//! Connections are rebuilt with backoff whenever they fail. A stop request,
//! or the store breaker tripping, cancels the consumer first (no delivery
//! arrives after it), hands back uncounted whatever the broker sent
//! meanwhile, and finishes the jobs in hand.

use crate::config::Settings;
use crate::isolate::Isolation;
use crate::job::{Job, JobResult, UnreadableJob};
use crate::metrics::Metrics;
use crate::queue::breaker::StoreBreaker;
use crate::queue::{work_on, Delivery, QueueError, WorkerCtx};
use crate::rabbitmq;
use crate::shutdown::Shutdown;
use crate::store::{self, StoreError};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    #[error("RabbitMQ: {0}")]
    Queue(#[from] lapin::Error),
    #[error("cannot find the running executable to start renders: {0}")]
    Exe(std::io::Error),
}

/// A connection that lasted this long resets the reconnect backoff.
const RESET_BACKOFF_AFTER: Duration = Duration::from_secs(30);

struct Ctx {
    settings: Settings,
    work: WorkerCtx,
}

/// Runs until `shutdown`; returns after the jobs in hand are finished.
pub async fn run_worker(settings: Settings, shutdown: Shutdown) -> Result<(), RunError> {
    let ctx = Arc::new(Ctx {
        work: worker_ctx(&settings).await?,
        settings,
    });
    let url = ctx.settings.queue.url.clone();
    info!(queue = %ctx.settings.queue_url_redacted(), jobs = %ctx.settings.queue.jobs, "worker starting");
    let mut delay = Duration::from_millis(200);
    loop {
        if shutdown.requested() {
            return Ok(());
        }
        let sd = shutdown.clone();
        let conn = match rabbitmq::connect(&url, "loopmind-worker", || sd.requested()).await {
            Ok(c) => Arc::new(c),
            Err(_) if shutdown.requested() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        info!("connected to RabbitMQ");
        ctx.work.metrics.set_connected(true);
        let connected_at = std::time::Instant::now();
        let served = serve(&conn, &ctx, shutdown.clone()).await;
        ctx.work.metrics.set_connected(false);
        match served {
            Ok(()) => {
                close(&conn, "worker stopping").await;
                info!("worker stopped");
                return Ok(());
            }
            Err(e) => {
                // A connection that served a while was a success: the next
                // failure starts the backoff over.
                if connected_at.elapsed() > RESET_BACKOFF_AFTER {
                    delay = Duration::from_millis(200);
                }
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "lost RabbitMQ, reconnecting");
                close(&conn, "reconnecting").await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Closes a connection, bounded: a close-ok that never comes must not keep
/// a stopping worker alive (its jobs are settled already).
async fn close(conn: &Connection, why: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, why.into())).await;
}

/// What every job needs, whatever the connection: the store, scratch
/// space, render isolation, metrics (served on `/metrics` from here) and
/// the store breaker.
async fn worker_ctx(settings: &Settings) -> Result<WorkerCtx, RunError> {
    let store = store::open(&settings.store).await?;
    let scratch = if settings.worker.scratch.as_os_str().is_empty() {
        std::env::temp_dir()
    } else {
        settings.worker.scratch.clone()
    };
    let iso = Isolation {
        log_level: settings.log.level.clone(),
        log_json: settings.log.format == crate::config::LogFormat::Json,
        ..Isolation::new(settings.render.clone()).map_err(RunError::Exe)?
    };
    let metrics = Arc::new(Metrics::new());
    let ip = settings
        .worker
        .metrics_addr
        .parse()
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    if let Some(bound) =
        crate::http::serve_first_free(ip, settings.worker.metrics_port, metrics.clone()).await
    {
        info!(addr = %bound, "serving /healthz and /metrics");
    }
    let breaker = Arc::new(StoreBreaker::new(Duration::from_secs(
        settings.worker.store_probe_s,
    )));
    Ok(WorkerCtx {
        store,
        scratch,
        iso,
        metrics,
        breaker,
        max_backoff: Duration::from_secs(32),
    })
}

/// Why a consumer stopped.
enum Stop {
    Shutdown,
    StoreDown,
    Failed(lapin::Error),
}

/// Jobs running on one connection.
type Running = JoinSet<Result<(), QueueError>>;

/// Consumes on one connection until shutdown (Ok) or a failure (Err).
async fn serve(
    conn: &Arc<Connection>,
    ctx: &Arc<Ctx>,
    mut shutdown: Shutdown,
) -> Result<(), lapin::Error> {
    let session = Session::open(conn, ctx).await?;
    let mut running = Running::new();
    let stop = loop {
        let breaker = &ctx.work.breaker;
        if breaker.is_open() {
            tokio::select! {
                _ = shutdown.wait() => break Stop::Shutdown,
                _ = breaker.wait_for_store(ctx.work.store.as_ref()) => {}
            }
            ctx.work.metrics.set_store_up(true);
        }
        // No `?` from here on: returning would drop the renders in hand.
        let mut consumer = match session.consume().await {
            Ok(c) => c,
            Err(e) => break Stop::Failed(e),
        };
        let stop = session
            .take_jobs(&mut consumer, &mut running, &mut shutdown)
            .await;
        if let Stop::Failed(_) = stop {
            break stop;
        }
        // Take no more jobs before anything else: cancel, then hand back
        // uncounted what the broker sent before the cancel arrived.
        let returned = match session.cancel(consumer).await {
            Ok(n) => n,
            Err(e) => break Stop::Failed(e),
        };
        if let Stop::StoreDown = stop {
            warn!(
                in_hand = running.len(),
                handed_back = returned,
                "the store does not answer: stopped taking jobs"
            );
            continue;
        }
        break stop;
    };
    // Finish the jobs in hand (their acks need the channel). A channel that
    // closed gave them back to the queue already: another worker has them,
    // so rendering on would only render them twice.
    if let Stop::Shutdown = stop {
        info!(in_hand = running.len(), "stopping: finishing jobs in hand");
    } else if !session.ch.status().connected() && !running.is_empty() {
        warn!(
            in_hand = running.len(),
            "lost the channel: the broker gave the jobs in hand back; stopping their renders"
        );
        running.abort_all();
    }
    while let Some(done) = running.join_next().await {
        if let Ok(Err(e)) = done {
            warn!(error = %e, "could not settle a job; the broker will redeliver it");
        }
    }
    match stop {
        Stop::Failed(e) => Err(e),
        _ => Ok(()),
    }
}

/// A worker's channels on one connection: jobs are consumed on `ch`;
/// results and hand-backs are published on `results`, with confirms.
struct Session<'a> {
    conn: &'a Arc<Connection>,
    ctx: &'a Arc<Ctx>,
    ch: Channel,
    results: Channel,
}

impl<'a> Session<'a> {
    async fn open(conn: &'a Arc<Connection>, ctx: &'a Arc<Ctx>) -> Result<Self, lapin::Error> {
        let q = &ctx.settings.queue;
        let ch = conn.create_channel().await?;
        ch.basic_qos(q.prefetch, BasicQosOptions::default()).await?;
        rabbitmq::declare_jobs(&ch, q).await?;
        let results = rabbitmq::confirm_channel(conn).await?;
        Ok(Self {
            conn,
            ctx,
            ch,
            results,
        })
    }

    async fn consume(&self) -> Result<Consumer, lapin::Error> {
        self.ch
            .basic_consume(
                self.ctx.settings.queue.jobs.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    fn delivery(&self, delivery: lapin::message::Delivery) -> RabbitDelivery {
        RabbitDelivery::new(
            self.conn.clone(),
            delivery,
            self.results.clone(),
            self.ctx.settings.queue.jobs.clone(),
            self.ctx.settings.queue.delivery_limit,
        )
    }

    /// Starts a job for every delivery until a stop request, the store
    /// breaker tripping, or a failure of the consumer or of settling a job.
    async fn take_jobs(
        &self,
        consumer: &mut Consumer,
        running: &mut Running,
        shutdown: &mut Shutdown,
    ) -> Stop {
        let breaker = &self.ctx.work.breaker;
        loop {
            let next = tokio::select! {
                _ = shutdown.wait() => return Stop::Shutdown,
                _ = breaker.tripped() => return Stop::StoreDown,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    match done {
                        Ok(Err(QueueError::Broker(e))) => return Stop::Failed(e),
                        Ok(Err(e)) => { warn!(error = %e, "could not settle a job"); continue; }
                        Ok(Ok(())) => continue,
                        Err(e) => { warn!(error = %e, "job task failed"); continue; }
                    }
                }
                d = consumer.next() => d,
            };
            match next {
                Some(Ok(delivery)) => {
                    let d = self.delivery(delivery);
                    let ctx = self.ctx.clone();
                    running.spawn(async move { work_on(Box::new(d), &ctx.work).await });
                }
                Some(Err(e)) => return Stop::Failed(e),
                // The broker cancelled the consumer (queue deleted, node down).
                None => {
                    return Stop::Failed(
                        std::io::Error::other("consumer cancelled by the broker").into(),
                    )
                }
            }
        }
    }

    /// Cancels the consumer, then hands back uncounted the deliveries that
    /// arrived before the cancel did; how many.
    async fn cancel(&self, mut consumer: Consumer) -> Result<usize, lapin::Error> {
        self.ch
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await?;
        let mut returned = 0;
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        {
            Box::new(self.delivery(delivery))
                .hand_back()
                .await
                .map_err(into_lapin)?;
            returned += 1;
        }
        Ok(returned)
    }
}

fn into_lapin(e: QueueError) -> lapin::Error {
    match e {
        QueueError::Broker(e) => e,
        other => std::io::Error::other(other.to_string()).into(),
    }
}

/// Header counting a job's uncounted hand-backs.
const HANDBACKS: &str = "loopmind-handbacks";

/// A RabbitMQ delivery of a job, with the confirm channel results and
/// hand-backs are published on.
struct RabbitDelivery {
    conn: Arc<Connection>,
    delivery: lapin::message::Delivery,
    results: Channel,
    jobs_queue: String,
    /// Tries after the first before the job is given up
    /// (`queue.delivery_limit`).
    limit: u32,
}

impl RabbitDelivery {
    fn new(
        conn: Arc<Connection>,
        delivery: lapin::message::Delivery,
        results: Channel,
        jobs_queue: String,
        limit: u32,
    ) -> Self {
        Self {
            conn,
            delivery,
            results,
            jobs_queue,
            limit,
        }
    }

    /// Puts a copy of the job on the jobs queue, then acks this delivery.
    async fn copy_back(self: Box<Self>, props: BasicProperties) -> Result<(), QueueError> {
        let sent = rabbitmq::publish_confirmed(
            &self.results,
            &self.jobs_queue,
            &self.delivery.data,
            props,
        )
        .await?;
        if sent == rabbitmq::Published::Unroutable {
            // Never ack a job whose copy went nowhere: the delivery stays
            // with the broker.
            return Err(QueueError::Broker(
                std::io::Error::other(format!("no queue {} took the job's copy", self.jobs_queue))
                    .into(),
            ));
        }
        self.delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// To the dead letters: the catalog's follower says why.
    async fn dead_letter(self: Box<Self>) -> Result<(), QueueError> {
        self.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await?;
        Ok(())
    }

    /// A note of type `kind` to whoever follows the job, unconfirmed (best
    /// effort: a note lost is said again by what follows it).
    async fn note(&self, job: &Job, kind: &str, body: &[u8]) {
        let props = rabbitmq::message_properties(&job.catalog, &job.job_id).with_type(kind.into());
        let to = self.reply_to(&job.catalog);
        if let Err(e) = rabbitmq::publish(&self.results, &to, body, props).await {
            warn!(error = %e, kind, "cannot send a note about the job");
        }
    }

    /// Where results go: the job's `reply_to`, else its catalog's queue.
    fn reply_to(&self, catalog: &str) -> String {
        self.delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| rabbitmq::results_queue(catalog))
    }
}

#[async_trait]
impl Delivery for RabbitDelivery {
    fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    fn redeliveries(&self) -> u32 {
        rabbitmq::attempts(&self.delivery.properties)
    }

    fn handbacks(&self) -> u32 {
        rabbitmq::header_u32(&self.delivery.properties, HANDBACKS)
    }

    async fn started(&self, job: &Job) {
        // It only moves the runner's deadline.
        let body = rabbitmq::started_message(&job.job_id);
        self.note(job, rabbitmq::STARTED, &body).await;
    }

    fn from_service(&self) -> bool {
        rabbitmq::header_u32(&self.delivery.properties, rabbitmq::SERVICE_JOB) == 1
    }

    async fn progress(&self, job: &Job, fraction: f64) {
        if !self.from_service() {
            return;
        }
        let note = rabbitmq::ProgressNote {
            schema_version: Default::default(),
            job_id: job.job_id.clone(),
            fraction,
        };
        // A later note or the result says more.
        let body = serde_json::to_vec(&note).expect("serialises");
        self.note(job, rabbitmq::PROGRESS, &body).await;
    }

    async fn complete(self: Box<Self>, job: &Job, result: &JobResult) -> Result<(), QueueError> {
        let body = serde_json::to_vec(result).expect("result serialises");
        let props = rabbitmq::message_properties(&job.catalog, &job.job_id)
            .with_type(rabbitmq::RESULT.into());
        // Result first, then ack: a crash between them re-renders the job,
        // identically, and the runner drops the duplicate.
        let to = self.reply_to(&job.catalog);
        if rabbitmq::publish_confirmed(&self.results, &to, &body, props).await?
            == rabbitmq::Published::Unroutable
        {
            // Its follower is gone (the queue expired or was deleted): the
            // outputs are in the store for the next run; said, not lost quietly.
            warn!(queue = %to, "nobody follows the job's catalog any more: its result was returned unread");
        }
        self.delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    fn exhausted(&self) -> bool {
        self.redeliveries() > self.limit
    }

    async fn retry(self: Box<Self>) -> Result<(), QueueError> {
        let tried = self.redeliveries() + 1;
        if tried > self.limit {
            return self.dead_letter().await;
        }
        // A copy carrying the count, then the ack: the count is ours,
        // whatever the broker counts (a crash in between delivers the job
        // twice, tried once more; never lost).
        let props = rabbitmq::copy_properties(&self.delivery.properties, rabbitmq::ATTEMPTS, tried);
        self.copy_back(props).await
    }

    async fn hand_back(self: Box<Self>) -> Result<(), QueueError> {
        // A requeue would count against the delivery limit: publish a copy
        // (a new message, its count at zero), then ack this one.
        let n = self.handbacks() + 1;
        // The copy keeps the tries so far (its redeliveries included).
        let tried = rabbitmq::copy_properties(
            &self.delivery.properties,
            rabbitmq::ATTEMPTS,
            self.redeliveries(),
        );
        let props = rabbitmq::copy_properties(&tried, HANDBACKS, n);
        self.copy_back(props).await
    }

    async fn abandoned(&self, job: &Job) -> bool {
        // Only a results queue known to be gone counts; any doubt renders.
        self.delivery.properties.reply_to().is_some()
            && matches!(
                rabbitmq::queue_exists(&self.conn, &self.reply_to(&job.catalog)).await,
                Ok(false)
            )
    }

    async fn discard(self: Box<Self>) -> Result<(), QueueError> {
        self.delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    async fn reject(self: Box<Self>, _why: UnreadableJob) -> Result<(), QueueError> {
        // Not a job we may act on: straight to the dead letters.
        self.dead_letter().await
    }
}
