//! RabbitMQ topology and connections.
//!
//! - `queue.jobs` (default `loopmind.jobs`): a durable quorum queue. LoopMind
//!   counts a job's tries itself ([`attempts`]: a retry is a new copy
//!   carrying the count, never a requeue, whose counting brokers change:
//!   RabbitMQ 4.3 stopped counting `nack`), so the broker's delivery limit
//!   is left off; a job tried `queue.delivery_limit` + 1 times (a poison
//!   job, or one that kills its worker) is rejected to the `loopmind.dead`
//!   headers exchange, which routes it by its `catalog` header to
//!   `loopmind.dead.<catalog>`.
//! - `loopmind.results.<catalog>`: durable quorum queue of job results (and
//!   "started" notes, message type [`STARTED`]), which the catalog's
//!   coordinator follows. `loopmind.lock.<catalog>`, an exclusive queue of
//!   the coordinator's connection, is the catalog's lock: a second
//!   coordinator on the same catalog is refused while the first runs.
//! - A catalog's two queues are deleted by its coordinator once its summary
//!   is written, and expire (`x-expires`, `queue.catalog_expiry_s`) when a
//!   coordinator died and nobody came back for them. A job whose catalog's
//!   results queue is gone is dropped by the worker that takes it (no one
//!   is waiting for it). The jobs queue and the dead-letter exchange stay:
//!   they are shared by every catalog.
//!
//! Connections are supervised here rather than by lapin's young auto-recovery:
//! on any error the caller rebuilds connection, channel, QoS and consumer.

use crate::config::{redact_url, QueueSettings};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::time::Duration;
use tracing::warn;

pub const DEAD_EXCHANGE: &str = "loopmind.dead";

pub fn results_queue(catalog: &str) -> String {
    format!("loopmind.results.{catalog}")
}

pub fn dead_queue(catalog: &str) -> String {
    format!("loopmind.dead.{catalog}")
}

/// Connects, retrying with exponential backoff (0.2 s doubling to 10 s)
/// until it succeeds or `give_up` says so.
pub async fn connect(
    url: &str,
    name: &str,
    mut give_up: impl FnMut() -> bool,
) -> Result<Connection, lapin::Error> {
    let mut delay = Duration::from_millis(200);
    loop {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match Connection::connect(url, props).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                if give_up() {
                    return Err(e);
                }
                warn!(url = %redact_url(url), error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach RabbitMQ");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Message types on a results queue.
pub const STARTED: &str = "started";
pub const RESULT: &str = "result";
pub const PROGRESS: &str = "progress";

/// A job message's header marking a job of the job service: its worker
/// sends [`PROGRESS`] notes (the service shows progress; a catalog runner
/// has no use for them) and drops it unrendered when the service has put
/// its cancel marker ([`crate::layout::CANCELLED`]) in the store.
pub const SERVICE_JOB: &str = "loopmind-service";

/// A worker's note of how far a job is.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ProgressNote {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    pub job_id: String,
    pub fraction: f64,
}

/// A worker's note that it took a job.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StartedNote {
    #[serde(default)]
    pub schema_version: crate::schema::SchemaVersion,
    pub job_id: String,
}

pub fn started_message(job_id: &str) -> Vec<u8> {
    serde_json::to_vec(&StartedNote {
        schema_version: Default::default(),
        job_id: job_id.into(),
    })
    .expect("serialises")
}

fn quorum_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t
}

/// Declares the jobs queue and the dead-letter exchange (idempotent).
pub async fn declare_jobs(ch: &Channel, q: &QueueSettings) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        DEAD_EXCHANGE.into(),
        ExchangeKind::Headers,
        durable,
        FieldTable::default(),
    )
    .await?;
    // No x-delivery-limit: tries are LoopMind's count ([`attempts`]).
    let mut args = quorum_args();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_EXCHANGE.into()),
    );
    // Honoured by RabbitMQ 3.12+ (older brokers keep their global 30 min).
    args.insert(
        "x-consumer-timeout".into(),
        AMQPValue::LongLongInt(q.consumer_timeout_ms.min(i64::MAX as u64) as i64),
    );
    ch.queue_declare(q.jobs.as_str().into(), durable_queue(), args)
        .await?;
    Ok(())
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares a catalog's results queue and its dead-letter queue; both
/// expire after `expiry_s` unused (no consumer, no declare).
pub async fn declare_catalog(
    ch: &Channel,
    catalog: &str,
    expiry_s: u64,
) -> Result<(), lapin::Error> {
    let mut args = quorum_args();
    args.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(expiry_s.saturating_mul(1000).min(i64::MAX as u64) as i64),
    );
    ch.queue_declare(results_queue(catalog).into(), durable_queue(), args.clone())
        .await?;
    let dead = dead_queue(catalog);
    ch.queue_declare(dead.as_str().into(), durable_queue(), args)
        .await?;
    let mut bind = FieldTable::default();
    bind.insert("x-match".into(), AMQPValue::LongString("all".into()));
    bind.insert("catalog".into(), AMQPValue::LongString(catalog.into()));
    ch.queue_bind(
        dead.into(),
        DEAD_EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        bind,
    )
    .await
}

/// What follows a catalog receives: each delivery with whether it came
/// from the dead-letter queue.
pub type CatalogDeliveries = futures_util::stream::BoxStream<
    'static,
    (bool, Result<lapin::message::Delivery, lapin::Error>),
>;

/// Consumes a catalog's results queue and its dead-letter queue (declared
/// already) as one stream.
pub async fn follow_catalog(
    ch: &Channel,
    catalog: &str,
) -> Result<CatalogDeliveries, lapin::Error> {
    use futures_util::StreamExt;
    let mut streams = Vec::new();
    for (dead, name) in [(false, results_queue(catalog)), (true, dead_queue(catalog))] {
        let consumer = ch
            .basic_consume(
                name.as_str().into(),
                "".into(),
                lapin::options::BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        streams.push(consumer.map(move |d| (dead, d)).boxed());
    }
    Ok(futures_util::stream::select_all(streams).boxed())
}

/// Deletes a catalog's queues (its summary is written, nothing is left to
/// collect).
pub async fn delete_catalog(ch: &Channel, catalog: &str) -> Result<(), lapin::Error> {
    use lapin::options::QueueDeleteOptions;
    for q in [results_queue(catalog), dead_queue(catalog)] {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await?;
    }
    Ok(())
}

/// Whether a results queue exists (someone may still collect what is
/// published to it). On a channel of its own: a failed passive declare
/// closes it.
pub async fn queue_exists(conn: &Connection, queue: &str) -> Result<bool, lapin::Error> {
    let ch = conn.create_channel().await?;
    let r = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match r {
        Ok(_) => {
            let _ = ch.close(200, "checked".into()).await;
            Ok(true)
        }
        Err(e) if soft_error(&e) == Some(AMQPSoftError::NOTFOUND) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The broker's channel-level refusal carried by `e` (NOT_FOUND,
/// RESOURCE_LOCKED, ...), if it is one: callers decide on the reply code the
/// broker sent, not on how lapin words it.
pub fn soft_error(e: &lapin::Error) -> Option<AMQPSoftError> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// A channel with publisher confirms on.
pub async fn confirm_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// Persistent JSON message properties, tagged with the catalog for routing
/// dead letters.
pub fn message_properties(catalog: &str, message_id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("catalog".into(), AMQPValue::LongString(catalog.into()));
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_headers(headers)
}

/// Longest wait for a publisher confirm.
pub const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Publishes to a queue through the default exchange, mandatory (a
/// message no queue takes comes back with its confirm instead of
/// vanishing); the broker's confirm (on a confirm channel) is the returned
/// future, which a caller that does not need it drops.
pub async fn publish(
    ch: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        },
        body,
        props,
    )
    .await
}

/// A message's properties for publishing it again: the broker's own `x-`
/// headers (its delivery count) dropped, `counter` set to `n`.
pub fn copy_properties(props: &BasicProperties, counter: &str, n: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(h) = props.headers() {
        for (k, v) in h.inner() {
            if !k.as_str().starts_with("x-") && k.as_str() != counter {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers.insert(counter.into(), AMQPValue::LongLongInt(n as i64));
    props.clone().with_headers(headers)
}

/// A numeric header, 0 when absent.
pub fn header_u32(props: &BasicProperties, name: &str) -> u32 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => Some(*n as u32),
            AMQPValue::LongInt(n) => Some(*n as u32),
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::ShortInt(n) => Some(*n as u32),
            _ => None,
        })
        .unwrap_or(0)
}

/// Where a confirmed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Queued,
    /// No such queue: the broker returned it (the publish was mandatory).
    Unroutable,
}

/// Publishes to a queue through the default exchange and waits for the
/// broker's confirm.
pub async fn publish_confirmed(
    ch: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<Published, lapin::Error> {
    let pending = publish(ch, queue, body, props).await?;
    // A confirm that never comes would hold the job (and a stopping worker)
    // forever; as an error, the connection is rebuilt and the job redelivered.
    let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, pending)
        .await
        .map_err(|_| std::io::Error::other("no publisher confirm within 60 s"))??;
    if confirm.is_nack() {
        return Err(std::io::Error::other("publish nacked by the broker").into());
    }
    Ok(match confirm.take_message() {
        Some(_) => Published::Unroutable,
        None => Published::Queued,
    })
}

/// Header of a job's copy: the tries of the job before the copy was made.
pub const ATTEMPTS: &str = "loopmind-attempts";

/// How many times a job was tried before this delivery: the tries its
/// copy carries ([`ATTEMPTS`]) and the copy's own redeliveries (a worker
/// that died with it; quorum queues count those in `x-delivery-count`).
pub fn attempts(props: &BasicProperties) -> u32 {
    header_u32(props, ATTEMPTS).saturating_add(header_u32(props, "x-delivery-count"))
}
