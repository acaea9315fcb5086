//! `audit-producer` against a real broker: each mode, validation errors, the size limit, a broker
//! outage while logging, and the spool replaying after `kill -9` of the producing process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use audit_producer::partition::partition_for_key;
use audit_producer::spool::FailedLog;
use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, LogError, Mode, Outcome, Target};
use audit_schema::{codec, AuditEventInput as Input, ValidationOptions};
use audit_tests::kafka::{create_topic, read_shared_topic, read_topic, topic_name, PrivateBroker, Record};
use audit_tests::kafka_bootstrap;
use serde_json::json;

fn event(i: usize) -> AuditEventInput {
    let mut e = AuditEventInput::new("invoice.update", Outcome::Success, Actor::new("user", format!("u-{i}")));
    e.target = Some(Target::new("invoice", format!("inv-{i}")));
    e.metadata = Some(json!({"i": i, "note": "x".repeat(600)}).as_object().unwrap().clone());
    e
}

fn tenant(t: usize) -> Context {
    Context { tenant_id: Some(format!("tenant-{t}")), ..Context::default() }
}

fn decode(r: &Record) -> Input {
    codec::decode_input(&r.payload, ValidationOptions::STRICT).expect("a valid event on the topic").event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_delivers_every_event_keyed_by_tenant_in_order() {
    let topic = create_topic(&kafka_bootstrap(), 4, &[]).await;
    let spool = tempfile::tempdir().unwrap();
    let logger = AuditLogger::builder("billing-api")
        .brokers(kafka_bootstrap())
        .topic(&topic)
        .environment("test")
        .spool_dir(spool.path())
        .build()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..200 {
        let mut e = event(i);
        if i % 10 == 0 {
            e.context.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
            e.context.span_id = Some("00f067aa0ba902b7".into());
        }
        let r = logger.child(tenant(i % 5)).log(e).await.unwrap();
        assert_eq!(r.seq, i as u64 + 1);
        ids.push(r.event_id);
    }
    let report = logger.shutdown(Duration::from_secs(30)).await;
    assert_eq!((report.accepted, report.delivered, report.pending), (200, 200, 0), "{report:?}");

    let records = read_shared_topic(&topic, 200);
    assert_eq!(records.len(), 200, "each event exactly once");
    let mut seqs_by_tenant: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &records {
        let e = decode(r);
        let tenant = e.context.tenant_id.clone().unwrap();
        assert_eq!(r.key, tenant, "keyed by tenant");
        assert_eq!(r.partition, partition_for_key(tenant.as_bytes(), 4), "the Java client's partition");
        assert_eq!(e.context.service.as_deref(), Some("billing-api"));
        assert_eq!(e.context.environment.as_deref(), Some("test"));
        assert!(e.context.occurred_at.is_some());
        let producer = e.producer.clone().unwrap();
        assert_eq!(producer.id, logger.producer_id());
        if e.context.trace_id.is_some() {
            assert_eq!(r.traceparent.as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        }
        seqs_by_tenant.entry(tenant).or_default().push(producer.seq);
    }
    for (tenant, seqs) in &seqs_by_tenant {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{tenant} out of order: {seqs:?}");
    }
    let got: HashSet<String> = records.iter().map(|r| decode(r).event_id.unwrap()).collect();
    assert_eq!(got, ids.into_iter().collect());
    assert_eq!(
        std::fs::read_dir(spool.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "spool")
                && e.as_ref().unwrap().metadata().unwrap().len() > 0)
            .count(),
        0,
        "acknowledged segments are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_mode_returns_where_each_event_was_stored() {
    let topic = create_topic(&kafka_bootstrap(), 2, &[]).await;
    let logger =
        AuditLogger::builder("auth").brokers(kafka_bootstrap()).topic(&topic).mode(Mode::Block).build().await.unwrap();
    let mut stored = HashMap::new();
    for i in 0..10 {
        let r = logger.child(tenant(i)).log(event(i)).await.unwrap();
        let at = r.delivered.expect("Block mode reports the delivery");
        stored.insert((at.partition, at.offset), r.event_id);
    }
    let records = read_shared_topic(&topic, 10);
    assert_eq!(records.len(), 10);
    for r in &records {
        assert_eq!(stored.get(&(r.partition, r.offset)), decode(r).event_id.as_ref());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_confirmed_in_queue_mode_reports_the_offset() {
    let topic = create_topic(&kafka_bootstrap(), 1, &[]).await;
    let spool = tempfile::tempdir().unwrap();
    let logger = AuditLogger::builder("auth")
        .brokers(kafka_bootstrap())
        .topic(&topic)
        .spool_dir(spool.path())
        .build()
        .await
        .unwrap();
    let first = logger.log_confirmed(event(1)).await.unwrap();
    let second = logger.log_confirmed(event(2)).await.unwrap();
    assert_eq!(first.delivered.unwrap().offset + 1, second.delivered.unwrap().offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mode_refuses_counts_and_tells_the_caller_when_the_queue_is_full() {
    // Nothing listens on the broker port, so nothing leaves the bounded queue.
    let nowhere = format!("127.0.0.1:{}", audit_tests::kafka::free_port());
    let registry = prometheus::Registry::new();
    let logger = AuditLogger::builder("web")
        .brokers(nowhere)
        .topic(topic_name())
        .mode(Mode::Drop)
        .queue_max_events(10)
        .metrics_registry(registry.clone())
        .build()
        .await
        .unwrap();
    let mut dropped = 0;
    for i in 0..25 {
        match logger.log(event(i)).await {
            Ok(_) => {}
            Err(LogError::Dropped) => dropped += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(dropped, 15);
    let counted = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == audit_producer::metrics::EVENTS_DROPPED)
        .map(|f| f.get_metric()[0].get_counter().get_value())
        .unwrap();
    assert_eq!(counted, 15.0);
    let report = logger.shutdown(Duration::from_millis(200)).await;
    assert_eq!(
        (report.accepted, report.dropped, report.pending, report.pending_in_spool),
        (10, 15, 10, false),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_rejected_naming_the_field_and_identifier_actions_warn() {
    let topic = create_topic(&kafka_bootstrap(), 1, &[]).await;
    let spool = tempfile::tempdir().unwrap();
    let logger = AuditLogger::builder("auth")
        .brokers(kafka_bootstrap())
        .topic(&topic)
        .spool_dir(spool.path())
        .build()
        .await
        .unwrap();

    let mut bad = event(1);
    bad.actor.id = String::new();
    bad.context.ip = Some("not-an-ip".into());
    let err = logger.log(bad).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LogError::Invalid { .. }), "{text}");
    assert!(text.contains("actor.id") && text.contains("context.ip"), "{text}");

    let mut uuid_action = event(2);
    uuid_action.action = "user.550e8400-e29b-41d4-a716-446655440000.login".into();
    let receipt = logger.log(uuid_action.clone()).await.unwrap();
    assert_eq!(receipt.warnings[0].path, "action");
    assert_eq!(receipt.seq, 1, "a rejected event takes no sequence number");

    let strict = AuditLogger::builder("auth2")
        .brokers(kafka_bootstrap())
        .topic(&topic)
        .spool_dir(spool.path().join("strict"))
        .strict_action_naming(true)
        .build()
        .await
        .unwrap();
    let err = strict.log(uuid_action).await.unwrap_err();
    assert!(err.to_string().contains("action"), "{err}");
    logger.shutdown(Duration::from_secs(10)).await;
    strict.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_fails_at_build_naming_the_key() {
    let err = AuditLogger::builder("svc").brokers(kafka_bootstrap()).librdkafka("acks", "1").build().await.unwrap_err();
    assert!(err.to_string().contains("librdkafka.acks"), "{err}");
    let err =
        AuditLogger::builder("svc").brokers(kafka_bootstrap()).topic("no spaces allowed").build().await.unwrap_err();
    assert!(err.to_string().contains("topic"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_event_is_an_error_before_anything_is_sent() {
    let topic = create_topic(&kafka_bootstrap(), 1, &[("max.message.bytes", "4096")]).await;
    let spool = tempfile::tempdir().unwrap();
    let logger = AuditLogger::builder("files")
        .brokers(kafka_bootstrap())
        .topic(&topic)
        .spool_dir(spool.path())
        .build()
        .await
        .unwrap();
    assert!(logger.max_event_bytes() < 4096, "the topic's limit is used: {}", logger.max_event_bytes());

    let mut big = event(1);
    big.metadata = Some(json!({"blob": "y".repeat(8000)}).as_object().unwrap().clone());
    match logger.log(big).await {
        Err(LogError::Oversize { bytes, limit }) => assert!(bytes > 8000 && limit < 4096),
        other => panic!("expected Oversize, got {other:?}"),
    }
    let small = logger.log(event(2)).await.unwrap();
    logger.shutdown(Duration::from_secs(10)).await;
    let records = read_shared_topic(&topic, 1);
    assert_eq!(records.len(), 1, "only the small event reached the topic");
    assert_eq!(decode(&records[0]).event_id, Some(small.event_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_while_logging_loses_nothing_and_keeps_order() {
    let broker = PrivateBroker::start();
    let topic = create_topic(&broker.bootstrap(), 2, &[]).await;
    let spool = tempfile::tempdir().unwrap();
    let logger = AuditLogger::builder("orders")
        .brokers(broker.bootstrap())
        .topic(&topic)
        .spool_dir(spool.path())
        .queue_max_events(20)
        .build()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(logger.child(tenant(i % 3)).log_confirmed(event(i)).await.unwrap().event_id);
    }
    broker.pause();
    // The in-memory queue fills at 20; the rest waits on disk. log() never blocks on the broker.
    for i in 50..300 {
        let r = tokio::time::timeout(Duration::from_secs(5), logger.child(tenant(i % 3)).log(event(i))).await;
        ids.push(r.expect("log does not wait for the broker").unwrap().event_id);
    }
    let during = logger.flush(Duration::from_millis(300)).await;
    assert!(during.pending > 200, "events wait while the broker is away: {during:?}");
    broker.resume();
    let report = logger.shutdown(Duration::from_secs(60)).await;
    assert_eq!(report.pending, 0, "{report:?}");

    let records = read_topic(&broker.bootstrap(), &topic, 300, Duration::from_secs(1));
    let events: Vec<Input> = records.iter().map(decode).collect();
    let distinct: HashSet<&str> = events.iter().map(|e| e.event_id.as_deref().unwrap()).collect();
    assert_eq!(distinct, ids.iter().map(String::as_str).collect(), "every accepted event arrived");
    let mut last: HashMap<String, u64> = HashMap::new();
    for e in &events {
        let seq = e.producer.as_ref().unwrap().seq;
        let prev = last.insert(e.context.tenant_id.clone().unwrap(), seq);
        assert!(prev.is_none_or(|p| p < seq), "per-tenant order kept (seq {seq} after {prev:?})");
    }
    assert!(FailedLog::read_all(spool.path()).unwrap().is_empty());
}

/// Reads `OK <id>` lines from a producing child until `DONE`.
fn accepted_ids(child: &mut std::process::Child) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut ids = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line == "DONE" {
            break;
        }
        let id = line.strip_prefix("OK ").unwrap_or_else(|| panic!("child: {line}"));
        ids.push(id.to_owned());
    }
    ids
}

fn producing_child(
    bootstrap: &str,
    topic: &str,
    spool: &std::path::Path,
    count: u64,
    flush_secs: u64,
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_audit-test-producer"))
        .env("AUDIT_KAFKA_BOOTSTRAP", bootstrap)
        .env("AUDIT_TEST_TOPIC", topic)
        .env("AUDIT_TEST_SPOOL", spool)
        .env("AUDIT_TEST_COUNT", count.to_string())
        .env("AUDIT_TEST_FLUSH_SECS", flush_secs.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_with_the_broker_down_every_accepted_event_reaches_the_topic() {
    let mut broker = PrivateBroker::start();
    let bootstrap = broker.bootstrap();
    let topic = topic_name();
    broker.kill();
    let spool = tempfile::tempdir().unwrap();

    let mut child = producing_child(&bootstrap, &topic, spool.path(), 400, 0);
    let ids = accepted_ids(&mut child);
    assert_eq!(ids.len(), 400, "with the broker down, log still accepts (to the spool)");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // A write torn by the crash: half a frame at the end of the newest segment.
    let mut segments: Vec<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(".spool") && !p.ends_with(FailedLog::FILE))
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"']);
    std::fs::write(newest, bytes).unwrap();

    broker.restart();
    create_topic_named(&bootstrap, &topic).await;
    let restarted = producing_child(&bootstrap, &topic, spool.path(), 0, 60);
    let output = restarted.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("REPORT pending=0"), "{report}");

    let records = read_topic(&bootstrap, &topic, ids.len(), Duration::from_secs(1));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *seen.entry(decode(r).event_id.unwrap()).or_default() += 1;
    }
    let missing: Vec<_> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} accepted events never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len(), ids.len(), "nothing but the accepted events (no garbage from the torn tail)");
}

async fn create_topic_named(bootstrap: &str, topic: &str) {
    audit_kafka::topics::create_topics(
        &audit_kafka::ClientSettings::new(bootstrap, "test-admin"),
        &[audit_kafka::topics::TopicSpec::new(topic, 2)],
    )
    .await
    .unwrap();
}
