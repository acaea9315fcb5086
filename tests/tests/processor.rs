//! The processor as a real process against a real broker: the whole path from the producer
//! library, dead letters, refusing a bad topology, a graceful SIGTERM, exactly-once chains under
//! repeated `kill -9`, and a lane whose deliveries are stuck. Several instances sharing the group
//! are in `processor_group.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use audit_producer::{Actor, AuditEventInput, Context, Outcome};
use audit_tests::kafka::read_topic;
use audit_tests::pipeline::{
    produce, raw_event, resume_points, source_offsets, terminate, verify, Loader, RecordParts, Topology,
};
use serde_json::{json, Value};

const PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");

/// How many raw records each partition of the raw topic holds.
fn raw_counts(t: &Topology, expected: usize) -> BTreeMap<i32, i64> {
    let mut counts = BTreeMap::new();
    for r in read_topic(&t.bootstrap, &t.raw, expected, Duration::from_secs(1)) {
        *counts.entry(r.partition).or_default() += 1;
    }
    counts
}

/// Waits until the processed topic holds `total` records (or `limit` passes).
fn wait_processed(t: &Topology, total: usize, limit: Duration) -> BTreeMap<i32, Vec<Value>> {
    let started = Instant::now();
    loop {
        let got = t.read_processed(total);
        let n: usize = got.values().map(Vec::len).sum();
        if n >= total || started.elapsed() > limit {
            return got;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Every partition holds each raw offset exactly once, in order, and its chain verifies.
fn assert_exactly_once(t: &Topology, processed: &BTreeMap<i32, Vec<Value>>, raw: &BTreeMap<i32, i64>) {
    for p in 0..t.partitions {
        let events = processed.get(&p).map(Vec::as_slice).unwrap_or_default();
        let want: Vec<i64> = (0..raw.get(&p).copied().unwrap_or(0)).collect();
        let got = source_offsets(events);
        assert_eq!(got.len(), want.len(), "partition {p}: {} events for {} raw records", got.len(), want.len());
        assert_eq!(got, want, "partition {p}: raw offsets not each present once and in order");
        let report = verify(events);
        assert!(report.is_intact(), "partition {p}: {:?}", report.first_break());
        assert_eq!(report.head.map(|h| h.seq), Some(want.len() as u64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_from_the_producer_library_redacted_chained_and_traced() {
    let t = Topology::create(3, None).await;
    let logs = tempfile::tempdir().unwrap();
    let processor = t.spawn_processor(PROCESSOR, &logs.path().join("processor.log"), &[]);

    let spool = tempfile::tempdir().unwrap();
    let logger = t.logger("billing", spool.path()).await;
    for i in 0..120 {
        let tenant = Context { tenant_id: Some(format!("tenant-{}", i % 6)), ..Context::default() };
        let mut e =
            AuditEventInput::new("billing.invoice.update", Outcome::Success, Actor::new("user", format!("u-{i}")));
        e.context.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        e.context.span_id = Some("00f067aa0ba902b7".into());
        e.metadata = Some(
            json!({"i": i, "headers": {"authorization": "Bearer s3cr3t-t0ken-value"}}).as_object().unwrap().clone(),
        );
        logger.child(tenant).log(e).await.unwrap();
    }
    assert_eq!(logger.shutdown(Duration::from_secs(30)).await.pending, 0);
    // Two records no processor can read.
    let loader_topic = t.raw.clone();
    let bootstrap = t.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let p: ThreadedProducer<DefaultProducerContext> =
            audit_kafka::ClientSettings::new(&bootstrap, "t").client_config(&[]).unwrap().create().unwrap();
        p.send(BaseRecord::to(&loader_topic).key("tenant-0").payload(&b"\xff not json"[..])).unwrap();
        p.send(
            BaseRecord::to(&loader_topic)
                .key("tenant-1")
                .payload(&br#"{"action":"x","outcome":"MAYBE","actor":{"type":"u","id":"1"}}"#[..]),
        )
        .unwrap();
        p.flush(Duration::from_secs(10)).unwrap();
    })
    .await
    .unwrap();

    let processed = wait_processed(&t, 122, Duration::from_secs(60));
    terminate(&processor);
    let status = tokio::task::spawn_blocking(move || {
        let mut processor = processor;
        processor.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        status.success(),
        "SIGTERM drains and exits 0, got {status}; log: {}",
        std::fs::read_to_string(logs.path().join("processor.log")).unwrap_or_default()
    );

    let raw = raw_counts(&t, 122);
    assert_exactly_once(&t, &processed, &raw);
    let all: Vec<&Value> = processed.values().flatten().collect();
    let regular: Vec<&&Value> = all.iter().filter(|e| e["action"] == "billing.invoice.update").collect();
    assert_eq!(regular.len(), 120);
    for e in &regular {
        assert_eq!(e["metadata"]["headers"]["authorization"], "***");
        assert_eq!(e["redaction"]["paths"], json!(["metadata.headers.authorization"]));
        assert_eq!(e["context"]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    let quarantined: Vec<&&Value> = all.iter().filter(|e| e["action"] == "audit.quarantined").collect();
    assert_eq!(quarantined.len(), 2);

    let processed_records = read_topic(&t.bootstrap, &t.processed, 122, Duration::from_secs(1));
    assert!(processed_records.iter().filter(|r| r.header("audit.event_id").is_some()).count() == 122);
    assert!(
        processed_records
            .iter()
            .any(|r| r.traceparent.as_deref() == Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")),
        "the producer's traceparent travels on"
    );
    let dead = t.read_dead_letters(2);
    assert_eq!(dead.len(), 2);
    let mut classes: Vec<&str> = dead.iter().map(|r| r.header("audit.error.class").unwrap()).collect();
    classes.sort();
    assert_eq!(classes, ["decode", "invalid"]);
    for r in &dead {
        assert_eq!(r.header("audit.source.topic"), Some(t.raw.as_str()));
        assert!(r.header("audit.error.reason").is_some_and(|s| !s.is_empty()));
        let offset: i64 = r.header("audit.source.offset").unwrap().parse().unwrap();
        let partition: i32 = r.header("audit.source.partition").unwrap().parse().unwrap();
        let q = processed[&partition].iter().find(|e| e["integrity"]["source"]["offset"] == offset).unwrap();
        assert_eq!(q["action"], "audit.quarantined", "the quarantine entry sits at the dead letter's raw offset");
        assert_eq!(q["eventId"].as_str(), r.header("audit.quarantine.event_id"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_when_raw_and_processed_partition_counts_differ() {
    let t = Topology::create(3, Some(2)).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let child = t.spawn_processor(PROCESSOR, &log, &[]);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("has 3 partitions but processed topic") && text.contains("has 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_exits_2_naming_the_key() {
    let t = Topology::create(1, None).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let child = t.spawn_processor(PROCESSOR, &log, &[("AUDIT_LIMITS__MAX_EVENT_BYTES", "12")]);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("limits.max_event_bytes"), "{text}");
}

/// Starts a processor that must stop by itself with exit code 1, logging each of `needles`.
async fn refused(t: &Topology, log: &std::path::Path, needles: &[&str]) {
    let child = t.spawn_processor(PROCESSOR, log, &[]);
    let pid = child.id().to_string();
    let waited =
        tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || child.wait_with_output()));
    let code = match waited.await {
        Ok(output) => output.unwrap().unwrap().status.code(),
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
            panic!("the processor did not stop by itself within 60 s");
        }
    };
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(code, Some(1), "{text}");
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in the log: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_when_the_processed_or_dead_letter_topic_cannot_hold_what_it_must() {
    let t = Topology::create_configured(1, None, &[("max.message.bytes", "100000")], &[]).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    // The default limit (64 KiB) plus room for the record around it does not fit in 100,000 bytes.
    let size = format!("processed topic {:?} accepts records up to 100000 bytes", t.processed);
    refused(&t, &log, &[&size, "limits.max_event_bytes = 65536"]).await;
    // A limit the topic can hold starts and processes.
    let (key, payload) = raw_event(0);
    produce(&t.bootstrap, &t.raw, 0, &[(Some(&key), &payload, &[])]);
    run_until_processed(&t, &log, &[("AUDIT_LIMITS__MAX_EVENT_BYTES", "32768")], 1);

    // A dead-letter topic too small for a dead letter's headers is refused too.
    let t = Topology::create_configured(1, None, &[], &[("max.message.bytes", "20000")]).await;
    let size = format!("dead-letter topic {:?} accepts records up to 20000 bytes", t.dead_letter);
    refused(&t, &log, &[&size, "at least 65536"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_record_too_large_for_the_dead_letter_topic_is_dead_lettered_without_its_bytes() {
    // Dead letters of up to 70,000 - 16 KiB bytes of key and payload carry them.
    let t = Topology::create_configured(1, None, &[], &[("max.message.bytes", "70000")]).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let big = vec![b'x'; 60_000];
    let (key, good) = raw_event(1);
    produce(&t.bootstrap, &t.raw, 0, &[(Some("tenant-00"), &big, &[]), (Some(&key), &good, &[])]);
    run_until_processed(&t, &log, &[], 2);

    let events = &t.read_processed(2)[&0];
    assert_eq!(events[0]["action"], "audit.quarantined");
    assert_eq!(events[0]["metadata"]["rawBytes"], 60_000);
    assert_eq!(events[1]["action"], "document.update", "the lane went on");
    assert!(verify(events).is_intact());
    let dead = t.read_dead_letters(1);
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert!(d.payload.is_empty() && d.key.is_empty(), "the bytes stay in the raw topic");
    assert!(d.header("audit.payload.omitted").is_some_and(|h| h.starts_with("60009 bytes")), "{:?}", d.headers);
    assert_eq!(d.header("audit.error.class"), Some("decode"));
    assert_eq!(d.header("audit.source.offset"), Some("0"));
}

/// The processor's events in processed partition 0 (records no processor wrote and the test's
/// damaged one left out), once `records` records are there.
fn own_events(t: &Topology, records: usize) -> Vec<Value> {
    read_topic(&t.bootstrap, &t.processed, records, Duration::from_secs(1))
        .into_iter()
        .filter(|r| r.header("audit.event_id").is_some_and(|id| id != DAMAGED))
        .map(|r| audit_schema::codec::event_value(&r.payload).expect("our events decode"))
        .collect()
}

/// The event id on the damaged record a test puts at a processed tail.
const DAMAGED: &str = "evt-damaged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_ours_unreadable_at_the_processed_tail_stops_the_processor_and_a_foreign_one_is_passed_over() {
    let t = Topology::create(1, None).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let raw: Vec<(String, Vec<u8>)> = (0..6).map(raw_event).collect();
    let send_raw = |range: std::ops::Range<usize>| {
        let records: Vec<RecordParts<'_>> =
            raw[range].iter().map(|(k, p)| (Some(k.as_str()), p.as_slice(), &[][..])).collect();
        produce(&t.bootstrap, &t.raw, 0, &records);
    };
    send_raw(0..3);
    run_until_processed(&t, &log, &[], 3);

    // Someone else's record at the tail: the chain continues from the last event before it.
    produce(&t.bootstrap, &t.processed, 0, &[(None, b"not an audit event", &[])]);
    send_raw(3..5);
    let mut child = t.spawn_processor(PROCESSOR, &log, &[]);
    let started = Instant::now();
    while own_events(&t, 6).len() < 5 && started.elapsed() < Duration::from_secs(60) {}
    terminate(&child);
    assert!(child.wait().unwrap().success());
    let events = own_events(&t, 6);
    assert_eq!(source_offsets(&events), [0, 1, 2, 3, 4]);
    assert!(verify(&events).is_intact());

    // A record marked as ours that does not read back: it may be the newest link, so the
    // processor stops instead of chaining after an older one.
    produce(&t.bootstrap, &t.processed, 0, &[(Some("tenant-00"), b"\x00damaged", &[("audit.event_id", DAMAGED)])]);
    send_raw(5..6);
    refused(&t, &log, &["was published by a processor but cannot be read back"]).await;
    assert_eq!(own_events(&t, 7).len(), 5, "nothing was chained after the damaged record");
}

/// Deterministic pseudo-random delays, so a failure can be replayed.
fn delays(seed: u64, n: usize, min_ms: u64, max_ms: u64) -> Vec<Duration> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(min_ms + x % (max_ms - min_ms))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_under_load_never_forks_skips_or_repeats_the_chain() {
    let t = Topology::create(3, None).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    // Enough load that raw batches hold many records: a restarted lane resumes from inside one.
    let loader = Loader::start(&t.bootstrap, &t.raw, 600, u64::MAX);
    let kills = 22;
    for (i, pause) in delays(0x5eed_c0ffee, kills, 6_500, 9_500).into_iter().enumerate() {
        let mut child = t.spawn_processor(PROCESSOR, &log, &[]);
        tokio::time::sleep(pause).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("kill {} of {kills} after {pause:?}", i + 1);
    }
    let sent = loader.finish();
    let mut last = t.spawn_processor(PROCESSOR, &log, &[]);
    let processed = wait_processed(&t, sent as usize, Duration::from_secs(180));
    terminate(&last);
    let status = last.wait().unwrap();
    assert!(status.success(), "final SIGTERM exits 0: {status}");

    let raw = raw_counts(&t, sent as usize);
    assert_eq!(raw.values().sum::<i64>() as u64, sent);
    assert_exactly_once(&t, &processed, &raw);
    let quarantined = processed.values().flatten().filter(|e| e["action"] == "audit.quarantined").count() as u64;
    assert_eq!(quarantined, (0..sent).filter(|i| raw_event(*i).1.starts_with(b"{\"action\": \"broken")).count() as u64);
    assert!(
        t.read_dead_letters(quarantined as usize).len() as u64 >= quarantined,
        "every dead letter reached the DLQ (at least once)"
    );
    // The kills hit a working processor: restarts resumed many chains mid-way.
    let resumed_mid_chain = resume_points(&log).into_iter().filter(|(_, seq)| *seq > 0).count();
    assert!(resumed_mid_chain >= kills, "only {resumed_mid_chain} lanes resumed mid-chain over {kills} restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cut_by_kill_9_between_produce_and_commit_stays_invisible_and_the_next_owner_continues_without_a_gap(
) {
    use audit_tests::kafka::read_topic_isolated;
    let t = Topology::create(1, None).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let uncommitted =
        |n: usize| read_topic_isolated(&t.bootstrap, &t.processed, n, Duration::from_millis(300), "read_uncommitted");
    let committed = |n: usize| read_topic(&t.bootstrap, &t.processed, n, Duration::from_millis(300));
    let batch = |from: u64| -> Vec<(String, Vec<u8>)> { (from..from + 100).map(raw_event).collect() };
    let send = |records: &[(String, Vec<u8>)]| {
        let parts: Vec<RecordParts<'_>> =
            records.iter().map(|(k, v)| (Some(k.as_str()), v.as_slice(), &[][..])).collect();
        produce(&t.bootstrap, &t.raw, 0, &parts);
    };

    // 100 raw records chained and committed; a clean stop.
    send(&batch(0));
    run_until_processed(&t, &log, &[], 100);

    // 100 more, processed by an instance whose transaction stays open for 10 s: its records reach
    // the log (a read_uncommitted reader sees them) and it is killed before it commits.
    send(&batch(100));
    let mut child = t.spawn_processor(
        PROCESSOR,
        &log,
        &[("AUDIT_KAFKA__TRANSACTION_INTERVAL_MS", "10000"), ("AUDIT_KAFKA__TRANSACTION_MAX_RECORDS", "100000")],
    );
    let started = Instant::now();
    let in_log = loop {
        let n = uncommitted(200).len();
        if n >= 200 || started.elapsed() > Duration::from_secs(8) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    child.kill().unwrap(); // SIGKILL, between produce and commit
    child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "killed before the transaction was due");
    assert!(in_log >= 200, "the uncommitted records reached the log: {in_log} records there");
    let visible = committed(100);
    assert_eq!(visible.len(), 100, "a read_committed reader sees only the committed 100");

    // The next owner aborts the open transaction, resumes from the committed tail and continues.
    run_until_processed(&t, &log, &[], 200);
    let processed = t.read_processed(200);
    let raw = raw_counts(&t, 200);
    assert_exactly_once(&t, &processed, &raw);
    assert_eq!(committed(200).len(), 200, "nothing of the aborted transaction became visible");
    assert!(
        uncommitted(300).len() >= 300,
        "the aborted records are still in the log, for read_uncommitted readers only"
    );
    let resumed: Vec<(i32, u64)> = resume_points(&log);
    assert!(
        resumed.iter().filter(|(_, seq)| *seq == 100).count() >= 2,
        "both later instances resumed at seq 100: {resumed:?}"
    );
    // What an auditor runs on the processed topic: intact, no gap.
    let source: auditctl::Source = format!("kafka://{}/{}", t.bootstrap, t.processed).parse().unwrap();
    let report = auditctl::verify(&source, &auditctl::VerifyRequest::default(), &mut |_| {}).await.unwrap();
    assert_eq!(report.verdict, auditctl::Verdict::Intact, "{:?}", report.findings().collect::<Vec<_>>());
}

/// Waits until `loader` sent everything and the processor published it, then stops the processor.
fn run_until_processed(t: &Topology, log: &std::path::Path, env: &[(&str, &str)], total: usize) {
    let mut child = t.spawn_processor(PROCESSOR, log, env);
    let got = wait_processed(t, total, Duration::from_secs(90));
    let n = got.values().map(Vec::len).sum::<usize>();
    assert_eq!(n, total, "processed everything; log: {}", std::fs::read_to_string(log).unwrap_or_default());
    terminate(&child);
    assert!(child.wait().unwrap().success(), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_checkpoints_follow_their_events_reach_both_witnesses_and_a_restart_resumes_past_them() {
    use audit_schema::checkpoint::{Checkpoint, SigningKey, RECORD_CHECKPOINT, RECORD_HEADER};
    let t = Topology::create(2, None).await;
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[9; 32]);
    let key_file = dir.path().join("checkpoint.key");
    std::fs::write(&key_file, key.to_hex()).unwrap();
    let witness_file = dir.path().join("witness").join("checkpoints.jsonl");
    let receiver = audit_tests::http_receiver::Receiver::start();
    receiver.state().authorization = Some("Bearer witness-token".into());
    let (key_path, witness_path, url) =
        (key_file.display().to_string(), witness_file.display().to_string(), receiver.url("/witness/checkpoints"));
    let env = [
        ("AUDIT_CHECKPOINT__SIGNING_KEY_FILE", key_path.as_str()),
        ("AUDIT_CHECKPOINT__EVERY_EVENTS", "40"),
        ("AUDIT_CHECKPOINT__EVERY_MS", "600000"),
        ("AUDIT_CHECKPOINT__WITNESS_FILE", witness_path.as_str()),
        ("AUDIT_CHECKPOINT__WITNESS_URL", url.as_str()),
        ("AUDIT_CHECKPOINT__WITNESS_TOKEN_ENV", "AUDIT_TEST_WITNESS_TOKEN"),
        ("AUDIT_TEST_WITNESS_TOKEN", "witness-token"),
    ];
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    let first = Loader::start(&t.bootstrap, &t.raw, 2000, 200).wait();
    run_until_processed(&t, &log, &env, first as usize);
    // The second run starts with a checkpoint record at the tail of every partition.
    let second = Loader::start(&t.bootstrap, &t.raw, 2000, 100).wait();
    run_until_processed(&t, &log, &env, (first + second) as usize);

    let records = read_topic(&t.bootstrap, &t.processed, (first + second) as usize + 4, Duration::from_secs(2));
    let mut by_partition: BTreeMap<i32, Vec<&audit_tests::kafka::Record>> = BTreeMap::new();
    for r in &records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut published = Vec::new();
    for (p, mut records) in by_partition {
        records.sort_by_key(|r| r.offset);
        // seq -> (offset of its event, hash)
        let mut events: BTreeMap<u64, (i64, String)> = BTreeMap::new();
        let mut signed = Vec::new();
        for r in &records {
            if r.header(RECORD_HEADER) == Some(RECORD_CHECKPOINT) {
                let c = Checkpoint::from_json(&r.payload).expect("a checkpoint record holds a checkpoint");
                key.public().verify(&c).expect("signed by the processor's key");
                let (event_offset, hash) = events.get(&c.seq).expect("the covered event came before its checkpoint");
                assert!(*event_offset < r.offset);
                assert_eq!(*hash, c.hash, "partition {p}: the checkpoint signs the event's hash");
                signed.push(c.seq);
                published.push(c);
            } else {
                let e = audit_schema::codec::event_value(&r.payload).unwrap();
                let seq = e["integrity"]["seq"].as_u64().unwrap();
                events.insert(seq, (r.offset, e["integrity"]["hash"].as_str().unwrap().to_owned()));
            }
        }
        let head = *events.keys().last().unwrap();
        // A lane's release signs its head again as `final` even when a periodic checkpoint signed it.
        assert!(signed.windows(2).all(|w| w[0] <= w[1]), "partition {p}: checkpoints in seq order: {signed:?}");
        assert_eq!(signed.last(), Some(&head), "partition {p}: the final head is signed");
        // The head the first run left behind was signed when its lane was released.
        for (_, resumed) in resume_points(&log).into_iter().filter(|(q, s)| *q == p && *s > 0) {
            assert!(signed.contains(&resumed), "partition {p}: head {resumed} of the first run signed: {signed:?}");
        }
        // Besides those, one every 40 events or so (a due head is signed once it is delivered).
        assert!(signed.len() as u64 > head / 80, "partition {p}: {signed:?} for {head} events");
    }
    // The chains continue across the restart as if no checkpoint record were there.
    let processed = t.read_processed((first + second) as usize);
    assert_exactly_once(&t, &processed, &raw_counts(&t, (first + second) as usize));

    let witnessed: Vec<Checkpoint> = std::fs::read_to_string(&witness_file)
        .unwrap()
        .lines()
        .map(|l| Checkpoint::from_json(l.as_bytes()).unwrap())
        .collect();
    let key_of = |c: &Checkpoint| (c.chain.clone(), c.seq, c.signature.clone());
    let mut want: Vec<_> = published.iter().map(key_of).collect();
    want.sort();
    let mut got: Vec<_> = witnessed.iter().map(key_of).collect();
    got.sort();
    assert_eq!(got, want, "the witness file holds every published checkpoint");
    let posted: Vec<Checkpoint> =
        receiver.state().posted.iter().map(|v| serde_json::from_value(v.clone()).unwrap()).collect();
    let mut got: Vec<_> = posted.iter().map(key_of).collect();
    got.sort();
    assert_eq!(got, want, "the HTTP witness received every published checkpoint, with its token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_whose_deliveries_are_stuck_leaves_its_partition_unread_stays_in_the_group_and_loses_nothing() {
    // A broker of its own: the stall is a produce quota on the processor's client id.
    let broker = audit_tests::kafka::PrivateBroker::start();
    let t = Topology::create_on(&broker.bootstrap(), 1, 2, None, &[], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("processor.log");
    // A small producer queue, so that stuck deliveries fill it (and then the lane) within seconds.
    let config = dir.path().join("processor.toml");
    std::fs::write(&config, "[kafka.librdkafka]\n\"queue.buffering.max.kbytes\" = \"128\"\n").unwrap();
    let config = config.display().to_string();
    // `idempotent`: the property here is the lane engine's (a stuck lane stays in the group), and
    // an idempotent producer waits for a stuck delivery as long as it takes. In `exactly_once` a
    // delivery cannot outlive the transaction (`transaction.timeout.ms`, 60 s): when the broker
    // holds produce answers back that long (it did on a loaded machine: throttling continued well
    // after the 15 s quota), the transaction is aborted and the clients start again from the
    // committed tail, a rejoin by design (`a_transaction_cut_by_kill_9_...` and the group test
    // cover that path).
    let mut processor = t.spawn_processor(
        PROCESSOR,
        &log,
        &[("AUDIT_CONFIG", config.as_str()), ("AUDIT_KAFKA__PROCESSING_GUARANTEE", "idempotent")],
    );
    let loader = Loader::start(&t.bootstrap, &t.raw, 1_000, 25_000);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // 1 KiB/s for the processor's produce requests: the broker holds their answers back for
    // seconds at a time (deliveries stuck), while it, and so the group coordinator, answers the
    // processor's consumer as usual.
    broker.set_producer_quota("audit-processor", Some(1024));
    tokio::time::sleep(Duration::from_secs(15)).await;
    broker.set_producer_quota("audit-processor", None);
    let sent = tokio::task::spawn_blocking(move || loader.wait()).await.unwrap();
    let processed = wait_processed(&t, sent as usize, Duration::from_secs(120));
    assert!(processor.try_wait().unwrap().is_none(), "the processor kept running");
    terminate(&processor);
    assert!(processor.wait().unwrap().success(), "SIGTERM exits 0");

    let text = std::fs::read_to_string(&log).unwrap();
    let unread = text.matches("leaving the partition unread").count();
    assert!(unread >= 1, "a stuck lane's partition was left unread: {text}");
    // Each lane started once: the instance never lost its partitions (no rebalance).
    assert_eq!(resume_points(&log).len(), t.partitions as usize, "{text}");
    assert_exactly_once(&t, &processed, &raw_counts(&t, sent as usize));
    eprintln!(
        "COUNTS: {sent} raw records; {unread} stuck lanes left unread while produce answers were held back for 15 s; \
         each raw offset chained once"
    );
}
