//! Helpers for tests of the processor as a real process: its topics, spawning and killing it,
//! loading raw events, and reading the chains back.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::ClientSettings;
use audit_schema::chain::{ChainLink, ChainReport, ChainVerifier, VerifyOptions};
use audit_schema::codec;
use serde_json::Value;

use crate::kafka::{read_topic, Record};
use crate::{kafka_bootstrap, unique_name};

/// A set of raw, processed and dead-letter topics and a consumer group for one test.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Broker.
    pub bootstrap: String,
    /// Raw topic.
    pub raw: String,
    /// Processed topic.
    pub processed: String,
    /// Dead-letter topic.
    pub dead_letter: String,
    /// Processor group.
    pub group: String,
    /// Partitions of raw and processed.
    pub partitions: i32,
}

impl Topology {
    /// Creates the topics on the shared broker: raw and processed with `partitions` partitions
    /// (processed with `processed_partitions` when it must differ).
    pub async fn create(partitions: i32, processed_partitions: Option<i32>) -> Topology {
        Topology::create_configured(partitions, processed_partitions, &[], &[]).await
    }

    /// [`Topology::create`] with topic configs for the processed and the dead-letter topics.
    pub async fn create_configured(
        partitions: i32,
        processed_partitions: Option<i32>,
        processed_config: &[(&str, &str)],
        dead_letter_config: &[(&str, &str)],
    ) -> Topology {
        Topology::create_on(
            &kafka_bootstrap(),
            1,
            partitions,
            processed_partitions,
            processed_config,
            dead_letter_config,
        )
        .await
    }

    /// [`Topology::create_configured`] on the broker (or cluster) at `bootstrap` (a test's private
    /// one), each partition with `replication` replicas.
    pub async fn create_on(
        bootstrap: &str,
        replication: i32,
        partitions: i32,
        processed_partitions: Option<i32>,
        processed_config: &[(&str, &str)],
        dead_letter_config: &[(&str, &str)],
    ) -> Topology {
        let configured = |mut spec: TopicSpec, config: &[(&str, &str)]| {
            spec.replication = replication;
            for (k, v) in config {
                spec = spec.with_config(*k, *v);
            }
            spec
        };
        let id = unique_name("p");
        let t = Topology {
            bootstrap: bootstrap.to_owned(),
            raw: format!("{id}.raw"),
            processed: format!("{id}.processed"),
            dead_letter: format!("{id}.dlq"),
            group: format!("{id}.processor"),
            partitions,
        };
        create_topics(
            &ClientSettings::new(&t.bootstrap, "test-admin"),
            &[
                configured(TopicSpec::new(&t.raw, partitions), &[]),
                configured(TopicSpec::new(&t.processed, processed_partitions.unwrap_or(partitions)), processed_config),
                configured(TopicSpec::new(&t.dead_letter, 1), dead_letter_config),
            ],
        )
        .await
        .expect("create topics");
        t
    }

    /// The environment that configures a processor for these topics.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUDIT_KAFKA__BROKERS".into(), self.bootstrap.clone()),
            ("AUDIT_KAFKA__RAW_TOPIC".into(), self.raw.clone()),
            ("AUDIT_KAFKA__PROCESSED_TOPIC".into(), self.processed.clone()),
            ("AUDIT_KAFKA__DEAD_LETTER_TOPIC".into(), self.dead_letter.clone()),
            ("AUDIT_KAFKA__GROUP_ID".into(), self.group.clone()),
            ("AUDIT_KAFKA__SESSION_TIMEOUT_MS".into(), "6000".into()),
            ("AUDIT_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("AUDIT_SHUTDOWN__DRAIN_TIMEOUT_MS".into(), "10000".into()),
            ("AUDIT_TELEMETRY__LOG_FILTER".into(), "warn,audit_processor=info".into()),
        ]
    }

    /// Starts the processor binary `bin` (tests pass `env!("CARGO_BIN_EXE_audit-test-processor")`);
    /// its log goes to `log`.
    pub fn spawn_processor(&self, bin: &str, log: &std::path::Path, extra_env: &[(&str, &str)]) -> Child {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut cmd = Command::new(bin);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(file).spawn().expect("start the processor")
    }

    /// Reads the processed topic back: per partition, events in offset order (signed checkpoints,
    /// which travel in the same partitions, left out).
    pub fn read_processed(&self, expected: usize) -> BTreeMap<i32, Vec<Value>> {
        let mut by_partition: BTreeMap<i32, Vec<(i64, Value)>> = BTreeMap::new();
        for r in read_topic(&self.bootstrap, &self.processed, expected, Duration::from_secs(2)) {
            if r.header(audit_schema::checkpoint::RECORD_HEADER).is_some() {
                continue;
            }
            let value = codec::event_value(&r.payload).expect("processed records decode");
            by_partition.entry(r.partition).or_default().push((r.offset, value));
        }
        by_partition
            .into_iter()
            .map(|(p, mut v)| {
                v.sort_by_key(|(o, _)| *o);
                (p, v.into_iter().map(|(_, e)| e).collect())
            })
            .collect()
    }

    /// A producer library logger for the raw topic, spooling in `spool`.
    pub async fn logger(&self, service: &str, spool: &std::path::Path) -> audit_producer::AuditLogger {
        audit_producer::AuditLogger::builder(service)
            .brokers(&self.bootstrap)
            .topic(&self.raw)
            .spool_dir(spool)
            .build()
            .await
            .expect("the producer library starts")
    }

    /// Reads the dead-letter topic back.
    pub fn read_dead_letters(&self, expected: usize) -> Vec<Record> {
        read_topic(&self.bootstrap, &self.dead_letter, expected, Duration::from_secs(1))
    }
}

/// Verifies one partition's chain from genesis, hashing the events exactly as stored.
pub fn verify(events: &[Value]) -> ChainReport {
    let mut verifier = ChainVerifier::new(VerifyOptions::default());
    let mut buf = Vec::new();
    for e in events {
        verifier.push(&ChainLink::from_value(e, &mut buf).expect("an event with integrity"));
    }
    verifier.finish()
}

/// The raw offsets each event of a partition was made from, in order.
pub fn source_offsets(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["integrity"]["source"]["offset"].as_i64().expect("source offset")).collect()
}

/// A record to write: key, payload and headers.
pub type RecordParts<'a> = (Option<&'a str>, &'a [u8], &'a [(&'a str, &'a str)]);

/// Writes `records` to partition `partition` of `topic` and waits until the broker has them all.
pub fn produce(bootstrap: &str, topic: &str, partition: i32, records: &[RecordParts<'_>]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientSettings::new(bootstrap, "test-writer").client_config(&[]).expect("config").create().expect("producer");
    for (key, payload, headers) in records {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v.as_bytes()) }));
        let mut record = BaseRecord::to(topic).partition(partition).payload(*payload).headers(headers);
        if let Some(key) = key {
            record = record.key(*key);
        }
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Sends SIGTERM (graceful stop) to a child.
pub fn terminate(child: &Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
}

/// Produces raw events to a topic from a background thread until stopped.
#[derive(Debug)]
pub struct Loader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

/// The raw payload of the `i`-th loader event: valid JSON events keyed by 12 tenants, with a
/// secret in metadata, and every 50th payload malformed (to exercise dead letters).
pub fn raw_event(i: u64) -> (String, Vec<u8>) {
    let tenant = format!("tenant-{:02}", i % 12);
    if i % 50 == 49 {
        return (tenant, format!("{{\"action\": \"broken-{i}\"").into_bytes());
    }
    let payload = serde_json::json!({
        "eventId": format!("load-{i:08}"),
        "action": "document.update",
        "outcome": "SUCCESS",
        "actor": {"type": "user", "id": format!("u-{}", i % 97)},
        "target": {"type": "document", "id": format!("doc-{i}")},
        "context": {"tenantId": tenant, "occurredAt": "2026-11-26T10:00:00.000Z"},
        "metadata": {"i": i, "password": "hunter2", "note": "Bearer abcdefghijklmnop"}
    });
    (tenant, serde_json::to_vec(&payload).expect("json"))
}

impl Loader {
    /// Starts producing `rate` events per second to `topic` (at most `max` events).
    pub fn start(bootstrap: &str, topic: &str, rate: u64, max: u64) -> Loader {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let mut config = ClientSettings::new(bootstrap, "test-loader").client_config(&[]).expect("config");
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("partitioner", "murmur2_random");
        let producer: ThreadedProducer<DefaultProducerContext> = config.create().expect("loader producer");
        let topic = topic.to_owned();
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut sent = 0u64;
            while sent < max && !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                let (key, payload) = raw_event(sent);
                match producer.send(BaseRecord::to(&topic).key(&key).payload(&payload)) {
                    Ok(()) => sent += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            producer.flush(Duration::from_secs(30)).expect("loader flush");
            sent
        });
        Loader { stop, thread: Some(thread) }
    }

    /// Waits until all `max` events are sent; returns how many (all acknowledged).
    pub fn wait(mut self) -> u64 {
        self.thread.take().map(|t| t.join().expect("loader thread")).unwrap_or(0)
    }

    /// Stops producing; returns how many events were sent (all acknowledged).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map(|t| t.join().expect("loader thread")).unwrap_or(0)
    }
}

/// The (partition, seq) of every "lane resumes at the processed tail" line in a processor log:
/// evidence of where restarted instances picked the chains up.
pub fn resume_points(log: &std::path::Path) -> Vec<(i32, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |line: &str, name: &str| -> Option<u64> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    text.lines()
        .filter(|l| l.contains("lane resumes at the processed tail"))
        .filter_map(|l| Some((field(l, "partition")? as i32, field(l, "seq")?)))
        .collect()
}

/// One partition's processed events, split into the chain that reaches the newest event (walked
/// back from it by `prevHash` to genesis) and the events off that chain: what an instance that had
/// lost the partition still published (a fork).
#[derive(Debug, Default)]
pub struct ChainSplit {
    /// The chain from seq 1 to the newest event, in seq order.
    pub main: Vec<Value>,
    /// Events not on it, in the order they were published.
    pub off: Vec<Value>,
}

impl ChainSplit {
    /// Splits `events` (one partition, in offset order). Panics when the newest event does not lead
    /// back to genesis (a chain broken by something other than a fork).
    pub fn of(events: &[Value]) -> ChainSplit {
        let link = |e: &Value, field: &str| e["integrity"][field].as_str().expect("integrity hashes").to_owned();
        let mut by_hash: BTreeMap<String, usize> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            by_hash.entry(link(e, "hash")).or_insert(i);
        }
        let mut on_main = vec![false; events.len()];
        let mut main = Vec::new();
        if let Some(newest) = events.len().checked_sub(1) {
            let mut at = newest;
            loop {
                on_main[at] = true;
                main.push(events[at].clone());
                let prev = link(&events[at], "prevHash");
                if prev == audit_schema::chain::GENESIS_PREV_HASH {
                    break;
                }
                let seq = events[at]["integrity"]["seq"].as_u64().unwrap_or_default();
                at = *by_hash.get(&prev).unwrap_or_else(|| panic!("seq {seq} links to {prev}, which no event has"));
                assert!(!on_main[at], "the chain loops at seq {seq}");
            }
        }
        main.reverse();
        let off = events.iter().zip(&on_main).filter(|(_, on)| !**on).map(|(e, _)| e.clone()).collect();
        ChainSplit { main, off }
    }

    /// Runs of consecutive off-chain events: how many times a stale writer forked the chain.
    pub fn forks(&self) -> usize {
        let seqs: Vec<u64> = self.off.iter().map(|e| e["integrity"]["seq"].as_u64().unwrap_or_default()).collect();
        seqs.iter().enumerate().filter(|(i, s)| *i == 0 || seqs[i - 1] + 1 != **s).count()
    }
}
