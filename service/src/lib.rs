//! What the two long-running services, `audit-processor` and `audit-sink`, share around their
//! work, so that both answer probes and stop the same way:
//! * [`Health`]: readiness (set once start-up checks pass and the consumer is subscribed) and
//!   liveness (the time of the poll loop's last turn), as the partition-lane engine reports them
//!   (`audit_kafka::lanes::Liveness`);
//! * [`serve_ops`]: `/metrics` (whatever text the service renders), `/healthz` (200 while the poll
//!   loop turns, 503 once it has been stuck for [`STALL_LIMIT`]) and `/readyz` (200 when ready);
//! * [`cancel_on_signal`]: SIGTERM or SIGINT cancels the service's shutdown token, which starts
//!   its drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// How long the poll loop may go without turning before `/healthz` reports it stalled (a
/// rebalance may block it for a while).
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Liveness and readiness of a service, shared by its poll loop and its `/healthz` and `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Unix milliseconds of the poll loop's last turn; 0 before the first.
    last_poll_ms: AtomicI64,
}

impl Health {
    /// Marks the service ready (start-up checks passed, consumer subscribed) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records a turn of the poll loop.
    pub fn polled(&self) {
        self.last_poll_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the poll loop turned within `max_age`.
    pub fn live(&self, max_age: Duration) -> bool {
        let last = self.last_poll_ms.load(Ordering::Relaxed);
        last > 0 && now_ms() - last < max_age.as_millis() as i64
    }

    /// Whether the poll loop has not turned yet.
    fn starting(&self) -> bool {
        self.last_poll_ms.load(Ordering::Relaxed) == 0
    }
}

/// The partition-lane engine reports its poll loop and its subscription here.
impl audit_kafka::lanes::Liveness for Health {
    fn polled(&self) {
        Health::polled(self);
    }

    fn ready(&self, ready: bool) {
        self.set_ready(ready);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Renders the service's metrics in the Prometheus text format.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: RenderMetrics,
    health: Arc<Health>,
}

async fn metrics_text(State(s): State<Ops>) -> String {
    (s.metrics)()
}

async fn healthz(State(s): State<Ops>) -> (StatusCode, &'static str) {
    if s.health.starting() {
        (StatusCode::OK, "starting")
    } else if s.health.live(STALL_LIMIT) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "poll loop stalled")
    }
}

async fn readyz(State(s): State<Ops>) -> (StatusCode, &'static str) {
    if s.health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Binds `addr` (failing at once when it is taken) and serves the operations endpoints until
/// `shutdown` is cancelled. Returns the server's task and the address it listens on (the port
/// chosen when `addr` asked for port 0).
pub async fn serve_ops(
    addr: SocketAddr,
    metrics: RenderMetrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ops { metrics, health });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    });
    Ok((server, bound))
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT (a task on the current runtime).
pub fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutdown requested: draining");
        shutdown.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_follow_the_poll_loop_and_readiness() {
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        let metrics: RenderMetrics = Arc::new(|| "up 1\n".to_owned());
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let (server, addr) = serve_ops(any_port, metrics, health.clone(), stop.clone()).await.unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"), "starting counts as live");
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready(true);
        health.polled();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/healthz").await.ends_with("ok"));
        assert!(get("/metrics").await.ends_with("up 1\n"));
        // A poll loop last seen two minutes ago is stalled.
        health.last_poll_ms.store(now_ms() - 120_000, Ordering::Relaxed);
        assert!(get("/healthz").await.starts_with("HTTP/1.1 503"));
        assert!(
            serve_ops(addr, Arc::new(String::new), health, stop.clone()).await.is_err(),
            "a taken port fails at once"
        );
        stop.cancel();
        server.await.unwrap();
    }
}
