//! `/metrics`, `/healthz`, `/readyz` of a sink.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::SinkMetrics;
use crate::runtime::Health;

#[derive(Clone)]
struct AppState {
    metrics: SinkMetrics,
    health: Arc<Health>,
}

async fn metrics_text(State(s): State<AppState>) -> String {
    s.metrics.render()
}

async fn healthz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    let last = s.health.last_poll_ms.load(Ordering::Relaxed);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    if last == 0 || now - last < 60_000 {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "poll loop stalled")
    }
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds `addr` and serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    metrics: SinkMetrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    }))
}
