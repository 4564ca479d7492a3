//! `loopmind worker`: consume jobs from RabbitMQ, run each through
//! [`process_job`], publish its result, then acknowledge. A job is acked only
//! after all its outputs are written; a crash before that redelivers it.
//! Up to `queue.prefetch` jobs run at once. Connections are rebuilt with
//! backoff whenever they fail; a stop request finishes the jobs in hand.

use crate::config::Settings;
use crate::isolate::Isolation;
use crate::job::{Job, Status};
use crate::metrics::Metrics;
use crate::process::{process_job, Disposition};
use crate::rabbitmq;
use crate::shutdown::Shutdown;
use crate::store::{self, ObjectStore, StoreError};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::{info, info_span, warn, Instrument};

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
    store: Arc<dyn ObjectStore>,
    scratch: PathBuf,
    metrics: Arc<Metrics>,
    iso: Isolation,
}

/// Runs until `shutdown`; returns after the jobs in hand are finished.
pub async fn run_worker(settings: Settings, shutdown: Shutdown) -> Result<(), RunError> {
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
    let ctx = Arc::new(Ctx {
        settings,
        store,
        scratch,
        metrics,
        iso,
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
            Ok(c) => c,
            Err(_) if shutdown.requested() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        info!("connected to RabbitMQ");
        ctx.metrics.set_connected(true);
        let connected_at = std::time::Instant::now();
        let served = serve(&conn, &ctx, shutdown.clone()).await;
        ctx.metrics.set_connected(false);
        match served {
            Ok(()) => {
                let _ = conn.close(200, "worker stopping".into()).await;
                return Ok(());
            }
            Err(e) => {
                // A connection that served a while was a success: the next
                // failure starts the backoff over.
                if connected_at.elapsed() > RESET_BACKOFF_AFTER {
                    delay = Duration::from_millis(200);
                }
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "lost RabbitMQ, reconnecting");
                let _ = conn.close(200, "reconnecting".into()).await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Consumes on one connection until shutdown (Ok) or a failure (Err).
async fn serve(
    conn: &Connection,
    ctx: &Arc<Ctx>,
    mut shutdown: Shutdown,
) -> Result<(), lapin::Error> {
    let q = &ctx.settings.queue;
    let ch = conn.create_channel().await?;
    ch.basic_qos(q.prefetch, BasicQosOptions::default()).await?;
    rabbitmq::declare_jobs(&ch, q).await?;
    let results = rabbitmq::confirm_channel(conn).await?;
    let mut consumer = ch
        .basic_consume(
            q.jobs.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut running = JoinSet::new();
    let outcome = loop {
        let next = tokio::select! {
            _ = shutdown.wait() => break Ok(()),
            Some(done) = running.join_next(), if !running.is_empty() => {
                match done {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => break Err(e),
                    Err(e) => { warn!(error = %e, "job task failed"); continue; }
                }
            }
            d = consumer.next() => d,
        };
        let Some(delivery) = next else {
            // The broker cancelled the consumer (queue deleted, node down).
            break Err(std::io::Error::other("consumer cancelled by the broker").into());
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => break Err(e),
        };
        running.spawn(handle(delivery, ctx.clone(), results.clone()));
    };
    // Stop taking jobs; finish the ones in hand (their acks need the channel).
    if outcome.is_ok() {
        info!(in_hand = running.len(), "stopping: finishing jobs in hand");
    }
    while let Some(done) = running.join_next().await {
        if let Ok(Err(e)) = done {
            warn!(error = %e, "could not settle a job; the broker will redeliver it");
        }
    }
    outcome
}

async fn handle(delivery: Delivery, ctx: Arc<Ctx>, results: Channel) -> Result<(), lapin::Error> {
    let job: Job = match serde_json::from_slice::<Job>(&delivery.data)
        .map_err(|e| e.to_string())
        .and_then(|j| j.validate().map(|()| j))
    {
        Ok(j) => j,
        Err(e) => {
            // Not a job we may act on: straight to the dead letters.
            warn!(error = %e, "malformed or unsafe job message rejected");
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await?;
            return Ok(());
        }
    };
    let span = info_span!("job", catalog = %job.catalog, track = %job.track, job_id = %job.job_id);
    async move {
        let deliveries = rabbitmq::delivery_count(&delivery.properties) + 1;
        info!(delivery = deliveries, "job started");
        let token = ctx.metrics.job_started();
        let outcome = process_job(&job, ctx.store.as_ref(), &ctx.scratch, &ctx.iso).await;
        let label = match (outcome.disposition, outcome.result.status) {
            (Disposition::Requeue, _) => "requeued",
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
        match outcome.disposition {
            Disposition::Ack => {
                let body = serde_json::to_vec(&outcome.result).expect("result serialises");
                let to = delivery
                    .properties
                    .reply_to()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| rabbitmq::results_queue(&job.catalog));
                let props = rabbitmq::message_properties(&job.catalog, &job.job_id);
                // Result first, then ack: a crash between them re-renders the
                // job, identically, and the coordinator drops the duplicate.
                rabbitmq::publish_confirmed(&results, &to, &body, props).await?;
                delivery.ack(BasicAckOptions::default()).await?;
                info!(status = ?outcome.result.status, seconds = outcome.result.render_seconds, "job done");
            }
            Disposition::Requeue => {
                // Back off before handing it back (the store may need time),
                // then requeue on purpose; the delivery limit bounds retries.
                let wait = Duration::from_secs(1 << deliveries.min(5));
                warn!(retry_in_s = wait.as_secs(), "job requeued");
                tokio::time::sleep(wait).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await?;
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}
