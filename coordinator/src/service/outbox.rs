//! The outbox relay (`service.render = "queue"`): a job's queue message is
//! written with the job, in its transaction; this task leases the oldest
//! unsent messages (so several replicas share the work without sending one
//! twice while a lease holds), publishes them to `queue.jobs` with
//! publisher confirms, and deletes them once the broker has confirmed.
//! A replica that dies between the confirm and the delete leaves the rows
//! to be sent again when their lease runs out: a duplicate message renders
//! the same bits, and its result is recorded once.

use super::db::{now_ms, Db, DbError};
use super::App;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use loopmind_worker::config::Settings;
use loopmind_worker::rabbitmq;
use loopmind_worker::shutdown::Shutdown;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

/// Messages sent per round (one batch of confirms).
const BATCH: i64 = 500;
/// How long a replica holds the messages it is sending.
const LEASE_MS: i64 = 30_000;

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ: {0}")]
    Unconfirmed(&'static str),
}

/// Relays until shutdown; woken by each submission.
pub(crate) async fn run(app: Arc<App>, s: Settings, shutdown: Shutdown) {
    let mut conn: Option<Connection> = None;
    let mut delay = Duration::from_millis(200);
    while !shutdown.requested() {
        let woken = app.queued.notified();
        match relay_once(&app.db, &s, &mut conn).await {
            Ok(0) => {
                let _ = tokio::time::timeout(Duration::from_millis(500), woken).await;
            }
            Ok(_) => delay = Duration::from_millis(200),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "outbox: cannot relay jobs to the queue");
                if let Some(c) = conn.take() {
                    let _ = c.close(200, "reconnecting".into()).await;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close(200, "stopping".into()).await;
    }
}

/// One round: lease, publish, confirm, delete. How many were sent.
async fn relay_once(
    db: &Db,
    s: &Settings,
    conn: &mut Option<Connection>,
) -> Result<usize, RelayError> {
    let rows = lease(db).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    if conn.is_none() {
        let c = rabbitmq::connect(&s.queue.url, "loopmind-serve", || true).await?;
        let ch = c.create_channel().await?;
        rabbitmq::declare_jobs(&ch, &s.queue).await?;
        rabbitmq::declare_catalog(&ch, &s.service.catalog, s.queue.catalog_expiry_s).await?;
        let _ = ch.close(200, "declared".into()).await;
        *conn = Some(c);
    }
    let ch = rabbitmq::confirm_channel(conn.as_ref().expect("connected")).await?;
    for (_, message_id, message) in &rows {
        let props = properties(&s.service.catalog, message_id);
        // Confirms are awaited for the whole round below.
        drop(rabbitmq::publish(&ch, &s.queue.jobs, message.as_bytes(), props).await?);
    }
    let returned = tokio::time::timeout(rabbitmq::CONFIRM_TIMEOUT, ch.wait_for_confirms())
        .await
        .map_err(|_| RelayError::Unconfirmed("no publisher confirms within 60 s"))??;
    if !returned.is_empty() {
        return Err(RelayError::Unconfirmed(
            "the broker returned published jobs",
        ));
    }
    let _ = ch.close(200, "published".into()).await;
    let mut tx = db.pool.begin().await.map_err(DbError::from)?;
    for (job, message_id, _) in &rows {
        // Only what was sent: a job whose message changed meanwhile (an
        // album track's render after its measure) keeps the new one.
        sqlx::query("DELETE FROM outbox WHERE job_id = $1 AND message_id = $2")
            .bind(job)
            .bind(message_id)
            .execute(&mut *tx)
            .await
            .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;
    tracing::debug!(jobs = rows.len(), "outbox: relayed");
    Ok(rows.len())
}

/// Owes job `id`'s message to the queue (in the caller's transaction): a
/// message still owed for the job is replaced by it.
pub(crate) async fn put(
    tx: &mut sqlx::AnyConnection,
    id: &str,
    message_id: &str,
    message: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO outbox (job_id, seq, message_id, message, lease_ms) VALUES ($1, $2, $3, $4, 0) \
         ON CONFLICT (job_id) DO UPDATE SET seq = excluded.seq, message_id = excluded.message_id, \
         message = excluded.message, lease_ms = 0",
    )
    .bind(id)
    .bind(super::seq::next_seq())
    .bind(message_id)
    .bind(message)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The oldest messages no replica is sending, leased to this one:
/// (job id, message id, message).
async fn lease(db: &Db) -> Result<Vec<(String, String, String)>, DbError> {
    let now = now_ms();
    let rows = sqlx::query(
        "UPDATE outbox SET lease_ms = $1 WHERE job_id IN \
         (SELECT job_id FROM outbox WHERE lease_ms < $2 ORDER BY seq LIMIT $3) AND lease_ms < $2 \
         RETURNING job_id, message_id, message, seq",
    )
    .bind(now + LEASE_MS)
    .bind(now)
    .bind(BATCH)
    .fetch_all(&db.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq: i64 = r.try_get("seq")?;
        out.push((
            seq,
            (
                r.try_get("job_id")?,
                r.try_get("message_id")?,
                r.try_get("message")?,
            ),
        ));
    }
    // Published in submission order.
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// A service job's message properties: results and dead letters come back
/// under the service's catalog (`service.catalog`; the job's own catalog,
/// `api.<tenant>`, places its outputs); the worker sends progress and
/// honours a cancel marker.
fn properties(catalog: &str, message_id: &str) -> BasicProperties {
    let props = rabbitmq::message_properties(catalog, message_id)
        .with_reply_to(rabbitmq::results_queue(catalog).into());
    let mut headers: FieldTable = props.headers().clone().unwrap_or_default();
    headers.insert(rabbitmq::SERVICE_JOB.into(), AMQPValue::LongLongInt(1));
    props.with_headers(headers)
}
