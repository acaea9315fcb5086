//! End to end with real processes: producer library → raw topic → processor → processed topic →
//! PostgreSQL, MongoDB, SQLite, JSONL and HTTP (`_bulk` to a receiver in this process) sinks, each
//! its own consumer group. 100,000 events from 16 tenants; every event is in every sink exactly once
//! and every chain verifies from every sink.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, Outcome, Target as EventTarget};
use audit_tests::pipeline::{terminate, verify, Topology};
use audit_tests::sinks::{spawn_sink, Target};
use audit_tests::stores::http::HttpTarget;
use audit_tests::stores::jsonl::JsonlTarget;
use audit_tests::stores::mongodb::MongoTarget;
use audit_tests::stores::postgres::PostgresTarget;
use audit_tests::stores::sqlite::SqliteTarget;
use audit_tests::unique_name;
use serde_json::{json, Value};

const PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");
const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");
const EVENTS: usize = 100_000;
const TENANTS: usize = 16;

fn total(stored: &BTreeMap<i32, Vec<Value>>) -> usize {
    stored.values().map(Vec::len).sum()
}

/// The last lines of every log in `dir`.
fn tails(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!(
            "== {}\n{}\n",
            entry.path().display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_every_sink_exactly_once_and_every_chain_verifies() {
    let t = Topology::create(4, None).await;
    let logs = tempfile::tempdir().unwrap();
    let mut processor = t.spawn_processor(PROCESSOR, &logs.path().join("processor.log"), &[]);

    let targets: Vec<Box<dyn Target>> = vec![
        Box::new(PostgresTarget::new(None).await),
        Box::new(MongoTarget::new()),
        Box::new(SqliteTarget::new()),
        Box::new(JsonlTarget::new()),
        Box::new(HttpTarget::new()),
    ];
    let mut sinks = Vec::new();
    for target in &targets {
        let log = logs.path().join(format!("sink-{}.log", target.name()));
        let group = unique_name(&format!("e2e-{}", target.name()));
        sinks.push(spawn_sink(
            SINK,
            target.as_ref(),
            &t.bootstrap,
            &t.processed,
            &group,
            &log,
            &[("AUDIT_BATCH__MAX_EVENTS", "2000")],
        ));
    }

    let spool = tempfile::tempdir().unwrap();
    let logger =
        AuditLogger::builder("e2e").brokers(&t.bootstrap).topic(&t.raw).spool_dir(spool.path()).build().await.unwrap();
    let tenants: Vec<AuditLogger> = (0..TENANTS)
        .map(|i| logger.child(Context { tenant_id: Some(format!("tenant-{i:02}")), ..Context::default() }))
        .collect();
    for i in 0..EVENTS {
        let mut e =
            AuditEventInput::new("document.update", Outcome::Success, Actor::new("user", format!("u-{}", i % 500)));
        e.target = Some(EventTarget::new("document", format!("doc-{i}")));
        e.metadata = Some(json!({"i": i, "token": "s3cr3t"}).as_object().unwrap().clone());
        tenants[i % TENANTS].log(e).await.unwrap();
    }
    let report = logger.shutdown(Duration::from_secs(120)).await;
    assert_eq!((report.accepted, report.pending), (EVENTS as u64, 0), "{report:?}");

    for target in &targets {
        let started = Instant::now();
        let mut stored = target.read_back();
        let mut last_report = Instant::now();
        while total(&stored) < EVENTS && started.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            stored = target.read_back();
            if last_report.elapsed() > Duration::from_secs(15) {
                eprintln!("{}: {} of {EVENTS} stored", target.name(), total(&stored));
                last_report = Instant::now();
            }
        }
        assert_eq!(
            total(&stored),
            EVENTS,
            "{}: every event exactly once; logs:\n{}",
            target.name(),
            tails(logs.path())
        );
        let mut ids: Vec<&str> = stored.values().flatten().map(|e| e["eventId"].as_str().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), EVENTS, "{}: no event twice", target.name());
        let mut tenants_seen = std::collections::BTreeSet::new();
        for (p, events) in &stored {
            let report = verify(events);
            assert!(report.is_intact(), "{}: partition {p}: {:?}", target.name(), report.first_break());
            for e in events {
                assert_eq!(e["metadata"]["token"], "***", "{}: redacted", target.name());
                tenants_seen.insert(e["context"]["tenantId"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(tenants_seen.len(), TENANTS);
    }

    for mut s in sinks {
        terminate(&s.child);
        assert!(s.child.wait().unwrap().success());
    }
    terminate(&processor);
    assert!(processor.wait().unwrap().success());
}
