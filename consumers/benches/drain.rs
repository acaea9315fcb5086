//! Drains a pre-filled processed topic into each sink and prints events/s (not a timed test).
//!
//! ```sh
//! scripts/services up && eval "$(scripts/services env)"
//! cargo bench -p audit-sink --bench drain        # AUDIT_BENCH_EVENTS=200000 by default
//! AUDIT_BENCH_SINKS=postgres,jsonl cargo bench -p audit-sink --bench drain   # only these
//! ```
//!
//! Knobs: `AUDIT_BENCH_BATCH` (events per batch, default 5000), `AUDIT_BENCH_PG_CONNECTIONS`
//! (PostgreSQL pool size, default the sink's own default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::ClientSettings;
use audit_processor::config::ProcessorConfig;
use audit_processor::pipeline::{Pipeline, RawRecord};
use audit_schema::chain::{chain_name, ChainHead};
use audit_sink::metrics::SinkMetrics;
use audit_sink::sink::Sink;
use audit_sink::stores::http::{HttpSink, HttpSinkConfig};
use audit_sink::stores::jsonl::{JsonlConfig, JsonlSink};
use audit_sink::stores::mongodb::{MongoConfig, MongoSink};
use audit_sink::stores::postgres::{PostgresConfig, PostgresSink};
use audit_sink::stores::sqlite::{SqliteConfig, SqliteSink};
use audit_sink::stores::StoreConfig;
use audit_sink::SinkConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 6;

// The same allocator as the audit-sink binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn prefill(bootstrap: &str, topic: &str, n: usize) {
    create_topics(&ClientSettings::new(bootstrap, "bench"), &[TopicSpec::new(topic, PARTITIONS)]).await.expect("topic");
    let pipeline = Pipeline::new(&ProcessorConfig::default().validate().expect("config"));
    let mut heads: Vec<ChainHead> = (0..PARTITIONS).map(|p| ChainHead::genesis(chain_name("audit.raw", p))).collect();
    let mut c = ClientSettings::new(bootstrap, "bench").client_config(&[]).expect("config");
    c.set("linger.ms", "5").set("compression.type", "lz4").set("queue.buffering.max.messages", "500000");
    let producer: ThreadedProducer<DefaultProducerContext> = c.create().expect("producer");
    for i in 0..n {
        let p = (i % PARTITIONS as usize) as i32;
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
        let raw = RawRecord {
            topic: "audit.raw",
            partition: p,
            offset: head.seq as i64,
            timestamp_ms: Some(1_790_000_000_000 + i as i64),
            key: Some(tenant.as_bytes()),
            payload: Some(&payload),
        };
        let out = pipeline.process(&raw, head);
        let mut record = BaseRecord::to(topic).partition(p).key(tenant.as_bytes()).payload(&out.encoded[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
}

async fn drain<S: Sink>(name: &str, config: SinkConfig, sink: S, n: usize) {
    let settings = config.validate().expect("sink config");
    let metrics = SinkMetrics::new(name, &settings.config.kafka.group_id).expect("metrics");
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(audit_sink::run(settings, Arc::new(sink), metrics.clone(), shutdown.clone()));
    // Steady state: from the first stored batch to the last event (start-up is the consumer
    // group join, about a second on the test broker, and is printed separately).
    let mut first: Option<(Instant, u64)> = None;
    while (metrics.written_total() as usize) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let written = metrics.written_total();
        if first.is_none() && written > 0 {
            first = Some((Instant::now(), written));
        }
    }
    let end = Instant::now();
    let took = end - started;
    shutdown.cancel();
    task.await.expect("join").expect("sink run");
    let (at, already) = first.unwrap_or((started, 0));
    let steady = (end - at).as_secs_f64();
    println!(
        "{name}: {:.0} events/s steady ({} events in {:.2}s after the first batch); {:.0} events/s including {:.1}s of start-up",
        (n as u64 - already) as f64 / steady.max(1e-9),
        n as u64 - already,
        steady,
        n as f64 / took.as_secs_f64(),
        (at - started).as_secs_f64(),
    );
}

/// The broker's ceiling: one consumer reading every record of the topic and doing nothing else.
fn consume_only(bootstrap: &str, topic: &str, n: usize) {
    let mut c = ClientSettings::new(bootstrap, "bench-consume-only").client_config(&[]).expect("config");
    c.set("group.id", format!("{topic}.consume-only")).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut seen = 0usize;
    let mut first: Option<Instant> = None;
    while seen < n {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            std::hint::black_box(m.payload().map_or(0, <[u8]>::len));
            first.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!("consume only (the broker's ceiling for one reader): {:.0} records/s", n as f64 / secs.max(1e-9));
}

/// An HTTP receiver in this process that accepts every batch (for the HTTP sink's figure).
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
        std::hint::black_box(body.len());
        "ok"
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/ingest")
}

fn config(bootstrap: &str, topic: &str, store: StoreConfig, group: &str) -> SinkConfig {
    let mut c = SinkConfig::default();
    c.kafka.brokers = bootstrap.into();
    c.kafka.processed_topic = topic.into();
    c.kafka.group_id = group.into();
    c.http.listen = "127.0.0.1:0".into();
    c.drain_timeout_ms = 20_000;
    c.log_filter = "warn".into();
    c.batch.max_events = std::env::var("AUDIT_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    c.store = Some(store);
    c
}

#[tokio::main]
async fn main() {
    let bootstrap = std::env::var("AUDIT_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let database =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/postgres".into());
    let n: usize = std::env::var("AUDIT_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let id = format!("bench-sink-{}", std::process::id());
    let topic = format!("{id}.processed");
    let started = Instant::now();
    prefill(&bootstrap, &topic, n).await;
    println!(
        "sink bench: {n} processed events (Avro, ~1 KB as JSON) in {PARTITIONS} partitions, prefilled in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    {
        let (b, t) = (bootstrap.clone(), topic.clone());
        tokio::task::spawn_blocking(move || consume_only(&b, &t, n)).await.expect("consume only");
    }
    let only = std::env::var("AUDIT_BENCH_SINKS").ok();
    let wanted = |sink: &str| only.as_deref().is_none_or(|o| o.split(',').any(|s| s.trim() == sink));
    let dir = tempfile::tempdir().expect("dir");
    if wanted("jsonl") {
        let jsonl = JsonlConfig { dir: dir.path().to_owned(), ..JsonlConfig::default() };
        drain(
            "jsonl",
            config(&bootstrap, &topic, StoreConfig::Jsonl(jsonl.clone()), &format!("{id}.jsonl")),
            JsonlSink::new(jsonl),
            n,
        )
        .await;
    }

    let db = id.replace('-', "_");
    if wanted("postgres") {
        let mut admin = PgConnection::connect(&database).await.expect("PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let url = format!("{}/{db}", database.rsplit_once('/').map_or(database.as_str(), |(b, _)| b));
        // The sink's default pool unless AUDIT_BENCH_PG_CONNECTIONS says otherwise.
        let connections = std::env::var("AUDIT_BENCH_PG_CONNECTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PostgresConfig::default().max_connections);
        let pg = PostgresConfig { url: Some(url.clone()), max_connections: connections, migrate: true };
        let sink = PostgresSink::connect(&url, connections, true).await.expect("connect");
        drain("postgres", config(&bootstrap, &topic, StoreConfig::Postgres(pg), &format!("{id}.pg")), sink, n).await;
    }
    if wanted("sqlite") {
        let path = dir.path().join("bench.sqlite");
        let sqlite = SqliteConfig { path: path.clone() };
        let sink = SqliteSink::open(&path).await.expect("sqlite");
        drain("sqlite", config(&bootstrap, &topic, StoreConfig::Sqlite(sqlite), &format!("{id}.sqlite")), sink, n)
            .await;
    }
    if wanted("mongodb") {
        let uri =
            std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:17017/?directConnection=true".into());
        let mongo = MongoConfig { uri: Some(uri.clone()), database: db.clone(), collection: "audit_events".into() };
        let sink = MongoSink::connect(&uri, &mongo).await.expect("mongodb");
        drain("mongodb", config(&bootstrap, &topic, StoreConfig::Mongodb(mongo), &format!("{id}.mongo")), sink, n)
            .await;
    }
    if wanted("http") {
        let http = HttpSinkConfig { url: receiver().await, ..HttpSinkConfig::default() };
        let sink = HttpSink::connect(&http).expect("http");
        drain(
            "http (ndjson)",
            config(&bootstrap, &topic, StoreConfig::Http(Box::new(http)), &format!("{id}.http")),
            sink,
            n,
        )
        .await;
    }
}
