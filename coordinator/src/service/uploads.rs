//! Uploads: `POST /v1/uploads` hands out a one-time signed URL; a PUT of the
//! audio to it is streamed to a file under the store (never held in
//! memory), capped at `service.upload_max_bytes` (413 past it), then moved
//! to its key. A job names the upload by id.

use super::auth::need;
use super::db::now_ms;
use super::error::ApiError;
use super::ids::new_id;
use super::keys::{Caller, Scope};
use super::signing::Signed;
use super::view::rfc3339;
use super::{App, State};
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use futures_util::StreamExt;
use loopmind_worker::layout::upload_key;
use loopmind_worker::store::Presign;
use sqlx::Row;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

#[utoipa::path(post, path = "/v1/uploads", tag = "uploads",
    responses((status = 201, description = "PUT the audio to its url", body = super::openapi::UploadCreated),
        super::openapi::Refusals))]
pub(crate) async fn create(
    axum::extract::State(app): State,
    caller: Caller,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    need(&caller, Scope::Submit)?;
    let id = new_id("up");
    let expires = now_ms() + (app.settings.url_ttl_s * 1000) as i64;
    sqlx::query(
        "INSERT INTO uploads (id, tenant, store_key, state, expires_ms, created_ms) VALUES ($1, $2, $3, 'pending', $4, $5)",
    )
    .bind(&id)
    .bind(&caller.tenant)
    .bind(upload_key(&caller.tenant, &id))
    .bind(expires)
    .bind(now_ms())
    .execute(&app.db.pool)
    .await
    .map_err(super::db::DbError::from)?;
    // A store that hands out URLs of its own takes the audio itself.
    let key = upload_key(&caller.tenant, &id);
    let url = match app
        .store
        .presign(Presign::Put, &key, app.presign_ttl())
        .await
    {
        Ok(Some(url)) => url,
        Ok(None) => app.signer.url("PUT", &data_path(&id), expires),
        Err(e) => {
            return Err(ApiError::internal(
                format!("cannot sign an upload: {e}"),
                true,
            ))
        }
    };
    let body = serde_json::json!({
        "id": id, "url": url, "method": "PUT", "expires_at": rfc3339(expires),
        "max_bytes": app.settings.upload_max_bytes,
    });
    Ok((StatusCode::CREATED, Json(body)))
}

fn data_path(id: &str) -> String {
    format!("/v1/uploads/{id}/data")
}

/// The signed PUT: the URL is the proof (no key), good once.
#[utoipa::path(put, path = "/v1/uploads/{id}/data", tag = "uploads", security(()),
    params(("id" = String, Path), ("expires" = i64, Query, description = "As signed"), ("sig" = String, Query, description = "As signed")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The audio, streamed"),
    responses((status = 200, description = "Stored", body = super::openapi::UploadStored),
        (status = 403, description = "Wrong or expired signature", body = super::openapi::ErrorBody),
        (status = 409, description = "The URL was used already", body = super::openapi::ErrorBody),
        (status = 413, description = "Over service.upload_max_bytes", body = super::openapi::ErrorBody)))]
pub(crate) async fn put_data(
    axum::extract::State(app): State,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if !app.signer.verify_query("PUT", &data_path(&id), &q) {
        return Err(ApiError::forbidden_url());
    }
    // Refused before a byte is read: a client that sent `Expect:
    // 100-continue` is told without sending the body (a body without a
    // length is capped as it streams).
    let limit = app.settings.upload_max_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit, "service.upload_max_bytes"));
    }
    // Taken for this PUT, or refused: a URL stores one body.
    let taken = sqlx::query(
        "UPDATE uploads SET state = 'writing' WHERE id = $1 AND state = 'pending' RETURNING store_key",
    )
    .bind(&id)
    .fetch_optional(&app.db.pool)
    .await
    .map_err(super::db::DbError::from)?;
    let Some(taken) = taken else {
        return Err(ApiError::conflict(format!(
            "upload '{id}' was already used"
        )));
    };
    let key: String = taken
        .try_get("store_key")
        .map_err(super::db::DbError::from)?;
    match receive(&app, &id, &key, body).await {
        Ok(bytes) => {
            sqlx::query("UPDATE uploads SET state = 'stored', bytes = $1 WHERE id = $2")
                .bind(bytes as i64)
                .bind(&id)
                .execute(&app.db.pool)
                .await
                .map_err(super::db::DbError::from)?;
            Ok((
                StatusCode::OK,
                Json(serde_json::json!({"id": id, "bytes": bytes})),
            ))
        }
        Err(e) => {
            // Nothing stored: the URL may be used again while it is valid.
            let _ = sqlx::query("UPDATE uploads SET state = 'pending' WHERE id = $1")
                .bind(&id)
                .execute(&app.db.pool)
                .await;
            Err(e)
        }
    }
}

/// Streams the body to a part file, then moves it to the upload's key.
async fn receive(app: &Arc<App>, id: &str, key: &str, body: Body) -> Result<u64, ApiError> {
    let incoming = app.store_root.join(".incoming");
    let io = |e: std::io::Error| ApiError::internal(format!("storing the upload: {e}"), true);
    tokio::fs::create_dir_all(&incoming).await.map_err(io)?;
    let part = incoming.join(format!("{id}.part"));
    let limit = app.settings.upload_max_bytes;
    let written = write_limited(&part, body, limit).await;
    let bytes = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let stored = app.store.put_file(key, &part).await;
    let _ = tokio::fs::remove_file(&part).await;
    stored.map_err(|e| ApiError::internal(format!("storing the upload: {e}"), true))?;
    Ok(bytes)
}

async fn write_limited(part: &std::path::Path, body: Body, limit: u64) -> Result<u64, ApiError> {
    let io = |e: std::io::Error| ApiError::internal(format!("storing the upload: {e}"), true);
    let mut f = tokio::fs::File::create(part).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
        n += chunk.len() as u64;
        if n > limit {
            return Err(ApiError::too_large(limit, "service.upload_max_bytes"));
        }
        f.write_all(&chunk).await.map_err(io)?;
    }
    f.sync_all().await.map_err(io)?;
    Ok(n)
}
