//! Producer throughput against a real broker (not a timed test: it prints figures).
//!
//! ```sh
//! scripts/services up && eval "$(scripts/services env)"
//! cargo bench -p audit-producer            # AUDIT_BENCH_EVENTS=200000 by default
//! ```
//!
//! Prints, for ~800-byte events keyed over 16 tenants on a 6-partition topic:
//! * Queue mode: enqueue cost per event, events/s accepted by `log`, events/s delivered;
//! * Block mode: events/s with 256 concurrent callers each waiting for its acknowledgement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::ClientSettings;
use audit_producer::{Actor, AuditEventInput, AuditLogger, Context, Mode, Outcome, Target};
use serde_json::json;

fn event(i: usize) -> AuditEventInput {
    let mut e = AuditEventInput::new(
        "billing.invoice.update",
        Outcome::Success,
        Actor::new("user", format!("user-{}", i % 1000)),
    );
    e.target = Some(Target::new("invoice", format!("inv-{i}")));
    e.context = Context {
        tenant_id: Some(format!("tenant-{:02}", i % 16)),
        request_id: Some(format!("req-{i:012}")),
        ip: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36".into()),
        ..Context::default()
    };
    e.metadata = Some(
        json!({"reason": "customer request", "amount": 1250.5, "currency": "EUR", "lines": [1, 2, 3], "note": "n".repeat(240)})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    e
}

async fn topic(bootstrap: &str) -> String {
    let name = format!("bench-producer-{}", std::process::id());
    create_topics(&ClientSettings::new(bootstrap, "bench"), &[TopicSpec::new(&name, 6)]).await.expect("create topic");
    name
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap = std::env::var("AUDIT_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let n: usize = std::env::var("AUDIT_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let topic = topic(&bootstrap).await;
    let spool = tempfile::tempdir()?;
    // The size on the wire: the event as `log` enriches it.
    let mut enriched = event(0);
    enriched.event_id = Some("01JD3Z5Q7X8Y9ABCDEFGHJKMNP".into());
    enriched.schema_version = Some(1);
    enriched.context.occurred_at = Some(audit_schema::Timestamp::now());
    enriched.context.service = Some("bench".into());
    enriched.producer =
        Some(audit_schema::ProducerInfo { id: "bench-01jd3z5q7x8y9abcdefghjkmnp".into(), seq: 123_456 });
    let sample = serde_json::to_vec(&enriched)?.len();
    println!("producer bench: {n} events of {sample} bytes as sent, 16 tenants, 6 partitions, broker {bootstrap}");

    // Queue mode.
    let logger =
        AuditLogger::builder("bench").brokers(&bootstrap).topic(&topic).spool_dir(spool.path()).build().await?;
    let events: Vec<_> = (0..n).map(event).collect();
    let start = Instant::now();
    for e in events {
        logger.log(e).await?;
    }
    let accepted = start.elapsed();
    let report = logger.shutdown(Duration::from_secs(300)).await;
    let delivered = start.elapsed();
    assert_eq!(report.pending, 0, "{report:?}");
    println!(
        "queue mode: enqueue {:.2} µs/event, accepted {:.0} events/s, delivered {:.0} events/s ({} delivered)",
        accepted.as_secs_f64() * 1e6 / n as f64,
        n as f64 / accepted.as_secs_f64(),
        n as f64 / delivered.as_secs_f64(),
        report.delivered
    );

    // Block mode, many concurrent callers.
    let block_n = n / 4;
    let logger = Arc::new(
        AuditLogger::builder("bench-block").brokers(&bootstrap).topic(&topic).mode(Mode::Block).build().await?,
    );
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let callers = 256;
    for c in 0..callers {
        let logger = logger.clone();
        tasks.spawn(async move {
            for i in (c..block_n).step_by(callers) {
                logger.log(event(i)).await.expect("block mode log");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r?;
    }
    let block = start.elapsed();
    println!(
        "block mode: {:.0} events/s with {callers} concurrent callers ({block_n} events)",
        block_n as f64 / block.as_secs_f64()
    );
    Ok(())
}
