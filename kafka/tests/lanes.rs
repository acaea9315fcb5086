//! The partition-lane engine against librdkafka's mock cluster: ordered lanes, handler-chosen
//! starts, offsets committed only as far as acknowledged, back-pressure, release deadlines,
//! fatal and interrupted stops, lag, leaving. (Rebalances between members run against the real broker in the
//! services' tests.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_kafka::lanes::{
    self, EngineConfig, EngineError, GroupMember, Lane, LaneHandler, Liveness, StartAt, StartError, Stop,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "lanes";
const PARTITIONS: i32 = 2;
const RECORDS: i64 = 100;

/// A mock cluster with `TOPIC` holding `RECORDS` records in each partition.
fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
    for p in 0..PARTITIONS {
        for i in 0..RECORDS {
            let payload = format!("{p}:{i}");
            producer.send(BaseRecord::<(), _>::to(TOPIC).partition(p).payload(&payload)).unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    cluster
}

fn config(cluster: &MockCluster<'static, DefaultProducerContext>, group: &str) -> EngineConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", cluster.bootstrap_servers());
    for r in audit_kafka::AT_LEAST_ONCE_CONSUMER {
        client.set(r.key, r.value.as_ref());
    }
    client.set("auto.offset.reset", "error");
    EngineConfig {
        client,
        group: GroupMember { group_id: group.into(), session_timeout_ms: 6_000, instance_id: None },
        topic: TOPIC.into(),
        lane_capacity: 8,
        release_timeout: Duration::from_secs(5),
        start_retry: Duration::from_secs(1),
        offset_gone: "offset gone".into(),
        lag_interval: None,
        liveness: None,
    }
}

type StartFn = Box<dyn Fn(i32) -> Result<StartAt, StartError> + Send + Sync>;

/// A handler that records what its lanes see, acknowledging offsets below a per-partition limit.
struct Probe {
    start: StartFn,
    ack_below: BTreeMap<i32, i64>,
    /// Lanes read only while set.
    reading: AtomicBool,
    ignore_stop: bool,
    return_at_once: bool,
    seen: Mutex<BTreeMap<i32, Vec<i64>>>,
    released: Mutex<Vec<i32>>,
    full: AtomicU64,
    lags: Mutex<BTreeMap<i32, i64>>,
    /// Lanes still running when `leaving` was called (-1: not called).
    running_when_leaving: AtomicI64,
    running: AtomicI64,
}

impl Probe {
    fn new(start: impl Fn(i32) -> Result<StartAt, StartError> + Send + Sync + 'static) -> Self {
        Probe {
            start: Box::new(start),
            ack_below: BTreeMap::new(),
            reading: AtomicBool::new(true),
            ignore_stop: false,
            return_at_once: false,
            seen: Mutex::new(BTreeMap::new()),
            released: Mutex::new(Vec::new()),
            full: AtomicU64::new(0),
            lags: Mutex::new(BTreeMap::new()),
            running_when_leaving: AtomicI64::new(-1),
            running: AtomicI64::new(0),
        }
    }

    fn seen(&self, p: i32) -> Vec<i64> {
        self.seen.lock().unwrap().get(&p).cloned().unwrap_or_default()
    }

    fn released(&self) -> Vec<i32> {
        let mut released = self.released.lock().unwrap().clone();
        released.sort();
        released
    }

    fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed) > 0
    }

    fn has_all(&self) -> bool {
        (0..PARTITIONS).all(|p| self.seen(p).len() as i64 == RECORDS)
    }
}

impl LaneHandler for Probe {
    fn start(&self, partition: i32) -> Result<StartAt, StartError> {
        (self.start)(partition)
    }

    async fn run_lane(self: Arc<Self>, lane: Lane) {
        self.running.fetch_add(1, Ordering::AcqRel);
        let _ended = Ended(&self.running);
        let Lane { partition, mut records, acks, stop } = lane;
        if self.return_at_once {
            return;
        }
        if self.ignore_stop {
            std::future::pending::<()>().await;
        }
        let limit = self.ack_below.get(&partition).copied().unwrap_or(i64::MAX);
        loop {
            while !self.reading.load(Ordering::Acquire) {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                    () = stop.requested() => return,
                }
            }
            let m = tokio::select! {
                m = records.recv() => m,
                () = stop.requested() => None,
            };
            let Some(m) = m else { return };
            self.seen.lock().unwrap().entry(partition).or_default().push(m.offset());
            if m.offset() < limit {
                acks.ack(m.offset());
            }
        }
    }

    fn release(&self, partition: i32, _deadline: tokio::time::Instant, _stop: &Stop) {
        self.released.lock().unwrap().push(partition);
    }

    fn lane_full(&self, _partition: i32) {
        self.full.fetch_add(1, Ordering::Relaxed);
    }

    fn lag(&self, partition: i32, records: i64) {
        self.lags.lock().unwrap().insert(partition, records);
    }

    fn leaving(&self) {
        self.running_when_leaving.store(self.running.load(Ordering::Acquire), Ordering::Release);
    }
}

/// The engine's liveness reports: turns of the poll loop, readiness.
#[derive(Debug, Default)]
struct Turns {
    polls: AtomicU64,
    ready: AtomicBool,
}

impl Liveness for Turns {
    fn polled(&self) {
        self.polls.fetch_add(1, Ordering::Relaxed);
    }

    fn ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// Counts a lane as ended when its future is dropped (it ended or was aborted).
struct Ended<'a>(&'a AtomicI64);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An engine running `probe` on a blocking thread.
struct Running {
    engine: tokio::task::JoinHandle<Result<(), EngineError>>,
    shutdown: CancellationToken,
}

impl Running {
    fn start(config: EngineConfig, probe: &Arc<Probe>) -> Running {
        let shutdown = CancellationToken::new();
        let handle = tokio::runtime::Handle::current();
        let (p, s) = (probe.clone(), shutdown.clone());
        let engine = tokio::task::spawn_blocking(move || lanes::run(config, p, handle, s));
        Running { engine, shutdown }
    }

    /// Waits (in real time, so also on paused tokio time) until `done` holds, the engine ends or
    /// `within` passes; whether `done` holds.
    async fn wait(&self, probe: &Probe, done: impl Fn(&Probe) -> bool, within: Duration) -> bool {
        let started = Instant::now();
        while !done(probe) && !self.engine.is_finished() && started.elapsed() < within {
            real_sleep(Duration::from_millis(20)).await;
        }
        done(probe)
    }

    /// Shuts the engine down: its result, and how long it took to stop.
    async fn stop(self) -> (Result<(), EngineError>, Duration) {
        let stopping = Instant::now();
        self.shutdown.cancel();
        let result = self.engine.await.unwrap();
        (result, stopping.elapsed())
    }
}

/// Sleeps in real time off the runtime's threads (tokio's clock may be paused).
async fn real_sleep(d: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(d)).await.unwrap();
}

/// Runs the engine on a blocking thread until `done` holds (or 60 s), then shuts it down.
async fn run_until(
    config: EngineConfig,
    probe: &Arc<Probe>,
    done: impl Fn(&Probe) -> bool,
) -> (Result<(), EngineError>, Duration) {
    let running = Running::start(config, probe);
    running.wait(probe, done, Duration::from_secs(60)).await;
    running.stop().await
}

fn committed(cluster: &MockCluster<'static, DefaultProducerContext>, group: &str) -> BTreeMap<i32, Offset> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let read = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    read.elements().iter().map(|e| (e.partition(), e.offset())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_get_their_records_in_order_and_only_acknowledged_offsets_are_committed() {
    let cluster = cluster();
    let mut probe = Probe::new(|_| Ok(StartAt::Committed));
    probe.ack_below.insert(0, 60);
    let probe = Arc::new(probe);
    let (result, _) = run_until(config(&cluster, "ordered"), &probe, Probe::has_all).await;
    result.unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(probe.seen(p), (0..RECORDS).collect::<Vec<_>>(), "partition {p} in offset order, once");
    }
    // librdkafka commits the offset after the last acknowledged one: the next to process.
    let committed = committed(&cluster, "ordered");
    assert_eq!(committed[&0], Offset::Offset(60));
    assert_eq!(committed[&1], Offset::Offset(RECORDS));
    assert_eq!(probe.released(), [0, 1], "each lane released once, through the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_starts_where_its_handler_says() {
    let cluster = cluster();
    let probe = Arc::new(Probe::new(|p| Ok(if p == 0 { StartAt::Offset(40) } else { StartAt::Beginning })));
    let done = |p: &Probe| p.seen(0).len() == 60 && p.seen(1).len() as i64 == RECORDS;
    let (result, _) = run_until(config(&cluster, "chosen"), &probe, done).await;
    result.unwrap();
    assert_eq!(probe.seen(0), (40..RECORDS).collect::<Vec<_>>());
    assert_eq!(probe.seen(1).first(), Some(&0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_group_resumes_after_the_acknowledged_offsets() {
    let cluster = cluster();
    let mut first = Probe::new(|_| Ok(StartAt::Committed));
    first.ack_below.insert(0, 30);
    first.ack_below.insert(1, 70);
    let first = Arc::new(first);
    run_until(config(&cluster, "resume"), &first, Probe::has_all).await.0.unwrap();
    let second = Arc::new(Probe::new(|_| Ok(StartAt::Committed)));
    let done = |p: &Probe| p.seen(0).len() == 70 && p.seen(1).len() == 30;
    run_until(config(&cluster, "resume"), &second, done).await.0.unwrap();
    assert_eq!(second.seen(0), (30..RECORDS).collect::<Vec<_>>());
    assert_eq!(second.seen(1), (70..RECORDS).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_start_stops_the_engine_with_its_reason() {
    let cluster = cluster();
    let probe = Arc::new(Probe::new(|p| Err(StartError::Fatal(format!("partition {p} is broken")))));
    let (result, _) = run_until(config(&cluster, "fatal"), &probe, |_| false).await;
    match result {
        Err(EngineError::Fatal(message)) => assert!(message.contains("is broken"), "{message}"),
        other => panic!("expected a fatal stop, got {other:?}"),
    }
    assert!(probe.seen.lock().unwrap().is_empty(), "no lane ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_unavailable_past_the_retry_interrupts() {
    let cluster = cluster();
    let asked = Arc::new(AtomicU64::new(0));
    let counter = asked.clone();
    let probe = Arc::new(Probe::new(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        Err(StartError::Unavailable("no leader".into()))
    }));
    let (result, _) = run_until(config(&cluster, "unavailable"), &probe, |_| false).await;
    match result {
        Err(EngineError::Interrupted(message)) => assert!(message.contains("no leader"), "{message}"),
        other => panic!("expected an interrupted stop, got {other:?}"),
    }
    assert!(asked.load(Ordering::Relaxed) >= 2, "asked again before interrupting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_lane_is_not_fed_and_the_poll_loop_keeps_turning() {
    let cluster = cluster();
    let probe = Arc::new(Probe::new(|_| Ok(StartAt::Committed)));
    probe.reading.store(false, Ordering::Release);
    let turns = Arc::new(Turns::default());
    let mut config = config(&cluster, "full");
    config.liveness = Some(turns.clone());
    let running = Running::start(config, &probe);
    assert!(running.wait(&probe, Probe::is_full, Duration::from_secs(30)).await, "the full lanes were reported");
    assert!(turns.ready.load(Ordering::Acquire), "ready while subscribed");
    let polls = turns.polls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(turns.polls.load(Ordering::Relaxed) > polls + 10, "the poll loop turns while the lanes are full");
    // Then the lanes read again and get everything, in order.
    probe.reading.store(true, Ordering::Release);
    running.wait(&probe, Probe::has_all, Duration::from_secs(30)).await;
    running.stop().await.0.unwrap();
    assert!(!turns.ready.load(Ordering::Acquire), "not ready once drained");
    for p in 0..PARTITIONS {
        assert_eq!(probe.seen(p), (0..RECORDS).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_that_does_not_stop_is_aborted_at_the_release_deadline() {
    let cluster = cluster();
    let mut probe = Probe::new(|_| Ok(StartAt::Committed));
    probe.ignore_stop = true;
    let probe = Arc::new(probe);
    let mut config = config(&cluster, "deadline");
    config.release_timeout = Duration::from_millis(500);
    let running = Running::start(config, &probe);
    // Lanes are running once records stop flowing into them (their queues fill up).
    assert!(running.wait(&probe, Probe::is_full, Duration::from_secs(30)).await, "the lanes were assigned");
    let (result, stopping) = running.stop().await;
    result.unwrap();
    // One deadline for the whole release (both lanes), plus leaving the group.
    assert!(stopping < Duration::from_secs(5), "released in {stopping:?}");
    assert_eq!(probe.released(), [0, 1], "the handler still releases an aborted lane");
    assert_eq!(probe.running_when_leaving.load(Ordering::Acquire), 0, "aborted before the handler was told it leaves");
    assert_eq!(committed(&cluster, "deadline")[&0], Offset::Invalid, "nothing acknowledged, nothing committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_that_ends_while_assigned_stops_the_engine() {
    let cluster = cluster();
    let mut probe = Probe::new(|_| Ok(StartAt::Committed));
    probe.return_at_once = true;
    let probe = Arc::new(probe);
    let (result, _) = run_until(config(&cluster, "ended"), &probe, |_| false).await;
    match result {
        Err(EngineError::Fatal(message)) => assert!(message.contains("stopped"), "{message}"),
        other => panic!("expected a fatal stop, got {other:?}"),
    }
}

/// The release deadline is a tokio timer: on paused time, an hour-long deadline passes as soon as
/// the clock is advanced past it, and the aborted lanes are still released through the handler.
#[tokio::test(start_paused = true)]
async fn the_release_deadline_is_kept_on_tokio_time() {
    let cluster = cluster();
    let mut probe = Probe::new(|_| Ok(StartAt::Committed));
    probe.ignore_stop = true;
    let probe = Arc::new(probe);
    let mut config = config(&cluster, "paused");
    config.release_timeout = Duration::from_secs(3600);
    let running = Running::start(config, &probe);
    // A running engine inhibits auto-advance: the test moves the clock itself.
    assert!(running.wait(&probe, Probe::is_full, Duration::from_secs(30)).await, "the lanes were assigned");
    running.shutdown.cancel();
    let stopping = Instant::now();
    while !running.engine.is_finished() && stopping.elapsed() < Duration::from_secs(30) {
        tokio::time::advance(Duration::from_secs(60)).await;
        real_sleep(Duration::from_millis(20)).await;
    }
    assert!(running.engine.is_finished(), "an hour of paused time ends the release");
    running.stop().await.0.unwrap();
    assert_eq!(probe.released(), [0, 1]);
}

/// The lag is measured on tokio time too: nothing before the interval has passed, then each
/// lane's distance from its partition's end, from the acknowledged offsets.
#[tokio::test(start_paused = true)]
async fn each_lanes_lag_is_reported_every_interval_from_its_acknowledged_offset() {
    let cluster = cluster();
    let mut probe = Probe::new(|_| Ok(StartAt::Committed));
    probe.ack_below.insert(0, 60);
    let probe = Arc::new(probe);
    let mut config = config(&cluster, "lag");
    config.lag_interval = Some(Duration::from_secs(3600));
    let running = Running::start(config, &probe);
    assert!(running.wait(&probe, Probe::has_all, Duration::from_secs(30)).await, "every record was seen");
    assert!(probe.lags.lock().unwrap().is_empty(), "no lag before the interval has passed");
    // Each interval asks the broker for both ends (a first answer may take longer than the
    // engine waits for it: that partition is then reported at the next interval).
    let both = |p: &Probe| p.lags.lock().unwrap().len() == PARTITIONS as usize;
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(3601)).await;
        if running.wait(&probe, both, Duration::from_secs(3)).await {
            break;
        }
    }
    assert!(both(&probe), "both lanes' lag reported");
    running.stop().await.0.unwrap();
    // Partition 0 acknowledged offsets 0..=59 of 100; partition 1 all of them.
    assert_eq!(*probe.lags.lock().unwrap(), BTreeMap::from([(0, RECORDS - 60), (1, 0)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_is_told_it_is_leaving_once_every_lane_is_released() {
    let cluster = cluster();
    let probe = Arc::new(Probe::new(|_| Ok(StartAt::Committed)));
    assert_eq!(probe.running_when_leaving.load(Ordering::Acquire), -1);
    let (result, _) = run_until(config(&cluster, "leaving"), &probe, Probe::has_all).await;
    result.unwrap();
    assert_eq!(probe.released(), [0, 1]);
    assert_eq!(probe.running_when_leaving.load(Ordering::Acquire), 0, "told after every lane ended");
    // Offsets stored at the release are still committed as the member leaves.
    assert_eq!(committed(&cluster, "leaving")[&0], Offset::Offset(RECORDS));
}
