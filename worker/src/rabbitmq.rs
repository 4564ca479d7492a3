//! RabbitMQ topology and connections.
//!
//! - `queue.jobs` (default `loopmind.jobs`): a durable quorum queue with a
//!   delivery limit; a job delivered that many times (a poison job, or one
//!   that kills its worker) is dead-lettered to the `loopmind.dead` headers
//!   exchange, which routes it by its `catalog` header to
//!   `loopmind.dead.<catalog>`.
//! - `loopmind.results.<catalog>`: durable quorum queue of job results, which
//!   the catalog's coordinator follows.
//!
//! Connections are supervised here rather than by lapin's young auto-recovery:
//! on any error the caller rebuilds connection, channel, QoS and consumer.

use crate::config::{redact_url, QueueSettings};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
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
    let mut args = quorum_args();
    // RabbitMQ 3.10's quorum queues have no default delivery limit.
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(q.delivery_limit.min(i32::MAX as u32) as i32),
    );
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

/// Declares a catalog's results queue and its dead-letter queue.
pub async fn declare_catalog(ch: &Channel, catalog: &str) -> Result<(), lapin::Error> {
    ch.queue_declare(
        results_queue(catalog).into(),
        durable_queue(),
        quorum_args(),
    )
    .await?;
    let dead = dead_queue(catalog);
    ch.queue_declare(dead.as_str().into(), durable_queue(), quorum_args())
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

/// Publishes to a queue through the default exchange and waits for the
/// broker's confirm.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn publish_confirmed(
    ch: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), lapin::Error> {
    let pending = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?;
    // A confirm that never comes would hold the job (and a stopping worker)
    // forever; as an error, the connection is rebuilt and the job redelivered.
    let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, pending)
        .await
        .map_err(|_| std::io::Error::other("no publisher confirm within 60 s"))??;
    if confirm.is_nack() {
        return Err(std::io::Error::other("publish nacked by the broker").into());
    }
    Ok(())
}

/// How many times a delivery has been delivered before (quorum queues count
/// it in `x-delivery-count`).
pub fn delivery_count(props: &BasicProperties) -> u32 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count"))
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => Some(*n as u32),
            AMQPValue::LongInt(n) => Some(*n as u32),
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::ShortInt(n) => Some(*n as u32),
            _ => None,
        })
        .unwrap_or(0)
}
