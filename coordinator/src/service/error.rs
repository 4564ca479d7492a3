//! The API's errors: an HTTP status and `{"error": {"code", "message",
//! "retryable"}}`, `retryable` taken from the typed error behind it.

use super::db::DbError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retryable: bool,
    /// Seconds to wait before asking again (429's `Retry-After`).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <key>` is required",
        )
    }
    pub(crate) fn forbidden(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this key lacks the `{scope}` scope"),
        )
    }
    pub(crate) fn forbidden_url() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the URL's signature is wrong or expired",
        )
    }
    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub(crate) fn too_large(limit: u64, setting: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes ({setting})"),
        )
    }
    pub(crate) fn too_many(per_s: u32, wait: std::time::Duration) -> Self {
        Self {
            retryable: true,
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("more than {per_s} requests a second with this key (service.rate_per_s); ask again after Retry-After"),
            )
        }
    }
    pub(crate) fn internal(message: impl Into<String>, retryable: bool) -> Self {
        Self {
            retryable,
            ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        }
    }
}

impl ApiError {
    /// The same refusal, its message saying which part of the body it is
    /// about (`tracks[3] 'intro'`).
    pub(crate) fn about(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "database error in a request");
        let retryable = e.retryable();
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..Self::internal(e.to_string(), retryable)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {
            "code": self.code, "message": self.message, "retryable": self.retryable}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}
