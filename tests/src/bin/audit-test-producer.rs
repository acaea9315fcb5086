//! A producing process for the crash tests: logs events through `audit-producer` in Queue mode and
//! prints `OK <eventId>` for each accepted one, then `DONE`. With `AUDIT_TEST_FLUSH_SECS` > 0 it then
//! flushes, prints `REPORT pending=N delivered=N` and exits; otherwise it waits to be killed.
//!
//! Environment: `AUDIT_KAFKA_BOOTSTRAP`, `AUDIT_TEST_TOPIC`, `AUDIT_TEST_SPOOL`, `AUDIT_TEST_COUNT`,
//! `AUDIT_TEST_FLUSH_SECS`.

use std::io::Write;
use std::time::Duration;

use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, Outcome, Target};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: u64 = env("AUDIT_TEST_COUNT").parse().expect("AUDIT_TEST_COUNT");
    let flush: u64 = std::env::var("AUDIT_TEST_FLUSH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let logger = AuditLogger::builder("crash-test")
        .brokers(env("AUDIT_KAFKA_BOOTSTRAP"))
        .topic(env("AUDIT_TEST_TOPIC"))
        .spool_dir(env("AUDIT_TEST_SPOOL"))
        .queue_max_events(50)
        .build()
        .await
        .expect("build the logger");
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        let tenant = format!("tenant-{}", i % 4);
        let audit = logger.child(Context { tenant_id: Some(tenant), ..Context::default() });
        let mut event = AuditEventInput::new("document.update", Outcome::Success, Actor::new("user", format!("u-{i}")));
        event.target = Some(Target::new("document", format!("doc-{i}")));
        match audit.log(event).await {
            Ok(receipt) => writeln!(out, "OK {}", receipt.event_id).unwrap(),
            Err(e) => writeln!(out, "ERR {e}").unwrap(),
        }
        out.flush().unwrap();
    }
    writeln!(out, "DONE").unwrap();
    out.flush().unwrap();
    if flush == 0 {
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    let report = logger.shutdown(Duration::from_secs(flush)).await;
    writeln!(out, "REPORT pending={} delivered={}", report.pending, report.delivered).unwrap();
}
