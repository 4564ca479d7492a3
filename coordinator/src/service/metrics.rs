//! `GET /metrics` (admin keys only): the service's own state across every
//! tenant (jobs by status, webhook messages by state, uploads by state),
//! counted from the database at each scrape so every replica tells the
//! same, followed by this process's embedded workers' render metrics.

use super::auth::need;
use super::db::DbError;
use super::error::ApiError;
use super::keys::{Caller, Scope};
use super::State;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::Row;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Named {
    state: String,
}

/// Rows of `table` counted by `column`, every one of `known` present.
async fn counted(
    app: &super::App,
    table: &str,
    column: &str,
    known: &[&str],
) -> Result<Family<Named, Gauge>, DbError> {
    let family = Family::<Named, Gauge>::default();
    for k in known {
        family
            .get_or_create(&Named {
                state: k.to_string(),
            })
            .set(0);
    }
    let q = format!("SELECT {column} AS s, COUNT(*) AS n FROM {table} GROUP BY {column}");
    for r in sqlx::query(&q).fetch_all(&app.db.pool).await? {
        let state: String = r.try_get("s")?;
        family.get_or_create(&Named { state }).set(r.try_get("n")?);
    }
    Ok(family)
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text (admin keys)", content_type = "application/openmetrics-text"),
        (status = 401, description = "No key or an unknown one", body = super::openapi::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::openapi::ErrorBody)))]
pub(crate) async fn scrape(
    axum::extract::State(app): State,
    caller: Caller,
) -> Result<Response, ApiError> {
    need(&caller, Scope::Admin)?;
    let mut reg = Registry::with_prefix("loopmind_service");
    let families = [
        (
            "jobs",
            "Jobs by status, all tenants",
            "jobs",
            "status",
            &super::view::STATUSES[..],
        ),
        (
            "webhook_messages",
            "Webhook messages by state",
            "webhook_messages",
            "state",
            &["pending", "delivered", "failed"][..],
        ),
        (
            "uploads",
            "Uploads by state",
            "uploads",
            "state",
            &["pending", "stored"][..],
        ),
    ];
    for (name, help, table, column, known) in families {
        reg.register(name, help, counted(&app, table, column, known).await?);
    }
    let unsent = sqlx::query("SELECT COUNT(*) AS n FROM outbox")
        .fetch_one(&app.db.pool)
        .await
        .and_then(|r| r.try_get::<i64, _>("n"))
        .map_err(DbError::from)?;
    let outbox = Gauge::<i64>::default();
    outbox.set(unsent);
    reg.register(
        "outbox",
        "Job messages not yet confirmed by the queue (service.render = queue)",
        outbox,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).expect("writing to a String");
    // One exposition: the workers' part below ends it.
    let mut text = text.trim_end().trim_end_matches("# EOF").to_string();
    text.push_str(&app.render_metrics.render());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
