//! One conformance suite, written once and run against every sink with real servers: ordering
//! within a partition and a chain that verifies when read back, a partial batch written once records
//! stop coming, duplicate deliveries absorbed, a conflicting duplicate flagged, a poison record
//! dead-lettered while the lane goes on, signed checkpoints stored beside the events (once each),
//! and `kill -9` of the sink process at random moments under load.

use std::time::Duration;

use audit_tests::kafka::read_topic;
use audit_tests::pipeline::{terminate, verify};
use audit_tests::sinks::{http_get, metric, spawn_sink, wait_stored, Processed, Target};
use audit_tests::unique_name;
use serde_json::Value;

const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

fn event_ids(stored: &std::collections::BTreeMap<i32, Vec<Value>>) -> Vec<String> {
    let mut ids: Vec<String> = stored.values().flatten().map(|e| e["eventId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// Every published event is stored exactly once, partitions keep their order, chains verify.
fn assert_stored_exactly(target: &dyn Target, processed: &Processed, log: &std::path::Path) {
    let stored = wait_stored(target, processed.total(), Duration::from_secs(90));
    let mut want: Vec<String> =
        processed.published.values().flatten().map(|e| e["eventId"].as_str().unwrap().to_owned()).collect();
    want.sort();
    let got = event_ids(&stored);
    if got != want {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        panic!(
            "{}: {} events stored for {} published (per partition {:?}); sink log tail:\n{}",
            target.name(),
            got.len(),
            want.len(),
            stored.iter().map(|(p, e)| (*p, e.len())).collect::<Vec<_>>(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    for (p, events) in &stored {
        let seqs: Vec<u64> = events.iter().map(|e| e["integrity"]["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{}: partition {p} out of order", target.name());
        let report = verify(events);
        assert!(report.is_intact(), "{}: partition {p}: {:?}", target.name(), report.first_break());
    }
}

async fn stores_in_order_and_the_chain_verifies(target: &dyn Target) {
    let mut processed = Processed::create(3).await;
    processed.publish(300);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    assert_stored_exactly(target, &processed, &log);
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success(), "SIGTERM drains and exits 0");
}

async fn absorbs_duplicate_deliveries(target: &dyn Target) {
    let mut processed = Processed::create(1).await;
    processed.publish(50);
    // The same records delivered again (a processor replay, a producer retry).
    let again: Vec<Value> = processed.published[&0].clone();
    for e in &again {
        let bytes = audit_schema::codec::encode_event_value(e, audit_schema::WireFormat::Json).unwrap();
        processed.publish_bytes(0, &bytes);
    }
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    assert_stored_exactly(target, &processed, &log);
    let mut duplicates = 0.0;
    for _ in 0..50 {
        duplicates = metric(&http_get(sink.port, "/metrics").unwrap_or_default(), "audit_sink_duplicates_total");
        if duplicates >= 50.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(duplicates, 50.0, "{}: each redelivery counted as a duplicate", target.name());
    terminate(&sink.child);
    sink.child.wait().unwrap();
}

async fn flags_a_conflicting_duplicate(target: &dyn Target) {
    let mut processed = Processed::create(1).await;
    processed.publish(10);
    let mut forged = processed.published[&0][3].clone();
    forged["action"] = Value::String("user.delete".into());
    forged["integrity"]["hash"] = Value::String("f".repeat(64));
    processed.publish_bytes(0, &serde_json::to_vec(&forged).unwrap());
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    let mut conflicts = 0.0;
    for _ in 0..150 {
        conflicts = metric(&http_get(sink.port, "/metrics").unwrap_or_default(), "audit_sink_conflicts_total");
        if conflicts >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(conflicts, 1.0, "{}: the conflict is counted", target.name());
    if let Some(kept) = target.conflicts() {
        assert_eq!(kept, 1, "{}: the conflict is kept for review", target.name());
    }
    terminate(&sink.child);
    sink.child.wait().unwrap();
}

async fn dead_letters_a_poison_record_and_the_lane_continues(target: &dyn Target) {
    let mut processed = Processed::create(1).await;
    processed.publish(20);
    processed.publish_bytes(0, b"\x00 definitely not an event");
    processed.publish(20);
    let group = unique_name("g");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &group, &log, &[]);
    assert_stored_exactly(target, &processed, &log);
    let dlq = format!("{}.dlq.{group}", processed.topic);
    let dead = read_topic(&processed.bootstrap, &dlq, 1, Duration::from_secs(1));
    assert_eq!(dead.len(), 1, "{}: the poison record is in the sink's dead-letter topic", target.name());
    assert_eq!(dead[0].header("audit.error.class"), Some("decode"));
    assert_eq!(dead[0].header("audit.source.offset"), Some("20"));
    assert_eq!(dead[0].header("audit.sink"), Some(target.name()));
    terminate(&sink.child);
    sink.child.wait().unwrap();
}

async fn writes_a_partial_batch_once_records_stop_coming(target: &dyn Target) {
    // The longest batch wait there is (60 s) against a sink that must store the 40 events (far
    // fewer than `batch.max_events`) within 30 s of starting: only a batch closed once no record
    // has come for `batch.idle_ms` can be.
    let mut processed = Processed::create(2).await;
    processed.publish(40);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let extra = [("AUDIT_BATCH__MAX_WAIT_MS", "60000"), ("AUDIT_BATCH__IDLE_MS", "10")];
    let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &extra);
    let stored = wait_stored(target, processed.total(), Duration::from_secs(30));
    assert_eq!(stored.values().map(Vec::len).sum::<usize>(), 40, "{}: stored within 30 s", target.name());
    assert_stored_exactly(target, &processed, &log);
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success());
}

async fn keeps_every_event_when_its_lane_falls_behind(target: &dyn Target) {
    // Small batches and a full backlog: the lane's queue (2 × 64 records) fills at once and stays
    // full while the lane catches up, so records keep waiting in the client between writes.
    let mut processed = Processed::create(2).await;
    processed.publish(3000);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let extra = [("AUDIT_BATCH__MAX_EVENTS", "5")];
    let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &extra);
    assert_stored_exactly(target, &processed, &log);
    let full = metric(&http_get(sink.port, "/metrics").unwrap_or_default(), "audit_sink_lane_full_total");
    assert!(full >= 1.0, "{}: the lane was full at times ({full})", target.name());
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success());
}

async fn survives_kill_9_at_random_moments_under_load(target: &dyn Target) {
    let mut processed = Processed::create(2).await;
    let group = unique_name("g");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut x: u64 = 0x9e37_79b9;
    for kill in 0..10 {
        let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &group, &log, &[]);
        processed.publish(150);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokio::time::sleep(Duration::from_millis(6_500 + x % 3_000)).await;
        sink.child.kill().unwrap();
        sink.child.wait().unwrap();
        eprintln!("{}: kill {} of 10", target.name(), kill + 1);
    }
    let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &group, &log, &[]);
    assert_stored_exactly(target, &processed, &log);
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success());
}

/// Two instances share the group under load: every few seconds one of them is killed with SIGKILL
/// and started again, so partitions move between them through session expiries and joins.
async fn two_instances_in_one_group_survive_kill_9_and_rebalances(target: &dyn Target) {
    let mut processed = Processed::create(4).await;
    let group = unique_name("g");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let (bootstrap, topic) = (processed.bootstrap.clone(), processed.topic.clone());
    let spawn = || spawn_sink(SINK, target, &bootstrap, &topic, &group, &log, &[]);
    let mut instances = [spawn(), spawn()];
    let mut x: u64 = 0x2545_f491;
    let kills = 8;
    for kill in 0..kills {
        processed.publish(150);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tokio::time::sleep(Duration::from_millis(2_500 + x % 3_000)).await;
        let victim = (x % 2) as usize;
        instances[victim].child.kill().unwrap();
        instances[victim].child.wait().unwrap();
        eprintln!("{}: kill {} of {kills} (instance {victim})", target.name(), kill + 1);
        instances[victim] = spawn();
    }
    processed.publish(150);
    assert_stored_exactly(target, &processed, &log);
    eprintln!("{}: {} events stored once by two instances through {kills} kills", target.name(), processed.total());
    for instance in &mut instances {
        terminate(&instance.child);
        assert!(instance.child.wait().unwrap().success(), "{}: SIGTERM exits 0", target.name());
    }
}

async fn stores_each_checkpoint_once_beside_the_events(target: &dyn Target) {
    let key = audit_schema::checkpoint::SigningKey::from_seed(&[7; 32]);
    let mut processed = Processed::create(2).await;
    processed.publish(40);
    processed.publish_checkpoints(&key);
    processed.publish(40);
    processed.publish_checkpoints(&key);
    // The last checkpoints delivered again (a redelivery is the same checkpoint, stored once).
    processed.publish_checkpoints(&key);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    // Checkpoints are not events: exactly the published events are stored as events.
    assert_stored_exactly(target, &processed, &log);
    // Compared in one field order (a store such as jsonb may keep its own).
    let text = |c: &Value| {
        let c: audit_schema::checkpoint::Checkpoint = serde_json::from_value(c.clone()).expect("a checkpoint");
        serde_json::to_string(&c).unwrap()
    };
    let unique: std::collections::BTreeSet<String> = processed.checkpoints.iter().map(text).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut stored = target.checkpoints();
    while stored.len() < unique.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stored = target.checkpoints();
    }
    let got: std::collections::BTreeSet<String> = stored.iter().map(text).collect();
    assert_eq!(got, unique, "{}: the stored checkpoints are the published ones", target.name());
    assert_eq!(stored.len(), unique.len(), "{}: a redelivered checkpoint is stored once", target.name());
    for c in &stored {
        let c: audit_schema::checkpoint::Checkpoint = serde_json::from_value(c.clone()).unwrap();
        key.public().verify(&c).unwrap_or_else(|e| panic!("{}: a stored checkpoint verifies: {e}", target.name()));
    }
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = metric(&http_get(sink.port, "/metrics").unwrap_or_default(), "audit_sink_checkpoints_total");
        if counted >= processed.checkpoints.len() as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counted, processed.checkpoints.len() as f64, "{}: every checkpoint record counted", target.name());
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success());
}

macro_rules! conformance {
    ($store:ident, $target:expr) => {
        mod $store {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stores_every_event_once_in_partition_order_and_the_chain_verifies() {
                stores_in_order_and_the_chain_verifies(&$target).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn absorbs_a_duplicate_delivery() {
                absorbs_duplicate_deliveries(&$target).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn flags_the_same_event_id_with_other_content() {
                flags_a_conflicting_duplicate(&$target).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letters_a_poison_record_and_keeps_going() {
                dead_letters_a_poison_record_and_the_lane_continues(&$target).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn writes_a_partial_batch_once_records_stop_coming() {
                super::writes_a_partial_batch_once_records_stop_coming(&$target).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn keeps_every_event_when_its_lane_falls_behind() {
                super::keeps_every_event_when_its_lane_falls_behind(&$target).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stores_each_signed_checkpoint_once_beside_the_events() {
                stores_each_checkpoint_once_beside_the_events(&$target).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn two_instances_in_one_group_store_everything_once_through_kill_9_and_rebalances() {
                two_instances_in_one_group_survive_kill_9_and_rebalances(&$target).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stores_everything_once_through_ten_kill_9() {
                survives_kill_9_at_random_moments_under_load(&$target).await;
            }
        }
    };
}

// One line per store (its fixture is `tests/src/stores/<kind>.rs`).
conformance!(jsonl, audit_tests::stores::jsonl::JsonlTarget::new());
conformance!(jsonl_gzip, audit_tests::stores::jsonl::JsonlTarget::gzip());
conformance!(postgres, audit_tests::stores::postgres::PostgresTarget::new(None).await);
conformance!(mongodb, audit_tests::stores::mongodb::MongoTarget::new());
conformance!(sqlite, audit_tests::stores::sqlite::SqliteTarget::new());
conformance!(http, audit_tests::stores::http::HttpTarget::new());
