//! The worker's HTTP face: `/healthz` (200 while connected to the queue, 503
//! otherwise) and `/metrics` (Prometheus / OpenMetrics text).

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

pub const HEALTH_PATH: &str = "/healthz";
pub const METRICS_PATH: &str = "/metrics";

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(HEALTH_PATH, get(health))
        .route(METRICS_PATH, get(render))
        .with_state(metrics)
}

async fn health(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.connected() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the queue\n",
        )
    }
}

async fn render(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

/// Serves until the process ends; the bound address is returned so a port
/// of 0 (any) can be reported.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(metrics)).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
