//! The poll loop, the rebalance callback and the lane registry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feeder::Feeder;
use super::{Acks, EngineConfig, EngineError, Lane, LaneHandler, Records, StartAt, StartError, Stop, StopSlot};
use crate::close_consumer;

/// Most records taken from the main queue in one turn of the poll loop (it holds rebalances,
/// errors and the few records fetched between an assignment and the split of its queue).
const MAIN_QUEUE_TURN: usize = 10_000;

/// How long the consumer gets to leave the group at the end.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// A running lane, as the engine keeps it.
struct LaneEntry {
    acks: Acks,
    /// The offset last stored for commit (-1: none).
    stored: i64,
    tx: mpsc::Sender<OwnedMessage>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

type Queue<H> = PartitionQueue<Rebalance<H>>;

struct Shared<H: LaneHandler> {
    config: EngineConfig,
    handler: Arc<H>,
    runtime: tokio::runtime::Handle,
    slot: Arc<StopSlot>,
    lanes: Mutex<BTreeMap<i32, LaneEntry>>,
    /// Bumped at every assignment change (read by the poll loop).
    generation: AtomicU64,
    /// The consumer, for the rebalance callback to split partition queues.
    consumer: OnceLock<Weak<BaseConsumer<Rebalance<H>>>>,
    /// Each assigned partition's own queue.
    queues: Mutex<BTreeMap<i32, Queue<H>>>,
}

impl<H: LaneHandler> Shared<H> {
    fn lanes(&self) -> MutexGuard<'_, BTreeMap<i32, LaneEntry>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queues(&self) -> MutexGuard<'_, BTreeMap<i32, Queue<H>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn liveness(&self, tell: impl FnOnce(&dyn super::Liveness)) {
        if let Some(liveness) = &self.config.liveness {
            tell(liveness.as_ref());
        }
    }

    fn fatal(&self, message: String) {
        self.slot.put(EngineError::Fatal(message));
    }

    fn start_lane(&self, partition: i32) {
        let (tx, rx) = mpsc::channel(self.config.lane_capacity.max(1));
        let token = CancellationToken::new();
        let acks = Acks::new();
        let lane = Lane {
            partition,
            records: Records(rx),
            acks: acks.clone(),
            stop: Stop { token: token.clone(), slot: self.slot.clone() },
        };
        let task = self.runtime.spawn(self.handler.clone().run_lane(lane));
        self.lanes().insert(partition, LaneEntry { acks, stored: -1, tx, stop: token, task });
    }

    /// Where the handler starts `partition`, asking again while the answer is unavailable.
    fn start_retrying(&self, partition: i32) -> Result<StartAt, StartError> {
        let started = std::time::Instant::now();
        loop {
            match self.handler.start(partition) {
                Err(StartError::Unavailable(message)) if started.elapsed() < self.config.start_retry => {
                    tracing::warn!(partition, error = %message, "the partition's start is unavailable; asking again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// Stops the lanes of `partitions` (one deadline for all), lets the handler finish its work
    /// for each, stores their acknowledged offsets and commits.
    fn release<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, partitions: &[i32]) {
        let lanes: Vec<(i32, LaneEntry)> = {
            let mut map = self.lanes();
            partitions.iter().filter_map(|p| map.remove(p).map(|l| (*p, l))).collect()
        };
        if lanes.is_empty() {
            return;
        }
        for (_, lane) in &lanes {
            lane.stop.cancel();
        }
        let deadline = tokio::time::Instant::now() + self.config.release_timeout;
        let stop = Stop { token: CancellationToken::new(), slot: self.slot.clone() };
        for (p, lane) in lanes {
            let LaneEntry { acks, mut stored, tx, mut task, .. } = lane;
            drop(tx);
            if self.runtime.block_on(tokio::time::timeout_at(deadline, &mut task)).is_err() {
                // Aborted, so it never works next to the partition's next lane; what it had not
                // acknowledged is delivered again.
                tracing::warn!(partition = p, "lane did not stop within the drain deadline; aborted");
                task.abort();
                let _ = self.runtime.block_on(task);
            }
            self.handler.release(p, deadline, &stop);
            self.store_offset(consumer, p, &acks, &mut stored);
            tracing::info!(pid = std::process::id(), partition = p, acked_offset = acks.acked(), "lane released");
        }
        if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "commit on release");
        }
        self.handler.assigned(self.lanes().len());
    }

    /// Stores the lane's acknowledged offset when it moved (librdkafka commits `acked + 1`). The
    /// one place offsets reach the consumer.
    fn store_offset<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, p: i32, acks: &Acks, stored: &mut i64) {
        let acked = acks.acked();
        if acked > *stored {
            match consumer.store_offset(&self.config.topic, p, acked) {
                Ok(()) => *stored = acked,
                // Not owned any more: redelivered to the partition's next owner.
                Err(error) => tracing::debug!(partition = p, %error, "offset not stored"),
            }
        }
    }
}

/// Reads the group's committed offsets of `tpl`: the committed offset, or the beginning when the
/// group has none. A partition whose offset cannot be read is an error, never "no commit" (that
/// would replay it, or jump past records that are gone); the read is tried three times.
fn committed_or_beginning<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> Result<BTreeMap<i32, Offset>, String> {
    // The client wraps a failed offset read as a metadata error: name the broker's error code.
    let describe = |e: KafkaError| e.rdkafka_error_code().map_or_else(|| e.to_string(), |code| code.to_string());
    let mut failure = String::new();
    for attempt in 1..=3 {
        let read =
            consumer.committed_offsets(tpl.clone(), Duration::from_secs(15)).map_err(describe).and_then(|committed| {
                let mut starts = BTreeMap::new();
                for e in committed.elements() {
                    e.error().map_err(|error| format!("partition {}: {}", e.partition(), describe(error)))?;
                    let start = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                        _ => Offset::Beginning,
                    };
                    starts.insert(e.partition(), start);
                }
                Ok(starts)
            });
        match read {
            Ok(starts) => return Ok(starts),
            Err(error) => {
                tracing::warn!(attempt, %error, "cannot read the group's committed offsets");
                failure = error;
            }
        }
    }
    Err(failure)
}

struct Rebalance<H: LaneHandler> {
    shared: Arc<Shared<H>>,
}

impl<H: LaneHandler> ClientContext for Rebalance<H> {}

impl<H: LaneHandler> ConsumerContext for Rebalance<H> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            other => {
                if other != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                }
                // Eager protocols revoke the whole assignment: every lane is released.
                let partitions: Vec<i32> = self.shared.lanes().keys().copied().collect();
                self.shared.release(consumer, &partitions);
                self.shared.queues().clear();
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(%error, "unassign after revoke");
                }
                self.shared.handler.assigned(0);
            }
        }
    }
}

/// How many partitions of an assignment start at once.
const PARALLEL_STARTS: usize = 16;

/// Where each partition of `tpl` starts, in the assignment's order. The partitions start side by
/// side (up to [`PARALLEL_STARTS`] at a time): a start may wait on the cluster, e.g. the
/// processor's `exactly_once` lane initializing its transactional producer (60–500 ms each,
/// which one after the other made a six-partition start-up take over a second).
fn start_all<H: LaneHandler>(shared: &Shared<H>, tpl: &TopicPartitionList) -> Vec<(i32, Result<StartAt, StartError>)> {
    let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    let mut starts = Vec::with_capacity(partitions.len());
    for chunk in partitions.chunks(PARALLEL_STARTS) {
        std::thread::scope(|s| {
            let running: Vec<_> = chunk.iter().map(|&p| (p, s.spawn(move || shared.start_retrying(p)))).collect();
            for (p, start) in running {
                let start = start
                    .join()
                    .unwrap_or_else(|_| Err(StartError::Fatal(format!("partition {p}: its start panicked"))));
                starts.push((p, start));
            }
        });
    }
    starts
}

impl<H: LaneHandler> Rebalance<H> {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let shared = &self.shared;
        let topic = shared.config.topic.as_str();
        let mut starts = BTreeMap::new();
        let mut committed = TopicPartitionList::new();
        for (p, start) in start_all(shared, tpl) {
            match start {
                Ok(StartAt::Offset(o)) => {
                    starts.insert(p, Offset::Offset(o));
                }
                Ok(StartAt::Beginning) => {
                    starts.insert(p, Offset::Beginning);
                }
                Ok(StartAt::Committed) => {
                    let _ = committed.add_partition(topic, p);
                }
                Err(StartError::Fatal(message)) => shared.fatal(message),
                Err(StartError::Unavailable(message)) => shared.slot.put(EngineError::Interrupted(format!(
                    "partition {p}: where to start was unavailable for {}s: {message}",
                    shared.config.start_retry.as_secs()
                ))),
            }
        }
        if committed.count() > 0 {
            match committed_or_beginning(consumer, &committed) {
                Ok(read) => starts.extend(read),
                Err(error) => {
                    shared.fatal(format!("cannot read the group's committed offsets: {error}"));
                    return;
                }
            }
        }
        let mut assignment = TopicPartitionList::new();
        for e in tpl.elements() {
            // A partition that cannot start stays at its stored offset, without a lane: the
            // engine is stopping.
            let start = starts.get(&e.partition()).copied().unwrap_or(Offset::Stored);
            if let Err(error) = assignment.add_partition_offset(topic, e.partition(), start) {
                shared.fatal(format!("partition {}: {error}", e.partition()));
                return;
            }
        }
        if let Err(error) = consumer.assign(&assignment) {
            shared.fatal(format!("assign failed: {error}"));
            return;
        }
        // After `assign`: each partition its own queue (the split outlives later fetch starts).
        if let Some(me) = shared.consumer.get().and_then(Weak::upgrade) {
            let mut queues = shared.queues();
            for p in starts.keys() {
                match me.split_partition_queue(topic, *p) {
                    Some(q) => {
                        queues.insert(*p, q);
                    }
                    None => shared.fatal(format!("cannot split the queue of partition {p}")),
                }
            }
        }
        for (p, start) in &starts {
            shared.start_lane(*p);
            tracing::info!(partition = p, start = ?start, "lane started");
        }
        shared.handler.assigned(shared.lanes().len());
    }
}

/// Consumes `config.topic` with `handler` until `shutdown` (then releases every lane, commits and
/// returns `Ok`) or a fatal or interrupted stop. Blocks: run it on a blocking thread; lanes run on
/// `runtime`.
pub fn run<H: LaneHandler>(
    config: EngineConfig,
    handler: Arc<H>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let mut client = config.client.clone();
    config.group.apply(&mut client);
    let topic = config.topic.clone();
    let shared = Arc::new(Shared {
        config,
        handler,
        runtime,
        slot: Arc::new(StopSlot::default()),
        lanes: Mutex::new(BTreeMap::new()),
        generation: AtomicU64::new(0),
        consumer: OnceLock::new(),
        queues: Mutex::new(BTreeMap::new()),
    });
    let consumer: Arc<BaseConsumer<Rebalance<H>>> = Arc::new(
        client
            .create_with_context(Rebalance { shared: shared.clone() })
            .map_err(|e| EngineError::Kafka(format!("consumer: {e}")))?,
    );
    // The rebalance callback splits each assigned partition into its own queue.
    let _ = shared.consumer.set(Arc::downgrade(&consumer));
    consumer.subscribe(&[topic.as_str()]).map_err(|e| EngineError::Kafka(format!("subscribe: {e}")))?;
    shared.liveness(|l| l.ready(true));

    let mut feeder = Feeder::default();
    let lag_interval = shared.config.lag_interval;
    // Tokio time (paused in tests), like the release deadline.
    let mut next_lag = lag_interval.map(|every| tokio::time::Instant::now() + every);
    // The lag is measured on a thread of its own: asking the broker for each partition's end
    // takes a round trip per partition (behind the consumer's fetches on the same connection),
    // and on this loop it held every lane without records for 1.6–2.4 s every interval.
    let mut lag_probe: Option<std::thread::JoinHandle<()>> = None;
    let mut handed = 0;
    let result = loop {
        shared.liveness(|l| l.polled());
        if let Some(error) = shared.slot.get() {
            break Err(error);
        }
        if shutdown.is_cancelled() {
            break Ok(());
        }
        // While records flow the next turn does not wait on the main queue: a partition queue
        // (which cannot wake the poll) may already hold what a lane waits for.
        handed = turn(&shared, &consumer, &mut feeder, handed > 0);
        if let (Some(every), Some(next)) = (lag_interval, next_lag) {
            if tokio::time::Instant::now() >= next {
                next_lag = Some(tokio::time::Instant::now() + every);
                // One measurement at a time: a slow broker skips intervals instead of piling them up.
                if lag_probe.as_ref().is_none_or(std::thread::JoinHandle::is_finished) {
                    let (shared, consumer) = (shared.clone(), consumer.clone());
                    match std::thread::Builder::new()
                        .name("lanes-lag".into())
                        .spawn(move || report_lag(&shared, &consumer))
                    {
                        Ok(probe) => lag_probe = Some(probe),
                        Err(error) => {
                            tracing::warn!(%error, "cannot start the lag measurement; skipping it this interval")
                        }
                    }
                }
            }
        }
    };
    shared.liveness(|l| l.ready(false));
    if let Some(probe) = lag_probe.take() {
        let _ = probe.join();
    }
    let all: Vec<i32> = shared.lanes().keys().copied().collect();
    shared.release(&consumer, &all);
    shared.queues().clear();
    shared.handler.leaving();
    let Ok(consumer) = Arc::try_unwrap(consumer) else {
        return result.and(Err(EngineError::Fatal("the consumer is still shared at shutdown".into())));
    };
    let outcome = close_consumer(consumer, CLOSE_DEADLINE);
    tracing::info!(?outcome, "left the consumer group");
    result
}

/// How long the lag measurement waits for a partition's end. The broker answers a connection's
/// requests one at a time, so the query waits behind the consumer's fetch (up to
/// `fetch.wait.max.ms`, 500 ms): a shorter limit timed it out under load, with a librdkafka warning
/// each time. It runs off the poll loop, so waiting costs the lanes nothing.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells the handler how far each lane is behind its partition's end (a partition whose end
/// cannot be read now is left out until the next time).
fn report_lag<H: LaneHandler>(shared: &Shared<H>, consumer: &BaseConsumer<Rebalance<H>>) {
    let acked: Vec<(i32, i64)> = shared.lanes().iter().map(|(p, l)| (*p, l.acks.acked())).collect();
    for (p, acked) in acked {
        match consumer.fetch_watermarks(&shared.config.topic, p, LAG_QUERY_TIMEOUT) {
            Ok((_, high)) => shared.handler.lag(p, (high - (acked + 1)).max(0)),
            Err(error) => tracing::debug!(partition = p, %error, "no high watermark for the lag"),
        }
    }
}

/// One turn of the poll loop: the main queue (waited on for up to 5 ms unless `flowing`: the last
/// turn handed records over), then each partition queue whose lane has room, then the acknowledged
/// offsets. Returns how many records it took from the partition queues.
fn turn<H: LaneHandler>(
    shared: &Shared<H>,
    consumer: &BaseConsumer<Rebalance<H>>,
    feeder: &mut Feeder,
    flowing: bool,
) -> usize {
    let sync = |feeder: &mut Feeder| {
        // The rebalance callback bumps the generation before it starts or releases any lane.
        let generation = shared.generation.load(Ordering::Acquire);
        feeder.sync(generation, || shared.lanes().iter().map(|(p, l)| (*p, l.tx.clone())).collect());
    };
    // The main queue serves rebalances and errors (and any record fetched in the instant between
    // an assignment and the split of its queue). It is emptied before any partition queue is
    // read: a record of a partition found there precedes everything in that partition's queue.
    // Only the main queue can wake this wait: a partition queue's record waits out the 5 ms
    // unless records are flowing, when the turn does not wait at all.
    let idle = match (shared.queues().is_empty(), flowing) {
        (true, _) => 100,
        (false, false) => 5,
        (false, true) => 0,
    };
    let mut polled = consumer.poll(Duration::from_millis(idle));
    let mut handed = 0;
    for _ in 0..MAIN_QUEUE_TURN {
        sync(feeder);
        match polled {
            Some(Ok(m)) => {
                if let Err(message) = feeder.accept(m.partition(), m.offset(), || m.detach(), true) {
                    shared.fatal(message);
                }
            }
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                shared.fatal(shared.config.offset_gone.clone())
            }
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None => break,
        }
        polled = consumer.poll(Duration::ZERO);
    }
    sync(feeder);
    feeder.flush_waiting();
    for (p, queue) in shared.queues().iter() {
        let room = feeder.room(*p);
        for _ in 0..room {
            match queue.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    handed += 1;
                    if let Err(message) = feeder.accept(*p, m.offset(), || m.detach(), false) {
                        shared.fatal(message);
                    }
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    shared.fatal(format!("partition {p}: {}", shared.config.offset_gone));
                    break;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, partition = *p, "consumer error");
                    break;
                }
                None => break,
            }
        }
        if feeder.room(*p) == 0 {
            shared.handler.lane_full(*p);
        }
    }
    for (p, lane) in shared.lanes().iter_mut() {
        if lane.task.is_finished() {
            // Lanes end only when released: this one failed (a panic, or it returned) and its
            // partition stalls.
            shared.fatal(format!("the lane of partition {p} stopped"));
        }
        shared.store_offset(consumer, *p, &lane.acks, &mut lane.stored);
    }
    handed
}
