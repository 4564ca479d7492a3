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
    if !m.connected() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the queue\n",
        )
    } else if !m.store_up() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the object store does not answer: taking no jobs until it does\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
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

/// Ports tried after a taken one before giving up on serving.
pub const PORT_TRIES: u16 = 16;

/// Serves on `ip:port`, or, when that port is taken (another worker on this
/// machine), the next free one of the following [`PORT_TRIES`]; None when
/// none is free: the worker goes on without `/metrics` (its log says so).
pub async fn serve_first_free(
    ip: std::net::IpAddr,
    port: u16,
    metrics: Arc<Metrics>,
) -> Option<SocketAddr> {
    let last = if port == 0 {
        0
    } else {
        port.saturating_add(PORT_TRIES)
    };
    for p in port..=last {
        match serve(SocketAddr::new(ip, p), metrics.clone()).await {
            Ok(bound) => {
                if p != port {
                    tracing::warn!(
                        wanted = port,
                        serving = bound.port(),
                        "metrics port taken; using the next free one"
                    );
                }
                return Some(bound);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => {
                tracing::warn!(addr = %SocketAddr::new(ip, p), error = %e, "cannot serve /healthz and /metrics; running without them");
                return None;
            }
        }
    }
    tracing::warn!(
        from = port,
        to = last,
        "every metrics port is taken; running without /healthz and /metrics"
    );
    None
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
