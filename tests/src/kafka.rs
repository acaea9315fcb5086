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

/// An Apache Kafka broker owned by one test (one KRaft node, the same `scripts/kafka/server.properties`
/// as the shared broker), with its log directory in a temporary directory: a test may kill it with
/// SIGKILL, pause it or restart it, and a restart recovers its data as a real broker does.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

fn kafka_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka").join(name)
}

/// Kafka's jars, resolved by `scripts/services up`: `AUDIT_KAFKA_LIBS` (which `scripts/services env`
/// prints), else the newest complete `kafka-*/libs` in the services' cache.
fn kafka_libs() -> PathBuf {
    let cached = || {
        let cache = std::env::var_os("AUDITSTREAM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/auditstream"));
        let dirs = std::fs::read_dir(&cache).ok()?.flatten().map(|e| e.path().join("libs"));
        let complete = dirs.filter(|libs| libs.join(".complete").exists());
        complete.max_by_key(|libs| libs.join(".complete").metadata().and_then(|m| m.modified()).ok())
    };
    let libs = std::env::var_os("AUDIT_KAFKA_LIBS").map(PathBuf::from).or_else(cached).unwrap_or_else(|| {
        panic!("no resolved Kafka jars (AUDIT_KAFKA_LIBS unset, none in the cache): run `scripts/services up`")
    });
    assert!(
        libs.join(".complete").exists(),
        "{} holds no resolved Kafka jars: run `scripts/services up`",
        libs.display()
    );
    libs
}

/// Two distinct loopback ports nothing listens on right now.
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("a free port");
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

impl PrivateBroker {
    /// Formats a new log directory, starts the broker on free ports and waits until it is ready.
    pub fn start() -> PrivateBroker {
        let (port, controller_port) = two_free_ports();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let template = std::fs::read_to_string(kafka_file("server.properties")).unwrap();
        let config = template
            .replace("@PORT@", &port.to_string())
            .replace("@CONTROLLER_PORT@", &controller_port.to_string())
            .replace("@LOG_DIR@", &data.to_string_lossy());
        std::fs::write(dir.path().join("server.properties"), config).unwrap();
        let mut broker = PrivateBroker { port, child: None, dir };
        let status = broker
            .java()
            .args(["kafka.tools.StorageTool", "format", "-t", "auditstream-private-01", "-c"])
            .arg(broker.dir.path().join("server.properties"))
            .stdout(Stdio::null())
            .status()
            .expect("java runs");
        assert!(status.success(), "formatting the private broker's storage failed");
        broker.restart();
        broker
    }

    fn java(&self) -> Command {
        let mut java = Command::new("java");
        java.args(["-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg(format!("-Dlog4j2.configurationFile={}", kafka_file("log4j2.xml").display()))
            .arg(format!("-Dkafka.logs.dir={}", self.dir.path().display()))
            .arg("-cp")
            .arg(format!("{}/*", kafka_libs().display()));
        java
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's own log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Starts the broker process again (after [`PrivateBroker::kill`]) on its log directory, which it
    /// recovers, and waits until a metadata request names it with an active controller.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let child = self
            .java()
            .arg("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start java ({e}); run `scripts/services up` to install it"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = Command::new("python3")
                .arg(kafka_file("ready.py"))
                .args(["127.0.0.1", &self.port.to_string(), "1"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("private broker exited during start-up ({status}); log: {}", self.log_file().display());
            }
            assert!(Instant::now() < deadline, "private broker on port {} not ready within 90 s", self.port);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the broker process with SIGKILL, as a crash would: its log directory stays, and
    /// [`PrivateBroker::restart`] recovers it.
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

    /// Sets (`Some`) or removes (`None`) a produce quota, in bytes per second, for the clients
    /// named `client_id` (Kafka's own `ConfigCommand`, as `kafka-configs.sh` runs it): the broker
    /// then delays its answers to their produce requests while everything else is served.
    pub fn set_producer_quota(&self, client_id: &str, bytes_per_second: Option<u64>) {
        let mut command = self.java();
        command.args(["kafka.admin.ConfigCommand", "--bootstrap-server", &self.bootstrap(), "--alter"]);
        command.args(["--entity-type", "clients", "--entity-name", client_id]);
        match bytes_per_second {
            Some(rate) => command.args(["--add-config", &format!("producer_byte_rate={rate}")]),
            None => command.args(["--delete-config", "producer_byte_rate"]),
        };
        let out = command.output().expect("java runs");
        assert!(out.status.success(), "ConfigCommand failed: {}", String::from_utf8_lossy(&out.stderr));
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

fn admin(bootstrap: &str) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    ClientSettings::new(bootstrap, "test-admin").client_config(&[]).expect("config").create().expect("admin client")
}

/// Deletes the records of `topic`'s partition `partition` before `offset` (Kafka's DeleteRecords,
/// what retention does to old segments); returns the partition's new low watermark.
pub async fn delete_records(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> i64 {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset)).unwrap();
    let result = admin(bootstrap)
        .delete_records(&tpl, &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("DeleteRecords on {topic}/{partition}: {e}"));
    let element = result.find_partition(topic, partition).expect("the partition in the result");
    element.error().unwrap_or_else(|e| panic!("DeleteRecords on {topic}/{partition}: {e}"));
    match element.offset() {
        Offset::Offset(low) => low,
        other => panic!("DeleteRecords on {topic}/{partition} answered {other:?}"),
    }
}
