//! The embedded workers: the jobs table is their queue. Each takes the
//! oldest queued job (marking it running in the same statement), runs the
//! worker's own step for it (`work_on`: the render in a child process, the
//! outputs to the store) and settles it in the database. A job cancelled
//! meanwhile keeps `cancelled`: its late result is recorded nowhere.
//!
//! Embedded, one `serve` owns the database: a job found `running` at start
//! was running when the last one died, so it is queued again (its render
//! child died with it; the render is deterministic, so a rerun writes the
//! same bits).

use super::albums;
use super::db::{now_ms, opt_text, Db, DbError};
use super::App;
use async_trait::async_trait;
use loopmind_worker::config::Settings;
use loopmind_worker::isolate::Isolation;
use loopmind_worker::job::{Job, JobResult, Status, UnreadableJob};
use loopmind_worker::progress::Point;
use loopmind_worker::queue::breaker::StoreBreaker;
use loopmind_worker::queue::{work_on, Delivery, QueueError, WorkerCtx};
use loopmind_worker::shutdown::Shutdown;
use serde_json::json;
use sqlx::Row;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

pub(crate) struct Workers {
    tasks: JoinSet<()>,
}

impl Workers {
    /// Waits for the jobs in hand to settle.
    pub(crate) async fn stop(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts `service.workers` workers (one per core by default).
pub(crate) async fn start(
    app: Arc<App>,
    s: &Settings,
    data: &Path,
    shutdown: Shutdown,
) -> anyhow::Result<Workers> {
    requeue_interrupted(&app.db).await?;
    // Albums whose last measurement was recorded by a service that died
    // before it opened them.
    albums::sweep(&app).await?;
    let mut iso = Isolation::new(s.render.clone())?;
    iso.log_json = s.log.format == loopmind_worker::config::LogFormat::Json;
    let ctx = Arc::new(WorkerCtx {
        store: app.store.clone(),
        scratch: data.join("scratch"),
        iso,
        metrics: app.render_metrics.clone(),
        breaker: Arc::new(StoreBreaker::new(Duration::from_secs(
            s.worker.store_probe_s,
        ))),
        max_backoff: Duration::from_secs(8),
    });
    let n = match s.service.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (app, ctx, sd) = (app.clone(), ctx.clone(), shutdown.clone());
        let limit = s.queue.delivery_limit;
        tasks.spawn(async move { run(app, ctx, sd, limit).await });
    }
    Ok(Workers { tasks })
}

/// Jobs left `running` by a service that died: queued again.
async fn requeue_interrupted(db: &Db) -> Result<(), DbError> {
    let rows = sqlx::query("SELECT id FROM jobs WHERE status = 'running'")
        .fetch_all(&db.pool)
        .await?;
    let mut again = 0;
    for r in &rows {
        let id: String = r.try_get("id")?;
        let q = sqlx::query(
            "UPDATE jobs SET status = 'queued', progress = 0, updated_ms = $1 WHERE id = $2 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(id.clone());
        if super::events::change(db, &id, q).await? {
            again += 1;
        }
    }
    if again > 0 {
        tracing::warn!(
            jobs = again,
            "jobs that were running when the service stopped are queued again"
        );
    }
    Ok(())
}

async fn run(app: Arc<App>, ctx: Arc<WorkerCtx>, shutdown: Shutdown, limit: u32) {
    while !shutdown.requested() {
        let woken = app.queued.notified();
        match claim(&app.db).await {
            Ok(Some(c)) => {
                let d = DbDelivery {
                    app: app.clone(),
                    id: c.id,
                    body: c.message.into_bytes(),
                    attempts: c.attempts,
                    limit,
                    album_stage: c.album_stage,
                };
                if let Err(e) = work_on(Box::new(d), &ctx).await {
                    tracing::error!(error = %e, "a job could not be settled");
                }
            }
            Ok(None) => {
                // Idle: woken by a submission, or look again soon.
                let _ = tokio::time::timeout(Duration::from_millis(500), woken).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot take jobs from the database");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A job taken: what its worker is given.
struct Claimed {
    id: String,
    /// What the pass due renders (an album track's measure job first).
    message: String,
    attempts: i64,
    album_stage: Option<String>,
}

/// The oldest queued job (not one waiting for its album), marked running
/// (its event in the same transaction).
async fn claim(db: &Db) -> Result<Option<Claimed>, DbError> {
    let mut tx = db.pool.begin().await?;
    let row = sqlx::query(
        "UPDATE jobs SET status = 'running', progress = $2, attempts = attempts + 1, updated_ms = $1 \
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND (album_stage IS NULL OR album_stage <> $3) \
         ORDER BY seq LIMIT 1) AND status = 'queued' \
         RETURNING id, message, attempts, album_stage",
    )
    .bind(now_ms())
    .bind(Point::Taken.fraction())
    .bind(albums::WAIT)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let id: String = row.try_get("id")?;
    let album_stage = opt_text(&row, "album_stage")?;
    let message = albums::outgoing(album_stage.as_deref(), row.try_get("message")?);
    let attempts = row.try_get("attempts")?;
    super::events::record(&mut tx, &id).await?;
    tx.commit().await?;
    Ok(Some(Claimed {
        id,
        message,
        attempts,
        album_stage,
    }))
}

/// One claimed job, settled in its row. Every update is guarded by
/// `status = 'running'`: a cancelled job stays cancelled.
struct DbDelivery {
    app: Arc<App>,
    id: String,
    body: Vec<u8>,
    attempts: i64,
    limit: u32,
    album_stage: Option<String>,
}

impl DbDelivery {
    async fn set(
        &self,
        sql: &str,
        binds: (&str, f64, Option<String>, Option<String>),
    ) -> Result<(), QueueError> {
        let q = sqlx::query(sql)
            .bind(binds.0.to_string())
            .bind(binds.1)
            .bind(binds.2)
            .bind(binds.3)
            .bind(now_ms())
            .bind(self.id.clone());
        // Not changed: cancelled meanwhile, and the cancel stands.
        match super::events::change(&self.app.db, &self.id, q).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(job = %self.id, error = %e, "cannot record the job's state");
                Err(QueueError::Closed)
            }
        }
    }

    async fn finish(
        &self,
        status: &str,
        result: Option<String>,
        error: Option<String>,
    ) -> Result<(), QueueError> {
        self.set(
            "UPDATE jobs SET status = $1, progress = $2, result = $3, error = $4, updated_ms = $5 WHERE id = $6 AND status = 'running'",
            (status, 1.0, result, error),
        )
        .await?;
        self.album_settles().await
    }

    /// An album member that ends may be the last its album waited for.
    async fn album_settles(&self) -> Result<(), QueueError> {
        if self.album_stage.is_none() {
            return Ok(());
        }
        albums::settle(&self.app, &self.id).await.map_err(|e| {
            tracing::error!(job = %self.id, error = %e, "cannot open the job's album");
            QueueError::Closed
        })
    }

    async fn requeue(&self, counted: bool) -> Result<(), QueueError> {
        let sql = match counted {
            true => "UPDATE jobs SET status = $1, progress = $2, result = $3, error = $4, updated_ms = $5 WHERE id = $6 AND status = 'running'",
            false => "UPDATE jobs SET status = $1, progress = $2, result = $3, error = $4, updated_ms = $5, attempts = attempts - 1 WHERE id = $6 AND status = 'running'",
        };
        self.set(sql, ("queued", 0.0, None, None)).await
    }
}

#[async_trait]
impl Delivery for DbDelivery {
    fn body(&self) -> &[u8] {
        &self.body
    }
    fn redeliveries(&self) -> u32 {
        (self.attempts - 1).max(0) as u32
    }
    fn handbacks(&self) -> u32 {
        0
    }
    async fn started(&self, _job: &Job) {}
    async fn progress(&self, _job: &Job, fraction: f64) {
        let r = sqlx::query(
            "UPDATE jobs SET progress = $1 WHERE id = $2 AND status = 'running' AND progress < $1",
        )
        .bind(fraction)
        .bind(&self.id)
        .execute(&self.app.db.pool)
        .await;
        if let Err(e) = r {
            tracing::warn!(job = %self.id, error = %e, "cannot record the job's progress");
        }
    }
    async fn complete(self: Box<Self>, _job: &Job, result: &JobResult) -> Result<(), QueueError> {
        if let (Status::Measured, Some(m)) = (result.status, &result.measurement) {
            return albums::measured(&self.app, &self.id, m).await.map_err(|e| {
                tracing::error!(job = %self.id, error = %e, "cannot record the job's measurement");
                QueueError::Closed
            });
        }
        let status = match result.status {
            Status::Failed => "failed",
            _ => "succeeded",
        };
        let body = serde_json::to_string(result).expect("a result serialises");
        self.finish(status, Some(body), None).await
    }
    async fn retry(self: Box<Self>) -> Result<(), QueueError> {
        if self.attempts > i64::from(self.limit) {
            let e = json!({"code": "delivery_limit", "retryable": true, "message": format!(
                "failed {} times in a row (queue.delivery_limit {}); see the service's log", self.attempts, self.limit)});
            return self.finish("failed", None, Some(e.to_string())).await;
        }
        self.requeue(true).await
    }
    async fn hand_back(self: Box<Self>) -> Result<(), QueueError> {
        self.requeue(false).await
    }
    async fn reject(self: Box<Self>, why: UnreadableJob) -> Result<(), QueueError> {
        let e = json!({"code": "unreadable_job", "retryable": false, "message": why.to_string()});
        self.finish("failed", None, Some(e.to_string())).await
    }
    /// A job cancelled since it was claimed is dropped unrendered.
    async fn abandoned(&self, _job: &Job) -> bool {
        let row = sqlx::query("SELECT status FROM jobs WHERE id = $1")
            .bind(&self.id)
            .fetch_optional(&self.app.db.pool)
            .await;
        matches!(row, Ok(Some(r)) if r.try_get::<String, _>("status").is_ok_and(|s| s == "cancelled"))
    }
    async fn discard(self: Box<Self>) -> Result<(), QueueError> {
        Ok(())
    }
}
