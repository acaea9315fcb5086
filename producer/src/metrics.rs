//! The producer's Prometheus metrics. Names are defined here once and documented in
//! `docs/METRICS.md`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

/// Events `log` accepted (Ok returned).
pub const EVENTS_ACCEPTED: &str = "audit_producer_events_accepted_total";
/// Events the broker acknowledged.
pub const EVENTS_DELIVERED: &str = "audit_producer_events_delivered_total";
/// Events the broker refused for good (parked in the spool's failed file in `Queue` mode).
pub const EVENTS_FAILED: &str = "audit_producer_events_failed_total";
/// Events refused because the queue was full (`Drop` mode only).
pub const EVENTS_DROPPED: &str = "audit_producer_events_dropped_total";
/// Events rejected by validation or the size limit (never accepted).
pub const EVENTS_REJECTED: &str = "audit_producer_events_rejected_total";
/// Events that waited on disk because the in-memory queue was full or the broker unreachable, and
/// events replayed from a previous run's spool.
pub const EVENTS_SPOOLED: &str = "audit_producer_events_spooled_total";
/// Accepted events not yet acknowledged (in memory or on disk).
pub const QUEUE_DEPTH: &str = "audit_producer_queue_depth";
/// Bytes used by the spool.
pub const SPOOL_BYTES: &str = "audit_producer_spool_bytes";
/// Seconds from `log` to the broker's acknowledgement.
pub const DELIVERY_LATENCY: &str = "audit_producer_delivery_latency_seconds";

/// The metric handles of one producer.
#[derive(Debug, Clone)]
pub struct ProducerMetrics {
    pub(crate) accepted: IntCounter,
    pub(crate) delivered: IntCounter,
    pub(crate) failed: IntCounter,
    pub(crate) dropped: IntCounter,
    pub(crate) rejected: IntCounter,
    pub(crate) spooled: IntCounter,
    pub(crate) queue_depth: IntGauge,
    pub(crate) spool_bytes: IntGauge,
    pub(crate) delivery_latency: Histogram,
}

fn opts(name: &str, help: &str, service: &str) -> Opts {
    Opts::new(name, help).const_label("service", service)
}

impl ProducerMetrics {
    /// Creates the metrics, labelled with `service`, and registers them in `registry`.
    pub fn register(registry: &Registry, service: &str) -> prometheus::Result<Self> {
        let m = ProducerMetrics {
            accepted: IntCounter::with_opts(opts(EVENTS_ACCEPTED, "Events accepted by log().", service))?,
            delivered: IntCounter::with_opts(opts(EVENTS_DELIVERED, "Events acknowledged by the broker.", service))?,
            failed: IntCounter::with_opts(opts(EVENTS_FAILED, "Events refused for good by the broker.", service))?,
            dropped: IntCounter::with_opts(opts(
                EVENTS_DROPPED,
                "Events dropped because the queue was full (Drop mode).",
                service,
            ))?,
            rejected: IntCounter::with_opts(opts(
                EVENTS_REJECTED,
                "Events rejected by validation or the size limit.",
                service,
            ))?,
            spooled: IntCounter::with_opts(opts(EVENTS_SPOOLED, "Events that waited in the disk spool.", service))?,
            queue_depth: IntGauge::with_opts(opts(QUEUE_DEPTH, "Accepted events not yet acknowledged.", service))?,
            spool_bytes: IntGauge::with_opts(opts(SPOOL_BYTES, "Bytes used by the spool.", service))?,
            delivery_latency: Histogram::with_opts(
                HistogramOpts::new(DELIVERY_LATENCY, "Seconds from log() to the broker's acknowledgement.")
                    .const_label("service", service)
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
        };
        registry.register(Box::new(m.accepted.clone()))?;
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.spooled.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.spool_bytes.clone()))?;
        registry.register(Box::new(m.delivery_latency.clone()))?;
        Ok(m)
    }
}
