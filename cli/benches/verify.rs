//! `auditctl verify` from a JSONL directory on one core: prints events/s (not a timed test).
//!
//! ```sh
//! cargo bench -p auditctl --bench verify        # AUDIT_BENCH_EVENTS=300000 by default
//! ```

use std::io::Write as _;
use std::time::Instant;

use audit_processor::config::ProcessorConfig;
use audit_processor::pipeline::{Pipeline, RawRecord};
use audit_schema::chain::{chain_name, ChainHead};
use auditctl::source::Location;
use auditctl::{verify, Source, Verdict, VerifyRequest};
use serde_json::json;

const PARTITIONS: i32 = 4;

// The same allocator as the auditctl binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: u64 = std::env::var("AUDIT_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let dir = tempfile::tempdir().expect("dir");
    let mut config = ProcessorConfig::default();
    config.processing.output_encoding = audit_processor::config::OutputEncoding::Json;
    let pipeline = Pipeline::new(&config.validate().expect("config"));
    let mut heads: Vec<ChainHead> = (0..PARTITIONS).map(|p| ChainHead::genesis(chain_name("audit.raw", p))).collect();
    let mut files: Vec<std::io::BufWriter<std::fs::File>> = (0..PARTITIONS)
        .map(|p| {
            let d = dir.path().join(format!("partition-{p}"));
            std::fs::create_dir_all(&d).expect("dir");
            std::io::BufWriter::new(std::fs::File::create(d.join(format!("{:020}.jsonl", 0))).expect("file"))
        })
        .collect();
    let mut bytes = 0usize;
    for i in 0..n {
        let p = (i % PARTITIONS as u64) as i32;
        let tenant = format!("tenant-{:02}", i % 16);
        let payload = serde_json::to_vec(&json!({
            "action": "billing.invoice.update", "outcome": "SUCCESS",
            "actor": {"type": "user", "id": format!("u-{}", i % 1000)},
            "target": {"type": "invoice", "id": format!("inv-{i}")},
            "context": {"tenantId": tenant, "ip": "203.0.113.7", "occurredAt": "2026-11-26T10:00:00.123Z"},
            "metadata": {"reason": "customer request", "amount": 1250.5, "note": "n".repeat(300)}
        }))
        .expect("json");
        let head = &mut heads[p as usize];
        let offset = head.seq as i64;
        let raw = RawRecord {
            topic: "audit.raw",
            partition: p,
            offset,
            timestamp_ms: Some(1_790_000_000_000 + i as i64),
            key: Some(tenant.as_bytes()),
            payload: Some(&payload),
        };
        let out = pipeline.process(&raw, head);
        // As the JSONL sink writes it: the processed JSON (RFC 8785 form) as it stands.
        let event = std::str::from_utf8(&out.encoded).expect("processed JSON");
        let line = format!("{{\"partition\":{p},\"offset\":{offset},\"event\":{event}}}");
        bytes += line.len() + 1;
        writeln!(files[p as usize], "{line}").expect("write");
    }
    for mut f in files {
        f.flush().expect("flush");
    }
    println!("verify bench: {n} events in {PARTITIONS} chains, {:.0} MB of JSONL", bytes as f64 / 1e6);

    // One core: a current-thread runtime, and the JSONL reader does its work on that thread.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for round in 1..=3 {
        let started = Instant::now();
        let report = runtime
            .block_on(verify(
                &Source::Store(Location::Jsonl(dir.path().to_owned())),
                &VerifyRequest::default(),
                &mut |_| {},
            ))
            .expect("verify");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report.verdict, Verdict::Intact);
        assert_eq!(report.events, n);
        println!(
            "round {round}: {:.0} events/s ({:.0} MB/s) on one thread",
            n as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    }
}
