//! The caller of a request, from `Authorization: Bearer <key>`: a handler
//! that takes a [`Caller`] runs only for a known key; the scope it needs it
//! asks with [`need`].

use super::error::ApiError;
use super::keys::{Caller, Scope};
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
        let caller = app
            .known
            .caller(&app.db, presented)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        app.limits.check(&caller.key_id)?;
        Ok(caller)
    }
}

/// Each key's rate: `service.rate_per_s` sustained, `service.rate_burst`
/// at once (per replica: each `serve` keeps its own count).
pub(crate) struct Limits {
    per_s: u32,
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl Limits {
    pub(crate) fn new(per_s: u32, burst: u32) -> Self {
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;
        let limiter = NonZeroU32::new(per_s).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { per_s, limiter }
    }

    /// 429 with the wait when the key has asked too often.
    fn check(&self, key_id: &str) -> Result<(), ApiError> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&key_id.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            ApiError::too_many(self.per_s, wait)
        })
    }
}

/// Refuses (403) a caller without `scope`.
pub(crate) fn need(c: &Caller, scope: Scope) -> Result<(), ApiError> {
    match c.may(scope) {
        true => Ok(()),
        false => Err(ApiError::forbidden(scope.name())),
    }
}
