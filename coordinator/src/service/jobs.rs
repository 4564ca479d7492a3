//! Jobs: submit (idempotent by `Idempotency-Key`), read, list, cancel, and
//! the outputs' signed downloads. A job's body is the render request of the
//! pipeline plus its `input`, checked by the request's own code.

use super::auth::need;
use super::db::{now_ms, DbError};
use super::error::ApiError;
use super::ids::new_id;
use super::keys::{Caller, Scope};
use super::signing::Signed;
use super::view::{self, JobRow};
use super::{App, State};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use loopmind_worker::job::{Job, TrackSpec};
use loopmind_worker::layout::{safe_id, service_catalog, upload_key};
use loopmind_worker::request::RequestRefusal;
use loopmind_worker::store::Presign;
use loopmind_worker::RenderRequest;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::sync::Arc;

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

/// A request body as a JSON object (400 naming what is wrong).
pub(crate) fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// A job's body, checked: the upload to master, the uploads its documents
/// are (reference, arrangement, emotion graph), and the render request
/// (its documents named by those uploads' keys).
pub(crate) struct ParsedJob {
    input: JobInput,
    documents: Vec<(&'static str, String)>,
    request: RenderRequest,
}

/// The request's fields that name a document.
const DOCUMENTS: [&str; 3] = ["reference", "arrangement", "emotion_graph"];

/// A job's body split into its input, its documents and its render
/// request, each checked by its own code.
pub(crate) fn parse_job(mut m: Map<String, Value>, tenant: &str) -> Result<ParsedJob, ApiError> {
    let input = m
        .remove("input")
        .ok_or_else(|| ApiError::bad_request("input: missing (give {\"upload_id\": ...})"))?;
    let input = input_of(&input)?;
    unknown_targets(&m)?;
    if m.contains_key("album") {
        return Err(ApiError::invalid(
            "album: only the tracks of a batch form an album (POST /v1/batches)",
        ));
    }
    let documents = document_uploads(&mut m, tenant)?;
    let request = RenderRequest::from_api(Value::Object(m)).map_err(|e| match e {
        RequestRefusal::Shape(why) => ApiError::bad_request(why),
        RequestRefusal::Invalid(why) => ApiError::invalid(why.to_string()),
    })?;
    Ok(ParsedJob {
        input,
        documents,
        request,
    })
}

/// Each document given as `{"upload_id"}`, replaced by that upload's key.
/// A store key given directly is refused: it could name anything the
/// service's credentials reach, not only the tenant's own uploads.
fn document_uploads(
    m: &mut Map<String, Value>,
    tenant: &str,
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut out = Vec::new();
    for field in DOCUMENTS {
        let id = match m.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(o)) if o.len() == 1 => match o.get("upload_id") {
                Some(Value::String(id)) if safe_id(id) => id.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "{field}.upload_id: must be an upload's id"
                    )))
                }
            },
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "{field}: give {{\"upload_id\": ...}} of an upload of yours (POST /v1/uploads)"
                )))
            }
        };
        m.insert(field.to_string(), Value::String(upload_key(tenant, &id)));
        out.push((field, id));
    }
    Ok(out)
}

/// The job's source and request once its uploads are found stored.
pub(crate) async fn resolve(
    app: &App,
    tenant: &str,
    job: ParsedJob,
    found: &mut FoundUploads,
) -> Result<(String, RenderRequest), ApiError> {
    let source = match &job.input {
        JobInput::Upload(id) => found.stored(app, tenant, id, "input.upload_id").await?,
        JobInput::Url(url) => url_source(app, tenant, url).await?,
    };
    for (field, id) in &job.documents {
        found
            .stored(app, tenant, id, &format!("{field}.upload_id"))
            .await?;
    }
    Ok((source, job.request))
}

/// Uploads already found stored, by id, with their keys: a batch whose
/// tracks share an upload (a reference, say) asks the database once.
#[derive(Default)]
pub(crate) struct FoundUploads(std::collections::HashMap<String, String>);

impl FoundUploads {
    async fn stored(
        &mut self,
        app: &App,
        tenant: &str,
        id: &str,
        field: &str,
    ) -> Result<String, ApiError> {
        if let Some(key) = self.0.get(id) {
            return Ok(key.clone());
        }
        let key = stored_upload(app, tenant, id, field).await?;
        self.0.insert(id.to_string(), key.clone());
        Ok(key)
    }
}

/// Where a job's mix comes from.
enum JobInput {
    /// An upload of the tenant.
    Upload(String),
    /// An object in the store, inside the tenant's input prefix.
    Url(String),
}

fn input_of(input: &Value) -> Result<JobInput, ApiError> {
    let Value::Object(i) = input else {
        return Err(ApiError::bad_request("input: must be an object"));
    };
    if let Some(k) = i.keys().find(|k| *k != "upload_id" && *k != "url") {
        return Err(ApiError::bad_request(format!("input: unknown field `{k}`")));
    }
    match (i.get("upload_id"), i.get("url")) {
        (Some(Value::String(id)), None) if safe_id(id) => Ok(JobInput::Upload(id.clone())),
        (None, Some(Value::String(url))) if url.len() <= 1024 => Ok(JobInput::Url(url.clone())),
        (Some(_), None) => Err(ApiError::bad_request(
            "input.upload_id: must be an upload's id",
        )),
        (None, Some(_)) => Err(ApiError::bad_request(
            "input.url: must be a URL of at most 1024 bytes",
        )),
        _ => Err(ApiError::bad_request(
            "input: give one of upload_id and url",
        )),
    }
}

/// The store key of a mix named by URL: inside the prefix set for the
/// tenant (`service.input_prefixes`), in the store's own bucket, a plain
/// relative key, an object that is there and within the upload limit.
async fn url_source(app: &App, tenant: &str, url: &str) -> Result<String, ApiError> {
    let Some(prefix) = app.settings.input_prefixes.get(tenant) else {
        return Err(ApiError::invalid(format!(
            "input.url: no input prefix is set for tenant '{tenant}' (service.input_prefixes); upload the mix instead"
        )));
    };
    if !url.starts_with(prefix.as_str()) {
        return Err(ApiError::invalid(format!(
            "input.url: outside this tenant's prefix {prefix}"
        )));
    }
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .unwrap_or_default();
    if app.store_bucket.as_deref() != Some(bucket) {
        return Err(ApiError::invalid(
            "input.url: the service reads only its own store's bucket (service.render = queue, store.kind = s3)",
        ));
    }
    if key.is_empty() || !loopmind_worker::layout::relative_key(key) {
        return Err(ApiError::invalid(
            "input.url: not a plain key (no empty, . or .. parts)",
        ));
    }
    let unreachable =
        |e| ApiError::internal(format!("cannot ask the store about input.url: {e}"), true);
    match app.store.head(key).await.map_err(unreachable)? {
        None => Err(ApiError::invalid(format!(
            "input.url: no such object {url}"
        ))),
        Some(m) if m.size > app.settings.upload_max_bytes => Err(ApiError::too_large(
            app.settings.upload_max_bytes,
            "service.upload_max_bytes",
        )),
        Some(_) => Ok(key.to_string()),
    }
}

/// A target named that is no preset: 422 (the request's own check would
/// call it a malformed body).
fn unknown_targets(m: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(Value::Array(list)) = m.get("targets") else {
        return Ok(());
    };
    for name in list.iter().filter_map(Value::as_str) {
        if loopmind_dsp::targets::preset(name).is_none() {
            return Err(ApiError::invalid(format!(
                "targets: unknown target '{name}' (GET /v1/targets lists them)"
            )));
        }
    }
    Ok(())
}

/// The stored upload's key, if the caller's tenant owns it and it holds audio.
async fn stored_upload(app: &App, tenant: &str, id: &str, field: &str) -> Result<String, ApiError> {
    let row = sqlx::query("SELECT store_key, state FROM uploads WHERE id = $1 AND tenant = $2")
        .bind(id)
        .bind(tenant)
        .fetch_optional(&app.db.pool)
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| ApiError::invalid(format!("{field} '{id}': no such upload")))?;
    let state: String = row.try_get("state").map_err(DbError::from)?;
    let key: String = row.try_get("store_key").map_err(DbError::from)?;
    if state == "stored" || (state == "pending" && uploaded_to_store(app, id, &key).await?) {
        return Ok(key);
    }
    Err(ApiError::invalid(format!(
        "{field} '{id}': nothing uploaded yet (PUT the audio to its url first)"
    )))
}

/// An upload PUT straight to the store (a presigned URL): there, and not
/// over the size limit (413, and it is removed), it counts as stored.
async fn uploaded_to_store(app: &App, id: &str, key: &str) -> Result<bool, ApiError> {
    let unreachable =
        |e| ApiError::internal(format!("cannot ask the store about the upload: {e}"), true);
    let Some(meta) = app.store.head(key).await.map_err(unreachable)? else {
        return Ok(false);
    };
    let limit = app.settings.upload_max_bytes;
    if meta.size > limit {
        let _ = app.store.delete(key).await;
        return Err(ApiError::too_large(limit, "service.upload_max_bytes"));
    }
    sqlx::query(
        "UPDATE uploads SET state = 'stored', bytes = $1 WHERE id = $2 AND state = 'pending'",
    )
    .bind(meta.size as i64)
    .bind(id)
    .execute(&app.db.pool)
    .await
    .map_err(DbError::from)?;
    Ok(true)
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = super::openapi::JobBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same job")),
    responses((status = 201, description = "Queued", body = super::openapi::Job),
        (status = 200, description = "The job this Idempotency-Key made", body = super::openapi::Job),
        (status = 409, description = "The Idempotency-Key was used with another body", body = super::openapi::ErrorBody),
        (status = 413, description = "Body over service.body_max_kib", body = super::openapi::ErrorBody),
        (status = 422, description = "Unknown target, value out of range, upload without audio", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn submit(
    axum::extract::State(app): State,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    need(&caller, Scope::Submit)?;
    let idem = idempotency_key(&headers)?;
    let body = json_object(&body)?;
    let parsed = parse_job(body.clone(), &caller.tenant)?;
    let body = Value::Object(body).to_string();
    let body_hash = hex::encode(Sha256::digest(body.as_bytes()));
    if let Some(k) = &idem {
        if let Some(found) = by_idempotency(&app, &caller.tenant, k, &body_hash).await? {
            return Ok((StatusCode::OK, Json(found)));
        }
    }
    let found = &mut FoundUploads::default();
    let (source, request) = resolve(&app, &caller.tenant, parsed, found).await?;
    let id = new_id("job");
    let (message_id, message) = job_message(&caller.tenant, &id, source, request, None)?;
    let row = view::NewJob {
        id: &id,
        tenant: &caller.tenant,
        idempotency_key: idem.as_deref(),
        body_hash: &body_hash,
        body: &body,
        message: &message,
        message_id: &message_id,
        outbox: app.queue_shaped(),
        batch: None,
        album: None,
    };
    let mut tx = app.db.pool.begin().await.map_err(DbError::from)?;
    let created = match view::insert(&mut tx, &row).await {
        Ok(created) => created,
        // The same key submitted at the same moment: the first one won.
        Err(DbError::Sql(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            drop(tx);
            let k = idem.as_deref().unwrap_or_default();
            return match by_idempotency(&app, &caller.tenant, k, &body_hash).await? {
                Some(found) => Ok((StatusCode::OK, Json(found))),
                None => Err(ApiError::conflict("the idempotency key is being used")),
            };
        }
        Err(e) => return Err(e.into()),
    };
    super::events::record_queued_as(&mut tx, &id, &caller.tenant, "queued").await?;
    tx.commit().await.map_err(DbError::from)?;
    app.queued.notify_waiters();
    tracing::info!(job = %id, tenant = %caller.tenant, "job submitted");
    Ok((StatusCode::CREATED, Json(view::job(&created, &app))))
}

/// The pipeline's job message for a job of the service (checked as a
/// worker will check it): its id and its text.
pub(crate) fn job_message(
    tenant: &str,
    id: &str,
    source: String,
    request: RenderRequest,
    album_key: Option<&str>,
) -> Result<(String, String), ApiError> {
    let spec = TrackSpec {
        track: id.to_string(),
        source,
        album: None,
        request,
    };
    let job = Job::new(&service_catalog(tenant), "1", &spec, album_key);
    job.validate()
        .map_err(|e| ApiError::internal(format!("the job made is refused: {e}"), false))?;
    Ok((
        job.job_id.clone(),
        serde_json::to_string(&job).expect("a job serialises"),
    ))
}

pub(crate) fn idempotency_key(h: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = h.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_string())),
        _ => Err(ApiError::bad_request(
            "Idempotency-Key: 1 to 255 visible ASCII characters",
        )),
    }
}

/// The job an idempotency key already made: its view when the body is the
/// same, 409 when it is not.
async fn by_idempotency(
    app: &Arc<App>,
    tenant: &str,
    key: &str,
    body_hash: &str,
) -> Result<Option<Value>, ApiError> {
    let Some(found) = view::by_key(&app.db, tenant, key).await? else {
        return Ok(None);
    };
    if found.body_hash != body_hash {
        return Err(ApiError::conflict(format!(
            "Idempotency-Key '{key}' was used for job {} with another body",
            found.id
        )));
    }
    Ok(Some(view::job(&found, app)))
}

async fn load(app: &App, tenant: &str, id: &str) -> Result<JobRow, ApiError> {
    view::by_id(&app.db, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "The job", body = super::openapi::Job),
        (status = 404, description = "No such job of this tenant", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn show(
    axum::extract::State(app): State,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    need(&caller, Scope::Read)?;
    let row = load(&app, &caller.tenant, &id).await?;
    Ok((StatusCode::OK, Json(view::job(&row, &app))))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<String>,
    batch: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(("status" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"),
        ("batch" = Option<String>, Query, description = "Only this batch's jobs"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the page before"),
        ("limit" = Option<u32>, Query, description = "1..500, default 50")),
    responses((status = 200, description = "A page, in submission order", body = super::openapi::JobPage),
        (status = 422, description = "Unknown status", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn list(
    axum::extract::State(app): State,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Answer {
    need(&caller, Scope::Read)?;
    if let Some(s) = &q.status {
        if !view::STATUSES.contains(&s.as_str()) {
            return Err(ApiError::invalid(format!(
                "status: '{s}' is none of {}",
                view::STATUSES.join(", ")
            )));
        }
    }
    let after = match &q.cursor {
        Some(c) => Some(
            view::parse_cursor(c)
                .ok_or_else(|| ApiError::bad_request("cursor: not one this service gave"))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let page = view::page(
        &app.db,
        &caller.tenant,
        view::Filter {
            status: q.status.as_deref(),
            batch: q.batch.as_deref(),
        },
        after,
        limit,
    )
    .await?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(view::cursor_of))
        .flatten();
    let jobs: Vec<Value> = page.iter().map(|r| view::job(r, &app)).collect();
    Ok((
        StatusCode::OK,
        Json(serde_json::json!({"jobs": jobs, "next_cursor": next})),
    ))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "Cancelled: it never renders, or its result is dropped", body = super::openapi::Job),
        (status = 404, description = "No such job of this tenant", body = super::openapi::ErrorBody),
        (status = 409, description = "It had already ended", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn cancel(
    axum::extract::State(app): State,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    need(&caller, Scope::Submit)?;
    let q = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', updated_ms = $1 WHERE id = $2 AND tenant = $3 AND status IN ('queued', 'running')",
    )
    .bind(now_ms())
    .bind(id.clone())
    .bind(caller.tenant.clone());
    let changed = super::events::change(&app.db, &id, q).await?;
    let row = load(&app, &caller.tenant, &id).await?;
    if changed {
        mark_cancelled(&app, view::message_text(&row)).await;
        // Its album may have waited only for it.
        super::albums::settle(&app, &id).await?;
    }
    if !changed && row.status != "cancelled" {
        return Err(ApiError::conflict(format!(
            "job {id} is already {}",
            row.status
        )));
    }
    tracing::info!(job = %id, "job cancelled");
    Ok((StatusCode::OK, Json(view::job(&row, &app))))
}

/// Queue-shaped: the workers are told (a marker in the store) that the job
/// was cancelled, so whichever takes its message drops it unrendered. Best
/// effort: one that renders anyway has its result dropped by the
/// database's guard.
pub(crate) async fn mark_cancelled(app: &App, message: &str) {
    if !app.queue_shaped() {
        return;
    }
    let Some(key) = view::cancel_marker(message) else {
        return;
    };
    let body = serde_json::json!({"cancelled_ms": now_ms()}).to_string();
    if let Err(e) = app.store.put_bytes(&key, body.into_bytes()).await {
        tracing::warn!(key, error = %e, "cannot put a cancel marker; a worker may render the job, its result is dropped");
    }
}

/// An output, by its signed URL (no key: the URL is the proof).
#[utoipa::path(get, path = "/v1/jobs/{id}/files/{name}", tag = "jobs", security(()),
    params(("id" = String, Path), ("name" = String, Path),
        ("expires" = i64, Query, description = "As signed"), ("sig" = String, Query, description = "As signed")),
    responses((status = 200, description = "The file (or 307 to the store's own signed URL)", content_type = "application/octet-stream"),
        (status = 307, description = "The store serves it: follow the Location"),
        (status = 403, description = "Wrong or expired signature", body = super::openapi::ErrorBody),
        (status = 404, description = "No such file", body = super::openapi::ErrorBody)))]
pub(crate) async fn file(
    axum::extract::State(app): State,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<Signed>,
) -> Result<axum::response::Response, ApiError> {
    let path = view::file_path(&id, &name);
    if !app.signer.verify_query("GET", &path, &q) {
        return Err(ApiError::forbidden_url());
    }
    let row = view::by_id_any_tenant(&app.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    let key = view::output_key(&row, &name).ok_or_else(|| ApiError::not_found("file"))?;
    // A store that hands out URLs of its own serves the bytes itself.
    match app
        .store
        .presign(Presign::Get, &key, app.presign_ttl())
        .await
    {
        Ok(Some(url)) => {
            return Ok(axum::response::Redirect::temporary(&url).into_response());
        }
        Ok(None) => {}
        Err(e) => {
            return Err(ApiError::internal(
                format!("cannot sign a download: {e}"),
                true,
            ))
        }
    }
    let f = tokio::fs::File::open(app.store_root.join(&key))
        .await
        .map_err(|_| ApiError::not_found("file"))?;
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f));
    let mime = match name.rsplit('.').next() {
        Some("wav") => "audio/wav",
        Some("flac") => "audio/flac",
        Some("mp3") => "audio/mpeg",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    Ok(axum::response::Response::builder()
        .header("content-type", mime)
        .header("content-length", len)
        .body(body)
        .expect("a response of valid parts"))
}

/// The platform targets, with the codecs each is checked under.
#[utoipa::path(get, path = "/v1/targets", tag = "jobs",
    responses((status = 200, description = "The platform targets", body = super::openapi::Targets),
        super::openapi::Refusals))]
pub(crate) async fn targets(caller: Caller) -> Answer {
    need(&caller, Scope::Read)?;
    let list: Vec<Value> = loopmind_dsp::targets::preset_names()
        .iter()
        .filter_map(|n| loopmind_dsp::targets::preset(n))
        .map(|t| serde_json::to_value(&t).unwrap_or(Value::Null))
        .collect();
    Ok((StatusCode::OK, Json(serde_json::json!({"targets": list}))))
}
