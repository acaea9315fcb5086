//! PostgreSQL-specific behaviour of the sink: a database outage in the middle of a run loses
//! nothing (the lane pauses and retries, the circuit opens, the process stays up), and a row the
//! database refuses is isolated from its batch and dead-lettered while its neighbours are stored.

use std::time::Duration;

use audit_tests::kafka::read_topic;
use audit_tests::pipeline::terminate;
use audit_tests::sinks::{http_get, metric, spawn_sink, wait_stored, Processed, Target};
use audit_tests::stores::postgres::PostgresTarget;
use audit_tests::stores::postgres::PrivatePostgres;
use audit_tests::unique_name;
use serde_json::Value;

const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

fn ids(target: &dyn Target) -> Vec<String> {
    let mut ids: Vec<String> =
        target.read_back().values().flatten().map(|e| e["eventId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn published_ids(p: &Processed) -> Vec<String> {
    let mut ids: Vec<String> =
        p.published.values().flatten().map(|e| e["eventId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_run_loses_nothing_once_it_recovers() {
    let server = tokio::task::spawn_blocking(PrivatePostgres::start).await.unwrap();
    let target = PostgresTarget::new(Some(&server.url())).await;
    let mut processed = Processed::create(2).await;
    processed.publish(100);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, &target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    assert_eq!(wait_stored(&target, 100, Duration::from_secs(60)).values().map(Vec::len).sum::<usize>(), 100);

    server.stop();
    processed.publish(200);
    // The sink keeps failing, backs off and opens its circuit; it does not exit.
    let mut retries = 0.0;
    for _ in 0..150 {
        let body = http_get(sink.port, "/metrics").unwrap_or_default();
        retries = metric(&body, "audit_sink_retries_total");
        if retries >= 3.0 && metric(&body, "audit_sink_circuit_open") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        retries >= 3.0,
        "writes are retried while the database is down ({retries}); log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(sink.child.try_wait().unwrap().is_none(), "the sink stays up during the outage");

    server.start_server();
    wait_stored(&target, 300, Duration::from_secs(60));
    assert_eq!(ids(&target), published_ids(&processed), "every event once after the outage");
    let body = http_get(sink.port, "/metrics").unwrap_or_default();
    assert_eq!(metric(&body, "audit_sink_circuit_open"), 0.0, "the circuit closes again");
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_isolated_and_dead_lettered() {
    let target = PostgresTarget::new(None).await;
    let mut processed = Processed::create(1).await;
    processed.publish(30);
    // PostgreSQL's jsonb refuses \u0000: this event can never be stored there. (The processor
    // never emits one; the sink must still cope.)
    let mut refused = processed.published[&0][5].clone();
    refused["eventId"] = Value::String("refused-event".into());
    refused["metadata"] = serde_json::json!({"note": "a\u{0}b"});
    processed.publish_bytes(0, &serde_json::to_vec(&refused).unwrap());
    processed.publish(30);
    let group = unique_name("g");
    let logs = tempfile::tempdir().unwrap();
    let mut sink = spawn_sink(
        SINK,
        &target,
        &processed.bootstrap,
        &processed.topic,
        &group,
        &logs.path().join("sink.log"),
        &[("AUDIT_BATCH__MAX_WAIT_MS", "500")],
    );
    wait_stored(&target, 60, Duration::from_secs(60));
    assert_eq!(ids(&target), published_ids(&processed), "its 60 neighbours are stored");
    let dead = read_topic(&processed.bootstrap, &format!("{}.dlq.{group}", processed.topic), 1, Duration::from_secs(1));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("audit.error.class"), Some("poison"));
    assert!(
        dead[0].header("audit.error.reason").unwrap().contains("SQLSTATE 22"),
        "{:?}",
        dead[0].header("audit.error.reason")
    );
    assert_eq!(dead[0].header("audit.source.offset"), Some("30"));
    terminate(&sink.child);
    sink.child.wait().unwrap();
}
