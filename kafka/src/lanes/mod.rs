//! The partition-lane engine: one consumer in a group, one ordered lane per assigned partition,
//! run by a [`LaneHandler`] that contains none of the Kafka machinery.
//!
//! The engine owns, for every service that consumes at least once:
//! * **assignment and revoke**: the rebalance callback asks the handler where each assigned
//!   partition starts ([`LaneHandler::start`]), assigns, and starts its lane; on revoke it
//!   releases every lane (eager protocols hand lanes over whole) and unassigns;
//! * **one ordered lane per partition**: records reach [`LaneHandler::run_lane`] in offset order
//!   ([`feeder`]); a record fetched again is skipped, one out of order stops the engine (the
//!   process restarts from the committed offsets: nothing is lost);
//! * **back-pressure without pausing**: each assigned partition gets its own client queue, read
//!   only while its lane has room; a full lane's queue is simply not read, so the client stops
//!   fetching that partition at its prefetch limit while the poll loop keeps serving the group
//!   (pausing would discard the prefetched records and fetch them again);
//! * **offsets stored only after acknowledgement**: the handler reports the highest offset it has
//!   processed through [`Acks`]; the engine stores it at each turn of the poll loop (librdkafka
//!   commits `offset + 1`), commits on release and at shutdown;
//! * **release with one deadline**: a released lane is asked to stop, given until the deadline
//!   (one for the whole release), aborted after it; the handler's [`LaneHandler::release`] then
//!   finishes its own work for the partition before the offset is stored and committed;
//! * **fatal and interrupted stops** ([`Stop`]): the first reason stays; a fatal stop asks for a
//!   non-zero exit, an interrupted one for the clients to start again in the same process;
//! * **liveness**: each turn of the poll loop, and readiness while subscribed ([`Liveness`]);
//! * **lag**: every [`EngineConfig::lag_interval`], each lane's distance from its partition's
//!   end ([`LaneHandler::lag`]), measured on a thread of its own (a round trip to the broker per
//!   partition must not hold the poll loop);
//! * **close**: once every lane is released the handler finishes what must end before the
//!   member leaves ([`LaneHandler::leaving`]), then the consumer leaves the group within a
//!   deadline ([`crate::close_consumer`]).
//!
//! Offsets reach the consumer in one place (the engine's `store_offset`), so that a handler that
//! will commit them itself (inside a producer transaction) changes that place only.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod engine;
mod feeder;

pub use engine::run;

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The group's committed offset; the partition's beginning when the group has none. (Read
    /// explicitly, so that `auto.offset.reset` only means "the committed offset is gone".)
    Committed,
    /// This offset (e.g. the one after the last record the handler's own output covers).
    Offset(i64),
    /// The partition's first record.
    Beginning,
}

/// Why a handler cannot say where a partition starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The answer is not available now (a broker down, a leader moving): the engine asks again
    /// for [`EngineConfig::start_retry`], then interrupts (the clients start again).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The partition can never be started as it stands: the engine stops, fatal.
    #[error("{0}")]
    Fatal(String),
}

/// Why the engine stopped with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The consumer could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The engine or its handler cannot continue: exit non-zero.
    #[error("{0}")]
    Fatal(String),
    /// The clients must start again (in the same process) for the handler to continue safely.
    #[error("{0}")]
    Interrupted(String),
}

/// A consumer-group member's own settings (the keys [`crate::GROUP_MEMBER_KEYS`] protects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// `group.id`.
    pub group_id: String,
    /// `session.timeout.ms`; heartbeats go at a quarter of it (at least every 250 ms).
    pub session_timeout_ms: u64,
    /// `group.instance.id` (static membership), when set.
    pub instance_id: Option<String>,
}

impl GroupMember {
    /// The member of `group_id` with its session timeout and static membership.
    pub fn new(group_id: &str, session_timeout_ms: u64, instance_id: Option<&str>) -> Self {
        GroupMember { group_id: group_id.into(), session_timeout_ms, instance_id: instance_id.map(str::to_owned) }
    }

    /// Checks the settings without I/O; an error names the field (`group_id`, `instance_id`,
    /// `session_timeout_ms`) and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.group_id.trim().is_empty() {
            return Err(("group_id", "must name this member's consumer group".into()));
        }
        if self.instance_id.as_deref().is_some_and(|id| id.trim().is_empty() || id.len() > 249) {
            return Err(("instance_id", "must be 1 to 249 characters".into()));
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(("session_timeout_ms", "must be between 1000 and 300000".into()));
        }
        Ok(())
    }

    /// Sets the member's keys on `config`, with stored offsets committed every second.
    pub fn apply(&self, config: &mut ClientConfig) {
        config
            .set("group.id", &self.group_id)
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (self.session_timeout_ms / 4).max(250).to_string())
            .set("auto.commit.interval.ms", "1000");
        if let Some(id) = &self.instance_id {
            config.set("group.instance.id", id);
        }
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The consumer's config: the service's required keys and pass-through options (see
    /// [`crate::ClientSettings::client_config`]); the engine adds the group member's keys.
    pub client: ClientConfig,
    /// The group membership.
    pub group: GroupMember,
    /// The topic consumed.
    pub topic: String,
    /// Records a lane holds before its partition's queue is no longer read.
    pub lane_capacity: usize,
    /// The deadline of a release, for all the lanes it stops together.
    pub release_timeout: Duration,
    /// How long [`StartError::Unavailable`] is asked again before the engine interrupts.
    pub start_retry: Duration,
    /// What the engine says (fatal) when a partition's start offset is gone from the topic
    /// (`auto.offset.reset = error`): what it means for the service and what to do.
    pub offset_gone: String,
    /// How often each lane's lag is reported ([`LaneHandler::lag`]); `None`: never.
    pub lag_interval: Option<Duration>,
    /// Where the engine reports that it is alive and ready (the service's health endpoints).
    pub liveness: Option<Arc<dyn Liveness>>,
}

/// What the engine tells a service's health endpoints (`audit_service::Health` is one).
pub trait Liveness: Send + Sync + std::fmt::Debug {
    /// A turn of the poll loop.
    fn polled(&self);

    /// The engine is subscribed (`true`) or draining (`false`).
    fn ready(&self, ready: bool);
}

/// What an engine consumer does when a partition's start offset is gone from the topic (retention
/// removed it, or the topic was recreated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetGone {
    /// Stop, fatal ([`EngineConfig::offset_gone`] says why): `reason` is shown when a pass-through
    /// option tries to change it (e.g. the setting that accepts the loss).
    Stop {
        /// Why the choice is fixed.
        reason: &'static str,
    },
    /// Continue from the earliest record still there, leaving the gap for verification to report.
    Earliest {
        /// Why the choice is fixed (the setting that chose it).
        reason: &'static str,
    },
}

/// The librdkafka keys every engine consumer fixes: at-least-once offsets
/// ([`crate::AT_LEAST_ONCE_CONSUMER`]), eager assignment (a lane is handed over whole on revoke),
/// no end-of-partition events (a lane reads a never-ending stream) and `auto.offset.reset`. The
/// engine assigns each partition at an explicit offset ([`StartAt`]); the reset only decides what
/// happens when that offset is gone from the topic.
pub fn consumer_keys(gone: OffsetGone) -> Vec<crate::Required> {
    use crate::Required;
    let mut keys = crate::AT_LEAST_ONCE_CONSUMER.to_vec();
    keys.push(Required::fixed(
        "partition.assignment.strategy",
        "range,roundrobin",
        "lanes are handed over whole on revoke (eager rebalancing)",
    ));
    keys.push(Required::fixed("enable.partition.eof", "false", "a lane reads a never-ending stream"));
    keys.push(match gone {
        OffsetGone::Stop { reason } => Required::fixed("auto.offset.reset", "error", reason),
        OffsetGone::Earliest { reason } => Required::fixed("auto.offset.reset", "earliest", reason),
    });
    keys
}

/// A service that consumes a topic through the engine: where each partition starts, what its
/// lane does with the records, and what is left to do when the partition is released.
pub trait LaneHandler: Send + Sync + 'static {
    /// Where `partition` starts. Called in the rebalance callback (blocking the poll loop): keep
    /// it to what the start needs. The partitions of one assignment start side by side, each on
    /// a thread of its own: calls for different partitions may overlap.
    fn start(&self, partition: i32) -> Result<StartAt, StartError>;

    /// Processes the records of one partition, in offset order, acknowledging each processed
    /// offset through [`Lane::acks`], until the records end (the lane is released) or
    /// [`Lane::stop`] is requested. Returning while the partition is assigned stops the engine.
    fn run_lane(self: Arc<Self>, lane: Lane) -> impl Future<Output = ()> + Send + 'static;

    /// Called once the lane of `partition` has ended (or was aborted at `deadline`), before its
    /// acknowledged offset is stored and committed: the handler's own work for the partition,
    /// within `deadline`. [`Stop::interrupt`] when that work cannot be finished safely.
    fn release(&self, partition: i32, deadline: tokio::time::Instant, stop: &Stop) {
        let _ = (partition, deadline, stop);
    }

    /// The number of lanes after an assignment change.
    fn assigned(&self, lanes: usize) {
        let _ = lanes;
    }

    /// The lane of `partition` has no room: its queue is left unread for now (called at each
    /// turn of the poll loop while it stays full).
    fn lane_full(&self, partition: i32) {
        let _ = partition;
    }

    /// Every [`EngineConfig::lag_interval`]: the lane of `partition` is `records` behind its
    /// partition's end (the high watermark less the offset after the acknowledged one). Called
    /// from the engine's lag thread, not the poll loop.
    fn lag(&self, partition: i32, records: i64) {
        let _ = (partition, records);
    }

    /// Every lane is released and its offset stored; the consumer commits and leaves the group
    /// next. What must not outlive this member's place in the group ends here (e.g. output that
    /// would land after the partitions' next owner has started).
    fn leaving(&self) {}
}

/// One partition's lane, as the handler runs it.
#[derive(Debug)]
pub struct Lane {
    /// The partition.
    pub partition: i32,
    /// Its records, in offset order.
    pub records: Records,
    /// Where processed offsets are acknowledged.
    pub acks: Acks,
    /// The stop request, and the way to stop the engine.
    pub stop: Stop,
}

/// A lane's records in offset order; they end when the lane is released.
#[derive(Debug)]
pub struct Records(pub(crate) mpsc::Receiver<OwnedMessage>);

impl Records {
    /// The next record; `None` once the lane is released.
    pub async fn recv(&mut self) -> Option<OwnedMessage> {
        self.0.recv().await
    }

    /// The next record if one is waiting.
    pub fn try_recv(&mut self) -> Option<OwnedMessage> {
        self.0.try_recv().ok()
    }

    /// The next record, blocking this thread (not a runtime worker) for up to `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<OwnedMessage, RecvTimeout> {
        let handle = tokio::runtime::Handle::current();
        match handle.block_on(tokio::time::timeout(timeout, self.0.recv())) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(RecvTimeout::Released),
            Err(_) => Err(RecvTimeout::Timeout),
        }
    }
}

/// Why [`Records::recv_timeout`] returned no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeout {
    /// None arrived in time.
    Timeout,
    /// The lane is released: no more will come.
    Released,
}

/// Acknowledges processed offsets of one lane (cloneable: e.g. into delivery callbacks).
#[derive(Debug, Clone)]
pub struct Acks(Arc<AtomicI64>);

impl Acks {
    pub(crate) fn new() -> Self {
        Acks(Arc::new(AtomicI64::new(-1)))
    }

    /// `offset` and every earlier one are processed: the engine may store it for commit.
    pub fn ack(&self, offset: i64) {
        self.0.fetch_max(offset, Ordering::AcqRel);
    }

    /// The highest acknowledged offset (-1: none yet).
    pub fn acked(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }
}

/// The first reason the engine must stop. It stays set: what happens during the teardown after
/// it is a consequence, not a new reason.
#[derive(Debug, Default)]
pub(crate) struct StopSlot(Mutex<Option<EngineError>>);

impl StopSlot {
    pub(crate) fn put(&self, error: EngineError) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let interrupted = matches!(error, EngineError::Interrupted(_));
            tracing::error!(%error, interrupted, "stopping the Kafka clients");
            *slot = Some(error);
        }
    }

    pub(crate) fn get(&self) -> Option<EngineError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A lane's stop request, and the handler's way to stop the whole engine.
#[derive(Debug, Clone)]
pub struct Stop {
    pub(crate) token: CancellationToken,
    pub(crate) slot: Arc<StopSlot>,
}

impl Stop {
    /// Completes when the lane is asked to stop (released, or the engine stopping).
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }

    /// Whether the lane is asked to stop.
    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The lane's stop token.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Stops the engine: the service cannot continue (exit non-zero).
    pub fn fatal(&self, message: impl Into<String>) {
        self.slot.put(EngineError::Fatal(message.into()));
    }

    /// Stops the engine so that the clients start again in the same process.
    pub fn interrupt(&self, message: impl Into<String>) {
        self.slot.put(EngineError::Interrupted(message.into()));
    }

    /// Whether the engine is stopping (fatal or interrupted).
    pub fn is_stopping(&self) -> bool {
        self.slot.get().is_some()
    }
}
