//! Job events: every status change is a row of `job_events` (recorded by
//! [`record`] right after the change, reading the job's status as it is
//! then), and `GET /v1/events` streams the caller's tenant's rows as
//! server-sent events, from the moment of connecting or from the
//! `Last-Event-ID` a client reconnects with.

use super::auth::need;
use super::db::{now_ms, Db, DbError};
use super::error::ApiError;
use super::keys::{Caller, Scope};
use super::seq::next_seq;
use super::view::rfc3339;
use super::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use sqlx::{AnyConnection, Row};
use std::convert::Infallible;
use std::time::Duration;

/// Runs `change` (one statement that changes job `id`'s status) and, if
/// it changed the job, records the event and the webhook messages it owes,
/// in one transaction: a change is never without its event, whatever dies
/// when. Whether it changed the job.
pub(crate) async fn change<'q>(
    db: &Db,
    id: &str,
    change: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
) -> Result<bool, DbError> {
    let mut tx = db.pool.begin().await?;
    let changed = change.execute(&mut *tx).await?.rows_affected() > 0;
    if changed {
        record(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Records job `id`'s status as it is now (in the caller's transaction,
/// after the change) as an event, and owes it to the tenant's webhooks.
pub(crate) async fn record(tx: &mut AnyConnection, id: &str) -> Result<(), DbError> {
    let job = sqlx::query("SELECT tenant, status FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let (tenant, status): (String, String) = (job.try_get("tenant")?, job.try_get("status")?);
    record_queued_as(tx, id, &tenant, &status).await
}

/// [`record`] of a job whose tenant and status the caller has just
/// written (a new job: one statement fewer on the submission's path).
pub(crate) async fn record_queued_as(
    tx: &mut AnyConnection,
    id: &str,
    tenant: &str,
    status: &str,
) -> Result<(), DbError> {
    let seq = next_seq();
    sqlx::query(
        "INSERT INTO job_events (seq, tenant, job_id, status, at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(seq)
    .bind(tenant)
    .bind(id)
    .bind(status)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    super::webhooks::fan_out(tx, tenant, seq, id, status).await
}

struct Row_ {
    seq: i64,
    job_id: String,
    status: String,
    at_ms: i64,
}

/// How long an event's row may take from its sequence number to its
/// commit: rows younger than this are left for the next read, so one that
/// commits late behind a later one is not skipped.
const SETTLE_US: i64 = 500_000;

async fn after(db: &Db, tenant: &str, seq: i64) -> Result<Vec<Row_>, DbError> {
    let rows = sqlx::query(
        "SELECT seq, job_id, status, at_ms FROM job_events WHERE tenant = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT 200",
    )
    .bind(tenant)
    .bind(seq)
    .bind(now_ms() * 1000 - SETTLE_US)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Row_ {
                seq: r.try_get("seq")?,
                job_id: r.try_get("job_id")?,
                status: r.try_get("status")?,
                at_ms: r.try_get("at_ms")?,
            })
        })
        .collect()
}

async fn latest(db: &Db, tenant: &str) -> Result<i64, DbError> {
    let row = sqlx::query("SELECT MAX(seq) AS m FROM job_events WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&db.pool)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("m")?.unwrap_or(0))
}

/// `GET /v1/events`: `event: job.status`, `id: <seq>`, `data: {"job_id",
/// "status", "at"}`.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "Server-sent events: `event: job.status`, `id: <n>`, `data: {\"job_id\", \"status\", \"at\"}`", content_type = "text/event-stream"),
        super::openapi::Refusals))]
pub(crate) async fn stream(
    axum::extract::State(app): State,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    need(&caller, Scope::Read)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let from = match resume {
        Some(seq) => seq,
        None => latest(&app.db, &caller.tenant).await?,
    };
    let state = (app, caller.tenant, from, Vec::<Event>::new());
    let events =
        futures_util::stream::unfold(state, |(app, tenant, mut seq, mut ready)| async move {
            loop {
                if let Some(e) = ready.pop() {
                    return Some((Ok(e), (app, tenant, seq, ready)));
                }
                match after(&app.db, &tenant, seq).await {
                    Ok(rows) if !rows.is_empty() => {
                        seq = rows.last().map_or(seq, |r| r.seq);
                        // Popped from the end: kept newest first.
                        ready = rows.iter().rev().map(event).collect();
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "events: the database did not answer");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn event(r: &Row_) -> Event {
    let data = serde_json::json!({"job_id": r.job_id, "status": r.status, "at": rfc3339(r.at_ms)});
    Event::default()
        .event("job.status")
        .id(r.seq.to_string())
        .data(data.to_string())
}
