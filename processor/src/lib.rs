//! `audit-processor`: consumes the raw topic and publishes processed, chained events.
//!
//! # Guarantees
//! * **One ordered lane per raw partition**; processed partition p holds the hash chain of raw
//!   partition p (`chain = "<raw topic>/<p>"`), so raw and processed topics must have the same
//!   partition count (checked at start).
//! * **Exactly once per raw offset in the chain**: on assignment a lane recovers `(seq, hash,
//!   source.offset)` from the (committed) tail of its processed partition and resumes right after
//!   that raw offset; processing is a pure function of the raw record and the policy.
//!   `kafka.processing_guarantee = "exactly_once"` (default) writes each lane's output in
//!   transactions of a producer whose `transactional.id` belongs to the partition, initialized
//!   before the tail read, so a paused instance whose partitions moved is fenced: no fork.
//!   `"idempotent"` (brokers without transactions) uses one idempotent producer with unlimited
//!   retries; a paused zombie can then fork the chain, which `verify_chain` exposes. See
//!   `docs/INTEGRITY.md`.
//! * **Nothing vanishes**: an unprocessable record goes to the dead-letter topic with its class,
//!   reason and source in headers, and a quarantine entry takes its place in the chain.
//!
//! # Layout
//! * [`config`]: figment config (defaults ← preset ← TOML ← `AUDIT_*` env), checked before I/O; a
//!   leaf module (`config/preset.rs`, `config/redaction.rs` for the `[redaction]` section).
//!   [`settings`] compiles it (Kafka client settings, redaction policy, keys) and [`client`] names
//!   the librdkafka keys the processor fixes.
//! * [`pipeline`]: decode → [`sanitize`] → validate → normalize → [`redact`] → limits → chain →
//!   encode, pure and deterministic (`pipeline/input.rs` makes the event, `pipeline/limits.rs`
//!   applies the size limits; [`sanitize`] keeps the identifier rule in `sanitize/identifiers.rs`).
//! * [`redact`]: the policy (`redact/rules.rs` which rule matches, `redact/walk.rs` the walk,
//!   `redact/keys.rs` key names) and the value detectors (`redact/detectors.rs`, the engine in
//!   `detectors/compiled.rs`, one module per kind of secret beside it).
//! * `lane/`: the processor as a handler of the partition-lane engine ([`audit_kafka::lanes`]),
//!   which owns the consumer group, the ordered lanes, back-pressure, offset storing, release
//!   and close. `lane/tail.rs` recovers each lane's chain head (and so its start offset) from the
//!   processed tail; `lane/handler.rs` runs the pipeline over a lane's records and signs
//!   checkpoints (`checkpoints.rs`); `lane/publish.rs` is the producers and the deliveries
//!   that acknowledge raw offsets (`idempotent`), `lane/transaction.rs` each lane's transactions
//!   (`exactly_once`); `lane/topics.rs` checks the topics at start.
//! * [`metrics`]: the metric names, served with `/healthz` and `/readyz` by [`audit_service::serve_ops`].
//!
//! The binary (`src/main.rs`) only calls [`cli::main`], which loads config, starts telemetry and
//! calls [`run`].

mod checkpoints;
pub mod cli;
pub mod client;
pub mod config;
mod lane;
pub mod metrics;
pub mod pipeline;
pub mod redact;
pub mod sanitize;
pub mod settings;
pub mod telemetry;

use std::sync::Arc;

use audit_kafka::lanes::EngineError;

pub use config::{ConfigError, ProcessorConfig};
pub use lane::RunError;
pub use settings::Settings;
use tokio_util::sync::CancellationToken;

/// How long a processor whose clients were interrupted keeps trying to start them again while
/// the broker cannot be reached.
const RESTART_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

/// Interruptions tolerated within [`RESTART_PATIENCE`]: more, and the processor exits (deliveries
/// that keep getting stuck while the broker answers are for an operator to see, not to loop on).
const MAX_INTERRUPTIONS: usize = 5;

/// Runs the processor until `shutdown` is cancelled (then drains within
/// `shutdown.drain_timeout_ms`, commits and returns `Ok`) or a fatal error.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), RunError> {
    let metrics = metrics::ProcessorMetrics::new().map_err(|e| RunError::Setup(format!("metrics: {e}")))?;
    run_with_metrics(settings, metrics, shutdown).await
}

/// [`run`] reporting into `metrics` (for embedding the processor and for benchmarks).
pub async fn run_with_metrics(
    settings: Settings,
    metrics: metrics::ProcessorMetrics,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let health = Arc::new(audit_service::Health::default());
    let addr = settings.http_listen;
    let http_stop = CancellationToken::new();
    let render = metrics.clone();
    let (server, _) =
        audit_service::serve_ops(addr, Arc::new(move || render.render()), health.clone(), http_stop.clone())
            .await
            .map_err(|source| RunError::Http { addr: addr.to_string(), source })?;
    // Partitions released with deliveries in flight (the broker unreachable past the drain
    // deadline) stop the clients; they start again here, in the same process, and while the broker
    // is still coming back a start that cannot reach it is tried again; more than
    // `MAX_INTERRUPTIONS` within `RESTART_PATIENCE` end the process with the error.
    let mut interruptions: std::collections::VecDeque<std::time::Instant> = std::collections::VecDeque::new();
    let result = loop {
        let (settings, run_metrics, run_health, run_shutdown) =
            (settings.clone(), metrics.clone(), health.clone(), shutdown.clone());
        let result =
            tokio::task::spawn_blocking(move || lane::run_blocking(settings, run_metrics, run_health, run_shutdown))
                .await
                .unwrap_or_else(|e| Err(EngineError::Fatal(format!("processor thread panicked: {e}")).into()));
        interruptions.retain(|at| at.elapsed() < RESTART_PATIENCE);
        match result {
            Err(RunError::Lanes(EngineError::Interrupted(reason))) if interruptions.len() < MAX_INTERRUPTIONS => {
                tracing::warn!(%reason, "starting the Kafka clients again");
                interruptions.push_back(std::time::Instant::now());
            }
            Err(
                RunError::Client(reason) | RunError::Topology(reason) | RunError::Lanes(EngineError::Kafka(reason)),
            ) if !interruptions.is_empty() => {
                tracing::warn!(%reason, "the broker is not back yet; trying again");
            }
            other => break other,
        }
        // The process is alive and at work: the liveness probe must not take a restart for a hang.
        health.polled();
        metrics.client_restarts.inc();
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => break Ok(()),
        }
    };
    http_stop.cancel();
    let _ = server.await;
    result
}
