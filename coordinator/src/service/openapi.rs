//! `GET /v1/openapi.json`: the API's contract. Its paths come from the
//! router itself (utoipa-axum registers each handler and its
//! `#[utoipa::path]` together, so a route cannot be served undescribed);
//! the bodies' shapes are the types below, which tests/service.rs holds
//! every answer it gets to.
#![allow(dead_code)] // The types are read by the schema derive, not built.

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "LoopMind job API",
        description = "Submit mixes to be mastered, follow them, fetch the masters. See docs/api.md."
    ),
    modifiers(&BearerKeys),
    security(("key" = []))
)]
pub(crate) struct ApiDoc;

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A key made by `loopmind keys create`"))
                    .build(),
            ),
        );
    }
}

/// The refusals any call with a key may meet.
#[derive(utoipa::IntoResponses)]
pub(crate) enum Refusals {
    /// Malformed: the message names the field
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// No key or an unknown one
    #[response(status = 401)]
    NoKey(ErrorBody),
    /// The key lacks the scope
    #[response(status = 403)]
    Scope(ErrorBody),
    /// Too many requests with this key (Retry-After)
    #[response(status = 429)]
    TooMany(ErrorBody),
}

/// Every refusal: what went wrong, naming the field or setting at fault.
#[derive(ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorInfo,
}

#[derive(ToSchema)]
pub(crate) struct ErrorInfo {
    code: String,
    message: String,
    /// Asking again later may succeed.
    retryable: bool,
}

/// A new upload: PUT the audio to `url` before it expires.
#[derive(ToSchema)]
pub(crate) struct UploadCreated {
    id: String,
    url: String,
    #[schema(pattern = "^PUT$")]
    method: String,
    expires_at: String,
    max_bytes: u64,
}

/// A PUT to the service's own signed URL, stored.
#[derive(ToSchema)]
pub(crate) struct UploadStored {
    id: String,
    bytes: u64,
}

/// What to master: the input and the render options of a manifest track
/// (`targets`, `mode`, `dynamics`, `reactivity`, `amount`,
/// `max_section_move_db`, `codec_check`, `formats`, `plan`; docs/guide.md).
#[derive(ToSchema)]
pub(crate) struct JobBody {
    input: Input,
    /// Platform targets by name (GET /v1/targets).
    targets: Vec<String>,
}

#[derive(ToSchema)]
pub(crate) struct Input {
    /// An upload of the caller's tenant that holds audio.
    upload_id: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A job as the API shows it.
#[derive(ToSchema)]
pub(crate) struct Job {
    id: String,
    status: JobStatus,
    /// 0..1, moving with the render's stages.
    progress: f64,
    created_at: String,
    updated_at: String,
    input: Value,
    /// The batch it was submitted in, if any.
    batch: Option<String>,
    /// Its id in that batch.
    track: Option<String>,
    /// The options as they will render (targets resolved).
    request: Option<Value>,
    /// Once ended: each target's figures and files.
    #[schema(required = false)]
    targets: Vec<TargetOutcome>,
    /// Once ended: report.json, master_settings.json, loudness.png.
    #[schema(required = false)]
    files: Vec<File>,
    #[schema(required = false)]
    error: ErrorInfo,
    /// A batch's album track: its album and the pass it is at.
    #[schema(required = false)]
    album: AlbumState,
}

#[derive(ToSchema)]
pub(crate) struct AlbumState {
    name: String,
    stage: AlbumStage,
    /// The track's loudness minus its album's, at the input, in LU: each
    /// target's loudness moves by it (null until the album is measured).
    lufs_offset: Option<f64>,
}

/// `measure`: its loudness is measured first; `wait`: measured, queued
/// until the rest of its album is; `render`: rendering with its offset.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum AlbumStage {
    Measure,
    Wait,
    Render,
}

/// Album normalisation: the batch's tracks with the same album name get
/// one loudness offset, so their relative levels are kept and the album
/// as a whole lands on each target.
#[derive(ToSchema)]
pub(crate) struct Album {
    /// 1 to 256 bytes of text.
    name: String,
}

#[derive(ToSchema)]
pub(crate) struct TargetOutcome {
    target: String,
    target_lufs: f64,
    ceiling_dbtp: f64,
    integrated_lufs: Option<f64>,
    true_peak_dbtp: Option<f64>,
    lra_lu: Option<f64>,
    /// Each codec checked and its verdict.
    codecs: Value,
    /// Why the target's master was withheld, if it was.
    withheld: Option<Value>,
    files: Vec<File>,
}

/// An output, downloadable by its signed URL until it expires.
#[derive(ToSchema)]
pub(crate) struct File {
    name: String,
    url: String,
    expires_at: String,
}

#[derive(ToSchema)]
pub(crate) struct JobPage {
    jobs: Vec<Job>,
    /// Give it as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// A catalog at once: the options every track shares, and the tracks,
/// each with its own id, input and any option that replaces a shared one.
#[derive(ToSchema)]
pub(crate) struct BatchBody {
    tracks: Vec<BatchTrack>,
    targets: Vec<String>,
    /// Every track's album, unless a track gives its own (or null).
    #[schema(required = false)]
    album: Option<Album>,
}

#[derive(ToSchema)]
pub(crate) struct BatchTrack {
    /// Your name for the track (letters, digits, - _ .), unique in the batch.
    id: String,
    input: Input,
    /// This track's album (null: none), over the batch's.
    #[schema(required = false)]
    album: Option<Album>,
}

#[derive(ToSchema)]
pub(crate) struct Batch {
    id: String,
    created_at: String,
    tracks: i64,
    /// Jobs per status.
    counts: std::collections::HashMap<String, i64>,
    /// None is queued or running.
    finished: bool,
    jobs: Vec<BatchJob>,
}

#[derive(ToSchema)]
pub(crate) struct BatchJob {
    id: String,
    track: String,
    status: JobStatus,
}

#[derive(ToSchema)]
pub(crate) struct Targets {
    /// Each target's loudness, ceiling, rate and codecs.
    targets: Vec<Value>,
}

#[derive(ToSchema)]
pub(crate) struct WebhookBody {
    url: String,
    /// `job.queued`, `job.running`, `job.succeeded`, `job.failed`,
    /// `job.cancelled`; none: all.
    #[schema(required = false)]
    events: Vec<String>,
}

#[derive(ToSchema)]
pub(crate) struct WebhookCreated {
    id: String,
    url: String,
    events: Vec<String>,
    /// `whsec_...`: verifies the Standard Webhooks signatures.
    secret: String,
}

#[derive(ToSchema)]
pub(crate) struct Deliveries {
    deliveries: Vec<Value>,
}

/// The contract as JSON.
pub(crate) fn document(api: utoipa::openapi::OpenApi) -> Value {
    serde_json::to_value(api).expect("the document serialises")
}
