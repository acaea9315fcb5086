//! Kafka helpers for tests: topics, reading a whole topic back, and private brokers that a test may
//! stop, pause or restart without disturbing the shared one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit_kafka::topics::{create_topics, TopicSpec};
use audit_kafka::ClientSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{kafka_bootstrap, unique_name, unreachable};

/// Creates a topic with `partitions` partitions and optional configs on `bootstrap`.
pub async fn create_topic(bootstrap: &str, partitions: i32, config: &[(&str, &str)]) -> String {
    let name = unique_name("t");
    let mut spec = TopicSpec::new(&name, partitions);
    for (k, v) in config {
        spec = spec.with_config(*k, *v);
    }
    create_topics(&ClientSettings::new(bootstrap, "test-admin"), &[spec])
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable("Kafka broker", bootstrap, e)));
    name
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key as text.
    pub key: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// The `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// Every header, as text.
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl From<OwnedMessage> for Record {
    fn from(m: OwnedMessage) -> Self {
        let traceparent = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "traceparent")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        let headers = auditctl::kafka::header_texts(m.headers());
        Record {
            headers,
            partition: m.partition(),
            offset: m.offset(),
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            payload: m.payload().unwrap_or_default().to_vec(),
            traceparent,
        }
    }
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived or nothing
/// new came for `quiet` (after at least `expected` or the overall 120 s limit).
pub fn read_topic(bootstrap: &str, topic: &str, expected: usize, quiet: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientSettings::new(bootstrap, "test-reader")
        .client_config(&[])
        .unwrap()
        // assign() needs a group id; nothing is ever committed, so the group is never joined.
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let partitions = audit_kafka::topics::partition_count(consumer.client(), topic, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{}", unreachable("Kafka broker", bootstrap, e)));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(Record::from(m.detach()));
                last = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
        let done_waiting = out.len() >= expected && last.elapsed() >= quiet;
        if done_waiting || started.elapsed() > Duration::from_secs(120) {
            audit_kafka::close_consumer(consumer, Duration::from_secs(10));
            return out;
        }
    }
}

/// Reads `topic` on the shared broker.
pub fn read_shared_topic(topic: &str, expected: usize) -> Vec<Record> {
    read_topic(&kafka_bootstrap(), topic, expected, Duration::from_millis(500))
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A tansu broker owned by one test, with in-memory storage: restarting it starts empty.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

fn tansu_bin() -> PathBuf {
    std::env::var_os("AUDIT_TANSU_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/auditstream/tansu-0.6.0/bin/tansu")
    })
}

impl PrivateBroker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> PrivateBroker {
        let mut broker = PrivateBroker { port: free_port(), child: None, dir: tempfile::tempdir().unwrap() };
        broker.restart();
        broker
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker process again (after [`PrivateBroker::kill`]); its storage starts empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let bin = tansu_bin();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&bin)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--cluster-id", "private"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); run `scripts/services up` to build it", bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private broker did not open port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker process (its data is gone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("broker running").id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered, like a
    /// network partition. Its data is kept.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_quiet("-CONT");
        }
        self.kill();
    }
}

impl PrivateBroker {
    fn signal_quiet(&self, signal: &str) -> std::io::Result<()> {
        if let Some(child) = &self.child {
            Command::new("kill").args([signal, &child.id().to_string()]).stderr(Stdio::null()).status()?;
        }
        Ok(())
    }
}

/// A topic name that will not collide, for tests that create topics on private brokers.
pub fn topic_name() -> String {
    unique_name("t")
}
