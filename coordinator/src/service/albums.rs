//! Album normalisation in batches: the tracks of a batch that share an
//! album get one loudness offset (the album's loudness against each
//! track's), so their relative levels are kept while the album as a whole
//! lands on target, as `loopmind coordinator` does for a manifest's album
//! (the offsets are `crate::album`'s, the same code).
//!
//! Two passes, each a stage of the job's row (`jobs.album_stage`), in both
//! shapes: `measure` (the job's message goes out as its measure job),
//! `wait` (measured; queued, but not taken), `render` (its message carries
//! the album's offset). An album opens once none of its members is left to
//! measure; members that failed or were cancelled are left out of its
//! loudness. Stages only move forward, so "nothing left to measure", once
//! true, stays true: the check may read outside the transaction that
//! moves the waiting members on, and whichever change comes last opens
//! the album (a `serve` that dies in between is covered by [`sweep`]).

use super::db::{now_ms, DbError};
use super::error::ApiError;
use super::App;
use loopmind_worker::job::{Job, Measurement};
use loopmind_worker::progress::Point;
use serde_json::{json, Map, Value};
use sqlx::Row;
use std::collections::HashMap;

use super::view::stage::RENDER;
pub(crate) use super::view::stage::{MEASURE, WAIT};

/// The longest album name taken (it is a grouping key and a report field).
const NAME_MAX: usize = 256;

/// The album a batch's track is in, taken out of its body: `{"name"}`
/// (laid over the batch's own like any option; `null` for none).
pub(crate) fn album_of(body: &mut Map<String, Value>) -> Result<Option<String>, ApiError> {
    let name = match body.remove("album") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(a)) => {
            if let Some(k) = a.keys().find(|k| *k != "name") {
                return Err(ApiError::bad_request(format!("album: unknown field `{k}`")));
            }
            a.get("name").cloned()
        }
        Some(_) => return Err(ApiError::bad_request("album: must be {\"name\": ...}")),
    };
    match name {
        Some(Value::String(n))
            if !n.trim().is_empty() && n.len() <= NAME_MAX && !n.chars().any(char::is_control) =>
        {
            Ok(Some(n))
        }
        _ => Err(ApiError::invalid(format!(
            "album.name: 1 to {NAME_MAX} bytes of text without control characters"
        ))),
    }
}

/// What goes out for a job at `stage`: its measure job in the first pass,
/// else its message as stored.
pub(crate) fn outgoing(stage: Option<&str>, message: String) -> String {
    if stage != Some(MEASURE) {
        return message;
    }
    // Unreadable: sent as it is, for the worker to refuse and say so.
    first_pass(&message).map_or(message, |(_, m)| m)
}

/// A render job's first pass: (its message id, its message).
pub(crate) fn first_pass(message: &str) -> Option<(String, String)> {
    let job = serde_json::from_str::<Job>(message).ok()?.measure();
    let text = serde_json::to_string(&job).expect("a job serialises");
    Some((job.job_id, text))
}

/// The first pass's answer: the job waits (queued, not taken) for the rest
/// of its album, and the album opens if it was the last to be measured.
pub(crate) async fn measured(app: &App, id: &str, m: &Measurement) -> Result<(), DbError> {
    let q = sqlx::query(
        "UPDATE jobs SET status = 'queued', album_stage = $1, measurement = $2, progress = $3, updated_ms = $4 \
         WHERE id = $5 AND status = 'running' AND album_stage = $6",
    )
    .bind(WAIT)
    .bind(serde_json::to_string(m).expect("a measurement serialises"))
    .bind(Point::Taken.fraction())
    .bind(now_ms())
    .bind(id.to_string())
    .bind(MEASURE);
    super::events::change(&app.db, id, q).await?;
    settle(app, id).await
}

/// After a change to job `id` (measured, ended, cancelled): opens its
/// album when nothing is left to measure.
pub(crate) async fn settle(app: &App, id: &str) -> Result<(), DbError> {
    let row = sqlx::query("SELECT batch_id, album FROM jobs WHERE id = $1 AND album IS NOT NULL")
        .bind(id)
        .fetch_optional(&app.db.pool)
        .await?;
    let Some(row) = row else { return Ok(()) };
    let batch: String = row.try_get("batch_id")?;
    let album: String = row.try_get("album")?;
    open(app, &batch, &album).await
}

/// At start: every album with a member waiting, opened if it is ready.
pub(crate) async fn sweep(app: &App) -> Result<(), DbError> {
    let rows = sqlx::query(
        "SELECT DISTINCT batch_id, album FROM jobs WHERE album_stage = $1 AND status = 'queued'",
    )
    .bind(WAIT)
    .fetch_all(&app.db.pool)
    .await?;
    for r in &rows {
        open(
            app,
            &r.try_get::<String, _>("batch_id")?,
            &r.try_get::<String, _>("album")?,
        )
        .await?;
    }
    Ok(())
}

/// Opens the album if none of its members is left to measure: each
/// waiting member gets its offset and goes on to render.
async fn open(app: &App, batch: &str, album: &str) -> Result<(), DbError> {
    let left = sqlx::query(
        "SELECT id FROM jobs WHERE batch_id = $1 AND album = $2 AND album_stage = $3 \
         AND status IN ('queued', 'running') LIMIT 1",
    )
    .bind(batch)
    .bind(album)
    .bind(MEASURE)
    .fetch_optional(&app.db.pool)
    .await?;
    if left.is_some() {
        return Ok(());
    }
    let mut tx = app.db.pool.begin().await?;
    // Taken in one statement: of replicas opening the album at once, one
    // moves every waiting member, the others none.
    let rows = sqlx::query(
        "UPDATE jobs SET album_stage = $1, updated_ms = $2 \
         WHERE batch_id = $3 AND album = $4 AND album_stage = $5 AND status = 'queued' \
         RETURNING id, message, measurement",
    )
    .bind(RENDER)
    .bind(now_ms())
    .bind(batch)
    .bind(album)
    .bind(WAIT)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut members = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("id")?;
        let message: String = r.try_get("message")?;
        let m = super::db::opt_text(r, "measurement")?
            .and_then(|m| serde_json::from_str::<Measurement>(&m).ok());
        members.push((id, message, m));
    }
    let placed = place(album, &members);
    for (id, outcome) in placed {
        match outcome {
            Ok((message_id, message)) => {
                to_render(&mut tx, app, &id, &message_id, &message).await?
            }
            Err(why) => refuse(&mut tx, &id, &why.to_string()).await?,
        }
    }
    tx.commit().await?;
    app.queued.notify_waiters();
    tracing::info!(
        batch,
        album,
        members = rows.len(),
        "album measured: its tracks render"
    );
    Ok(())
}

/// Why an album member cannot render with its album's offset.
#[derive(Debug, thiserror::Error)]
enum Unplaced {
    #[error("the job's message is unreadable: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("its measurement is missing")]
    Unmeasured,
    #[error("album '{album}': this track cannot take the album's offset ({why}): it is silent or too far from the album's loudness")]
    Offset {
        album: String,
        why: loopmind_worker::job::InvalidJob,
    },
}

/// Each member's render message with its album offset (its message id
/// and text), or why it cannot have one.
fn place(
    album: &str,
    members: &[(String, String, Option<Measurement>)],
) -> Vec<(String, Result<(String, String), Unplaced>)> {
    let measured: HashMap<String, Measurement> = members
        .iter()
        .filter_map(|(id, _, m)| m.map(|m| (id.clone(), m)))
        .collect();
    let pairs: Vec<(&str, &str)> = members
        .iter()
        .map(|(id, ..)| (id.as_str(), album))
        .collect();
    let offsets = crate::album::offsets(&pairs, &measured);
    let one = |id: &String, message: &str| -> Result<(String, String), Unplaced> {
        let mut job: Job = serde_json::from_str(message)?;
        job.album = Some(offsets.get(id).cloned().ok_or(Unplaced::Unmeasured)?);
        job.validate().map_err(|why| Unplaced::Offset {
            album: album.to_string(),
            why,
        })?;
        let text = serde_json::to_string(&job).expect("a job serialises");
        Ok((job.job_id, text))
    };
    members
        .iter()
        .map(|(id, message, _)| (id.clone(), one(id, message)))
        .collect()
}

async fn to_render(
    tx: &mut sqlx::AnyConnection,
    app: &App,
    id: &str,
    message_id: &str,
    message: &str,
) -> Result<(), DbError> {
    sqlx::query("UPDATE jobs SET message = $1, message_id = $2 WHERE id = $3")
        .bind(message)
        .bind(message_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if app.queue_shaped() {
        super::outbox::put(tx, id, message_id, message).await?;
    }
    Ok(())
}

/// A member that cannot render with its album ends failed, saying why.
async fn refuse(tx: &mut sqlx::AnyConnection, id: &str, why: &str) -> Result<(), DbError> {
    let e = json!({"code": "album_offset", "retryable": false, "message": why});
    sqlx::query(
        "UPDATE jobs SET status = 'failed', progress = 1, error = $1, updated_ms = $2 WHERE id = $3",
    )
    .bind(e.to_string())
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    super::events::record(tx, id).await
}
