//! The coordinator's side of RabbitMQ, as a [`JobQueue`]: a catalog is taken
//! by declaring its lock, `loopmind.lock.<catalog>`, an exclusive queue of
//! the coordinator's connection (a second coordinator on the same catalog is
//! refused while the first holds it; a coordinator that dies frees it);
//! jobs are published with confirms in batches (each batch's confirms
//! within [`rabbitmq::CONFIRM_TIMEOUT`]); results, start notes and dead
//! letters come back as [`Event`]s. Connections are rebuilt with backoff
//! whenever they fail; a finished catalog's queues are deleted.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::protocol::AMQPSoftError;
use lapin::types::FieldTable;
use lapin::Connection;
use loopmind_worker::config::Settings;
use loopmind_worker::job::{Job, JobResult};
use loopmind_worker::queue::{DeadLetterError, Event, JobQueue, QueueError};
use loopmind_worker::rabbitmq;
use std::time::Duration;
use tracing::{info, warn};

/// Jobs published per batch of publisher confirms.
const BATCH: usize = 1000;

pub struct RabbitQueue {
    settings: Settings,
    catalog: String,
    conn: Option<Connection>,
    incoming: Option<rabbitmq::CatalogDeliveries>,
    /// Backoff between reconnects while following.
    delay: Duration,
    /// The lock was ours and another coordinator holds it now (ours went
    /// with a lost connection): its queues are never touched again.
    lost: bool,
}

impl RabbitQueue {
    pub fn new(settings: &Settings) -> Self {
        Self {
            settings: settings.clone(),
            catalog: String::new(),
            conn: None,
            incoming: None,
            delay: Duration::from_millis(200),
            lost: false,
        }
    }

    async fn connection(&mut self) -> Result<&Connection, QueueError> {
        if self.conn.is_none() {
            let c = rabbitmq::connect(&self.settings.queue.url, "loopmind-coordinator", || false)
                .await?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_ref().expect("connected"))
    }

    /// Takes the catalog's lock, declares its queues and consumes them.
    async fn take(&mut self) -> Result<(), QueueError> {
        let catalog = self.catalog.clone();
        let q = self.settings.queue.clone();
        let conn = self.connection().await?;
        let ch = conn.create_channel().await?;
        ch.basic_qos(100, BasicQosOptions::default()).await?;
        rabbitmq::declare_jobs(&ch, &q).await?;
        // The catalog's lock: a queue only this connection may use, gone
        // when the connection goes (a coordinator that dies frees it). Taken
        // before the catalog's queues are declared: a refused coordinator
        // must not declare again what the running one is deleting as it
        // finishes (CI saw a dead-letter queue outlive its catalog so).
        let lock = format!("loopmind.lock.{catalog}");
        ch.queue_declare(
            lock.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| match rabbitmq::soft_error(&e) {
            // Another connection holds this exclusive queue (the broker's
            // answer, pinned by worker/tests/rabbitmq.rs). No other refusal
            // means "taken": the consumers below are not exclusive.
            Some(AMQPSoftError::RESOURCELOCKED) => QueueError::Busy(format!(
                "catalog '{catalog}' is being run by another coordinator (it holds {lock})"
            )),
            _ => e.into(),
        })?;
        rabbitmq::declare_catalog(&ch, &catalog, q.catalog_expiry_s).await?;
        self.incoming = Some(rabbitmq::follow_catalog(&ch, &catalog).await?);
        Ok(())
    }

    /// Takes the lock again after a lost connection. Another coordinator
    /// holding it now is final: this run stops and never deletes the
    /// queues the other one uses.
    async fn retake(&mut self) -> Result<(), QueueError> {
        let taken = self.take().await;
        if let Err(QueueError::Busy(m)) = &taken {
            self.lost = true;
            return Err(QueueError::Busy(format!("lost the catalog's lock: {m}")));
        }
        taken
    }

    async fn drop_connection(&mut self) {
        self.incoming = None;
        if let Some(c) = self.conn.take() {
            let _ = c.close(200, "reconnecting".into()).await;
        }
    }

    async fn publish_batch(&mut self, batch: &[&Job]) -> Result<(), lapin::Error> {
        let catalog = self.catalog.clone();
        let jobs_queue = self.settings.queue.jobs.clone();
        let conn = self.conn.as_ref().expect("connected");
        let ch = rabbitmq::confirm_channel(conn).await?;
        let reply = rabbitmq::results_queue(&catalog);
        for job in batch {
            let body = serde_json::to_vec(job).expect("job serialises");
            let props = rabbitmq::message_properties(&catalog, &job.job_id)
                .with_reply_to(reply.as_str().into());
            // Confirms are awaited for the whole batch below.
            drop(rabbitmq::publish(&ch, &jobs_queue, &body, props).await?);
        }
        let returned = tokio::time::timeout(rabbitmq::CONFIRM_TIMEOUT, ch.wait_for_confirms())
            .await
            .map_err(|_| std::io::Error::other("no publisher confirms within 60 s"))??;
        if !returned.is_empty() {
            return Err(std::io::Error::other("broker returned published jobs").into());
        }
        let _ = ch.close(200, "batch published".into()).await;
        Ok(())
    }
}

/// One delivery as an event (acked: the runner keeps what it needs).
async fn event_of(dead: bool, d: Delivery) -> Result<Event, lapin::Error> {
    let id = d.properties.message_id().as_ref().map(|s| s.to_string());
    let event = if dead {
        Event::DeadLettered(
            serde_json::from_slice::<Job>(&d.data).map_err(DeadLetterError::NotAJob),
        )
    } else if d.properties.kind().as_ref().map(|k| k.as_str()) == Some(rabbitmq::STARTED) {
        match serde_json::from_slice::<rabbitmq::StartedNote>(&d.data) {
            Ok(n) => Event::Started { job_id: n.job_id },
            Err(e) => Event::Unreadable {
                job_id: id,
                reason: format!("unreadable start note: {e}"),
            },
        }
    } else {
        match serde_json::from_slice::<JobResult>(&d.data) {
            Ok(r) => Event::Finished(r),
            Err(e) => Event::Unreadable {
                job_id: id,
                reason: format!("unreadable result: {e}"),
            },
        }
    };
    d.ack(BasicAckOptions::default()).await?;
    Ok(event)
}

#[async_trait::async_trait]
impl JobQueue for RabbitQueue {
    async fn open(&mut self, catalog: &str) -> Result<(), QueueError> {
        self.catalog = catalog.to_string();
        self.take().await
    }

    async fn publish(&mut self, jobs: &[Job]) -> Result<(), QueueError> {
        let started = std::time::Instant::now();
        let refs: Vec<&Job> = jobs.iter().collect();
        let mut next = 0;
        let mut delay = Duration::from_millis(200);
        while next < refs.len() {
            let batch = &refs[next..(next + BATCH).min(refs.len())];
            self.connection().await?;
            match self.publish_batch(batch).await {
                Ok(()) => {
                    next += batch.len();
                    delay = Duration::from_millis(200);
                }
                Err(e) => {
                    // Unconfirmed: publish the batch again (duplicates are harmless).
                    warn!(error = %e, "publishing interrupted, reconnecting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    self.drop_connection().await;
                    self.retake().await?;
                }
            }
        }
        info!(
            jobs = jobs.len(),
            seconds = started.elapsed().as_secs_f64(),
            "published"
        );
        Ok(())
    }

    async fn next_event(&mut self, wait: Duration) -> Result<Option<Event>, QueueError> {
        if self.incoming.is_none() {
            match self.retake().await {
                Ok(()) => self.delay = Duration::from_millis(200),
                Err(QueueError::Busy(m)) => return Err(QueueError::Busy(m)),
                Err(e) => {
                    warn!(error = %e, retry_in_ms = self.delay.as_millis() as u64, "lost RabbitMQ while following, reconnecting");
                    self.drop_connection().await;
                    tokio::time::sleep(self.delay.min(wait)).await;
                    self.delay = (self.delay * 2).min(Duration::from_secs(10));
                    return Ok(None);
                }
            }
        }
        let incoming = self.incoming.as_mut().expect("following");
        let next = match tokio::time::timeout(wait, incoming.next()).await {
            Err(_) => return Ok(None),
            Ok(n) => n,
        };
        let failed = match next {
            Some((dead, Ok(d))) => match event_of(dead, d).await {
                Ok(e) => return Ok(Some(e)),
                Err(e) => e,
            },
            Some((_, Err(e))) => e,
            None => std::io::Error::other("consumers cancelled by the broker").into(),
        };
        warn!(error = %failed, "lost RabbitMQ while following, reconnecting");
        self.drop_connection().await;
        Ok(None)
    }

    async fn close(&mut self, finished: bool) -> Result<(), QueueError> {
        self.incoming = None;
        if finished && !self.lost {
            let catalog = self.catalog.clone();
            let conn = self.connection().await?;
            let ch = conn.create_channel().await?;
            rabbitmq::delete_catalog(&ch, &catalog).await?;
            info!(catalog = %catalog, "catalog queues deleted");
        }
        if let Some(c) = self.conn.take() {
            let _ = c.close(200, "catalog done".into()).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::options::QueueDeleteOptions;

    /// A second coordinator on a catalog another holds is refused as busy:
    /// the broker's RESOURCE_LOCKED on the lock, read by its code (RabbitMQ
    /// on 127.0.0.1:5672, a jobs queue of the test's own).
    #[tokio::test]
    async fn a_second_coordinator_on_a_held_catalog_is_busy() {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let mut settings = Settings::default();
        if let Ok(url) = std::env::var("LOOPMIND_QUEUE__URL") {
            settings.queue.url = url;
        }
        settings.queue.jobs = format!("loopmind.test.busy-{n}");
        let catalog = format!("busy-{n}");
        let (mut first, mut second) = (RabbitQueue::new(&settings), RabbitQueue::new(&settings));
        let refused = tokio::time::timeout(Duration::from_secs(60), async {
            first
                .open(&catalog)
                .await
                .expect("RabbitMQ on 127.0.0.1:5672");
            second.open(&catalog).await
        })
        .await
        .expect("RabbitMQ answers within 60 s");
        // Cleaned up on a connection of its own once both have let go: a
        // queue deleted under its consumer's feet can upset the connection.
        let _ = second.close(false).await;
        first.close(false).await.unwrap();
        let conn = rabbitmq::connect(&settings.queue.url, "loopmind-test", || true)
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        rabbitmq::delete_catalog(&ch, &catalog).await.unwrap();
        let jobs = settings.queue.jobs.as_str().into();
        ch.queue_delete(jobs, QueueDeleteOptions::default())
            .await
            .unwrap();
        let _ = conn.close(200, "done".into()).await;
        match refused {
            Err(QueueError::Busy(m)) => {
                assert!(m.contains("being run by another coordinator"), "{m}")
            }
            other => panic!("a second coordinator was not refused as busy: {other:?}"),
        }
    }
}
