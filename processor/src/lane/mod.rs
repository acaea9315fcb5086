//! The processor as a handler of the partition-lane engine ([`audit_kafka::lanes`]), which owns
//! the consumer group, one ordered lane per raw partition, back-pressure, offset storing, release
//! deadlines, fatal and interrupted stops, and close. What is the processor's own:
//!
//! * `tail`: where a lane starts. On assignment of raw partition p its chain head is recovered
//!   from the tail of processed partition p: the last event's `(seq, hash, source.offset)`. The
//!   raw partition starts at `source.offset + 1`, whatever the group committed, so a restart
//!   neither repeats nor skips a raw record in the chain.
//! * `handler`: each lane runs the pipeline over its records in offset order on a blocking
//!   thread and signs checkpoints of its head; on release it waits for its deliveries and signs
//!   its head as final.
//! * `publish`: one idempotent producer with unlimited retries, so a lane's output lands in order
//!   and without gaps; a permanent delivery failure is fatal (the chain must not skip) and the
//!   process exits non-zero, to resume from the tail after a restart. A raw offset is
//!   acknowledged to the engine (stored, then committed) only once the processed event it
//!   produced is delivered; committed offsets serve lag monitoring, correctness comes from the
//!   processed tail.
//! * `topics`: the start-up check of the three topics and the record sizes they allow.
//!
//! A lane released with deliveries still in flight after the drain deadline drops them and
//! interrupts the engine: the clients start again ([`crate::run`]) so that none of them can land
//! after the partition's next owner has read the tail. Before the member leaves the group, what
//! is not delivered is dropped the same way.

mod handler;
mod publish;
mod tail;
mod topics;
mod transaction;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_kafka::lanes::{self, EngineConfig, EngineError, GroupMember};
use audit_service::Health;
use tokio_util::sync::CancellationToken;

use crate::client::consumer_required;
use crate::metrics::ProcessorMetrics;
use crate::pipeline::Pipeline;
use crate::settings::Settings;

/// Why the processor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The topics are missing or shaped wrong.
    #[error("{0}")]
    Topology(String),
    /// The processor's own Kafka clients (topic probe, producer) could not be created.
    #[error("kafka: {0}")]
    Client(String),
    /// The processor could not be set up (metrics, checkpoint signing and witnesses).
    #[error("{0}")]
    Setup(String),
    /// The lanes stopped: fatal, or interrupted ([`EngineError::Interrupted`]: partitions were
    /// released with deliveries still in flight, or a processed tail stayed unavailable, and
    /// [`crate::run`] starts the clients again in the same process).
    #[error(transparent)]
    Lanes(#[from] EngineError),
    /// The HTTP endpoint could not start.
    #[error("http endpoint {addr}: {source}")]
    Http {
        /// Listen address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Records a lane holds before its raw partition's queue is no longer read.
const LANE_CAPACITY: usize = 2048;

/// How long an assignment keeps asking an unavailable cluster for a processed tail (a leader
/// election after a broker failure takes seconds) before the clients start again.
const TAIL_RETRY: Duration = Duration::from_secs(30);

/// How often the lag of each raw partition is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// What the engine says when a lane's resume offset is gone from the raw topic.
const RAW_OFFSET_GONE: &str = "a raw partition's resume offset (the processed tail's source.offset + 1, in the \"lane resumes at the processed tail\" lines) is not in the raw topic: e.g. retention removed raw records before they were processed, or the raw topic was recreated. Not skipping them silently; to continue from the earliest raw record and leave the gap for verification to report, set kafka.accept_raw_loss = true";

/// Runs the processor until `shutdown` is cancelled (then drains and commits) or a fatal error.
/// Runs on a Tokio blocking thread (it waits for the broker's admin answers on the runtime, and
/// the lanes run there).
pub(crate) fn run_blocking(
    settings: Settings,
    metrics: ProcessorMetrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let partitions = topics::check_topology(&settings)?;
    let limits = topics::RecordLimits::check(&settings)?;
    tracing::info!(pid = std::process::id(), partitions, raw = %settings.config.kafka.raw_topic, processed = %settings.config.kafka.processed_topic,
        policy = %settings.policy.version(), "topics checked");
    let publisher = publish::Publisher::new(&settings, limits)?;
    let checkpoints =
        crate::checkpoints::Checkpointer::open(&settings, metrics.checkpoints.clone()).map_err(RunError::Setup)?;
    let k = &settings.config.kafka;
    let config = EngineConfig {
        client: settings
            .kafka
            .client_config(&consumer_required(k.accept_raw_loss))
            .map_err(|e| RunError::Lanes(EngineError::Kafka(e.to_string())))?,
        group: GroupMember::new(&k.group_id, k.session_timeout_ms, k.instance_id.as_deref()),
        topic: k.raw_topic.clone(),
        lane_capacity: LANE_CAPACITY,
        release_timeout: settings.drain_timeout,
        start_retry: TAIL_RETRY,
        offset_gone: RAW_OFFSET_GONE.into(),
        lag_interval: Some(LAG_INTERVAL),
        liveness: Some(health),
    };
    let handler = Arc::new(handler::ProcessorLanes {
        pipeline: Pipeline::new(&settings),
        tail: tail::TailReader::new(&settings),
        metrics,
        publisher,
        checkpoints,
        recovered: Mutex::new(BTreeMap::new()),
        outputs: Mutex::new(BTreeMap::new()),
        transactions: Mutex::new(BTreeMap::new()),
        settings,
    });
    let result = lanes::run(config, handler.clone(), tokio::runtime::Handle::current(), shutdown);
    // The engine left the group after `leaving` dropped what was not delivered: the purge reports.
    handler.publisher.flush(Duration::from_secs(5));
    if let Some(checkpoints) = &handler.checkpoints {
        checkpoints.close(Duration::from_secs(5));
    }
    handler.tail.close();
    result.map_err(RunError::from)
}
