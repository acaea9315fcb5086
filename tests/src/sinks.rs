//! Helpers for the sink conformance suite: processed events made by the real pipeline, sink
//! processes and their metrics. The stores under test are in [`crate::stores`], one file each.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::ClientSettings;
use audit_processor::config::ProcessorConfig;
use audit_processor::pipeline::{Pipeline, RawRecord};
use audit_schema::chain::{chain_name, ChainHead};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;

use crate::kafka::free_port;
use crate::pipeline::raw_event;
pub use crate::stores::Target;
use crate::{kafka_bootstrap, unique_name};

/// A processed topic filled with real processed events.
pub struct Processed {
    /// Broker.
    pub bootstrap: String,
    /// Processed topic.
    pub topic: String,
    /// Partitions.
    pub partitions: i32,
    /// What was published, per partition, in offset order (the event JSON).
    pub published: BTreeMap<i32, Vec<Value>>,
    /// The signed checkpoints published, in publishing order (their JSON objects).
    pub checkpoints: Vec<Value>,
    producer: ThreadedProducer<DefaultProducerContext>,
    heads: BTreeMap<i32, ChainHead>,
    pipeline: Pipeline,
    next_raw: u64,
}

impl std::fmt::Debug for Processed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processed").field("topic", &self.topic).field("partitions", &self.partitions).finish()
    }
}

impl Processed {
    /// Creates a processed topic with `partitions` partitions on the shared broker.
    pub async fn create(partitions: i32) -> Processed {
        let topic = unique_name("sink.processed");
        let bootstrap = kafka_bootstrap();
        create_topics(&ClientSettings::new(&bootstrap, "test-admin"), &[TopicSpec::new(&topic, partitions)])
            .await
            .expect("topic");
        let mut c = ProcessorConfig::default();
        c.processing.output_encoding = audit_processor::config::OutputEncoding::Avro;
        let pipeline = Pipeline::new(&c.validate().expect("config"));
        let mut config = ClientSettings::new(&bootstrap, "test-publisher").client_config(&[]).expect("config");
        config.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "5");
        let producer = config.create().expect("producer");
        let heads = (0..partitions).map(|p| (p, ChainHead::genesis(chain_name("audit.raw", p)))).collect();
        Processed {
            bootstrap,
            topic,
            partitions,
            published: BTreeMap::new(),
            checkpoints: Vec::new(),
            producer,
            heads,
            pipeline,
            next_raw: 0,
        }
    }

    /// Publishes `n` more processed events spread over the partitions.
    pub fn publish(&mut self, n: u64) {
        for _ in 0..n {
            let i = self.next_raw;
            self.next_raw += 1;
            let p = (i % self.partitions as u64) as i32;
            let (key, mut payload) = raw_event(i);
            if payload.starts_with(b"{\"action\": \"broken") {
                // Keep the fixture free of quarantine entries: a valid event with this index's id.
                let valid = String::from_utf8(raw_event(i + 1).1).expect("utf-8");
                payload = valid.replace(&format!("load-{:08}", i + 1), &format!("load-{i:08}")).into_bytes();
            }
            let head = self.heads.get_mut(&p).expect("head");
            let raw = RawRecord {
                topic: "audit.raw",
                partition: p,
                offset: head.seq as i64,
                timestamp_ms: Some(1_790_000_000_000 + i as i64),
                key: Some(key.as_bytes()),
                payload: Some(&payload),
            };
            let out = self.pipeline.process(&raw, head);
            self.send(p, key.as_bytes(), &out.encoded);
            self.published.entry(p).or_default().push(out.value);
        }
        self.flush();
    }

    /// Signs the head of every partition that has events with `key` and publishes each checkpoint
    /// in its partition as the processor does (an `audit-record: checkpoint` record).
    pub fn publish_checkpoints(&mut self, key: &audit_schema::checkpoint::SigningKey) {
        use audit_schema::checkpoint::{RECORD_CHECKPOINT, RECORD_HEADER};
        use rdkafka::message::{Header, OwnedHeaders};
        for (p, head) in &self.heads {
            if head.seq == 0 {
                continue;
            }
            let c = key.sign(&head.chain, head.seq, &head.hash, "2026-11-26T12:00:00.000Z");
            let payload = serde_json::to_vec(&c).expect("checkpoint JSON");
            let headers = OwnedHeaders::new().insert(Header { key: RECORD_HEADER, value: Some(RECORD_CHECKPOINT) });
            let mut record =
                BaseRecord::to(&self.topic).partition(*p).key(head.chain.as_bytes()).payload(&payload).headers(headers);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
            self.checkpoints.push(serde_json::to_value(&c).expect("checkpoint JSON"));
        }
        self.flush();
    }

    /// Publishes raw bytes as a record of partition `p` (for poison and duplicate tests).
    pub fn publish_bytes(&mut self, p: i32, bytes: &[u8]) {
        self.send(p, b"tenant-x", bytes);
        self.flush();
    }

    fn send(&self, p: i32, key: &[u8], payload: &[u8]) {
        let mut record = BaseRecord::to(&self.topic).partition(p).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every published event, all partitions.
    pub fn total(&self) -> usize {
        self.published.values().map(Vec::len).sum()
    }
}

/// An `audit-sink` process.
#[derive(Debug)]
pub struct SinkProcess {
    /// The child.
    pub child: Child,
    /// Its `/metrics` port.
    pub port: u16,
}

/// Starts the sink binary `bin` for `target`, reading processed `topic` on `bootstrap` in `group`;
/// its log goes to `log`.
pub fn spawn_sink(
    bin: &str,
    target: &dyn Target,
    bootstrap: &str,
    topic: &str,
    group: &str,
    log: &Path,
    extra: &[(&str, &str)],
) -> SinkProcess {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.env("AUDIT_KAFKA__BROKERS", bootstrap)
        .env("AUDIT_KAFKA__PROCESSED_TOPIC", topic)
        .env("AUDIT_KAFKA__GROUP_ID", group)
        .env("AUDIT_KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("AUDIT_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("AUDIT_BATCH__MAX_WAIT_MS", "50")
        .env("AUDIT_RETRY__BASE_BACKOFF_MS", "50")
        .env("AUDIT_RETRY__MAX_BACKOFF_MS", "1000")
        .env("AUDIT_RETRY__COOLDOWN_MS", "1000")
        .env("AUDIT_LOG_FILTER", "warn,audit_sink=info");
    for (k, v) in target.env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.stdout(Stdio::null()).stderr(file).spawn().expect("start audit-sink");
    SinkProcess { child, port }
}

/// A plain HTTP GET on loopback; the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// The value of a counter in a Prometheus exposition (sum over label sets).
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `target` holds `n` events (or `limit` passes); returns what it holds.
pub fn wait_stored(target: &dyn Target, n: usize, limit: Duration) -> BTreeMap<i32, Vec<Value>> {
    let started = Instant::now();
    loop {
        let got = target.read_back();
        if got.values().map(Vec::len).sum::<usize>() >= n || started.elapsed() > limit {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
