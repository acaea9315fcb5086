//! `auditctl topics create` against the test broker: the three topics with matching partition
//! counts, kept (not recreated) on a second run, and a clear refusal when an existing raw topic
//! and the processed topic disagree on partitions.

use std::process::Command;

fn topics_create(brokers: &str, raw: &str, processed: &str, dlq: &str, partitions: i32) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-test-auditctl"))
        .args(["topics", "create", "--brokers", brokers, "--replication", "1", "--partitions"])
        .arg(partitions.to_string())
        .args(["--raw", raw, "--processed", processed, "--dead-letter", dlq])
        .output()
        .expect("run auditctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn creates_matching_topics_once_and_refuses_a_partition_mismatch() {
    let brokers = audit_tests::kafka_bootstrap();
    let base = audit_tests::unique_name("topics");
    let (raw, processed, dlq) = (format!("{base}.raw"), format!("{base}.processed"), format!("{base}.dlq"));

    let (code, out, err) = topics_create(&brokers, &raw, &processed, &dlq, 4);
    assert_eq!(code, 0, "{out}{err}");
    for topic in [&raw, &processed, &dlq] {
        assert!(out.contains(&format!("created {topic} (4 partitions)")), "{out}");
    }

    let (code, out, err) = topics_create(&brokers, &raw, &processed, &dlq, 4);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("exists  {raw} (4 partitions)")), "a second run keeps them: {out}");

    // An existing 4-partition raw topic with a new 6-partition processed topic.
    let other = format!("{base}.processed-6");
    let (code, out, err) = topics_create(&brokers, &raw, &other, &dlq, 6);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("{raw} has 4 partitions but {other} has 6")), "{err}");
}
