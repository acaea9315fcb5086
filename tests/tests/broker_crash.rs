//! Brokers killed with SIGKILL mid-run. A single broker killed and started again on its log
//! directory (an outage), and each node of a three-node cluster killed in turn (a failover: the
//! other two elect new leaders and keep serving, replication 3, `min.insync.replicas=2`): the
//! producer library (its spool), the processor and two sinks (JSONL and PostgreSQL) recover by
//! themselves, every accepted event is stored once in each sink, and every chain is intact from
//! genesis.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, Outcome};
use audit_tests::kafka::{read_topic, PrivateBroker, PrivateCluster};
use audit_tests::pipeline::{source_offsets, terminate, verify, Topology};
use audit_tests::sinks::{spawn_sink, wait_stored, Target};
use audit_tests::stores::jsonl::JsonlTarget;
use audit_tests::stores::postgres::PostgresTarget;
use audit_tests::unique_name;
use serde_json::Value;

const PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");
const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

/// Logs events through the producer library for `run`, about `rate` a second; the ids accepted.
async fn log_for(logger: &AuditLogger, run: Duration, rate: u64, first: u64) -> Vec<String> {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / rate));
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut i = first;
    while started.elapsed() < run {
        tick.tick().await;
        let tenant = Context { tenant_id: Some(format!("tenant-{:02}", i % 12)), ..Context::default() };
        let event = AuditEventInput::new("invoice.pay", Outcome::Success, Actor::new("user", format!("u-{i}")));
        // log() never waits for the broker: while it is down, events go to the spool.
        let receipt = tokio::time::timeout(Duration::from_secs(5), logger.child(tenant).log(event))
            .await
            .expect("log does not wait for the broker")
            .expect("log accepts");
        ids.push(receipt.event_id);
        i += 1;
    }
    ids
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn stored_ids(stored: &BTreeMap<i32, Vec<Value>>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for e in stored.values().flatten() {
        *seen.entry(e["eventId"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    seen
}

/// The pipeline under test: a processor and two sinks (JSONL and PostgreSQL) on `t`'s topics.
struct Pipeline {
    processor: std::process::Child,
    targets: Vec<Box<dyn Target>>,
    sinks: Vec<audit_tests::sinks::SinkProcess>,
    logs: tempfile::TempDir,
}

impl Pipeline {
    async fn start(t: &Topology) -> Pipeline {
        let logs = tempfile::tempdir().unwrap();
        let processor = t.spawn_processor(PROCESSOR, &logs.path().join("processor.log"), &[]);
        let targets: Vec<Box<dyn Target>> =
            vec![Box::new(JsonlTarget::new()), Box::new(PostgresTarget::new(None).await)];
        let sinks = targets
            .iter()
            .map(|target| {
                let log = logs.path().join(format!("{}.log", target.name()));
                spawn_sink(SINK, target.as_ref(), &t.bootstrap, &t.processed, &unique_name("g"), &log, &[])
            })
            .collect();
        Pipeline { processor, targets, sinks, logs }
    }

    /// Every accepted event (`ids`) is in the raw topic once and chained exactly once per raw
    /// offset; each sink stored each once, every chain verifies from genesis, and nothing had to be
    /// restarted by hand.
    async fn check_and_stop(mut self, t: &Topology, ids: &[String]) -> Recoveries {
        let raw = read_topic(&t.bootstrap, &t.raw, ids.len(), Duration::from_secs(1));
        let mut raw_counts: BTreeMap<i32, i64> = BTreeMap::new();
        for r in &raw {
            *raw_counts.entry(r.partition).or_default() += 1;
        }
        assert_eq!(raw.len(), ids.len(), "the raw topic holds each accepted event once");
        let started = Instant::now();
        let processed = loop {
            let processed = t.read_processed(ids.len());
            if processed.values().map(Vec::len).sum::<usize>() >= ids.len()
                || started.elapsed() > Duration::from_secs(120)
            {
                break processed;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        for (p, n) in &raw_counts {
            let events = processed.get(p).map(Vec::as_slice).unwrap_or_default();
            let offsets = source_offsets(events);
            if offsets != (0..*n).collect::<Vec<_>>() {
                panic!(
                    "partition {p}: {} events for {n} raw records (last source offset {:?}); processor log tail:\n{}",
                    offsets.len(),
                    offsets.last(),
                    tail(&self.logs.path().join("processor.log"), 40)
                );
            }
            let report = verify(events);
            assert!(report.is_intact(), "partition {p}: {:?}", report.first_break());
        }

        for target in &self.targets {
            let stored = wait_stored(target.as_ref(), ids.len(), Duration::from_secs(120));
            let seen = stored_ids(&stored);
            let missing = ids.iter().filter(|id| !seen.contains_key(*id)).count();
            let log = self.logs.path().join(format!("{}.log", target.name()));
            assert_eq!(
                missing,
                0,
                "{}: {missing} accepted events not stored; log tail:\n{}",
                target.name(),
                tail(&log, 40)
            );
            assert_eq!(seen.len(), ids.len(), "{}: nothing but the accepted events", target.name());
            assert!(seen.values().all(|n| *n == 1), "{}: each stored once", target.name());
            for (p, events) in &stored {
                let report = verify(events);
                assert!(report.is_intact(), "{}: partition {p}: {:?}", target.name(), report.first_break());
            }
        }

        assert!(self.processor.try_wait().unwrap().is_none(), "the processor survived the broker crash");
        for sink in &mut self.sinks {
            assert!(sink.child.try_wait().unwrap().is_none(), "the sink survived the broker crash");
        }
        terminate(&self.processor);
        assert!(self.processor.wait().unwrap().success(), "the processor exits 0 on SIGTERM");
        for sink in &mut self.sinks {
            terminate(&sink.child);
            assert!(sink.child.wait().unwrap().success(), "the sink exits 0 on SIGTERM");
        }
        // Whether an outage caught deliveries in flight (then the processor started its clients
        // again in-process) or a lane's assignment found no leader for its processed tail (then it
        // asked again) depends on timing; either way nothing may be lost.
        let log = std::fs::read_to_string(self.logs.path().join("processor.log")).unwrap_or_default();
        Recoveries {
            client_restarts: log.matches("starting the Kafka clients again").count(),
            tail_retries: log.matches("the partition's start is unavailable; asking again").count(),
        }
    }
}

/// What the processor did to get through the outages, from its log.
#[derive(Debug)]
#[allow(dead_code)] // printed
struct Recoveries {
    client_restarts: usize,
    tail_retries: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_run_loses_nothing_and_every_chain_stays_intact() {
    let mut broker = PrivateBroker::start();
    let t = Topology::create_on(&broker.bootstrap(), 1, 3, None, &[], &[]).await;
    let pipeline = Pipeline::start(&t).await;

    let spool = tempfile::tempdir().unwrap();
    let logger = t.logger("crash-test", spool.path()).await;
    let mut ids = log_for(&logger, Duration::from_secs(8), 200, 0).await;
    broker.kill(); // SIGKILL: no clean shutdown, the log directory is recovered on restart
    eprintln!("broker killed after {} events", ids.len());
    ids.extend(log_for(&logger, Duration::from_secs(6), 200, ids.len() as u64).await);
    broker.restart();
    eprintln!("broker restarted after {} events", ids.len());
    ids.extend(log_for(&logger, Duration::from_secs(8), 200, ids.len() as u64).await);
    let report = logger.shutdown(Duration::from_secs(120)).await;
    assert_eq!(report.pending, 0, "the spool drained into the restarted broker: {report:?}");

    let recoveries = pipeline.check_and_stop(&t, &ids).await;
    eprintln!(
        "COUNTS: {} events accepted across a broker kill -9, each chained once and stored once in 2 sinks; the \
         processor's recoveries: {recoveries:?}",
        ids.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_of_a_three_broker_cluster_killed_in_turn_fails_over_without_loss_or_fork() {
    let mut cluster = PrivateCluster::start();
    let t = Topology::create_on(&cluster.bootstrap(), 3, 3, None, &[], &[]).await;
    let pipeline = Pipeline::start(&t).await;

    let spool = tempfile::tempdir().unwrap();
    let logger = t.logger("failover-test", spool.path()).await;
    let mut ids = log_for(&logger, Duration::from_secs(6), 200, 0).await;
    // Every node in turn, so the leaders of every partition and the active controller are each
    // killed at least once; the next kill waits until the restarted node is back in every ISR.
    for node in 0..3 {
        cluster.kill(node);
        eprintln!("node {} killed after {} events", node + 1, ids.len());
        ids.extend(log_for(&logger, Duration::from_secs(12), 200, ids.len() as u64).await);
        cluster.restart(node);
        ids.extend(log_for(&logger, Duration::from_secs(3), 200, ids.len() as u64).await);
        let caught_up = cluster.wait_fully_replicated(Duration::from_secs(120));
        eprintln!("node {} back in every ISR {caught_up:?} after its restart; {} events so far", node + 1, ids.len());
    }
    ids.extend(log_for(&logger, Duration::from_secs(4), 200, ids.len() as u64).await);
    let report = logger.shutdown(Duration::from_secs(120)).await;
    assert_eq!(report.pending, 0, "nothing left in the spool: {report:?}");

    let recoveries = pipeline.check_and_stop(&t, &ids).await;
    eprintln!(
        "COUNTS: {} events accepted while each of 3 brokers was killed with SIGKILL in turn (replication 3, \
         min.insync.replicas 2), each chained once and stored once in 2 sinks; the processor's recoveries: \
         {recoveries:?}",
        ids.len(),
    );
}
