//! `audit-sink`: writes processed audit events into stores, one consumer group per sink.
//!
//! Adding a sink means starting another `audit-sink` with another config (its own
//! `kafka.group_id`): every sink reads the whole processed topic at its own pace.
//!
//! # Guarantees
//! * **One ordered lane per assigned partition**; batches are bounded by count, bytes and time
//!   (`[batch]`).
//! * **At-least-once, effectively once**: an offset is stored only after the batch it covers is
//!   durable in the store (committed transaction, fsynced file); stored offsets are committed every
//!   second, on revoke and at shutdown. Redelivered events are absorbed by the store's idempotence on
//!   `eventId` (or on the offset, for JSONL files).
//! * **Errors classified once** ([`sink::SinkError`]): retriable → exponential backoff with jitter,
//!   a circuit breaker per sink, the lane paused (never the process crashed); poison → the batch is
//!   split until the bad record is alone, it goes to the sink's dead-letter topic with the reason in
//!   headers, and the lane goes on; fatal (bad config, authentication) → exit non-zero.
//! * **Conflicts are kept**: the same `eventId` with a different content hash is counted, logged
//!   and stored for review (the `audit_event_conflicts` table for PostgreSQL).
//!
//! # Layout
//! [`runtime`] (the lane handler: batching, retries, dead letters; the consumer group and the
//! lanes themselves are [`audit_kafka::lanes`]), [`retry`] (backoff, circuit breaker, bisection),
//! [`sink`] (the trait every store's writer implements), [`config`] (a leaf: the whole config,
//! checked before I/O), [`client`] (the librdkafka keys a sink fixes) and [`metrics`] (served with
//! `/healthz` and `/readyz` by [`audit_service::serve_ops`]).
//!
//! [`stores`] holds one folder per store with the same shape — `mod.rs` (its
//! [`stores::Store`] implementation), `config.rs` (its settings and their check), `sink.rs` (the
//! writer), `reader.rs` (what `auditctl verify` and `export` read back, by the contract of
//! [`stores::read`]), `migrations/` where it has a schema, tests beside the code: [`stores::jsonl`],
//! [`stores::postgres`], [`stores::sqlite`], [`stores::mongodb`], [`stores::http`] (written to
//! only), and `stores/sql/`, the code the two SQL stores share. `stores/mod.rs` is the one registry:
//! the only place the store kind is matched, and the one line a new store adds there. `docs/SINKS.md`
//! describes each store and lists the files a new one needs.

pub mod cli;
pub mod client;
pub mod config;
pub mod metrics;
pub mod retry;
pub mod runtime;
pub mod sink;
pub mod stores;

use std::sync::Arc;

pub use config::{ConfigError, Settings, SinkConfig};
pub use runtime::RunError;
use tokio_util::sync::CancellationToken;

/// Runs `sink` with `settings` until `shutdown` (drains, commits, returns `Ok`) or a fatal error.
pub async fn run<S: sink::Sink>(
    settings: Settings,
    sink: Arc<S>,
    metrics: metrics::SinkMetrics,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // The dead-letter topic is this sink's own; create it when missing (an existing one is kept),
    // replicated as the cluster's default.replication.factor says.
    let dlq = audit_kafka::topics::TopicSpec::new(&settings.dead_letter_topic, 1);
    if let Err(error) = audit_kafka::topics::create_topics(&settings.kafka, &[dlq]).await {
        tracing::warn!(%error, topic = %settings.dead_letter_topic, "could not create the dead-letter topic; it must exist");
    }
    let health = Arc::new(audit_service::Health::default());
    let http_stop = CancellationToken::new();
    let render = metrics.clone();
    let (server, _) = audit_service::serve_ops(
        settings.http_listen,
        Arc::new(move || render.render()),
        health.clone(),
        http_stop.clone(),
    )
    .await
    .map_err(|e| RunError::Fatal(format!("http endpoint {}: {e}", settings.http_listen)))?;
    let handle = tokio::runtime::Handle::current();
    let result =
        tokio::task::spawn_blocking(move || runtime::run_blocking(settings, sink, metrics, health, handle, shutdown))
            .await
            .unwrap_or_else(|e| Err(RunError::Fatal(format!("sink thread panicked: {e}"))));
    http_stop.cancel();
    let _ = server.await;
    result
}

/// Opens the store `settings` name (applying migrations where configured) and runs the sink on
/// it, as [`run`] does: what the `audit-sink` binary and `auditctl demo` start.
pub async fn run_store(
    settings: Settings,
    metrics: metrics::SinkMetrics,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    /// Runs the opened sink, whichever store it writes.
    struct Runner {
        settings: Settings,
        metrics: metrics::SinkMetrics,
        shutdown: CancellationToken,
    }
    impl stores::WithSink for Runner {
        type Output = Result<(), RunError>;
        async fn with<S: sink::Sink>(self, sink: S) -> Result<(), RunError> {
            run(self.settings, Arc::new(sink), self.metrics, self.shutdown).await
        }
    }
    let store = settings.store.clone();
    let url = settings.store_url.clone();
    store
        .open(url.as_deref(), Runner { settings, metrics, shutdown })
        .await
        .unwrap_or_else(|e| Err(RunError::Fatal(e.to_string())))
}
