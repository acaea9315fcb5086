//! `auditctl dlq list|replay`, `tail` and `export` as processes, against the test broker, a real
//! processor, and the stores `auditctl demo` fills.

use std::process::Command;
use std::time::{Duration, Instant};

use audit_tests::pipeline::{raw_event, terminate, Topology};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use serde_json::Value;

fn auditctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-test-auditctl")).args(args).output().expect("run auditctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn publish(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: BaseProducer =
        audit_kafka::ClientSettings::new(bootstrap, "test-raw").client_config(&[]).unwrap().create().unwrap();
    for (key, payload) in records {
        producer.send(BaseRecord::to(topic).partition(0).key(key.as_bytes()).payload(payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_dead_letter_is_listed_with_its_reason_and_a_fixed_replay_is_processed() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let topology = runtime.block_on(Topology::create(1, None));
    let (key, good) = raw_event(1);
    publish(
        &topology.bootstrap,
        &topology.raw,
        &[(key.clone(), good.clone()), (key.clone(), b"{\"action\": ".to_vec())],
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut processor = topology.spawn_processor(env!("CARGO_BIN_EXE_audit-test-processor"), log.path(), &[]);
    topology.read_processed(2);

    let brokers = topology.bootstrap.as_str();
    let (code, out, err) = auditctl(&["dlq", "list", "--brokers", brokers, "--topic", &topology.dead_letter]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().next().unwrap_or_default();
    assert!(line.starts_with("0/0 decode from ") && line.contains(&format!("{}/0/1", topology.raw)), "{out}");
    let (_, json, _) = auditctl(&["dlq", "list", "--json", "--brokers", brokers, "--topic", &topology.dead_letter]);
    let letter: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(letter["headers"]["audit.source.offset"], "1");
    assert_eq!(letter["key"], key.as_str());

    // The fixed record goes back to the raw topic with its key, and is processed as new input.
    let fixed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(fixed.path(), &good).unwrap();
    let (code, out, err) = auditctl(&[
        "dlq",
        "replay",
        "--brokers",
        brokers,
        "--topic",
        &topology.dead_letter,
        "--record",
        "0/0",
        "--payload",
        fixed.path().to_str().unwrap(),
        "--raw-topic",
        &topology.raw,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("to {}/0/2", topology.raw)), "{out}");
    let processed = topology.read_processed(3);
    let events = &processed[&0];
    assert_eq!(events.len(), 3, "event, quarantine entry, replayed event");
    assert_eq!(events[1]["action"], "audit.quarantined");
    assert_eq!(events[2]["integrity"]["source"]["offset"], 2);
    assert_eq!(events[2]["action"], events[0]["action"]);
    terminate(&processor);
    assert!(processor.wait().unwrap().success(), "the processor drains and exits cleanly");

    let (code, _, err) =
        auditctl(&["dlq", "replay", "--brokers", brokers, "--topic", &topology.dead_letter, "--record", "0/9"]);
    assert_eq!(code, 1);
    assert!(err.contains("no record at partition 0 offset 9"), "{err}");
}

#[test]
fn tail_follows_the_processed_topic_with_filters() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut processed = runtime.block_on(audit_tests::sinks::Processed::create(2));
    processed.publish(40);
    let brokers = processed.bootstrap.clone();
    let topic = processed.topic.clone();
    let started = Instant::now();
    let (code, out, err) =
        auditctl(&["tail", "--brokers", &brokers, "--topic", &topic, "--from-beginning", "--limit", "40", "--json"]);
    assert_eq!(code, 0, "{err}");
    let ids: std::collections::BTreeSet<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["eventId"].as_str().unwrap().to_owned())
        .collect();
    let published: std::collections::BTreeSet<String> =
        processed.published.values().flatten().map(|e| e["eventId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, published);
    assert!(started.elapsed() < Duration::from_secs(60));

    let tenant = processed.published[&0][0]["context"]["tenantId"].as_str().unwrap().to_owned();
    let expected =
        processed.published.values().flatten().filter(|e| e["context"]["tenantId"] == tenant.as_str()).count();
    let (code, out, _) = auditctl(&[
        "tail",
        "--brokers",
        &brokers,
        "--topic",
        &topic,
        "--from-beginning",
        "--tenant",
        &tenant,
        "--limit",
        &expected.to_string(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), expected);
    assert!(out.lines().all(|l| l.contains(&format!(" {tenant} "))), "{out}");
}

#[test]
fn export_writes_a_tenants_events_as_jsonl_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let (code, _, err) = auditctl(&["demo", "--events", "300", "--dir", demo.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let db = format!("sqlite:{}", demo.join("audit.db").display());

    let (code, jsonl, err) = auditctl(&["export", "--source", &db, "--tenant", "acme"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.len() >= 50, "acme has a sixth of 300 events: {}", events.len());
    assert!(events.iter().all(|e| e["context"]["tenantId"] == "acme"));
    // Exactly as stored: each still hashes to its recorded hash.
    for e in &events {
        assert_eq!(audit_schema::chain::hash_event_value(e).unwrap(), e["integrity"]["hash"].as_str().unwrap());
    }

    let csv_path = dir.path().join("acme.csv");
    let (code, _, err) = auditctl(&[
        "export",
        "--source",
        &format!("jsonl:{}", demo.join("jsonl").display()),
        "--tenant",
        "acme",
        "--action",
        "auth.",
        "--format",
        "csv",
        "--out",
        csv_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("eventId,occurredAt,receivedAt,tenantId,action,outcome"));
    let rows: Vec<&str> = lines.collect();
    let logins = events.iter().filter(|e| e["action"].as_str().unwrap().starts_with("auth.")).count();
    assert_eq!(rows.len(), logins);
    assert!(rows.iter().all(|r| r.contains(",acme,auth.login,")), "{csv}");

    let (code, out, _) = auditctl(&["export", "--source", &db, "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(code, 0);
    assert!(out.is_empty(), "nothing occurred after 2999");
}
