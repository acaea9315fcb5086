//! Records removed from a topic (Kafka's DeleteRecords, what retention does to old segments) before
//! they were read: the processor and a sink stop with an error naming what is gone instead of
//! jumping past it; with `kafka.accept_raw_loss` / `kafka.accept_loss` they continue from the
//! earliest record, and `auditctl verify` then reports exactly the gap.

use std::process::Child;
use std::time::{Duration, Instant};

use audit_tests::kafka::delete_records;
use audit_tests::pipeline::{produce, raw_event, terminate, Topology};
use audit_tests::sinks::{spawn_sink, wait_stored, Processed, Target};
use audit_tests::stores::jsonl::JsonlTarget;
use audit_tests::unique_name;
use auditctl::source::Location;
use auditctl::{Source, Verdict, VerifyRequest};

const PROCESSOR: &str = env!("CARGO_BIN_EXE_audit-test-processor");
const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

/// Waits for `child` to exit by itself; its exit code.
async fn exit_code(child: &mut Child, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    panic!("still running after {limit:?}: it did not stop on records that are gone");
}

fn send_raw(t: &Topology, range: std::ops::Range<u64>) {
    let records: Vec<(String, Vec<u8>)> = range.map(raw_event).collect();
    let parts: Vec<_> = records.iter().map(|(k, v)| (Some(k.as_str()), v.as_slice(), &[][..])).collect();
    produce(&t.bootstrap, &t.raw, 0, &parts);
}

/// The one finding of `report`, which must be `kind` at `seq` with `detail_part` in its text.
fn the_only_finding(report: &auditctl::VerifyReport, kind: &str, seq: u64, detail_part: &str) -> String {
    let findings: Vec<_> = report.findings().map(|f| (f.kind.clone(), f.seq, f.detail.clone())).collect();
    assert_eq!(findings.len(), 1, "exactly the gap: {findings:?}");
    let (got_kind, got_seq, detail) = &findings[0];
    assert_eq!((got_kind.as_str(), *got_seq), (kind, seq), "{detail}");
    assert!(detail.contains(detail_part), "{detail}");
    assert_ne!(report.verdict, Verdict::Intact);
    format!("{kind} at seq {seq}: {detail}")
}

async fn processed_count(t: &Topology, want: usize) -> usize {
    let started = Instant::now();
    loop {
        let n = t.read_processed(want).values().map(Vec::len).sum::<usize>();
        if n >= want || started.elapsed() > Duration::from_secs(60) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_records_deleted_before_processing_stop_the_processor_unless_loss_is_accepted_and_verify_reports_the_gap() {
    let t = Topology::create(1, None).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("processor.log");
    send_raw(&t, 0..40);
    let mut first = t.spawn_processor(PROCESSOR, &log, &[]);
    assert_eq!(processed_count(&t, 40).await, 40);
    terminate(&first);
    assert!(first.wait().unwrap().success());

    // Raw offsets 40..=69 are gone before the processor reached them.
    send_raw(&t, 40..100);
    assert_eq!(delete_records(&t.bootstrap, &t.raw, 0, 70).await, 70);
    let mut refused = t.spawn_processor(PROCESSOR, &log, &[]);
    assert_eq!(exit_code(&mut refused, Duration::from_secs(60)).await, Some(1), "stops with exit 1");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("is not in the raw topic") && text.contains("kafka.accept_raw_loss"),
        "names the cause: {text}"
    );
    assert_eq!(processed_count(&t, 40).await, 40, "nothing chained past the gap");

    let mut accepting = t.spawn_processor(PROCESSOR, &log, &[("AUDIT_KAFKA__ACCEPT_RAW_LOSS", "true")]);
    assert_eq!(processed_count(&t, 70).await, 70, "continues from the earliest raw record");
    terminate(&accepting);
    assert!(accepting.wait().unwrap().success());

    let source: Source = format!("kafka://{}/{}", t.bootstrap, t.processed).parse().unwrap();
    let report = auditctl::verify(&source, &VerifyRequest::default(), &mut |_| {}).await.unwrap();
    let finding = the_only_finding(&report, "unaccounted_input", 41, "raw offsets 40..=69");
    eprintln!("COUNTS: 100 raw records, 30 deleted; 70 chained; verify: {finding}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_deleted_before_a_sink_stored_them_stop_it_unless_loss_is_accepted_and_verify_reports_the_gap() {
    let mut processed = Processed::create(1).await;
    processed.publish(100);
    let target = JsonlTarget::new();
    let group = unique_name("g");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let (bootstrap, topic) = (processed.bootstrap.clone(), processed.topic.clone());
    let mut first = spawn_sink(SINK, &target, &bootstrap, &topic, &group, &log, &[]);
    assert_eq!(wait_stored(&target, 100, Duration::from_secs(60)).values().map(Vec::len).sum::<usize>(), 100);
    terminate(&first.child);
    assert!(first.child.wait().unwrap().success(), "SIGTERM commits and exits 0");

    // Offsets 100..=149 are gone before the sink came back.
    processed.publish(100);
    assert_eq!(delete_records(&bootstrap, &topic, 0, 150).await, 150);
    let mut refused = spawn_sink(SINK, &target, &bootstrap, &topic, &group, &log, &[]);
    assert_eq!(exit_code(&mut refused.child, Duration::from_secs(60)).await, Some(1), "stops with exit 1");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("is not in the processed topic") && text.contains("kafka.accept_loss"),
        "names the cause: {text}"
    );
    assert_eq!(target.read_back().values().map(Vec::len).sum::<usize>(), 100, "nothing stored past the gap");

    let mut accepting =
        spawn_sink(SINK, &target, &bootstrap, &topic, &group, &log, &[("AUDIT_KAFKA__ACCEPT_LOSS", "true")]);
    assert_eq!(wait_stored(&target, 150, Duration::from_secs(60)).values().map(Vec::len).sum::<usize>(), 150);
    terminate(&accepting.child);
    assert!(accepting.child.wait().unwrap().success());

    let report = auditctl::verify(
        &Source::Store(Location::Jsonl(target.dir().to_owned())),
        &VerifyRequest::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    let finding = the_only_finding(&report, "missing", 101, "seqs 101..=150");
    eprintln!("COUNTS: 200 events, 50 deleted; 150 stored; verify: {finding}");
}
