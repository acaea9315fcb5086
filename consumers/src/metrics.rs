//! The sinks' Prometheus metrics; names defined once here and listed in `docs/METRICS.md`. Every
//! metric carries the constant label `sink` (the store kind) and `group` (the consumer group).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Processed records consumed.
pub const CONSUMED: &str = "audit_sink_records_consumed_total";
/// Events newly stored.
pub const WRITTEN: &str = "audit_sink_events_written_total";
/// Events already stored with the same content (absorbed).
pub const DUPLICATES: &str = "audit_sink_duplicates_total";
/// Events already stored with different content (kept for review).
pub const CONFLICTS: &str = "audit_sink_conflicts_total";
/// Records sent to the sink's dead-letter topic, by `class`.
pub const DEAD_LETTERED: &str = "audit_sink_dead_lettered_total";
/// Signed checkpoints stored, by `result` (`written`, `duplicate`).
pub const CHECKPOINTS: &str = "audit_sink_checkpoints_total";
/// Retried writes.
pub const RETRIES: &str = "audit_sink_retries_total";
/// 1 while the circuit breaker is open.
pub const CIRCUIT_OPEN: &str = "audit_sink_circuit_open";
/// Times a lane was full and its partition's records waited in the client (backpressure).
pub const LANE_FULL: &str = "audit_sink_lane_full_total";
/// Partitions owned.
pub const ASSIGNED: &str = "audit_sink_assigned_partitions";
/// Seconds per successful batch write.
pub const BATCH_LATENCY: &str = "audit_sink_batch_write_seconds";

/// Metric handles.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    pub(crate) consumed: IntCounter,
    pub(crate) written: IntCounter,
    pub(crate) duplicates: IntCounter,
    pub(crate) conflicts: IntCounter,
    pub(crate) dead_lettered: IntCounterVec,
    pub(crate) checkpoints: IntCounterVec,
    pub(crate) retries: IntCounter,
    pub(crate) circuit_open: IntGauge,
    pub(crate) assigned: IntGauge,
    pub(crate) lane_full: IntCounter,
    pub(crate) batch_latency: Histogram,
}

impl SinkMetrics {
    /// Creates the metrics of sink `kind` in group `group`.
    pub fn new(kind: &str, group: &str) -> prometheus::Result<Self> {
        let o = |name: &str, help: &str| Opts::new(name, help).const_label("sink", kind).const_label("group", group);
        let registry = Registry::new();
        let m = SinkMetrics {
            consumed: IntCounter::with_opts(o(CONSUMED, "Processed records consumed."))?,
            written: IntCounter::with_opts(o(WRITTEN, "Events newly stored."))?,
            duplicates: IntCounter::with_opts(o(DUPLICATES, "Events already stored with the same content."))?,
            conflicts: IntCounter::with_opts(o(CONFLICTS, "Events already stored with different content."))?,
            dead_lettered: IntCounterVec::new(
                o(DEAD_LETTERED, "Records sent to the sink's dead-letter topic."),
                &["class"],
            )?,
            checkpoints: IntCounterVec::new(o(CHECKPOINTS, "Signed checkpoints stored."), &["result"])?,
            retries: IntCounter::with_opts(o(RETRIES, "Retried writes."))?,
            circuit_open: IntGauge::with_opts(o(CIRCUIT_OPEN, "1 while the circuit breaker is open."))?,
            assigned: IntGauge::with_opts(o(ASSIGNED, "Partitions owned."))?,
            lane_full: IntCounter::with_opts(o(
                LANE_FULL,
                "Times a lane was full and its records waited in the client.",
            ))?,
            batch_latency: Histogram::with_opts(
                HistogramOpts::new(BATCH_LATENCY, "Seconds per successful batch write.")
                    .const_label("sink", kind)
                    .const_label("group", group)
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            )?,
            registry,
        };
        m.registry.register(Box::new(m.consumed.clone()))?;
        m.registry.register(Box::new(m.written.clone()))?;
        m.registry.register(Box::new(m.duplicates.clone()))?;
        m.registry.register(Box::new(m.conflicts.clone()))?;
        m.registry.register(Box::new(m.dead_lettered.clone()))?;
        m.registry.register(Box::new(m.checkpoints.clone()))?;
        m.registry.register(Box::new(m.retries.clone()))?;
        m.registry.register(Box::new(m.circuit_open.clone()))?;
        m.registry.register(Box::new(m.assigned.clone()))?;
        m.registry.register(Box::new(m.lane_full.clone()))?;
        m.registry.register(Box::new(m.batch_latency.clone()))?;
        Ok(m)
    }

    /// Events stored so far.
    pub fn written_total(&self) -> u64 {
        self.written.get()
    }

    /// Records consumed so far.
    pub fn consumed_total(&self) -> u64 {
        self.consumed.get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}
