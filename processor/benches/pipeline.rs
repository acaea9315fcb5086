//! The in-process pipeline on ~1 KB realistic events, one thread (not a timed test: it prints
//! figures). `cargo bench -p audit-processor --bench pipeline`
//!
//! decode (JSON) → sanitize → validate → normalize → redact → limits → chain (JCS + SHA-256) →
//! encode (Avro single-object, and JSON for comparison).

use std::time::Instant;

use audit_processor::config::{OutputEncoding, ProcessorConfig};
use audit_processor::pipeline::{Pipeline, RawRecord};
use audit_schema::chain::{chain_name, ChainHead};
use serde_json::json;

// The same allocator as the audit-processor binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn payload(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventId": format!("01JD3Z5Q7X8Y9ABCDEF{i:07}"),
        "schemaVersion": 1,
        "action": "billing.invoice.update",
        "outcome": if i.is_multiple_of(10) { "DENIED" } else { "SUCCESS" },
        "actor": {"type": "user", "id": format!("user-{}", i % 1000), "name": "Ada Lovelace", "roles": ["billing", "admin"]},
        "target": {"type": "invoice", "id": format!("inv-{i}")},
        "context": {
            "tenantId": format!("tenant-{:02}", i % 16), "requestId": format!("req-{i:012}"), "sessionId": "sess-7f3a9c",
            "ip": "203.0.113.7", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
            "occurredAt": "2026-11-26T10:00:00.123Z", "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
            "service": "billing-api", "environment": "production"
        },
        "metadata": {
            "reason": "customer request", "amount": 1250.5, "currency": "EUR",
            "headers": {"authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.abc", "x-request-id": "r-1"},
            "callback": "https://api.example.com/hook?token=abcdef123456&x=1"
        },
        "diff": {"before": {"status": "draft", "total": 100, "lines": [1, 2]}, "after": {"status": "sent", "total": 120, "lines": [1, 2, 3]}},
        "producer": {"id": "billing-api-01jd3z5q7x8y9abcdefghjkmnp", "seq": i + 1}
    }))
    .expect("json")
}

fn run(encoding: OutputEncoding, payloads: &[Vec<u8>]) -> f64 {
    let mut config = ProcessorConfig::default();
    config.processing.output_encoding = encoding;
    let pipeline = Pipeline::new(&config.validate().expect("valid config"));
    let mut head = ChainHead::genesis(chain_name("audit.raw", 0));
    let started = Instant::now();
    let mut bytes = 0usize;
    for (i, p) in payloads.iter().enumerate() {
        let raw = RawRecord {
            topic: "audit.raw",
            partition: 0,
            offset: i as i64,
            timestamp_ms: Some(1_790_000_000_000 + i as i64),
            key: Some(b"tenant-01"),
            payload: Some(p),
        };
        let out = pipeline.process(&raw, &mut head);
        assert!(out.dead_letter.is_none());
        bytes += out.encoded.len();
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = payloads.len() as f64 / secs;
    println!(
        "{encoding:?} output: {:.0} events/s on one core ({:.2} µs/event), {} bytes/event out",
        rate,
        secs * 1e6 / payloads.len() as f64,
        bytes / payloads.len()
    );
    rate
}

fn main() {
    let n: usize = std::env::var("AUDIT_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let payloads: Vec<Vec<u8>> = (0..n).map(payload).collect();
    let avg = payloads.iter().map(Vec::len).sum::<usize>() / n;
    println!("processor pipeline bench: {n} raw events of {avg} bytes (JSON), redaction on (3 secrets per event)");
    // AUDIT_BENCH_OUTPUT=avro|json measures one encoding only (for profiling).
    let only = std::env::var("AUDIT_BENCH_OUTPUT").unwrap_or_default();
    run(OutputEncoding::Json, &payloads[..n / 10]); // warm-up
    if only != "json" {
        run(OutputEncoding::Avro, &payloads);
    }
    if only != "avro" {
        run(OutputEncoding::Json, &payloads);
    }
}
