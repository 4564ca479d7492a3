//! What the workers say about the service's jobs (`service.render =
//! "queue"`), read from the service catalog's results and dead-letter
//! queues by every replica (competing consumers) and recorded in the
//! database, each message acknowledged only once its change is committed.
//! Recording is idempotent: every change is guarded by the status it may
//! come from, so a duplicate result, a late one for a cancelled job, or a
//! start note after the result changes nothing.

use super::albums;
use super::db::{now_ms, opt_text, Db, DbError};
use super::App;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicQosOptions};
use loopmind_worker::config::Settings;
use loopmind_worker::job::{Job, JobResult, Status};
use loopmind_worker::progress::Point;
use loopmind_worker::rabbitmq::{self, ProgressNote, StartedNote};
use loopmind_worker::shutdown::Shutdown;
use serde_json::json;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

/// Follows the results until shutdown, reconnecting with backoff.
pub(crate) async fn run(app: Arc<App>, s: Settings, shutdown: Shutdown) {
    let mut delay = Duration::from_millis(200);
    while !shutdown.requested() {
        match follow(&app, &s, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "results: lost RabbitMQ, reconnecting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn follow(app: &App, s: &Settings, shutdown: &Shutdown) -> Result<(), lapin::Error> {
    let conn = rabbitmq::connect(&s.queue.url, "loopmind-serve-results", || {
        shutdown.requested()
    })
    .await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(64, BasicQosOptions::default()).await?;
    rabbitmq::declare_jobs(&ch, &s.queue).await?;
    let catalog = &s.service.catalog;
    rabbitmq::declare_catalog(&ch, catalog, s.queue.catalog_expiry_s).await?;
    let mut incoming = rabbitmq::follow_catalog(&ch, catalog).await?;
    let mut stop = shutdown.clone();
    loop {
        let next = tokio::select! {
            _ = stop.wait() => break,
            n = incoming.next() => n,
        };
        let d = match next {
            Some((_, Err(e))) => return Err(e),
            None => return Err(std::io::Error::other("consumers cancelled by the broker").into()),
            Some((dead, Ok(d))) => (dead, d),
        };
        settle(app, d.0, d.1).await?;
    }
    let _ = conn.close(200, "stopping".into()).await;
    Ok(())
}

/// Records one message and acknowledges it; a database that does not
/// answer puts it back for later.
async fn settle(app: &App, dead: bool, d: Delivery) -> Result<(), lapin::Error> {
    match record(app, dead, &d).await {
        Ok(()) => d.ack(BasicAckOptions::default()).await.map(drop),
        Err(e) => {
            tracing::warn!(error = %e, "results: cannot record a message; it goes back to the queue");
            tokio::time::sleep(Duration::from_secs(1)).await;
            d.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .map(drop)
        }
    }
}

async fn record(app: &App, dead: bool, d: &Delivery) -> Result<(), DbError> {
    let db = &app.db;
    let kind = d.properties.kind().as_ref().map(|k| k.as_str().to_string());
    if dead {
        return match serde_json::from_slice::<Job>(&d.data) {
            Ok(job) => dead_letter(app, &job).await,
            Err(e) => Ok(tracing::warn!(error = %e, "results: a dead letter that is not a job")),
        };
    }
    match kind.as_deref() {
        Some(rabbitmq::STARTED) => match serde_json::from_slice::<StartedNote>(&d.data) {
            Ok(n) => started(db, &n.job_id).await,
            Err(e) => Ok(tracing::warn!(error = %e, "results: unreadable start note")),
        },
        Some(rabbitmq::PROGRESS) => match serde_json::from_slice::<ProgressNote>(&d.data) {
            Ok(n) => progress(db, &n.job_id, n.fraction).await,
            Err(e) => Ok(tracing::warn!(error = %e, "results: unreadable progress note")),
        },
        _ => match serde_json::from_slice::<JobResult>(&d.data) {
            Ok(r) => finished(app, &r).await,
            Err(e) => Ok(tracing::warn!(error = %e, "results: unreadable result")),
        },
    }
}

/// The job a message names, if it is one of ours: (its id, its album
/// stage).
async fn job_of(db: &Db, message_id: &str) -> Result<Option<(String, Option<String>)>, DbError> {
    let row = sqlx::query("SELECT id, album_stage FROM jobs WHERE message_id = $1")
        .bind(message_id)
        .fetch_optional(&db.pool)
        .await?;
    let Some(row) = row else {
        tracing::warn!(
            message_id,
            "results: a message about no job of this service"
        );
        return Ok(None);
    };
    Ok(Some((row.try_get("id")?, opt_text(&row, "album_stage")?)))
}

async fn started(db: &Db, message_id: &str) -> Result<(), DbError> {
    let Some((id, _)) = job_of(db, message_id).await? else {
        return Ok(());
    };
    // A late note of a measure job already measured leaves its wait alone.
    let q = sqlx::query(
        "UPDATE jobs SET status = 'running', progress = $3, attempts = attempts + 1, updated_ms = $1 \
         WHERE id = $2 AND status = 'queued' AND (album_stage IS NULL OR album_stage <> $4)",
    )
    .bind(now_ms())
    .bind(id.clone())
    .bind(Point::Taken.fraction())
    .bind(albums::WAIT);
    if !super::events::change(db, &id, q).await? {
        // Taken again (a redelivery): counted, the status stays.
        sqlx::query("UPDATE jobs SET attempts = attempts + 1 WHERE id = $1 AND status = 'running'")
            .bind(&id)
            .execute(&db.pool)
            .await?;
    }
    Ok(())
}

async fn progress(db: &Db, message_id: &str, fraction: f64) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE jobs SET progress = $1 WHERE message_id = $2 AND status = 'running' AND progress < $1",
    )
    .bind(fraction.clamp(0.0, 0.99))
    .bind(message_id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

async fn finished(app: &App, r: &JobResult) -> Result<(), DbError> {
    let Some((id, stage)) = job_of(&app.db, &r.job_id).await? else {
        return Ok(());
    };
    if let (Status::Measured, Some(m)) = (r.status, &r.measurement) {
        return albums::measured(app, &id, m).await;
    }
    let status = match r.status {
        Status::Failed => "failed",
        _ => "succeeded",
    };
    let body = serde_json::to_string(r).expect("a result serialises");
    end(app, (&id, stage), status, Some(body), None).await
}

async fn dead_letter(app: &App, job: &Job) -> Result<(), DbError> {
    let Some(found) = job_of(&app.db, &job.job_id).await? else {
        return Ok(());
    };
    let e = json!({"code": "delivery_limit", "retryable": true,
        "message": "the queue gave up on the job after its delivery limit (queue.delivery_limit): it failed or killed its worker every time; see the workers' logs"});
    let (id, stage) = (&found.0, found.1);
    end(app, (id, stage), "failed", None, Some(e.to_string())).await
}

/// A job ends, unless it has already (a cancel stands; a duplicate result
/// changes nothing) or it waits for its album (a message about its
/// measure job, come again, does not end it); an album member's end may
/// open its album.
async fn end(
    app: &App,
    (id, stage): (&str, Option<String>),
    status: &str,
    result: Option<String>,
    error: Option<String>,
) -> Result<(), DbError> {
    let q = sqlx::query(
        "UPDATE jobs SET status = $1, progress = 1, result = $2, error = $3, updated_ms = $4 \
         WHERE id = $5 AND status IN ('queued', 'running') AND (album_stage IS NULL OR album_stage <> $6)",
    )
    .bind(status.to_string())
    .bind(result)
    .bind(error)
    .bind(now_ms())
    .bind(id.to_string())
    .bind(albums::WAIT);
    super::events::change(&app.db, id, q).await?;
    if stage.is_some() {
        albums::settle(app, id).await?;
    }
    Ok(())
}
