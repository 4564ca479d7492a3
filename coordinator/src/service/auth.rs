//! The caller of a request, from `Authorization: Bearer <key>`: a handler
//! that takes a [`Caller`] runs only for a known key; the scope it needs it
//! asks with [`need`].

use super::error::ApiError;
use super::keys::{self, Caller, Scope};
use super::App;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::sync::Arc;

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or_else(ApiError::unauthorized)?;
        keys::caller(&app.db, presented)
            .await?
            .ok_or_else(ApiError::unauthorized)
    }
}

/// Refuses (403) a caller without `scope`.
pub(crate) fn need(c: &Caller, scope: Scope) -> Result<(), ApiError> {
    match c.may(scope) {
        true => Ok(()),
        false => Err(ApiError::forbidden(scope.name())),
    }
}
