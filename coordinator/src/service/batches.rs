//! Batches: a catalog submitted in one request (`POST /v1/batches`), its
//! jobs made in the same transaction as the batch, so a batch is there
//! whole or not at all. Options at the top are shared by every track; a
//! track's own options are laid over them, and each track's job is checked
//! by the same code as a single job's.

use super::albums::album_of;
use super::auth::need;
use super::db::{now_ms, DbError};
use super::error::ApiError;
use super::ids::new_id;
use super::jobs::{
    idempotency_key, job_message, json_object, parse_job, resolve, FoundUploads, ParsedJob,
};
use super::keys::{Caller, Scope};
use super::view::{self, rfc3339, STATUSES};
use super::{App, State};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use loopmind_worker::layout::safe_id;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::HashSet;

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

/// One track of a batch, checked: its id in the batch, its upload, its
/// request, its job's body as stored (the shared options laid under it).
struct Track {
    id: String,
    job: ParsedJob,
    body: String,
    /// The album it is normalised with (`{"album": {"name"}}`).
    album: Option<String>,
}

/// The body's tracks, each laid over the shared options and checked.
fn parse_batch(
    mut shared: Map<String, Value>,
    max: u64,
    tenant: &str,
) -> Result<Vec<Track>, ApiError> {
    let tracks = match shared.remove("tracks") {
        Some(Value::Array(t)) => t,
        Some(_) => return Err(ApiError::bad_request("tracks: must be an array")),
        None => return Err(ApiError::bad_request("tracks: missing")),
    };
    if tracks.is_empty() || tracks.len() as u64 > max {
        return Err(ApiError::invalid(format!(
            "tracks: {} given, 1 to {max} taken (service.batch_max_tracks)",
            tracks.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(tracks.len());
    for (i, t) in tracks.into_iter().enumerate() {
        let Value::Object(mut own) = t else {
            return Err(ApiError::bad_request(format!(
                "tracks[{i}]: must be an object"
            )));
        };
        let id = match own.remove("id") {
            Some(Value::String(id)) if safe_id(&id) => id,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "tracks[{i}].id: missing or not a safe name (letters, digits, - _ . up to 128 bytes)"
                )))
            }
        };
        if !seen.insert(id.clone()) {
            return Err(ApiError::invalid(format!(
                "tracks[{i}].id: '{id}' is given twice"
            )));
        }
        let mut body = shared.clone();
        body.extend(own);
        let about = |e: ApiError| e.about(&format!("tracks[{i}] '{id}'"));
        let mut options = body.clone();
        let album = album_of(&mut options).map_err(about)?;
        let job = parse_job(options, tenant).map_err(about)?;
        let body = Value::Object(body).to_string();
        out.push(Track {
            id,
            job,
            body,
            album,
        });
    }
    Ok(out)
}

#[utoipa::path(post, path = "/v1/batches", tag = "batches", request_body = super::openapi::BatchBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same batch")),
    responses((status = 201, description = "Made, every job queued", body = super::openapi::Batch),
        (status = 200, description = "The batch this Idempotency-Key made", body = super::openapi::Batch),
        (status = 409, description = "The Idempotency-Key was used with another body", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over service.batch_body_max_kib", body = super::openapi::ErrorBody),
        (status = 422, description = "A track refused (named), too many tracks", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn submit(
    axum::extract::State(app): State,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    need(&caller, Scope::Submit)?;
    let idem = idempotency_key(&headers)?;
    let body_hash = hex::encode(Sha256::digest(&body));
    let tracks = parse_batch(
        json_object(&body)?,
        app.settings.batch_max_tracks,
        &caller.tenant,
    )?;
    if let Some(k) = &idem {
        if let Some(found) = by_idempotency(&app, &caller.tenant, k, &body_hash).await? {
            return Ok((StatusCode::OK, Json(found)));
        }
    }
    let messages = batch_jobs(&app, &caller.tenant, tracks).await?;
    let id = new_id("batch");
    match insert(
        &app,
        &caller.tenant,
        &id,
        idem.as_deref(),
        &body_hash,
        &messages,
    )
    .await
    {
        Ok(()) => {}
        // The same key submitted at the same moment: the first one won.
        Err(DbError::Sql(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            let k = idem.as_deref().unwrap_or_default();
            return match by_idempotency(&app, &caller.tenant, k, &body_hash).await? {
                Some(found) => Ok((StatusCode::OK, Json(found))),
                None => Err(ApiError::conflict("the idempotency key is being used")),
            };
        }
        Err(e) => return Err(e.into()),
    }
    app.queued.notify_waiters();
    tracing::info!(batch = %id, tenant = %caller.tenant, jobs = messages.len(), "batch submitted");
    Ok((
        StatusCode::CREATED,
        Json(shown(&app, &caller.tenant, &id).await?),
    ))
}

/// The batch's jobs: each track's uploads found stored, its message made
/// (an album track's settings include its album's members and their
/// sources, as the coordinator's do; it is measured first).
async fn batch_jobs(
    app: &App,
    tenant: &str,
    tracks: Vec<Track>,
) -> Result<Vec<NewBatchJob>, ApiError> {
    let mut found = FoundUploads::default();
    let mut resolved = Vec::with_capacity(tracks.len());
    for t in tracks {
        let (source, request) = resolve(app, tenant, t.job, &mut found)
            .await
            .map_err(|e| e.about(&format!("track '{}'", t.id)))?;
        resolved.push((new_id("job"), t.id, t.body, t.album, source, request));
    }
    let album_keys =
        crate::album::keys(resolved.iter().map(|(job, _, _, album, source, _)| {
            (album.as_deref(), job.as_str(), source.as_str())
        }));
    let mut out = Vec::with_capacity(resolved.len());
    for (id, track, body, album, source, request) in resolved {
        let key = album.as_ref().map(|a| album_keys[a].as_str());
        let (message_id, message) = job_message(tenant, &id, source, request, key)?;
        let first = match album {
            Some(a) => {
                let (measure_id, measure) = super::albums::first_pass(&message)
                    .ok_or_else(|| ApiError::internal("the job made is unreadable", false))?;
                Some((a, measure_id, measure))
            }
            None => None,
        };
        out.push(NewBatchJob {
            id,
            track,
            body,
            message_id,
            message,
            first,
        });
    }
    Ok(out)
}

/// A job of a batch about to be made.
struct NewBatchJob {
    id: String,
    track: String,
    body: String,
    message_id: String,
    message: String,
    /// An album track's first pass: (album, measure message id, message).
    first: Option<(String, String, String)>,
}

/// The batch and its jobs (with their events and outbox messages), in one
/// transaction.
async fn insert(
    app: &App,
    tenant: &str,
    id: &str,
    idem: Option<&str>,
    body_hash: &str,
    jobs: &[NewBatchJob],
) -> Result<(), DbError> {
    let mut tx = app.db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO batches (id, seq, tenant, idempotency_key, body_hash, tracks, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(super::seq::next_seq())
    .bind(tenant)
    .bind(idem)
    .bind(body_hash)
    .bind(jobs.len() as i64)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    for j in jobs {
        let row = view::NewJob {
            id: &j.id,
            tenant,
            idempotency_key: None,
            body_hash: &hex::encode(Sha256::digest(j.body.as_bytes())),
            body: &j.body,
            message: &j.message,
            message_id: &j.message_id,
            outbox: app.queue_shaped(),
            batch: Some((id, &j.track)),
            album: j
                .first
                .as_ref()
                .map(|(album, message_id, message)| view::FirstPass {
                    album,
                    message_id,
                    message,
                }),
        };
        view::insert(&mut tx, &row).await?;
        super::events::record_queued_as(&mut tx, &j.id, tenant, "queued").await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The batch an idempotency key already made: shown when the body is the
/// same, 409 when it is not.
async fn by_idempotency(
    app: &App,
    tenant: &str,
    key: &str,
    body_hash: &str,
) -> Result<Option<Value>, ApiError> {
    let row =
        sqlx::query("SELECT id, body_hash FROM batches WHERE tenant = $1 AND idempotency_key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_optional(&app.db.pool)
            .await
            .map_err(DbError::from)?;
    let Some(row) = row else { return Ok(None) };
    let id: String = row.try_get("id").map_err(DbError::from)?;
    let hash: String = row.try_get("body_hash").map_err(DbError::from)?;
    if hash != body_hash {
        return Err(ApiError::conflict(format!(
            "Idempotency-Key '{key}' was used for batch {id} with another body"
        )));
    }
    Ok(Some(shown(app, tenant, &id).await?))
}

/// The tenant's batch `id`: 404 when it is not theirs.
async fn batch_row(app: &App, tenant: &str, id: &str) -> Result<sqlx::any::AnyRow, ApiError> {
    sqlx::query("SELECT tracks, created_ms FROM batches WHERE id = $1 AND tenant = $2")
        .bind(id)
        .bind(tenant)
        .fetch_optional(&app.db.pool)
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| ApiError::not_found("batch"))
}

/// `{"id", "created_at", "tracks", "counts": {status: n}, "finished",
/// "jobs": [{"id", "track", "status"}]}`.
async fn shown(app: &App, tenant: &str, id: &str) -> Result<Value, ApiError> {
    let batch = batch_row(app, tenant, id).await?;
    let jobs = sqlx::query(
        "SELECT id, track, status FROM jobs WHERE batch_id = $1 AND tenant = $2 ORDER BY seq, id",
    )
    .bind(id)
    .bind(tenant)
    .fetch_all(&app.db.pool)
    .await
    .map_err(DbError::from)?;
    let mut counts: Map<String, Value> =
        STATUSES.iter().map(|s| (s.to_string(), json!(0))).collect();
    let mut list = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let (job, track, status): (String, String, String) = (
            j.try_get("id").map_err(DbError::from)?,
            j.try_get("track").map_err(DbError::from)?,
            j.try_get("status").map_err(DbError::from)?,
        );
        if let Some(n) = counts.get_mut(&status) {
            *n = json!(n.as_i64().unwrap_or(0) + 1);
        }
        list.push(json!({"id": job, "track": track, "status": status}));
    }
    let open = ["queued", "running"]
        .iter()
        .map(|s| counts[*s].as_i64().unwrap_or(0))
        .sum::<i64>();
    Ok(json!({
        "id": id,
        "created_at": rfc3339(batch.try_get("created_ms").map_err(DbError::from)?),
        "tracks": batch.try_get::<i64, _>("tracks").map_err(DbError::from)?,
        "counts": counts,
        "finished": open == 0,
        "jobs": list,
    }))
}

#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches", params(("id" = String, Path)),
    responses((status = 200, description = "The batch", body = super::openapi::Batch),
        (status = 404, description = "No such batch of this tenant", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn show(
    axum::extract::State(app): State,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    need(&caller, Scope::Read)?;
    Ok((
        StatusCode::OK,
        Json(shown(&app, &caller.tenant, &id).await?),
    ))
}

/// Cancels every job of the batch not yet finished (each with its event,
/// all in one transaction); finished ones keep their outcome.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches", params(("id" = String, Path)),
    responses((status = 200, description = "Every job not yet ended cancelled", body = super::openapi::Batch),
        (status = 404, description = "No such batch of this tenant", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn cancel(
    axum::extract::State(app): State,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    need(&caller, Scope::Submit)?;
    // 404 for a batch that is not the caller's, before anything changes.
    batch_row(&app, &caller.tenant, &id).await?;
    let mut tx = app.db.pool.begin().await.map_err(DbError::from)?;
    let rows = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', updated_ms = $1 \
         WHERE batch_id = $2 AND tenant = $3 AND status IN ('queued', 'running') RETURNING id, message",
    )
    .bind(now_ms())
    .bind(&id)
    .bind(&caller.tenant)
    .fetch_all(&mut *tx)
    .await
    .map_err(DbError::from)?;
    for r in &rows {
        let job: String = r.try_get("id").map_err(DbError::from)?;
        super::events::record(&mut tx, &job).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    for r in &rows {
        let message: String = r.try_get("message").map_err(DbError::from)?;
        super::jobs::mark_cancelled(&app, &message).await;
    }
    tracing::info!(batch = %id, jobs = rows.len(), "batch cancelled");
    Ok((
        StatusCode::OK,
        Json(shown(&app, &caller.tenant, &id).await?),
    ))
}
