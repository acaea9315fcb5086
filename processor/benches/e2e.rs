//! End to end against the local broker (not a timed test: it prints figures).
//!
//! ```sh
//! scripts/services up && eval "$(scripts/services env)"
//! cargo bench -p audit-processor --bench e2e     # AUDIT_BENCH_EVENTS=500000 by default
//! ```
//!
//! Pre-fills a raw topic, then times, over the same data, (1) a pass-through (consume + produce
//! the same bytes, no processing) and (2) the processor draining it, once per processing guarantee
//! and round (`idempotent`, then `exactly_once`, each run into a processed topic and group of its
//! own; `AUDIT_BENCH_GUARANTEE=exactly_once,idempotent` sets which and in what order;
//! `AUDIT_BENCH_ROUNDS`, default 2, how many rounds, each odd round in the reverse order); prints
//! each run's rates, stalls and transactions, then the medians per mode and their ratio, over the
//! whole run and while processing.

use std::time::{Duration, Instant};

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::ClientSettings;
use audit_processor::config::{ProcessingGuarantee, ProcessorConfig};
use audit_processor::metrics::ProcessorMetrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 6;

// The same allocator as the audit-processor binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn payload(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventId": format!("01JD3Z5Q7X8Y9ABCDEF{i:07}"),
        "action": "billing.invoice.update",
        "outcome": "SUCCESS",
        "actor": {"type": "user", "id": format!("user-{}", i % 1000), "roles": ["billing"]},
        "target": {"type": "invoice", "id": format!("inv-{i}")},
        "context": {"tenantId": format!("tenant-{:02}", i % 16), "requestId": format!("req-{i:012}"), "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36", "occurredAt": "2026-11-26T10:00:00.123Z",
            "service": "billing-api", "environment": "production"},
        "metadata": {"reason": "customer request", "amount": 1250.5, "headers": {"authorization": "Bearer abcdefghijklmnop"},
            "note": "n".repeat(300)},
        "diff": {"before": {"status": "draft", "total": 100}, "after": {"status": "sent", "total": 120}},
        "producer": {"id": "billing-api-1", "seq": i + 1}
    }))
    .expect("json")
}

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientSettings::new(bootstrap, "bench").client_config(&[]).expect("config");
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("partitioner", "murmur2_random");
    c.create().expect("producer")
}

fn send_retrying<'a>(p: &ThreadedProducer<DefaultProducerContext>, mut r: BaseRecord<'a, [u8], [u8]>) {
    loop {
        match p.send(r) {
            Ok(()) => return,
            Err((_, back)) => {
                r = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn pass_through(bootstrap: &str, from: &str, to: &str, n: usize) -> Duration {
    let mut c = ClientSettings::new(bootstrap, "bench-pt").client_config(&[]).expect("config");
    c.set("group.id", format!("bench-pt-{}", std::process::id())).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(from, p, Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let out = producer(bootstrap);
    let started = Instant::now();
    let mut seen = 0;
    while seen < n {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let mut r = BaseRecord::<[u8], [u8]>::to(to).partition(m.partition());
            if let Some(k) = m.key() {
                r = r.key(k);
            }
            if let Some(v) = m.payload() {
                r = r.payload(v);
            }
            send_retrying(&out, r);
            seen += 1;
        }
    }
    out.flush(Duration::from_secs(120)).expect("flush");
    let took = started.elapsed();
    audit_kafka::close_consumer(consumer, Duration::from_secs(10));
    took
}

#[tokio::main]
async fn main() {
    // RUST_LOG=info shows the processor's own log (start-up steps with their times).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let bootstrap = std::env::var("AUDIT_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let n: usize = std::env::var("AUDIT_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(500_000);
    let id = format!("bench-e2e-{}", std::process::id());
    let (raw, dlq, pt) = (format!("{id}.raw"), format!("{id}.dlq"), format!("{id}.passthrough"));
    let guarantees: Vec<ProcessingGuarantee> = std::env::var("AUDIT_BENCH_GUARANTEE")
        .unwrap_or_else(|_| "idempotent,exactly_once".into())
        .split(',')
        .map(|g| match g {
            "idempotent" => ProcessingGuarantee::Idempotent,
            "exactly_once" => ProcessingGuarantee::ExactlyOnce,
            other => panic!("AUDIT_BENCH_GUARANTEE: {other:?} is neither idempotent nor exactly_once"),
        })
        .collect();
    // Rounds alternate the order (A B, B A, ...): this machine's speed drifts by tens of percent
    // within a minute, so one run of each mode compares the drift as much as the modes.
    let rounds: usize = std::env::var("AUDIT_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2).max(1);
    let processed = |g: ProcessingGuarantee, round: usize| format!("{id}.processed.{g:?}.{round}");
    let mut topics = vec![TopicSpec::new(&raw, PARTITIONS), TopicSpec::new(&dlq, 1), TopicSpec::new(&pt, PARTITIONS)];
    for round in 0..rounds {
        topics.extend(guarantees.iter().map(|&g| TopicSpec::new(processed(g, round), PARTITIONS)));
    }
    create_topics(&ClientSettings::new(&bootstrap, "bench"), &topics).await.expect("create topics");

    let started = Instant::now();
    let p = producer(&bootstrap);
    let payloads: Vec<Vec<u8>> = (0..1000).map(payload).collect();
    for i in 0..n {
        let key = format!("tenant-{:02}", i % 16);
        send_retrying(&p, BaseRecord::to(&raw).key(key.as_bytes()).payload(&payloads[i % 1000][..]));
    }
    p.flush(Duration::from_secs(300)).expect("prefill flush");
    let avg = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len();
    println!(
        "e2e bench: prefilled {n} raw events of ~{avg} bytes in {:.1}s, {PARTITIONS} partitions",
        started.elapsed().as_secs_f64()
    );

    let (b, r, t) = (bootstrap.clone(), raw.clone(), pt.clone());
    let pt_time = tokio::task::spawn_blocking(move || pass_through(&b, &r, &t, n)).await.expect("pass-through");
    let pt_rate = n as f64 / pt_time.as_secs_f64();
    println!("pass-through (consume + produce, no processing): {pt_rate:.0} events/s ({:.1}s)", pt_time.as_secs_f64());

    // Per run: its mode and its rates (whole run, processing only).
    let mut rates: Vec<(ProcessingGuarantee, [f64; 2])> = Vec::new();
    for round in 0..rounds {
        let mut order = guarantees.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for g in order {
            let group = format!("{id}.{g:?}.{round}");
            let rate = run_processor(&bootstrap, &raw, &processed(g, round), &dlq, &group, g, n).await;
            println!("ratio processor ({g:?}) / pass-through: {:.0}%", rate[0] / pt_rate * 100.0);
            rates.push((g, rate));
        }
    }
    let median = |g: ProcessingGuarantee, which: usize| {
        let mut of: Vec<f64> = rates.iter().filter(|r| r.0 == g).map(|r| r.1[which]).collect();
        of.sort_by(f64::total_cmp);
        let mid = of.len() / 2;
        (!of.is_empty()).then(|| if of.len() % 2 == 1 { of[mid] } else { (of[mid - 1] + of[mid]) / 2.0 })
    };
    for (which, what) in ["whole run (start-up and drain included)", "processing only"].into_iter().enumerate() {
        if let (Some(idempotent), Some(exactly_once)) =
            (median(ProcessingGuarantee::Idempotent, which), median(ProcessingGuarantee::ExactlyOnce, which))
        {
            println!(
                "{what}, median of {rounds} round(s): idempotent {idempotent:.0}, exactly_once {exactly_once:.0} events/s; ratio exactly_once / idempotent: {:.0}%",
                exactly_once / idempotent * 100.0
            );
        }
    }
}

/// Runs the processor with `guarantee` over the `n` raw events; returns its rates (events/s): over
/// the whole run (start-up and drain included), then while processing.
async fn run_processor(
    bootstrap: &str,
    raw: &str,
    processed: &str,
    dlq: &str,
    group: &str,
    guarantee: ProcessingGuarantee,
    n: usize,
) -> [f64; 2] {
    let mut config = ProcessorConfig::default();
    config.kafka.brokers = bootstrap.to_owned();
    config.kafka.raw_topic = raw.to_owned();
    config.kafka.processed_topic = processed.to_owned();
    config.kafka.dead_letter_topic = dlq.to_owned();
    config.kafka.group_id = group.to_owned();
    config.kafka.processing_guarantee = guarantee;
    if let Some(ms) = std::env::var("AUDIT_BENCH_TRANSACTION_MS").ok().and_then(|v| v.parse().ok()) {
        config.kafka.transaction_interval_ms = ms;
    }
    // Extra librdkafka options for every client of the processor (`key=value,key=value`).
    for kv in std::env::var("AUDIT_BENCH_LIBRDKAFKA").unwrap_or_default().split(',').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').expect("AUDIT_BENCH_LIBRDKAFKA: key=value,...");
        config.kafka.librdkafka.insert(k.to_owned(), v.to_owned());
    }
    let interval = config.kafka.transaction_interval_ms;
    config.http.listen = "127.0.0.1:0".into();
    let settings = config.validate().expect("config");
    let metrics = ProcessorMetrics::new().expect("metrics");
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(audit_processor::run_with_metrics(settings, metrics.clone(), shutdown.clone()));
    let mut first = None;
    // Stretches of 100 ms or more in which no event was processed, once processing began.
    let (mut stalls, mut last, mut since) = (Vec::new(), 0, Instant::now());
    loop {
        let done = metrics.processed_total();
        if done as usize >= n {
            break;
        }
        if first.is_none() && done > 0 {
            first = Some(started.elapsed());
        }
        if done != last {
            if first.is_some() && last > 0 && since.elapsed() >= Duration::from_millis(100) {
                stalls.push((since.duration_since(started), since.elapsed()));
            }
            (last, since) = (done, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_in = started.elapsed();
    shutdown.cancel();
    task.await.expect("join").expect("processor run");
    let proc_time = started.elapsed();
    let proc_rate = n as f64 / proc_time.as_secs_f64();
    let first = first.unwrap_or(all_in);
    println!(
        "processor {guarantee:?} (decode, validate, redact, limit, chain, Avro, produce): {proc_rate:.0} events/s ({:.1}s, includes start-up and drain), {} dead letters",
        proc_time.as_secs_f64(),
        metrics.dead_lettered_total()
    );
    let steady_rate = n as f64 / (all_in - first).as_secs_f64();
    println!(
        "  of which start-up (group join, tail reads) {:.1}s, processing {:.1}s ({steady_rate:.0} events/s), drain and close {:.1}s",
        first.as_secs_f64(),
        (all_in - first).as_secs_f64(),
        (proc_time - all_in).as_secs_f64()
    );
    let stalled: Duration = stalls.iter().map(|(_, d)| *d).sum();
    let longest = stalls.iter().max_by_key(|(_, d)| *d);
    println!(
        "  stalls (no event processed for 100 ms or more): {} lasting {:.1}s in all{}",
        stalls.len(),
        stalled.as_secs_f64(),
        longest.map_or(String::new(), |(at, d)| format!(
            ", the longest {} ms at {:.1}s",
            d.as_millis(),
            at.as_secs_f64()
        ))
    );
    if guarantee == ProcessingGuarantee::ExactlyOnce {
        let commits = metrics.transactions_committed();
        let (calls, seconds) = metrics.transaction_commit_time();
        println!(
            "  {commits} transactions committed ({:.0}/s over {PARTITIONS} lanes, {:.0} records each; interval {interval} ms); a commit held its lane {:.1} ms on average",
            commits as f64 / proc_time.as_secs_f64(),
            n as f64 / commits.max(1) as f64,
            seconds * 1000.0 / calls.max(1) as f64
        );
    }
    [proc_rate, steady_rate]
}
