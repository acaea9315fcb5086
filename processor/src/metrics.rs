//! The processor's Prometheus metrics; names defined once here and listed in `docs/METRICS.md`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Raw records consumed.
pub const CONSUMED: &str = "audit_processor_records_consumed_total";
/// Events published to the processed topic (quarantine entries included).
pub const PROCESSED: &str = "audit_processor_events_processed_total";
/// Records sent to the dead-letter topic, by `class`.
pub const DEAD_LETTERED: &str = "audit_processor_dead_lettered_total";
/// Values redacted, by `rule`.
pub const REDACTIONS: &str = "audit_processor_redactions_total";
/// Payloads replaced by truncation markers, by `field` (`metadata`, `diff`).
pub const TRUNCATIONS: &str = "audit_processor_truncations_total";
/// Records behind the raw partition's end, by `partition`.
pub const LAG: &str = "audit_processor_lag_records";
/// Seconds spent in the pipeline per record.
pub const PROCESSING_LATENCY: &str = "audit_processor_processing_seconds";
/// Partitions currently owned.
pub const ASSIGNED: &str = "audit_processor_assigned_partitions";
/// Counter: signed checkpoints, by `result` (`published`: handed to the processed partition,
/// `publish_failed`, `witness_failed`: a witness file or endpoint did not take one).
pub const CHECKPOINTS: &str = "audit_processor_checkpoints_total";
/// Counter: lane transactions (`kafka.processing_guarantee = "exactly_once"`), by `result`
/// (`committed`, `aborted`, `fenced`: another instance owns the partition now).
pub const TRANSACTIONS: &str = "audit_processor_transactions_total";
/// Histogram: seconds a lane spends committing its transaction (flushing its records, then the
/// coordinator's commit), during which it takes no record.
pub const TRANSACTION_COMMIT: &str = "audit_processor_transaction_commit_seconds";
/// Counter: times the Kafka clients were started again in the same process (deliveries were
/// still in flight when partitions had to be released, e.g. while the broker was unreachable).
pub const CLIENT_RESTARTS: &str = "audit_processor_client_restarts_total";

/// Metric handles.
#[derive(Debug, Clone)]
pub struct ProcessorMetrics {
    /// Registry they are in (served at `/metrics`).
    pub registry: Registry,
    pub(crate) consumed: IntCounter,
    pub(crate) processed: IntCounter,
    pub(crate) dead_lettered: IntCounterVec,
    pub(crate) redactions: IntCounterVec,
    pub(crate) truncations: IntCounterVec,
    pub(crate) lag: IntGaugeVec,
    pub(crate) latency: Histogram,
    pub(crate) assigned: prometheus::IntGauge,
    pub(crate) checkpoints: IntCounterVec,
    pub(crate) client_restarts: IntCounter,
    pub(crate) transactions: IntCounterVec,
    pub(crate) commit_seconds: Histogram,
}

impl ProcessorMetrics {
    /// Creates and registers the metrics in a new registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = ProcessorMetrics {
            consumed: IntCounter::new(CONSUMED, "Raw records consumed.")?,
            processed: IntCounter::new(
                PROCESSED,
                "Events published to the processed topic (quarantine entries included).",
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(DEAD_LETTERED, "Records sent to the dead-letter topic."),
                &["class"],
            )?,
            redactions: IntCounterVec::new(Opts::new(REDACTIONS, "Values redacted, by rule."), &["rule"])?,
            truncations: IntCounterVec::new(
                Opts::new(TRUNCATIONS, "Payloads replaced by truncation markers."),
                &["field"],
            )?,
            lag: IntGaugeVec::new(Opts::new(LAG, "Records behind the end of the raw partition."), &["partition"])?,
            latency: Histogram::with_opts(
                HistogramOpts::new(PROCESSING_LATENCY, "Seconds spent in the pipeline per record.")
                    .buckets(vec![0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.01, 0.05]),
            )?,
            assigned: prometheus::IntGauge::new(ASSIGNED, "Raw partitions this instance owns.")?,
            checkpoints: IntCounterVec::new(
                Opts::new(CHECKPOINTS, "Signed checkpoints of chain heads, by result."),
                &["result"],
            )?,
            client_restarts: IntCounter::new(CLIENT_RESTARTS, "Kafka clients started again in this process.")?,
            transactions: IntCounterVec::new(Opts::new(TRANSACTIONS, "Lane transactions, by result."), &["result"])?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(TRANSACTION_COMMIT, "Seconds a lane spends committing its transaction.")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            )?,
            registry,
        };
        m.registry.register(Box::new(m.consumed.clone()))?;
        m.registry.register(Box::new(m.processed.clone()))?;
        m.registry.register(Box::new(m.dead_lettered.clone()))?;
        m.registry.register(Box::new(m.redactions.clone()))?;
        m.registry.register(Box::new(m.truncations.clone()))?;
        m.registry.register(Box::new(m.lag.clone()))?;
        m.registry.register(Box::new(m.latency.clone()))?;
        m.registry.register(Box::new(m.assigned.clone()))?;
        m.registry.register(Box::new(m.checkpoints.clone()))?;
        m.registry.register(Box::new(m.client_restarts.clone()))?;
        m.registry.register(Box::new(m.transactions.clone()))?;
        m.registry.register(Box::new(m.commit_seconds.clone()))?;
        Ok(m)
    }

    /// Events published so far (quarantine entries included).
    pub fn processed_total(&self) -> u64 {
        self.processed.get()
    }

    /// Signed checkpoints published in the processed partitions so far.
    pub fn checkpoints_published(&self) -> u64 {
        self.checkpoints.with_label_values(&["published"]).get()
    }

    /// Lane transactions committed so far.
    pub fn transactions_committed(&self) -> u64 {
        self.transactions.with_label_values(&["committed"]).get()
    }

    /// Lane commits so far and the seconds they took in all (`exactly_once`).
    pub fn transaction_commit_time(&self) -> (u64, f64) {
        (self.commit_seconds.get_sample_count(), self.commit_seconds.get_sample_sum())
    }

    /// Records dead-lettered so far.
    pub fn dead_lettered_total(&self) -> u64 {
        ["empty", "decode", "invalid", "oversize", "internal"]
            .iter()
            .map(|c| self.dead_lettered.with_label_values(&[c]).get())
            .sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        let _ = encoder.encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}
