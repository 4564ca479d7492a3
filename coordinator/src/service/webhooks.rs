//! Webhooks, signed as the Standard Webhooks spec says (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">` under the endpoint's `whsec_` secret).
//!
//! A tenant registers an endpoint (`POST /v1/webhooks`); every job event of
//! a type it asked for becomes a message owed to it ([`fan_out`], called as
//! the event is recorded); a sender task delivers due messages, records
//! every attempt (`GET /v1/webhooks/{id}/deliveries`) and retries on
//! `service.webhook_retry_s`. A URL must reach a public address unless
//! `service.webhooks_allow_private`: checked when it is registered and on
//! every address resolved when sending; redirects are not followed.

use super::auth::need;
use super::db::{now_ms, opt_text, Db, DbError};
use super::error::ApiError;
use super::ids::{new_id, random_bytes};
use super::keys::{Caller, Scope};
use super::view::rfc3339;
use super::{App, State};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Row;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The event types an endpoint may ask for.
pub(crate) const EVENT_TYPES: [&str; 5] = [
    "job.queued",
    "job.running",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
];

/// The Standard Webhooks signature of one message.
pub(crate) fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = B64.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut m = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    m.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    Some(format!("v1,{}", B64.encode(m.finalize().into_bytes())))
}

/// Whether an address is one anyone on the internet could be: not
/// loopback, private, link-local, shared (CGNAT), unspecified or multicast.
pub(crate) fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// The addresses `host:port` resolves to that may be connected to.
fn allowed_addrs(netloc: &str, allow_private: bool) -> std::io::Result<Vec<SocketAddr>> {
    let all: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
    let ok: Vec<SocketAddr> = all
        .iter()
        .copied()
        .filter(|a| allow_private || public(a.ip()))
        .collect();
    match ok.is_empty() {
        false => Ok(ok),
        true => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{netloc} resolves only to private or loopback addresses (service.webhooks_allow_private)"),
        )),
    }
}

/// An endpoint URL's `host:port`, if it is an http(s) URL.
fn netloc(url: &str) -> Option<String> {
    let uri: axum::http::Uri = url.parse().ok()?;
    let port = match uri.scheme_str()? {
        "http" => uri.port_u16().unwrap_or(80),
        "https" => uri.port_u16().unwrap_or(443),
        _ => return None,
    };
    Some(format!("{}:{port}", uri.host()?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    url: String,
    #[serde(default)]
    events: Vec<String>,
}

/// `POST /v1/webhooks`: 201 `{"id", "url", "events", "secret"}`.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = super::openapi::WebhookBody,
    responses((status = 201, description = "Registered; deliveries are signed with its secret", body = super::openapi::WebhookCreated),
        (status = 422, description = "A URL to a private address, an unknown event", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn create(
    axum::extract::State(app): State,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    need(&caller, Scope::Submit)?;
    let w: NewWebhook =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Some(loc) = netloc(&w.url).filter(|_| w.url.len() <= 2048) else {
        return Err(ApiError::invalid("url: must be an http:// or https:// URL"));
    };
    let events = match w.events.is_empty() {
        true => "*".to_string(),
        false => {
            if let Some(bad) = w.events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
                return Err(ApiError::invalid(format!(
                    "events: unknown event type '{bad}' (known: {})",
                    EVENT_TYPES.join(", ")
                )));
            }
            w.events.join(",")
        }
    };
    let allow = app.settings.webhooks_allow_private;
    tokio::task::spawn_blocking(move || allowed_addrs(&loc, allow))
        .await
        .map_err(|e| ApiError::internal(e.to_string(), true))?
        .map_err(|e| ApiError::invalid(format!("url: {e}")))?;
    let (id, secret) = (
        new_id("wh"),
        format!("whsec_{}", B64.encode(random_bytes::<24>())),
    );
    sqlx::query("INSERT INTO webhooks (id, tenant, url, events, secret, created_ms) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(&caller.tenant)
        .bind(&w.url)
        .bind(&events)
        .bind(&secret)
        .bind(now_ms())
        .execute(&app.db.pool)
        .await
        .map_err(DbError::from)?;
    let body = json!({"id": id, "url": w.url, "events": events.split(',').collect::<Vec<_>>(), "secret": secret});
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /v1/webhooks/{id}/deliveries`: every attempt, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, description = "Every attempt, newest first", body = super::openapi::Deliveries),
        (status = 404, description = "No such webhook of this tenant", body = super::openapi::ErrorBody),
        super::openapi::Refusals))]
pub(crate) async fn deliveries(
    axum::extract::State(app): State,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, Scope::Read)?;
    let owned = sqlx::query("SELECT id FROM webhooks WHERE id = $1 AND tenant = $2")
        .bind(&id)
        .bind(&caller.tenant)
        .fetch_optional(&app.db.pool)
        .await
        .map_err(DbError::from)?;
    if owned.is_none() {
        return Err(ApiError::not_found("webhook"));
    }
    let rows = sqlx::query(
        "SELECT a.message_id, a.attempt, a.at_ms, a.status_code, a.error, m.event_type, m.state FROM webhook_attempts a \
         JOIN webhook_messages m ON m.id = a.message_id WHERE a.webhook_id = $1 ORDER BY a.at_ms DESC LIMIT 500",
    )
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .map_err(DbError::from)?;
    let list = rows
        .iter()
        .map(attempt_view)
        .collect::<Result<Vec<_>, DbError>>()?;
    Ok(Json(json!({"deliveries": list})))
}

fn attempt_view(r: &sqlx::any::AnyRow) -> Result<Value, DbError> {
    Ok(json!({
        "message_id": r.try_get::<String, _>("message_id")?,
        "type": r.try_get::<String, _>("event_type")?,
        "attempt": r.try_get::<i64, _>("attempt")?,
        "at": rfc3339(r.try_get("at_ms")?),
        "status_code": r.try_get::<Option<i64>, _>("status_code")?,
        "error": opt_text(r, "error")?,
        "message_state": r.try_get::<String, _>("state")?,
    }))
}

/// Owes event `seq` (job `job_id` now `status`) to every endpoint of the
/// tenant that asked for its type.
pub(crate) async fn fan_out(
    tx: &mut sqlx::AnyConnection,
    tenant: &str,
    seq: i64,
    job_id: &str,
    status: &str,
) -> Result<(), DbError> {
    let kind = format!("job.{status}");
    let now = now_ms();
    let payload = json!({"type": kind, "timestamp": rfc3339(now), "data": {"job_id": job_id, "status": status}});
    sqlx::query(
        "INSERT INTO webhook_messages (id, webhook_id, tenant, event_type, payload, state, attempts, next_ms, created_ms) \
         SELECT 'msg_' || $1 || '_' || $7 || '_' || id, id, tenant, $2, $3, 'pending', 0, $4, $4 FROM webhooks \
         WHERE tenant = $5 AND (events = '*' OR (',' || events || ',') LIKE $6)",
    )
    .bind(seq.to_string())
    .bind(&kind)
    .bind(payload.to_string())
    .bind(now)
    .bind(tenant)
    .bind(format!("%,{kind},%"))
    .bind(job_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// A due message, leased to this sender for a minute.
struct Due {
    id: String,
    webhook_id: String,
    payload: String,
    attempts: i64,
}

async fn next_due(db: &Db) -> Result<Option<Due>, DbError> {
    let now = now_ms();
    let row = sqlx::query(
        "UPDATE webhook_messages SET next_ms = $1 WHERE id = (SELECT id FROM webhook_messages \
         WHERE state = 'pending' AND next_ms <= $2 ORDER BY next_ms LIMIT 1) AND state = 'pending' \
         RETURNING id, webhook_id, payload, attempts",
    )
    .bind(now + 60_000)
    .bind(now)
    .fetch_optional(&db.pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Due {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        payload: r.try_get("payload")?,
        attempts: r.try_get("attempts")?,
    }))
}

/// The sender: delivers due messages until the service stops.
pub(crate) async fn run(app: Arc<App>, shutdown: loopmind_worker::shutdown::Shutdown) {
    while !shutdown.requested() {
        match next_due(&app.db).await {
            Ok(Some(due)) => {
                if let Err(e) = deliver(&app, due).await {
                    tracing::warn!(error = %e, "webhook: could not record a delivery");
                }
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: the database did not answer");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn deliver(app: &Arc<App>, due: Due) -> Result<(), DbError> {
    let hook = sqlx::query("SELECT url, secret FROM webhooks WHERE id = $1")
        .bind(&due.webhook_id)
        .fetch_optional(&app.db.pool)
        .await?;
    let Some(hook) = hook else {
        // The endpoint was removed: nothing is owed any more.
        return settle(&app.db, &due, "failed", None).await;
    };
    let (url, secret): (String, String) = (hook.try_get("url")?, hook.try_get("secret")?);
    let allow = app.settings.webhooks_allow_private;
    let (msg_id, payload) = (due.id.clone(), due.payload.clone());
    let sent = tokio::task::spawn_blocking(move || post(&url, &secret, &msg_id, &payload, allow))
        .await
        .unwrap_or_else(|e| Err(SendError::Transport(format!("the sender failed: {e}"))));
    let attempt = due.attempts + 1;
    let (code, error) = match &sent {
        Ok(c) => (
            Some(i64::from(*c)),
            (!(200..300).contains(c)).then(|| format!("HTTP {c}")),
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    sqlx::query(
        "INSERT INTO webhook_attempts (message_id, webhook_id, attempt, at_ms, status_code, error) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&due.id)
    .bind(&due.webhook_id)
    .bind(attempt)
    .bind(now_ms())
    .bind(code)
    .bind(error.clone())
    .execute(&app.db.pool)
    .await?;
    let schedule = app.settings.webhook_retries();
    let state = match (error.is_none(), schedule.get(due.attempts as usize)) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    };
    let wait = schedule
        .get(due.attempts as usize)
        .map(|s| *s as i64 * 1000);
    settle(&app.db, &due, state, wait).await
}

async fn settle(db: &Db, due: &Due, state: &str, wait_ms: Option<i64>) -> Result<(), DbError> {
    sqlx::query("UPDATE webhook_messages SET state = $1, attempts = attempts + 1, next_ms = $2 WHERE id = $3")
        .bind(state)
        .bind(now_ms() + wait_ms.unwrap_or(0))
        .bind(&due.id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Why a message got no HTTP answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("the endpoint's secret is not a whsec_ secret")]
    Secret,
    /// Refused address, DNS, connection, TLS, timeout: tried again later.
    #[error("{0}")]
    Transport(String),
}

/// One POST of a message: the response's status, or why none came.
fn post(
    url: &str,
    secret: &str,
    msg_id: &str,
    body: &str,
    allow_private: bool,
) -> Result<u16, SendError> {
    let ts = now_ms() / 1000;
    let sig = sign(secret, msg_id, ts, body).ok_or(SendError::Secret)?;
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(15))
        .resolver(move |netloc: &str| allowed_addrs(netloc, allow_private))
        .build();
    let res = agent
        .post(url)
        .set("content-type", "application/json")
        .set("webhook-id", msg_id)
        .set("webhook-timestamp", &ts.to_string())
        .set("webhook-signature", &sig)
        .send_string(body);
    match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Ok(r.status()),
        Err(e) => Err(SendError::Transport(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks spec's own example.
    #[test]
    fn signs_the_specs_example() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn only_public_addresses_are_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!public(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "172.32.0.1"] {
            assert!(public(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn only_http_urls_have_a_netloc() {
        assert_eq!(
            netloc("https://hooks.example/x").as_deref(),
            Some("hooks.example:443")
        );
        assert_eq!(
            netloc("http://127.0.0.1:9/x").as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(netloc("ftp://hooks.example/x"), None);
        assert_eq!(netloc("not a url"), None);
    }
}
